"""The settings of a landscape run, the saved lines, and the report of what they show.

Recording the lines along a run of the repository's training harness is the harness's
(``train.landscape.record``); everything here takes measured lines.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from optax_ls.landscape import _analysis, _plots
from optax_ls.landscape._measure import DEFAULT_MU, Line, grid

LINES_DIR = "lines"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.txt"


@dataclasses.dataclass(frozen=True)
class Settings:
  """What is measured along each line of a run.

  Attributes:
    every: measure the line of every ``every``-th update (the first is step 0).
    examples: the size of the analysis set (the "full batch"): this many training
      examples, drawn once, without augmentation, rounded down to whole batches;
      None for the whole training split. Seed 003 uses the whole (8%) training set.
    interval: the grid's interval (seed 003: ``(-0.5, 0.5)``).
    resolution: the grid's spacing (seed 003: 0.006).
    mu: PAL's measuring step for the anchors.
    max_widenings: how often the grid may grow by its own size beyond an edge.
    batches_per_pass: batches evaluated together in one pass (``vmap``).
    steps_per_pass: step sizes evaluated together in one pass.
    bn_train_mode: BatchNorm with batch statistics (as the training loss sees
      it; default) or with the running averages (inference mode).
    window: the half-width of the fits and shape distances (None: seed 003's
      0.2 for SGD, 0.5 with momentum). ``train.landscape.record`` does not use it; the command
      ``python -m train.landscape`` resolves None and passes it to
      :func:`write_report`.

  Example:
    >>> settings = Settings(every=5, examples=256).validate()
    >>> len(grid(*settings.interval, settings.resolution)), settings.mu
    (167, 0.1)

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 3-4 (seed 003: a line per update, the whole
    training set, ``[-0.5, 0.5]`` at 0.006; windows 0.2 and 0.5).
  """

  every: int = 10
  examples: int | None = None
  interval: tuple[float, float] = (-0.5, 0.5)
  resolution: float = 0.006
  mu: float = DEFAULT_MU
  max_widenings: int = 4
  batches_per_pass: int | None = 1
  steps_per_pass: int | None = 1
  bn_train_mode: bool = True
  window: float | None = None

  def validate(self) -> Settings:
    """Checks the settings.

    Returns:
      The settings themselves.

    Raises:
      ValueError: when ``every < 1``, ``examples < 1``, ``mu <= 0`` or the grid is
        not valid (see :func:`grid`).
    """
    if self.every < 1:
      raise ValueError(f"`every` must be >= 1, got {self.every}.")
    if self.examples is not None and self.examples < 1:
      raise ValueError(f"`examples` must be >= 1 or None, got {self.examples}.")
    if not self.mu > 0:
      raise ValueError(f"`mu` must be positive, got {self.mu}.")
    grid(*self.interval, self.resolution)  # raises on a bad grid
    return self


def load_lines(directory: str) -> list[Line]:
  """The lines saved under ``directory`` (a run's ``out`` or its ``lines/``), in training order.

  Reads every ``line_*.npz`` written by the harness's ``train.landscape.record`` (or
  :meth:`Line.save`) from ``directory/lines`` when it exists, else from ``directory``.

  Args:
    directory: a run's output directory or its ``lines`` directory.

  Returns:
    The :class:`Line` objects, sorted by their training step.

  Raises:
    FileNotFoundError: when the directory does not exist or holds no line file.

  Example:
    >>> import os, tempfile
    >>> import jax.numpy as jnp
    >>> from optax_ls.landscape import LineMeter, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> meter = LineMeter(loss_fn)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...   os.makedirs(os.path.join(tmp, "lines"))
    ...   for t in (20, 10):
    ...     line = meter.measure(jnp.ones(1), -jnp.ones(1), jnp.zeros((2, 4, 1)),
    ...                          steps=grid(-1.0, 3.0, 0.5), step=t)
    ...     line.save(os.path.join(tmp, "lines", f"line_{t:06d}.npz"))
    ...   [(line.step, len(line.steps)) for line in load_lines(tmp)]
    [(10, 9), (20, 9)]

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 3 (seed 003).
  """
  lines_dir = os.path.join(directory, LINES_DIR)
  if os.path.isdir(lines_dir):
    directory = lines_dir
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"No such directory: {directory}")
  names = sorted(n for n in os.listdir(directory) if n.startswith("line_") and n.endswith(".npz"))
  if not names:
    raise FileNotFoundError(f"No line_*.npz files in {directory}.")
  lines = [Line.load(os.path.join(directory, n)) for n in names]
  return sorted(lines, key=lambda line: line.step)


def headline(analysis: dict[str, Any], lines: list[Line]) -> dict[str, float]:
  """The numbers seed 003's core results 1-3 rest on, for one run.

  Medians over the lines unless named otherwise; a strategy's improvement share is
  ``(l(0) - l(s_upd)) / (l(0) - l(s_opt))``, its share of the best improvement.

  Args:
    analysis: the output of :func:`analyse` for ``lines``.
    lines: the measured lines, in training order.

  Returns:
    A dict of floats: ``lines``; ``seconds_per_line_median`` and
    ``points_per_line_median`` (the measuring cost); ``mae_degree1_median``,
    ``mae_degree2_median``, ``mae_degree2_max`` and
    ``mae_degree2_relative_median`` (the degree-2 MAE over the range
    ``max - min`` of ``l`` in the window; core result 1); ``curvature_first`` and
    ``curvature_last`` (``a`` of the first and last line's parabola);
    ``s_opt_median``; ``run_step_over_s_opt_median`` (``s_upd / s_opt``);
    ``run_improvement_share_median``; ``distance_consecutive_median`` (the shape
    distance of consecutive lines; NaN for one line);
    ``<strategy>_improvement_share_median`` for ``sgd_<lr>``, ``pal``, ``fbpal``
    and ``mini_exact``; ``proportionality_<key>`` for each entry of
    :func:`proportionality` (core result 2); and, with a batch-size relation,
    ``slope_ratio_<b>_to_<b'>_median``, ``|l'_b(0)| / |l'_b'(0)|`` of consecutive
    batch sizes (core result 3).

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_ls.landscape import LineMeter, analyse, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.array([[0.0], [-1.0], [-2.0], [-3.0]])  # the direction batch
    >>> meter = LineMeter(loss_fn)
    >>> lines = [  # l(s) = 0.5 (w0 - s)^2: s_opt = w0; the run's step 0.25
    ...     meter.measure(jnp.full(1, w0), -jnp.ones(1), jnp.zeros((2, 4, 1)), direction_batch=mine,
    ...                   steps=grid(-1.0, 3.0, 0.05), update_norm=0.25, step=t)
    ...     for t, w0 in enumerate((1.0, 0.5))]
    >>> numbers = headline(analyse(lines, batch_sizes=(2, 4, 8)), lines)
    >>> numbers["lines"], round(numbers["run_step_over_s_opt_median"], 3)  # 0.25 / (1, 0.5)
    (2, 0.375)
    >>> round(numbers["proportionality_c"], 3), round(numbers["slope_ratio_2_to_4_median"], 3)
    (0.341, 1.45)

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 4-6, Eq. 4 (seed 003).
  """
  strategies = analysis["strategies"]
  s_opt = strategies["s_opt"]["step"]
  run = strategies["run"]["step"]
  best = strategies["s_opt"]["improvement"]
  with np.errstate(invalid="ignore", divide="ignore"):
    run_ratio = run / s_opt
    run_share = strategies["run"]["improvement"] / best
  full_range = np.array([np.ptp(line.full[np.abs(line.steps) <= analysis["window"] + 1e-12])
                         for line in lines])
  out = {
      "lines": len(lines),
      "seconds_per_line_median": float(np.median(analysis["seconds"])),
      "points_per_line_median": float(np.median([len(line.steps) for line in lines])),
      "mae_degree1_median": float(np.median(analysis["mae1"])),
      "mae_degree2_median": float(np.median(analysis["mae2"])),
      "mae_degree2_max": float(np.max(analysis["mae2"])),
      "mae_degree2_relative_median": float(np.median(analysis["mae2"] / full_range)),
      "curvature_first": float(analysis["curvature"][0]),
      "curvature_last": float(analysis["curvature"][-1]),
      "s_opt_median": float(np.nanmedian(s_opt)),
      "run_step_over_s_opt_median": float(np.nanmedian(run_ratio)),
      "run_improvement_share_median": float(np.nanmedian(run_share)),
      "distance_consecutive_median": float(np.median(np.diag(analysis["distances"], 1)))
      if len(lines) > 1 else float("nan"),
  }
  for name, values in strategies.items():
    if name.startswith("sgd_") or name in ("pal", "fbpal", "mini_exact"):
      with np.errstate(invalid="ignore", divide="ignore"):
        out[f"{name}_improvement_share_median"] = float(np.nanmedian(values["improvement"] / best))
  out.update({f"proportionality_{k}": float(v) for k, v in analysis["proportionality"].items()})
  if "batch_size" in analysis:
    relation = analysis["batch_size"]
    for j in range(len(relation["sizes"]) - 1):
      ratio = relation["slope"][:, j] / relation["slope"][:, j + 1]
      out[f"slope_ratio_{relation['sizes'][j]}_to_{relation['sizes'][j + 1]}_median"] = float(
          np.median(ratio))
  return out


def format_headline(numbers: dict[str, float]) -> str:
  """The report's text: one line per finding.

  The measuring cost, the parabola fit (core result 1), the curvature, the run's
  step against ``s_opt``, the proportionality ``s_opt ~ c |l'_m(0)|`` (core
  result 2), each strategy's share of the best improvement, the slope ratio per
  batch-size doubling (core result 3, when measured) and the shape distance of
  consecutive lines (when there are several).

  Args:
    numbers: the output of :func:`headline`.

  Returns:
    The text, lines separated by ``\\n`` (no trailing newline).

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_ls.landscape import LineMeter, analyse, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.array([[0.0], [-1.0], [-2.0], [-3.0]])  # the direction batch
    >>> meter = LineMeter(loss_fn)
    >>> lines = [  # l(s) = 0.5 (w0 - s)^2: s_opt = w0; the run's step 0.25
    ...     meter.measure(jnp.full(1, w0), -jnp.ones(1), jnp.zeros((2, 4, 1)), direction_batch=mine,
    ...                   steps=grid(-1.0, 3.0, 0.05), update_norm=0.25, step=t)
    ...     for t, w0 in enumerate((1.0, 0.5))]
    >>> numbers = headline(analyse(lines, batch_sizes=(2, 4, 8)), lines)
    >>> text = format_headline(numbers)
    >>> len(text.splitlines()), text.splitlines()[2]
    (8, 'curvature of the fitted parabola: first line 0.5, last 0.5')
    >>> text.splitlines()[4][:56]
    "s_opt ~ c |l'_m(0)| (core result 2): c = 0.341, R^2 0.56"

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 4-6 (seed 003).
  """
  share = numbers.get
  lines = [
      f"lines measured: {numbers['lines']}, {numbers['seconds_per_line_median']:.2f} s per line "
      f"(median; {numbers['points_per_line_median']:.0f} grid points)",
      f"parabola fit (core result 1): median MAE degree 2 {numbers['mae_degree2_median']:.2e} "
      f"(max {numbers['mae_degree2_max']:.2e}; {100 * numbers['mae_degree2_relative_median']:.2f}"
      f"% of the loss range in the window) vs degree 1 {numbers['mae_degree1_median']:.2e}",
      f"curvature of the fitted parabola: first line {numbers['curvature_first']:.3g}, last "
      f"{numbers['curvature_last']:.3g}",
      f"run's step vs s_opt: median ratio {numbers['run_step_over_s_opt_median']:.2f}, median "
      f"share of the best improvement {numbers['run_improvement_share_median']:.2f}",
      f"s_opt ~ c |l'_m(0)| (core result 2): c = {numbers['proportionality_c']:.3g}, R^2 "
      f"{numbers['proportionality_r2']:.2f}, Pearson {numbers['proportionality_pearson']:.2f}, "
      f"CV of s_opt/|l'_m(0)| {numbers['proportionality_ratio_cv']:.2f}",
  ]
  strategies = [k for k in numbers if k.endswith("_improvement_share_median")
                and not k.startswith("run_")]
  if strategies:
    lines.append("share of the best improvement l(0) - l(s_opt), median: " + ", ".join(
        f"{k[: -len('_improvement_share_median')]} {share(k):.2f}" for k in strategies))
  ratios = [k for k in numbers if k.startswith("slope_ratio_")]
  if ratios:
    lines.append("|l'_b(0)| / |l'_2b(0)| per doubling (core result 3; expected 2), median: "
                 + ", ".join(f"{k[len('slope_ratio_'):-len('_median')].replace('_to_', '->')} "
                             f"{numbers[k]:.2f}" for k in ratios))
  if numbers.get("distance_consecutive_median") == numbers.get("distance_consecutive_median"):
    lines.append(f"shape distance of consecutive lines: median "
                 f"{numbers['distance_consecutive_median']:.3g}")
  return "\n".join(lines)


def _jsonable(value: Any) -> Any:
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  if isinstance(value, list | tuple):
    return [_jsonable(v) for v in value]
  if isinstance(value, float | np.floating):
    return float(value) if np.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value


def saved_settings(out: str) -> dict[str, Any]:
  """What a run's ``summary.json`` says of it: ``learning_rate``, ``window``, ``title``, ``extra``.

  Args:
    out: the run's output directory.

  Returns:
    A dict with ``extra`` (the ``settings`` written by :func:`write_report`) and,
    where known, ``learning_rate``, ``window`` and ``title``; empty when there is
    no summary (lines copied without it).

  Example:
    >>> import json, os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...   summary = {"settings": {"learning_rate": 0.1, "title": "sgd"},
    ...              "analysis": {"window": 0.2}}
    ...   with open(os.path.join(tmp, "summary.json"), "w") as f:
    ...     json.dump(summary, f)
    ...   found = saved_settings(tmp)
    >>> found["learning_rate"], found["window"], found["title"]
    (0.1, 0.2, 'sgd')

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021 (seed 003).
  """
  path = os.path.join(out, SUMMARY_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    summary = json.load(f)
  extra = summary.get("settings") or {}
  found: dict[str, Any] = {"extra": extra}
  # The run's learning rate as its recorder resolved it, else the one its config names.
  lr = extra.get("learning_rate")
  optimizers = (extra.get("config") or {}).get("optimizers") or []
  if lr is None and optimizers:
    lr = optimizers[0].get("learning_rate")
  if lr is not None:
    found["learning_rate"] = lr
  window = (summary.get("analysis") or {}).get("window")
  if window:
    found["window"] = window
  if "title" in extra:
    found["title"] = extra["title"]
  return found


def write_report(lines: list[Line], out: str, *, window: float = 0.2,
                 learning_rates=_analysis.DEFAULT_LEARNING_RATES, title: str = "",
                 extra: dict[str, Any] | None = None) -> tuple[str, list[str]]:
  """Analyses ``lines``, writes ``summary.json``, ``report.txt`` and the figures into ``out``.

  :func:`analyse` (default batch sizes, SGD's learning rate the first of
  ``learning_rates``), :func:`headline`, :func:`format_headline` and
  :func:`plot_all`. ``summary.json`` holds ``settings`` (``extra``), ``headline``
  and the whole ``analysis`` (NaN written as ``null``); ``report.txt`` the text.

  Args:
    lines: the measured lines, in training order.
    out: the directory written into (created when missing).
    window: the half-width of the fits and shape distances (seed 003: 0.2 for
      SGD, 0.5 with momentum).
    learning_rates: the SGD learning rates compared (``sgd_<lr>`` strategies).
    title: the figures' title (none when empty).
    extra: what else to store under ``settings`` in ``summary.json`` (the
      command stores the config, the settings, its arguments and the title).

  Returns:
    ``(text, paths)``: the report's text and the paths of the figures.

  Example:
    >>> import os, tempfile
    >>> import jax.numpy as jnp
    >>> from optax_ls.landscape import LineMeter, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.linspace(-3.0, 0.0, 16)[:, None]  # a direction batch of 16 examples
    >>> meter = LineMeter(loss_fn)
    >>> lines = [  # l(s) = 0.5 (w0 - s)^2: s_opt = w0; the run's step 0.25
    ...     meter.measure(jnp.full(1, w0), -jnp.ones(1), jnp.zeros((2, 16, 1)),
    ...                   direction_batch=mine, steps=grid(-1.0, 3.0, 0.05), update_norm=0.25,
    ...                   step=t)
    ...     for t, w0 in enumerate((1.0, 0.5))]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...   text, paths = write_report(lines, tmp)
    ...   sorted(os.listdir(tmp))  # doctest: +NORMALIZE_WHITESPACE
    ['batch_size.png', 'distances.png', 'fits.png', 'lines.png', 'report.txt', 'steps.png',
     'summary.json']
    >>> print(text.splitlines()[2])
    curvature of the fitted parabola: first line 0.5, last 0.5

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 4-6, Fig. 2-4, 6-7 (seed 003).
  """
  analysis = _analysis.analyse(lines, window=window, learning_rates=learning_rates)
  numbers = headline(analysis, lines)
  text = format_headline(numbers)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, SUMMARY_FILE), "w") as f:
    json.dump(_jsonable({"settings": extra or {}, "headline": numbers, "analysis": analysis}), f,
              indent=1)
  with open(os.path.join(out, REPORT_FILE), "w") as f:
    f.write(text + "\n")
  paths = _plots.plot_all(lines, analysis, out, title=title)
  return text, paths

