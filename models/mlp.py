"""A multilayer perceptron classifier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
  r"""A multilayer perceptron: flatten, ``Dense`` + ReLU hidden layers, ``Dense`` logits.

  With :math:`x` flattened to :math:`d_0` features, hidden widths :math:`d_1, \dots, d_{L-1}`
  (``features``) and :math:`d_L` = ``num_classes``, the network is
  :math:`h_0 = x`, :math:`h_\ell = \mathrm{relu}(W_\ell h_{\ell-1} + b_\ell)` for
  :math:`\ell < L`, logits :math:`W_L h_{L-1} + b_L`; it has
  :math:`\sum_{\ell=1}^{L} (d_{\ell-1} + 1)\, d_\ell` parameters. Weights are initialised
  with flax's defaults (LeCun normal kernels, zero biases).

  The MNIST network of Vaswani et al. (2019), which the TLR paper reuses, is
  ``MLP(features=(1000,), num_classes=10)``: one hidden layer of 1000, 795,010 parameters. The
  harness's ``mnist_subset_mlp`` trains ``MLP(features=(512, 512), num_classes=10)`` (669,706).

  Attributes:
    features: the widths of the hidden layers, in order (empty for a linear model).
    num_classes: the number of output logits.
    dtype: the computation dtype (parameters stay float32).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from models import count_params
    >>> count_params(MLP(features=(1000,), num_classes=10), (1, 28, 28, 1))
    795010
    >>> model = MLP(features=(16,), num_classes=10)
    >>> x = jnp.zeros((5, 8, 8, 1))
    >>> logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
    >>> logits.shape, sorted(variables), variables["params"]["Dense_0"]["kernel"].shape
    ((5, 10), ['params'], (64, 16))

  References:
    Rumelhart, Hinton, Williams, *Learning representations by back-propagating errors*, Nature
    323, 1986 (the multilayer perceptron trained by backpropagation).

    Vaswani, Mishkin, Laradji, Schmidt, Gidel, Lacoste-Julien, *Painless Stochastic Gradient:
    Interpolation, Line-Search, and Convergence Rates*, NeurIPS 2019,
    https://arxiv.org/abs/1905.09997 (the MNIST MLP with one hidden layer of 1000).
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
