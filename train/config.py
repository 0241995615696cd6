"""The configuration of a training run, the papers' experiments by name, and the command line.

``python -m train`` with no arguments runs :func:`digits_mlp`, the embedded default.
``python -m train --config NAME`` runs one of :data:`CONFIGS`; any field can be
overridden::

  python -m train --config cifar10_resnet20_subset --epochs 3 --optimizer sls \\
      --set batch_size=64 --set model.zero_init_residual=True --set opt.kwargs.c=0.5

``--set`` takes ``FIELD=VALUE`` for a :class:`Config` field, ``model.KEY=VALUE``
for a model argument, ``opt.FIELD=VALUE`` for a field of every optimizer of the
run (:class:`train.optimizers.OptimizerConfig`) and ``opt.kwargs.KEY=VALUE`` for a
keyword argument of every optimizer's factory. Values are Python literals
(``0.5``, ``(512, 512)``, ``True``, ``None``); anything else is a string.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any

from train.errors import ConfigError
from train.optimizers import DEFAULT_LEARNING_RATES, OPTIMIZERS, OptimizerConfig

SHARED_DATA = os.environ.get(
    "OPTAX_LS_DATA_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                 "data"),
)
"""Where the real subsets ``cifar10_subset.npz`` and ``mnist_subset.npz`` lie
(``$OPTAX_LS_DATA_DIR``, by default ``../shared/data`` beside the repository)."""


@dataclasses.dataclass(frozen=True)
class Config:
  """One training run; the defaults are the embedded default run (:func:`digits_mlp`).

  Attributes:
    name: the configuration's name (printed and written with the metrics).
    dataset: ``digits`` (embedded), a tfds name (``mnist``, ``fashion_mnist``,
      ``cifar10``, ``cifar100``, ``svhn_cropped``, ``imagenet2012``) or
      ``npz:PATH`` (see :func:`train.data.load`).
    data_dir: tfds' data directory (None for its default).
    test_fraction: the test share split off data without a test split.
    model: a model name of :data:`models.MODEL_NAMES`.
    model_kwargs: the model's arguments besides ``num_classes``.
    optimizers: the optimizers trained, one after the other, from the same
      initialisation and on the same batches.
    epochs: passes over the training set.
    batch_size: examples per update (global, over all devices).
    eval_batch_size: examples per evaluation batch.
    augment: whether to augment training images with the data set's augmentation
      (:class:`train.data.DataSpec`: crop and flip for CIFAR, none for digits/MNIST).
    seed: seeds the split, the initialisation, the batch order, augmentation
      and dropout.
    max_steps: stop after this many updates (None: all epochs); schedules still
      span all epochs, so a run stopped early and resumed equals a longer one.
    accumulation_steps: split every batch into this many micro-batches, evaluated one
      after the other for the gradient and for every line-search trial (gradient
      accumulation: the same objective as the whole batch, in less memory);
      ``batch_size`` must be a multiple of it times the number of devices.
    sequence_length: text data only: the context of a language model's windows
      (``lm``), or the padded length of a classified sentence (``text``); None for the
      data's default (64 and 128, see :func:`train.data.load`).
    log_every: write a metrics line every this many updates.
    checkpoint_every: save an orbax checkpoint every this many updates (0: never;
      needs ``out``).
    resume: continue from the latest checkpoint in ``out`` when there is one.
    out: a directory for ``metrics.jsonl``, ``curves.png`` and checkpoints.
  """

  name: str = "digits_mlp"
  dataset: str = "digits"
  data_dir: str | None = None
  test_fraction: float = 0.2
  model: str = "mlp"
  model_kwargs: dict[str, Any] = dataclasses.field(default_factory=lambda: {"features": (128,)})
  optimizers: tuple[OptimizerConfig, ...] = (
      OptimizerConfig("sls"),
      OptimizerConfig("sgd", learning_rate=0.1),
  )
  epochs: int = 20
  batch_size: int = 32
  eval_batch_size: int = 500
  augment: bool = True
  seed: int = 0
  max_steps: int | None = None
  accumulation_steps: int = 1
  sequence_length: int | None = None
  log_every: int = 10
  checkpoint_every: int = 0
  resume: bool = False
  out: str | None = None

  def validate(self) -> Config:
    """Checks the fields that do not depend on the data; returns ``self``.

    Every field must have its type (``--set`` reads a value that is not a Python literal as
    a string: ``--set epochs=abc`` fails here, naming ``epochs``) and lie in its range; each
    optimizer is checked by :meth:`train.optimizers.OptimizerConfig.validate`.

    Raises:
      ConfigError: (a ``ValueError``) naming the first field that is wrong.
    """
    _check_types(self)
    if "num_classes" in self.model_kwargs:
      raise ConfigError("`model_kwargs` must not set num_classes: the data set decides it.")
    positive = ("epochs", "batch_size", "eval_batch_size", "log_every", "accumulation_steps")
    for field in positive:
      if getattr(self, field) < 1:
        raise ConfigError(f"`{field}` must be >= 1, got {getattr(self, field)}.")
    if self.max_steps is not None and self.max_steps < 1:
      raise ConfigError(f"`max_steps` must be >= 1 or None, got {self.max_steps}.")
    if self.seed < 0:
      raise ConfigError(f"`seed` must be >= 0, got {self.seed}.")
    if self.batch_size % self.accumulation_steps:
      raise ConfigError(f"`batch_size` {self.batch_size} must be a multiple of "
                        f"`accumulation_steps` {self.accumulation_steps}.")
    if self.sequence_length is not None and self.sequence_length < 1:
      raise ConfigError(f"`sequence_length` must be >= 1 or None, got {self.sequence_length}.")
    if self.checkpoint_every < 0:
      raise ConfigError(f"`checkpoint_every` must be >= 0, got {self.checkpoint_every}.")
    if (self.checkpoint_every or self.resume) and self.out is None:
      raise ConfigError("checkpoints (`checkpoint_every`, `resume`) need an `out` directory.")
    if not 0.0 < self.test_fraction < 1.0:
      raise ConfigError(f"`test_fraction` must lie in (0, 1), got {self.test_fraction}.")
    if not self.optimizers:
      raise ConfigError("`optimizers` is empty.")
    for optimizer in self.optimizers:
      optimizer.validate()
    names = [opt.name for opt in self.optimizers]
    if len(set(names)) != len(names):
      raise ConfigError(f"`optimizers` names must be distinct, got {names}.")
    return self


# The type each field of Config must have, as (check, what it must be).
_INTEGER = (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool), "an integer")
_NUMBER = (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool), "a number")
_BOOL = (lambda v: isinstance(v, bool), "True or False")
_STR = (lambda v: isinstance(v, str), "a string")
_PATH = (lambda v: v is None or isinstance(v, str | os.PathLike), "a path or None")
_FIELD_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": _STR,
    "dataset": _STR,
    "data_dir": _PATH,
    "test_fraction": _NUMBER,
    "model": _STR,
    "model_kwargs": (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
                     "a dict of model arguments"),
    "optimizers": (lambda v: isinstance(v, tuple | list)
                   and all(isinstance(o, OptimizerConfig) for o in v),
                   "a tuple of OptimizerConfig"),
    "epochs": _INTEGER,
    "batch_size": _INTEGER,
    "eval_batch_size": _INTEGER,
    "augment": _BOOL,
    "seed": _INTEGER,
    "max_steps": (lambda v: v is None or _INTEGER[0](v), "an integer or None"),
    "accumulation_steps": _INTEGER,
    "sequence_length": (lambda v: v is None or _INTEGER[0](v), "an integer or None"),
    "log_every": _INTEGER,
    "checkpoint_every": _INTEGER,
    "resume": _BOOL,
    "out": _PATH,
}


def _check_types(config: Config) -> None:
  """Raises a ConfigError naming the first field of ``config`` whose type is wrong."""
  for field in dataclasses.fields(config):
    ok, expected = _FIELD_TYPES[field.name]
    value = getattr(config, field.name)
    if not ok(value):
      raise ConfigError(f"`{field.name}` must be {expected}, got {value!r}.")


def _subset(file: str) -> str:
  return "npz:" + os.path.join(SHARED_DATA, file)


def digits_mlp() -> Config:
  """The embedded default: an MLP (128 hidden) on scikit-learn's digits, SLS against SGD."""
  return Config()


