"""Flax models for the training harness and the benchmarks.

Models are Flax linen modules; :func:`get_model` builds one by name::

  model = models.get_model("mlp", features=(128,), num_classes=10)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn

from models.mlp import MLP

_MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
}

MODEL_NAMES: tuple[str, ...] = tuple(sorted(_MODELS))
"""The names :func:`get_model` knows."""


def get_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds the model registered under ``name`` with the keyword arguments ``kwargs``.

  Args:
    name: the model's registry name (see :data:`MODEL_NAMES`).
    **kwargs: the model's attributes, e.g. ``features`` and ``num_classes`` for ``"mlp"``.

  Returns:
    An unbound Flax linen module.

  Raises:
    ValueError: if no model is registered under ``name``.
  """
  try:
    factory = _MODELS[name]
  except KeyError:
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}.") from None
  return factory(**kwargs)


__all__ = ["MLP", "MODEL_NAMES", "get_model"]
