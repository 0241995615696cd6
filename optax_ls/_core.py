"""The in-call search core shared by SLS, Adam+SLS, SaLSa and metric SLS.

A search inside one ``update`` call evaluates the mini-batch objective at a
sequence of trial step sizes ``eta_0, eta_1, ...`` along a fixed direction,
inside a single :func:`jax.lax.while_loop`. What differs between the methods
is only the rule that looks at a trial and decides whether to accept it and,
if not, which step size to try next. That rule is passed in as ``step_rule``;
the loop, its bounds and its bookkeeping live here, written once.

The module also holds the small helpers every method needs: routing the extra
keyword arguments of ``update`` to ``value_fn``, the clear error for a missing
``value_fn``, masked scaling of a direction (so that a skipped step is an exact
zero even when the direction holds NaN) and hyperparameter validation that
works with :func:`optax.inject_hyperparams`.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array
# (step_size, trial_value) -> (accept, next_step_size, sufficient_decrease)
StepRule = Callable[[Array, Array], tuple[Array, Array, Array]]


class SearchResult(NamedTuple):
  """Outcome of :func:`backtracking_search`.

  Attributes:
    step_size: the accepted step size if ``accepted``, else the last trial
      (``first_step_size`` when no trial ran).
    value: the objective at the last trial point, as returned (possibly
      non-finite; NaN when no trial ran).
    accepted: whether the step rule accepted ``step_size``.
    next_step_size: the step size the rule asked for after the last trial,
      clipped to ``max_step_size`` (equal to ``step_size`` when accepted); a
      search that stops without acceptance continues from here on the next
      call.
    fallback_step_size: the last trial step that satisfied sufficient decrease
      (0 if none did); used when a search ends without acceptance.
    num_evals: number of objective evaluations made by the search (int32).
  """

  step_size: Array
  value: Array
  accepted: Array
  next_step_size: Array
  fallback_step_size: Array
  num_evals: Array


def backtracking_search(
    trial_value: Callable[[Array], Array],
    step_rule: StepRule,
    first_step_size: Array,
    *,
    max_evals: int | Array,
    min_step_size: float | Array,
    max_step_size: float | Array,
    enabled: Array | bool = True,
    value_dtype: Any = None,
) -> SearchResult:
  r"""Runs a bounded line search in one :func:`jax.lax.while_loop`.

  The shared loop of the searches inside one ``update`` call (SLS, Adam + SLS,
  SaLSa, metric SLS). Along a fixed direction :math:`d` from :math:`w` it
  evaluates :math:`\phi(\eta) = f(w + \eta d)` (``trial_value``) at the
  trials

  .. math::
    \eta_0 = \text{first\_step\_size}, \qquad
    \eta_{i+1} = \min(\rho(\eta_i, \phi(\eta_i)),\ \eta_{\max}),

  where the step rule :math:`(\text{accept}_i, \rho, \text{decrease}_i)` =
  ``step_rule(eta_i, phi(eta_i))`` decides whether :math:`\eta_i` is
  accepted and, if not, which step to try next. The loop stops at the first
  accepted trial, when the rule asks for a step below ``min_step_size`` (that
  step is not tried), or after ``max_evals`` trials. With the Armijo rule
  (accept when :math:`\phi(\eta) \le \phi(0) + c\,\eta\,\langle g, d\rangle`,
  else :math:`\eta \leftarrow \beta\eta`) this is the classical backtracking
  line search; SaLSa's smoothed criterion and the Goldstein rule (which also
  grows :math:`\eta`) are other step rules. A non-finite trial value reaches
  the rule as :math:`+\infty` and is never accepted, so no NaN can be
  accepted. The loop runs no trial at all when ``enabled`` is false.

  Args:
    trial_value: ``eta -> f(w + eta * d)`` as a scalar; non-finite values are
      allowed and are always treated as failed trials.
    step_rule: ``(eta, value) -> (accept, next_eta, sufficient_decrease)``,
      three scalars: whether to accept ``eta``, the next trial if not, and
      whether ``eta`` satisfies sufficient decrease (recorded as the fallback).
      A non-finite trial reaches it as ``+inf``.
    first_step_size: the first trial :math:`\eta_0`, already inside the bounds
      (it is not clipped).
    max_evals: the largest number of trials, at least 1 (a Python integer
      below 1 raises a ``ValueError``; at least one trial runs when
      ``enabled``).
    min_step_size: a rule asking for a step below this ends the search
      without trying it.
    max_step_size: requested steps are clipped to this.
    enabled: when false the loop runs no trial (e.g. a zero or non-descent
      direction); the result then reports no acceptance and zero evaluations.
      Default True.
    value_dtype: the dtype the trial values are compared in (see
      :func:`compute_dtype`); default: that of ``trial_value``'s result, at least
      float32.

  Returns:
    A :class:`SearchResult` (float32 step sizes, the value in ``value_dtype``, bool
    ``accepted``, int32 ``num_evals``): the accepted step, or the last trial
    and the step to resume from when none was accepted.

  Example:
    >>> import jax.numpy as jnp, optax_ls
    >>> f = lambda w: (w - 3.0) ** 2  # from w = 0 along d = 1: slope f'(0) = -6
    >>> f0, slope, c = f(0.0), -6.0, 0.5
    >>> def armijo(eta, value):  # accept, or halve the step
    ...   ok = value <= f0 + c * eta * slope
    ...   return ok, 0.5 * eta, ok
    >>> result = optax_ls.backtracking_search(
    ...     lambda eta: f(0.0 + eta), armijo, jnp.float32(8.0),
    ...     max_evals=20, min_step_size=1e-6, max_step_size=10.0)
    >>> float(result.step_size), bool(result.accepted), int(result.num_evals)
    (2.0, True, 3)

  References:
    Armijo, Minimization of functions having Lipschitz continuous first
    partial derivatives, Pacific Journal of Mathematics 16(1), 1966.
    Nocedal, Wright, Numerical Optimization, 2nd ed., Springer 2006,
    Sec. 3.1, Alg. 3.1 (backtracking line search).
    Vaswani et al., Painless Stochastic Gradient: Interpolation, Line-Search,
    and Convergence Rates, NeurIPS 2019, Alg. 1 (on a mini-batch).
  """
  if isinstance(max_evals, int) and max_evals < 1:
    raise ValueError(f"backtracking_search: max_evals must be at least 1, got {max_evals}.")
  first_step_size = jnp.asarray(first_step_size, jnp.float32)
  zero = jnp.zeros((), jnp.float32)
  if value_dtype is None:
    value_dtype = compute_dtype(jax.eval_shape(trial_value, first_step_size))

  class _Carry(NamedTuple):
    step_size: Array
    value: Array
    accepted: Array
    next_step_size: Array
    fallback: Array
    num_evals: Array
    stop: Array

  def cond_fn(carry: _Carry) -> Array:
    return ~carry.stop

  def body_fn(carry: _Carry) -> _Carry:
    eta = carry.next_step_size
    value = as_scalar(trial_value(eta), "the trial value", value_dtype)
    finite = jnp.isfinite(value)
    # A non-finite trial is a failed trial: the rule sees it as +inf (the
    # worst value), so that it backtracks, and it is never accepted.
    accept, next_eta, decrease = step_rule(eta, jnp.where(finite, value, jnp.inf))
    accept = accept & finite
    decrease = decrease & finite
    next_eta = jnp.where(accept, eta, jnp.minimum(next_eta, max_step_size))
    num_evals = carry.num_evals + 1
    too_small = next_eta < min_step_size
    stop = accept | too_small | (num_evals >= max_evals)
    return _Carry(
        step_size=eta,
        value=value,
        accepted=accept,
        next_step_size=jnp.asarray(next_eta, jnp.float32),
        fallback=jnp.where(decrease, eta, carry.fallback),
        num_evals=num_evals,
        stop=stop,
    )

  init = _Carry(
      step_size=first_step_size,
      value=jnp.asarray(jnp.nan, value_dtype),
      accepted=jnp.zeros((), bool),
      next_step_size=first_step_size,
      fallback=zero,
      num_evals=jnp.zeros((), jnp.int32),
      stop=~jnp.asarray(enabled, bool),
  )
  out = jax.lax.while_loop(cond_fn, body_fn, init)
  return SearchResult(
      step_size=out.step_size,
      value=out.value,
      accepted=out.accepted,
      next_step_size=out.next_step_size,
      fallback_step_size=out.fallback,
      num_evals=out.num_evals,
  )


def armijo_rule(value0: Array, slope: Array, c: float | Array, decrease_factor: float | Array):
  """The Armijo (sufficient decrease) rule: accept or multiply by ``decrease_factor``.

  Accepts ``eta`` when ``f(w + eta d) <= f(w) + c * eta * slope``.
  """

  def rule(eta: Array, value: Array):
    ok = value <= value0 + c * eta * slope
    return ok, eta * decrease_factor, ok

  return rule


def goldstein_rule(
    value0: Array,
    slope: Array,
    c: float | Array,
    decrease_factor: float | Array,
    increase_factor: float | Array,
    max_step_size: float | Array,
):
  """The Goldstein rule of the reference SLS code.

  Accepts when both ``f(w+eta d) <= f(w) + c eta slope`` (sufficient decrease)
  and ``f(w+eta d) >= f(w) + (1-c) eta slope`` (the step is not too short)
  hold. With only sufficient decrease the step grows by ``increase_factor``
  (accepted once it sits at ``max_step_size``: it cannot grow further); with
  only the second condition it shrinks by ``decrease_factor``.
  """

  def rule(eta: Array, value: Array):
    decrease = value <= value0 + c * eta * slope
    not_short = value >= value0 + (1.0 - c) * eta * slope
    at_max = eta >= max_step_size
    accept = decrease & (not_short | at_max)
    next_eta = jnp.where(decrease, eta * increase_factor, eta * decrease_factor)
    return accept, next_eta, decrease

  return rule


# ---------------------------------------------------------------------------
# Helpers shared by every method.
# ---------------------------------------------------------------------------


def require_value_fn(value_fn: Callable[..., Any] | None, method: str) -> Callable[..., Any]:
  """Raises a clear error when ``value_fn`` was not passed to ``update``."""
  if value_fn is None:
    raise TypeError(
        f"{method}.update needs the keyword argument `value_fn`: a function "
        "`value_fn(params, **kwargs) -> scalar loss` on the current mini-batch, "
        "which the line search evaluates at trial points. Call it as "
        "`opt.update(grads, state, params, value=loss, grad=grads, "
        "value_fn=lambda p: loss_fn(p, batch))`."
    )
  if not callable(value_fn):
    raise TypeError(f"{method}: `value_fn` must be callable, got {type(value_fn).__name__}.")
  return value_fn


def require_params(params: Any, method: str, why: str = "the search evaluates trial points") -> Any:
  """Raises a clear error when ``update`` was called without ``params``."""
  if params is None:
    raise ValueError(f"{method}.update needs `params`: {why}.")
  return params


def bind_value_fn(
    value_fn: Callable[..., Any], extra_args: dict[str, Any]
) -> Callable[[Any], Array]:
  """Binds to ``value_fn`` the extra keyword arguments of ``update`` it accepts.

  A keyword argument is passed to ``value_fn`` when ``value_fn`` names it in
  its signature or takes ``**kwargs``. Others are ignored, so that one
  ``optax.chain`` can carry arguments meant for other transformations (a
  required argument that is missing still fails, with Python's own error).
  """
  try:
    parameters = inspect.signature(value_fn).parameters.values()
  except (TypeError, ValueError):  # builtins or C callables without a signature
    return lambda params: value_fn(params)
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
    kwargs = dict(extra_args)
  else:
    names = {
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    kwargs = {k: v for k, v in extra_args.items() if k in names}
  return lambda params: value_fn(params, **kwargs)


def compute_dtype(*trees: Any) -> jnp.dtype:
  """The one dtype rule of the library: the real dtype every search decision is made in.

  ``promote_types`` of the floating dtypes of the leaves of ``trees`` (the parameters,
  the loss) and float32, made real: losses, slopes, norms and fitted coefficients of
  float64 parameters (or of a float64 loss) are computed in float64, those of float32,
  bfloat16 or float16 ones in float32. Integer and boolean leaves do not count. Step
  sizes kept in a method's state may stay float32 (a step size needs no more digits:
  every comparison that decides a step is made in this dtype).

  Args:
    *trees: pytrees (or arrays, or ``jax.ShapeDtypeStruct``) whose leaves' dtypes count.

  Returns:
    A real floating dtype, float32 or wider.

  Example:
    >>> import jax.numpy as jnp, optax_ls
    >>> params = {"w": jnp.zeros(3, jnp.bfloat16)}
    >>> optax_ls.compute_dtype(params, jnp.float32(1.0))
    dtype('float32')

  References:
    The rule is this library's; it follows :func:`jax.numpy.promote_types` and the
    floating-point error analysis of Higham, Accuracy and Stability of Numerical
    Algorithms, 2nd ed., SIAM 2002, Ch. 2-4 (a difference of rounded values carries their
    rounding, so losses are compared in the parameters' precision or more).
  """
  dtype = jnp.dtype(jnp.float32)
  for leaf in jax.tree.leaves(trees):
    leaf_dtype = getattr(leaf, "dtype", None)
    leaf_dtype = jnp.result_type(leaf) if leaf_dtype is None else jnp.dtype(leaf_dtype)
    if jnp.issubdtype(leaf_dtype, jnp.inexact):
      dtype = jnp.promote_types(dtype, leaf_dtype)
  return jnp.finfo(dtype).dtype  # the real dtype of a complex one


def buffer_dtype(x: Any) -> jnp.dtype:
  """The dtype of a parameter-sized buffer (a direction, a moment) of the leaf ``x``.

  At least float32, complex kept complex: ``promote_types(x.dtype, float32)``.
  """
  dtype = getattr(x, "dtype", None)
  return jnp.promote_types(jnp.result_type(x) if dtype is None else dtype, jnp.float32)


def as_scalar(value: Any, what: str, dtype: Any = None) -> Array:
  """A scalar objective value in :func:`compute_dtype` of it (and ``dtype``), or a clear error.

  ``dtype`` is the decision dtype of the parameters (default float32): a float32 loss
  of float64 parameters is widened to float64, a float64 loss is never narrowed.
  """
  value = jnp.asarray(value)
  if value.size != 1:
    raise ValueError(f"{what} must be a scalar, got an array of shape {value.shape}.")
  target = compute_dtype(value, jnp.zeros((), jnp.float32 if dtype is None else dtype))
  return jnp.real(value.reshape(())).astype(target)


def add_step(params: Any, step_size: Array, direction: Any) -> Any:
  """``params + step_size * direction``, each leaf kept in its own dtype.

  The sum is formed in at least float32 (bfloat16 parameters are added in
  float32 and rounded once; float64 parameters stay float64).
  """

  def add(p, d):
    dtype = jnp.promote_types(p.dtype, jnp.float32)
    step = jnp.asarray(step_size).astype(dtype)
    return (p.astype(dtype) + step * d.astype(dtype)).astype(p.dtype)

  return jax.tree.map(add, params, direction)


def masked_scale(ok: Array, step_size: Array, direction: Any, like: Any) -> Any:
  """``step_size * direction`` where ``ok``, an exact zero elsewhere.

  The zero does not depend on the direction's values, so a NaN direction with
  ``ok`` false still gives a zero update. Leaves take the dtype of ``like``.
  """
  def scale(d: Array, u: Array) -> Array:
    dtype = jnp.promote_types(buffer_dtype(d), u.dtype)
    return jnp.where(ok, jnp.asarray(step_size).astype(dtype) * d.astype(dtype),
                     0.0).astype(u.dtype)

  return jax.tree.map(scale, direction, like)


def real_vdot(a: Any, b: Any) -> Array:
  """``<a, b>`` summed over the tree, real, in :func:`compute_dtype` of ``a`` and ``b``.

  The products and the sum are formed in at least float32: bfloat16 (or float16)
  leaves are widened first, so that a slope or a squared norm of a bfloat16 model is
  not rounded to 8 bits of mantissa before the search decides with it; float64 leaves
  give a float64 result.
  """
  dtype = compute_dtype(a, b)
  return jnp.asarray(optax.tree.vdot(jax.tree.map(_widen, a), jax.tree.map(_widen, b))).real.astype(
      dtype)


def _widen(x: Any) -> Array:
  """``x`` in :func:`buffer_dtype` (bfloat16 and float16 widened to float32)."""
  return jnp.asarray(x).astype(buffer_dtype(x))


def real_vdots(a: Any, others: list[Any]) -> list[Array]:
  """``[<a, b> for b in others]`` as :func:`real_vdot` does, in one pass over the operands.

  One variadic reduction per leaf instead of one reduction per product, so that a tree
  read by several products is read once (XLA:CPU does not merge sibling reductions).
  """
  dtype = compute_dtype(a, *others)
  totals = [jnp.zeros((), dtype) for _ in others]
  for leaves in zip(jax.tree.leaves(a), *(jax.tree.leaves(b) for b in others), strict=True):
    x = _widen(leaves[0])
    products = [jnp.real(jnp.conj(x) * _widen(y)).astype(dtype) for y in leaves[1:]]
    sums = jax.lax.reduce(products, [jnp.zeros((), dtype)] * len(products),
                          lambda p, q: [u + v for u, v in zip(p, q, strict=True)],
                          tuple(range(x.ndim)))
    totals = [t + s for t, s in zip(totals, sums, strict=True)]
  return totals


# ---------------------------------------------------------------------------
# Hyperparameter validation, safe under optax.inject_hyperparams.
# ---------------------------------------------------------------------------


def concrete(value: Any) -> float | None:
  """The Python value of a hyperparameter, or None when it is traced.

  Also None for ``None`` and for values that are not numbers: validate a
  hyperparameter with :func:`check` (or :func:`number`) first.
  """
  if value is None or isinstance(value, jax.core.Tracer):
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def number(name: str, value: Any, *, optional: bool = False) -> float | None:
  """The Python value of a numeric hyperparameter; raises ``ValueError`` when it is no number.

  A number is a Python ``int`` or ``float`` (or another real number), a NumPy
  number, or a NumPy or JAX array holding one integer or floating-point value.
  Strings, ``bool`` (flags are separate arguments), complex numbers, lists and
  arrays of several values are not numbers.

  Args:
    name: the argument's name, for the error message.
    value: the hyperparameter.
    optional: whether ``None`` is allowed (it then means "not set").

  Returns:
    ``float(value)``, or None when ``value`` is traced (inside
    ``optax.inject_hyperparams`` under ``jax.jit``; it was checked when the
    transformation was first built) or is an allowed ``None``.

  Raises:
    ValueError: naming ``name`` when ``value`` is not a number.
  """
  if isinstance(value, jax.core.Tracer) or (value is None and optional):
    return None
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    if value.dtype.kind not in "iuf":
      raise ValueError(
          f"`{name}` must be a number, got {value!r} (an array of dtype {value.dtype})."
      )
    if value.size != 1:
      raise ValueError(
          f"`{name}` must be a single number, got an array of shape {value.shape}."
      )
    return float(np.asarray(value).reshape(()))
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f"`{name}` must be a number, got {value!r} ({type(value).__name__}).")
  return float(value)


def check(
    name: str,
    value: Any,
    ok: Callable[[float], bool],
    expected: str,
    *,
    optional: bool = False,
) -> None:
  """Raises ``ValueError`` naming ``name`` when a hyperparameter is invalid.

  ``value`` must be a number (see :func:`number`; ``None`` only when
  ``optional``) for which ``ok`` holds. Traced values (inside
  ``optax.inject_hyperparams`` under ``jax.jit``) are not checked: they were
  checked when the transformation was first built.

  Args:
    name: the argument's name, for the error message.
    value: the hyperparameter.
    ok: ``float -> bool``, whether a concrete value is in range.
    expected: what ``ok`` asks for, completing "`name` must be ...".
    optional: whether ``None`` is allowed (and then not checked).
  """
  v = number(name, value, optional=optional)
  if v is None:
    return
  if not ok(v):
    raise ValueError(f"`{name}` must be {expected}, got {value!r}.")


def check_step_sizes(init_step_size: Any, min_step_size: Any, max_step_size: Any) -> None:
  """Checks that the step-size bounds are positive and hold ``init_step_size``."""
  check("init_step_size", init_step_size, lambda v: v > 0.0, "positive")
  check("min_step_size", min_step_size, lambda v: v > 0.0, "positive")
  check("max_step_size", max_step_size, lambda v: v > 0.0, "positive")
  lo, hi, init = (concrete(v) for v in (min_step_size, max_step_size, init_step_size))
  if None not in (lo, hi, init) and not lo <= init <= hi:
    raise ValueError(
        f"`init_step_size` must lie in [min_step_size, max_step_size] = [{lo}, {hi}], got {init}."
    )


def unshare(state: Any) -> Any:
  """``state`` with every array that occurs twice replaced by a copy.

  An ``init`` that puts one array in two fields (the same zeros for two moments,
  the same initial step size as two counters) returns a state that
  ``jax.jit(..., donate_argnums=...)`` rejects ("donate the same buffer
  twice"); every ``init`` of optax_ls returns ``unshare(state)``.
  """
  seen: set[int] = set()

  def fresh(leaf: Any) -> Any:
    if not isinstance(leaf, jax.Array):
      return leaf
    if id(leaf) in seen:
      return jnp.array(leaf, copy=True)
    seen.add(id(leaf))
    return leaf

  return jax.tree.map(fresh, state)


def require_floating(params: Any) -> None:
  """Raises a ``TypeError`` naming the first parameter leaf that is not floating point.

  A step-size method moves the parameters by fractional steps: integer or boolean
  parameters could not move, and a search on them would spend its whole trial budget
  and make no step.
  """
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
      dtype = jnp.asarray(leaf).dtype
    if not jnp.issubdtype(dtype, jnp.inexact):
      where = jax.tree_util.keystr(path) or "the parameters"
      raise TypeError(
          f"optax_ls: parameter {where} has dtype {dtype}; the methods move parameters by "
          "fractional steps, so they must be floating point. Cast them (e.g. "
          "`jax.tree.map(lambda p: p.astype(jnp.float32), params)`), or keep integer leaves "
          "out of the optimised parameters (optax_ls.multi_transform with optax.set_to_zero).")


def unshare_init(init_fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
  """``init_fn`` rejecting non-floating parameters, its states through :func:`unshare`."""

  def init(params: Any) -> Any:
    require_floating(params)
    return unshare(init_fn(params))

  return init


# Why an update made no step, as held in a state's ``no_step_reason`` (0: it made one).
NO_STEP_REASONS = (
    "made a step",
    "not a descent direction (the slope <g, d> is not negative, or the direction is zero)",
    "non-finite loss or gradient",
    "search exhausted (no trial step was accepted)",
    "invalid hyperparameter at run time",
)
NOT_DESCENT, NON_FINITE, EXHAUSTED, INVALID = 1, 2, 3, 4


def no_step(
    count: Array,
    moved: Array,
    *,
    not_descent: Any = False,
    non_finite: Any = False,
    exhausted: Any = False,
    invalid: Any = False,
) -> tuple[Array, Array]:
  """The state's ``(no_step_count, no_step_reason)`` after an update.

  ``no_step_count`` counts the consecutive updates that made no step (0 after a step);
  ``no_step_reason`` indexes ``NO_STEP_REASONS``: the first of invalid, non-finite,
  not a descent direction and exhausted that holds, 0 when the update moved (and
  exhausted when it did not move for none of them).
  """
  reason = jnp.select(
      [jnp.asarray(c, bool) for c in (moved, invalid, non_finite, not_descent, exhausted)],
      [0, INVALID, NON_FINITE, NOT_DESCENT, EXHAUSTED],
      default=EXHAUSTED,  # no step for none of the reasons: the search found none
  )
  return (jnp.where(moved, 0, count + 1).astype(jnp.int32), reason.astype(jnp.int32))