def mnist_mlp() -> Config:
  """MNIST, MLP with one hidden layer of 1000 (seed 004's MNIST+MLP), TLR-paper protocol.

  Batch 256, 80 epochs; SGD with the step schedule (lr 0.1, /10 at 50% and 75%)
  against SLS. The paper's SGD also has momentum 0.8 and weight decay 5e-4 (App. D),
  left out here.
  """
  return Config(
      name="mnist_mlp",
      dataset="mnist",
      model_kwargs={"features": (1000,)},
      optimizers=(OptimizerConfig("sls"), OptimizerConfig("sgd", learning_rate=0.1,
                                                          schedule="step")),
      epochs=80,
      batch_size=256,
  )


def mnist_subset_mlp() -> Config:
  """The real MNIST subset (8000 images, ``../shared/data``), MLP 512-512, SLS against SGD."""
  return Config(
      name="mnist_subset_mlp",
      dataset=_subset("mnist_subset.npz"),
      test_fraction=0.125,
      model_kwargs={"features": (512, 512)},
      optimizers=(OptimizerConfig("sls"), OptimizerConfig("sgd", learning_rate=0.1)),
      epochs=5,
      batch_size=128,
      log_every=10,
  )


def cifar10_resnet20_subset() -> Config:
  """ResNet-20 on the real CIFAR-10 subset (about 9% of the set, like seed 003's 8%).

  Batch 128 and standard augmentation as in seed 003; SLS with its defaults.
  """
  return Config(
      name="cifar10_resnet20_subset",
      dataset=_subset("cifar10_subset.npz"),
      test_fraction=0.1,
      model="resnet20",
      model_kwargs={},
      optimizers=(OptimizerConfig("sls"),),
      epochs=3,
      batch_size=128,
      log_every=5,
  )


