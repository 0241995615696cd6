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

from optax_ls._accumulate import accumulate
from optax_ls._adapters import apply_gradients, lookahead, multi_transform, nnx_value_fn
from optax_ls._core import SearchResult, backtracking_search, compute_dtype
from optax_ls._gols import ScaleByGolsIState, gols_i, scale_by_gols_i
from optax_ls._hypergradient import (
    ScaleByHypergradientState,
    scale_by_hypergradient,
    sgd_hd,
)
from optax_ls._labpal import ScaleByLabpalState, labpal, scale_by_labpal
from optax_ls._metric_sls import (
    ScaleByMetricSlsState,
    a_sls,
    accuracy,
    l_sls,
    sa_sls,
    scale_by_metric_sls,
    smooth_accuracy,
)
from optax_ls._pal import ScaleByPalState, pal, scale_by_pal
from optax_ls._pls import ScaleByPlsState, pls, scale_by_pls
from optax_ls._progress import (
    NO_STEP_REASONS,
    NoProgress,
    NoProgressWarning,
    check_progress,
    nonfinite_value_to_nan,
)
from optax_ls._salsa import (
    AdamSalsaState,
    ScaleBySalsaState,
    adam_salsa,
    adam_salsa_cooldown,
    cooldown_schedule,
    salsa,
    scale_by_salsa,
)
from optax_ls._sls import (
    AdamSlsState,
    ScaleBySlsState,
    adam_sls,
    scale_by_sls,
    sls,
)
from optax_ls._tlr import ScaleByTlrState, scale_by_tlr, tlr

__version__ = "0.1.0"

__all__ = [
    "NO_STEP_REASONS",
    "NoProgress",
    "NoProgressWarning",
    "AdamSalsaState",
    "AdamSlsState",
    "ScaleByGolsIState",
    "ScaleByHypergradientState",
    "ScaleByLabpalState",
    "ScaleByMetricSlsState",
    "ScaleByPalState",
    "ScaleByPlsState",
    "ScaleBySalsaState",
    "ScaleBySlsState",
    "ScaleByTlrState",
    "SearchResult",
    "a_sls",
    "accumulate",
    "accuracy",
    "adam_salsa",
    "adam_salsa_cooldown",
    "adam_sls",
    "apply_gradients",
    "backtracking_search",
    "check_progress",
    "compute_dtype",
    "cooldown_schedule",
    "gols_i",
    "l_sls",
    "labpal",
    "lookahead",
    "multi_transform",
    "nnx_value_fn",
    "nonfinite_value_to_nan",
    "pal",
    "pls",
    "sa_sls",
    "salsa",
    "scale_by_gols_i",
    "scale_by_hypergradient",
    "scale_by_labpal",
    "scale_by_metric_sls",
    "scale_by_pal",
    "scale_by_pls",
    "scale_by_salsa",
    "scale_by_sls",
    "scale_by_tlr",
    "sgd_hd",
    "sls",
    "smooth_accuracy",
    "tlr",
]
