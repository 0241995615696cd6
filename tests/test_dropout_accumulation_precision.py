"""Line searches with dropout, gradient accumulation and bfloat16: the objective stays one.

The library side of the transformer workload: a dropout key routed through ``update``'s
keyword arguments gives every trial of one search the same objective; ``accumulate``
evaluates one objective over ``k`` micro-batches (the whole batch's loss); bfloat16
parameters decide in float32.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ls
from optax_ls import _core
from tests.problems import init_mlp, mlp_loss, regression_batch


class _DropoutNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.tanh(nn.Dense(32)(x))
    h = nn.Dropout(0.5, deterministic=not train)(h)
    return nn.Dense(1)(h)[:, 0]


def _dropout_problem():
  batch = regression_batch(3, n=64)
  model = _DropoutNet()
  params = model.init(jax.random.key(0), batch["x"], train=False)["params"]

  def loss_fn(p, dropout_key):
    pred = model.apply({"params": p}, batch["x"], train=True, rngs={"dropout": dropout_key})
    return jnp.mean((pred - batch["y"]) ** 2)

  return params, loss_fn


IN_CALL = {
    "sls": lambda: optax_ls.sls(n_batches_per_epoch=10, init_step_size=10.0),
    "salsa": lambda: optax_ls.salsa(init_step_size=10.0),
    "adam_sls": lambda: optax_ls.adam_sls(n_batches_per_epoch=10, init_step_size=10.0),
    "pal": lambda: optax_ls.pal(),
}


@pytest.mark.parametrize("name", sorted(IN_CALL))
def test_dropout_key_through_update_gives_every_trial_one_objective(name):
  params, loss_fn = _dropout_problem()
  opt = IN_CALL[name]()

  @jax.jit
  def update(key):
    loss, grads = jax.value_and_grad(loss_fn)(params, key)
    updates, state = opt.update(grads, opt.init(params), params, value=loss, grad=grads,
                                value_fn=loss_fn, dropout_key=key)
    return loss, grads, updates, state

  key_a, key_b = jax.random.key(1), jax.random.key(2)
  loss_a, grads_a, updates_a, state_a = update(key_a)
  # The two keys are two different objectives (different masks)...
  assert abs(float(loss_fn(params, key_a) - loss_fn(params, key_b))) > 1e-4
  # ...and one key is one objective: the whole search repeats exactly.
  _, _, updates_again, state_again = update(key_a)
  for u, v in zip(jax.tree.leaves(updates_a), jax.tree.leaves(updates_again), strict=True):
    np.testing.assert_array_equal(u, v)
  assert int(optax.tree.get(state_again, "num_evals")) == int(
      optax.tree.get(state_a, "num_evals"))
  rate = float(optax.tree.get(state_a, "learning_rate"))
  assert rate > 0.0
  new_loss = float(loss_fn(optax.apply_updates(params, updates_a), key_a))
  if name in ("sls", "salsa"):
    # The accepted step meets the Armijo condition on the key's objective: the first search
    # of SaLSa is the plain Armijo condition, with SaLSa's c=0.3 and SLS's c=0.1.
    c = 0.1 if name == "sls" else 0.3
    g2 = float(optax.tree.norm(grads_a, squared=True))
    assert new_loss <= float(loss_a) - c * rate * g2 + 1e-6
  else:
    assert new_loss < float(loss_a)
  # A different key is a different objective: the search takes another step.
  _, _, updates_b, _ = update(key_b)
  assert not all(
      np.array_equal(u, v)
      for u, v in zip(jax.tree.leaves(updates_a), jax.tree.leaves(updates_b), strict=True)
  )


def test_value_fn_missing_the_routed_key_fails_loudly():
  """A value_fn that needs the key but is called without it is Python's TypeError, not NaN."""
  params, loss_fn = _dropout_problem()
  opt = optax_ls.sls(n_batches_per_epoch=10)
  loss, grads = jax.value_and_grad(loss_fn)(params, jax.random.key(0))
  with pytest.raises(TypeError, match="dropout_key"):
    opt.update(grads, opt.init(params), params, value=loss, value_fn=loss_fn)


