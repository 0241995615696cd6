"""What seed 003 reads off the measured lines: fits, minima, update steps, distances, batch size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from optax_ls.landscape._measure import Line

DEFAULT_LEARNING_RATES = (0.1, 0.05, 0.01)
DEFAULT_BATCH_SIZES = (16, 32, 64, 128, 256, 512)


class Fit(NamedTuple):
  """A least-squares polynomial fit of a line (:func:`fit_polynomial`).

  Attributes:
    coefficients: highest degree first (``np.polyval`` order); for degree 2,
      ``(a, b, c)`` of ``a s^2 + b s + c``: ``a`` is the curvature term (half the
      second directional derivative), ``b`` the slope at ``s = 0``.
    mae: the mean absolute error of the fit at the fitted points.

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 4, Fig. 4 (seed 003).
  """

  coefficients: np.ndarray
  mae: float


def _window(steps: np.ndarray, window: float | None) -> np.ndarray:
  if window is None:
    return np.ones(len(steps), bool)
  if not window > 0:
    raise ValueError(f"`window` must be positive or None, got {window}.")
  return np.abs(steps) <= window + 1e-12


def fit_polynomial(steps: Any, values: Any, degree: int, *, window: float | None = None) -> Fit:
  """Fits a polynomial of ``degree`` to ``values`` at ``steps`` (within ``|s| <= window``).

  Seed 003 §4 (Fig. 4): the full-batch loss along lines is fitted by polynomials of
  degree 1 and 2; the mean absolute error of the fit measures how parabolic it is.
  Over the ``n`` kept points ``s_k`` (``|s_k| <= window`` and ``l(s_k)`` finite),
  the fit ``p`` minimises ``sum_k (p(s_k) - l(s_k))^2`` (``np.polyfit``) and

    ``MAE = 1/n sum_k |p(s_k) - l(s_k)|``.

  Args:
    steps: ``[S]`` the step sizes.
    values: ``[S]`` the losses there (non-finite values are left out).
    degree: the polynomial's degree (seed 003: 1 and 2).
    window: the half-width of the fitted interval around ``s = 0``; None for
      every point.

  Returns:
    The :class:`Fit`: the coefficients (highest degree first) and the MAE.

  Raises:
    ValueError: when ``steps`` and ``values`` are not 1-D of one length, the
      window is not positive, or at most ``degree`` finite points lie in it.

  Example:
    >>> s = np.linspace(-0.5, 0.5, 11)
    >>> fit = fit_polynomial(s, 3 * s**2 - s + 2, 2)
    >>> np.round(fit.coefficients, 6).tolist(), fit.mae < 1e-12
    ([3.0, -1.0, 2.0], True)

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 4, Fig. 4 (seed 003).
  """
  steps = np.asarray(steps, np.float64)
  values = np.asarray(values, np.float64)
  if steps.shape != values.shape or steps.ndim != 1:
    raise ValueError(f"`steps` and `values` must be 1-D of one length, got {steps.shape} "
                     f"and {values.shape}.")
  keep = _window(steps, window) & np.isfinite(values)
  if keep.sum() <= degree:
    raise ValueError(f"A fit of degree {degree} needs more than {degree} finite points in the "
                     f"window; there are {int(keep.sum())}.")
  coefficients = np.polyfit(steps[keep], values[keep], degree)
  mae = float(np.mean(np.abs(np.polyval(coefficients, steps[keep]) - values[keep])))
  return Fit(coefficients, mae)


def minimum(steps: Any, values: Any) -> float:
  """The step size of the minimum of a measured line, between grid points.

  Seed 003's ``s_opt`` when applied to the full-batch loss (the locally optimal
  step), the exact line search on the mini-batch loss when applied to ``l_m``.
  The lowest grid point ``s_i`` is refined by the parabola ``a s^2 + b s + c``
  through it and its two neighbours (exact for a parabola)::

    s_min = clip(-b / (2 a), s_{i-1}, s_{i+1}).

  At an edge of the grid, next to a non-finite value or when that parabola has
  ``a <= 0``, the grid point ``s_i`` itself is returned.

  Args:
    steps: ``[S]`` the step sizes, increasing.
    values: ``[S]`` the losses there; non-finite values are never the minimum.

  Returns:
    The step size of the minimum as a float; NaN when no value is finite.

  Example:
    >>> s = np.arange(-0.5, 0.5, 0.03)
    >>> round(minimum(s, (s - 0.1234) ** 2), 6)
    0.1234

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 5, the definition of ``s_opt`` (seed 003).
  """
  steps = np.asarray(steps, np.float64)
  values = np.asarray(values, np.float64)
  finite = np.where(np.isfinite(values), values, np.inf)
  i = int(np.argmin(finite))
  if not np.isfinite(finite[i]):
    return float("nan")
  if i == 0 or i == len(steps) - 1 or not np.all(np.isfinite(values[i - 1 : i + 2])):
    return float(steps[i])
  a, b, _ = np.polyfit(steps[i - 1 : i + 2], values[i - 1 : i + 2], 2)
  if a <= 0:
    return float(steps[i])
  return float(np.clip(-b / (2 * a), steps[i - 1], steps[i + 1]))


def loss_at(line: Line, s: float) -> float:
  """The full-batch loss ``l(s)``: exact at the anchors, linear interpolation between grid points.

  At an anchor (``s = 0`` or ``s = mu``) it is the mean of the per-example losses
  measured there; elsewhere ``l(s)`` is interpolated linearly between the two grid
  points around ``s`` (on a parabola with curvature term ``a``, an error of at most
  ``a h^2 / 4`` for grid spacing ``h``).

  Args:
    line: the measured :class:`Line`.
    s: the step size along the line.

  Returns:
    ``l(s)`` as a float; NaN when ``s`` is not finite or lies outside the
    measured grid.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_ls.landscape import LineMeter, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.array([[0.0], [-1.0], [-2.0], [-3.0]])  # the direction batch
    >>> line = LineMeter(loss_fn).measure(  # l(s) = 0.5 (1 - s)^2, l_m'(0) = -2.5
    ...     jnp.ones(1), -jnp.ones(1), jnp.zeros((2, 4, 1)), direction_batch=mine,
    ...     steps=grid(-1.0, 3.0, 0.05))
    >>> round(loss_at(line, 0.1), 3), round(loss_at(line, 0.31), 3), loss_at(line, 5.0)
    (0.405, 0.238, nan)

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 3, Eq. 1 (seed 003).
  """
  for anchor, losses in zip(line.anchors, line.anchor_losses, strict=True):
    if s == anchor:
      return float(losses.mean())
  if not np.isfinite(s) or s < line.steps[0] or s > line.steps[-1]:
    return float("nan")
  return float(np.interp(s, line.steps, line.full))


def improvement(line: Line, s: float) -> float:
  """``l(0) - l(s)``: how much a step ``s`` along the line lowers the full-batch loss.

  Seed 003's third metric of an update step ``s_upd``: the loss improvement
  ``l(0) - l(s_upd)`` on the full-batch loss (``l(0)`` exact, ``l(s)`` from
  :func:`loss_at`). Negative when the step overshoots so far that the loss rises.

  Args:
    line: the measured :class:`Line`.
    s: the step size along the line.

  Returns:
    The improvement as a float; NaN when ``s`` is NaN or beyond the measured grid.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_ls.landscape import LineMeter, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.array([[0.0], [-1.0], [-2.0], [-3.0]])  # the direction batch
    >>> line = LineMeter(loss_fn).measure(  # l(s) = 0.5 (1 - s)^2, l_m'(0) = -2.5
    ...     jnp.ones(1), -jnp.ones(1), jnp.zeros((2, 4, 1)), direction_batch=mine,
    ...     steps=grid(-1.0, 3.0, 0.05))
    >>> improvement(line, 1.0), improvement(line, 2.0)  # s_opt = 1; 2 overshoots to l(0)
    (0.5, 0.0)

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 5, Fig. 6 (seed 003).
  """
  return line.value_at_zero - loss_at(line, s)


def parabolic_step(value0: float, slope0: float, value_mu: float, mu: float) -> float:
  """The minimum of the parabola through ``l(0)``, ``l'(0)`` and ``l(mu)`` (seed 003, Eq. 2).

  The parabola ``a s^2 + b s + c`` with ``c = l(0)``, ``b = l'(0)`` and
  ``a = (l(mu) - l(0) - l'(0) mu) / mu^2`` has its minimum at PAL's step::

    s_pal = -b / (2 a) = -l'(0) mu^2 / (2 (l(mu) - l(0) - l'(0) mu)).

  NaN when the parabola has no minimum ahead (``a <= 0`` or ``l'(0) >= 0``): PAL
  then falls back to other rules, which this analysis does not model.

  Args:
    value0: ``l(0)``, the loss at the line's origin.
    slope0: ``l'(0)``, the directional derivative there.
    value_mu: ``l(mu)``, the loss at the measuring step.
    mu: the measuring step, positive.

  Returns:
    ``s_pal`` as a float, or NaN.

  Example:
    >>> round(parabolic_step(1.0, -2.0, 1.0 - 2.0 * 0.1 + 4.0 * 0.01, 0.1), 12)  # 4s^2 - 2s + 1
    0.25

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 5, Eq. 2 (seed 003); Mutschler, Zell, "Parabolic
    Approximation Line Search for DNNs", NeurIPS 2020.
  """
  curvature = value_mu - value0 - slope0 * mu
  if not (curvature > 0 and slope0 < 0):
    return float("nan")
  return float(-slope0 * mu**2 / (2 * curvature))


def strategy_steps(line: Line, *, learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES
                   ) -> dict[str, float]:
  """The step each strategy of seed 003 §5 takes along ``line``.

  * ``run``: the training run's own update length (``line.update_norm``).
  * ``sgd_<lr>``: SGD's step ``lr |l'_m(0)|`` (``lr ||g||`` on SGD's own lines,
    Eq. 3: a Newton step with the curvature ``1 / lr``).
  * ``pal``: PAL's parabola on the direction batch (Eq. 2, at the anchor ``mu``;
    :func:`parabolic_step`).
  * ``fbpal``: the same parabola on the full-batch loss.
  * ``mini_exact``: the exact line search on the direction batch (the minimum of
    ``l_m``, :func:`minimum`).
  * ``s_opt``: the minimum of the full-batch loss, the locally optimal step.

  Args:
    line: the measured :class:`Line`.
    learning_rates: the SGD learning rates compared, one ``sgd_<lr>`` each
      (keys formatted with ``{lr:g}``).

  Returns:
    A dict from strategy name to step size, in the order above. The strategies
    of the direction batch (``sgd_*``, ``pal``, ``mini_exact``) are NaN when the
    line has no direction batch; ``run`` is NaN when the update length is unknown;
    ``pal`` and ``fbpal`` are NaN without a minimum ahead.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_ls.landscape import LineMeter, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.array([[0.0], [-1.0], [-2.0], [-3.0]])  # the direction batch
    >>> line = LineMeter(loss_fn).measure(  # l(s) = 0.5 (1 - s)^2, l_m'(0) = -2.5
    ...     jnp.ones(1), -jnp.ones(1), jnp.zeros((2, 4, 1)), direction_batch=mine,
    ...     steps=grid(-1.0, 3.0, 0.05), update_norm=0.25)
    >>> steps = strategy_steps(line)
    >>> list(steps)
    ['run', 'sgd_0.1', 'sgd_0.05', 'sgd_0.01', 'pal', 'fbpal', 'mini_exact', 's_opt']
    >>> [round(s, 3) for s in steps.values()]  # s_opt = 1, the direction batch's minimum 2.5
    [0.25, 0.25, 0.125, 0.025, 2.5, 1.0, 2.5, 1.0]

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 5, Eq. 2-3, Fig. 5-6 (seed 003).
  """
  mu = float(line.anchors[1])
  slope_m = line.direction_slope
  steps = {"run": float(line.update_norm)}
  for lr in learning_rates:
    steps[f"sgd_{lr:g}"] = lr * abs(slope_m)
  direction_anchor = line.direction_anchor_losses.mean(axis=1)
  steps["pal"] = parabolic_step(float(direction_anchor[0]), slope_m, float(direction_anchor[1]),
                                mu)
  full_anchor = line.anchor_losses.mean(axis=1)
  steps["fbpal"] = parabolic_step(float(full_anchor[0]), line.slope_at_zero,
                                  float(full_anchor[1]), mu)
  steps["mini_exact"] = minimum(line.steps, line.direction_losses)
  steps["s_opt"] = minimum(line.steps, line.full)
  return steps


def shape_distances(lines: Sequence[Line], *, window: float = 0.2) -> np.ndarray:
  """``[L, L]`` the distances between the shapes of the full-batch losses (seed 003 §4, Fig. 3).

  Each line's full-batch loss is taken at the ``n`` grid points ``s_k`` of
  ``lines[0]`` in ``[-window, window]`` (seed 003: 0.2 for SGD, 0.5 with momentum;
  linear interpolation where a line's grid differs) and shifted so that its minimum
  there is 0; the distance of two lines is the mean absolute difference::

    D_ij = 1/n sum_k |(l_i(s_k) - min l_i) - (l_j(s_k) - min l_j)|.

  Args:
    lines: the measured lines, each covering ``[-window, window]``.
    window: the half-width of the compared interval around ``s = 0``.

  Returns:
    The symmetric distance matrix ``D`` (zero diagonal), ``[L, L]``.

  Raises:
    ValueError: when there are no lines or a line does not cover the window.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_ls.landscape import LineMeter, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.array([[0.0], [-1.0], [-2.0], [-3.0]])  # the direction batch
    >>> meter = LineMeter(loss_fn)
    >>> lines = [  # l(s) = 0.5 (w0 - s)^2: s_opt = w0
    ...     meter.measure(jnp.full(1, w0), -jnp.ones(1), jnp.zeros((2, 4, 1)),
    ...                   direction_batch=mine, steps=grid(-1.0, 3.0, 0.05), step=t)
    ...     for t, w0 in enumerate((1.0, 0.5))]
    >>> np.round(shape_distances(lines, window=0.2), 4).tolist()  # mean |0.1 - s / 2|
    [[0.0, 0.1], [0.1, 0.0]]

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 4, Fig. 3 (seed 003).
  """
  if not lines:
    raise ValueError("No lines.")
  reference = lines[0].steps[_window(lines[0].steps, window)]
  for line in lines:
    if line.steps[0] > reference[0] + 1e-9 or line.steps[-1] < reference[-1] - 1e-9:
      raise ValueError(f"The line of step {line.step} does not cover [-{window}, {window}].")
  shapes = np.stack([np.interp(reference, line.steps, line.full) for line in lines])
  shapes -= shapes.min(axis=1, keepdims=True)
  return np.mean(np.abs(shapes[:, None, :] - shapes[None, :, :]), axis=2)


def batch_size_slopes(line: Line, sizes: Sequence[int] = DEFAULT_BATCH_SIZES, *,
                      seed: int = 0) -> dict[int, np.ndarray]:
  """The examples a direction-defining batch of each size would hold (seed 003 §6).

  Seed 003's simplification: the trajectory is kept and only the batch changes.
  A smaller batch drops the direction batch's examples with the highest
  directional derivatives (steeper batches for smaller sizes); a larger one adds
  examples of the analysis set drawn without replacement. The choices are nested:
  a batch holds every example of each smaller one. The examples drawn depend on
  ``seed`` and ``line.step`` only.

  Args:
    line: a :class:`Line` measured with a direction batch.
    sizes: the batch sizes, each in ``[1, B + nb * B]``.
    seed: seeds the draw of the added analysis examples.

  Returns:
    A dict from each size to its example indices into
    ``concat(direction examples, analysis examples)`` (``line.direction_slopes``
    then ``line.slopes``): the direction batch's examples steepest first, then
    the drawn ones.

  Raises:
    ValueError: when the line has no direction batch or a size is out of range.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_ls.landscape import LineMeter, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.array([[0.0], [-1.0], [-2.0], [-3.0]])  # the direction batch
    >>> line = LineMeter(loss_fn).measure(  # l(s) = 0.5 (1 - s)^2, l_m'(0) = -2.5
    ...     jnp.ones(1), -jnp.ones(1), jnp.zeros((2, 4, 1)), direction_batch=mine,
    ...     steps=grid(-1.0, 3.0, 0.05))
    >>> chosen = batch_size_slopes(line, (1, 2, 4, 8))  # slopes of the direction batch: -1..-4
    >>> chosen[2].tolist(), chosen[4].tolist(), len(chosen[8]), bool(np.all(chosen[8][4:] >= 4))
    ([3, 2], [3, 2, 1, 0], 8, True)

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 6 (seed 003).
  """
  own = len(line.direction_slopes)
  others = len(line.slopes)
  if not np.all(np.isfinite(line.direction_slopes)):
    raise ValueError("The line has no direction batch: the batch-size relation needs one.")
  order = np.argsort(line.direction_slopes, kind="stable")  # steepest first
  rng = np.random.default_rng([seed, line.step])
  extra = own + rng.permutation(others)
  chosen = {}
  for size in sizes:
    if size < 1 or size > own + others:
      raise ValueError(f"Batch size {size} must lie in [1, {own + others}].")
    chosen[int(size)] = order[:size] if size <= own else np.concatenate([order,
                                                                         extra[: size - own]])
  return chosen


def batch_size_relation(line: Line, sizes: Sequence[int] = DEFAULT_BATCH_SIZES, *,
                        learning_rate: float = 0.1, seed: int = 0) -> dict[str, np.ndarray]:
  """Per batch size: ``|l'_b(0)|`` and the improvements of SGD's and PAL's steps (Fig. 7).

  For each batch ``b`` of :func:`batch_size_slopes`, on the same line: its slope
  ``l'_b(0)`` (the mean of its examples' directional derivatives), SGD's step
  ``lr |l'_b(0)|`` and PAL's step ``s_pal,b`` (:func:`parabolic_step` on the
  batch's mean losses at ``0`` and ``mu``), each scored by its improvement of the
  full-batch loss ``l(0) - l(s)`` (:func:`improvement`). Seed 003 §6: doubling the
  batch roughly halves ``|l'_b(0)|``, and with it SGD's step, as halving the
  learning rate would.

  Args:
    line: a :class:`Line` measured with a direction batch.
    sizes: the batch sizes, each in ``[1, B + nb * B]``.
    learning_rate: SGD's learning rate ``lr`` (seed 003: the run's 0.1).
    seed: seeds the draw of the added analysis examples.

  Returns:
    A dict of arrays ``[len(sizes)]``: ``slope``, ``|l'_b(0)|`` (the paper's
    gradient norm: exactly ``||g||`` for SGD's own batch on SGD's lines, the
    projection ``|<g_b, d>|`` of another batch's gradient on the line direction
    ``d``); ``sgd``, ``l(0) - l(lr |l'_b(0)|)``; ``pal``, ``l(0) - l(s_pal,b)``.
    An improvement is NaN when the step lies beyond the measured grid (or, for
    PAL, when its parabola has no minimum ahead).

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_ls.landscape import LineMeter, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.array([[0.0], [-1.0], [-2.0], [-3.0]])  # the direction batch
    >>> line = LineMeter(loss_fn).measure(  # l(s) = 0.5 (1 - s)^2, l_m'(0) = -2.5
    ...     jnp.ones(1), -jnp.ones(1), jnp.zeros((2, 4, 1)), direction_batch=mine,
    ...     steps=grid(-1.0, 3.0, 0.05))
    >>> relation = batch_size_relation(line, (1, 2, 4, 8), learning_rate=0.1)
    >>> relation["slope"].tolist(), np.round(relation["sgd"], 2).tolist()
    ([4.0, 3.5, 2.5, 1.75], [0.32, 0.29, 0.22, 0.16])
    >>> np.isnan(relation["pal"]).tolist()  # PAL's steps 4 and 3.5 lie beyond the grid
    [True, True, False, False]

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 6, Fig. 7 (seed 003).
  """
  slopes = np.concatenate([line.direction_slopes, line.slopes])
  at0 = np.concatenate([line.direction_anchor_losses[0], line.anchor_losses[0]])
  at_mu = np.concatenate([line.direction_anchor_losses[1], line.anchor_losses[1]])
  mu = float(line.anchors[1])
  out = {"slope": [], "sgd": [], "pal": []}
  for indices in batch_size_slopes(line, sizes, seed=seed).values():
    slope = float(slopes[indices].mean())
    out["slope"].append(abs(slope))
    out["sgd"].append(improvement(line, learning_rate * abs(slope)))
    pal = parabolic_step(float(at0[indices].mean()), slope, float(at_mu[indices].mean()), mu)
    out["pal"].append(improvement(line, pal))
  return {k: np.asarray(v) for k, v in out.items()}


def proportionality(s_opt: Any, slope: Any) -> dict[str, float]:
  """How well ``s_opt ~ c |l'_m(0)|`` holds over lines (seed 003 core result 2, Eq. 4).

  Over the lines ``i`` with finite values and ``g_i = |l'_m(0)|_i > 0``::

    c = sum_i s_i g_i / sum_i g_i^2,
    R^2 = 1 - sum_i (s_i - c g_i)^2 / sum_i (s_i - mean(s))^2,
    CV = std(s_i / g_i) / mean(s_i / g_i),

  with ``s_i = s_opt`` of line ``i``. ``c`` is the locally optimal SGD learning
  rate: SGD with it would step to ``s_opt`` when the proportionality is exact.

  Args:
    s_opt: ``[L]`` the full-batch minimum of each line.
    slope: ``[L]`` the direction batch's directional derivative ``l'_m(0)`` of
      each line (its absolute value is used).

  Returns:
    A dict: ``c`` (the least-squares slope through the origin), ``r2`` (the
    fraction of the variance of ``s_opt`` that the fit through the origin
    explains; negative when it is worse than the mean), ``pearson`` (the
    correlation of ``s_opt`` and ``|l'_m(0)|``), ``ratio_cv`` (the coefficient of
    variation of ``s_opt / |l'_m(0)|``) and ``lines`` (how many lines were used).
    With fewer than 2 usable lines all but ``lines`` are NaN.

  Example:
    >>> g = np.array([1.0, 2.0, 4.0])
    >>> fit = proportionality(0.05 * g, g)
    >>> round(fit["c"], 6), round(fit["r2"], 6), round(fit["ratio_cv"], 6), fit["lines"]
    (0.05, 1.0, 0.0, 3)

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 5, Eq. 4, Fig. 6 lower right (seed 003).
  """
  s_opt = np.asarray(s_opt, np.float64)
  slope = np.abs(np.asarray(slope, np.float64))
  keep = np.isfinite(s_opt) & np.isfinite(slope) & (slope > 0)
  s_opt, slope = s_opt[keep], slope[keep]
  if len(s_opt) < 2:
    nan = float("nan")
    return {"c": nan, "r2": nan, "pearson": nan, "ratio_cv": nan, "lines": len(s_opt)}
  c = float(np.sum(s_opt * slope) / np.sum(slope**2))
  total = np.sum((s_opt - s_opt.mean()) ** 2)
  r2 = float(1 - np.sum((s_opt - c * slope) ** 2) / total) if total > 0 else float("nan")
  ratio = s_opt / slope
  pearson = float(np.corrcoef(s_opt, slope)[0, 1]) if np.std(s_opt) and np.std(slope) else float(
      "nan")
  return {"c": c, "r2": r2, "pearson": pearson, "ratio_cv": float(ratio.std() / ratio.mean()),
          "lines": len(s_opt)}


def analyse(
    lines: Sequence[Line],
    *,
    window: float = 0.2,
    learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    run_learning_rate: float | None = None,
) -> dict[str, Any]:
  """Everything the figures and the report show, for lines in training order.

  Per line: the polynomial fits of degree 1 and 2 of ``l(s)`` on
  ``|s| <= window`` (:func:`fit_polynomial`, §4), the steps of the strategies of
  :func:`strategy_steps` with their distance ``s_opt - s_upd`` and improvement
  ``l(0) - l(s_upd)`` (§5); over lines: the shape distances
  (:func:`shape_distances`, §4), the proportionality of ``s_opt`` to
  ``|l'_m(0)|`` (:func:`proportionality`, Eq. 4) and, when every line has a
  direction batch, the batch-size relation (:func:`batch_size_relation`, §6).

  Args:
    lines: the measured lines.
    window: the half-width of the interval of the fits and shape distances.
    learning_rates: the SGD learning rates compared (``sgd_<lr>`` strategies).
    batch_sizes: the batch sizes of the batch-size relation (needs direction
      batches); sizes above the fewest examples of a line are left out.
    run_learning_rate: the SGD learning rate of the batch-size relation's SGD
      (default: the first of ``learning_rates``).

  Returns:
    A dict of per-line arrays ``[L]`` (``step``, ``seconds``, ``mae1`` and
    ``mae2`` of the fits, ``curvature`` ``a`` and ``slope`` ``b`` of the degree-2
    fit ``a s^2 + b s + c``, ``direction_slope`` ``l'_m(0)``, ``full_slope``
    ``l'(0)``), per-strategy arrays ``[L]`` under
    ``strategies[name] = {"step", "distance", "improvement"}``, the ``distances``
    matrix ``[L, L]``, the ``proportionality`` dict of ``s_opt`` to
    ``|l'_m(0)|``, the ``window`` and, only when every line has a direction
    batch, the ``batch_size`` relation: ``sizes``, ``learning_rate`` and arrays
    ``slope``, ``sgd``, ``pal`` of shape ``[L, len(sizes)]``.

  Raises:
    ValueError: when there are no lines (or a line does not cover the window).

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_ls.landscape import LineMeter, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.array([[0.0], [-1.0], [-2.0], [-3.0]])  # the direction batch
    >>> meter = LineMeter(loss_fn)
    >>> lines = [  # l(s) = 0.5 (w0 - s)^2: s_opt = w0
    ...     meter.measure(jnp.full(1, w0), -jnp.ones(1), jnp.zeros((2, 4, 1)),
    ...                   direction_batch=mine, steps=grid(-1.0, 3.0, 0.05), step=t)
    ...     for t, w0 in enumerate((1.0, 0.5))]
    >>> out = analyse(lines, batch_sizes=(2, 4, 8))
    >>> sorted(out)  # doctest: +NORMALIZE_WHITESPACE
    ['batch_size', 'curvature', 'direction_slope', 'distances', 'full_slope', 'mae1', 'mae2',
     'proportionality', 'seconds', 'slope', 'step', 'strategies', 'window']
    >>> np.round(out["strategies"]["s_opt"]["step"], 3).tolist(), bool(np.all(out["mae2"] < 1e-6))
    ([1.0, 0.5], True)
    >>> np.round(out["curvature"], 3).tolist(), out["batch_size"]["slope"].shape
    ([0.5, 0.5], (2, 3))

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 4-6, Fig. 3, 4, 6, 7 (seed 003).
  """
  if not lines:
    raise ValueError("No lines to analyse.")
  fits1 = [fit_polynomial(line.steps, line.full, 1, window=window) for line in lines]
  fits2 = [fit_polynomial(line.steps, line.full, 2, window=window) for line in lines]
  steps = [strategy_steps(line, learning_rates=learning_rates) for line in lines]
  names = list(steps[0])
  s_opt = np.array([s["s_opt"] for s in steps])
  strategies = {}
  for name in names:
    taken = np.array([s[name] for s in steps])
    strategies[name] = {
        "step": taken,
        "distance": s_opt - taken,
        "improvement": np.array([improvement(line, s) for line, s in zip(lines, taken,
                                                                         strict=True)]),
    }
  out: dict[str, Any] = {
      "step": np.array([line.step for line in lines]),
      "seconds": np.array([line.seconds for line in lines]),
      "mae1": np.array([f.mae for f in fits1]),
      "mae2": np.array([f.mae for f in fits2]),
      "curvature": np.array([f.coefficients[0] for f in fits2]),
      "slope": np.array([f.coefficients[1] for f in fits2]),
      "direction_slope": np.array([line.direction_slope for line in lines]),
      "full_slope": np.array([line.slope_at_zero for line in lines]),
      "strategies": strategies,
      "distances": shape_distances(lines, window=window),
      "proportionality": proportionality(s_opt, [line.direction_slope for line in lines]),
      "window": window,
  }
  if all(np.all(np.isfinite(line.direction_slopes)) for line in lines):
    lr = learning_rates[0] if run_learning_rate is None else run_learning_rate
    limit = min(len(line.direction_slopes) + len(line.slopes) for line in lines)
    sizes = [b for b in batch_sizes if b <= limit]
    relations = [batch_size_relation(line, sizes, learning_rate=lr) for line in lines]
    out["batch_size"] = {
        "sizes": np.array(sizes),
        "learning_rate": lr,
        **{k: np.stack([r[k] for r in relations]) for k in ("slope", "sgd", "pal")},
    }
  return out


def smooth(values: Any, kernel: int) -> np.ndarray:
  """Moving average over ``kernel`` points (seed 003 smooths with 25), ignoring NaNs.

  ``out_k`` is the mean of the finite values among the ``kernel`` points centred
  on ``k`` (fewer at the ends, ``np.convolve(..., mode="same")``); NaN when none is
  finite.

  Args:
    values: ``[n]`` the values, in training order.
    kernel: the window's size; ``<= 1`` returns the values unchanged.

  Returns:
    The smoothed ``float64`` array ``[n]``.

  Example:
    >>> smooth([1.0, 2.0, np.nan, 4.0], 3).tolist()
    [1.5, 1.5, 3.0, 4.0]

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Fig. 6 and 15 ("Average smoothing with a kernel size of 25",
    seed 003).
  """
  values = np.asarray(values, np.float64)
  if kernel <= 1 or len(values) == 0:
    return values
  finite = np.isfinite(values)
  filled = np.where(finite, values, 0.0)
  window = np.ones(kernel)
  total = np.convolve(filled, window, mode="same")
  count = np.convolve(finite.astype(np.float64), window, mode="same")
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
