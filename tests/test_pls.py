"""PLS: GP maths against float64 NumPy/SciPy, the Wolfe test, the budget, noise estimates."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import optax_ls
from optax_ls import _pls

TAU = 10.0


# ---------------------------------------------------------------------------
# An independent float64 NumPy reference of Eq. 2.28-2.35.
# ---------------------------------------------------------------------------


def _np_kernels(a, b):
  """Prior covariances (f, f), (f, f'), (f', f), (f', f') of Eq. 2.28-2.33 (m = 1)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  ta, tb = a + TAU, b + TAU
  lo = np.minimum(ta, tb)
  k = lo**3 / 3 + 0.5 * np.abs(a - b) * lo**2
  kd = np.where(a > b, ta * tb - 0.5 * tb**2, 0.5 * ta**2)
  dk = np.where(a > b, 0.5 * tb**2, ta * tb - 0.5 * ta**2)
  return k, kd, dk, lo


def _np_posterior(ts, ys, dys, sf, sdf, x):
  """Joint posterior mean and covariance of [f(x), f'(x)] (x a vector), Eq. 2.34-2.35."""
  ts, x = np.asarray(ts, np.float64), np.asarray(x, np.float64)
  n = len(ts)
  k, kd, dk, dkd = _np_kernels(ts[:, None], ts[None, :])
  gram = np.block([[k + sf**2 * np.eye(n), kd], [dk, dkd + sdf**2 * np.eye(n)]])
  qk, qkd, qdk, qdkd = _np_kernels(x[:, None], ts[None, :])
  cross = np.block([[qk, qkd], [qdk, qdkd]])  # rows: f(x)..., f'(x)...
  pk, pkd, pdk, pdkd = _np_kernels(x[:, None], x[None, :])
  prior = np.block([[pk, pkd], [pdk, pdkd]])
  mean = cross @ np.linalg.solve(gram, np.concatenate([ys, dys]))
  cov = prior - cross @ np.linalg.solve(gram, cross.T)
  return mean, cov


def _observations():
  """Noisy observations of the scaled quadratic f(t) = t^2/2 - t (minimum at t = 1)."""
  rng = np.random.default_rng(0)
  ts = np.array([0.0, 1.0, 2.0, 0.6, 4.0])
  ys = ts**2 / 2 - ts + 0.05 * rng.normal(size=ts.size)
  dys = ts - 1 + 0.1 * rng.normal(size=ts.size)
  ys[0], dys[0] = 0.0, -1.0
  return ts, ys, dys, 0.05, 0.1


def _padded_gp(ts, ys, dys, sf, sdf, size=11, dtype=jnp.float32):
  pad = lambda a: jnp.asarray(np.concatenate([a, np.zeros(size - len(a))]), dtype)  # noqa: E731
  observed = jnp.arange(size) < len(ts)
  return _pls._gp_fit(pad(ts), pad(ys), pad(dys), observed, jnp.asarray(sf, dtype),
                      jnp.asarray(sdf, dtype))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_posterior_matches_numpy(dtype):
  ts, ys, dys, sf, sdf = _observations()
  x = np.array([0.0, 0.3, 1.0, 1.7, 3.0, 5.5])
  mean, cov = _np_posterior(ts, ys, dys, sf, sdf, x)
  m = len(x)
  # float32: the prior variances are ~(t + 10)^3 / 3, so rounding leaves ~1e-3 absolute.
  tol = {"rtol": 1e-9, "atol": 1e-9} if dtype == "float64" else {"rtol": 2e-3, "atol": 2e-3}
  with jax.enable_x64(dtype == "float64"):
    gp = _padded_gp(ts, ys, dys, sf, sdf, dtype=jnp.dtype(dtype))
    got = _posterior_parts(gp, jnp.asarray(x, dtype))
  np.testing.assert_allclose(got["mean"], mean[:m], **tol)
  np.testing.assert_allclose(got["slope"], mean[m:], **tol)
  for p in (0, 1):
    for q in (0, 1):
      block = cov[p * m:(p + 1) * m, q * m:(q + 1) * m]
      np.testing.assert_allclose(got[f"{p}{q}"], np.diag(block), **tol)
      np.testing.assert_allclose(got[f"{p}{q}row"], block[2], **tol)


