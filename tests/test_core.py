"""The in-call search core on one-dimensional landscapes (independent of any method)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optax_ls import _core

MAX_EVALS, MIN_STEP, MAX_STEP, BETA, C = 30, 1e-4, 50.0, 0.7, 0.2


@functools.partial(jax.jit, static_argnames="enabled")
def _search(first, f0, slope, curvature, nan_above, enabled=True):
  """Armijo search on ``f(eta) = f0 + slope*eta + curvature*eta**2/2``, NaN above ``nan_above``."""

  def trial_value(eta):
    value = f0 + slope * eta + 0.5 * curvature * eta**2
    return jnp.where(eta > nan_above, jnp.nan, value)

  return _core.backtracking_search(
      trial_value,
      _core.armijo_rule(f0, slope, C, BETA),
      first,
      max_evals=MAX_EVALS,
      min_step_size=MIN_STEP,
      max_step_size=MAX_STEP,
      enabled=enabled,
  )


def _value(eta, f0, slope, curvature, nan_above):
  # The search compares in float32.
  if np.float32(eta) > np.float32(nan_above):
    return np.nan
  return f0 + slope * eta + 0.5 * curvature * eta**2


@settings(max_examples=200, deadline=None)
@given(
    first=st.floats(MIN_STEP, MAX_STEP),
    f0=st.floats(-10.0, 10.0),
    slope=st.floats(-10.0, -1e-3),
    curvature=st.floats(-1.0, 1e3),
    nan_above=st.floats(1e-3, 100.0),
)
def test_armijo_search_properties(first, f0, slope, curvature, nan_above):
  r = _search(first, f0, slope, curvature, nan_above)
  k, eta = int(r.num_evals), float(r.step_size)
  assert 1 <= k <= MAX_EVALS
  np.testing.assert_allclose(eta, first * BETA ** (k - 1), rtol=1e-4)
  assert MIN_STEP * (1 - 1e-6) <= eta <= MAX_STEP * (1 + 1e-6)  # float32 bounds
  tol = 1e-4 * (1 + abs(f0) + abs(slope * eta))
  value = _value(eta, f0, slope, curvature, nan_above)
  if bool(r.accepted):
    assert np.isfinite(value) and value <= f0 + C * eta * slope + tol
    assert float(r.next_step_size) == float(r.step_size)
  else:
    # Stopped by the budget or because the next trial would fall below the minimum.
    assert k == MAX_EVALS or float(r.next_step_size) < MIN_STEP
    assert not np.isfinite(value) or value > f0 + C * eta * slope - tol
  if k > 1:  # the trial before the last one failed
    prev = eta / BETA
    prev_value = _value(prev, f0, slope, curvature, nan_above)
    assert not np.isfinite(prev_value) or prev_value > f0 + C * prev * slope - tol


def test_disabled_search_runs_no_trial():
  r = _search(1.0, 0.0, -1.0, 1.0, 10.0, enabled=False)
  assert int(r.num_evals) == 0 and not bool(r.accepted)
  assert float(r.fallback_step_size) == 0.0


def test_goldstein_rule_grows_short_steps_and_accepts_at_the_bound():
  # A linear landscape: every step has sufficient decrease and is "too short".
  rule = _core.goldstein_rule(0.0, -1.0, 0.25, 0.5, 2.0, 8.0)
  accept, next_eta, decrease = rule(jnp.float32(1.0), jnp.float32(-1.0))
  assert not bool(accept) and bool(decrease) and float(next_eta) == 2.0
  accept, _, _ = rule(jnp.float32(8.0), jnp.float32(-8.0))
  assert bool(accept)
  # Too long (no sufficient decrease): shrink.
  accept, next_eta, decrease = rule(jnp.float32(1.0), jnp.float32(0.5))
  assert not bool(accept) and not bool(decrease) and float(next_eta) == 0.5


def test_fewer_than_one_trial_is_rejected_before_tracing():
  with pytest.raises(ValueError, match="max_evals must be at least 1"):
    _core.backtracking_search(
        lambda eta: eta, _core.armijo_rule(0.0, -1.0, C, BETA), 1.0,
        max_evals=0, min_step_size=MIN_STEP, max_step_size=MAX_STEP,
    )
