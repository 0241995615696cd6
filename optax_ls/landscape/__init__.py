"""The line-landscape analysis of seed 003, "Empirically explaining SGD from a line search
perspective".

Along the update directions of a training run, the full-batch loss
``l(s) = L(theta + s d)`` (unit ``d``; Eq. 1) is measured on a grid of step sizes
(``[-0.5, 0.5]`` at 0.006 by default, widened when the minimum sits at an edge),
together with the direction-defining batch's loss and every other batch's loss.
From the lines: polynomial fits of degree 1 and 2 and their MAE (§4), the
minimum ``s_opt``, the steps of SGD, PAL, a full-batch PAL and an exact search on
the mini-batch and their improvements ``l(0) - l(s_upd)`` (§5), the shape
distances between lines (§4) and the relation of batch size and directional
derivative (§6).

Measuring is :class:`LineMeter` (one jitted call per line block, ``lax.map`` over
step sizes and batches, forward-mode directional derivatives); analysing is NumPy
(:func:`analyse`); :func:`write_report` writes the summary and the figures. Recording
the lines along a run of the repository's training harness is the harness's
(``train.landscape.record``, and the command ``python -m train.landscape``).

Example:
  >>> import jax.numpy as jnp
  >>> def loss_fn(w, batch):  # per-example losses of a quadratic bowl
  ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
  >>> batches = jnp.zeros((2, 4, 3))  # 2 batches of 4 examples, all at the origin
  >>> w = jnp.ones(3)
  >>> direction, norm = unit_direction(-w)
  >>> line = LineMeter(loss_fn).measure(w, direction, batches, steps=grid(-1.0, 3.0, 0.05))
  >>> round(minimum(line.steps, line.full), 4), round(norm, 4)  # s_opt = ||w|| = sqrt(3)
  (1.7321, 1.7321)

References:
  Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
  ICANN 2021 (seed 003).
"""

from optax_ls.landscape._analysis import (
    Fit,
    analyse,
    batch_size_relation,
    batch_size_slopes,
    fit_polynomial,
    improvement,
    loss_at,
    minimum,
    parabolic_step,
    proportionality,
    shape_distances,
    smooth,
    strategy_steps,
)
from optax_ls.landscape._measure import Line, LineMeter, grid, unit_direction
from optax_ls.landscape._plots import (
    FIGURES,
    plot_all,
    plot_batch_size,
    plot_distances,
    plot_fits,
    plot_lines,
    plot_steps,
)
from optax_ls.landscape._report import (
    Settings,
    format_headline,
    headline,
    load_lines,
    saved_settings,
    write_report,
)

__all__ = [
    "FIGURES",
    "Fit",
    "Line",
    "LineMeter",
    "Settings",
    "analyse",
    "batch_size_relation",
    "batch_size_slopes",
    "fit_polynomial",
    "format_headline",
    "grid",
    "headline",
    "improvement",
    "load_lines",
    "loss_at",
    "minimum",
    "parabolic_step",
    "plot_all",
    "plot_batch_size",
    "plot_distances",
    "plot_fits",
    "plot_lines",
    "plot_steps",
    "proportionality",
    "saved_settings",
    "shape_distances",
    "smooth",
    "strategy_steps",
    "unit_direction",
    "write_report",
]
