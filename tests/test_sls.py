"""Properties of SLS (Armijo, Goldstein, momentum) and Adam + SLS."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optax_ls
from tests.least_squares import (
    BATCHES_PER_EPOCH,
    DIM,
)
from tests.least_squares import batch as _batch
from tests.least_squares import least_squares_data as _least_squares_data
from tests.least_squares import ls_loss as _ls_loss
from tests.least_squares import np_grad as _np_grad
from tests.least_squares import np_loss as _np_loss


@functools.cache
def _jitted_update(**kwargs):
  opt = optax_ls.sls(**kwargs)

  @jax.jit
  def step(w, state, x, y):
    loss, g = jax.value_and_grad(_ls_loss)(w, x, y)
    updates, state = opt.update(g, state, w, value=loss, value_fn=_ls_loss, x=x, y=y)
    return optax.apply_updates(w, updates), state, g

  return opt, step


def _sls_state(state) -> optax_ls.ScaleBySlsState:
  assert isinstance(state, optax_ls.ScaleBySlsState)
  return state


def _numpy_sls(a, y, steps, init_step_size, c, beta, gamma, n_batches, reset_option):
  """An independent NumPy transcription of Alg. 1-2 (Vaswani et al., 2019)."""
  a64, y64 = a.astype(np.float64), y.astype(np.float64)
  w = np.zeros(DIM)
  eta = init_step_size
  etas, evals = [], []
  for t in range(steps):
    x, yb = _batch(a64, y64, t)
    if reset_option == 1:
      eta = eta * gamma ** (1.0 / n_batches)
    elif reset_option == 2:
      eta = init_step_size
    f0, g = _np_loss(w, x, yb), _np_grad(w, x, yb)
    k = 1
    while _np_loss(w - eta * g, x, yb) > f0 - c * eta * g @ g:
      eta *= beta
      k += 1
    w = w - eta * g
    etas.append(eta)
    evals.append(k)
  return np.array(etas), np.array(evals), w


@pytest.mark.parametrize("reset_option", [0, 1, 2])
def test_matches_independent_numpy_implementation(reset_option: int):
  a, y = _least_squares_data(0)
  kwargs = dict(init_step_size=1.0, c=0.1, decrease_factor=0.9, gamma=2.0,
                n_batches_per_epoch=BATCHES_PER_EPOCH, reset_option=reset_option)
  np_etas, np_evals, np_w = _numpy_sls(a, y, steps=40, beta=0.9, n_batches=BATCHES_PER_EPOCH,
                                       **{k: kwargs[k] for k in ("init_step_size", "c", "gamma",
                                                                  "reset_option")})
  opt, step = _jitted_update(**kwargs)
  w, state = jnp.zeros(DIM), opt.init(jnp.zeros(DIM))
  etas, evals = [], []
  for t in range(40):
    w, state, _ = step(w, state, *_batch(a, y, t))
    etas.append(float(_sls_state(state).learning_rate))
    evals.append(int(_sls_state(state).num_evals))
  assert np.sum(np_evals) > 40 + 10, "the problem must make the search backtrack"
  np.testing.assert_array_equal(evals, np_evals)
  np.testing.assert_allclose(etas, np_etas, rtol=1e-5)
  np.testing.assert_allclose(w, np_w, rtol=1e-3, atol=1e-4)


def _reset(prev: float, reset_option: int, init_step_size: float, gamma: float, n: int) -> float:
  return {0: prev, 1: prev * gamma ** (1.0 / n), 2: init_step_size}[reset_option]


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    t=st.integers(0, BATCHES_PER_EPOCH - 1),
    reset_option=st.sampled_from([0, 1, 2]),
    c=st.sampled_from([0.1, 0.5, 0.9]),
    steps_before=st.integers(0, 3),
)
def test_accepted_step_is_the_first_armijo_trial(seed, t, reset_option, c, steps_before):
  a, y = _least_squares_data(seed)
  opt, step = _jitted_update(init_step_size=2.0, c=c, n_batches_per_epoch=BATCHES_PER_EPOCH,
                             reset_option=reset_option)
  w, state = jnp.zeros(DIM), opt.init(jnp.zeros(DIM))
  for s in range(steps_before):
    w, state, _ = step(w, state, *_batch(a, y, s))
  prev = float(_sls_state(state).step_size)
  x, yb = _batch(a, y, t)
  w_new, state, g = step(w, state, x, yb)
  s = _sls_state(state)
  eta, k = float(s.learning_rate), int(s.num_evals)
  assert not bool(s.exhausted)

  # The first trial follows the reset rule; each further trial is 0.9 times the last.
  first = _reset(prev, reset_option, 2.0, 2.0, BATCHES_PER_EPOCH)
  np.testing.assert_allclose(eta, first * 0.9 ** (k - 1), rtol=1e-5)
  # The update is -eta * g.
  np.testing.assert_allclose(w_new - w, -eta * np.asarray(g), rtol=1e-4, atol=1e-7)

  # Independently, in float64: the accepted step satisfies Armijo, the trial before did not.
  w64, g64 = np.asarray(w, np.float64), np.asarray(g, np.float64)
  x64, y64 = x.astype(np.float64), yb.astype(np.float64)
  f0 = _np_loss(w64, x64, y64)
  tol = 1e-5 * max(1.0, abs(f0))

  def armijo_gap(step_size):
    return _np_loss(w64 - step_size * g64, x64, y64) - (f0 - c * step_size * g64 @ g64)

  assert armijo_gap(eta) <= tol
  if k > 1:
    assert armijo_gap(eta / 0.9) > -tol


def test_loss_decreases_monotonically_on_a_convex_quadratic():
  rng = np.random.default_rng(1)
  q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
  h = jnp.asarray((q * np.logspace(-1, 1, 20)) @ q.T, jnp.float32)
  b = jnp.asarray(rng.normal(size=20), jnp.float32)

  def quad(w):
    return 0.5 * w @ h @ w - b @ w

  opt = optax_ls.sls(n_batches_per_epoch=1, init_step_size=1.0)  # doubles before each search

  @jax.jit
  def step(w, state):
    loss, g = jax.value_and_grad(quad)(w)
    updates, state = opt.update(g, state, w, value=loss, value_fn=quad)
    return optax.apply_updates(w, updates), state, loss

  w, state = jnp.zeros(20), opt.init(jnp.zeros(20))
  losses = []
  for _ in range(200):
    w, state, loss = step(w, state)
    losses.append(float(loss))
  losses = np.array(losses)
  assert np.all(np.diff(losses) <= 1e-6 * np.abs(losses[1:])), np.diff(losses).max()
  optimum = float(quad(jnp.linalg.solve(h, b)))
  assert losses[-1] - optimum < 0.05 * (losses[0] - optimum)


def test_exhausted_search_makes_no_step_and_resumes():
  a, y = _least_squares_data(0)
  x, yb = _batch(a, y, 0)
  w = jnp.ones(DIM)
  opt = optax_ls.sls(reset_option=0, init_step_size=1.0, max_backtracking_steps=10)
  state = opt.init(w)
  loss, g = jax.value_and_grad(_ls_loss)(w, x, yb)
  # Handing the ascent direction as the gradient: no trial can satisfy Armijo.
  updates, state = opt.update(-g, state, w, value=loss, value_fn=_ls_loss, x=x, y=yb)
  s = _sls_state(state)
  chex.assert_trees_all_equal(updates, jnp.zeros(DIM))
  assert bool(s.exhausted) and int(s.num_evals) == 10
  assert float(s.learning_rate) == 0.0
  # The next search starts where this one stopped (not at 1e-6, not reset).
  np.testing.assert_allclose(float(s.step_size), 0.9**10, rtol=1e-5)
  _, state = opt.update(g, state, w, value=loss, value_fn=_ls_loss, x=x, y=yb)
  assert float(_sls_state(state).learning_rate) <= 0.9**10 * (1 + 1e-5)


def test_step_size_stays_within_bounds():
  opt = optax_ls.sls(n_batches_per_epoch=1, gamma=10.0, max_step_size=5.0, init_step_size=1.0)

  def flat(w):  # tiny curvature: every trial is accepted, the reset keeps growing
    return 1e-4 * jnp.sum(w**2)

  w, state = jnp.ones(3), opt.init(jnp.ones(3))
  for _ in range(5):
    loss, g = jax.value_and_grad(flat)(w)
    u, state = opt.update(g, state, w, value=loss, value_fn=flat)
    w = optax.apply_updates(w, u)
  assert float(_sls_state(state).learning_rate) == 5.0

  opt = optax_ls.sls(reset_option=0, min_step_size=1e-3, init_step_size=1.0)
  loss, g = jax.value_and_grad(flat)(w)
  _, state = opt.update(-g, opt.init(w), w, value=loss, value_fn=flat)
  s = _sls_state(state)
  assert bool(s.exhausted) and float(s.step_size) >= 1e-3
  assert int(s.num_evals) == int(np.ceil(np.log(1e-3) / np.log(0.9)))


@pytest.mark.parametrize("with_grad", [True, False])
@pytest.mark.parametrize("momentum", [None, 0.5])
def test_sls_equals_scale_by_sls_after_negation(with_grad: bool, momentum):
  a, y = _least_squares_data(2)
  kwargs = dict(n_batches_per_epoch=BATCHES_PER_EPOCH, momentum=momentum)
  fused = optax_ls.sls(**kwargs)
  chained = optax.chain(optax.scale(-1.0), optax_ls.scale_by_sls(**kwargs))
  w1 = w2 = jnp.zeros(DIM)
  s1, s2 = fused.init(w1), chained.init(w2)
  for t in range(6):
    x, yb = _batch(a, y, t)
    extra = {}
    if with_grad:  # a gradient that differs from the incoming updates
      extra["grad"] = 0.9 * jax.grad(_ls_loss)(w1, x, yb)
    l1, g1 = jax.value_and_grad(_ls_loss)(w1, x, yb)
    u1, s1 = fused.update(g1, s1, w1, value=l1, value_fn=_ls_loss, x=x, y=yb, **extra)
    l2, g2 = jax.value_and_grad(_ls_loss)(w2, x, yb)
    u2, s2 = chained.update(g2, s2, w2, value=l2, value_fn=_ls_loss, x=x, y=yb, **extra)
    chex.assert_trees_all_close(u1, u2, rtol=1e-6)
    w1, w2 = optax.apply_updates(w1, u1), optax.apply_updates(w2, u2)
  chex.assert_trees_all_close(s1, s2[1], rtol=1e-6)


def test_value_is_computed_when_not_given():
  a, y = _least_squares_data(0)
  x, yb = _batch(a, y, 0)
  opt = optax_ls.sls(reset_option=2)
  w = jnp.zeros(DIM)
  g = jax.grad(_ls_loss)(w, x, yb)
  with_value, s1 = opt.update(g, opt.init(w), w, value=_ls_loss(w, x, yb), value_fn=_ls_loss,
                              x=x, y=yb)
  without, s2 = opt.update(g, opt.init(w), w, value_fn=_ls_loss, x=x, y=yb)
  chex.assert_trees_all_close(with_value, without)
  assert int(_sls_state(s2).num_evals) == int(_sls_state(s1).num_evals) + 1


# ---------------------------------------------------------------------------
# Goldstein and momentum.
# ---------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), init=st.sampled_from([1e-3, 0.05, 1.0, 8.0]))
def test_goldstein_accepts_only_steps_in_the_goldstein_band(seed, init):
  a, y = _least_squares_data(seed)
  x, yb = _batch(a, y, 0)
  c = 0.25
  opt = optax_ls.sls(line_search_fn="goldstein", c=c, reset_option=2, init_step_size=init)
  w = jnp.zeros(DIM)
  loss, g = jax.value_and_grad(_ls_loss)(w, x, yb)
  updates, state = jax.jit(
      lambda w: opt.update(g, opt.init(w), w, value=loss, value_fn=_ls_loss, x=x, y=yb)
  )(w)
  s = _sls_state(state)
  eta = float(s.learning_rate)
  f0, gg = float(loss), float(g @ g)
  f_eta = float(_ls_loss(w - eta * g, x, yb))
  tol = 1e-6 * max(1.0, abs(f0))
  assert not bool(s.exhausted)
  assert f_eta <= f0 - c * eta * gg + tol  # sufficient decrease
  assert f_eta >= f0 - (1 - c) * eta * gg - tol or eta == 10.0  # not too short, or at the bound
  np.testing.assert_allclose(updates, -eta * g, rtol=1e-5)


def test_goldstein_out_of_trials_applies_the_last_sufficient_decrease_step():
  a, y = _least_squares_data(0)
  x, yb = _batch(a, y, 0)
  w = jnp.zeros(DIM)
  loss, g = jax.value_and_grad(_ls_loss)(w, x, yb)
  # A tiny first step satisfies sufficient decrease but is too short: Goldstein
  # wants to grow it, and with one trial allowed the search runs out.
  opt = optax_ls.sls(line_search_fn="goldstein", reset_option=2, init_step_size=1e-4,
                     max_backtracking_steps=1)
  updates, state = opt.update(g, opt.init(w), w, value=loss, value_fn=_ls_loss, x=x, y=yb)
  s = _sls_state(state)
  assert bool(s.exhausted) and int(s.num_evals) == 1
  np.testing.assert_allclose(float(s.learning_rate), 1e-4, rtol=1e-6)
  np.testing.assert_allclose(updates, -1e-4 * g, rtol=1e-5)
  np.testing.assert_allclose(float(s.step_size), 2e-4, rtol=1e-6)  # resumes from the grown step


def test_bad_inputs_to_update_raise_clear_errors():
  w = jnp.zeros(DIM)
  a, y = _least_squares_data(0)
  x, yb = _batch(a, y, 0)
  g = jax.grad(_ls_loss)(w, x, yb)
  opt = optax_ls.sls(reset_option=0)
  with pytest.raises(ValueError, match="must be a scalar"):
    opt.update(g, opt.init(w), w, value=jnp.ones(3), value_fn=_ls_loss, x=x, y=yb)
  with pytest.raises(ValueError, match="needs `params`"):
    opt.update(g, opt.init(w), None, value=1.0, value_fn=_ls_loss, x=x, y=yb)
  with pytest.raises(TypeError, match="must be callable"):
    opt.update(g, opt.init(w), w, value=1.0, value_fn="loss")


def test_polyak_momentum_adds_the_previous_update():
  a, y = _least_squares_data(0)
  m = 0.6
  opt = optax_ls.sls(reset_option=0, momentum=m, init_step_size=0.5)
  w = jnp.zeros(DIM)
  state = opt.init(w)
  prev = jnp.zeros(DIM)
  for t in range(4):
    x, yb = _batch(a, y, t)
    loss, g = jax.value_and_grad(_ls_loss)(w, x, yb)
    updates, state = opt.update(g, state, w, value=loss, value_fn=_ls_loss, x=x, y=yb)
    eta = float(_sls_state(state).learning_rate)
    np.testing.assert_allclose(updates, -eta * g + m * prev, rtol=1e-5, atol=1e-7)
    # The search itself ran on the plain step: it satisfies Armijo.
    assert float(_ls_loss(w - eta * g, x, yb)) <= float(loss - 0.1 * eta * g @ g) + 1e-6
    prev = updates
    w = optax.apply_updates(w, updates)


# ---------------------------------------------------------------------------
# Adam + SLS.
# ---------------------------------------------------------------------------


def test_adam_sls_criterion_and_applied_direction():
  a, y = _least_squares_data(3)
  b1, b2, eps, c = 0.9, 0.999, 1e-8, 0.1
  opt = optax_ls.adam_sls(reset_option=0, init_step_size=1.0, c=c, b1=b1, b2=b2, eps=eps)
  w = jnp.zeros(DIM)
  state = opt.init(w)
  m, v = np.zeros(DIM), np.zeros(DIM)
  for t in range(1, 6):
    x, yb = _batch(a, y, t)
    loss, g = jax.value_and_grad(_ls_loss)(w, x, yb)
    updates, state = opt.update(g, state, w, value=loss, value_fn=_ls_loss, x=x, y=yb)
    eta = float(state.learning_rate)
    g64 = np.asarray(g, np.float64)
    m = b1 * m + (1 - b1) * g64
    v = b2 * v + (1 - b2) * g64**2
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    denom = np.sqrt(v_hat) + eps
    d_search = -g64 / denom
    # Applied update: the accepted step along the momentum direction.
    np.testing.assert_allclose(updates, eta * (-m_hat / denom), rtol=1e-4, atol=1e-7)
    # The accepted step satisfies the preconditioned Armijo condition (Eq. 3) ...
    w64 = np.asarray(w, np.float64)
    x64, y64 = x.astype(np.float64), yb.astype(np.float64)
    f0 = _np_loss(w64, x64, y64)
    decrease = c * np.sum(g64**2 / denom)
    assert _np_loss(w64 + eta * d_search, x64, y64) <= f0 - eta * decrease + 1e-5
    # ... and the trial before it did not.
    if int(state.num_evals) > 1:
      prev = eta / 0.9
      assert _np_loss(w64 + prev * d_search, x64, y64) > f0 - prev * decrease - 1e-5
    w = optax.apply_updates(w, updates)
  assert int(state.count) == 5
