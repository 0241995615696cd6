"""A multilayer perceptron classifier."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
  """A multilayer perceptron: flatten, ``Dense`` + ReLU hidden layers, ``Dense`` logits.

  Attributes:
    features: the widths of the hidden layers, in order (empty for a linear model).
    num_classes: the number of output logits.
  """

  features: Sequence[int]
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps a batch ``x`` of shape ``[batch, ...]`` to logits of shape ``[batch, num_classes]``."""
    x = x.reshape((x.shape[0], -1))
    for width in self.features:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)
