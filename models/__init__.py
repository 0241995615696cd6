"""Flax models for the training harness and the benchmarks: the networks the papers trained.

Models are Flax linen modules called as ``model.apply(variables, x, train=..., rngs=...)`` on
NHWC images (the MLP flattens them), or, for the transformers (:mod:`models.transformer`), on
int32 token ids ``[batch, length]``. Models with BatchNorm keep a ``batch_stats`` collection,
updated only when ``train=True`` with ``mutable=['batch_stats']``; dropout draws from the
``'dropout'`` rng only when ``train`` and its rate is positive. :func:`get_model` builds one by
name::

  model = models.get_model("resnet20", num_classes=10)

============  ===============================================  =============  ===========
name          network                                          classes        params
============  ===============================================  =============  ===========
mlp           MLP, hidden widths ``features``                  as given       as given
resnet20      CIFAR ResNet-20 (He et al., option A)            10             269,722
resnet32      CIFAR ResNet-32 (He et al., option A)            10             464,154
resnet56      CIFAR ResNet-56 (He et al., option A)            10             853,018
resnet18      ResNet-18, CIFAR stem                            10             11,173,962
resnet34      ResNet-34, CIFAR stem                            10             21,282,122
resnet50      ResNet-50, ImageNet                              1000           25,557,032
densenet40    DenseNet-40, k=12 (Huang et al.)                 10             1,019,722
densenet121   DenseNet-121 (BC, k=32), CIFAR stem              10             6,956,298
mobilenetv2   MobileNetV2, CIFAR strides                       10             2,236,682
wrn16_4       WRN-16-4 (Zagoruyko & Komodakis)                 10             2,748,890
wrn           WRN-``depth``-``width``                          10             by size
gpt           GPT causal language model, sizes as given        vocabulary     by size
gpt_nano      GPT, 4 layers, 4 heads, width 128, context 64    65 (vocab)     809,856
gpt2_small    GPT-2 small, 12 layers, width 768, context 1024  50257 (vocab)  124,439,808
encoder       BERT-style classifier, sizes as given            as given       by size
encoder_tiny  encoder, 4 layers, 4 heads, width 128, ctx 128   2              843,010
============  ===============================================  =============  ===========

The language models (``gpt*``) map tokens ``[batch, length]`` to next-token logits
``[batch, length, num_classes]``, ``num_classes`` being the vocabulary size; the encoders map
tokens to ``[batch, num_classes]``. Their counts are for the classes shown (the vocabulary for
the GPTs; byte tokens, a vocabulary of 258, for the encoder).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.densenet import DenseNet, DenseNet40, DenseNet121
from models.mlp import MLP
from models.mobilenetv2 import MobileNetV2
from models.resnet import ResNet, ResNet18, ResNet20, ResNet32, ResNet34, ResNet50, ResNet56
from models.transformer import (
    BYTE_OFFSET,
    CLS_ID,
    GPT,
    PAD_ID,
    EncoderClassifier,
    EncoderTiny,
    GPT2Small,
    GPTNano,
)
from models.wrn import WRN16_4, WideResNet

_MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "resnet20": ResNet20,
    "resnet32": ResNet32,
    "resnet56": ResNet56,
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "densenet40": DenseNet40,
    "densenet121": DenseNet121,
    "mobilenetv2": MobileNetV2,
    "wrn16_4": WRN16_4,
    "wrn": WideResNet,
    "gpt": GPT,
    "gpt_nano": GPTNano,
    "gpt2_small": GPT2Small,
    "encoder": EncoderClassifier,
    "encoder_tiny": EncoderTiny,
}

MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)
"""The names :func:`get_model` knows, in the order of the table above."""

TOKEN_MODEL_NAMES: tuple[str, ...] = ("gpt", "gpt_nano", "gpt2_small", "encoder", "encoder_tiny")
"""The names of :data:`MODEL_NAMES` whose models take int32 token ids ``[batch, length]`` (the
transformers) instead of images."""


def get_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds the model registered under ``name`` with the keyword arguments ``kwargs``.

  ``get_model(name, **kwargs)`` is ``factory(**kwargs)`` for the class or ``functools.partial``
  alias registered under ``name`` (see the table of this module): the aliases fix an
  architecture's depth and widths, ``kwargs`` set or override the rest. Every model but the
  transformers maps NHWC images ``[batch, h, w, c]`` to logits ``[batch, num_classes]``; the
  convolutional networks end in global average pooling, so their parameter counts do not depend on
  ``h`` and ``w``. The transformers (:data:`TOKEN_MODEL_NAMES`) take int32 tokens
  ``[batch, length]``: the GPTs return next-token logits ``[batch, length, num_classes]``
  (``num_classes`` is the vocabulary size), the encoders ``[batch, num_classes]``.

  Args:
    name: the model's registry name, one of :data:`MODEL_NAMES`.
    **kwargs: the model's attributes, e.g. ``features`` and ``num_classes`` for ``"mlp"``,
      ``num_classes`` and ``dtype`` for the others, ``depth`` and ``width`` for ``"wrn"``,
      ``dropout_rate`` for the DenseNets, WRNs and transformers, ``zero_init_residual`` for the
      ResNets, ``num_layers``, ``num_heads``, ``width``, ``context`` for ``"gpt"`` and
      ``"encoder"``.

  Returns:
    An unbound Flax linen module; ``model.init`` / ``model.apply`` take ``train=`` (see the
    module docstring).

  Raises:
    ValueError: if no model is registered under ``name``, or an attribute is invalid.
    TypeError: if ``kwargs`` names an attribute the model does not have.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> model = get_model("mlp", features=(32,), num_classes=10)
    >>> x = jnp.zeros((4, 8, 8, 1))
    >>> logits, _ = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
    >>> logits.shape
    (4, 10)
    >>> resnet20 = get_model("resnet20", num_classes=100)
    >>> type(resnet20).__name__, resnet20.stage_sizes, resnet20.shortcut
    ('ResNet', (3, 3, 3), 'zero_pad')
    >>> "vgg16" in MODEL_NAMES
    False
    >>> gpt = get_model("gpt_nano", num_classes=65)
    >>> tokens = jnp.zeros((2, 64), jnp.int32)
    >>> jax.eval_shape(gpt.init_with_output, jax.random.key(0), tokens)[0].shape
    (2, 64, 65)

  References:
    He, Zhang, Ren, Sun, *Deep Residual Learning for Image Recognition*, CVPR 2016,
    https://arxiv.org/abs/1512.03385 (``resnet*``; Sec. 4.2 and option A for ``resnet20``,
    ``resnet32``, ``resnet56``).

    Huang, Liu, van der Maaten, Weinberger, *Densely Connected Convolutional Networks*, CVPR 2017,
    https://arxiv.org/abs/1608.06993 (``densenet40``, ``densenet121``).

    Sandler, Howard, Zhu, Zhmoginov, Chen, *MobileNetV2: Inverted Residuals and Linear
    Bottlenecks*, CVPR 2018, https://arxiv.org/abs/1801.04381 (``mobilenetv2``).

    Zagoruyko, Komodakis, *Wide Residual Networks*, BMVC 2016, https://arxiv.org/abs/1605.07146
    (``wrn16_4``, ``wrn``).

    Radford, Wu, Child, Luan, Amodei, Sutskever, *Language Models are Unsupervised Multitask
    Learners*, OpenAI 2019 (``gpt*``); Devlin, Chang, Lee, Toutanova, *BERT*, NAACL 2019,
    https://arxiv.org/abs/1810.04805 (``encoder*``).
  """
  try:
    factory = _MODELS[name]
  except KeyError:
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}.") from None
  return factory(**kwargs)


