"""PLS: the probabilistic line search of Mahsereci and Hennig.

Reference:
  Mahsereci, Hennig, "Probabilistic line searches for stochastic
  optimization", NeurIPS 2015 and JMLR 18(119), 2017; seed 002 (Mutschler,
  PhD thesis), Sec. 2.6.5, Alg. 5, Eq. 2.28-2.38. Matlab code by the authors
  (probLineSearch.m) and a TensorFlow port (github.com/ProbabilisticNumerics/
  probabilistic_line_search).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import ndtr

from optax_ls import _core, _phased

Array = jax.Array

_START, _TRIAL = 0, 1
# The offset tau of the integrated Wiener kernel (Eq. 2.28; "tau is chosen to be 10").
_TAU = 10.0
# The least standard deviation of a scaled observation: with less noise the
# float32 Gram matrix of close positions is not numerically positive definite.
_MIN_SIGMA = 1e-2
# Gauss-Legendre nodes and weights on [-1, 1] for the bivariate normal CDF.
_GL_X, _GL_W = np.polynomial.legendre.leggauss(20)


class ScaleByPlsState(NamedTuple):
  """State of :func:`scale_by_pls` and :func:`pls`.

  Positions ``t`` along the line are in units of ``step_size``: the weights
  of a trial are ``w_0 + t * step_size * d``. Values and slopes are stored
  scaled (Mahsereci and Hennig, Sec. 3.4): ``y = (f - f_0) / (step_size *
  beta)`` and ``dy = <g, d> / beta`` with ``beta = |<g_0, d>|``, so that the
  start is observed at ``(0, 0, -1)``.

  Attributes:
    clock: the phase machine (:class:`optax_ls._phased.PhaseClock`): ``phase``
      0 = the next call starts a search at its point, 1 = the next call
      observes a trial point; ``phase_calls`` = trials made in the search.
    learning_rate: the step size the weights now stand at along the current
      direction (``t * step_size``; the step of a start call is
      ``step_size``; 0 while waiting for a start). float32.
    num_evals: evaluations used in the last call: 1 when the call observed
      its point, 0 when it could not (non-finite inputs). int32.
    step_size: the scale ``alpha_0`` of the current search (the first trial
      of a search is ``w_0 + step_size * d``).
    mean_step_size: running average (weight 0.05) of the proposed next
      ``step_size``, ``reset_factor`` times each accepted step, which replaces
      a proposal more than 100 times larger or smaller than it (see
      :func:`scale_by_pls`).
    accepted_step_size: the step size of the last accepted point (``t *
      step_size``; 0 before the first); for logging.
    extrapolation: the current extrapolation distance (in units of ``t``),
      doubled after every extrapolation.
    position: the ``t`` of the current weights.
    ts: observed positions (``budget + 1``; entry 0 is the start).
    ys: scaled observed values.
    dys: scaled observed slopes.
    observed: which entries of ``ts, ys, dys`` hold an observation.
    f0: the loss at the start of the search (unscaled).
    beta: the scale ``|<g_0, d>|`` of the search.
    sigma_f: the standard deviation of a scaled value observation.
    sigma_df: the standard deviation of a scaled slope observation.
    num_wolfe: searches ended at a Wolfe point (int32).
    num_exhausted: searches that used their budget (int32).
    direction: the search direction ``d`` (float32 or wider). ``pls`` keeps
      the gradient ``g_0`` here (the direction is its negation).
    no_step_count: how many calls in a row made no step (int32; 0 after a step): a call
      that could not start a search, a trial whose value or slope was not finite (it
      backs off), and a search that ended back at its start (``t = 0``). A search that
      ends at the point the weights stand at (``t > 0``) moves nothing by design: that
      call leaves the count and the reason as they were.
    no_step_reason: why the last counted call made no step (int32; 0: it made one; see
      :func:`optax_ls.check_progress`): an invalid injected hyperparameter, a non-finite
      value, slope or variance, a zero direction or one that does not descend, or a
      search exhausted at its start.
  """

  clock: _phased.PhaseClock
  learning_rate: Array
  num_evals: Array
  step_size: Array
  mean_step_size: Array
  accepted_step_size: Array
  extrapolation: Array
  position: Array
  ts: Array
  ys: Array
  dys: Array
  observed: Array
  f0: Array
  beta: Array
  sigma_f: Array
  sigma_df: Array
  num_wolfe: Array
  num_exhausted: Array
  direction: optax.Updates
  no_step_count: Array
  no_step_reason: Array


def scale_by_pls(
    init_step_size: float = 0.01,
    c1: float = 0.05,
    c2: float = 0.8,
    wolfe_threshold: float = 0.3,
    budget: int = 10,
    reset_factor: float = 1.3,
    max_extrapolations: int = 6,
    min_step_size: float = 1e-8,
    max_step_size: float = 1e3,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales a descent direction by the probabilistic line search (PLS).

  PLS (Alg. 5) searches along :math:`w(t) = w_0 + t\,\alpha_0\, d` (:math:`d` the incoming
  direction; ``-g`` for SGD) with one evaluation per ``update`` call, each on the call's own
  mini-batch. A Gaussian process with the integrated Wiener kernel over values and slopes
  models the full-batch loss along the line (Eq. 2.28-2.35); a point is accepted when its
  probability of meeting the Wolfe conditions,

  .. math::
    p^W(t) = p\bigl(f(0) - f(t) + c_1 t f'(0) > 0,\ f'(t) - c_2 f'(0) > 0\bigr),

  exceeds ``wolfe_threshold`` (Eq. 2.37-2.38); otherwise the next trial maximises expected
  improvement times :math:`p^W` (Eq. 2.36), for at most ``budget`` trials. See
  :doc:`/methods/pls` for the kernel, the noise estimates, the step-size reset and the
  robustness rules.

  Args:
    init_step_size: :math:`\alpha_0` of the first search (the first trial is
      :math:`w_0 + \alpha_0 d`), default 0.01.
    c1: sufficient-decrease constant, default 0.05 (the paper's).
    c2: curvature constant, ``c1 < c2 < 1``, default 0.8.
    wolfe_threshold: :math:`c_W`, the Wolfe probability that accepts a point, default 0.3.
    budget: trials per search, default 10; a static Python int (it fixes the state's array
      sizes: with ``optax.inject_hyperparams`` list it in ``static_args``).
    reset_factor: the next :math:`\alpha_0` over the accepted step, default 1.3.
    max_extrapolations: extrapolations per search, default 6 (the reference code's).
    min_step_size: lower bound of :math:`\alpha_0`, default 1e-8.
    max_step_size: upper bound of :math:`\alpha_0` and of every trial step, default 1e3.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleByPlsState`. Its
    ``update`` takes ``value`` and ``grad`` (the loss at ``params`` and its gradient; the
    incoming updates are the direction), or ``value_fn`` to compute them; for the noise,
    ``per_example_loss_fn`` (``[batch]`` losses) or ``value_variance`` and ``grad_variance``;
    and keyword arguments, routed to ``value_fn`` and ``per_example_loss_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> x = jnp.array([[1.0, 2.0], [3.0, 1.0], [0.5, -1.0], [2.0, 0.0]])
    >>> y = jnp.array([1.0, 2.0, 0.0, 1.5])
    >>> def per_example(w):
    ...   return (x @ w - y) ** 2
    >>> opt = optax.chain(optax.scale(-1.0), optax_ls.scale_by_pls(init_step_size=0.1))
    >>> @jax.jit
    ... def step(w, state):
    ...   loss, g = jax.value_and_grad(lambda w: per_example(w).mean())(w)
    ...   updates, state = opt.update(g, state, w, value=loss, grad=g,
    ...                               per_example_loss_fn=per_example)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> for _ in range(30):
    ...   w, state = step(w, state)
    >>> bool(per_example(w).mean() < 0.1 * per_example(jnp.zeros(2)).mean())
    True
    >>> int(optax.tree.get(state, "num_wolfe")) > 0
    True

  References:
    Mahsereci, Hennig, Probabilistic Line Searches for Stochastic
    Optimization, NeurIPS 2015 and JMLR 18(119), 2017; Mutschler,
    Empirics-based Line Searches for Deep Learning, PhD thesis, Tübingen 2022,
    Sec. 2.6.5, Alg. 5, Eq. 2.28-2.38.
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _pls_transformation("scale_by_pls", 1.0, **locals())


def pls(
    init_step_size: float = 0.01,
    c1: float = 0.05,
    c2: float = 0.8,
    wolfe_threshold: float = 0.3,
    budget: int = 10,
    reset_factor: float = 1.3,
    max_extrapolations: int = 6,
    min_step_size: float = 1e-8,
    max_step_size: float = 1e3,
) -> optax.GradientTransformationExtraArgs:
  r"""The probabilistic line search (PLS) along the negative gradient, taking gradients.

  Each search runs along :math:`w(t) = w_0 - t\,\alpha_0\, g_0`, the negative gradient at its
  start; every ``update`` call is one evaluation of the line, value :math:`y_i` and slope
  :math:`y'_i = -\langle g_i, g_0\rangle`, on its own mini-batch. A Gaussian process over
  values and slopes models the full-batch loss along the line (Eq. 2.28-2.35); a point is
  accepted when its probability of meeting the Wolfe conditions,

  .. math::
    p^W(t) = p\bigl(f(0) - f(t) + c_1 t f'(0) > 0,\ f'(t) - c_2 f'(0) > 0\bigr),

  exceeds ``wolfe_threshold`` (Eq. 2.37-2.38); otherwise the next trial maximises expected
  improvement times :math:`p^W` (Eq. 2.36), for at most ``budget`` trials. See
  :doc:`/methods/pls` for the details, the noise estimates (pass ``per_example_loss_fn``) and
  the robustness rules; the defaults are the paper's.

  Args:
    init_step_size: :math:`\alpha_0` of the first search (the first trial is
      :math:`w_0 - \alpha_0 g_0`), default 0.01.
    c1: sufficient-decrease constant, default 0.05 (the paper's).
    c2: curvature constant, ``c1 < c2 < 1``, default 0.8.
    wolfe_threshold: :math:`c_W`, the Wolfe probability that accepts a point, default 0.3.
    budget: trials per search, default 10; a static Python int (it fixes the state's array
      sizes: with ``optax.inject_hyperparams`` list it in ``static_args``).
    reset_factor: the next :math:`\alpha_0` over the accepted step, default 1.3.
    max_extrapolations: extrapolations per search, default 6 (the reference code's).
    min_step_size: lower bound of :math:`\alpha_0`, default 1e-8.
    max_step_size: upper bound of :math:`\alpha_0` and of every trial step, default 1e3.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleByPlsState`, taking
    the gradients as ``updates``. Its ``update`` takes ``value`` (required unless
    ``value_fn`` is given), ``grad`` (for the slopes, when ``updates`` were transformed
    before; defaults to ``updates``), ``per_example_loss_fn`` or ``value_variance`` and
    ``grad_variance`` (the noise), ``value_fn`` (optional) and keyword arguments for
    ``value_fn`` and ``per_example_loss_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def per_example(w, x, y):
    ...   return (x @ w - y) ** 2
    >>> x = jnp.array([[1.0, 2.0], [3.0, 1.0], [0.5, -1.0], [2.0, 0.0]])
    >>> y = jnp.array([1.0, 2.0, 0.0, 1.5])
    >>> opt = optax_ls.pls(init_step_size=0.1)
    >>> @jax.jit
    ... def step(w, state):
    ...   loss, g = jax.value_and_grad(lambda w: per_example(w, x, y).mean())(w)
    ...   updates, state = opt.update(g, state, w, value=loss,
    ...                               per_example_loss_fn=per_example, x=x, y=y)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> for _ in range(30):
    ...   w, state = step(w, state)
    >>> bool(per_example(w, x, y).mean() < 0.1 * per_example(jnp.zeros(2), x, y).mean())
    True

  References:
    Mahsereci, Hennig, Probabilistic Line Searches for Stochastic
    Optimization, NeurIPS 2015 and JMLR 18(119), 2017; Mutschler,
    Empirics-based Line Searches for Deep Learning, PhD thesis, Tübingen 2022,
    Sec. 2.6.5, Alg. 5, Eq. 2.28-2.38.
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _pls_transformation("pls", -1.0, **locals())


# ---------------------------------------------------------------------------
# The Gaussian process along the line (Eq. 2.28-2.35), written for arrays of
# query points ``a`` against observation points ``b`` (broadcasting).
# ---------------------------------------------------------------------------


def _k(a: Array, b: Array) -> Array:
  """``cov(f(a), f(b))``: the integrated Wiener kernel of Eq. 2.28 (``m = 1``)."""
  ta, tb = a + _TAU, b + _TAU
  low = jnp.minimum(ta, tb)
  return low**3 / 3.0 + 0.5 * jnp.abs(a - b) * low**2


def _kd(a: Array, b: Array) -> Array:
  """``cov(f(a), f'(b)) = dk/db`` (Eq. 2.31)."""
  ta, tb = a + _TAU, b + _TAU
  return jnp.where(a > b, ta * tb - 0.5 * tb**2, 0.5 * ta**2)


def _dk(a: Array, b: Array) -> Array:
  """``cov(f'(a), f(b)) = dk/da`` (Eq. 2.32)."""
  return _kd(b, a)


def _dkd(a: Array, b: Array) -> Array:
  """``cov(f'(a), f'(b)) = d^2 k / da db`` (Eq. 2.33)."""
  return jnp.minimum(a, b) + _TAU


def _query_kernels(a: Array, b: Array, order: int) -> tuple[Array, Array]:
  """``(d^n/da^n k(a, b), d^n/da^n kd(a, b))`` for ``n = order`` (0 to 3), off the knots."""
  ta, tb = a + _TAU, b + _TAU
  below = a <= b
  if order == 0:
    return _k(a, b), _kd(a, b)
  if order == 1:
    return _dk(a, b), _dkd(a, b)
  if order == 2:
    return jnp.where(below, tb - ta, 0.0), jnp.where(below, 1.0, 0.0)
  if order == 3:
    return jnp.where(below, -1.0, 0.0), jnp.zeros_like(ta * tb)
  raise ValueError(f"order must be 0 to 3, got {order}")


class _Gp(NamedTuple):
  """A fitted posterior: observations, the Cholesky factor and the weights."""

  ts: Array  # [n] observed positions
  observed: Array  # [n] which entries are observations
  chol: Array  # [2n, 2n] lower Cholesky factor of the (masked) Gram matrix
  weights: Array  # [2n] G^{-1} [y; dy] (zero on unobserved entries)


def _gp_fit(
    ts: Array, ys: Array, dys: Array, observed: Array, sigma_f: Array, sigma_df: Array
) -> _Gp:
  """Conditions the prior on values ``ys`` and slopes ``dys`` at ``ts`` (Eq. 2.34).

  Unobserved entries are decoupled (identity rows of the Gram matrix, zero
  targets), so the arrays keep a fixed size.
  """
  a, b = ts[:, None], ts[None, :]
  n = ts.shape[0]
  eye = jnp.eye(n, dtype=ts.dtype)
  gram = jnp.block([
      [_k(a, b) + sigma_f**2 * eye, _kd(a, b)],
      [_dk(a, b), _dkd(a, b) + sigma_df**2 * eye],
  ])
  mask = jnp.concatenate([observed, observed])
  pair = mask[:, None] & mask[None, :]
  eye2 = jnp.eye(2 * n, dtype=ts.dtype)
  gram = jnp.where(pair, gram, eye2)
  chol = jnp.linalg.cholesky(gram)
  targets = jnp.where(mask, jnp.concatenate([ys, dys]), 0.0)
  weights = jax.scipy.linalg.cho_solve((chol, True), targets)
  return _Gp(ts=ts, observed=observed, chol=chol, weights=weights)


def _cross(gp: _Gp, x: Array, kind: int) -> Array:
  """``[..., 2n]``: covariances of ``f(x)`` (kind 0) or ``f'(x)`` (kind 1) with the data."""
  k0, k1 = _query_kernels(jnp.asarray(x)[..., None], gp.ts, kind)
  mask = jnp.concatenate([gp.observed, gp.observed])
  return jnp.where(mask, jnp.concatenate([k0, k1], axis=-1), 0.0)


def _gp_mean(gp: _Gp, x: Array, order: int = 0) -> Array:
  """The ``order``-th derivative of the posterior mean (Eq. 2.34) at ``x``."""
  k0, k1 = _query_kernels(jnp.asarray(x)[..., None], gp.ts, order)
  mask = jnp.concatenate([gp.observed, gp.observed])
  cross = jnp.where(mask, jnp.concatenate([k0, k1], axis=-1), 0.0)
  return cross @ gp.weights


_PRIOR = ((_k, _kd), (_dk, _dkd))


def _gp_cov(gp: _Gp, p: int, x: Array, q: int, y: Array) -> Array:
  """Posterior covariance (Eq. 2.35) of ``f^(p)(x)`` and ``f^(q)(y)``, ``p, q`` in {0, 1}."""
  x, y = jnp.asarray(x), jnp.asarray(y)
  solve = functools.partial(jax.scipy.linalg.solve_triangular, gp.chol, lower=True)
  cx = solve(jnp.atleast_2d(_cross(gp, x, p)).T)
  cy = solve(jnp.atleast_2d(_cross(gp, y, q)).T)
  reduced = jnp.sum(cx * cy, axis=0).reshape(jnp.broadcast_shapes(x.shape, y.shape))
  return _PRIOR[p][q](x, y) - reduced


def _cubic_minimum(d1: Array, d2: Array, d3: Array) -> tuple[Array, Array]:
  """The offset ``s`` of the local minimum of a cubic with derivatives ``d1, d2, d3`` at 0.

  Solves ``d1 + d2 s + d3 s^2 / 2 = 0`` for the root with ``d2 + d3 s >= 0``,
  ``s = (sqrt(D) - d2) / d3`` with ``D = d2^2 - 2 d1 d3``, written as
  ``-2 d1 / (d2 + sqrt(D))`` when ``d2 >= 0`` (no cancellation, and right
  when ``d3 = 0``). Returns ``(s, ok)``; ``ok`` is false when there is no
  minimum.
  """
  disc = d2**2 - 2.0 * d1 * d3
  root = jnp.sqrt(jnp.maximum(disc, 0.0))
  rising = d2 >= 0
  den = jnp.where(rising, d2 + root, d3)
  num = jnp.where(rising, -2.0 * d1, root - d2)
  ok = (disc >= 0.0) & jnp.where(rising, den > 0.0, den != 0.0)
  s = num / jnp.where(ok, den, 1.0)
  ok = ok & jnp.isfinite(s)
  return jnp.where(ok, s, 0.0), ok


def _interval_minima(gp: _Gp) -> tuple[Array, Array]:
  """Local minima of the posterior mean between neighbouring observations.

  The mean is one cubic on each open interval between sorted observed
  positions (Mahsereci and Hennig, Eq. 8); its derivatives at the midpoint
  define it. Returns ``(t, ok)`` of shape ``[n - 1]``.
  """
  sorted_ts = jnp.sort(jnp.where(gp.observed, gp.ts, jnp.inf))
  left, right = sorted_ts[:-1], sorted_ts[1:]
  valid = jnp.isfinite(right) & (right > left)
  mid = jnp.where(valid, 0.5 * (left + right), 0.0)
  s, ok = _cubic_minimum(*(_gp_mean(gp, mid, order) for order in (1, 2, 3)))
  t = mid + s
  ok = valid & ok & (t > left) & (t < right)
  return jnp.where(ok, t, 0.0), ok


def _expected_improvement(mean: Array, std: Array, best: Array) -> Array:
  """``E[max(0, best - f)]`` for ``f ~ N(mean, std^2)`` (Eq. 2.36, as a positive gain)."""
  std = jnp.maximum(std, 1e-12)
  z = (best - mean) / std
  return (best - mean) * ndtr(z) + std * jnp.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)


def _bvn_upper(h: Array, k: Array, r: Array) -> Array:
  """``P(X > h, Y > k)`` for standard normals with correlation ``r``.

  Genz's method (Genz 2004, "Numerical computation of rectangular bivariate
  and trivariate normal and t probabilities", after Drezner and Wesolowsky
  1990) with 20-point Gauss-Legendre quadrature: Sheppard's integral over
  ``asin(r)`` for ``|r| < 0.925``, an expansion around ``|r| = 1`` otherwise.
  Both are evaluated and one is selected, so it traces without branches.
  """
  h, k, r = jnp.broadcast_arrays(*(jnp.asarray(v) for v in (h, k, r)))
  dtype = h.dtype
  x = jnp.asarray(_GL_X, dtype)
  w = jnp.asarray(_GL_W, dtype)
  two_pi = 2.0 * math.pi
  hk = h * k
  e = lambda v: v[..., None]  # noqa: E731

  # Moderate correlation: P = Phi(-h) Phi(-k) + int_0^asin(r) ... / (2 pi).
  asr = jnp.arcsin(jnp.clip(r, -1.0, 1.0))
  sn = jnp.sin(e(asr) * (x + 1.0) / 2.0)
  hs = (h * h + k * k) / 2.0
  inner = jnp.sum(w * jnp.exp((sn * e(hk) - e(hs)) / (1.0 - sn * sn)), axis=-1)
  moderate = inner * asr / (4.0 * math.pi) + ndtr(-h) * ndtr(-k)

  # High correlation: reflect to r > 0 and expand around r = 1.
  neg = r < 0
  kk = jnp.where(neg, -k, k)
  hk2 = jnp.where(neg, -hk, hk)
  as_ = (1.0 - r) * (1.0 + r)
  open_ = as_ > 0
  as_ = jnp.where(open_, as_, 1.0)
  a = jnp.sqrt(as_)
  bs = (h - kk) ** 2
  c = (4.0 - hk2) / 8.0
  d = (12.0 - hk2) / 16.0
  expo = -(bs / as_ + hk2) / 2.0
  series = 1.0 - c * (bs - as_) * (1.0 - d * bs / 5.0) / 3.0 + c * d * as_**2 / 5.0
  bvn = jnp.where(expo > -100.0, a * jnp.exp(expo) * series, 0.0)
  b = jnp.sqrt(bs)
  tail = jnp.exp(-hk2 / 2.0) * math.sqrt(two_pi) * ndtr(-b / a) * b
  bvn = bvn - jnp.where(-hk2 < 100.0, tail * (1.0 - c * bs * (1.0 - d * bs / 5.0) / 3.0), 0.0)
  half = a / 2.0
  xs = (e(half) * (x + 1.0)) ** 2
  rs = jnp.sqrt(1.0 - xs)
  expo2 = -(e(bs) / xs + e(hk2)) / 2.0
  exact = jnp.exp(-e(hk2) * (1.0 - rs) / (2.0 * (1.0 + rs))) / rs
  terms = e(half) * w * jnp.exp(expo2) * (exact - (1.0 + e(c) * xs * (1.0 + e(d) * xs)))
  bvn = bvn + jnp.sum(jnp.where(expo2 > -100.0, terms, 0.0), axis=-1)
  bvn = jnp.where(open_, -bvn / two_pi, 0.0)
  high = jnp.where(
      neg,
      -bvn + jnp.where(kk > h, ndtr(kk) - ndtr(h), 0.0),
      bvn + ndtr(-jnp.maximum(h, kk)),
  )
  p = jnp.where(jnp.abs(r) < 0.925, moderate, high)
  return jnp.clip(p, 0.0, 1.0).astype(dtype)


def _wolfe_probability(gp: _Gp, t: Array, c1: Any, c2: Any) -> tuple[Array, Array]:
  """``p(a(t) > 0, b(t) > 0)`` of Eq. 2.37-2.38 under the posterior, and ``var f(t)``.

  ``a = f(0) - f(t) + c1 t f'(0)`` (sufficient decrease) and
  ``b = f'(t) - c2 f'(0)`` (curvature) are jointly Gaussian; their means and
  covariances are linear maps of the posterior (one triangular solve for all
  of them). The probability is 0 where a variance vanishes (``t = 0``).
  """
  t = jnp.asarray(t)
  zero = jnp.zeros_like(t[:1])
  # Columns: f(0), f'(0), f(t)..., f'(t)...: L^{-1} times their covariances with the data.
  cross = jnp.concatenate(
      [_cross(gp, zero, 0), _cross(gp, zero, 1), _cross(gp, t, 0), _cross(gp, t, 1)], axis=0)
  solved = jax.scipy.linalg.solve_triangular(gp.chol, cross.T, lower=True)
  s0, ds0, st, dst = solved[:, :1], solved[:, 1:2], solved[:, 2:2 + t.size], solved[:, 2 + t.size:]
  dot = lambda a, b: jnp.sum(a * b, axis=0)  # noqa: E731
  z = jnp.zeros_like(t)
  v0, vd0, dvd0 = _k(z, z) - dot(s0, s0), _kd(z, z) - dot(s0, ds0), _dkd(z, z) - dot(ds0, ds0)
  vt, vdt, dvdt = _k(t, t) - dot(st, st), _kd(t, t) - dot(st, dst), _dkd(t, t) - dot(dst, dst)
  v0t, vd0t = _k(z, t) - dot(s0, st), _kd(z, t) - dot(s0, dst)
  dv0t, dvd0t = _dk(z, t) - dot(ds0, st), _dkd(z, t) - dot(ds0, dst)
  means = cross @ gp.weights
  m0, dm0, mt, dmt = means[0], means[1], means[2:2 + t.size], means[2 + t.size:]
  ma = m0 - mt + c1 * t * dm0
  mb = dmt - c2 * dm0
  caa = v0 + vt - 2.0 * v0t + (c1 * t) ** 2 * dvd0 + 2.0 * c1 * t * (vd0 - dv0t)
  cbb = dvdt + c2**2 * dvd0 - 2.0 * c2 * dvd0t
  cab = vd0t - c2 * vd0 - vdt + c2 * dv0t + c1 * t * dvd0t - c1 * c2 * t * dvd0
  ok = (caa > 0) & (cbb > 0) & (t > 0)
  sa = jnp.sqrt(jnp.where(ok, caa, 1.0))
  sb = jnp.sqrt(jnp.where(ok, cbb, 1.0))
  rho = jnp.clip(cab / (sa * sb), -1.0, 1.0)
  p = _bvn_upper(-ma / sa, -mb / sb, rho)
  return jnp.where(ok & jnp.isfinite(p), p, 0.0), jnp.maximum(vt, 0.0)


# ---------------------------------------------------------------------------
# The transformation.
# ---------------------------------------------------------------------------


class _Plan(NamedTuple):
  """What a phase decided for this call; the start of a search and the tree algebra follow."""

  start: Array  # start a new search at this call's point (along the incoming direction)
  coef: Array  # otherwise: the move along the stored direction, in step-size units
  observed_ok: Array  # this call's point was observed (num_evals)
  step_size: Array  # alpha_0 of the search a start begins
  mean_step_size: Array
  accepted_step_size: Array
  extrapolation: Array
  position: Array
  ts: Array
  ys: Array
  dys: Array
  observed: Array
  num_wolfe: Array
  num_exhausted: Array
  stepped: Array  # a trial call that moves to a new point t > 0 of the line
  stalled: Array  # a trial call that makes no step: not observed, or ended back at t = 0
  unobserved: Array  # a trial whose value or slope was not finite


def _pls_transformation(
    method: str, sign: float, **hyper: Any
) -> optax.GradientTransformationExtraArgs:
  """Builds :func:`scale_by_pls` (``sign = 1``: updates are directions) or :func:`pls` (-1)."""
  _validate(**hyper)
  # The state's arrays hold budget + 1 observations: their size is read from the
  # state in `update` (under optax.inject_hyperparams `budget` is traced there).
  budget = hyper["budget"]
  init_step_size = hyper["init_step_size"]
  c1, c2, c_w = hyper["c1"], hyper["c2"], hyper["wolfe_threshold"]
  reset_factor = hyper["reset_factor"]
  max_extrapolations = hyper["max_extrapolations"]
  min_step_size, max_step_size = hyper["min_step_size"], hyper["max_step_size"]

  def init_fn(params: optax.Params) -> ScaleByPlsState:
    dtype = _core.compute_dtype(params)
    size = int(_core.concrete(budget)) + 1
    # Separate arrays for every leaf, so that the state can be donated.
    zero = lambda: jnp.zeros((), dtype)  # noqa: E731
    izero = lambda: jnp.zeros((), jnp.int32)  # noqa: E731
    step = lambda: jnp.asarray(init_step_size, dtype) + zero()  # noqa: E731
    return ScaleByPlsState(
        clock=_phased.init_clock(_START),
        learning_rate=zero(),
        num_evals=izero(),
        step_size=step(),
        mean_step_size=step(),
        accepted_step_size=zero(),
        extrapolation=jnp.ones((), dtype),
        position=zero(),
        ts=jnp.zeros((size,), dtype),
        ys=jnp.zeros((size,), dtype),
        dys=jnp.zeros((size,), dtype),
        observed=jnp.zeros((size,), bool),
        f0=zero(),
        beta=jnp.ones((), dtype),
        sigma_f=jnp.full((), _MIN_SIGMA, dtype),
        sigma_df=jnp.full((), _MIN_SIGMA, dtype),
        num_wolfe=izero(),
        num_exhausted=izero(),
        direction=jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), _core.buffer_dtype(p)), params),
        no_step_count=izero(),
        no_step_reason=izero(),
    )

  def update_fn(
      updates: optax.Updates,
      state: ScaleByPlsState,
      params: optax.Params | None = None,
      *,
      value_fn: Callable[..., Any] | None = None,
      value: Any = None,
      grad: optax.Updates | None = None,
      per_example_loss_fn: Callable[..., Any] | None = None,
      value_variance: Any = None,
      grad_variance: optax.Updates | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, ScaleByPlsState]:
    _core.require_params(params, method, "PLS measures the variance of the loss at them")
    dtype = state.step_size.dtype
    size = state.ts.shape[0]
    if value is None or (grad is None and sign > 0):
      if value_fn is None:
        raise TypeError(
            f"{method}.update needs `value=` (the mini-batch loss at `params`)"
            + ("" if sign < 0 else " and `grad=` (its gradient)")
            + ", or `value_fn` to compute them."
        )
      objective = _core.bind_value_fn(_core.require_value_fn(value_fn, method), extra_args)
      if grad is None and sign > 0:
        value, grad = jax.value_and_grad(lambda p: _core.as_scalar(objective(p), "value_fn"))(
            params)
      elif value is None:
        value = objective(params)
    if grad is None:
      grad = updates  # pls: the incoming updates are the gradient
    f = _core.as_scalar(value, "value").astype(dtype)
    # Directional derivatives along the stored direction (a trial) and along
    # the incoming one (the start of a search), two reductions.
    slope_old = sign * _core.real_vdot(grad, state.direction).astype(dtype)
    slope_new = sign * _core.real_vdot(grad, updates).astype(dtype)
    clock = state.clock

    def end_search(t_end: Array) -> tuple[Array, Array, Array]:
      """``(step_size, mean_step_size, accepted)`` after a search ends at ``t_end``."""
      accepted = t_end * state.step_size
      proposal = reset_factor * accepted
      mean = 0.95 * state.mean_step_size + 0.05 * proposal
      far = (proposal > 100.0 * mean) | (proposal < 0.01 * mean)
      proposal = jnp.clip(jnp.where(far, mean, proposal), min_step_size, max_step_size)
      return proposal.astype(dtype), mean.astype(dtype), accepted.astype(dtype)

    def start(clock: _phased.PhaseClock, _) -> tuple[_Plan, _phased.Transition]:
      del clock
      plan = _Plan(
          start=jnp.ones((), bool),
          coef=jnp.zeros((), dtype),
          observed_ok=jnp.zeros((), bool),
          step_size=state.step_size,
          mean_step_size=state.mean_step_size,
          accepted_step_size=state.accepted_step_size,
          extrapolation=state.extrapolation,
          position=state.position,
          ts=state.ts,
          ys=state.ys,
          dys=state.dys,
          observed=state.observed,
          num_wolfe=state.num_wolfe,
          num_exhausted=state.num_exhausted,
          stepped=jnp.zeros((), bool),
          stalled=jnp.zeros((), bool),
          unobserved=jnp.zeros((), bool),
      )
      return plan, _phased.transition(_START)

    def trial(clock: _phased.PhaseClock, _) -> tuple[_Plan, _phased.Transition]:
      n = clock.phase_calls + 1  # this observation's index (0 is the start)
      t_cur = state.position
      ok = jnp.isfinite(f) & jnp.isfinite(slope_old)
      here = jnp.arange(size) == n
      y = (f - state.f0) / (state.step_size * state.beta)
      dy = slope_old / state.beta
      store = here & ok
      ts = jnp.where(store, t_cur, state.ts)
      ys = jnp.where(store, jnp.where(ok, y, 0.0), state.ys)
      dys = jnp.where(store, jnp.where(ok, dy, 0.0), state.dys)
      observed = state.observed | store
      gp = _gp_fit(ts, ys, dys, observed, state.sigma_f, state.sigma_df)

      # Candidates: minima of the mean between observations and one extrapolation.
      t_int, ok_int = _interval_minima(gp)
      t_max = jnp.max(jnp.where(observed, ts, 0.0))
      t_ext = jnp.minimum(t_max + state.extrapolation, max_step_size / state.step_size)
      ok_ext = (state.extrapolation < 2.0**max_extrapolations) & (t_ext > t_max)
      cands = jnp.concatenate([t_int, t_ext[None]])
      ok_c = jnp.concatenate([ok_int, ok_ext[None]])
      # The posterior at the observations and the candidates, in one solve.
      p_all, var_all = _wolfe_probability(gp, jnp.concatenate([ts, cands]), c1, c2)
      mean_all = _gp_mean(gp, jnp.concatenate([ts, cands]))
      mean_obs = jnp.where(observed, mean_all[:size], jnp.inf)

      # Wolfe points among the observations: the current one first.
      p_obs = jnp.where(observed, p_all[:size], 0.0)
      accept_here = ok & (jnp.sum(jnp.where(here, p_obs, 0.0)) > c_w)
      j_wolfe = jnp.argmax(p_obs)
      accept_other = ~accept_here & (p_obs[j_wolfe] > c_w)

      ei = _expected_improvement(mean_all[size:], jnp.sqrt(var_all[size:]), jnp.min(mean_obs))
      score = ei * p_all[size:]
      score = jnp.where(ok_c & jnp.isfinite(score), score, -1.0)
      pick = jnp.argmax(score)
      t_next = cands[pick]
      have_next = score[pick] >= 0.0
      # A non-finite observation: back off halfway to the nearest observation below.
      t_low = jnp.max(jnp.where(observed & (ts < t_cur), ts, 0.0))
      t_next = jnp.where(ok, t_next, 0.5 * (t_low + t_cur))
      extrapolating = ok & (pick == cands.shape[0] - 1)

      exhausted = ~accept_here & ~accept_other & ((n >= budget) | (ok & ~have_next))
      j_best = jnp.argmin(mean_obs)
      j_end = jnp.where(accept_other, j_wolfe, j_best)
      t_end = jnp.where(accept_here, t_cur, ts[j_end])
      ended = accept_here | accept_other | exhausted
      new_step, new_mean, accepted = end_search(t_end)
      t_to = jnp.where(ended, t_end, t_next)
      coef = jnp.where(accept_here, 0.0, (t_to - t_cur) * state.step_size).astype(dtype)
      plan = _Plan(
          start=accept_here,
          coef=coef,
          observed_ok=ok,
          step_size=jnp.where(ended, new_step, state.step_size),
          mean_step_size=jnp.where(ended, new_mean, state.mean_step_size),
          accepted_step_size=jnp.where(ended, accepted, state.accepted_step_size),
          extrapolation=jnp.where(extrapolating & ~ended, 2.0 * state.extrapolation,
                                  state.extrapolation),
          position=t_to.astype(dtype),
          ts=ts,
          ys=ys,
          dys=dys,
          observed=observed,
          num_wolfe=state.num_wolfe + (accept_here | accept_other).astype(jnp.int32),
          num_exhausted=state.num_exhausted + exhausted.astype(jnp.int32),
          stepped=ok & ~accept_here & (t_to > 0) & (coef != 0),
          stalled=~ok | (ended & ~accept_here & (t_end <= 0)),
          unobserved=~ok,
      )
      to = _phased.transition(jnp.where(ended & ~accept_here, _START, _TRIAL),
                              restart=accept_here)
      return plan, to

    plan, new_clock = _phased.run_phase(clock, (start, trial), None)

    # The start of a search at this call's point, along the incoming direction.
    # An injected hyperparameter out of its range (only known at run time) starts no search.
    valid = _runtime_valid(hyper, dtype)
    can_start = (plan.start & jnp.isfinite(f) & jnp.isfinite(slope_new) & (slope_new < 0)
                 & valid)
    beta = jnp.where(can_start, -slope_new, 1.0)

    def variances() -> tuple[Array, Array]:
      """Variances of the batch-mean loss and of its slope along the new direction."""
      if per_example_loss_fn is not None:
        per_example = _core.bind_value_fn(per_example_loss_fn, extra_args)
        tangent = jax.tree.map(lambda u, p: (sign * u).astype(p.dtype), updates, params)
        losses, slopes = jax.jvp(per_example, (params,), (tangent,))
        return _variance_of_mean(losses, dtype), _variance_of_mean(slopes, dtype)
      var_f = jnp.zeros((), dtype)
      var_df = jnp.zeros((), dtype)
      if value_variance is not None:
        var_f = jnp.asarray(value_variance, dtype).reshape(())
      if grad_variance is not None:
        var_df = jnp.asarray(optax.tree.vdot(
            jax.tree.map(lambda u: jnp.square(u.astype(dtype)), updates), grad_variance), dtype)
      return var_f, var_df

    zero = jnp.zeros((), dtype)
    var_f, var_df = jax.lax.cond(can_start, variances, lambda: (zero, zero))
    var_ok = jnp.isfinite(var_f) & jnp.isfinite(var_df)
    can_start = can_start & var_ok
    sigma_f = jnp.maximum(jnp.sqrt(jnp.maximum(var_f, 0.0)) / (plan.step_size * beta), _MIN_SIGMA)
    sigma_df = jnp.maximum(jnp.sqrt(jnp.maximum(var_df, 0.0)) / beta, _MIN_SIGMA)
    first = jnp.arange(size) == 0

    direction = _phased.store_or_keep(
        can_start,
        lambda: jax.tree.map(lambda u, d: u.astype(d.dtype), updates, state.direction),
        state.direction,
    )
    coef = jnp.where(can_start, plan.step_size, jnp.where(plan.start, 0.0, plan.coef))
    apply = coef != 0
    new_updates = jax.tree.map(
        lambda d, u: jnp.where(apply, (sign * coef) * d, 0.0).astype(u.dtype), direction, updates
    )
    # A start that could not be made (non-finite inputs, no descent) waits for the next call.
    to_start = plan.start & ~can_start
    new_clock = new_clock._replace(
        phase=jnp.where(can_start, _TRIAL, jnp.where(to_start, _START, new_clock.phase)).astype(
            jnp.int32),
        phase_calls=jnp.where(plan.start, 0, new_clock.phase_calls).astype(jnp.int32),
    )
    position = jnp.where(can_start, 1.0, jnp.where(plan.start, 0.0, plan.position))
    moved = can_start | plan.stepped
    no_step_count, no_step_reason = _core.no_step(
        state.no_step_count, moved, invalid=plan.start & ~valid,
        non_finite=plan.unobserved | (plan.start & ~(jnp.isfinite(f) & jnp.isfinite(slope_new)
                                                     & var_ok)),
        not_descent=plan.start & (slope_new >= 0))
    # Neither a step nor a counted failure (a search ended where the weights stand): kept.
    counted = moved | (plan.start & ~can_start) | plan.stalled
    no_step_count = jnp.where(counted, no_step_count, state.no_step_count)
    no_step_reason = jnp.where(counted, no_step_reason, state.no_step_reason)
    new_state = ScaleByPlsState(
        clock=new_clock,
        learning_rate=(position * plan.step_size).astype(dtype),
        num_evals=(plan.observed_ok | can_start).astype(jnp.int32),
        step_size=plan.step_size,
        mean_step_size=plan.mean_step_size,
        accepted_step_size=plan.accepted_step_size,
        extrapolation=jnp.where(can_start, 1.0, plan.extrapolation),
        position=position,
        ts=jnp.where(can_start, 0.0, plan.ts),
        ys=jnp.where(can_start, 0.0, plan.ys),
        dys=jnp.where(can_start, jnp.where(first, -1.0, 0.0), plan.dys),
        observed=jnp.where(can_start, first, plan.observed),
        f0=jnp.where(can_start, f, state.f0),
        beta=jnp.where(can_start, beta, state.beta),
        sigma_f=jnp.where(can_start, sigma_f, state.sigma_f),
        sigma_df=jnp.where(can_start, sigma_df, state.sigma_df),
        num_wolfe=plan.num_wolfe,
        num_exhausted=plan.num_exhausted,
        direction=direction,
        no_step_count=no_step_count,
        no_step_reason=no_step_reason,
    )
    return new_updates, optax.tree.cast_like(new_state, other_tree=state)

  return optax.GradientTransformationExtraArgs(_core.unshare_init(init_fn), update_fn)


# ---------------------------------------------------------------------------
# Pieces.
# ---------------------------------------------------------------------------


def _variance_of_mean(values: Array, dtype: Any) -> Array:
  """The sample variance of ``values`` divided by their number: the variance of their mean."""
  values = jnp.asarray(values, dtype).reshape(-1)
  count = values.shape[0]
  if count < 2:
    return jnp.zeros((), dtype)
  centered = values - jnp.mean(values)
  return jnp.sum(centered**2) / ((count - 1) * count)


def _runtime_valid(kw: dict[str, Any], dtype: Any) -> Array:
  """Whether the hyperparameters are valid as traced values (``optax.inject_hyperparams``).

  Construction checks the concrete ones (:func:`_validate`); an injected value is only
  known here.
  """
  v = lambda name: jnp.asarray(kw[name], dtype)  # noqa: E731
  ok = (v("c1") > 0) & (v("c2") < 1) & (v("c1") < v("c2"))
  ok &= (v("wolfe_threshold") >= 0) & (v("wolfe_threshold") < 1) & (v("reset_factor") > 0)
  ok &= (v("init_step_size") > 0) & (v("min_step_size") > 0)
  ok &= v("max_step_size") >= v("min_step_size")
  return ok & (v("max_extrapolations") >= 0)


def _validate(**kw: Any) -> None:
  """Checks PLS's hyperparameters; raises ``ValueError`` naming the argument."""
  check = _core.check
  check("budget", kw["budget"], lambda v: v >= 1 and v == int(v), "a positive integer")
  _core.check_step_sizes(kw["init_step_size"], kw["min_step_size"], kw["max_step_size"])
  check("c1", kw["c1"], lambda v: 0.0 < v < 1.0, "in (0, 1)")
  check("c2", kw["c2"], lambda v: 0.0 < v < 1.0, "in (0, 1)")
  c1, c2 = _core.concrete(kw["c1"]), _core.concrete(kw["c2"])
  if c1 is not None and c2 is not None and not c1 < c2:
    raise ValueError(f"`c2` must be larger than c1 = {c1}, got {c2}.")
  check("wolfe_threshold", kw["wolfe_threshold"], lambda v: 0.0 <= v < 1.0, "in [0, 1)")
  check("reset_factor", kw["reset_factor"], lambda v: v > 0.0, "positive")
  check("max_extrapolations", kw["max_extrapolations"], lambda v: v >= 0 and v == int(v),
        "a non-negative integer")
