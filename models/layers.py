"""Pieces shared by the convolutional models: the injected BatchNorm and convolution partials."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn

ModuleDef = Any
"""A module class or a ``functools.partial`` of one, injected into a block (``conv``, ``norm``)."""

BN_MOMENTUM = 0.9
"""Decay of BatchNorm's running averages (PyTorch's ``momentum=0.1``)."""

BN_EPSILON = 1e-5
"""BatchNorm's variance offset, as in the Torch/PyTorch models the papers trained."""


def batch_norm(train: bool, dtype: Any) -> ModuleDef:
  """BatchNorm as every model here uses it: batch statistics when ``train``, else running averages.

  Args:
    train: normalise with the batch's statistics and update ``batch_stats`` (else use them).
    dtype: the computation dtype.

  Returns:
    A partial of ``flax.linen.BatchNorm``.
  """
  return functools.partial(
      nn.BatchNorm,
      use_running_average=not train,
      momentum=BN_MOMENTUM,
      epsilon=BN_EPSILON,
      dtype=dtype,
  )


def conv_no_bias(conv: ModuleDef, dtype: Any) -> ModuleDef:
  """``conv`` without bias (BatchNorm follows or precedes every convolution) in ``dtype``."""
  return functools.partial(conv, use_bias=False, dtype=dtype)


def dropout(rate: float, train: bool) -> ModuleDef:
  """Dropout of ``rate``, active only when ``train`` (it then draws from the ``'dropout'`` rng)."""
  return functools.partial(nn.Dropout, rate=rate, deterministic=not train or rate == 0.0)


def check_rate(name: str, rate: float) -> None:
  """Raises ValueError naming ``name`` unless ``0 <= rate < 1``."""
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"{name} must be in [0, 1), got {rate}.")
