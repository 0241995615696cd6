"""optax_ls: stochastic line searches for deep learning, as Optax transformations.

Every method is a factory returning an :class:`optax.GradientTransformationExtraArgs`
whose ``update`` takes the mini-batch objective as ``value_fn``::

  opt = optax_ls.sls(n_batches_per_epoch=390)
  state = opt.init(params)
  loss, grads = jax.value_and_grad(loss_fn)(params, batch)
  updates, state = opt.update(grads, state, params, value=loss,
                              value_fn=lambda p: loss_fn(p, batch))
  params = optax.apply_updates(params, updates)
  lr = optax.tree.get(state, "learning_rate")
"""

from optax_ls._core import SearchResult, backtracking_search
from optax_ls._sls import (
    AdamSlsState,
    ScaleBySlsState,
    adam_sls,
    scale_by_sls,
    sls,
)

__version__ = "0.1.0"

__all__ = [
    "AdamSlsState",
    "ScaleBySlsState",
    "SearchResult",
    "adam_sls",
    "backtracking_search",
    "scale_by_sls",
    "sls",
]
