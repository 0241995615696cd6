"""Densely connected networks (Huang et al., 2017) for CIFAR: DenseNet-40 (k=12), DenseNet-121.

A 3x3 convolution, dense blocks separated by transitions (BN, ReLU, 1x1 convolution, 2x2 average
pooling), then BN, ReLU, global average pooling and ``Dense``. Each layer of a dense block
concatenates ``growth_rate`` new channels to its input: BN, ReLU, 3x3 convolution, preceded in the
bottleneck ("B") form by BN, ReLU, 1x1 convolution to ``4 * growth_rate`` channels. Transitions
keep ``floor(compression * channels)`` channels ("C" when ``compression < 1``).

===================  ========  ===========  ==========  =======================================
alias                classes   parameters   published   source of the published figure
===================  ========  ===========  ==========  =======================================
``DenseNet40``       10        1,019,722    1.0M        Huang et al. 2017, Table 2
``DenseNet121``      10        6,956,298    6.96M       the common CIFAR adaptation
===================  ========  ===========  ==========  =======================================

References:
  Huang, Liu, van der Maaten, Weinberger, *Densely Connected Convolutional Networks*, CVPR 2017,
  https://arxiv.org/abs/1608.06993
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import ModuleDef, batch_norm, check_rate, conv_no_bias, dropout


class DenseLayer(nn.Module):
  """One layer of a dense block: ``growth_rate`` new channels concatenated to the input.

  Attributes:
    growth_rate: channels added (``k``).
    bottleneck: first reduce to ``4 * growth_rate`` channels with BN, act, 1x1 convolution.
    conv: the convolution partial (no bias).
    norm: the BatchNorm partial.
    dropout: the Dropout partial (after each convolution).
    act: the activation.
  """

  growth_rate: int
  bottleneck: bool
  conv: ModuleDef
  norm: ModuleDef
  dropout: ModuleDef
  act: Callable[[jax.Array], jax.Array]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps ``[batch, h, w, c]`` to ``[batch, h, w, c + growth_rate]``."""
    y = x
    if self.bottleneck:
      y = self.conv(4 * self.growth_rate, (1, 1), padding=0)(self.act(self.norm()(y)))
      y = self.dropout()(y)
    y = self.conv(self.growth_rate, (3, 3), padding=1)(self.act(self.norm()(y)))
    y = self.dropout()(y)
    return jnp.concatenate([x, y], axis=-1)


class Transition(nn.Module):
  """Between dense blocks: BN, act, 1x1 convolution to ``features``, dropout, 2x2 average pooling.

  Attributes:
    features: output channels.
    conv: the convolution partial (no bias).
    norm: the BatchNorm partial.
    dropout: the Dropout partial.
    act: the activation.
  """

  features: int
  conv: ModuleDef
  norm: ModuleDef
  dropout: ModuleDef
  act: Callable[[jax.Array], jax.Array]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps ``[batch, h, w, c]`` to ``[batch, h / 2, w / 2, features]``."""
    y = self.conv(self.features, (1, 1), padding=0)(self.act(self.norm()(x)))
    y = self.dropout()(y)
    return nn.avg_pool(y, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
  r"""DenseNet with a CIFAR stem (one 3x3 convolution, stride 1, no pooling).

  Layer :math:`\ell` of a dense block sees the concatenation of all earlier feature maps,
  :math:`x_\ell = H_\ell([x_0, x_1, \dots, x_{\ell-1}])`, and adds :math:`k` = ``growth_rate``
  channels: a block of :math:`L` layers entered with :math:`c` channels leaves with
  :math:`c + L k`. A transition keeps :math:`\lfloor \theta c \rfloor` channels
  (:math:`\theta` = ``compression``) and halves the resolution. So an ``[n, 32, 32, 3]`` batch
  leaves DenseNet-40 (:math:`c_0 = 16`, three blocks of 12 layers, :math:`k = 12`) as
  ``[n, 8, 8, 16 + 3 * 144] = [n, 8, 8, 448]`` before the final BN, ReLU, pooling and ``Dense``.
  The paper's depth counts the convolutions and the classifier: for DenseNet-40, 36 layers in the
  blocks, the stem, 2 transitions and the ``Dense`` layer.

  Attributes:
    growth_rate: channels each layer adds (``k``).
    block_sizes: layers per dense block.
    num_classes: number of output logits.
    bottleneck: use the bottleneck layer (DenseNet-B).
    compression: fraction of channels a transition keeps (``theta``; 1 without compression).
    num_init_features: output channels of the stem (16 in the paper's basic DenseNet, ``2 k`` in
      DenseNet-BC).
    dropout_rate: dropout after each convolution but the stem's (the paper's 0.2 without data
      augmentation; 0 by default). Uses the ``'dropout'`` rng only when ``train`` and positive.
    dtype: the computation dtype (parameters stay float32).
    act: the activation.
    conv: the convolution module.

  Example:
    >>> from models import count_params
    >>> from models.densenet import DenseNet40
    >>> count_params(DenseNet40(), (1, 32, 32, 3))
    1019722

  References:
    Huang, Liu, van der Maaten, Weinberger, *Densely Connected Convolutional Networks*, CVPR 2017,
    https://arxiv.org/abs/1608.06993 (Sec. 3: dense connectivity, growth rate, DenseNet-B and
    -C; Sec. 4: the CIFAR networks, dropout 0.2 without augmentation; Table 2).
  """

  growth_rate: int
  block_sizes: Sequence[int]
  num_classes: int = 10
  bottleneck: bool = False
  compression: float = 1.0
  num_init_features: int = 16
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  act: Callable[[jax.Array], jax.Array] = nn.relu
  conv: ModuleDef = nn.Conv

  def __post_init__(self) -> None:
    if not 0.0 < self.compression <= 1.0:
      raise ValueError(f"compression must be in (0, 1], got {self.compression}.")
    check_rate("dropout_rate", self.dropout_rate)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    """Maps images ``[batch, h, w, c]`` to logits ``[batch, num_classes]``.

    Args:
      x: a batch of images, NHWC.
      train: use and update the batch statistics (``mutable=['batch_stats']``) and apply dropout.

    Returns:
      The logits, in ``dtype``.
    """
    conv = conv_no_bias(self.conv, self.dtype)
    norm = batch_norm(train, self.dtype)
    drop = dropout(self.dropout_rate, train)
    x = conv(self.num_init_features, (3, 3), padding=1, name="conv_init")(x)
    for i, block_size in enumerate(self.block_sizes):
      if i > 0:
        features = math.floor(self.compression * x.shape[-1])
        x = Transition(features, conv=conv, norm=norm, dropout=drop, act=self.act)(x)
      for _ in range(block_size):
        x = DenseLayer(
            self.growth_rate, self.bottleneck, conv=conv, norm=norm, dropout=drop, act=self.act
        )(x)
    x = self.act(norm(name="bn_final")(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x)


DenseNet40 = functools.partial(DenseNet, growth_rate=12, block_sizes=(12, 12, 12))
"""DenseNet (L=40, k=12), no bottleneck or compression (Huang et al. 2017, Table 2): 1,019,722
parameters for 10 classes (published 1.0M)."""

DenseNet121 = functools.partial(
    DenseNet,
    growth_rate=32,
    block_sizes=(6, 12, 24, 16),
    bottleneck=True,
    compression=0.5,
    num_init_features=64,
)
"""DenseNet-121 (BC, k=32, the ImageNet block sizes) with a CIFAR stem: 6,956,298 parameters for
10 classes (6.96M)."""