@jax.jit
def _posterior_parts(gp, xs):
  parts = {"mean": _pls._gp_mean(gp, xs, 0), "slope": _pls._gp_mean(gp, xs, 1)}
  for p in (0, 1):
    for q in (0, 1):
      parts[f"{p}{q}"] = _pls._gp_cov(gp, p, xs, q, xs)
      parts[f"{p}{q}row"] = _pls._gp_cov(gp, p, xs[2], q, xs)
  return parts


def test_mean_derivatives_and_cubic_minima_match_finite_differences():
  ts, ys, dys, sf, sdf = _observations()
  with jax.enable_x64(True):
    gp = _padded_gp(ts, ys, dys, sf, sdf, dtype=jnp.float64)
    x, h = jnp.asarray([0.3, 0.8, 1.4, 2.9]), 1e-5
    for order in (1, 2, 3):
      fd = (_pls._gp_mean(gp, x + h, order - 1) - _pls._gp_mean(gp, x - h, order - 1)) / (2 * h)
      np.testing.assert_allclose(_pls._gp_mean(gp, x, order), fd, rtol=1e-5, atol=1e-6)
    t, ok = _pls._interval_minima(gp)
    grid = np.linspace(0.0, 4.0, 40001)
    means = np.asarray(_pls._gp_mean(gp, jnp.asarray(grid)))
    sorted_ts = np.sort(ts)
    for lo, hi in zip(sorted_ts[:-1], sorted_ts[1:], strict=True):
      inside = (grid > lo) & (grid < hi)
      j = np.argmin(means[inside])
      interior = 0 < j < inside.sum() - 1
      hit = [float(c) for c, o in zip(t, ok, strict=True) if o and lo < c < hi]
      assert len(hit) == int(interior), (lo, hi, hit)
      if interior:
        assert abs(hit[0] - grid[inside][j]) < 2e-4


_cubic_minimum_jit = jax.jit(_pls._cubic_minimum)


@given(st.floats(-3, 3), st.floats(-3, 3), st.floats(-2, 2))
def test_cubic_minimum_is_a_minimum(d1, d2, d3):
  d1, d2, d3 = (float(np.float32(v)) for v in (d1, d2, d3))
  s, ok = _cubic_minimum_jit(d1, d2, d3)
  roots = np.roots([d3 / 2, d2, d1]) if abs(d3) > 1e-12 else np.roots([d2, d1])
  minima = [r.real for r in np.atleast_1d(roots)
            if abs(r.imag) < 1e-9 and d2 + d3 * r.real > 1e-6]
  if not minima or abs(minima[0]) > 1e4:  # none, or beyond float32's reach
    return
  assert bool(ok)
  assert float(s) == pytest.approx(minima[0], rel=1e-3, abs=1e-3)


def test_bivariate_normal_matches_scipy():
  rng = np.random.default_rng(1)
  rs = np.array([-0.9999, -0.99, -0.95, -0.93, -0.9, -0.5, 0.0, 0.3, 0.7, 0.92, 0.93, 0.99,
                 0.9999])
  h, k = rng.normal(scale=2.0, size=(2, rs.size, 8))
  r = np.broadcast_to(rs[:, None], h.shape)
  got = np.asarray(_pls._bvn_upper(jnp.asarray(h, jnp.float32), jnp.asarray(k, jnp.float32),
                                   jnp.asarray(r, jnp.float32)))
  for idx in np.ndindex(h.shape):
    cov = [[1.0, r[idx]], [r[idx], 1.0]]
    # P(X > h, Y > k) = P(-X < -h, -Y < -k), and (-X, -Y) has the same correlation.
    want = stats.multivariate_normal([0.0, 0.0], cov).cdf([-h[idx], -k[idx]])
    assert got[idx] == pytest.approx(want, abs=2e-5), (h[idx], k[idx], r[idx])


def _np_wolfe(ts, ys, dys, sf, sdf, t, c1, c2):
  """Eq. 2.37-2.38 from the float64 joint posterior of (f(0), f'(0), f(t), f'(t)) and SciPy."""
  mean, cov = _np_posterior(ts, ys, dys, sf, sdf, np.array([0.0, t]))
  # Order: f(0), f(t), f'(0), f'(t).
  a = np.array([1.0, -1.0, c1 * t, 0.0])
  b = np.array([0.0, 0.0, -c2, 1.0])
  ma, mb = a @ mean, b @ mean
  caa, cbb, cab = a @ cov @ a, b @ cov @ b, a @ cov @ b
  joint = stats.multivariate_normal([0.0, 0.0], [[caa, cab], [cab, cbb]])
  return joint.cdf([ma, mb])  # P(a > 0, b > 0) = P(-a < ma', ...) centred


