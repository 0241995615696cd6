"""GOLS-I: the gradient-only line search that is inexact.

Reference:
  Kafka, Wilke, "Gradient-only line searches: An Alternative to Probabilistic
  Line Searches", 2019 (arXiv:1903.09383); seed 002 (Mutschler, PhD thesis),
  Sec. 2.6.4, Alg. 4 and Eq. 2.24.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_ls import _core, _phased

# The phases: a new line, its first trial, then growing or shrinking the step
# (Alg. 4's flags 1 and 2).
_START, _FIRST, _GROW, _SHRINK = 0, 1, 2, 3


class ScaleByGolsIState(NamedTuple):
  r"""State of :func:`scale_by_gols_i` and :func:`gols_i`.

  Attributes:
    clock: the phase machine (:class:`optax_ls._phased.PhaseClock`):
      ``phase`` is what the next call does (0 = start a new line, 1 = test
      the first trial, 2 = growing, 3 = shrinking), ``phase_calls`` the calls
      made in it, ``calls`` the calls made in total (batches consumed).
    learning_rate: the step :math:`\lambda` along the line direction ``d``
      from the line's start ``w`` at which the last call left the weights
      (float32): the trial being tested, or the accepted step once a search
      ends; 0 where the weights stay at (or went back to) ``w``.
    first_step: the first trial of the next search, before clipping to its
      bounds: ``init_step_size`` until a search is accepted, then the last
      accepted step.
    max_step: :math:`\lambda_{\max} = \min(1/\|d\|,` ``max_step_size``
      :math:`)` of the current line (at least ``min_step_size``).
    slope_at_zero: :math:`l'_{B_0}(0) = \langle g_0, d\rangle`, the
      directional derivative at ``w`` of the current line (negative).
    slope: the directional derivative :math:`\langle g, d\rangle` measured
      by the last trial call (0 on a start call or where it was not finite). Both slopes are in
      :func:`optax_ls.compute_dtype` of the parameters (float64 for float64 ones).
    num_evals: ``value_fn`` calls in the last update: always 0 (int32);
      GOLS-I only uses the gradient each call is given.
    num_searches: searches accepted so far (int32).
    num_failed: searches abandoned so far because a trial's gradient or
      value was not finite, or an injected hyperparameter out of its range (int32).
    direction: the line direction ``d`` of the current search (at least
      float32). ``gols_i`` stores the gradient ``g_0``, whose negation is
      ``d``.
    no_step_count: how many calls in a row made no step (int32; 0 after a step): a start
      call that could not start a search, or a trial call that abandoned one (back to
      ``w``). A trial call that accepts the point the weights stand at moves nothing by
      design: it leaves the count and the reason as they were.
    no_step_reason: why the last counted call made no step (int32; 0: it made one; see
      :func:`optax_ls.check_progress`): an invalid injected hyperparameter, a non-finite
      gradient, slope or ``value``, or a zero direction or one that does not descend.
  """

  clock: _phased.PhaseClock
  learning_rate: jax.Array
  first_step: jax.Array
  max_step: jax.Array
  slope_at_zero: jax.Array
  slope: jax.Array
  num_evals: jax.Array
  num_searches: jax.Array
  num_failed: jax.Array
  direction: optax.Updates
  no_step_count: jax.Array
  no_step_reason: jax.Array


def scale_by_gols_i(
    init_step_size: float = 1e-8,
    c2: float = 0.9,
    eta: float = 2.0,
    min_step_size: float = 1e-8,
    max_step_size: float = 1e7,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales a descent direction by GOLS-I, a gradient-only line search across calls.

  GOLS-I (Alg. 4) looks along a line :math:`w + \lambda d` (:math:`d` the incoming direction
  of the call that starts it; ``-g`` for SGD) for a sign change of the directional derivative
  :math:`l'_B(\lambda) = \langle \nabla f_B(w + \lambda d), d\rangle`, each measured on a new
  mini-batch: every ``update`` call is one trial, on the gradient at the point where the
  previous call left the weights. The first trial is accepted when (Eq. 2.24)

  .. math::
    0 \le l'_{B_1}(\lambda) \le c_2\, |l'_{B_0}(0)|;

  otherwise :math:`\lambda` is multiplied by :math:`\eta` while the derivative is negative, or
  divided by it while it is positive, until its sign changes or :math:`\lambda` leaves
  :math:`[\eta\lambda_{\min}, \lambda_{\max}/\eta]`. No loss value is needed. See
  :doc:`/methods/gols` for the phases, the bounds and the robustness rules.

  Args:
    init_step_size: :math:`\lambda_{\mathrm{init}} > 0`, the first trial of the first search,
      default 1e-8 (the paper's); later searches start from the last accepted step.
    c2: :math:`c_2 > 0` of the curvature condition, default 0.9.
    eta: the factor :math:`\eta > 1` by which a trial grows or shrinks, default 2.
    min_step_size: :math:`\lambda_{\min} > 0`, the smallest trial, default 1e-8.
    max_step_size: the cap on :math:`\lambda_{\max} = \min(1/\|d\|, \texttt{max\_step\_size})`,
      above ``min_step_size``, default 1e7.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleByGolsIState`. Its
    ``update`` takes ``grad`` (for the directional derivatives; defaults to ``-updates``) and
    ``value`` (optional, only checked to be finite), and ignores ``value_fn``, ``params`` and
    other keyword arguments.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w):  # along -grad from w = 0, the minimum is at lambda = 0.4
    ...   return 1.25 * jnp.sum((w - 0.2) ** 2)
    >>> opt = optax.chain(optax.scale(-1.0), optax_ls.scale_by_gols_i(init_step_size=0.125))
    >>> @jax.jit
    ... def step(w, state):
    ...   g = jax.grad(loss_fn)(w)
    ...   updates, state = opt.update(g, state, w, grad=g)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> trace = []  # (phase of the next call, lambda)
    >>> for _ in range(4):
    ...   w, state = step(w, state)
    ...   trace.append((int(optax.tree.get(state, "phase")),
    ...                 float(optax.tree.get(state, "learning_rate"))))
    >>> trace  # start at 0.125, grow to 0.25 and 0.5, accept 0.5 (slope >= 0 there)
    [(1, 0.125), (2, 0.25), (2, 0.5), (0, 0.5)]
    >>> int(optax.tree.get(state, "num_searches")), int(optax.tree.get(state, "num_evals"))
    (1, 0)

  References:
    Kafka, Wilke, Gradient-only line searches: An Alternative to
    Probabilistic Line Searches, arXiv:1903.09383, 2019; Mutschler,
    Empirics-based Line Searches for Deep Learning, PhD thesis, Tübingen 2022,
    Sec. 2.6.4, Alg. 4 and Eq. 2.24.
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _gols_transformation("scale_by_gols_i", 1.0, **locals())


def gols_i(
    init_step_size: float = 1e-8,
    c2: float = 0.9,
    eta: float = 2.0,
    min_step_size: float = 1e-8,
    max_step_size: float = 1e7,
) -> optax.GradientTransformationExtraArgs:
  r"""SGD with GOLS-I, the gradient-only line search that is inexact, taking gradients.

  Each line is along the negative gradient :math:`d = -g_0` of the call that starts it; every
  later call is one trial on a new batch :math:`B`, whose gradient gives the directional
  derivative :math:`l'_B(\lambda) = -\langle \nabla f_B(w + \lambda d), g_0\rangle`. The first
  trial :math:`\lambda` is accepted when (Eq. 2.24)

  .. math::
    0 \le l'_{B_1}(\lambda) \le c_2\, |l'_{B_0}(0)| = c_2 \|g_0\|^2;

  otherwise :math:`\lambda` is multiplied by :math:`\eta` while the derivative is negative, or
  divided by it while it is positive, until its sign changes or :math:`\lambda` leaves
  :math:`[\eta\lambda_{\min}, \lambda_{\max}/\eta]`, :math:`\lambda_{\max} = \min(1/\|g_0\|,
  \texttt{max\_step\_size})` (Alg. 4). Every call moves the weights to its next trial point.
  See :doc:`/methods/gols` for the algorithm, the first step's cost and the robustness rules.

  Args:
    init_step_size: :math:`\lambda_{\mathrm{init}} > 0`, the first trial of the first search,
      default 1e-8 (the paper's); later searches start from the last accepted step.
    c2: :math:`c_2 > 0` of the curvature condition, default 0.9.
    eta: the factor :math:`\eta > 1` by which a trial grows or shrinks, default 2.
    min_step_size: :math:`\lambda_{\min} > 0`, the smallest trial, default 1e-8.
    max_step_size: the cap on :math:`\lambda_{\max} = \min(1/\|g_0\|, \texttt{max\_step\_size})`,
      above ``min_step_size``, default 1e7.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleByGolsIState`,
    taking the gradients as ``updates``. Its ``update`` needs no keyword argument: ``grad``
    (for the directional derivatives, when ``updates`` were transformed before) defaults to
    ``updates``, ``value`` (optional) is only checked to be finite, and ``value_fn``,
    ``params`` and other keyword arguments are ignored.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w, x, y):
    ...   return jnp.mean((x @ w - y) ** 2)
    >>> x = jnp.array([[1.0, 2.0], [3.0, 1.0], [0.5, -1.0]])
    >>> y = jnp.array([1.0, 2.0, 0.0])
    >>> opt = optax_ls.gols_i(init_step_size=0.01)
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> @jax.jit
    ... def step(w, state):  # no value_fn: only gradients
    ...   g = jax.grad(loss_fn)(w, x, y)
    ...   updates, state = opt.update(g, state, w)
    ...   return optax.apply_updates(w, updates), state
    >>> for _ in range(40):
    ...   w, state = step(w, state)
    >>> bool(loss_fn(w, x, y) < 0.05)
    True

  References:
    Kafka, Wilke, Gradient-only line searches: An Alternative to
    Probabilistic Line Searches, arXiv:1903.09383, 2019; Mutschler,
    Empirics-based Line Searches for Deep Learning, PhD thesis, Tübingen 2022,
    Sec. 2.6.4, Alg. 4 and Eq. 2.24.
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _gols_transformation("gols_i", -1.0, **locals())


# ---------------------------------------------------------------------------
# The transformation.
# ---------------------------------------------------------------------------


class _Plan(NamedTuple):
  """What a phase decided for this call; the tree algebra follows it."""

  store: jax.Array  # the call's direction becomes the line direction
  move: jax.Array  # the update is move * d (lambda' - lambda)
  learning_rate: jax.Array
  first_step: jax.Array
  max_step: jax.Array
  slope_at_zero: jax.Array
  slope: jax.Array
  num_searches: jax.Array
  num_failed: jax.Array
  no_step_count: jax.Array
  no_step_reason: jax.Array


def _gols_transformation(
    method: str,
    sign: float,
    *,
    init_step_size: Any,
    c2: Any,
    eta: Any,
    min_step_size: Any,
    max_step_size: Any,
) -> optax.GradientTransformationExtraArgs:
  """GOLS-I along ``sign * updates``: ``scale_by_gols_i`` (+1) and ``gols_i`` (-1).

  The state stores the incoming updates of a start call, ``b``; the line
  direction is ``d = sign * b``. Without ``grad`` the gradient is
  ``g = -sign * updates``, so both forms measure ``<g, d> = -<updates, b>``.
  """
  _validate(init_step_size, c2, eta, min_step_size, max_step_size)
  f32 = jnp.float32

  def init_fn(params: optax.Params) -> ScaleByGolsIState:
    zero = jnp.zeros((), f32)
    izero = jnp.zeros((), jnp.int32)
    slope_zero = jnp.zeros((), _core.compute_dtype(params))  # slopes in the decisions' dtype
    return ScaleByGolsIState(
        clock=_phased.init_clock(_START),
        learning_rate=zero,
        first_step=jnp.asarray(init_step_size, f32),
        max_step=zero,
        slope_at_zero=slope_zero,
        slope=slope_zero,
        num_evals=izero,
        num_searches=izero,
        num_failed=izero,
        direction=jax.tree.map(
            lambda p: jnp.zeros(p.shape, jnp.promote_types(p.dtype, f32)), params
        ),
        no_step_count=izero,
        no_step_reason=izero,
    )

  def update_fn(
      updates: optax.Updates,
      state: ScaleByGolsIState,
      params: optax.Params | None = None,
      *,
      value_fn: Callable[..., Any] | None = None,
      value: Any = None,
      grad: optax.Updates | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, ScaleByGolsIState]:
    del params, value_fn, extra_args  # gradient-only: nothing is evaluated
    value_ok = (
        jnp.ones((), bool) if value is None else jnp.isfinite(_core.as_scalar(value, "`value`"))
    )
    own_grad = grad is None or (sign < 0 and grad is updates)
    lam = state.learning_rate
    lam_min = jnp.asarray(min_step_size, f32)
    lam_max = state.max_step
    eta_ = jnp.asarray(eta, f32)
    zero = jnp.zeros((), f32)
    # An injected hyperparameter out of its range (only known at run time): no search
    # starts, and a running one is abandoned (eta <= 1 would never end it).
    valid = (jnp.asarray(init_step_size, f32) > 0) & (jnp.asarray(c2, f32) > 0) & (eta_ > 1)
    valid &= (lam_min > 0) & (jnp.asarray(max_step_size, f32) > lam_min)

    def slope_along(buffer: Any) -> jax.Array:
      """``<g, d>`` for the line direction ``d = sign * buffer``."""
      if own_grad:
        return -_core.real_vdot(updates, buffer)
      return sign * _core.real_vdot(grad, buffer)

    def plan(**changes: Any) -> _Plan:
      kept = _Plan(
          store=jnp.zeros((), bool),
          move=zero,
          learning_rate=lam,
          first_step=state.first_step,
          max_step=state.max_step,
          slope_at_zero=state.slope_at_zero,
          slope=jnp.zeros_like(state.slope),
          num_searches=state.num_searches,
          num_failed=state.num_failed,
          no_step_count=state.no_step_count,
          no_step_reason=state.no_step_reason,
      )
      # Every phase returns the same dtypes (those of the state).
      return kept._replace(**{k: jnp.asarray(v).astype(getattr(kept, k).dtype)
                              for k, v in changes.items()})

    def start(clock: _phased.PhaseClock, _) -> tuple[_Plan, _phased.Transition]:
      del clock
      squared_norm = _core.real_vdot(updates, updates)
      slope0 = -squared_norm if own_grad else slope_along(updates)
      ok = (
          value_ok
          & jnp.isfinite(squared_norm)
          & (squared_norm > 0)
          & jnp.isfinite(slope0)
          & (slope0 < 0)
          & valid
      )
      count, reason = _core.no_step(
          state.no_step_count, ok, invalid=~valid,
          non_finite=~(value_ok & jnp.isfinite(squared_norm) & jnp.isfinite(slope0)),
          not_descent=(squared_norm <= 0) | (slope0 >= 0))
      inv_norm = jax.lax.rsqrt(jnp.where(ok, squared_norm, 1.0))
      new_max = jnp.maximum(jnp.minimum(inv_norm, max_step_size), lam_min)
      first = jnp.clip(state.first_step, lam_min, new_max)
      out = plan(
          store=ok,
          move=jnp.where(ok, first, 0.0),
          learning_rate=jnp.where(ok, first, 0.0),
          max_step=jnp.where(ok, new_max, state.max_step),
          slope_at_zero=jnp.where(ok, slope0, state.slope_at_zero),
          no_step_count=count,
          no_step_reason=reason,
      )
      return out, _phased.transition(jnp.where(ok, _FIRST, _START), restart=~ok)

    def trial(kind: int) -> _phased.Branch:
      """A trial call: tests the derivative at ``lam`` and moves or accepts."""

      def branch(clock: _phased.PhaseClock, _) -> tuple[_Plan, _phased.Transition]:
        del clock
        s = slope_along(state.direction)
        ok = value_ok & jnp.isfinite(s) & valid
        grown = jnp.minimum(lam * eta_, lam_max)
        shrunk = jnp.maximum(lam / eta_, lam_min)
        if kind == _FIRST:
          accept_here = (s >= 0) & (s <= c2 * jnp.abs(state.slope_at_zero))
          grow = s < 0
        elif kind == _GROW:
          accept_here = s >= 0
          grow = jnp.ones((), bool)
        else:
          accept_here = s < 0
          grow = jnp.zeros((), bool)
        new_lam = jnp.where(accept_here, lam, jnp.where(grow, grown, shrunk))
        # Alg. 4 returns a step beyond these limits without measuring it.
        at_limit = jnp.where(grow, new_lam > lam_max / eta_, new_lam < lam_min * eta_)
        done = ok & (accept_here | at_limit)
        new_lam = jnp.where(ok, new_lam, 0.0)  # a failed trial goes back to w
        # A move to another trial is a step; going back to w is none (the search is
        # abandoned); accepting the trial the weights stand at moves nothing by design
        # and leaves the count as it was.
        moved = ok & (new_lam != lam)
        count, reason = _core.no_step(state.no_step_count, moved, invalid=~valid,
                                      non_finite=~(value_ok & jnp.isfinite(s)))
        stay = ok & ~moved
        out = plan(
            move=new_lam - lam,
            learning_rate=new_lam,
            first_step=jnp.where(done, new_lam, state.first_step),
            slope=jnp.where(ok, s, 0.0),
            num_searches=state.num_searches + done.astype(jnp.int32),
            num_failed=state.num_failed + (~ok).astype(jnp.int32),
            no_step_count=jnp.where(stay, state.no_step_count, count),
            no_step_reason=jnp.where(stay, state.no_step_reason, reason),
        )
        following = jnp.where(grow, _GROW, _SHRINK)
        return out, _phased.transition(jnp.where(done | ~ok, _START, following))

      return branch

    branches = (start, trial(_FIRST), trial(_GROW), trial(_SHRINK))
    p, new_clock = _phased.run_phase(state.clock, branches, None)

    # The buffer is written by a start call only; the update reads the buffer
    # just written (a start call's move is along its own direction).
    direction = _phased.store_or_keep(
        p.store,
        lambda: jax.tree.map(lambda u, b: u.astype(b.dtype), updates, state.direction),
        state.direction,
    )
    coef = sign * p.move
    new_updates = jax.tree.map(
        lambda b, u: jnp.where(p.move != 0, coef.astype(b.dtype) * b, 0.0).astype(u.dtype),
        direction,
        updates,
    )
    new_state = ScaleByGolsIState(
        clock=new_clock,
        learning_rate=p.learning_rate,
        first_step=p.first_step,
        max_step=p.max_step,
        slope_at_zero=p.slope_at_zero,
        slope=p.slope,
        num_evals=jnp.zeros((), jnp.int32),
        num_searches=p.num_searches,
        num_failed=p.num_failed,
        direction=direction,
        no_step_count=p.no_step_count,
        no_step_reason=p.no_step_reason,
    )
    return new_updates, optax.tree.cast_like(new_state, other_tree=state)

  return optax.GradientTransformationExtraArgs(_core.unshare_init(init_fn), update_fn)


def _validate(init_step_size: Any, c2: Any, eta: Any, min_step_size: Any,
              max_step_size: Any) -> None:
  """Checks GOLS-I's hyperparameters; raises ``ValueError`` naming the argument."""
  check = _core.check
  check("init_step_size", init_step_size, lambda v: v > 0.0, "positive")
  check("c2", c2, lambda v: v > 0.0, "positive")
  check("eta", eta, lambda v: v > 1.0, "greater than 1")
  check("min_step_size", min_step_size, lambda v: v > 0.0, "positive")
  check("max_step_size", max_step_size, lambda v: v > 0.0, "positive")
  lo, hi = _core.concrete(min_step_size), _core.concrete(max_step_size)
  if lo is not None and hi is not None and not lo < hi:
    raise ValueError(
        f"`max_step_size` must be greater than min_step_size = {lo}, got {max_step_size!r}."
    )