def count_params(
    model: nn.Module, input_shape: Sequence[int], input_dtype: Any = None, **kwargs: Any
) -> int:
  r"""Number of scalars in the ``params`` collection (not ``batch_stats``), without initialising.

  The count is :math:`\sum_\ell \prod_i s_{\ell,i}` over the shapes :math:`s_\ell` of the
  parameter leaves: BatchNorm scales and biases count, running statistics do not. For an MLP
  with input size :math:`d_0`, hidden widths :math:`d_1, \dots, d_{L-1}` and
  :math:`d_L` classes it is :math:`\sum_{\ell=1}^{L} (d_{\ell-1} + 1)\, d_\ell`. The
  convolutional networks pool globally before their classifier, so their count does not depend on
  the image size; the MLP's does (through :math:`d_0`).

  Shapes come from ``jax.eval_shape`` on ``model.init``: nothing is computed or allocated, so even
  ResNet-50 at 224x224 counts in about a second (tracing the network is the whole cost).

  Args:
    model: an unbound linen module.
    input_shape: the shape of an input batch, batch dimension included, e.g. ``(1, 32, 32, 3)``,
      or ``(1, length)`` for a transformer.
    input_dtype: the input's dtype; by default int32 for the transformers (:class:`GPT`,
      :class:`EncoderClassifier`), whose inputs are token ids, float32 for the others.
    **kwargs: keyword arguments of the model's ``__call__``, e.g. ``train=False``.

  Returns:
    The number of parameters.

  Example:
    >>> count_params(get_model("mlp", features=(1000,), num_classes=10), (1, 28, 28, 1))
    795010
    >>> (784 + 1) * 1000 + (1000 + 1) * 10
    795010
    >>> count_params(get_model("resnet50"), (1, 224, 224, 3))
    25557032
    >>> count_params(get_model("gpt2_small", num_classes=50257), (1, 1024))
    124439808

  References:
    He, Zhang, Ren, Sun, *Deep Residual Learning for Image Recognition*, CVPR 2016,
    https://arxiv.org/abs/1512.03385 (Table 1: ResNet-50, 25.6M parameters; Table 6: the CIFAR
    ResNets' counts).

    Huang et al., *Densely Connected Convolutional Networks*, CVPR 2017 (Table 2); Sandler et
    al., *MobileNetV2*, CVPR 2018 (Table 4); Zagoruyko, Komodakis, *Wide Residual Networks*, BMVC
    2016: the published counts that the table of this module compares with.

    Radford, Wu, Child, Luan, Amodei, Sutskever, *Language Models are Unsupervised Multitask
    Learners*, OpenAI 2019 (GPT-2 small: 124,439,808 parameters with tied embeddings).
  """
  if input_dtype is None:
    input_dtype = jnp.int32 if isinstance(model, GPT | EncoderClassifier) else jnp.float32
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  x = jax.ShapeDtypeStruct(tuple(input_shape), input_dtype)
  variables = jax.eval_shape(functools.partial(model.init, **kwargs), rngs, x)
  return sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))


__all__ = [
    "BYTE_OFFSET",
    "CLS_ID",
    "GPT",
    "MLP",
    "MODEL_NAMES",
    "PAD_ID",
    "TOKEN_MODEL_NAMES",
    "DenseNet",
    "DenseNet121",
    "DenseNet40",
    "EncoderClassifier",
    "EncoderTiny",
    "GPT2Small",
    "GPTNano",
    "MobileNetV2",
    "ResNet",
    "ResNet18",
    "ResNet20",
    "ResNet32",
    "ResNet34",
    "ResNet50",
    "ResNet56",
    "WRN16_4",
    "WideResNet",
    "count_params",
    "get_model",
]
