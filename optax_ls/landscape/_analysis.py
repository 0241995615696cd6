"""What seed 003 reads off the measured lines: fits, minima, update steps, distances, batch size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from optax_ls.landscape._measure import Line

DEFAULT_LEARNING_RATES = (0.1, 0.05, 0.01)
DEFAULT_BATCH_SIZES = (16, 32, 64, 128, 256, 512)


class Fit(NamedTuple):
  """A least-squares polynomial fit of a line.

  Attributes:
    coefficients: highest degree first (``np.polyval`` order); for degree 2,
      ``(a, b, c)`` of ``a s^2 + b s + c``.
    mae: the mean absolute error of the fit at the fitted points.
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

  Example:
    >>> s = np.linspace(-0.5, 0.5, 11)
    >>> fit = fit_polynomial(s, 3 * s**2 - s + 2, 2)
    >>> np.round(fit.coefficients, 6).tolist(), fit.mae < 1e-12
    ([3.0, -1.0, 2.0], True)
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

  The lowest grid point is refined by the parabola through it and its two
  neighbours (exact for a parabola); at an edge of the grid, the edge is returned.

  Example:
    >>> s = np.arange(-0.5, 0.5, 0.03)
    >>> round(minimum(s, (s - 0.1234) ** 2), 6)
    0.1234
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

  NaN outside the measured grid.
  """
  for anchor, losses in zip(line.anchors, line.anchor_losses, strict=True):
    if s == anchor:
      return float(losses.mean())
  if not np.isfinite(s) or s < line.steps[0] or s > line.steps[-1]:
    return float("nan")
  return float(np.interp(s, line.steps, line.full))


def improvement(line: Line, s: float) -> float:
  """``l(0) - l(s)``: how much a step ``s`` along the line lowers the full-batch loss."""
  return line.value_at_zero - loss_at(line, s)


def parabolic_step(value0: float, slope0: float, value_mu: float, mu: float) -> float:
  """The minimum of the parabola through ``l(0)``, ``l'(0)`` and ``l(mu)`` (seed 003, Eq. 2).

  ``s = -l'(0) mu^2 / (2 (l(mu) - l(0) - l'(0) mu))``; NaN when the parabola has
  no minimum ahead (curvature <= 0 or slope >= 0): PAL then falls back to other
  rules, which this analysis does not model.

  Example:
    >>> round(parabolic_step(1.0, -2.0, 1.0 - 2.0 * 0.1 + 4.0 * 0.01, 0.1), 12)  # 4s^2 - 2s + 1
    0.25
  """
  curvature = value_mu - value0 - slope0 * mu
  if not (curvature > 0 and slope0 < 0):
    return float("nan")
  return float(-slope0 * mu**2 / (2 * curvature))


def strategy_steps(line: Line, *, learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES
                   ) -> dict[str, float]:
  """The step each strategy of seed 003 §5 takes along ``line``.

  * ``run``: the training run's own update length.
  * ``sgd_<lr>``: SGD's step ``lr |l'_m(0)|`` (``lr ||g||`` on SGD's own lines).
  * ``pal``: PAL's parabola on the direction batch (Eq. 2, at the anchor ``mu``).
  * ``fbpal``: the same parabola on the full-batch loss.
  * ``mini_exact``: the exact line search on the direction batch (its minimum).
  * ``s_opt``: the minimum of the full-batch loss, the locally optimal step.
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

  Each line is taken on ``[-window, window]`` (seed 003: 0.2 for SGD, 0.5 with
  momentum), shifted so that its minimum there is 0; the distance of two lines is
  the mean absolute difference at the grid points of the first line (the other is
  interpolated when the grids differ).
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
  examples of the analysis set drawn without replacement.

  Returns:
    Per size, the indices into ``concat(direction examples, analysis examples)``.
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

  Returns:
    ``slope``: ``|l'_b(0)|`` (``||g_b||`` on SGD's lines); ``sgd``: ``l(0) - l(lr |l'_b(0)|)``;
    ``pal``: ``l(0) - l(s_pal,b)``; each ``[len(sizes)]``.
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

  Returns:
    ``c`` (the least-squares slope through the origin: the locally optimal SGD
    learning rate), ``r2`` (the fraction of the variance of ``s_opt`` that the fit
    through the origin explains), ``pearson`` (the correlation) and ``ratio_cv``
    (the coefficient of variation of ``s_opt / |l'_m(0)|``).

  Example:
    >>> g = np.array([1.0, 2.0, 4.0])
    >>> fit = proportionality(0.05 * g, g)
    >>> round(fit["c"], 6), round(fit["r2"], 6), round(fit["ratio_cv"], 6)
    (0.05, 1.0, 0.0)
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

  Args:
    lines: the measured lines.
    window: the half-width of the interval of the fits and shape distances.
    learning_rates: the SGD learning rates compared (``sgd_<lr>`` strategies).
    batch_sizes: the batch sizes of the batch-size relation (needs direction batches).
    run_learning_rate: the SGD learning rate of the batch-size relation's SGD
      (default: the first of ``learning_rates``).

  Returns:
    A dict of per-line arrays (``step``, ``mae1``, ``mae2``, ``curvature``,
    ``slope`` of the degree-2 fit, ``seconds``), per-strategy arrays under
    ``strategies[name] = {"step", "distance", "improvement"}``, the ``distances``
    matrix, the ``batch_size`` relation (arrays ``[L, len(batch_sizes)]``) and the
    ``proportionality`` of ``s_opt`` to ``|l'_m(0)|``.
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

  Example:
    >>> smooth([1.0, 2.0, np.nan, 4.0], 3).tolist()
    [1.5, 1.5, 3.0, 4.0]
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
