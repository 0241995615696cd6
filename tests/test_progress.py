"""Each silent way of making no progress is visible: a state flag, a warning, an error or a NaN.

The per-method bookkeeping (every method's ``no_step_count`` / ``no_step_reason``) is in the
common suite; here the scenarios a user meets, one per test.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import optax
import pytest

import optax_ls
from optax_ls import _core
from tests.method_registry import METHODS


def _quadratic(w):
  return jnp.sum((w - 3.0) ** 2)


def _steps(opt, w, n, *, value=None, grad=True, **kwargs):
  state = opt.init(w)

  @jax.jit
  def step(w, state):
    loss, g = jax.value_and_grad(_quadratic)(w)
    extra = {"grad": g} if grad else {}
    updates, state = opt.update(g, state, w, value=loss if value is None else value,
                                value_fn=_quadratic, **extra, **kwargs)
    return optax.apply_updates(w, updates), state, updates

  for _ in range(n):
    w, state, updates = step(w, state)
  return w, state, updates


def test_an_ascent_direction_is_flagged_and_warned():
  # optax.scale_by_adam() before scale_by_sls without optax.scale(-1): Adam's direction climbs.
  opt = optax.chain(optax.scale_by_adam(), optax_ls.scale_by_sls(reset_option=0))
  w0 = jnp.zeros(3)
  w, state, updates = _steps(opt, w0, 4)
  sls_state = state[1]
  assert int(sls_state.no_step_count) == 4
  assert int(sls_state.no_step_reason) == _core.NOT_DESCENT
  assert int(sls_state.num_evals) == 0  # no trial budget spent on a climbing direction
  assert bool(jnp.all(w == w0)) and bool(jnp.all(updates == 0))
  with pytest.warns(optax_ls.NoProgressWarning, match=r"4 update\(s\) in a row made no step: "
                                                      r"not a descent direction"):
    found = optax_ls.check_progress(state)
  assert found == [optax_ls.NoProgress("[1]", 4, optax_ls.NO_STEP_REASONS[_core.NOT_DESCENT])]
  assert optax_ls.check_progress(state, patience=5, warn=False) == []
  # With the sign fixed, it moves and the flag clears.
  fixed = optax.chain(optax.scale_by_adam(), optax.scale(-1.0),
                      optax_ls.scale_by_sls(reset_option=0))
  _, state, _ = _steps(fixed, w0, 2)
  assert int(state[2].no_step_count) == 0 and int(state[2].no_step_reason) == 0
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert optax_ls.check_progress(state) == []


def test_an_invalid_injected_hyperparameter_runs_no_search_and_is_flagged():
  # init checks the injected values; one set in the state later (a schedule, a typo) is a
  # traced value under jit: c = 1.5 can never hold on a convex loss, and used to run the whole
  # trial budget on every update without a step.
  opt = optax.inject_hyperparams(optax_ls.sls)(c=0.1, reset_option=0)
  with pytest.raises(ValueError, match="`c` must be in"):
    optax.inject_hyperparams(optax_ls.sls)(c=1.5, reset_option=0).init(jnp.zeros(3))
  w0 = jnp.zeros(3)
  state = opt.init(w0)
  state.hyperparams["c"] = jnp.asarray(1.5)

  @jax.jit
  def step(w, state):
    loss, g = jax.value_and_grad(_quadratic)(w)
    updates, state = opt.update(g, state, w, value=loss, value_fn=_quadratic)
    return optax.apply_updates(w, updates), state

  w = w0
  for _ in range(3):
    w, state = step(w, state)
  inner = state.inner_state
  assert int(inner.num_evals) == 0
  assert int(inner.no_step_count) == 3 and int(inner.no_step_reason) == _core.INVALID
  assert bool(jnp.all(w == w0))
  (found,) = optax_ls.check_progress(state, warn=False)
  assert found.reason == "invalid hyperparameter at run time"
  # Set back to a valid value, it moves and the flag clears.
  state.hyperparams["c"] = jnp.asarray(0.1)
  w, state = step(w, state)
  assert int(state.inner_state.no_step_count) == 0 and float(jnp.abs(w - w0).sum()) > 0


def test_a_non_finite_loss_is_flagged_and_counted_by_apply_if_finite():
  w0 = jnp.zeros(3)
  _, state, updates = _steps(optax_ls.sls(reset_option=0), w0, 2, value=jnp.nan)
  assert bool(jnp.all(updates == 0))
  assert int(state.no_step_count) == 2 and int(state.no_step_reason) == _core.NON_FINITE
  # Chained before optax.apply_if_finite, nonfinite_value_to_nan lets it count them.
  opt = optax.chain(optax_ls.nonfinite_value_to_nan(),
                    optax.apply_if_finite(optax_ls.sls(reset_option=0), 5))
  w, state, updates = _steps(opt, w0, 3, value=jnp.inf)
  assert int(state[1].notfinite_count) == 3 and int(state[1].total_notfinite) == 3
  assert bool(jnp.all(updates == 0)) and bool(jnp.all(w == w0))
  # A finite loss passes through untouched: the same updates as sls alone.
  _, _, plain = _steps(optax_ls.sls(reset_option=0), w0, 1)
  _, state, chained = _steps(opt, w0, 1)
  assert bool(jnp.all(plain == chained)) and int(state[1].notfinite_count) == 0
  with pytest.raises(ValueError, match="value="):
    optax_ls.nonfinite_value_to_nan().update(w0, optax.EmptyState(), w0)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_integer_parameters_are_rejected_at_init(method):
  opt = method.factory(**method.kwargs)
  with pytest.raises(TypeError, match=r"\['w'\] has dtype int32.*floating point"):
    opt.init({"w": jnp.ones(3, jnp.int32), "b": jnp.zeros(2)})
  opt.init({"w": jnp.ones(3, jnp.bfloat16), "b": jnp.zeros(2)})  # any float dtype is fine


def test_check_progress_errors():
  with pytest.raises(ValueError, match="patience"):
    optax_ls.check_progress(optax_ls.sls(reset_option=0).init(jnp.zeros(2)), patience=0)
  with pytest.raises(ValueError, match="no optax_ls method"):
    optax_ls.check_progress(optax.adam(1e-3).init(jnp.zeros(2)))
