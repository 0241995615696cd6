"""A multilayer perceptron classifier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
  """A multilayer perceptron: flatten, ``Dense`` + ReLU hidden layers, ``Dense`` logits.

  The MNIST networks of the papers are ``MLP(features=(1000,), num_classes=10)`` (one hidden
  layer of 1000, 795,010 parameters) and ``MLP(features=(512, 512), num_classes=10)`` (669,706).

  Attributes:
    features: the widths of the hidden layers, in order (empty for a linear model).
    num_classes: the number of output logits.
    dtype: the computation dtype (parameters stay float32).

  Example:
    >>> from models import count_params
    >>> count_params(MLP(features=(1000,), num_classes=10), (1, 28, 28, 1))
    795010
  """

  features: Sequence[int]
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    """Maps a batch ``x`` of shape ``[batch, ...]`` to logits of shape ``[batch, num_classes]``.

    ``train`` is accepted for a common interface with the other models and ignored (no
    BatchNorm, no dropout).
    """
    del train
    x = x.reshape((x.shape[0], -1))
    for width in self.features:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x)