def _cifar(dataset: str, model: str, model_kwargs: dict[str, Any] | None = None) -> Config:
  """Seed 000's CIFAR setting (after Vaswani et al. 2019): batch 128, 200 epochs; SLS against
  Adam (1e-3) and the common SGD+momentum recipe (not seed 000's baselines, see get_config)."""
  return Config(
      name=f"{dataset}_{model}",
      dataset=dataset,
      model=model,
      model_kwargs=model_kwargs or {},
      optimizers=(
          OptimizerConfig("sls"),
          OptimizerConfig("adam", learning_rate=1e-3),
          OptimizerConfig("sgd", learning_rate=0.1, momentum=0.9, schedule="step",
                          weight_decay=5e-4),
      ),
      epochs=200,
      batch_size=128,
      eval_batch_size=1000,
      log_every=50,
  )


def cifar10_resnet34() -> Config:
  """ResNet-34 (CIFAR stem) on CIFAR-10, seed 000's protocol."""
  return _cifar("cifar10", "resnet34")


def cifar100_resnet34() -> Config:
  """ResNet-34 (CIFAR stem) on CIFAR-100, seed 000's protocol."""
  return _cifar("cifar100", "resnet34")


def cifar10_densenet121() -> Config:
  """DenseNet-121 (CIFAR variant) on CIFAR-10, seed 000's protocol."""
  return _cifar("cifar10", "densenet121")


def cifar100_wrn16_4() -> Config:
  """WRN-16-4 on CIFAR-100, seed 004's protocol: batch 256, 80 epochs, SGD step schedule vs SLS.

  The paper's SGD also has momentum 0.8 and weight decay 5e-4 (App. D), left out here.
  """
  return dataclasses.replace(
      _cifar("cifar100", "wrn16_4"),
      optimizers=(
          OptimizerConfig("sls"),
          OptimizerConfig("sgd", learning_rate=0.1, schedule="step"),
      ),
      epochs=80,
      batch_size=256,
  )


