"""GOLS-I: Alg. 4 of the thesis, checked against an independent float64 replay.

The problems are diagonal quadratics ``f_i(w) = 0.5 * sum(a * (w - c_i)**2)``
whose centre ``c_i`` may change from call to call (a new "batch" for every
derivative). The replay is Alg. 4 written as the paper's loops in NumPy; the
optimizer is a state machine over calls, so the two formulations are
independent.
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import optax_ls
from tests.problems import init_mlp, mlp_loss, regression_batch

DIM = 3
CALLS = 40


class _Stop(Exception):
  """The replay has used up its calls."""


def _replay(w0, centers, a, init, c2, eta, lam_min, cap):
  """Alg. 4 in float64 over the calls ``centers`` allows.

  Returns the points whose gradients the calls see, the accepted steps and
  every measured slope relative to its line's ``|l'(0)|``. A zero direction
  makes no move (the optimizer's robustness rule, not in Alg. 4).
  """
  points, accepted, rel_slopes = [], [], []

  def grad(w):
    if len(points) == len(centers):
      raise _Stop
    g = a * (w - centers[len(points)])
    points.append(w.copy())
    return g

  w, lam_init = np.asarray(w0, np.float64), init
  try:
    while True:
      d = -grad(w)
      s0 = -d @ d
      if not s0 < 0:  # a zero direction: no move, the next call starts again
        continue
      lam_max = max(min(1.0 / np.linalg.norm(d), cap), lam_min)
      lam = min(max(lam_init, lam_min), lam_max)

      def slope(lam, d=d, s0=s0, w=w):
        s = grad(w + lam * d) @ d
        rel_slopes.append(s / abs(s0))
        return s

      s = slope(lam)
      if not 0.0 <= s <= c2 * abs(s0):
        if s < 0:
          while True:
            lam = min(lam * eta, lam_max)
            if lam > lam_max / eta or slope(lam) >= 0:
              break
        else:
          while True:
            lam = max(lam / eta, lam_min)
            if lam < lam_min * eta or slope(lam) < 0:
              break
      w = w + lam * d
      accepted.append(lam)
      lam_init = lam
  except _Stop:
    pass
  return np.array(points), accepted, rel_slopes


@functools.cache
def _stepper(c2: float, eta: float, lam_min: float, cap: float):
  opt = optax_ls.scale_by_gols_i(c2=c2, eta=eta, min_step_size=lam_min, max_step_size=cap)

  @jax.jit
  def step(w, state, a, center):
    g = a * (w - center)
    updates, state = opt.update(-g, state, w, grad=g)
    return optax.apply_updates(w, updates), state

  return opt, step


def _run(w0, centers, a, init, c2, eta, lam_min, cap):
  """The optimizer over ``len(centers)`` calls: points seen, states after each call."""
  opt, step = _stepper(c2, eta, lam_min, cap)
  w = jnp.asarray(w0, jnp.float32)
  state = opt.init(w)._replace(first_step=jnp.asarray(init, jnp.float32))
  a32 = jnp.asarray(a, jnp.float32)
  points, states = [], []
  for c in centers:
    points.append(np.asarray(w, np.float64))
    w, state = step(w, state, a32, jnp.asarray(c, jnp.float32))
    states.append(jax.device_get(state))
  return np.array(points), states


def _accepted_steps(states):
  """The step of each call that ended a search (``num_searches`` went up)."""
  out, before = [], 0
  for s in states:
    if int(s.num_searches) > before:
      out.append(float(s.learning_rate))
      before = int(s.num_searches)
  return out


_HYPER = [(0.9, 2.0), (0.5, 3.0), (0.99, 1.5)]  # (c2, eta): the paper's, and two more
_curvatures = st.lists(st.floats(0.2, 5.0), min_size=DIM, max_size=DIM)
_start = st.lists(st.floats(-2.0, 2.0), min_size=DIM, max_size=DIM)
_log_init = st.floats(-4.0, 1.0)


@pytest.mark.parametrize("c2,eta", _HYPER)
@settings(max_examples=15)
@given(a=_curvatures, w0=_start, log_init=_log_init, noise=st.sampled_from([0.0, 0.3]),
       seed=st.integers(0, 1000))
def test_calls_follow_the_float64_replay_of_alg4(c2, eta, a, w0, log_init, noise, seed):
  a, w0 = np.array(a), np.array(w0)
  centers = 1.0 + noise * np.random.default_rng(seed).normal(size=(CALLS, DIM))
  init = 10.0**log_init
  ref_points, _, _ = _replay(w0, centers, a, init, c2, eta, 1e-8, 1e7)
  # Compare the calls before the gradient nears float32 rounding (near the
  # optimum of a noise-free problem).
  stop = np.linalg.norm(a * (ref_points - centers), axis=1) < 1e-3
  # ... and while the replay itself is resolved at float32 precision: a step
  # near 2 / a overshoots and amplifies any rounding, so a float32-sized change
  # of the start (1e-7) must move no point by more than 1e-6 (a tenth of atol).
  moved = np.zeros(CALLS)
  for sign in (1.0, -1.0):
    shifted, _, _ = _replay(w0 + sign * 1e-7 * (1.0 + np.abs(w0)), centers, a,
                            init * (1.0 + sign * 1e-7), c2, eta, 1e-8, 1e7)
    moved = np.maximum(moved, np.abs(shifted - ref_points).max(axis=1))
  stop |= moved > 1e-6
  centers = centers[: int(np.argmax(stop)) if stop.any() else CALLS]
  ref_points, ref_accepted, rel = _replay(w0, centers, a, init, c2, eta, 1e-8, 1e7)
  # float32 rounding must not be able to flip a sign test.
  assume(all(abs(r) > 1e-3 and abs(r - c2) > 1e-3 for r in rel))
  assume(len(ref_accepted) >= 2)
  points, states = _run(w0, centers, a, init, c2, eta, 1e-8, 1e7)
  np.testing.assert_allclose(points, ref_points, rtol=1e-4, atol=1e-5)
  accepted = _accepted_steps(states)
  assert len(accepted) == len(ref_accepted)
  np.testing.assert_allclose(accepted, ref_accepted, rtol=1e-5)
  assert all(int(s.num_evals) == 0 for s in states)


def _line_root(w, a, c):
  """The line along ``d = -a (w - c)`` and the step ``lam*`` where its slope is zero."""
  d = -a * (w - c)
  return d, (d @ d) / (d @ (a * d))


@pytest.mark.parametrize("c2,eta", _HYPER)
@settings(max_examples=20)
@given(a=_curvatures, w0=_start, log_init=st.floats(-6.0, 3.0))
def test_accepted_step_brackets_the_sign_change_and_stays_in_bounds(c2, eta, a, w0, log_init):
  """Deterministic problem: every search ends next to the root of its line's slope."""
  a, w0 = np.array(a), np.array(w0)
  center = np.ones(DIM)
  assume(np.linalg.norm(a * (w0 - center)) > 1e-2)
  lam_min, cap = 1e-8, 1e7
  points, states = _run(w0, np.tile(center, (CALLS, 1)), a, 10.0**log_init, c2, eta, lam_min,
                        cap)
  searches = 0
  start_call = 0
  for i, s in enumerate(states):
    lam = float(s.learning_rate)
    if i == start_call:  # a start call: the line is fixed at points[i]
      d, root = _line_root(points[i], a, center)
      if np.linalg.norm(d) < 1e-3:  # near the optimum, float32 rounding rules
        break
      lam_max = max(min(1.0 / np.linalg.norm(d), cap), lam_min)
      assert math.isclose(float(s.max_step), lam_max, rel_tol=1e-5)
    assert lam_min * (1 - 1e-6) <= lam <= lam_max * (1 + 1e-6)
    if int(s.num_searches) == searches:
      continue
    # The search ended at `lam`: the sign change of l'(t) = (t - root) <a d, d>
    # lies between it and the trial before it, or the first trial met Eq. 2.24,
    # or a limit was reached.
    searches += 1
    trials = i - start_call
    slope = (lam - root) * (d @ (a * d))
    slope0 = -d @ d
    at_limit = lam > lam_max / eta * (1 - 1e-6) or lam < lam_min * eta * (1 + 1e-6)
    if trials == 1:
      assert at_limit or -1e-4 * abs(slope0) <= slope <= c2 * abs(slope0) * (1 + 1e-4)
    else:
      tol = 1e-4
      grown = lam / eta * (1 - tol) <= root <= lam * (1 + tol)
      shrunk = lam * (1 - tol) <= root <= lam * eta * (1 + tol)
      assert at_limit or grown or shrunk, (lam, root, eta)
    np.testing.assert_allclose(points[i + 1] if i + 1 < len(points) else points[i],
                               points[start_call] + lam * d, rtol=1e-4, atol=1e-5)
    start_call = i + 1
  assert searches >= 2
  # A search takes at most 2 + ceil(log_eta(lam_max / lam_min)) calls.
  assert i - start_call <= 2 + math.ceil(math.log(1e7 / lam_min, eta))


@pytest.mark.parametrize("lam_min,cap", [(1e-3, 0.05), (0.5, 1e7), (1e-8, 1e-2)])
@settings(max_examples=10)
@given(a=st.lists(st.floats(1e-3, 1e3), min_size=DIM, max_size=DIM), w0=_start,
       log_init=st.floats(-10.0, 10.0))
def test_steps_stay_in_bounds_at_extreme_settings(lam_min, cap, a, w0, log_init):
  a, w0 = np.array(a), np.array(w0)
  center = np.ones(DIM)
  assume(np.linalg.norm(a * (w0 - center)) > 1e-2)
  _, states = _run(w0, np.tile(center, (20, 1)), a, 10.0**log_init, 0.9, 2.0, lam_min, cap)
  # (A large min_step_size on a stiff problem diverges: the bounds still hold.)
  for s in states:
    lam, lam_max = float(s.learning_rate), float(s.max_step)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(s))
    assert lam_min * (1 - 1e-6) <= lam_max <= max(cap, lam_min) * (1 + 1e-6)
    if lam == 0.0:  # at the line start: a start call that could not start, or a failed trial
      assert int(s.clock.phase) == 0
      continue
    assert lam_min * (1 - 1e-6) <= lam <= lam_max * (1 + 1e-6)
  assert int(states[-1].num_searches) >= 1