def test_wolfe_probability_matches_scipy_and_accepts_a_clear_point():
  ts, ys, dys, sf, sdf = _observations()
  c1, c2, c_w = 0.05, 0.8, 0.3
  points = np.array([0.7, 1.0, 1.3, 3.0, 5.0])
  with jax.enable_x64(True):
    gp = _padded_gp(ts, ys, dys, sf, sdf, dtype=jnp.float64)
    p, var = _pls._wolfe_probability(gp, jnp.asarray(points), c1, c2)
  for t, got in zip(points, np.asarray(p), strict=True):
    assert got == pytest.approx(_np_wolfe(ts, ys, dys, sf, sdf, t, c1, c2), abs=1e-4), t
  # f = t^2/2 - t: at t = 1 both conditions hold with a wide margin; at t = 5 the
  # value is far above f(0) (no sufficient decrease).
  assert p[1] > c_w and p[1] > 0.9
  assert p[4] < 0.01
  # float32 (what the optimizer runs) agrees.
  p32, _ = _pls._wolfe_probability(_padded_gp(ts, ys, dys, sf, sdf), jnp.asarray(points,
                                                                              jnp.float32), c1, c2)
  np.testing.assert_allclose(p32, p, atol=5e-3)
  np.testing.assert_allclose(var, np.diag(_np_posterior(ts, ys, dys, sf, sdf, points)[1])[:5],
                             rtol=1e-8)


def test_expected_improvement_matches_monte_carlo():
  rng = np.random.default_rng(2)
  mean, std, best = 0.3, 0.5, 0.1
  samples = rng.normal(mean, std, size=2_000_000)
  want = np.mean(np.maximum(0.0, best - samples))
  got = float(_pls._expected_improvement(jnp.float32(mean), jnp.float32(std), jnp.float32(best)))
  assert got == pytest.approx(want, rel=1e-2)


# ---------------------------------------------------------------------------
# The optimizer.
# ---------------------------------------------------------------------------


def _linear_step(opt):
  """f(w) = -sum(w): a line that never satisfies the curvature condition."""

  @jax.jit
  def step(w, state):
    g = -jnp.ones_like(w)
    updates, state = opt.update(g, state, w, value=-jnp.sum(w))
    return optax.apply_updates(w, updates), state

  return step


@pytest.mark.parametrize("budget", [10, 4])
def test_search_stops_within_budget(budget):
  # Extrapolation is unlimited, so only the budget ends a search.
  opt = optax_ls.pls(init_step_size=1e-3, budget=budget, max_extrapolations=40,
                     max_step_size=1e9)
  w = jnp.zeros(3)
  state = opt.init(w)
  step = _linear_step(opt)
  # Call 0 starts a search, calls 1..budget are its trials, the last one ends it;
  # the next call starts the second search.
  ends = [budget, 2 * budget + 1]
  for call in range(2 * budget + 2):
    w, state = step(w, state)
    assert int(state.clock.phase_calls) < budget
    assert int(state.num_wolfe) == 0
    assert int(state.num_exhausted) == sum(call >= e for e in ends)
    assert int(state.clock.phase) == (0 if call in ends else 1)


_QUADRATIC_OPT = optax_ls.pls()


@jax.jit
def _quadratic_step(w, state, eps, scales):
  def per_example(p):
    return jnp.sum(scales * (p - eps) ** 2, axis=-1) / 2

  loss, g = jax.value_and_grad(lambda p: jnp.mean(per_example(p)))(w)
  updates, state = _QUADRATIC_OPT.update(g, state, w, value=loss,
                                         per_example_loss_fn=per_example)
  return optax.apply_updates(w, updates), state