def imagenet_resnet50() -> Config:
  """ResNet-50 on ImageNet (tfds ``imagenet2012``, prepared by hand): SGD+momentum vs SLS.

  Batch 256, 90 epochs, SGD lr 0.1 momentum 0.9 and weight decay 1e-4 (the
  standard hyperparameters) with the harness's step schedule (/10 at 50% and 75%,
  not the usual epochs 30, 60 and 80).
  """
  return Config(
      name="imagenet_resnet50",
      dataset="imagenet2012",
      model="resnet50",
      model_kwargs={},
      optimizers=(
          OptimizerConfig("sgd", learning_rate=0.1, momentum=0.9, schedule="step",
                          weight_decay=1e-4),
          OptimizerConfig("sls"),
      ),
      epochs=90,
      batch_size=256,
      eval_batch_size=500,
      log_every=100,
  )


SHAKESPEARE_FILE = "tiny_shakespeare_train.txt"
"""The tfds ``tiny_shakespeare`` train split as one text file (1,003,854 characters), in
:data:`SHARED_DATA` or ``--data-dir``."""


def shakespeare_char_gpt() -> Config:
  """A character-level GPT on Shakespeare, sized for a CPU: trains in minutes.

  ``gpt_nano`` (4 layers, 4 heads, width 128, context 64, dropout 0.1: 0.81M parameters) on
  the file :data:`SHAKESPEARE_FILE` (``--data-dir``, by default :data:`SHARED_DATA`), its
  last 10% held out for validation; random windows of 64 characters, batch 32, one epoch
  (441 updates: as many windows as the training text holds 64-character blocks). Adam +
  SaLSa at its defaults against AdamW with the standard transformer recipe (peak 3e-3, 5%
  linear warm-up, cosine decay to 0, weight decay 0.1). The metrics add bits per character.
  ``--dataset tiny_shakespeare`` reads the tfds data set instead (prepared in ``--data-dir``).
  """
  return Config(
      name="shakespeare_char_gpt",
      dataset="text:" + SHAKESPEARE_FILE,
      data_dir=SHARED_DATA,
      test_fraction=0.1,
      model="gpt_nano",
      model_kwargs={"dropout_rate": 0.1},
      optimizers=(
          OptimizerConfig("adam_salsa"),
          OptimizerConfig("adamw", learning_rate=3e-3, schedule="cosine", warmup_steps=22,
                          weight_decay=0.1),
      ),
      epochs=1,
      batch_size=32,
      eval_batch_size=256,
      augment=True,
      sequence_length=64,
      log_every=20,
  )


def shakespeare_char_gpt2_small() -> Config:
  """The GPT-2-small architecture on Shakespeare characters, for an accelerator.

  ``gpt2_small`` (12 layers, 12 heads, width 768) with a context of 256 and the character
  vocabulary (85M parameters), dropout 0.1, batch 64, 100 epochs of 55 updates (an epoch
  holds as many windows as the text holds 256-character blocks);
  Adam + SaLSa against AdamW (peak 6e-4, 5% warm-up, cosine, weight decay 0.1). On a CPU
  one update takes seconds: use ``--max-steps`` or an accelerator.
  """
  return dataclasses.replace(
      shakespeare_char_gpt(),
      name="shakespeare_char_gpt2_small",
      model="gpt2_small",
      model_kwargs={"context": 256, "dropout_rate": 0.1},
      optimizers=(
          OptimizerConfig("adam_salsa"),
          OptimizerConfig("adamw", learning_rate=6e-4, schedule="cosine", warmup_steps=275,
                          weight_decay=0.1),
      ),
      epochs=100,
      batch_size=64,
      eval_batch_size=64,
      sequence_length=256,
      log_every=50,
  )