def _call(opt, state, g, **kwargs):
  """One jitted update (no params: GOLS-I does not read them)."""
  return jax.jit(opt.update)(g, state, None, **kwargs)


@pytest.mark.parametrize("bad", ["grad", "value"])
def test_nonfinite_trial_returns_to_the_line_start(bad):
  opt = optax_ls.scale_by_gols_i(init_step_size=0.01)
  a, center = jnp.array([1.0, 2.0, 0.5]), jnp.ones(DIM)
  w0 = jnp.array([0.3, -0.7, 1.9])
  state = opt.init(w0)
  w = w0
  for _ in range(3):  # the start and two trials: the weights sit at a trial point
    g = a * (w - center)
    updates, state = _call(opt, state, -g, grad=g, value=1.0)
    w = optax.apply_updates(w, updates)
  assert int(state.clock.phase) == 2 and float(state.learning_rate) == pytest.approx(0.04)
  first_step = float(state.first_step)
  g = a * (w - center)
  if bad == "grad":
    g = g.at[1].set(jnp.nan)
  updates, state = _call(opt, state, -g, grad=g, value=jnp.nan if bad == "value" else 1.0)
  w = optax.apply_updates(w, updates)
  chex.assert_trees_all_close(w, w0, atol=1e-6)
  assert int(state.clock.phase) == 0 and float(state.learning_rate) == 0.0
  assert int(state.num_failed) == 1 and int(state.num_searches) == 0
  assert float(state.first_step) == first_step
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state))