@settings(max_examples=8)
@given(st.integers(0, 2**16), st.floats(0.0, 0.5), st.floats(1e-3, 1.0))
def test_noisy_quadratic_searches_stay_within_budget_and_bounds(seed, noise, init_step_size):
  """Every search ends after at most 10 evaluations; steps stay in bounds; progress is made."""
  rng = np.random.default_rng(seed)
  scales = jnp.asarray(rng.uniform(0.5, 3.0, size=4), jnp.float32)
  w0 = jnp.asarray(rng.normal(size=4), jnp.float32)
  state = _QUADRATIC_OPT.init(w0)
  step = jnp.full((), init_step_size, jnp.float32)
  w, state = w0, state._replace(step_size=step, mean_step_size=step + 0.0)
  objective = lambda w: float(jnp.sum(scales * w**2))  # noqa: E731
  lowest = objective(w0)
  for _ in range(25):
    eps = jnp.asarray(noise * rng.normal(size=(16, 4)), jnp.float32)
    w, state = _quadratic_step(w, state, eps, scales)
    assert int(state.clock.phase_calls) < 10
    assert 0.0 <= float(state.learning_rate) <= 1e3
    assert 1e-8 <= float(state.step_size) <= 1e3
    assert bool(jnp.all(jnp.isfinite(w)))
    lowest = min(lowest, objective(w))
  # The weights visit trial points too: some point of the run is better than the start.
  assert lowest < objective(w0)


def test_per_example_variances_match_per_example_gradients():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(32, 5)), jnp.float32)
  y = jnp.asarray(rng.normal(size=32), jnp.float32)
  w = jnp.asarray(rng.normal(size=5), jnp.float32)

  def per_example(w):
    return jnp.log1p((x @ w - y) ** 2)

  loss, g = jax.value_and_grad(lambda w: per_example(w).mean())(w)
  opt = optax_ls.pls(init_step_size=0.05)
  _, state = opt.update(g, opt.init(w), w, value=loss, per_example_loss_fn=per_example)
  # Independently: per-example gradients (reverse mode), projected on d = -g.
  losses = np.asarray(per_example(w), np.float64)
  grads = np.asarray(jax.vmap(jax.grad(lambda w, i: per_example(w)[i]), (None, 0))(
      w, jnp.arange(32)), np.float64)
  d = -np.asarray(g, np.float64)
  slopes = grads @ d
  beta = -np.mean(slopes)
  var_f = np.var(losses, ddof=1) / 32
  var_df = np.var(slopes, ddof=1) / 32
  assert float(state.beta) == pytest.approx(beta, rel=1e-5)
  assert float(state.sigma_f) == pytest.approx(max(np.sqrt(var_f) / (0.05 * beta), 0.01), rel=1e-4)
  assert float(state.sigma_df) == pytest.approx(max(np.sqrt(var_df) / beta, 0.01), rel=1e-4)
  # The paper's form, value_variance and grad_variance, gives the same sigma_f.
  _, state2 = opt.update(g, opt.init(w), w, value=loss, value_variance=var_f,
                         grad_variance=jnp.zeros_like(w))
  assert float(state2.sigma_f) == pytest.approx(float(state.sigma_f), rel=1e-4)
  assert float(state2.sigma_df) == pytest.approx(0.01)


def test_pls_equals_scale_by_pls_after_negation():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
  y = jnp.asarray(rng.normal(size=16), jnp.float32)

  def per_example(w):
    return (x @ w - y) ** 2

  def run(opt, negate):
    @jax.jit
    def step(w, state):
      loss, g = jax.value_and_grad(lambda w: per_example(w).mean())(w)
      updates, state = opt.update(g, state, w, value=loss, grad=g,
                                  per_example_loss_fn=per_example)
      return optax.apply_updates(w, updates), state

    w = jnp.zeros(3)
    state = opt.init(w)
    for _ in range(12):
      w, state = step(w, state)
    return w

  chained = optax.chain(optax.scale(-1.0), optax_ls.scale_by_pls(init_step_size=0.1))
  chex.assert_trees_all_close(run(optax_ls.pls(init_step_size=0.1), False),
                              run(chained, True), rtol=1e-5, atol=1e-6)


def test_nonfinite_trial_is_not_observed_and_backs_off():
  opt = optax_ls.pls(init_step_size=1.0)
  w = jnp.ones(2)
  g = jnp.ones(2)
  updates, state = opt.update(g, opt.init(w), w, value=1.0)  # start: move to t = 1
  np.testing.assert_allclose(updates, -g)
  updates, state2 = opt.update(g, state, w - g, value=jnp.nan)
  assert int(state2.num_evals) == 0
  assert int(jnp.sum(state2.observed)) == 1  # only the start
  # Halfway back to t = 0: the move is -0.5 along d = -g.
  np.testing.assert_allclose(updates, 0.5 * g)
  assert float(state2.position) == pytest.approx(0.5)