def sst2_encoder() -> Config:
  """A small BERT-style encoder trained from scratch on GLUE SST-2 (tfds ``glue/sst2``).

  ``encoder_tiny`` (4 layers, 4 heads, width 128) on byte tokens (``[CLS]`` + UTF-8 bytes,
  padded to 128), 67,349 training sentences, the validation split (872) as the test set;
  batch 32, 3 epochs; Adam + SaLSa against AdamW (peak 1e-3, 5% warm-up, cosine, weight
  decay 0.01). SaLSa's paper fine-tunes a pre-trained BERT (Sec. IV); there are no
  pre-trained weights here, so this is training from scratch. Needs the data set prepared
  with ``tfds build glue/sst2 --file_format=array_record`` in ``--data-dir`` (or
  ``--dataset tsv:PATH`` with lines ``sentence<TAB>label``).
  """
  return Config(
      name="sst2_encoder",
      dataset="glue/sst2",
      model="encoder_tiny",
      model_kwargs={"dropout_rate": 0.1},
      optimizers=(
          OptimizerConfig("adam_salsa"),
          OptimizerConfig("adamw", learning_rate=1e-3, schedule="cosine", warmup_steps=315,
                          weight_decay=0.01),
      ),
      epochs=3,
      batch_size=32,
      eval_batch_size=256,
      sequence_length=128,
      log_every=50,
  )


CONFIGS: dict[str, Callable[[], Config]] = {
    fn.__name__: fn
    for fn in (
        digits_mlp,
        mnist_mlp,
        mnist_subset_mlp,
        cifar10_resnet20_subset,
        cifar10_resnet34,
        cifar100_resnet34,
        cifar10_densenet121,
        cifar100_wrn16_4,
        imagenet_resnet50,
        shakespeare_char_gpt,
        shakespeare_char_gpt2_small,
        sst2_encoder,
    )
}
"""The named configurations: the papers' experiments."""


