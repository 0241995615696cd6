"""ResNet v1 (He et al., 2016): the CIFAR ResNets, ResNet-18/34 with a CIFAR stem, ResNet-50.

One :class:`ResNet` takes its block, stage sizes, stem and shortcut as attributes; the depth
variants are ``functools.partial`` aliases. Parameter counts (the ``params`` collection, BatchNorm
scales and biases included, running statistics not):

===================  ========  ===========  ============  =====================================
alias                classes   parameters   published     source of the published figure
===================  ========  ===========  ============  =====================================
``ResNet20``         10        269,722      0.27M         He et al. 2016, Table 6
``ResNet32``         10        464,154      0.46M         He et al. 2016, Table 6
``ResNet56``         10        853,018      0.85M         He et al. 2016, Table 6
``ResNet18``         10        11,173,962   11.2M         the common CIFAR adaptation
``ResNet34``         10        21,282,122   21.3M         the common CIFAR adaptation
``ResNet50``         1000      25,557,032   25.6M         torchvision's ResNet-50
===================  ========  ===========  ============  =====================================

Convolutions pad symmetrically (``k // 2`` on each side) as in the Torch models, not ``'SAME'``
(which pads a stride-2 3x3 convolution of an even input only at the end).

References:
  He, Zhang, Ren, Sun, *Deep Residual Learning for Image Recognition*, CVPR 2016,
  https://arxiv.org/abs/1512.03385
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import ModuleDef, batch_norm, conv_no_bias

STEMS = ("cifar", "imagenet")
"""``'cifar'``: one 3x3 convolution, stride 1. ``'imagenet'``: 7x7 convolution, stride 2, then
3x3 max-pooling, stride 2."""

SHORTCUTS = ("zero_pad", "projection")
"""How a block's shortcut changes shape: He et al.'s option A (subsample, zero-pad the new
channels; no parameters) or option B (1x1 convolution with stride, then BatchNorm)."""


def _residual_scale_init(zero_init_residual: bool) -> Callable[..., jax.Array]:
  """The last BatchNorm scale's initialiser: zeros (the block starts as its shortcut) or ones."""
  return nn.initializers.zeros_init() if zero_init_residual else nn.initializers.ones_init()


def _shortcut(
    x: jax.Array, features: int, strides: int, kind: str, conv: ModuleDef, norm: ModuleDef
) -> jax.Array:
  """``x`` brought to ``features`` channels and the stride of the residual branch."""
  if x.shape[-1] == features and strides == 1:
    return x
  if kind == "projection":
    x = conv(features, (1, 1), strides, padding=0, name="conv_proj")(x)
    return norm(name="norm_proj")(x)
  x = x[:, ::strides, ::strides, :]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))


class ResNetBlock(nn.Module):
  """The basic block: 3x3 conv, BN, act, 3x3 conv, BN, plus the shortcut, act.

  Attributes:
    filters: output channels.
    conv: the convolution partial (no bias).
    norm: the BatchNorm partial.
    act: the activation.
    strides: stride of the first convolution (and of the shortcut).
    shortcut: one of :data:`SHORTCUTS`, used when the shape changes.
    zero_init_residual: initialise the last BatchNorm scale to zero instead of one.
  """

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable[[jax.Array], jax.Array]
  strides: int = 1
  shortcut: str = "projection"
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps ``[batch, h, w, c]`` to ``[batch, h / strides, w / strides, filters]``."""
    y = self.conv(self.filters, (3, 3), self.strides, padding=1)(x)
    y = self.act(self.norm()(y))
    y = self.conv(self.filters, (3, 3), padding=1)(y)
    y = self.norm(scale_init=_residual_scale_init(self.zero_init_residual))(y)
    residual = _shortcut(x, self.filters, self.strides, self.shortcut, self.conv, self.norm)
    return self.act(residual + y)


class BottleneckResNetBlock(nn.Module):
  """The bottleneck block: 1x1 conv, 3x3 conv (with the stride, "v1.5"), 1x1 conv to 4x ``filters``.

  Attributes:
    filters: channels of the inner convolutions; the block outputs ``4 * filters``.
    conv: the convolution partial (no bias).
    norm: the BatchNorm partial.
    act: the activation.
    strides: stride of the 3x3 convolution (and of the shortcut).
    shortcut: one of :data:`SHORTCUTS`, used when the shape changes.
    zero_init_residual: initialise the last BatchNorm scale to zero instead of one.
  """

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable[[jax.Array], jax.Array]
  strides: int = 1
  shortcut: str = "projection"
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps ``[batch, h, w, c]`` to ``[batch, h / strides, w / strides, 4 * filters]``."""
    y = self.act(self.norm()(self.conv(self.filters, (1, 1), padding=0)(x)))
    y = self.conv(self.filters, (3, 3), self.strides, padding=1)(y)
    y = self.act(self.norm()(y))
    y = self.conv(4 * self.filters, (1, 1), padding=0)(y)
    y = self.norm(scale_init=_residual_scale_init(self.zero_init_residual))(y)
    residual = _shortcut(x, 4 * self.filters, self.strides, self.shortcut, self.conv, self.norm)
    return self.act(residual + y)


