"""Small deterministic problems shared by the tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def regression_batch(seed: int = 0, n: int = 64, dim: int = 8, noise: float = 0.1):
  """A mini-batch ``{'x', 'y'}`` of a noisy non-linear regression problem."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, dim)).astype(np.float32)
  w_true = np.linspace(-1.0, 1.0, dim).astype(np.float32)
  y = np.tanh(x @ w_true) + noise * rng.normal(size=n).astype(np.float32)
  return {"x": jnp.asarray(x), "y": jnp.asarray(y, jnp.float32)}


def init_mlp(seed: int = 0, dim: int = 8, hidden: int = 16, dtype=jnp.float32):
  """Parameters of a one-hidden-layer tanh network."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return {
      "w1": (jax.random.normal(k1, (dim, hidden)) / np.sqrt(dim)).astype(dtype),
      "b1": jnp.zeros((hidden,), dtype),
      "w2": (jax.random.normal(k2, (hidden,)) / np.sqrt(hidden)).astype(dtype),
      "b2": jnp.zeros((), dtype),
  }


def mlp_loss(params, batch):
  """Mean squared error of the tanh network, computed in float32."""
  p = jax.tree.map(lambda a: a.astype(jnp.float32), params)
  h = jnp.tanh(batch["x"] @ p["w1"] + p["b1"])
  pred = h @ p["w2"] + p["b2"]
  return jnp.mean((pred - batch["y"]) ** 2)


def make_step(opt, loss_fn=mlp_loss, pass_grad: bool = True, update_kwargs=None):
  """The train step every test uses: value_and_grad, update, apply.

  ``update_kwargs(loss_fn, batch) -> dict`` adds keyword arguments to
  ``update`` (e.g. the ``metric_fn`` of a search on a metric).
  """

  def step(params, state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    extra = {"grad": grads} if pass_grad else {}
    if update_kwargs is not None:
      extra.update(update_kwargs(loss_fn, batch))
    updates, state = opt.update(
        grads, state, params, value=loss, value_fn=lambda p: loss_fn(p, batch), **extra
    )
    return optax.apply_updates(params, updates), state, loss

  return step
