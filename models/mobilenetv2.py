"""MobileNetV2 (Sandler et al., 2018), CIFAR variant.

Inverted residual blocks: a 1x1 expansion to ``t`` times the input channels (left out when
``t = 1``), a 3x3 depthwise convolution, a linear 1x1 projection, each followed by BatchNorm (ReLU6
after the first two); the input is added when the stride is 1 and the channels are unchanged.
Then a 1x1 convolution to 1280 channels, BN, ReLU6, global average pooling, ``Dense``.

The CIFAR variant, as commonly adapted for 32x32 images, has a stride-1 stem and a stride-1 second
stage (the ImageNet network's first two downsamplings), leaving three (32 -> 4). Strides do not
change the parameter count: 2,236,682 for 10 classes (2.24M). With the published rows and 1000
classes the same code counts 3,504,872, torchvision's figure for the ImageNet network (the paper's
Table 4 gives 3.4M).

References:
  Sandler, Howard, Zhu, Zhmoginov, Chen, *MobileNetV2: Inverted Residuals and Linear
  Bottlenecks*, CVPR 2018, https://arxiv.org/abs/1801.04381
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import ModuleDef, batch_norm, conv_no_bias

CIFAR_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
"""Rows ``(t, c, n, s)`` of the paper's Table 2 (expansion, channels, blocks, first stride), with
the second stage's stride 2 -> 1 for 32x32 images."""

IMAGENET_STAGES: tuple[tuple[int, int, int, int], ...] = (
    CIFAR_STAGES[0],
    (6, 24, 2, 2),
    *CIFAR_STAGES[2:],
)
"""Rows ``(t, c, n, s)`` of the paper's Table 2 as published (ImageNet, with ``stem_strides=2``)."""


class InvertedResidual(nn.Module):
  """The inverted residual block with a linear bottleneck.

  Attributes:
    features: output channels.
    expansion: the expansion factor ``t`` (no expansion convolution when 1).
    conv: the convolution partial (no bias).
    norm: the BatchNorm partial.
    act: the activation (ReLU6).
    strides: stride of the depthwise convolution.
  """

  features: int
  expansion: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable[[jax.Array], jax.Array]
  strides: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps ``[batch, h, w, c]`` to ``[batch, h / strides, w / strides, features]``."""
    hidden = x.shape[-1] * self.expansion
    y = x
    if self.expansion != 1:
      y = self.act(self.norm()(self.conv(hidden, (1, 1), padding=0)(y)))
    y = self.conv(hidden, (3, 3), self.strides, padding=1, feature_group_count=hidden)(y)
    y = self.act(self.norm()(y))
    y = self.norm()(self.conv(self.features, (1, 1), padding=0)(y))
    if self.strides == 1 and x.shape[-1] == self.features:
      y = x + y
    return y


class MobileNetV2(nn.Module):
  """MobileNetV2 (width multiplier 1), by default the CIFAR variant.

  A 3x3 stem convolution to 32 channels, then for each row ``(t, c, n, s)`` of ``stages`` a
  sequence of ``n`` inverted residual blocks with ``c`` output channels, the first with stride
  ``s``. A block entered with ``c_in`` channels expands to ``t * c_in`` (1x1), filters each
  channel alone (3x3 depthwise, with the stride), then projects linearly to ``c`` (1x1, no
  activation): ``c_in * t c_in + 9 t c_in + t c_in * c`` weights (plus BatchNorm; no first
  term when ``t = 1``), against ``9 c_in * c`` for a dense 3x3 convolution. Then a 1x1
  convolution to 1280 channels, pooling and ``Dense``. With :data:`CIFAR_STAGES` a
  ``[n, 32, 32, 3]`` batch reaches the last 1x1 convolution as ``[n, 4, 4, 320]``.

  The paper's network: no projection on shortcuts that would change shape (some CIFAR ports add a
  1x1 convolution there, 2,296,922 parameters for 10 classes) and ReLU6.

  Attributes:
    num_classes: number of output logits.
    stages: the ``(t, c, n, s)`` rows; :data:`CIFAR_STAGES` or :data:`IMAGENET_STAGES`.
    stem_strides: stride of the 3x3 stem convolution (1 for CIFAR, 2 for ImageNet).
    dtype: the computation dtype (parameters stay float32).
    act: the activation.
    conv: the convolution module.

  Example:
    >>> from models import count_params
    >>> from models.mobilenetv2 import IMAGENET_STAGES, MobileNetV2
    >>> count_params(MobileNetV2(), (1, 32, 32, 3))
    2236682
    >>> imagenet = MobileNetV2(num_classes=1000, stages=IMAGENET_STAGES, stem_strides=2)
    >>> imagenet.stages[1], imagenet.stem_strides
    ((6, 24, 2, 2), 2)

  References:
    Sandler, Howard, Zhu, Zhmoginov, Chen, *MobileNetV2: Inverted Residuals and Linear
    Bottlenecks*, CVPR 2018, https://arxiv.org/abs/1801.04381 (Sec. 3-4: inverted residuals and
    linear bottlenecks; Table 1: the block; Table 2: the network).
  """

  num_classes: int = 10
  stages: Sequence[tuple[int, int, int, int]] = CIFAR_STAGES
  stem_strides: int = 1
  dtype: Any = jnp.float32
  act: Callable[[jax.Array], jax.Array] = nn.relu6
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    """Maps images ``[batch, h, w, c]`` to logits ``[batch, num_classes]``.

    Args:
      x: a batch of images, NHWC.
      train: use and update the batch statistics (``mutable=['batch_stats']``), else use them.

    Returns:
      The logits, in ``dtype``.
    """
    conv = conv_no_bias(self.conv, self.dtype)
    norm = batch_norm(train, self.dtype)
    x = conv(32, (3, 3), self.stem_strides, padding=1, name="conv_init")(x)
    x = self.act(norm(name="bn_init")(x))
    for expansion, features, num_blocks, strides in self.stages:
      for j in range(num_blocks):
        x = InvertedResidual(
            features,
            expansion,
            conv=conv,
            norm=norm,
            act=self.act,
            strides=strides if j == 0 else 1,
        )(x)
    x = conv(1280, (1, 1), padding=0, name="conv_final")(x)
    x = self.act(norm(name="bn_final")(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x)