def get_config(name: str) -> Config:
  """The configuration registered under ``name`` (see :data:`CONFIGS`): a paper's experiment.

  A fresh :class:`Config` (frozen: change it with :func:`dataclasses.replace`). The protocols:

  * ``digits_mlp``: the embedded default, an MLP (128 hidden) on scikit-learn's digits, SLS
    against SGD 0.1; batch 32, 20 epochs.
  * ``mnist_mlp``, ``cifar100_wrn16_4``: the TLR paper's settings (seed 004, Sec. 5 and
    App. D): MNIST with an MLP of one hidden layer of 1000, CIFAR-100 with WRN-16-4; batch 256,
    80 epochs, SGD at 0.1 with the multistep schedule (divided by 10 at 50% and 75% of the run)
    against SLS. The paper's SGD runs also use momentum 0.8 and weight decay 5e-4, which these
    configurations leave out (add them with ``opt.momentum``, ``opt.weight_decay``).
  * ``cifar10_resnet34``, ``cifar100_resnet34``, ``cifar10_densenet121``: the CIFAR setting of
    the SLS paper (Vaswani et al. 2019) as the accuracy-based line search (seed 000, Sec. 6)
    repeats it: ResNet-34 on CIFAR-10/100, DenseNet-121 added, crop-and-flip augmentation,
    batch 128, 200 epochs. SLS runs with ``optax_ls.sls``'s defaults (the paper's). The
    baselines are Adam at a constant 1e-3 and SGD 0.1 with momentum 0.9, the multistep
    schedule and weight decay 5e-4, the common CIFAR recipe; seed 000's own baselines differ
    (Adam warmed up and cosine-annealed, SGD 0.1 without momentum, divided by 10 at epochs
    60, 120 and 160).
  * ``mnist_subset_mlp``, ``cifar10_resnet20_subset``: short runs on the real subsets in
    :data:`SHARED_DATA` (ResNet-20 on about 9% of CIFAR-10, as seed 003 trains on 8%).
  * ``shakespeare_char_gpt``: a character-level GPT (``gpt_nano``) on the Shakespeare text
    file, CPU-sized (one epoch of 441 updates); ``shakespeare_char_gpt2_small``: the GPT-2
    small architecture with a context of 256 on the same data, for an accelerator;
    ``sst2_encoder``: a small encoder classifier on GLUE SST-2 (tfds). Adam + SaLSa against
    AdamW with warm-up and cosine decay (Kenneweg et al. 2024 train transformers, Sec. IV).
  * ``imagenet_resnet50``: ResNet-50 on ImageNet with the common hyperparameters (He et al.
    2016, Goyal et al. 2017: SGD 0.1, momentum 0.9, weight decay 1e-4, batch 256, 90 epochs)
    against SLS; the rate follows the harness's multistep schedule (divided by 10 at 50% and
    75%, epochs 45 and 67), not the usual drops at epochs 30, 60 and 80.

  Args:
    name: a key of :data:`CONFIGS`.

  Returns:
    The configuration, not yet validated against the data (see :meth:`Config.validate`).

  Raises:
    ValueError: if no configuration is registered under ``name``.

  Example:
    >>> config = get_config("cifar10_resnet34")
    >>> config.model, config.batch_size, config.epochs, [o.name for o in config.optimizers]
    ('resnet34', 128, 200, ['sls', 'adam', 'sgd'])
    >>> get_config("digits_mlp") == Config()
    True
  """
  try:
    return CONFIGS[name]()
  except KeyError:
    raise ValueError(f"Unknown config {name!r}; known configs: {', '.join(CONFIGS)}.") from None


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_override(config: Config, assignment: str) -> Config:
  """Returns ``config`` with one ``KEY=VALUE`` assignment of ``--set`` applied.

  ``VALUE`` is read as a Python literal (:func:`ast.literal_eval`), and taken as a
  string when it is not one; its type is not checked here (:meth:`Config.validate`
  checks some fields).

  Args:
    config: the configuration to change (not modified: it is frozen).
    assignment: ``KEY=VALUE``, where ``KEY`` is a :class:`Config` field other than
      ``optimizers``, ``model.KEY`` (an argument of the model, added to
      ``model_kwargs``), ``opt.FIELD`` (a field of every
      :class:`train.optimizers.OptimizerConfig` of the run, other than ``name`` and
      ``kwargs``) or ``opt.kwargs.KEY`` (a keyword argument of every optimizer's
      factory).

  Returns:
    A new :class:`Config`, not validated.

  Raises:
    ValueError: for an ``assignment`` without ``=`` or with an empty or unknown ``KEY``.

  Example:
    >>> c = apply_override(Config(), "opt.kwargs.c=0.5")
    >>> [o.kwargs for o in c.optimizers]
    [{'c': 0.5}, {'c': 0.5}]
    >>> c = apply_override(apply_override(c, "epochs=3"), "model.features=(64, 64)")
    >>> c.epochs, c.model_kwargs, apply_override(c, "out=runs/a").out
    (3, {'features': (64, 64)}, 'runs/a')
  """
  key, sep, text = assignment.partition("=")
  if not sep or not key:
    raise ValueError(f"expected KEY=VALUE, got {assignment!r}")
  value = _literal(text)
  parts = key.split(".")
  if parts[0] == "model" and len(parts) == 2:
    return dataclasses.replace(config, model_kwargs={**config.model_kwargs, parts[1]: value})
  if parts[0] == "opt" and len(parts) == 3 and parts[1] == "kwargs":
    return dataclasses.replace(
        config,
        optimizers=tuple(
            dataclasses.replace(o, kwargs={**o.kwargs, parts[2]: value}) for o in config.optimizers
        ),
    )
  if parts[0] == "opt" and len(parts) == 2:
    fields = {f.name for f in dataclasses.fields(OptimizerConfig)} - {"kwargs", "name"}
    if parts[1] not in fields:
      raise ValueError(f"unknown optimizer field {parts[1]!r}; fields: {', '.join(sorted(fields))}")
    return dataclasses.replace(
        config,
        optimizers=tuple(dataclasses.replace(o, **{parts[1]: value}) for o in config.optimizers),
    )
  fields = {f.name for f in dataclasses.fields(Config)} - {"optimizers"}
  if len(parts) != 1 or key not in fields:
    raise ValueError(
        f"unknown key {key!r}: use a Config field ({', '.join(sorted(fields))}), model.KEY, "
        "opt.FIELD or opt.kwargs.KEY"
    )
  return dataclasses.replace(config, **{key: value})


