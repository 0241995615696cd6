"""Making no progress visible: the states' no-step fields read outside ``jit``, and NaN on demand.

Every method's state holds ``no_step_count`` (updates in a row that made no step) and
``no_step_reason`` (why the last one made none, an index into :data:`NO_STEP_REASONS`).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_ls import _core

NO_STEP_REASONS = _core.NO_STEP_REASONS


class NoProgressWarning(UserWarning):
  """Warned by :func:`check_progress`: a method made no step for a number of updates."""


class NoProgress(NamedTuple):
  """One method of a state that made no step (what :func:`check_progress` returns).

  Attributes:
    path: where in the state the method's fields are (``jax.tree_util.keystr`` form).
    count: how many updates in a row made no step.
    reason: why the last of them made none (an entry of :data:`NO_STEP_REASONS`).
  """

  path: str
  count: int
  reason: str


def _fields(state: Any, name: str) -> list[tuple[str, Any]]:
  found = optax.tree.get_all_with_path(state, name)
  return [(jax.tree_util.keystr(path[:-1]), value) for path, value in found]


def check_progress(state: optax.OptState, *, patience: int = 1,
                   warn: bool = True) -> list[NoProgress]:
  """Reports the methods of ``state`` that made no step in the last ``patience`` updates or more.

  Reads ``no_step_count`` and ``no_step_reason`` wherever they occur in ``state`` (a
  chain, ``inject_hyperparams``, ``apply_if_finite`` and the adapters keep them
  reachable), outside ``jit``: it brings two scalars per method to the host. Call it
  every few hundred updates, or at the end of an epoch.

  Args:
    state: an optimizer state holding one or more optax_ls methods.
    patience: the least number of consecutive no-step updates reported (>= 1).
    warn: also issue a :class:`NoProgressWarning` per method reported.

  Returns:
    A :class:`NoProgress` per method that made no step in its last ``patience``
    updates or more; empty when every method is moving.

  Raises:
    ValueError: when ``patience < 1`` or ``state`` holds no optax_ls method.

  Example:
    >>> import jax.numpy as jnp, optax, optax_ls
    >>> opt = optax.chain(optax.scale_by_adam(), optax_ls.scale_by_sls(reset_option=0))
    >>> w = jnp.ones(2)
    >>> state = opt.init(w)
    >>> loss_fn = lambda w: jnp.sum(w ** 2)
    >>> for _ in range(3):  # forgot optax.scale(-1): Adam's direction climbs
    ...   g = 2 * w
    ...   updates, state = opt.update(g, state, w, grad=g, value_fn=loss_fn)
    >>> [(p.count, p.reason) for p in optax_ls.check_progress(state, warn=False)]
    [(3, 'not a descent direction (the slope <g, d> is not negative, or the direction is zero)')]

  References:
    The no-step fields are this library's; the reasons follow each method's paper
    (e.g. Vaswani et al., NeurIPS 2019, Alg. 1: a search needs a descent direction).
  """
  if not (isinstance(patience, int) and patience >= 1):
    raise ValueError(f"`patience` must be an integer >= 1, got {patience!r}.")
  counts = _fields(state, "no_step_count")
  reasons = dict(_fields(state, "no_step_reason"))
  if not counts:
    raise ValueError("check_progress: the state holds no optax_ls method (no `no_step_count` "
                     "field).")
  stuck = []
  for path, count in counts:
    count = int(np.asarray(count))
    if count < patience:
      continue
    code = int(np.asarray(reasons.get(path, _core.EXHAUSTED)))
    reason = NO_STEP_REASONS[code if 0 < code < len(NO_STEP_REASONS) else _core.EXHAUSTED]
    stuck.append(NoProgress(path, count, reason))
    if warn:
      where = f" at state{path}" if path else ""
      warnings.warn(f"optax_ls{where}: {count} update(s) in a row made no step: {reason}.",
                    NoProgressWarning, stacklevel=2)
  return stuck


def nonfinite_value_to_nan() -> optax.GradientTransformationExtraArgs:
  """Makes the updates NaN when the loss ``value`` passed to ``update`` is not finite.

  The methods give a zero update on a non-finite loss (the weights stay finite), which
  :func:`optax.apply_if_finite` cannot see: it checks the updates that reach it, and
  the gradient of a non-finite loss may be finite. Chained before it,
  ``optax.chain(optax_ls.nonfinite_value_to_nan(), optax.apply_if_finite(opt, n))``,
  this lets it count such an update, skip it (the inner state unchanged) and give up
  after ``n`` in a row, as it does for plain optimizers. Stateless.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` whose ``update`` needs the
    keyword ``value`` (the loss at ``params``; a ``ValueError`` without it) and
    passes the updates through unchanged when it is finite.

  Example:
    >>> import jax.numpy as jnp, optax, optax_ls
    >>> opt = optax.chain(optax_ls.nonfinite_value_to_nan(),
    ...                   optax.apply_if_finite(optax_ls.sls(reset_option=0), 3))
    >>> w = jnp.ones(2)
    >>> state = opt.init(w)
    >>> loss_fn = lambda w: jnp.sum(w ** 2)
    >>> updates, state = opt.update(2 * w, state, w, value=jnp.nan, value_fn=loss_fn)
    >>> int(state[1].notfinite_count), bool(jnp.all(updates == 0))
    (1, True)

  References:
    :func:`optax.apply_if_finite` (Optax), which this feeds.
  """

  def update_fn(updates, state, params=None, *, value=None, **extra_args):
    del params, extra_args
    if value is None:
      raise ValueError("nonfinite_value_to_nan: pass the loss at `params` to `update` as "
                       "`value=` (the same keyword the line searches take).")
    bad = ~jnp.isfinite(_core.as_scalar(value, "`value`"))
    return jax.tree.map(lambda u: jnp.where(bad, jnp.asarray(jnp.nan, u.dtype), u),
                        updates), state

  return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update_fn)
