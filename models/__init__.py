"""Flax models for the training harness and the benchmarks: the networks the papers trained.

Models are Flax linen modules called as ``model.apply(variables, x, train=..., rngs=...)`` on
NHWC images (the MLP flattens them). Models with BatchNorm keep a ``batch_stats`` collection,
updated only when ``train=True`` with ``mutable=['batch_stats']``; dropout draws from the
``'dropout'`` rng only when ``train`` and its rate is positive. :func:`get_model` builds one by
name::

  model = models.get_model("resnet20", num_classes=10)

============  ===============================================  ===========  =========
name          network                                          classes      params
============  ===============================================  ===========  =========
mlp           MLP, hidden widths ``features``                  as given     as given
resnet20      CIFAR ResNet-20 (He et al., option A)            10           269,722
resnet32      CIFAR ResNet-32 (He et al., option A)            10           464,154
resnet56      CIFAR ResNet-56 (He et al., option A)            10           853,018
resnet18      ResNet-18, CIFAR stem                            10           11,173,962
resnet34      ResNet-34, CIFAR stem                            10           21,282,122
resnet50      ResNet-50, ImageNet                              1000         25,557,032
densenet40    DenseNet-40, k=12 (Huang et al.)                 10           1,019,722
densenet121   DenseNet-121 (BC, k=32), CIFAR stem              10           6,956,298
mobilenetv2   MobileNetV2, CIFAR strides                       10           2,236,682
wrn16_4       WRN-16-4 (Zagoruyko & Komodakis)                 10           2,748,890
wrn           WRN-``depth``-``width``                          10           by size
============  ===============================================  ===========  =========
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
}

MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)
"""The names :func:`get_model` knows, in the order of the table above."""


def get_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds the model registered under ``name`` with the keyword arguments ``kwargs``.

  Args:
    name: the model's registry name (see :data:`MODEL_NAMES`).
    **kwargs: the model's attributes, e.g. ``features`` and ``num_classes`` for ``"mlp"``,
      ``num_classes`` and ``dtype`` for the others, ``depth`` and ``width`` for ``"wrn"``.

  Returns:
    An unbound Flax linen module.

  Raises:
    ValueError: if no model is registered under ``name``, or an attribute is invalid.
  """
  try:
    factory = _MODELS[name]
  except KeyError:
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}.") from None
  return factory(**kwargs)


def count_params(model: nn.Module, input_shape: Sequence[int], **kwargs: Any) -> int:
  """Number of scalars in the ``params`` collection (not ``batch_stats``), without initialising.

  Shapes come from ``jax.eval_shape`` on ``model.init``: nothing is computed or allocated, so
  ResNet-50 at 224x224 counts in well under a second.

  Args:
    model: an unbound linen module.
    input_shape: the shape of an input batch, batch dimension included, e.g. ``(1, 32, 32, 3)``.
    **kwargs: keyword arguments of the model's ``__call__``, e.g. ``train=False``.

  Returns:
    The number of parameters.

  Example:
    >>> count_params(get_model("resnet50"), (1, 224, 224, 3))
    25557032
  """
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, **kwargs), rngs, x)
  return sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))


__all__ = [
    "MLP",
    "MODEL_NAMES",
    "DenseNet",
    "DenseNet121",
    "DenseNet40",
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