def _int_at_least(minimum: int, what: str):
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
      raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value

  return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "a non-negative integer")


def positive_float(text: str) -> float:
  """An ``argparse`` type: a positive finite float.

  Args:
    text: the argument's text on the command line.

  Returns:
    The number, a float ``x`` with ``0 < x < inf``.

  Raises:
    argparse.ArgumentTypeError: for text that is not a number, or a number that is
      not positive and finite (zero, negative, ``inf``, ``nan``); argparse reports
      it as a usage error.

  Example:
    >>> positive_float("1e-3")
    0.001
    >>> positive_float("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a positive finite number, got '0'
  """
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
  if not 0.0 < value < float("inf"):
    raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
  return value


def build_parser() -> argparse.ArgumentParser:
  """The command line of ``python -m train``.

  Options: ``--config``, ``--optimizer``, ``--lr``, ``--epochs``, ``--batch-size``,
  ``--max-steps``, ``--seed``, ``--dataset``, ``--data-dir``, ``--model``, ``--out``,
  ``--checkpoint-every``, ``--resume`` and ``--set`` (repeatable); :func:`parse_args`
  documents what each does. Commands that extend the harness's command line add
  their own arguments to it and then call :func:`config_from_args`.

  Returns:
    A new ``argparse.ArgumentParser``. In the namespace it parses, an option not
    given is None, but for ``--config`` (``digits_mlp``), ``--resume`` (False) and
    ``--set`` (an empty list).

  Example:
    >>> args = build_parser().parse_args(["--config", "mnist_mlp", "--lr", "0.05"])
    >>> args.config, args.lr, args.epochs, args.resume, args.set
    ('mnist_mlp', 0.05, None, False, [])
  """
  parser = argparse.ArgumentParser(
      prog="python -m train",
      description=(
          "Train a Flax model with optax_ls line searches and baselines. With no arguments: "
          "an MLP on scikit-learn's handwritten digits with SGD + stochastic Armijo line "
          "search (optax_ls.sls) and with plain SGD, side by side from the same initialisation."
      ),
      epilog="Configs: " + ", ".join(CONFIGS) + ". Optimizers: " + ", ".join(sorted(OPTIMIZERS)),
  )
  parser.add_argument("--config", default="digits_mlp", choices=sorted(CONFIGS),
                      metavar="NAME", help="a named configuration (default: digits_mlp)")
  defaults = ", ".join(f"{name} {lr:g}" for name, lr in DEFAULT_LEARNING_RATES.items())
  parser.add_argument("--optimizer", metavar="NAME[,NAME...]",
                      help="train with these optimizers instead of the config's, each with its "
                      f"defaults (learning rates: {defaults}; the line searches find their own)")
  parser.add_argument("--lr", type=positive_float,
                      help="learning rate of every baseline (default: the config's, or each "
                      "optimizer's own, see --optimizer)")
  parser.add_argument("--epochs", type=_positive_int, help="epochs")
  parser.add_argument("--batch-size", type=_positive_int, help="examples per batch")
  parser.add_argument("--max-steps", type=_positive_int, help="stop after this many updates")
  parser.add_argument("--seed", type=_non_negative_int, help="split, init, order and augment seed")
  parser.add_argument("--dataset", help="override the data set (tfds name, digits or npz:PATH)")
  parser.add_argument("--data-dir", help="tfds data directory")
  parser.add_argument("--model", help="override the model (a models.MODEL_NAMES name; its "
                      "arguments then start empty: add them with --set model.KEY=VALUE)")
  parser.add_argument("--out", metavar="DIR", help="write metrics.jsonl, curves.png, checkpoints")
  parser.add_argument("--checkpoint-every", type=_non_negative_int, metavar="STEPS",
                      help="save a checkpoint every STEPS updates (needs --out)")
  parser.add_argument("--resume", action="store_true",
                      help="continue from the latest checkpoint in --out")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a field: FIELD, model.KEY, opt.FIELD or opt.kwargs.KEY")
  return parser


