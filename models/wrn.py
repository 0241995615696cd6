"""Wide residual networks (Zagoruyko & Komodakis, 2016) for CIFAR.

WRN-``depth``-``width``: a 3x3 convolution to 16 channels, three groups of ``(depth - 4) / 6``
pre-activation blocks of ``16 * width``, ``32 * width``, ``64 * width`` channels (the last two
groups halve the resolution), BN, ReLU, global average pooling, ``Dense``.

``WRN16_4``: 2,748,890 parameters for 10 classes (published 2.7M), 2,772,020 for 100 classes.

References:
  Zagoruyko, Komodakis, *Wide Residual Networks*, BMVC 2016, https://arxiv.org/abs/1605.07146
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import ModuleDef, batch_norm, check_rate, conv_no_bias, dropout


class WideResNetBlock(nn.Module):
  """The pre-activation block: BN, act, 3x3 conv, BN, act, dropout, 3x3 conv, plus the shortcut.

  When the shape changes, the shortcut is a 1x1 convolution (with the stride, no BatchNorm) of the
  pre-activated input, as in the authors' code; otherwise the identity.

  Attributes:
    filters: output channels.
    conv: the convolution partial (no bias).
    norm: the BatchNorm partial.
    dropout: the Dropout partial (applied between the two convolutions).
    act: the activation.
    strides: stride of the first convolution (and of the shortcut).
  """

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  dropout: ModuleDef
  act: Callable[[jax.Array], jax.Array]
  strides: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps ``[batch, h, w, c]`` to ``[batch, h / strides, w / strides, filters]``."""
    activated = self.act(self.norm()(x))
    y = self.conv(self.filters, (3, 3), self.strides, padding=1)(activated)
    y = self.dropout()(self.act(self.norm()(y)))
    y = self.conv(self.filters, (3, 3), padding=1)(y)
    if x.shape != y.shape:
      x = self.conv(self.filters, (1, 1), self.strides, padding=0, name="conv_proj")(activated)
    return x + y


class WideResNet(nn.Module):
  """WRN-``depth``-``width`` for CIFAR (Zagoruyko & Komodakis, 2016).

  ``depth = 6 n + 4``: three groups of ``n`` pre-activation blocks (two 3x3 convolutions each),
  plus the stem, the two 1x1 shortcut convolutions and the classifier. Group ``i`` has
  ``16 * width * 2**i`` channels; an ``[b, 32, 32, 3]`` batch leaves the groups as
  ``[b, 32, 32, 16 k]``, ``[b, 16, 16, 32 k]`` and ``[b, 8, 8, 64 k]`` (``k = width``) before
  BN, ReLU, pooling and ``Dense``. Widening multiplies the parameters of the blocks by about
  ``k**2``: WRN-16-4 has 2.7M against 0.18M for WRN-16-1.

  No zero-initialised BatchNorm option: in a pre-activation block the last BatchNorm feeds a ReLU,
  and a zero scale and bias would leave the branch at ReLU's kink, where it gets no gradient.

  Attributes:
    depth: total depth ``6 n + 4`` (``n`` blocks per group).
    width: the widening factor ``k``.
    num_classes: number of output logits.
    dropout_rate: dropout between the two convolutions of each block (the paper's 0.3 on some
      runs; 0 by default). Uses the ``'dropout'`` rng only when ``train`` and the rate is positive.
    dtype: the computation dtype (parameters stay float32).
    act: the activation.
    conv: the convolution module.

  Example:
    >>> from models import count_params
    >>> from models.wrn import WRN16_4
    >>> count_params(WRN16_4(num_classes=100), (1, 32, 32, 3))
    2772020

  References:
    Zagoruyko, Komodakis, *Wide Residual Networks*, BMVC 2016, https://arxiv.org/abs/1605.07146
    (Sec. 2: the block and the widening factor; Table 1: the network).

    He, Zhang, Ren, Sun, *Identity Mappings in Deep Residual Networks*, ECCV 2016,
    https://arxiv.org/abs/1603.05027 (the pre-activation block).
  """

  depth: int
  width: int
  num_classes: int = 10
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  act: Callable[[jax.Array], jax.Array] = nn.relu
  conv: ModuleDef = nn.Conv

  def __post_init__(self) -> None:
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f"depth must be 6 n + 4 with n >= 1, got {self.depth}.")
    if self.width < 1:
      raise ValueError(f"width must be a positive integer, got {self.width}.")
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
    x = conv(16, (3, 3), padding=1, name="conv_init")(x)
    for i in range(3):
      for j in range((self.depth - 4) // 6):
        x = WideResNetBlock(
            16 * self.width * 2**i,
            conv=conv,
            norm=norm,
            dropout=drop,
            act=self.act,
            strides=2 if i > 0 and j == 0 else 1,
        )(x)
    x = self.act(norm(name="bn_final")(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x)


WRN16_4 = functools.partial(WideResNet, depth=16, width=4)
"""WRN-16-4: 2,748,890 parameters for 10 classes (2.7M), 2,772,020 for 100 classes (2.77M)."""
