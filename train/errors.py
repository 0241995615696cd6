"""The error of a run that cannot start as it is configured.

``python -m train`` reports a :class:`ConfigError` (and a ``FileNotFoundError`` for missing
data) on one line, ``python -m train: error: ...``, with exit code 2, argparse's code for bad
arguments, and without a traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
  """A run that cannot start as configured: a bad value, an argument nothing takes.

  Raised by :meth:`train.config.Config.validate`,
  :meth:`train.optimizers.OptimizerConfig.validate` and, before any optimizer trains, by
  :func:`train.train.run` (an optimizer's or the model's arguments, the batch size against
  the data and the devices, an earlier run's checkpoints). A ``ValueError``, so that code
  catching ``ValueError`` keeps working.

  Example:
    >>> from train.config import Config
    >>> try:
    ...   Config(epochs="3").validate()
    ... except ConfigError as error:
    ...   print(error)
    `epochs` must be an integer, got '3'.
  """


class ConfigTypeError(ConfigError, TypeError):
  """A :class:`ConfigError` from a ``TypeError``: an argument a factory or model does not take.

  It is still a ``TypeError``, as the factory's own error was.
  """


def config_error(error: Exception, context: str) -> ConfigError:
  """``error`` as a :class:`ConfigError` whose message starts with ``context``.

  Args:
    error: the error a factory (an optimizer, the model) raised for its arguments.
    context: what was built, e.g. ``"optimizer 'sls'"``.

  Returns:
    A :class:`ConfigTypeError` for a ``TypeError``, else a :class:`ConfigError`; raise it
    ``from error`` to keep the original traceback as its cause.

  Example:
    >>> error = config_error(TypeError("f() got an unexpected keyword argument 'x'"), "model")
    >>> isinstance(error, TypeError), str(error)
    (True, "model: f() got an unexpected keyword argument 'x'")
  """
  cls = ConfigTypeError if isinstance(error, TypeError) else ConfigError
  return cls(f"{context}: {error}")
