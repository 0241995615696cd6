"""Recording lines along a training run of the harness, and the report of what they show."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from optax_ls.landscape import _analysis, _plots
from optax_ls.landscape._measure import DEFAULT_MU, Line, LineMeter, grid, unit_direction

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
      0.2 for SGD, 0.5 with momentum). :func:`record` does not use it; the command
      ``python -m optax_ls.landscape`` resolves None and passes it to
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


def _analysis_set(source, spec, batch_size: int, examples: int | None, seed: int):
  from train import data

  count = len(source) if examples is None else min(examples, len(source))
  count -= count % batch_size
  if count < batch_size:
    raise ValueError(f"The analysis set needs at least one batch of {batch_size} examples; "
                     f"asked for {examples} of {len(source)}.")
  indices = np.sort(np.random.default_rng([seed, 3]).permutation(len(source))[:count])
  x, y = source.get(indices)
  xs, ys = [], []
  for bx, by, _ in data.eval_batches(data.Dataset(x, y), spec, batch_size=batch_size):
    xs.append(bx)
    ys.append(by)
  return jnp.asarray(np.stack(xs)), jnp.asarray(np.stack(ys))


def record(config: Any, settings: Settings = Settings(), *, verbose: bool = True) -> list[Line]:
  """Trains ``config``'s one optimizer and measures the line of every ``settings.every``-th update.

  The line of update ``u_t = theta_{t+1} - theta_t`` runs through the parameters
  before it, ``l(s) = L(theta_t + s d)`` with ``d = u_t / ||u_t||``; the run's own
  step is ``s_upd = ||u_t||`` (seed 003, Eq. 1; for SGD ``d = -g / ||g||`` and
  ``s_upd = lr ||g||``). ``L`` is the mean training loss (cross-entropy plus the
  run's L2 term) over the analysis set: ``settings.examples`` training examples
  drawn once, without augmentation, in batches of ``config.batch_size``; the
  direction batch is the training batch of the update. A zero update (a measuring
  call of LABPAL, an accepting call of GOLS-I) defines no line: the next non-zero
  update is measured instead.

  With ``config.out``, each line goes to ``out/lines/line_<step>.npz`` as it is
  measured, so that an interrupted run keeps what it measured.

  Args:
    config: a :class:`train.config.Config` with exactly one optimizer.
    settings: what to measure (:class:`Settings`).
    verbose: print the run's setting and show a progress bar (loss, lines
      measured, seconds per line).

  Returns:
    The measured :class:`Line` objects, in training order.

  Raises:
    ValueError: when the config or the settings are not valid, the config has
      not exactly one optimizer, or the data hold less than one batch.

  Example:
    >>> import os, tempfile
    >>> from train.config import Config
    >>> from train.optimizers import OptimizerConfig
    >>> sgd = OptimizerConfig("sgd", learning_rate=0.1)
    >>> with tempfile.TemporaryDirectory() as tmp:  # one SGD step of the embedded digits MLP
    ...   config = Config(optimizers=(sgd,), max_steps=1, out=tmp)
    ...   settings = Settings(every=1, examples=32, resolution=0.1, max_widenings=0)
    ...   lines = record(config, settings, verbose=False)
    ...   os.listdir(os.path.join(tmp, "lines"))
    ['line_000000.npz']
    >>> len(lines), lines[0].steps.shape, lines[0].batch_losses.shape  # 11 steps, 1 batch
    (1, (11,), (11, 1))
    >>> round(lines[0].update_norm / abs(lines[0].direction_slope), 4)  # s_upd = lr ||g||
    0.1

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 3, Eq. 1 (seed 003).
  """
  from models import get_model
  from train import data
  from train.optimizers import learning_rate_of
  from train.train import create_state, cross_entropy, init_variables, train_step

  config.validate()
  settings.validate()
  if len(config.optimizers) != 1:
    names = [o.name for o in config.optimizers]
    raise ValueError(f"A landscape run follows one optimizer's trajectory; the config has {names}: "
                     "choose one (--optimizer NAME).")
  optimizer = config.optimizers[0]
  train_source, _, spec = data.load(config.dataset, data_dir=config.data_dir, seed=config.seed,
                                    test_fraction=config.test_fraction)
  batch_size = config.batch_size
  steps_per_epoch = data.steps_per_epoch(len(train_source), batch_size)
  if steps_per_epoch < 1:
    raise ValueError(f"`batch_size` {batch_size} exceeds the {len(train_source)} training "
                     "examples.")
  model = get_model(config.model, num_classes=spec.num_classes, **config.model_kwargs)
  sample, _ = next(data.batches(train_source, spec, batch_size=1, seed=0, epoch=0, augment=False))
  variables = init_variables(model, jax.random.key(config.seed), sample)
  total_steps = config.epochs * steps_per_epoch
  last = total_steps if config.max_steps is None else min(config.max_steps, total_steps)
  state = create_state(model, variables, optimizer, seed=config.seed,
                       steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                       dataset_size=len(train_source), batch_size=batch_size)
  analysis_set = _analysis_set(train_source, spec, batch_size, settings.examples, config.seed)
  key = jax.random.key(config.seed + 2)
  train_mode = settings.bn_train_mode

  def example_losses(point, batch):
    params, batch_stats = point
    x, y = batch
    logits = model.apply({"params": params, "batch_stats": batch_stats}, x, train=train_mode,
                         rngs={"dropout": key}, mutable=["batch_stats"] if train_mode else False)
    logits = logits[0] if train_mode else logits
    loss = cross_entropy(logits, y)
    if state.l2:
      loss = loss + 0.5 * state.l2 * sum(jnp.sum(p.astype(jnp.float32) ** 2)
                                         for p in jax.tree.leaves(params))
    return loss

  meter = LineMeter(example_losses, batches_per_pass=settings.batches_per_pass,
                    steps_per_pass=settings.steps_per_pass)
  step_fn = jax.jit(train_step)  # not donated: the parameters before the update define the line
  line_grid = grid(*settings.interval, settings.resolution)
  lines_dir = None
  if config.out is not None:
    lines_dir = os.path.join(config.out, LINES_DIR)
    os.makedirs(lines_dir, exist_ok=True)
  if verbose:
    lr = learning_rate_of(optimizer)
    lr_text = "-" if lr is None else f"{lr:g}"
    print(f"landscape: {config.name}, {optimizer.name} (lr {lr_text}, momentum "
          f"{optimizer.momentum:g}), {last} steps, a line every {settings.every}; analysis set "
          f"{analysis_set[1].size} examples in {analysis_set[1].shape[0]} batches, grid "
          f"{len(line_grid)} points on [{settings.interval[0]:g}, {settings.interval[1]:g}]",
          flush=True)
    if config.max_steps is not None and config.max_steps > total_steps:
      print(f"landscape: max_steps {config.max_steps} exceeds the run's {config.epochs} epochs of "
            f"{steps_per_epoch} steps: it stops after {total_steps} (raise --epochs for more)",
            flush=True)

  lines: list[Line] = []
  pending = False
  bar = tqdm(total=last, disable=not verbose, file=sys.stderr, desc=optimizer.name,
             dynamic_ncols=True)
  step = 0
  epoch = 0
  while step < last:
    for x, y in data.batches(train_source, spec, batch_size=batch_size, seed=config.seed,
                             epoch=epoch, augment=config.augment):
      if step >= last:
        break
      new_state, metrics = step_fn(state, jnp.asarray(x), jnp.asarray(y))
      pending = pending or step % settings.every == 0
      if pending:
        update = jax.tree.map(jnp.subtract, new_state.params, state.params)
        try:
          direction, norm = unit_direction(update)
        except ValueError:
          direction = None  # a zero update: measure the next one
        if direction is not None:
          zeros = jax.tree.map(jnp.zeros_like, state.batch_stats)
          line = meter.measure(
              (state.params, state.batch_stats), (direction, zeros), analysis_set,
              direction_batch=(jnp.asarray(x), jnp.asarray(y)), steps=line_grid,
              mu=settings.mu, include=(norm,), max_widenings=settings.max_widenings,
              update_norm=norm, step=step)
          lines.append(line)
          pending = False
          if lines_dir is not None:
            line.save(os.path.join(lines_dir, f"line_{step:06d}.npz"))
          bar.set_postfix(loss=f"{float(metrics['loss']):.3f}", lines=len(lines),
                          s_per_line=f"{line.seconds:.1f}")
      state = new_state
      step += 1
      bar.update(1)
    epoch += 1
  bar.close()
  return lines


def load_lines(directory: str) -> list[Line]:
  """The lines saved under ``directory`` (a run's ``out`` or its ``lines/``), in training order.

  Reads every ``line_*.npz`` written by :func:`record` (or :meth:`Line.save`) from
  ``directory/lines`` when it exists, else from ``directory``.

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
  """
  path = os.path.join(out, SUMMARY_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    summary = json.load(f)
  extra = summary.get("settings") or {}
  found: dict[str, Any] = {"extra": extra}
  optimizers = (extra.get("config") or {}).get("optimizers") or []
  if optimizers:
    from train.optimizers import DEFAULT_LEARNING_RATES

    # None: the optimizer's default rate (train.optimizers.learning_rate_of), if it has one.
    first = optimizers[0]
    lr = first.get("learning_rate")
    lr = DEFAULT_LEARNING_RATES.get(first.get("name")) if lr is None else lr
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

