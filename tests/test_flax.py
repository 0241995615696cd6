"""optax_ls methods inside flax's ``nnx.Optimizer``, which forwards keyword arguments."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

from tests.method_registry import METHODS, Method


class _Regressor(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(4, 8, rngs=rngs)
    self.out = nnx.Linear(8, 1, rngs=rngs)

  def __call__(self, x):
    return self.out(jnp.tanh(self.hidden(x)))[:, 0]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_nnx_optimizer_forwards_value_fn(method: Method):
  model = _Regressor(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, method.make(), wrt=nnx.Param)
  x = jnp.linspace(-1.0, 1.0, 32).reshape(8, 4)
  y = jnp.sin(3.0 * x[:, 0])

  @nnx.jit
  def train_step(model, optimizer, x, y):
    def loss_fn(model):
      return jnp.mean((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)

    def value_fn(params):  # the loss as a function of the parameters alone
      return loss_fn(nnx.merge(graphdef, params, rest))

    extra = {}
    if method.update_kwargs is not None:  # the registry's kwargs take (loss_fn, batch)
      extra = method.update_kwargs(lambda p, _: value_fn(p), None)
    optimizer.update(model, grads, value=loss, grad=grads, value_fn=value_fn, **extra)
    return loss

  losses = [float(train_step(model, optimizer, x, y)) for _ in range(30)]
  assert losses[-1] < 0.5 * losses[0]
  rates = jax.tree.leaves(optax.tree.get(optimizer.opt_state, "learning_rate"))
  assert rates and all(float(r[...]) > 0 for r in rates)
