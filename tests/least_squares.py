"""Mini-batch least squares, in float32 for JAX and float64 for NumPy.

Shared by the property tests that replay a search in NumPy (SLS, SaLSa).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

N, DIM, BATCH = 256, 10, 32
BATCHES_PER_EPOCH = N // BATCH


def least_squares_data(seed: int, n: int = N, dim: int = DIM, noise: float = 0.3):
  """``(a, y)`` in float32, with ill-conditioned columns and noisy targets."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(n, dim)) * np.linspace(0.5, 3.0, dim)  # ill-conditioned columns
  y = a @ rng.normal(size=dim) + noise * rng.normal(size=n)
  return a.astype(np.float32), y.astype(np.float32)


def ls_loss(w, x, y):
  return 0.5 * jnp.mean((x @ w - y) ** 2)


def np_loss(w, x, y):
  return 0.5 * np.mean((x @ w - y) ** 2)


def np_grad(w, x, y):
  return x.T @ (x @ w - y) / len(y)


def batch(a, y, t):
  """The ``t``-th mini-batch of an epoch of ``BATCHES_PER_EPOCH`` batches, cycled."""
  i = (t % BATCHES_PER_EPOCH) * BATCH
  return a[i : i + BATCH], y[i : i + BATCH]
