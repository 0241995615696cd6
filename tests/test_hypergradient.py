"""SGD-HD: the hypergradient rule against NumPy, its sign, the optional floor."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optax_ls
from optax_ls import _core


def _sequence(seed: int, steps: int) -> list[dict[str, np.ndarray]]:
  rng = np.random.default_rng(seed)
  return [{"a": rng.normal(size=3), "b": rng.normal(size=(2, 2)) * (t % 4 != 3)}
          for t in range(steps)]


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(tree[k]) for k in sorted(tree)]).astype(np.float64)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), beta=st.sampled_from([1e-3, 0.05, 0.5]))
def test_sgd_hd_rate_follows_eq_2_49(seed: int, beta: float):
  """alpha_t = alpha_{t-1} + beta <g_t, g_{t-1}> and w -= alpha_t g_t, in float64."""
  seq = _sequence(seed, 12)
  opt = optax_ls.sgd_hd(init_learning_rate=0.01, beta=beta)
  params = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
  state = opt.init(params)
  alpha, g_prev = 0.01, np.zeros(7)
  for g in seq:
    updates, state = opt.update(jax.tree.map(jnp.asarray, g), state, params)
    alpha += beta * (_flat(g) @ g_prev)  # may go negative: the paper's unbounded rule
    g_prev = _flat(g)
    np.testing.assert_allclose(float(state.learning_rate), alpha, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_flat(updates), -alpha * _flat(g), rtol=1e-5, atol=1e-6)


def test_hypergradient_uses_grad_and_the_previous_direction():
  """scale_by_hypergradient on a momentum direction: alpha_t = alpha_{t-1} - beta <g_t, d_{t-1}>."""
  seq = _sequence(3, 10)
  beta = 0.05
  opt = optax.chain(optax.trace(0.5), optax.scale(-1.0),
                    optax_ls.scale_by_hypergradient(init_learning_rate=0.02, beta=beta))
  params = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
  state = opt.init(params)
  alpha, momentum, d_prev = 0.02, np.zeros(7), np.zeros(7)
  for g in seq:
    g_tree = jax.tree.map(jnp.asarray, g)
    updates, state = opt.update(g_tree, state, params, grad=g_tree)
    momentum = _flat(g) + 0.5 * momentum
    alpha -= beta * (_flat(g) @ d_prev)
    d_prev = -momentum
    np.testing.assert_allclose(float(optax.tree.get(state, "learning_rate")), alpha, rtol=1e-5)
    np.testing.assert_allclose(_flat(updates), alpha * d_prev, rtol=1e-5, atol=1e-6)


def test_rate_grows_while_gradients_agree_and_shrinks_when_they_flip():
  opt = optax_ls.sgd_hd(init_learning_rate=0.1, beta=0.01)
  params = jnp.zeros(2)
  state = opt.init(params)
  rates = []
  for g in ([1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]):
    _, state = opt.update(jnp.asarray(g), state, params)
    rates.append(float(state.learning_rate))
  assert rates[0] == pytest.approx(0.1)  # no previous direction yet
  assert rates[0] < rates[1] < rates[2] and rates[3] < rates[2]


@pytest.mark.parametrize("floor", [None, 0.0, 0.05])
def test_optional_floor_on_the_rate(floor):
  """Alternating gradients drive the rate down: below zero without a floor, else to the floor."""
  opt = optax_ls.sgd_hd(init_learning_rate=0.1, beta=0.1, min_learning_rate=floor)
  params = jnp.zeros(2)
  state = opt.init(params)
  for t in range(6):
    _, state = opt.update(jnp.asarray([1.0, 1.0]) * (-1.0) ** t, state, params)
  rate = float(state.learning_rate)
  if floor is None:
    assert rate == pytest.approx(0.1 - 5 * 0.1 * 2.0)  # the paper's rule: negative
  else:
    assert rate == pytest.approx(floor)


def test_nonfinite_gradient_keeps_rate_and_previous_direction():
  opt = optax_ls.sgd_hd(init_learning_rate=0.1, beta=0.1)
  params = jnp.zeros(2)
  state = opt.init(params)
  _, state = opt.update(jnp.asarray([1.0, 2.0]), state, params)
  for bad in (jnp.nan, jnp.inf):
    g = jnp.asarray([bad, 2.0])
    for kwargs in ({}, {"grad": g}, {"grad": jnp.ones(2)}):
      updates, new_state = opt.update(g, state, params, **kwargs)
      assert float(jnp.abs(updates).max()) == 0.0
      assert int(new_state.no_step_count) == 1
      assert int(new_state.no_step_reason) == _core.NON_FINITE
      kept = new_state._replace(no_step_count=state.no_step_count,
                                no_step_reason=state.no_step_reason)
      jax.tree.map(np.testing.assert_array_equal, kept, state)