def parse_args(argv: Sequence[str] | None = None) -> Config:
  """Parses the command line ``argv`` (``sys.argv[1:]`` when None) into a :class:`Config`.

  Starts from ``--config NAME`` (:func:`get_config`, ``digits_mlp`` by default), then applies
  ``--optimizer`` (each named optimizer with its defaults, its learning rate included:
  :data:`train.optimizers.DEFAULT_LEARNING_RATES`), ``--lr`` (every optimizer's
  ``learning_rate``), the plain options (``--epochs``, ``--batch-size``, ``--max-steps``,
  ``--seed``, ``--dataset``, ``--data-dir``, ``--model``, ``--out``, ``--checkpoint-every``,
  ``--resume``) and last the ``--set KEY=VALUE`` overrides in order (see the module docstring).
  A ``--model`` other than the configuration's starts its arguments empty.

  Args:
    argv: the arguments, without the program name; None reads ``sys.argv[1:]``.

  Returns:
    The validated configuration (:meth:`Config.validate`).

  Raises:
    SystemExit: for bad arguments, after argparse's usage message and the reason (exit code 2),
      or after ``--help``.

  Example:
    >>> config = parse_args(["--config", "mnist_subset_mlp", "--epochs", "3",
    ...                      "--set", "opt.momentum=0.9", "--set", "model.features=(64,)"])
    >>> config.name, config.epochs, config.model_kwargs, [o.momentum for o in config.optimizers]
    ('mnist_subset_mlp', 3, {'features': (64,)}, [0.9, 0.9])
    >>> parse_args([]) == get_config("digits_mlp")
    True
  """
  parser = build_parser()
  return config_from_args(parser.parse_args(argv), parser)


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Config:
  """The :class:`Config` that the arguments of :func:`build_parser` (parsed by ``parser``) ask for.

  Applies the options in the order :func:`parse_args` describes. Bad values exit
  through ``parser.error`` with the reason. Commands that extend the harness's
  command line (``python -m train.landscape``) add their own arguments to
  :func:`build_parser` and call this.

  Args:
    args: the namespace ``parser.parse_args`` returned; it must hold every option of
      :func:`build_parser` (extra ones are ignored).
    parser: the parser that parsed ``args``, whose ``error`` reports bad values.

  Returns:
    The validated configuration (:meth:`Config.validate`).

  Raises:
    SystemExit: through ``parser.error`` (exit code 2, after the usage message) for an
      unknown optimizer, a bad ``--set`` or a configuration that does not validate.

  Example:
    >>> parser = build_parser()
    >>> args = parser.parse_args(["--optimizer", "sls,sgd", "--lr", "0.05", "--epochs", "2"])
    >>> config = config_from_args(args, parser)
    >>> config.epochs, [(o.name, o.learning_rate) for o in config.optimizers]
    (2, [('sls', 0.05), ('sgd', 0.05)])
  """
  config = get_config(args.config)
  if args.optimizer:
    names = [n.strip() for n in args.optimizer.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
      known = ", ".join(sorted(OPTIMIZERS))
      parser.error(f"argument --optimizer: unknown {unknown}; known: {known}")
    config = dataclasses.replace(config, optimizers=tuple(OptimizerConfig(n) for n in names))
  if args.lr is not None:
    config = dataclasses.replace(
        config,
        optimizers=tuple(dataclasses.replace(o, learning_rate=args.lr) for o in config.optimizers),
    )
  plain = {
      "epochs": args.epochs,
      "batch_size": args.batch_size,
      "max_steps": args.max_steps,
      "seed": args.seed,
      "dataset": args.dataset,
      "data_dir": args.data_dir,
      "model": args.model,
      "out": args.out,
      "checkpoint_every": args.checkpoint_every,
  }
  if args.model is not None and args.model != config.model:
    config = dataclasses.replace(config, model_kwargs={})  # the old model's arguments
  config = dataclasses.replace(config, **{k: v for k, v in plain.items() if v is not None})
  if args.resume:
    config = dataclasses.replace(config, resume=True)
  try:
    for assignment in args.set:
      config = apply_override(config, assignment)
    return config.validate()
  except (ValueError, TypeError) as error:
    parser.error(str(error))