def test_non_descent_direction_makes_no_move():
  opt = optax_ls.scale_by_gols_i(init_step_size=0.1)
  w = jnp.array([0.3, -0.7, 1.9])
  g = w - 1.0
  state = opt.init(w)
  updates, state = _call(opt, state, g, grad=g)  # d = +g: ascent
  chex.assert_trees_all_equal(updates, jnp.zeros(DIM))
  assert int(state.clock.phase) == 0 and float(state.learning_rate) == 0.0


def test_immediate_acceptance_makes_a_zero_update_and_restarts():
  # Along d = -g = 0.5 from w = 0 on 0.5 (w - 0.5)^2 the slope's root is at
  # t = 1 and lambda_max = 1/|d| = 2; the first trial t = 1.5 has
  # l'(1.5) = 0.125 <= 0.9 |l'(0)| = 0.225: accepted.
  opt = optax_ls.scale_by_gols_i(init_step_size=1.5)
  w = jnp.zeros(1)
  state = opt.init(w)
  g = w - 0.5
  updates, state = _call(opt, state, -g, grad=g)
  np.testing.assert_allclose(updates, [0.75])
  w = w + updates
  g = w - 0.5
  updates, state = _call(opt, state, -g, grad=g)
  chex.assert_trees_all_equal(updates, jnp.zeros(1))
  assert int(state.clock.phase) == 0 and int(state.num_searches) == 1
  assert float(state.learning_rate) == float(state.first_step) == 1.5
  np.testing.assert_allclose(float(state.slope), 0.125, rtol=1e-6)
  np.testing.assert_allclose(float(state.slope_at_zero), -0.25, rtol=1e-6)


def test_gols_i_matches_the_chained_scale_by_form():
  """``gols_i`` without ``grad`` equals ``chain(scale(-1), scale_by_gols_i)`` with it."""

  def run(opt, pass_grad):
    params, batch = init_mlp(0), regression_batch(0)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
      g = jax.grad(mlp_loss)(params, batch)
      kw = {"grad": g} if pass_grad else {}
      updates, state = opt.update(g, state, params, **kw)
      return optax.apply_updates(params, updates), state

    for _ in range(12):
      params, state = step(params, state)
    return params, state

  kwargs = {"init_step_size": 0.1}
  p1, s1 = run(optax_ls.gols_i(**kwargs), False)
  p2, s2 = run(optax.chain(optax.scale(-1.0), optax_ls.scale_by_gols_i(**kwargs)), True)
  chex.assert_trees_all_close(p1, p2, rtol=1e-6, atol=1e-7)
  assert int(s1.num_searches) == int(s2[1].num_searches) >= 2


def test_trains_on_new_mini_batches():
  """Each call on a new batch of a noisy regression: the full-batch loss drops."""
  batches = [regression_batch(seed) for seed in range(8)]
  full = {k: jnp.concatenate([b[k] for b in batches]) for k in batches[0]}
  opt = optax_ls.gols_i(init_step_size=0.1)

  @jax.jit
  def step(params, state, batch):
    g = jax.grad(mlp_loss)(params, batch)
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state

  params = init_mlp(0)
  state = opt.init(params)
  before = float(mlp_loss(params, full))
  for t in range(80):
    params, state = step(params, state, batches[t % len(batches)])
  assert float(mlp_loss(params, full)) < 0.5 * before
  assert int(state.num_searches) >= 10 and int(state.num_failed) == 0