def _linear_batch(n=48):
  rng = np.random.default_rng(0)
  return {"x": jnp.asarray(rng.normal(size=(n, 8)), jnp.float32),
          "y": jnp.asarray(rng.normal(size=n), jnp.float32)}


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_accumulate_equals_one_batch_of_k_times_the_size(k):
  batch = _linear_batch()
  params = init_mlp(0)
  full_loss, full_grads = jax.value_and_grad(mlp_loss)(params, batch)
  loss, grads = jax.jit(optax_ls.accumulate(jax.value_and_grad(mlp_loss), k))(params, batch)
  np.testing.assert_allclose(loss, full_loss, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(full_grads), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_line_search_on_accumulated_objective_takes_the_full_batch_step():
  """SLS with k micro-batches makes the same decisions as SLS on the whole batch."""
  batch = _linear_batch(64)
  opt = optax_ls.sls(n_batches_per_epoch=4)

  def run(k):
    value_and_grad = optax_ls.accumulate(jax.value_and_grad(mlp_loss), k)

    @jax.jit
    def step(params, state):
      loss, grads = value_and_grad(params, batch)
      value_fn = lambda p: optax_ls.accumulate(mlp_loss, k)(p, batch)  # noqa: E731
      updates, state = opt.update(grads, state, params, value=loss, value_fn=value_fn)
      return optax.apply_updates(params, updates), state

    params = init_mlp(1)
    state = opt.init(params)
    rates, evals = [], []
    for _ in range(12):
      params, state = step(params, state)
      rates.append(float(optax.tree.get(state, "learning_rate")))
      evals.append(int(optax.tree.get(state, "num_evals")))
    return params, rates, evals

  full_params, full_rates, full_evals = run(1)
  params, rates, evals = run(4)
  assert evals == full_evals
  assert sum(evals) > 12  # the searches backtracked: decisions were compared, not skipped
  np.testing.assert_allclose(rates, full_rates, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(full_params), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_accumulate_scan_keeps_memory_constant_in_k():
  """The compiled step's temporary memory does not grow with the number of micro-batches."""
  # Activations (2048 x 256 floats) far larger than the parameters (32 x 256).
  batch = {"x": jnp.ones((2048, 32), jnp.float32), "y": jnp.ones(2048, jnp.float32)}
  params = {"w1": jnp.ones((32, 256)) / 32, "w2": jnp.ones(256) / 256}

  def loss_fn(p, b):
    return jnp.mean((jnp.tanh(b["x"] @ p["w1"]) @ p["w2"] - b["y"]) ** 2)

  def temp_bytes(k):
    fn = jax.jit(optax_ls.accumulate(jax.value_and_grad(loss_fn), k))
    return fn.lower(params, batch).compile().memory_analysis().temp_size_in_bytes

  micro = temp_bytes(8)
  assert micro <= 0.5 * temp_bytes(1)  # 8 micro-batches of 256 need far less than one of 2048
  assert temp_bytes(64) <= micro  # and 64 micro-batches of 32 no more than 8 of 256


def test_accumulate_rejects_bad_input():
  with pytest.raises(ValueError, match="num_microbatches"):
    optax_ls.accumulate(mlp_loss, 0)
  with pytest.raises(ValueError, match="num_microbatches"):
    optax_ls.accumulate(mlp_loss, 2.0)
  with pytest.raises(ValueError, match="not a multiple"):
    optax_ls.accumulate(mlp_loss, 5)(init_mlp(0), _linear_batch(48))


def test_real_vdot_of_bfloat16_trees_is_computed_in_float32():
  rng = np.random.default_rng(0)
  a = {"w": jnp.asarray(rng.normal(size=4096), jnp.bfloat16),
       "b": jnp.asarray(rng.normal(size=(64, 64)), jnp.bfloat16)}
  exact = sum(float(np.dot(np.asarray(x, np.float64).ravel(), np.asarray(x, np.float64).ravel()))
              for x in jax.tree.leaves(a))
  got = _core.real_vdot(a, a)
  assert got.dtype == jnp.float32
  assert abs(float(got) - exact) <= 1e-5 * exact
  # The products and the sum of a bfloat16 dot product lose far more than that.
  bf16 = sum(float(jnp.vdot(x, x)) for x in jax.tree.leaves(a))
  assert abs(bf16 - exact) > 1e-4 * exact


@pytest.mark.parametrize("name", ["sls", "salsa", "adam_sls", "adam_salsa", "pal"])
def test_bfloat16_parameters_decide_in_float32(name):
  """bfloat16 weights, a float32 loss: every decision is taken on float32 numbers."""
  make = {**IN_CALL, "adam_salsa": lambda: optax_ls.adam_salsa(init_step_size=10.0)}[name]
  opt = make()
  batch = regression_batch(0, n=64)
  params = init_mlp(0, hidden=64, dtype=jnp.bfloat16)
  step = jax.jit(lambda p, s: _step(opt, p, s, batch))
  state = opt.init(params)
  losses = []
  for _ in range(20):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(params))
  rate = optax.tree.get(state, "learning_rate")
  assert rate.dtype == jnp.float32 and float(rate) > 0
  assert losses[-1] < 0.7 * losses[0]
  if name == "sls":
    # The last accepted step meets Armijo with the slope computed in float64 from the
    # bfloat16 gradient, up to float32 rounding of the loss.
    loss, grads = jax.value_and_grad(mlp_loss)(params, batch)
    updates, new_state = opt.update(grads, state, params, value=loss,
                                    value_fn=lambda p: mlp_loss(p, batch))
    eta = float(optax.tree.get(new_state, "learning_rate"))
    g2 = sum(float(np.sum(np.square(np.asarray(g, np.float64)))) for g in jax.tree.leaves(grads))
    new_loss = float(mlp_loss(optax.apply_updates(params, updates), batch))
    if int(optax.tree.get(new_state, "num_evals")) > 0 and not bool(
        optax.tree.get(new_state, "exhausted")):
      # Applying the step rounds the weights to bfloat16 once more: allow that rounding.
      assert new_loss <= float(loss) - 0.1 * eta * g2 + 1e-2 * float(loss)


def _step(opt, params, state, batch):
  loss, grads = jax.value_and_grad(mlp_loss)(params, batch)
  updates, state = opt.update(grads, state, params, value=loss, grad=grads,
                              value_fn=lambda p: mlp_loss(p, batch))
  return optax.apply_updates(params, updates), state, loss
