"""LABPAL: phases, the parabolic fit, the batch-size schedule, robustness.

The expected values are computed independently: line minima of quadratics in
NumPy float64, group positions by a Python model of Alg. 9's schedule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ls

_DIM = 5


def _hessian(seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(_DIM, _DIM))
  return a @ a.T / _DIM + np.eye(_DIM)


def _centers(n: int, seed: int = 1, spread: float = 0.2) -> np.ndarray:
  """Per-call minimisers ``c_i`` of the mini-batch losses, around ``1``."""
  rng = np.random.default_rng(seed)
  return 1.0 + spread * rng.normal(size=(n, _DIM))


def _quadratic_loss(h):
  def loss_fn(w, c):
    r = w - c
    return 0.5 * r @ (h @ r)

  return loss_fn


def _stepper(opt, loss_fn, pass_value: bool = True):
  """A jitted call: ``(params, state, batch) -> (params, state, updates, grads)``."""

  @jax.jit
  def step(params, state, batch):
    value, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, state = opt.update(grads, state, params, value=value if pass_value else None,
                                value_fn=lambda p: loss_fn(p, batch))
    return optax.apply_updates(params, updates), state, updates, grads

  return step


def _norm(tree) -> float:
  return float(optax.tree.norm(tree))


@pytest.mark.parametrize("mode", ["sgd", "nsgd"])
def test_phase_sequence(mode):
  """3 measuring calls (zero updates, 2 evaluations), 4 updates (none), again."""
  opt = optax_ls.labpal(mode=mode, approx_batches=3, n_sgd=4)
  step = _stepper(opt, _quadratic_loss(jnp.asarray(_hessian(), jnp.float32)))
  params, state = jnp.zeros(_DIM), opt.init(jnp.zeros(_DIM))
  moved, evals, phases = [], [], []
  for c in _centers(14):
    params, state, updates, _ = step(params, state, jnp.asarray(c, jnp.float32))
    moved.append(_norm(updates) > 0)
    evals.append(int(state.num_evals))
    phases.append(int(state.clock.phase))
  assert moved == [False] * 3 + [True] * 4 + [False] * 3 + [True] * 4
  assert evals == [2] * 3 + [0] * 4 + [2] * 3 + [0] * 4
  # The phase of the next call: the last measuring call fits and moves on.
  assert phases == [0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0]
  assert int(state.num_fits) == 2 and int(state.num_failed) == 0
  assert int(state.clock.calls) == 14
  assert step._cache_size() == 1


def test_without_value_measuring_calls_evaluate_the_origin_too():
  loss_fn = _quadratic_loss(jnp.asarray(_hessian(), jnp.float32))
  opt = optax_ls.labpal(approx_batches=2, n_sgd=2)
  with_value, without = _stepper(opt, loss_fn), _stepper(opt, loss_fn, pass_value=False)
  w1 = w2 = jnp.zeros(_DIM)
  s1 = s2 = opt.init(w1)
  for i, c in enumerate(_centers(4)):
    w1, s1, _, _ = with_value(w1, s1, jnp.asarray(c, jnp.float32))
    w2, s2, _, _ = without(w2, s2, jnp.asarray(c, jnp.float32))
    if i < 2:
      assert int(s2.num_evals) == int(s1.num_evals) + 1 == 3
  np.testing.assert_allclose(float(s1.step), float(s2.step), rtol=1e-3)
  np.testing.assert_allclose(np.asarray(w1), np.asarray(w2), rtol=1e-3)


def _fit_setup(mode, approx_batches=4, **kw):
  """A stochastic quadratic in float64: returns the states, updates, grads and batches."""
  h = _hessian()
  centers = _centers(approx_batches + 2)
  loss_fn = _quadratic_loss(jnp.asarray(h))
  opt = optax_ls.labpal(mode=mode, approx_batches=approx_batches, n_sgd=10, **kw)
  step = _stepper(opt, loss_fn)
  w = jnp.zeros(_DIM, jnp.float64)
  state = opt.init(w)
  out = []
  for c in centers:
    w, state, updates, grads = step(w, state, jnp.asarray(c))
    out.append((state, np.asarray(updates), np.asarray(grads)))
  return h, centers, out


def _true_line_minimum(h, centers, g0):
  """The minimiser along ``u = -g0/|g0|`` of the mean of the quadratics at w = 0."""
  u = -g0 / np.linalg.norm(g0)
  grad_mean = h @ (0.0 - centers.mean(axis=0))
  return -(u @ grad_mean) / (u @ h @ u)


@pytest.mark.parametrize("mode", ["sgd", "nsgd"])
def test_fit_is_the_line_minimum_of_the_mean_loss_float64(mode):
  with jax.enable_x64(True):
    alpha, n = 1.8, 4
    h, centers, out = _fit_setup(mode, approx_batches=n, alpha=alpha, max_step_size=1e6)
    g0 = out[0][2]
    s_min = _true_line_minimum(h, centers[:n], g0)
    assert s_min > 0
    state = out[n - 1][0]
    assert state.step.dtype == jnp.float64
    np.testing.assert_allclose(float(state.step), alpha * s_min, rtol=1e-8)
    # The first update, on the next batch, with the fitted rate or step.
    _, updates, grads = out[n]
    if mode == "sgd":
      lr = alpha * s_min / np.linalg.norm(g0)
      np.testing.assert_allclose(updates, -lr * grads, rtol=1e-8)
    else:
      lr = alpha * s_min / np.linalg.norm(grads)
      np.testing.assert_allclose(updates, -alpha * s_min * grads / np.linalg.norm(grads),
                                 rtol=1e-8)
    np.testing.assert_allclose(float(out[n][0].learning_rate), lr, rtol=1e-8)


def test_reference_curvature_and_clipping_order_float64():
  """The reference fit lands at 2 s_min - s1 and clips before multiplying by alpha."""
  with jax.enable_x64(True):
    n, alpha, s1 = 3, 1.8, 1e-4
    h, centers, out = _fit_setup("nsgd", approx_batches=n, alpha=alpha, max_step_size=1e6,
                                 reference_curvature=True)
    s_min = _true_line_minimum(h, centers[:n], out[0][2])
    np.testing.assert_allclose(float(out[n - 1][0].step), alpha * (2 * s_min - s1), rtol=1e-7)
    cap = 0.5 * s_min  # below both minima: the order of clip and alpha shows
    for reference, expected in ((False, cap), (True, alpha * cap)):
      _, _, out = _fit_setup("nsgd", approx_batches=n, alpha=alpha, max_step_size=cap,
                             reference_curvature=reference)
      np.testing.assert_allclose(float(out[n - 1][0].step), expected, rtol=1e-12)


def _update_positions(k_of, start: int, calls: int) -> list[int]:
  """Alg. 9's training groups from call ``start``: a group of ``k(t)`` calls
  starting at call ``t`` (``t`` = calls made before it) updates on its last call."""
  positions, t = [], start
  while True:
    k = k_of(t)
    if t + k - 1 >= calls:
      return positions
    positions.append(t + k - 1)
    t += k


def test_batch_schedule_doubles_at_half_and_three_quarters_of_t_max():
  h = _hessian()
  loss_fn = _quadratic_loss(jnp.asarray(h, jnp.float32))
  t_max, calls = 40, 64
  opt = optax_ls.labpal(mode="sgd", approx_batches=1, n_sgd=1000, t_max=t_max)
  step = _stepper(opt, loss_fn)
  w, state = jnp.zeros(_DIM), opt.init(jnp.zeros(_DIM))
  moved = []
  for c in _centers(calls, spread=0.0):
    w, state, updates, _ = step(w, state, jnp.asarray(c, jnp.float32))
    moved.append(_norm(updates) > 0)

  def k_of(t):
    return 1 if t <= t_max // 2 else 2 if t <= (3 * t_max) // 4 else 4

  expected = _update_positions(k_of, start=1, calls=calls)  # call 0 measures and fits
  assert [i for i, m in enumerate(moved) if m] == expected
  assert set(np.diff(expected)) == {1, 2, 4}


def test_noise_adaptation_scales_the_schedule_and_the_direction_group():
  """eps = (128/64) * (40000/40000) = 2: t_max -> 80 calls, k -> 2, 4, 8.

  The line is then fixed by the mean gradient of two calls (the first one
  only accumulates), and the SGD rate is ``step / ||mean gradient||``.
  """
  h = _hessian()
  loss_fn = _quadratic_loss(jnp.asarray(h, jnp.float32))
  t_max, calls = 40, 96
  opt = optax_ls.labpal(mode="sgd", approx_batches=1, n_sgd=1000, t_max=t_max,
                        dataset_size=40_000, batch_size=64)
  step = _stepper(opt, loss_fn)
  w, state = jnp.zeros(_DIM), opt.init(jnp.zeros(_DIM))
  moved, evals, grads = [], [], []
  for c in _centers(calls, spread=0.1):
    w, state, updates, g = step(w, state, jnp.asarray(c, jnp.float32))
    moved.append(_norm(updates) > 0)
    evals.append(int(state.num_evals))
    grads.append(np.asarray(g))
    if len(grads) == 2:
      fitted = state
  assert evals[:3] == [0, 2, 0]  # accumulate, fix + measure, train
  mean_grad = (grads[0] + grads[1]) / 2
  np.testing.assert_allclose(float(fitted.learning_rate),
                             float(fitted.step) / np.linalg.norm(mean_grad), rtol=1e-5)

  def k_of(t):
    return 2 if t <= 40 else 4 if t <= 60 else 8

  expected = _update_positions(k_of, start=2, calls=calls)
  assert [i for i, m in enumerate(moved) if m] == expected


def test_nonfinite_measurement_restarts_first_then_reuses_the_last_step():
  h = jnp.asarray(_hessian(), jnp.float32)
  base = _quadratic_loss(h)

  def loss_fn(w, batch):  # NaN measurements on a batch flagged bad
    return jnp.where(batch["bad"], jnp.nan, base(w, batch["c"]))

  opt = optax_ls.labpal(mode="sgd", approx_batches=2, n_sgd=2)
  step = _stepper(opt, loss_fn)
  w, state = jnp.zeros(_DIM), opt.init(jnp.zeros(_DIM))
  centers = _centers(12)
  bad = [False, True, False, False, False, False, False, True, False, False]
  log = []
  for c, b in zip(centers, bad, strict=False):
    w, state, updates, _ = step(w, state, {"c": jnp.asarray(c, jnp.float32),
                                           "bad": jnp.asarray(b)})
    log.append((_norm(updates) > 0, int(state.num_failed), int(state.clock.phase),
                float(state.step)))
    assert np.all(np.isfinite(np.asarray(state.loss_sums)))
  moved = [m for m, *_ in log]
  # Call 1 fails before any fit: measure again from call 2 (fit at call 3).
  # Call 7 fails after a fit: train on with the last step (calls 8, 9).
  assert moved == [False, False, False, False, True, True, False, False, True, True]
  assert [f for _, f, _, _ in log] == [0, 1, 1, 1, 1, 1, 1, 2, 2, 2]
  assert log[1][2] == 0 and log[7][2] == 1
  assert log[7][3] == log[6][3] > 0  # the step is kept


def test_parabola_without_minimum_never_steps():
  """A concave loss along the line: every fit fails, every update is zero."""

  def loss_fn(w, c):
    return -jnp.sum((w - c) ** 2)

  opt = optax_ls.labpal(mode="nsgd", approx_batches=2, n_sgd=3)
  step = _stepper(opt, loss_fn)
  w, state = jnp.zeros(_DIM), opt.init(jnp.zeros(_DIM))
  for c in _centers(9):
    w, state, updates, _ = step(w, state, jnp.asarray(c, jnp.float32))
    assert _norm(updates) == 0.0
  assert int(state.num_fits) == 0 and int(state.num_failed) == 4
  assert float(state.learning_rate) == 0.0 and float(state.step) == 0.0


def test_nonfinite_gradient_in_training_is_left_out():
  h = jnp.asarray(_hessian(), jnp.float32)
  opt = optax_ls.labpal(mode="sgd", approx_batches=1, n_sgd=5)
  w = jnp.zeros(_DIM)
  state = opt.init(w)
  value_fn = lambda p: _quadratic_loss(h)(p, jnp.ones(_DIM))  # noqa: E731
  update = jax.jit(lambda g, s: opt.update(g, s, w, value=value_fn(w), value_fn=value_fn))
  g = jax.grad(value_fn)(w)
  _, state = update(g, state)  # measure and fit
  updates, state = update(g, state)
  assert _norm(updates) > 0 and int(state.trained) == 1
  bad = g.at[0].set(jnp.inf)
  updates, state = update(bad, state)
  assert _norm(updates) == 0.0 and int(state.trained) == 1
  assert np.all(np.isfinite(np.asarray(state.direction)))
  updates, state = update(g, state)
  assert _norm(updates) > 0 and int(state.trained) == 2


@pytest.mark.parametrize("mode", ["sgd", "nsgd"])
def test_momentum_direction(mode):
  """``m_t = beta m_{t-1} + g_t`` (from the fixing call on); SGD ``-lr m``, NSGD ``-s m/|m|``."""
  h = jnp.asarray(_hessian(), jnp.float32)
  beta = 0.5
  opt = optax_ls.labpal(mode=mode, approx_batches=1, n_sgd=10, momentum=beta,
                        batch_schedule=None)
  step = _stepper(opt, _quadratic_loss(h))
  w, state = jnp.zeros(_DIM), opt.init(jnp.zeros(_DIM))
  m = np.zeros(_DIM)
  for i, c in enumerate(_centers(6)):
    w, state, updates, g = step(w, state, jnp.asarray(c, jnp.float32))
    m = beta * m + np.asarray(g, np.float64)
    if i == 0:
      assert _norm(updates) == 0.0
      np.testing.assert_allclose(float(state.learning_rate),
                                 float(state.step) / np.linalg.norm(m), rtol=1e-5)
      lr = float(state.learning_rate)
      continue
    expected = -lr * m if mode == "sgd" else -float(state.step) * m / np.linalg.norm(m)
    np.testing.assert_allclose(np.asarray(updates), expected, rtol=1e-5, atol=1e-7)


def test_labpal_equals_chain_of_negation_and_scale_by_labpal():
  # Measuring points farther out than the paper's 1e-4: in float32 a fit from
  # a 1e-4 loss difference moves in the third digit with the rounding of the
  # loss (the two ways of writing the direction round differently).
  kw = dict(mode="nsgd", approx_batches=2, n_sgd=3, momentum=0.3, t_max=8,
            measure_points=(1e-2, 1e-1))
  direct = optax_ls.labpal(**kw)
  chained = optax.chain(optax.scale(-1.0), optax_ls.scale_by_labpal(**kw))
  loss_fn = _quadratic_loss(jnp.asarray(_hessian(), jnp.float32))
  s1, s2 = _stepper(direct, loss_fn), _stepper(chained, loss_fn)
  w1 = w2 = jnp.zeros(_DIM)
  st1, st2 = direct.init(w1), chained.init(w2)
  for c in _centers(12):
    w1, st1, u1, _ = s1(w1, st1, jnp.asarray(c, jnp.float32))
    w2, st2, u2, _ = s2(w2, st2, jnp.asarray(c, jnp.float32))
    np.testing.assert_allclose(np.asarray(u1), np.asarray(u2), rtol=1e-5, atol=1e-7)
  assert int(st1.num_fits) == int(optax.tree.get(st2, "num_fits")) >= 2


def test_hyperparameter_errors_name_the_argument():
  with pytest.raises(ValueError, match="`dataset_size`"):
    optax_ls.labpal(batch_size=64)
  with pytest.raises(ValueError, match="`measure_points`"):
    optax_ls.labpal(measure_points=(0.0, 0.01))
  with pytest.raises(ValueError, match="`batch_schedule`"):
    optax_ls.labpal(batch_schedule=((0.5, 2), (1.5, 4)))
  with pytest.raises(ValueError, match="`batch_schedule`"):
    optax_ls.labpal(batch_schedule=((0.5, True),))
