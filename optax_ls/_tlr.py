"""GD-TLR: the trainable learning rate (naive, efficient, per layer).

References:
  "Trainable Learning Rate", anonymous (under review), Sec. 3-4, Alg. 1-2,
  Eq. 7-10 and App. D.2 (seed 004).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_ls import _core, _phased

_VARIANTS = ("efficient", "naive")
_PER_LAYER = (False, True, "tensor", "layer")
# The naive variant's rate after a non-finite trial: this factor times the rate.
_NAIVE_SHRINK = 0.5


class ScaleByTlrState(NamedTuple):
  """State of :func:`scale_by_tlr`.

  Attributes:
    learning_rate: the rate applied in the last update (float32): a scalar,
      or with ``per_layer`` a pytree shaped like the parameters with one
      float32 scalar per tensor (tensors of one layer hold the same value with
      ``per_layer="layer"``). ``optax.tree.get(state, "learning_rate")``
      returns it; ``jax.tree.leaves`` lists the per-tensor rates.
    num_evals: how many times ``value_fn`` ran in the last update (int32): 0
      for the efficient variant, 1 for the naive one (also on a skipped
      update, whose trial runs and is discarded).
    window_calls: the calls already accumulated in the current window (int32).
    accumulated: the sum of the directions of the current window (float32,
      shaped like the parameters); None when the window is one call or for
      the naive variant.
    previous: the sum of the directions of the last completed window (float32),
      :math:`g_{t-1}` of Eq. 7-9; None for the naive variant.
    no_step_count: how many updates in a row made no step (int32; 0 after a step). TLR
      has no search: every update steps, unless its inputs are not finite or an injected
      hyperparameter is out of its range.
    no_step_reason: why the last update made no step (int32; 0: it made one; see
      :func:`optax_ls.check_progress`): an invalid injected hyperparameter, or a
      non-finite ``value`` or direction (naive: or a non-finite trial).
  """

  learning_rate: Any
  num_evals: jax.Array
  window_calls: jax.Array
  accumulated: optax.Updates | None
  previous: optax.Updates | None
  no_step_count: jax.Array
  no_step_reason: jax.Array


def scale_by_tlr(
    init_learning_rate: float = 0.1,
    n_batches_per_epoch: int | None = None,
    p: float = 0.33,
    window: int | None = None,
    c: float = 0.25,
    variant: str = "efficient",
    eta: float = 0.01,
    per_layer: bool | str = False,
    min_learning_rate: float = 1e-8,
    max_learning_rate: float = 1e3,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales a descent direction by a trainable learning rate (GD-TLR).

  The rate :math:`\alpha` is trained on the augmented loss :math:`L(w + \alpha d)` (Eq. 2). The
  efficient variant (Alg. 2) takes a bounded Newton step on it from consecutive directions
  :math:`g_t, g_{t-1}` alone (Eq. 7-9),

  .. math::
    \alpha_{t+1} = \alpha_t \Big(1 + \frac{\langle g_t, g_{t-1}\rangle}
      {\max(4\langle g_t, g_t - g_{t-1}\rangle,\ \langle g_t, g_{t-1}\rangle / c)}\Big),

  and the update is :math:`\alpha_{t+1} d_t`; with mini-batches (Eq. 10) :math:`g` is the
  direction summed over a window of calls and the rate changes once per window. The naive
  variant (Alg. 1) runs gradient descent on :math:`\alpha` with one more forward-backward pass
  per call. See :doc:`/methods/tlr` for the derivatives, the window, the per-layer rates, the
  paper's momentum and weight decay, and the robustness rules.

  Args:
    init_learning_rate: the initial rate :math:`\alpha_0`, default 0.1.
    n_batches_per_epoch: mini-batches per epoch :math:`N`; the efficient variant's window is
      ``max(1, round(p * n_batches_per_epoch))`` calls. Default None.
    p: the window as a fraction of an epoch, default 0.33 (the paper's).
    window: the window in calls, instead of ``n_batches_per_epoch`` and ``p`` (``1``: the rate
      changes at every call); the efficient variant needs one of the two. Default None.
    c: the bound :math:`\alpha_{t+1} \le (1+c)\alpha_t` of Eq. 9, default 0.25.
    variant: ``"efficient"`` (default, Alg. 2) or ``"naive"`` (Alg. 1).
    eta: the naive variant's meta step :math:`\eta`, default 0.01 (ours; unused by the
      efficient variant).
    per_layer: ``False`` (default: one rate), ``True`` / ``"tensor"`` (one per tensor) or
      ``"layer"`` (one per parent node of the parameter tree).
    min_learning_rate: the smallest rate (positive), default 1e-8.
    max_learning_rate: the largest rate, default 1e3.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleByTlrState`. The
    efficient variant's ``update`` needs no keyword argument (``value`` is only checked to be
    finite; ``value_fn`` and ``grad`` are ignored); the naive variant's needs ``params`` and
    ``value_fn(params, **kwargs)`` (the mini-batch loss), and further keyword arguments are
    passed on to ``value_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w):
    ...   return jnp.sum(jnp.array([1.0, 10.0]) * (w - 1.0) ** 2)
    >>> tlr = optax_ls.scale_by_tlr(window=1, init_learning_rate=1e-3)
    >>> opt = optax.chain(optax.scale(-1.0), tlr)
    >>> @jax.jit
    ... def step(w, state):
    ...   updates, state = opt.update(jax.grad(loss_fn)(w), state, w)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> for _ in range(100):
    ...   w, state = step(w, state)
    >>> bool(loss_fn(w) < 1e-3), float(optax.tree.get(state, "learning_rate")) > 1e-3
    (True, True)

  References:
    Anonymous, Trainable Learning Rate, under double-blind review (seed 004),
    Sec. 3-4, Alg. 1-2, Eq. 7-10, App. D.2 (per layer).
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _tlr_transformation("scale_by_tlr", 1.0, **locals())


def tlr(
    init_learning_rate: float = 0.1,
    n_batches_per_epoch: int | None = None,
    p: float = 0.33,
    window: int | None = None,
    c: float = 0.25,
    variant: str = "efficient",
    eta: float = 0.01,
    per_layer: bool | str = False,
    min_learning_rate: float = 1e-8,
    max_learning_rate: float = 1e3,
) -> optax.GradientTransformationExtraArgs:
  r"""SGD with a trainable learning rate (the paper's ``sgd_tlr``), taking gradients.

  The update is :math:`-\alpha_{t+1} g_t`, the rate trained on the loss after the step,
  :math:`L(w - \alpha g)`. The efficient variant (Alg. 2, Eq. 7-9) takes a bounded Newton
  step from consecutive gradients alone,

  .. math::
    \alpha_{t+1} = \alpha_t \Big(1 + \frac{\langle g_t, g_{t-1}\rangle}
      {\max(4\langle g_t, g_t - g_{t-1}\rangle,\ \langle g_t, g_{t-1}\rangle / c)}\Big),

  where, with mini-batches (Sec. 4, Eq. 10), :math:`g_t` is the gradient summed over a window
  of ``round(p * n_batches_per_epoch)`` calls and the rate changes once per window. The naive
  variant (Alg. 1) runs gradient descent on the rate, :math:`\alpha_{t+1} = \alpha_t +
  \eta\,\langle \nabla L(w_t - \alpha_t g_t), g_t\rangle`. With ``per_layer=True`` it is the
  paper's ``sgd_tlr_pl``. See :doc:`/methods/tlr` for the derivatives, the per-layer rates and
  the robustness rules.

  Args:
    init_learning_rate: the initial rate :math:`\alpha_0`, default 0.1.
    n_batches_per_epoch: mini-batches per epoch :math:`N`; the efficient variant's window is
      ``max(1, round(p * n_batches_per_epoch))`` calls. Default None.
    p: the window as a fraction of an epoch, default 0.33 (the paper's).
    window: the window in calls, instead of ``n_batches_per_epoch`` and ``p`` (``1``: the rate
      changes at every call); the efficient variant needs one of the two. Default None.
    c: the bound :math:`\alpha_{t+1} \le (1+c)\alpha_t` of Eq. 9, default 0.25.
    variant: ``"efficient"`` (default, Alg. 2) or ``"naive"`` (Alg. 1).
    eta: the naive variant's meta step :math:`\eta`, default 0.01 (ours; unused by the
      efficient variant).
    per_layer: ``False`` (default: one rate), ``True`` / ``"tensor"`` (one per tensor) or
      ``"layer"`` (one per parent node of the parameter tree).
    min_learning_rate: the smallest rate (positive), default 1e-8.
    max_learning_rate: the largest rate, default 1e3.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleByTlrState`, taking
    the gradients as ``updates``. The efficient variant's ``update`` needs no keyword argument
    (``value`` is only checked to be finite; ``value_fn`` and ``grad`` are ignored); the naive
    variant's needs ``params`` and ``value_fn(params, **kwargs)`` (the mini-batch loss), and
    further keyword arguments are passed on to ``value_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w):
    ...   return jnp.sum((w - jnp.array([1.0, -2.0])) ** 2)
    >>> opt = optax_ls.tlr(n_batches_per_epoch=3)   # window of round(0.33 * 3) = 1 call
    >>> @jax.jit
    ... def step(w, state):
    ...   updates, state = opt.update(jax.grad(loss_fn)(w), state, w)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> for _ in range(30):
    ...   w, state = step(w, state)
    >>> bool(loss_fn(w) < 1e-4)
    True

  References:
    Anonymous, Trainable Learning Rate, under double-blind review (seed 004),
    Sec. 3-4, Alg. 1-2, Eq. 7-10, App. D.2 (per layer).
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _tlr_transformation("tlr", -1.0, **locals())


class _Hyper(NamedTuple):
  init_learning_rate: Any
  window: Any  # calls per window (int32, possibly traced); None for naive
  c: Any
  eta: Any
  min_learning_rate: Any
  max_learning_rate: Any


def _tlr_transformation(
    method: str,
    sign: float,
    *,
    variant: str,
    per_layer: bool | str,
    **hyper: Any,
) -> optax.GradientTransformationExtraArgs:
  """TLR along ``sign * updates``: ``scale_by_tlr`` (+1) and ``tlr`` (-1)."""
  h = _validate(method, variant, per_layer, **hyper)
  naive = variant == "naive"

  def init_fn(params: optax.Params) -> ScaleByTlrState:
    # Every leaf its own buffer (jnp.array copies), so that the state can be donated.
    def zeros():
      return jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), _core.buffer_dtype(x)), params)

    def rate(_=None):
      return jnp.array(h.init_learning_rate, jnp.float32)

    one_call = naive or _core.concrete(h.window) == 1
    return ScaleByTlrState(
        learning_rate=jax.tree.map(rate, params) if per_layer else rate(),
        num_evals=jnp.zeros((), jnp.int32),
        window_calls=jnp.zeros((), jnp.int32),
        accumulated=None if one_call else zeros(),
        previous=None if naive else zeros(),
        no_step_count=jnp.zeros((), jnp.int32),
        no_step_reason=jnp.zeros((), jnp.int32),
    )

  def update_fn(
      updates: optax.Updates,
      state: ScaleByTlrState,
      params: optax.Params | None = None,
      *,
      value_fn: Callable[..., Any] | None = None,
      value: Any = None,
      grad: optax.Updates | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, ScaleByTlrState]:
    del grad  # the inner products are taken between directions
    value_ok = jnp.ones((), bool) if value is None else jnp.isfinite(
        _core.as_scalar(value, "`value`"))
    # An injected hyperparameter out of its range (only known at run time) makes a zero
    # update and leaves the state as it was, as a non-finite value does.
    valid = _runtime_valid(h, naive)
    value_ok = value_ok & valid
    if naive:
      value_fn = _core.require_value_fn(value_fn, method)
      _core.require_params(params, method, "the naive variant evaluates the trial point")
      new_state, ok = _naive_step(h, sign, per_layer, updates, state, params,
                                  _core.bind_value_fn(value_fn, extra_args), value_ok)
    else:
      new_state, ok = _efficient_step(h, per_layer, updates, state, value_ok)
    # No search: an update steps unless invalid or non-finite inputs skip it.
    no_step_count, no_step_reason = _core.no_step(state.no_step_count, ok, invalid=~valid,
                                                  non_finite=True)
    new_state = new_state._replace(no_step_count=no_step_count, no_step_reason=no_step_reason)
    new_updates = _scaled(ok, sign, new_state.learning_rate, updates)
    return new_updates, optax.tree.cast_like(new_state, other_tree=state)

  return optax.GradientTransformationExtraArgs(_core.unshare_init(init_fn), update_fn)


# ---------------------------------------------------------------------------
# The two variants.
# ---------------------------------------------------------------------------


def _efficient_step(
    h: _Hyper, per_layer: bool | str, updates: optax.Updates, state: ScaleByTlrState,
    value_ok: jax.Array,
) -> tuple[ScaleByTlrState, jax.Array]:
  """Alg. 2 over windows of calls: returns the new state and whether to step."""
  rates = state.learning_rate
  groups = _group_ids(updates, per_layer)
  if state.accumulated is None:  # a window of one call: g_t is the direction itself
    total = updates
    cross, curv = _inner_products(total, state.previous)
    # A non-finite direction makes both products non-finite (the stored one is finite).
    ok = value_ok & jnp.isfinite(sum(cross) + sum(curv))
    last = ok
    previous = jax.tree.map(lambda d, old: jnp.where(ok, d.astype(old.dtype), old),
                            updates, state.previous)
    accumulated = None
    window_calls = state.window_calls
  else:
    ok = value_ok & _all_finite(updates)
    first = state.window_calls == 0
    accumulated = jax.tree.map(
        lambda a, d: jnp.where(ok, jnp.where(first, d.astype(a.dtype), a + d.astype(a.dtype)), a),
        state.accumulated, updates)
    last = ok & (state.window_calls + 1 >= h.window)
    zeros = [jnp.zeros((), _core.compute_dtype(a, b)) for a, b in
             zip(jax.tree.leaves(accumulated), jax.tree.leaves(state.previous), strict=True)]
    cross, curv = jax.lax.cond(
        last, lambda: _inner_products(accumulated, state.previous), lambda: (zeros, zeros))
    previous = _phased.store_or_keep(last, lambda: accumulated, state.previous)
    window_calls = jnp.where(ok, jnp.where(last, 0, state.window_calls + 1), state.window_calls)

  factors = [_tlr_factor(x, k, h.c) for x, k in zip(_group_sum(cross, groups),
                                                    _group_sum(curv, groups), strict=True)]
  new_rates = _map_rates(
      lambda r, f: jnp.where(last, jnp.clip(r * f, h.min_learning_rate, h.max_learning_rate), r),
      rates, factors, groups)
  new_state = ScaleByTlrState(
      learning_rate=new_rates,
      num_evals=jnp.zeros((), jnp.int32),
      window_calls=window_calls.astype(jnp.int32),
      accumulated=accumulated,
      previous=previous,
      no_step_count=state.no_step_count,
      no_step_reason=state.no_step_reason,
  )
  return new_state, ok


def _naive_step(
    h: _Hyper, sign: float, per_layer: bool | str, updates: optax.Updates,
    state: ScaleByTlrState, params: optax.Params, objective: Callable[[Any], jax.Array],
    value_ok: jax.Array,
) -> tuple[ScaleByTlrState, jax.Array]:
  """Alg. 1: one gradient step on the rate from the gradient at the trial point."""
  rates = state.learning_rate
  groups = _group_ids(updates, per_layer)
  n_leaves = len(groups)
  ok = value_ok & _all_finite(updates)

  def evaluate():
    leaf_rates = _leaf_rates(rates, n_leaves)
    p_leaves, treedef = jax.tree.flatten(params)
    d_leaves = jax.tree.leaves(updates)
    trial = treedef.unflatten([
        _core.add_step(p, sign * r, d) for p, r, d in zip(p_leaves, leaf_rates, d_leaves,
                                                         strict=True)])
    trial_value, trial_grad = jax.value_and_grad(objective)(trial)
    slopes = [sign * _core.real_vdot(g, d) for g, d in
              zip(jax.tree.leaves(trial_grad), d_leaves, strict=True)]
    return _core.as_scalar(trial_value, "value_fn's result"), slopes

  # The trial runs on every call and its result is masked on a skipped update:
  # under ``lax.cond`` XLA:CPU runs a convolution's backward pass many times
  # slower (a naive step on ResNet-20 went from 27x to 1.9x an SGD step), and
  # a skipped update is the rare case. A non-finite direction only makes the
  # discarded trial non-finite.
  trial_value, slopes = evaluate()
  trial_value = jnp.where(ok, trial_value, 0.0)
  slopes = [jnp.where(ok, s, 0.0) for s in slopes]
  slopes = _group_sum(slopes, groups)
  trial_ok = jnp.isfinite(trial_value) & jnp.isfinite(sum(slopes))

  def new_rate(r, slope):
    trained = jnp.clip(r - h.eta * slope, h.min_learning_rate, h.max_learning_rate)
    shrunk = jnp.maximum(r * _NAIVE_SHRINK, h.min_learning_rate)
    return jnp.where(ok, jnp.where(trial_ok, trained, shrunk), r)

  new_state = ScaleByTlrState(
      learning_rate=_map_rates(new_rate, rates, slopes, groups),
      num_evals=jnp.ones((), jnp.int32),
      window_calls=state.window_calls,
      accumulated=None,
      previous=None,
      no_step_count=state.no_step_count,
      no_step_reason=state.no_step_reason,
  )
  return new_state, ok & trial_ok


# ---------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------


def _tlr_factor(cross: jax.Array, curv: jax.Array, c: Any) -> jax.Array:
  r"""``1 + <g, g'> / max(4 <g, g - g'>, <g, g'> / c)`` (Eq. 7 and 9), guarded.

  The denominator is positive unless ``g = 0``; then the factor is 1. The
  ratio is at most ``c`` (clipped, so that float rounding cannot exceed the
  bound) and above ``-1/4``.
  """
  denom = jnp.maximum(4.0 * curv, cross / c)
  positive = denom > 0
  ratio = jnp.where(positive, cross / jnp.where(positive, denom, 1.0), 0.0)
  return 1.0 + jnp.minimum(ratio, c)


def _inner_products(g: Any, g_prev: Any) -> tuple[list[jax.Array], list[jax.Array]]:
  """Per tensor, ``<g, g_prev>`` and ``<g, g - g_prev>`` in :func:`_core.compute_dtype`."""
  cross, curv = [], []
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_prev), strict=True):
    dtype = jnp.promote_types(_core.buffer_dtype(a), b.dtype)
    a, b = a.astype(dtype), b.astype(dtype)
    cross.append(jnp.vdot(a, b).real)
    curv.append(jnp.vdot(a, a - b).real)
  return cross, curv


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _group_ids(tree: Any, per_layer: bool | str) -> list[int]:
  """The rate index of each leaf: all 0, one per leaf, or one per parent path."""
  paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  if not per_layer:
    return [0] * len(paths)
  if per_layer == "layer":
    index: dict[str, int] = {}
    return [index.setdefault(jax.tree_util.keystr(tuple(path[:-1])), len(index))
            for path in paths]
  return list(range(len(paths)))


def _group_sum(values: list[jax.Array], groups: list[int]) -> list[jax.Array]:
  """Per-leaf scalars summed within each group, in group order."""
  sums = [jnp.zeros((), jnp.float32)] * (max(groups, default=0) + 1)
  for v, g in zip(values, groups, strict=True):
    sums[g] = sums[g] + v
  return sums


def _leaf_rates(rates: Any, n_leaves: int) -> list[jax.Array]:
  leaves = jax.tree.leaves(rates)
  return leaves if len(leaves) == n_leaves else leaves * n_leaves


def _map_rates(fn: Callable[[jax.Array, jax.Array], jax.Array], rates: Any,
               per_group: list[jax.Array], groups: list[int]) -> Any:
  """``fn(rate, per_group[group of the rate])`` for a scalar rate or a rate tree."""
  if not isinstance(rates, jax.Array) or rates.ndim:
    leaves, treedef = jax.tree.flatten(rates)
    return treedef.unflatten([fn(r, per_group[g]) for r, g in zip(leaves, groups, strict=True)])
  return fn(rates, per_group[0])


def _scaled(ok: jax.Array, sign: float, rates: Any, updates: optax.Updates) -> optax.Updates:
  """``sign * rate * d`` per tensor where ``ok``, an exact zero elsewhere."""
  leaves, treedef = jax.tree.flatten(updates)
  leaf_rates = _leaf_rates(rates, len(leaves))
  return treedef.unflatten([
      jnp.where(ok, (sign * r) * d.astype(_core.buffer_dtype(d)), 0.0).astype(d.dtype)
      for r, d in zip(leaf_rates, leaves, strict=True)])


def _runtime_valid(h: _Hyper, naive: bool) -> jax.Array:
  """Whether the hyperparameters are valid as traced values (``optax.inject_hyperparams``).

  Construction checks the concrete ones; an injected value is only known here.
  """
  f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
  ok = (f32(h.init_learning_rate) > 0) & (f32(h.c) > 0) & (f32(h.min_learning_rate) > 0)
  ok &= f32(h.max_learning_rate) >= f32(h.min_learning_rate)
  if naive:
    ok &= f32(h.eta) > 0
  elif h.window is not None:
    ok &= h.window >= 1
  return ok


def _validate(method: str, variant: str, per_layer: bool | str, **kw: Any) -> _Hyper:
  """Checks the TLR hyperparameters; raises ``ValueError`` naming the argument."""
  if variant not in _VARIANTS:
    raise ValueError(f"`variant` must be one of {_VARIANTS}, got {variant!r}.")
  if not any(per_layer is v or (isinstance(v, str) and per_layer == v) for v in _PER_LAYER):
    raise ValueError(f"`per_layer` must be one of {_PER_LAYER}, got {per_layer!r}.")
  check = _core.check
  check("init_learning_rate", kw["init_learning_rate"], lambda v: v > 0.0, "positive")
  check("min_learning_rate", kw["min_learning_rate"], lambda v: v > 0.0, "positive")
  check("max_learning_rate", kw["max_learning_rate"], lambda v: v > 0.0, "positive")
  lo, hi, init = (_core.concrete(kw[k]) for k in
                  ("min_learning_rate", "max_learning_rate", "init_learning_rate"))
  if None not in (lo, hi, init) and not lo <= init <= hi:
    raise ValueError(f"`init_learning_rate` must lie in [min_learning_rate, max_learning_rate]"
                     f" = [{lo}, {hi}], got {init}.")
  check("c", kw["c"], lambda v: v > 0.0, "positive")
  check("eta", kw["eta"], lambda v: v > 0.0, "positive")
  check("p", kw["p"], lambda v: v > 0.0, "positive")
  window, n = kw["window"], kw["n_batches_per_epoch"]
  check("window", window, lambda v: v >= 1 and v == int(v), "a positive integer",
        optional=True)
  check("n_batches_per_epoch", n, lambda v: v >= 1, "a positive number of batches",
        optional=True)
  calls = None
  if variant == "efficient":
    if window is not None and n is not None:
      raise ValueError(f"{method}: pass `window` or `n_batches_per_epoch` (with `p`), not both.")
    if window is None and n is None:
      raise ValueError(
          f"{method}: the efficient variant updates the rate once per window of "
          "round(p * n_batches_per_epoch) calls (Sec. 4 of the paper), so "
          "`n_batches_per_epoch` is required; or pass `window` (1: every call).")
    if window is not None:
      calls = jnp.asarray(window, jnp.int32)
    else:
      calls = jnp.maximum(jnp.round(jnp.asarray(kw["p"], jnp.float32) * n), 1).astype(jnp.int32)
  return _Hyper(
      init_learning_rate=kw["init_learning_rate"],
      window=calls,
      c=kw["c"],
      eta=kw["eta"],
      min_learning_rate=kw["min_learning_rate"],
      max_learning_rate=kw["max_learning_rate"],
  )
