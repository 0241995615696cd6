"""Properties of SaLSa (SGD and Adam directions, with and without the speed-up)."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ls
from tests.least_squares import (
  BATCH,
  BATCHES_PER_EPOCH,
  DIM,
)
from tests.least_squares import batch as _batch
from tests.least_squares import least_squares_data as _least_squares_data
from tests.least_squares import ls_loss as _ls_loss
from tests.least_squares import np_grad as _np_grad
from tests.least_squares import np_loss as _np_loss

GROWTH = 2.0 ** (1.0 / 500)


@functools.cache
def _jitted_step(factory, **kwargs):
  """A jitted train step of ``factory(**kwargs)`` on the least-squares loss."""
  opt = factory(**kwargs)

  @jax.jit
  def step(w, state, x, y):
    loss, g = jax.value_and_grad(_ls_loss)(w, x, y)
    updates, state = opt.update(g, state, w, value=loss, value_fn=_ls_loss, x=x, y=y)
    return optax.apply_updates(w, updates), state, g

  return opt, step


def _tol(*terms: float) -> float:
  """Float32 rounding of a comparison between sums of these terms."""
  return 1e-4 * sum(abs(t) for t in terms) + 1e-9


# ---------------------------------------------------------------------------
# The smoothed criterion, replayed independently in NumPy float64.
# ---------------------------------------------------------------------------


def _criterion_gap(eta, w, d, x, y, f0, h_prev, s_k, c, b3):
  """``h(eta) - c eta s_k`` (Eq. 6; non-negative when eta is accepted) and its rounding bound."""
  decrease = f0 - _np_loss(w + eta * d, x, y)
  lhs, rhs = b3 * h_prev + (1 - b3) * decrease, c * eta * s_k
  return lhs - rhs, _tol(b3 * h_prev, (1 - b3) * decrease, rhs)


@pytest.mark.parametrize("c,b3", [(0.3, 0.99), (0.5, 0.9), (0.1, 0.5)])
def test_accepted_step_satisfies_the_smoothed_criterion(c: float, b3: float):
  """Eq. 5-6 replayed in float64 along the trajectory: h_k >= c eta_k s_k, and not at eta/0.9."""
  a, y = _least_squares_data(0)
  opt, step = _jitted_step(optax_ls.salsa, init_step_size=2.0, c=c, b3=b3, speed_up=False)
  w, state = jnp.zeros(DIM), opt.init(jnp.zeros(DIM))
  h_avg = s_avg = 0.0  # h_k and s_k, float64
  total_evals = 0
  for t in range(40):
    x, yb = _batch(a, y, t)
    prev_step_size = float(state.step_size)
    w_new, state, _ = step(w, state, x, yb)
    eta, k = float(state.learning_rate), int(state.num_evals)
    total_evals += k
    assert not bool(state.exhausted) and int(state.steps_since_search) == 0

    w64, x64, y64 = (np.asarray(v, np.float64) for v in (w, x, yb))
    f0, g = _np_loss(w64, x64, y64), _np_grad(w64, x64, y64)
    # The first trial is the last step grown by 2**(1/500); each further one 0.9 times smaller.
    np.testing.assert_allclose(eta, prev_step_size * GROWTH * 0.9 ** (k - 1), rtol=1e-5)
    # The update is -eta * g.
    np.testing.assert_allclose(np.asarray(w_new) - w64, -eta * g, rtol=1e-3, atol=1e-6)

    s_k = b3 * s_avg + (1 - b3) * (g @ g)

    ok, tol = _criterion_gap(eta, w64, -g, x64, y64, f0, h_avg, s_k, c, b3)
    assert ok >= -tol, (t, ok)
    if k > 1:
      bad, tol = _criterion_gap(eta / 0.9, w64, -g, x64, y64, f0, h_avg, s_k, c, b3)
      assert bad < tol, (t, bad)
    # Only the accepted trial enters h; s_k enters s.
    h_avg = b3 * h_avg + (1 - b3) * (f0 - _np_loss(w64 - eta * g, x64, y64))
    s_avg = s_k
    np.testing.assert_allclose(float(state.decrease_avg), h_avg, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(float(state.norm_avg), s_avg, rtol=1e-4)
    w = w_new
  assert total_evals > 40 + 10, "the problem must make the search backtrack"


@pytest.mark.parametrize("search_direction", ["momentum_free", "momentum"])
def test_adam_salsa_uses_the_preconditioned_criterion_and_momentum_direction(search_direction):
  """Eq. 7 replayed in float64: s_k sums -<g, d>; the update is -eta m_hat/(sqrt(v_hat) + eps).

  ``d`` is the momentum-free direction -g/(sqrt(v_hat) + eps) (the paper's) or, with
  ``search_direction="momentum"``, the applied one; there an update whose momentum direction
  does not descend applies the last accepted step without a search.
  """
  a, y = _least_squares_data(1)
  b1, b2, eps, c, b3 = 0.9, 0.999, 1e-8, 0.3, 0.99
  opt, step = _jitted_step(optax_ls.adam_salsa, init_step_size=4.0, speed_up=False,
                           search_direction=search_direction)
  w, state = jnp.zeros(DIM), opt.init(jnp.zeros(DIM))
  m = v = np.zeros(DIM)
  h_avg = s_avg = 0.0
  backtracked = 0
  for t in range(1, 31):
    x, yb = _batch(a, y, t)
    prev_step_size = float(state.step_size)
    w_new, state, _ = step(w, state, x, yb)
    eta, k = float(state.learning_rate), int(state.num_evals)
    backtracked += k > 1
    w64, x64, y64 = (np.asarray(u, np.float64) for u in (w, x, yb))
    f0, g = _np_loss(w64, x64, y64), _np_grad(w64, x64, y64)
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    denom = np.sqrt(v_hat) + eps
    search_dir = -m_hat / denom if search_direction == "momentum" else -g / denom
    slope = g @ search_dir
    if slope >= 0:  # only along the momentum direction: no search, the last step reused
      assert search_direction == "momentum" and k == 0 and not bool(state.exhausted)
      np.testing.assert_allclose(eta, prev_step_size, rtol=1e-6)
      np.testing.assert_allclose(float(state.norm_avg), s_avg, rtol=1e-3)
    else:
      s_k = b3 * s_avg + (1 - b3) * -slope
      ok, tol = _criterion_gap(eta, w64, search_dir, x64, y64, f0, h_avg, s_k, c, b3)
      assert ok >= -tol, (t, ok)
      if k > 1:
        bad, tol = _criterion_gap(eta / 0.9, w64, search_dir, x64, y64, f0, h_avg, s_k, c, b3)
        assert bad < tol, (t, bad)
      h_avg = b3 * h_avg + (1 - b3) * (f0 - _np_loss(w64 + eta * search_dir, x64, y64))
      s_avg = s_k
      np.testing.assert_allclose(float(state.norm_avg), s_avg, rtol=1e-3)
    # The applied step is the accepted eta along the momentum direction.
    np.testing.assert_allclose(np.asarray(w_new) - w64, -eta * m_hat / denom, rtol=2e-3,
                               atol=1e-6)
    w = w_new
  # Along the momentum direction the slope is flatter: fewer searches backtrack.
  assert backtracked >= (4 if search_direction == "momentum_free" else 1), backtracked


def test_adam_salsa_momentum_search_reuses_the_step_on_an_ascent_direction():
  """A momentum direction that climbs on its batch: no trial, last step reused, next a search."""
  loss = lambda w, target: 0.5 * jnp.sum((w - target) ** 2)  # noqa: E731
  opt = optax_ls.adam_salsa(init_step_size=0.5, search_direction="momentum", speed_up=False)

  @jax.jit
  def step(w, state, target):
    value, g = jax.value_and_grad(loss)(w, target)
    updates, state = opt.update(g, state, w, value=value, value_fn=loss, target=target)
    return optax.apply_updates(w, updates), state

  w = jnp.zeros(3)
  state = opt.init(w)
  w, state = step(w, state, jnp.full(3, 4.0))  # builds momentum towards +4
  first = float(state.step_size)
  assert int(state.num_evals) >= 1 and first > 0
  # A target just behind w: the gradient points against the accumulated momentum.
  w2, state2 = step(w, state, w - 0.01)
  assert int(state2.num_evals) == 0 and not bool(state2.exhausted)
  assert float(state2.learning_rate) == pytest.approx(first)
  assert int(state2.steps_since_search) == 1
  assert bool(jnp.all(w2 > w)), "the momentum step is applied"
  w3, state3 = step(w2, state2, jnp.full(3, 4.0))
  assert int(state3.num_evals) >= 1 and int(state3.steps_since_search) == 0


def test_adam_salsa_rejects_an_unknown_search_direction():
  with pytest.raises(ValueError, match="search_direction"):
    optax_ls.adam_salsa(search_direction="applied")


@pytest.mark.parametrize("total,fraction", [(10, 0.2), (7, 0.5), (5, 0.0), (3, 1.0)])
def test_cooldown_schedule_is_one_then_linear_to_zero(total: int, fraction: float):
  schedule = optax_ls.cooldown_schedule(total, fraction)
  n = max(1, round(fraction * total))
  for t in range(total + 3):
    expected = 1.0 if t <= total - n else max(0.0, (total - t) / n)
    assert float(schedule(t)) == pytest.approx(expected, abs=1e-7), t


@pytest.mark.parametrize("total,warmup,cooldown", [(20, 0.1, 0.2), (40, 0.05, 0.25), (9, 0.3, 0.0)])
def test_cooldown_schedule_warms_up_linearly_first(total: int, warmup: float, cooldown: float):
  schedule = optax_ls.cooldown_schedule(total, cooldown, warmup_fraction=warmup)
  w, n = max(1, round(warmup * total)), max(1, round(cooldown * total))
  for t in range(total + 2):
    down = 1.0 if t <= total - n else max(0.0, (total - t) / n)
    assert float(schedule(t)) == pytest.approx(min(1.0, (t + 1) / w) * down, abs=1e-7), t
  # warmup_fraction=0 is the schedule without a warm-up, exactly.
  plain, zero = optax_ls.cooldown_schedule(total, cooldown), optax_ls.cooldown_schedule(
      total, cooldown, warmup_fraction=0.0)
  assert all(float(plain(t)) == float(zero(t)) for t in range(total + 2))


@pytest.mark.parametrize("kwargs,name", [({"total_steps": 0}, "total_steps"),
                                         ({"total_steps": 10, "cooldown_fraction": -0.1},
                                          "cooldown_fraction"),
                                         ({"total_steps": 10, "warmup_fraction": 1.0},
                                          "warmup_fraction")])
def test_cooldown_schedule_rejects_bad_arguments(kwargs, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    optax_ls.cooldown_schedule(**kwargs)


def test_adam_salsa_step_schedule_scales_the_applied_step_only():
  """learning_rate = step_size x schedule(t) at every update; the weights move by exactly that."""
  a, y = _least_squares_data(2)
  total = 12
  factors = optax_ls.cooldown_schedule(total, 0.5)
  opt, step = _jitted_step(optax_ls.adam_salsa_cooldown, total_steps=total, cooldown_fraction=0.5,
                           init_step_size=1.0)
  b1, b2, eps = 0.9, 0.999, 1e-8
  w, state = jnp.zeros(DIM), opt.init(jnp.zeros(DIM))
  m = v = np.zeros(DIM)
  for t in range(total + 2):
    x, yb = _batch(a, y, t)
    w_new, state, _ = step(w, state, x, yb)
    g = _np_grad(*(np.asarray(u, np.float64) for u in (w, x, yb)))
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
    direction = -(m / (1 - b1 ** (t + 1))) / (np.sqrt(v / (1 - b2 ** (t + 1))) + eps)
    lr, eta = float(state.learning_rate), float(state.step_size)
    assert eta > 0
    np.testing.assert_allclose(lr, eta * float(factors(t)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(w_new) - np.asarray(w), lr * direction, rtol=2e-3,
                               atol=1e-7)
    w = w_new
  assert lr == 0.0 and float(factors(total - 1)) > 0.0  # past the run: no step


def test_adam_salsa_rejects_a_step_schedule_that_is_not_callable():
  with pytest.raises(ValueError, match="step_schedule"):
    optax_ls.adam_salsa(step_schedule=0.5)


def test_b3_zero_is_sls_with_the_same_growth():
  """Without smoothing (b3=0) the criterion is the plain Armijo condition of SLS."""
  a, y = _least_squares_data(2)
  opt1, step1 = _jitted_step(optax_ls.salsa, init_step_size=2.0, b3=0.0, speed_up=False)
  opt2, step2 = _jitted_step(optax_ls.sls, init_step_size=2.0, c=0.3, gamma=2.0,
                             n_batches_per_epoch=500, reset_option=1)
  w1 = w2 = jnp.zeros(DIM)
  s1, s2 = opt1.init(w1), opt2.init(w2)
  for t in range(30):
    w1, s1, _ = step1(w1, s1, *_batch(a, y, t))
    w2, s2, _ = step2(w2, s2, *_batch(a, y, t))
    assert int(s1.num_evals) == int(s2.num_evals), t
    np.testing.assert_allclose(float(s1.learning_rate), float(s2.learning_rate), rtol=1e-6)
  chex.assert_trees_all_close(w1, w2, rtol=1e-5, atol=1e-6)


def test_scale_by_salsa_after_a_sign_flip_equals_salsa():
  a, y = _least_squares_data(3)
  runs = {}
  for name, opt in (
      ("chained", optax.chain(optax.scale(-1.0), optax_ls.scale_by_salsa(init_step_size=2.0))),
      ("direct", optax_ls.salsa(init_step_size=2.0)),
  ):

    @jax.jit
    def step(w, state, x, yb, opt=opt):
      loss, g = jax.value_and_grad(_ls_loss)(w, x, yb)
      updates, state = opt.update(g, state, w, value=loss, grad=g, value_fn=_ls_loss, x=x, y=yb)
      return optax.apply_updates(w, updates), state

    w, state = jnp.zeros(DIM), opt.init(jnp.zeros(DIM))
    for t in range(10):
      w, state = step(w, state, *_batch(a, y, t))
    runs[name] = w, optax.tree.get(state, "learning_rate")
  chex.assert_trees_all_close(runs["chained"], runs["direct"], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# The speed-up: search only every L updates.
# ---------------------------------------------------------------------------


def _np_search_interval(etas: np.ndarray, max_interval: int = 10) -> np.ndarray:
  """Eq. 8-11 in float64: L after each of the accepted steps ``etas``."""
  fast = slow = 0.0
  out = []
  for eta in etas:
    fast, slow = 0.9 * fast + 0.1 * eta, 0.99 * slow + 0.01 * eta
    r = max(fast / slow, slow / fast)
    out.append(max_interval if r == 1 else int(np.clip(np.round(1 / (r - 1)), 1, max_interval)))
  return np.asarray(out)


@functools.cache
def _scan_runner(opt, seed: int):
  """Jitted ``scales -> records``: one step per entry of ``scales`` on ``scale * f_B``.

  The mini-batches cycle through the least-squares data of ``seed``; the loss
  of every step is multiplied by its entry of ``scales``.
  """
  a, y = (jnp.asarray(v) for v in _least_squares_data(seed))

  def loss_fn(w, scale, t):
    i = (t % BATCHES_PER_EPOCH) * BATCH
    x, yb = (jax.lax.dynamic_slice_in_dim(v, i, BATCH) for v in (a, y))
    return scale * _ls_loss(w, x, yb)

  def body(carry, inputs):
    w, state = carry
    scale, t = inputs
    loss, g = jax.value_and_grad(loss_fn)(w, scale, t)
    updates, state = opt.update(g, state, w, value=loss, value_fn=loss_fn, scale=scale, t=t)
    record = dict(
        lr=state.learning_rate,
        evals=state.num_evals,
        interval=state.search_interval,
        since=state.steps_since_search,
        # The update is -lr * g: its component along -g over ||g||^2.
        applied=-optax.tree.vdot(updates, g) / optax.tree.vdot(g, g),
    )
    return (optax.apply_updates(w, updates), state), record

  @jax.jit
  def run(scales):
    w = jnp.zeros(DIM)
    inputs = (scales, jnp.arange(scales.shape[0]))
    return jax.lax.scan(body, (w, opt.init(w)), inputs)[1]

  return lambda scales: {k: np.asarray(v) for k, v in run(jnp.asarray(scales)).items()}


_SALSA = optax_ls.salsa()


def test_speed_up_searches_every_10_steps_once_the_step_size_is_steady():
  rec = _scan_runner(_SALSA, 4)(np.ones(1000, np.float32))
  searched = rec["since"] == 0
  assert np.all((rec["evals"] > 0) == searched)
  # Between searches the last accepted step is applied as it is, with no evaluation.
  reused = np.flatnonzero(~searched)
  np.testing.assert_array_equal(rec["lr"][reused], rec["lr"][reused - 1])
  np.testing.assert_allclose(rec["applied"], rec["lr"], rtol=1e-4)
  # L after each search is Eq. 8-11 applied to the accepted steps, in float64.
  search_steps = np.flatnonzero(searched)
  np.testing.assert_array_equal(rec["interval"][search_steps],
                                _np_search_interval(rec["lr"][search_steps].astype(np.float64)))
  # A search at every update while the step-size averages fill, every 10 once steady.
  assert np.all(searched[:50])
  assert np.all(rec["interval"][-100:] == 10)
  np.testing.assert_array_equal(np.diff(search_steps[-8:]), 10)
  assert np.mean(searched[-200:]) == pytest.approx(0.1, abs=0.01)
  lrs = rec["lr"][-200:]
  assert lrs.std() / lrs.mean() < 0.05


@pytest.mark.parametrize("when", ["at_a_search", "after_a_search"])
def test_speed_up_searches_every_step_again_after_the_loss_scale_changes(when: str):
  """The loss is multiplied by 10 from step t0 on, when L = 10.

  ``at_a_search``: the update at t0 searches; ``after_a_search``: t0 follows a
  search, so the new scale runs 9 updates with the old step size before the
  next search sees it (the weights move away meanwhile, but stay finite).
  """
  run = _scan_runner(_SALSA, 4)
  steady, total = 1000, 1080
  base = run(np.ones(total, np.float32))
  searches = np.flatnonzero(base["since"] == 0)
  t0 = searches[searches >= steady][0] + (when == "after_a_search")
  assert base["interval"][t0 - 1] == 10
  rec = run(np.where(np.arange(total) >= t0, 10.0, 1.0).astype(np.float32))
  np.testing.assert_array_equal(rec["lr"][:t0], base["lr"][:t0])
  after = np.flatnonzero(rec["since"][t0:] == 0) + t0
  # The first search that sees the new scale backtracks to a much smaller step.
  assert rec["evals"][after[0]] > 5
  assert rec["lr"][after[0]] < 0.3 * rec["lr"][t0 - 1]
  # The step-size averages then bring the interval back to 1: a search at every update.
  back = np.flatnonzero(rec["interval"][t0:] == 1)
  assert back.size and back[0] < 50, rec["interval"][t0:]
  assert np.all(rec["since"][t0 + back[0] + 1 :] == 0)
  assert total - (t0 + back[0]) > 10


def test_no_speed_up_searches_every_update():
  rec = _scan_runner(optax_ls.salsa(speed_up=False), 4)(np.ones(300, np.float32))
  assert np.all(rec["since"] == 0) and np.all(rec["evals"] >= 1)
  assert rec["interval"][-1] > 1  # L is still tracked


def test_updates_between_searches_do_not_call_value_fn():
  """Counted at run time: ``value_fn`` runs only on updates that search."""
  a, y = _least_squares_data(5)
  x, yb = _batch(a, y, 0)
  calls = []

  def loss_fn(w):
    jax.debug.callback(lambda: calls.append(1))
    return _ls_loss(w, x, yb)

  opt = optax_ls.salsa()

  @jax.jit
  def step(w, state):
    g = jax.grad(_ls_loss)(w, x, yb)
    updates, state = opt.update(g, state, w, value_fn=loss_fn)  # no `value`: one more call
    return optax.apply_updates(w, updates), state

  w = jnp.zeros(DIM)
  # L = 4 and no update since the last search: the 4th update from here searches.
  state = opt.init(w)._replace(search_interval=jnp.asarray(4, jnp.int32),
                               step_size=jnp.asarray(0.01, jnp.float32))
  expected = 0
  for t in range(8):
    w, state = step(w, state)
    jax.block_until_ready(w)
    searched = int(state.steps_since_search) == 0
    assert searched == (t >= 3), t
    if searched:
      expected += int(state.num_evals)
      assert int(state.num_evals) >= 2  # the value at params and the trials
    else:
      assert int(state.num_evals) == 0
    assert len(calls) == expected, (t, len(calls), expected)


def test_unchecked_updates_between_searches_check_only_the_value():
  a, y = _least_squares_data(6)
  x, yb = _batch(a, y, 0)
  opt = optax_ls.salsa(check_gradient=False)
  w = jnp.zeros(DIM)
  state = opt.init(w)._replace(search_interval=jnp.asarray(5, jnp.int32),
                               step_size=jnp.asarray(0.05, jnp.float32))
  loss, g = jax.value_and_grad(_ls_loss)(w, x, yb)
  update = jax.jit(lambda g, s, v: opt.update(g, s, w, value=v, value_fn=_ls_loss, x=x, y=yb))
  updates, new_state = update(g, state, loss)
  np.testing.assert_allclose(updates, -0.05 * g, rtol=1e-6)
  assert int(new_state.num_evals) == 0 and int(new_state.steps_since_search) == 1
  # A non-finite loss still gives a zero update ...
  updates, _ = update(g, state, jnp.nan)
  chex.assert_trees_all_equal(updates, jnp.zeros(DIM))
  # ... a non-finite gradient with a finite loss is applied as SGD would,
  updates, _ = update(g.at[0].set(jnp.nan), state, loss)
  assert bool(jnp.isnan(updates[0])) and bool(jnp.all(jnp.isfinite(updates[1:])))
  # but a search always checks it.
  updates, searched = update(g.at[0].set(jnp.nan), opt.init(w), loss)
  chex.assert_trees_all_equal(updates, jnp.zeros(DIM))
  assert int(searched.num_evals) == 0 and float(searched.learning_rate) == 0.0


def test_nonfinite_gradient_between_searches_gives_zero_update():
  a, y = _least_squares_data(6)
  x, yb = _batch(a, y, 0)
  opt = optax_ls.salsa()
  w = jnp.zeros(DIM)
  state = opt.init(w)._replace(search_interval=jnp.asarray(5, jnp.int32),
                               step_size=jnp.asarray(0.05, jnp.float32))
  loss, g = jax.value_and_grad(_ls_loss)(w, x, yb)
  update = jax.jit(lambda g, s: opt.update(g, s, w, value=loss, value_fn=_ls_loss, x=x, y=yb))
  updates, new_state = update(g, state)
  np.testing.assert_allclose(updates, -0.05 * g, rtol=1e-6)
  assert int(new_state.num_evals) == 0 and int(new_state.steps_since_search) == 1
  bad = g.at[0].set(jnp.nan)
  updates, new_state = update(bad, state)
  chex.assert_trees_all_equal(updates, jnp.zeros(DIM))
  assert float(new_state.learning_rate) == 0.0
  assert float(new_state.step_size) == pytest.approx(0.05)


def test_exhausted_search_makes_no_step_keeps_the_averages_and_searches_next():
  a, y = _least_squares_data(0)
  x, yb = _batch(a, y, 0)
  w = jnp.ones(DIM)
  opt = optax_ls.salsa(max_backtracking_steps=10)
  state = opt.init(w)._replace(
      decrease_avg=jnp.asarray(0.5, jnp.float32), norm_avg=jnp.asarray(2.0, jnp.float32),
      step_size_fast=jnp.asarray(0.3, jnp.float32), step_size_slow=jnp.asarray(0.2, jnp.float32),
      search_interval=jnp.asarray(3, jnp.int32), steps_since_search=jnp.asarray(2, jnp.int32),
  )
  loss, g = jax.value_and_grad(_ls_loss)(w, x, yb)
  # The ascent direction as the gradient: no trial can satisfy the criterion.
  updates, new = opt.update(-g, state, w, value=loss, value_fn=_ls_loss, x=x, y=yb)
  chex.assert_trees_all_equal(updates, jnp.zeros(DIM))
  assert bool(new.exhausted) and int(new.num_evals) == 10
  assert float(new.learning_rate) == 0.0
  for name in ("decrease_avg", "norm_avg", "step_size_fast", "step_size_slow"):
    assert float(getattr(new, name)) == float(getattr(state, name)), name
  assert int(new.search_interval) == 1 and int(new.steps_since_search) == 0
  np.testing.assert_allclose(float(new.step_size), GROWTH * 0.9**10, rtol=1e-5)


def test_require_decrease_accepts_only_decreasing_steps():
  a, y = _least_squares_data(7, n=2048, dim=20, noise=1.0)
  rng = np.random.default_rng(7)
  kw = dict(init_step_size=1.0, speed_up=False, max_backtracking_steps=200)
  increases = {}
  for require in (False, True):
    opt, step = _jitted_step(optax_ls.salsa, require_decrease=require, **kw)
    w, state = jnp.zeros(20), opt.init(jnp.zeros(20))
    count = 0
    for _ in range(300):
      i = rng.integers(0, len(y), size=4)
      x, yb = a[i], y[i]
      w_new, state, _ = step(w, state, x, yb)
      x64, y64 = x.astype(np.float64), yb.astype(np.float64)
      f0 = _np_loss(np.asarray(w, np.float64), x64, y64)
      f1 = _np_loss(np.asarray(w_new, np.float64), x64, y64)
      count += f1 > f0 * (1 + 1e-5)
      w = w_new
    increases[require] = count
  assert increases[True] == 0
  assert increases[False] > 0, "the smoothed criterion alone accepts some increases"


# ---------------------------------------------------------------------------
# The paper's central claim: a steadier step size than SLS under mini-batch noise.
# ---------------------------------------------------------------------------


def _noisy_step_sizes(opt, a, y, batch: int, steps: int, seed: int) -> np.ndarray:
  idx = jnp.asarray(np.random.default_rng(seed).integers(0, len(y), size=(steps, batch)))
  a, y = jnp.asarray(a), jnp.asarray(y)

  def body(carry, i):
    w, state = carry
    x, yb = a[i], y[i]
    loss, g = jax.value_and_grad(_ls_loss)(w, x, yb)
    updates, state = opt.update(g, state, w, value=loss, value_fn=_ls_loss, x=x, y=yb)
    return (optax.apply_updates(w, updates), state), state.learning_rate

  w = jnp.zeros(a.shape[1])
  _, lrs = jax.lax.scan(body, (w, opt.init(w)), idx)
  return lrs


_NOISY_RUN = jax.jit(_noisy_step_sizes, static_argnums=(0, 3, 4, 5))


def test_salsa_step_size_varies_less_than_sls_across_mini_batches():
  """Coefficient of variation of the step sizes of the last 500 of 1000 steps, batches of 4.

  Both grow by 2**(1/500) per search; SLS with its default c=0.1, SaLSa with
  its defaults and no speed-up (the speed-up would make the comparison
  trivial: it reuses one step size for up to 10 updates).
  """
  sls, salsa = optax_ls.sls(n_batches_per_epoch=500), optax_ls.salsa(speed_up=False)
  ratios = []
  for seed in range(4):
    a, y = _least_squares_data(seed, n=2048, dim=20, noise=1.0)
    cv = {}
    for name, opt in (("sls", sls), ("salsa", salsa)):
      lrs = np.asarray(_NOISY_RUN(opt, a, y, 4, 1000, seed))[-500:]
      assert np.all(lrs > 0)
      cv[name] = lrs.std() / lrs.mean()
    ratios.append(cv["salsa"] / cv["sls"])
  assert max(ratios) < 1.0, ratios
  assert np.mean(ratios) < 0.75, ratios


def test_adam_salsa_cooldown_warmup_scales_the_first_applied_steps():
  def loss_fn(w):
    return jnp.sum((w - 3.0) ** 2)

  opt = optax_ls.adam_salsa_cooldown(total_steps=20, warmup_fraction=0.25)  # w = 5 updates
  w, state = jnp.zeros(DIM), opt.init(jnp.zeros(DIM))
  for t in range(6):
    loss, g = jax.value_and_grad(loss_fn)(w)
    updates, state = opt.update(g, state, w, value=loss, value_fn=loss_fn)
    w = optax.apply_updates(w, updates)
    assert float(state.learning_rate / state.step_size) == pytest.approx(min(1.0, (t + 1) / 5),
                                                                         rel=1e-6)