class ResNet(nn.Module):
  """ResNet v1: a stem, stages of residual blocks, global average pooling, a ``Dense`` classifier.

  Each block computes ``act(shortcut(x) + F(x))`` with ``F`` two 3x3 convolutions
  (:class:`ResNetBlock`) or a 1x1-3x3-1x1 bottleneck (:class:`BottleneckResNetBlock`), each
  followed by BatchNorm. Stage ``i`` has ``stage_sizes[i]`` blocks of ``num_filters * 2**i``
  filters (times 4 at the output of a bottleneck block); every stage but the first halves the
  resolution in its first block. An ``[n, h, w, c]`` input thus leaves stage ``i`` as
  ``[n, h / (s * 2**i), w / (s * 2**i), num_filters * 2**i]``, with ``s`` = 1 for the CIFAR stem
  and 4 for the ImageNet stem, before pooling to ``[n, channels]`` and the ``Dense`` logits
  ``[n, num_classes]``.

  The CIFAR ResNet-``6n+2`` of He et al. (2016, Section 4.2: ``6n`` convolutions in the blocks,
  plus the stem and the classifier) is ``stage_sizes=(n, n, n)``, ``num_filters=16``,
  ``stem='cifar'``, ``shortcut='zero_pad'`` (their option A, used for all the CIFAR results):
  feature maps 32x32, 16x16 and 8x8 with 16, 32 and 64 channels. ResNet-18/34/50 are the
  four-stage networks of their Table 1.

  The last BatchNorm scale of each block starts at one, as in the paper; ``zero_init_residual``
  starts it at zero (Goyal et al., 2017), so that every block starts as its shortcut.

  Attributes:
    stage_sizes: blocks per stage.
    block_cls: :class:`ResNetBlock` or :class:`BottleneckResNetBlock`.
    num_classes: number of output logits.
    num_filters: filters of the stem and of the first stage.
    stem: one of :data:`STEMS`.
    shortcut: one of :data:`SHORTCUTS`.
    zero_init_residual: initialise the last BatchNorm scale of each block to zero.
    dtype: the computation dtype (parameters stay float32).
    act: the activation.
    conv: the convolution module.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from models import count_params
    >>> from models.resnet import ResNet20
    >>> model = ResNet20(num_classes=10)
    >>> count_params(model, (1, 32, 32, 3))
    269722
    >>> x = jnp.zeros((2, 32, 32, 3))
    >>> logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
    >>> logits.shape, sorted(variables)
    ((2, 10), ['batch_stats', 'params'])

  References:
    He, Zhang, Ren, Sun, *Deep Residual Learning for Image Recognition*, CVPR 2016,
    https://arxiv.org/abs/1512.03385 (Sec. 3.3: shortcut options A and B; Table 1: ResNet-18, 34,
    50; Sec. 4.2: the CIFAR ResNets).

    Goyal, Dollar, Girshick, Noordhuis, Wesolowski, Kyrola, Tulloch, Jia, He, *Accurate, Large
    Minibatch SGD: Training ImageNet in 1 Hour*, 2017, https://arxiv.org/abs/1706.02677
    (``zero_init_residual``).
  """

  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  num_classes: int = 10
  num_filters: int = 64
  stem: str = "imagenet"
  shortcut: str = "projection"
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  act: Callable[[jax.Array], jax.Array] = nn.relu
  conv: ModuleDef = nn.Conv

  def __post_init__(self) -> None:
    if self.stem not in STEMS:
      raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}.")
    if self.shortcut not in SHORTCUTS:
      raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {self.shortcut!r}.")
    super().__post_init__()

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
    if self.stem == "cifar":
      x = conv(self.num_filters, (3, 3), padding=1, name="conv_init")(x)
      x = self.act(norm(name="bn_init")(x))
    else:
      x = conv(self.num_filters, (7, 7), 2, padding=3, name="conv_init")(x)
      x = self.act(norm(name="bn_init")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, block_size in enumerate(self.stage_sizes):
      for j in range(block_size):
        x = self.block_cls(
            self.num_filters * 2**i,
            conv=conv,
            norm=norm,
            act=self.act,
            strides=2 if i > 0 and j == 0 else 1,
            shortcut=self.shortcut,
            zero_init_residual=self.zero_init_residual,
        )(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x)


_CifarResNet = functools.partial(
    ResNet, block_cls=ResNetBlock, num_filters=16, stem="cifar", shortcut="zero_pad"
)

ResNet20 = functools.partial(_CifarResNet, stage_sizes=(3, 3, 3))
"""ResNet-20 for CIFAR (He et al. 2016, Sec. 4.2, option A): 269,722 parameters for 10 classes
(0.27M)."""

ResNet32 = functools.partial(_CifarResNet, stage_sizes=(5, 5, 5))
"""ResNet-32 for CIFAR (He et al. 2016, Sec. 4.2, option A): 464,154 parameters for 10 classes
(0.46M)."""

ResNet56 = functools.partial(_CifarResNet, stage_sizes=(9, 9, 9))
"""ResNet-56 for CIFAR (He et al. 2016, Sec. 4.2, option A): 853,018 parameters for 10 classes
(0.85M)."""

ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=ResNetBlock, stem="cifar")
"""ResNet-18 with a CIFAR stem (3x3 conv, no max-pool), projection shortcuts: 11,173,962
parameters for 10 classes (11.2M)."""

ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=ResNetBlock, stem="cifar")
"""ResNet-34 with a CIFAR stem (3x3 conv, no max-pool), projection shortcuts: 21,282,122
parameters for 10 classes (21.3M)."""

ResNet50 = functools.partial(
    ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BottleneckResNetBlock, num_classes=1000
)
"""ResNet-50 for ImageNet (He et al. 2016, Table 1): 25,557,032 parameters for 1000 classes
(25.6M)."""
