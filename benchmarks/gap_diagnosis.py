"""Where a line search's gap to the tuned baselines comes from: step sizes and losses by phase.

Reads the result files of the training-quality protocol (``benchmarks/quality.py`` for the
image suites, ``benchmarks/quality_lm.py`` for ``lm``) and compares every line search (the
runs of the ``line_search`` group, and TLR's other initial rates, ``tlr_init``) with the
tuned point of one baseline, its *reference*, using only what the runs logged: the step
size applied at each update (the ``learning_rate`` of the optimizer's state; for the tuned
baselines, their scheduled rate), the mini-batch training loss and the final validation
score.

References. Each baseline group's tuned point is its grid point with the best mean
validation accuracy over the seeds (lowest mean ``val_bpc`` on ``lm``), picked by
``benchmarks.quality.tuned`` (``benchmarks.quality_lm.tuned`` on ``lm``). A line search
whose direction is Adam's (``adam_sls``, ``adam_salsa``, any method named ``adam_*``) is
compared with the tuned Adam-type baseline: the better of ``adam`` (warm-up + cosine) and
``adam_const`` on the image suites, ``adamw`` on ``lm``. Every other line search is
compared with tuned SGD (``sgd``, heavy-ball momentum 0.9 and the step schedule). Without
that group (``lm`` has no SGD baseline; a partial file may lack any group) the step-size
ratio is marked not comparable (``n/c``) and the loss and validation columns use the best
tuned reference group of the file instead. SGD's heavy-ball momentum 0.9 makes its
effective step ``lr / (1 - 0.9) = 10 lr`` (the step per unit of a steady gradient): the
reference's step is that effective step, ``lr / (1 - momentum)``, so that a plain SGD-direction
line search compares with what SGD actually moves. Adam's first moment is an average, so its
rate is its step.

Phases. The updates ``1..T`` of a run (``T`` = epochs x updates per epoch, or ``steps``)
are split into start (``u <= 0.1 T``), middle (``0.1 T < u <= 0.8 T``) and end
(``u > 0.8 T``). The stored curves hold at most 400 subsampled updates; each curve is put
on the grid of all ``T`` updates by taking, at each update, the value of the nearest stored
point (so a stored point stands for the updates around it, and zeros or missing values are
neither invented nor smeared by the interpolation; updates farther than one stored spacing
beyond a curve's ends stay missing). Per phase and seed:

* the geometric mean of the step size, over the updates with a positive finite step
  (zeros, negative steps and missing values left out; a warm-up's rate of 0 at update 1
  too), then the geometric mean over the seeds; the *ratio* is the line search's divided
  by its reference's;
* the mean mini-batch training loss (nats) over the updates with a finite loss, then the
  mean over seeds; the *loss gap* is the line search's minus its reference's;
* the fraction of the updates whose applied step is exactly 0 (no progress: LABPAL's
  measuring calls, a line search that rejects every trial), mean over seeds.

Collapse: per seed, the first stored update where the step size falls below
``1 / COLLAPSE_FACTOR`` of its running peak, both on a centred running median over
``COLLAPSE_WINDOW`` of the stored points (at least 3) of the positive steps, so one spike
or one dip does not count; reported as the median update over the seeds that collapse. The
validation gap is the line search's mean minus its reference's: accuracy points on the
image suites (negative: worse), bits per character on ``lm`` (positive: worse). Seeds are
not paired: each side averages over the seeds it has (a file may hold only some).

Diagnosis thresholds (each a clause of the row's text; ``no flag`` when none applies):

* ``diverged in k of n seeds``: runs with a non-finite loss;
* ``too large early``: start ratio ``> LARGE_EARLY`` (3) and start loss gap ``> 0``;
* ``steps Nx below the reference``: a phase's ratio ``< 1 / SMALL`` (5);
* ``steps Nx above the reference``: the middle phase's ratio ``> SMALL``, or the end
  phase's where the reference does not anneal;
* ``no decay``: end ratio ``> NO_DECAY`` (3) where the reference anneals (its middle
  geometric mean ``>= ANNEAL`` (3) times its end one) and the line search's own step does
  not (end over middle ``> 1 / ANNEAL``); ``less decay than the reference`` when it does;
* ``collapse at update N``: a collapse before the end phase (in the end phase it reads
  ``decays below 1/10 of its peak``);
* ``no step in x% of the <phase> phase's updates``: a phase's zero-step fraction
  ``> ZERO_STEPS`` (5%); ``negative step in x% of updates`` whenever there are any;
* ``training loss above the reference most in the <phase> phase``: the largest loss gap
  ``> LOSS_GAP`` (0.05 nats); ``training loss below the reference in every phase`` when
  every gap is ``< -LOSS_GAP``.

Outputs, per result file: ``<prefix>.md`` (a table with a row per line search and the
diagnosis) and ``<prefix>.png`` (each line search's step size over its reference's rate,
geometric mean over seeds on the grid of updates, log scale, with the phase boundaries).
The default prefix is ``benchmarks/results/gap_diagnosis_<suite>``; ``--out PREFIX``
replaces it for one file and becomes ``PREFIX_<suite>`` for several; a prefix already used
in the same call gets the result file's name instead of the suite.

Example:
  From the repository root::

    python -m benchmarks.gap_diagnosis benchmarks/results/quality_mnist.json
    python -m benchmarks.gap_diagnosis benchmarks/results/quality_lm.json --out /tmp/gap_lm
    python -m benchmarks.gap_diagnosis benchmarks/results/quality_*.json --out /tmp/gap

  >>> phase_bounds(1080)
  (108, 864)
  >>> [is_adam_direction(m) for m in ("adam_salsa", "adam_salsa_cooldown", "sls", "a_sls")]
  [True, True, False, False]
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks import quality as q
from benchmarks import quality_lm

PHASES = ("start", "middle", "end")
PHASE_FRACTIONS = (0.1, 0.8)
"""The ends of the start and middle phases, as fractions of the run's updates."""
ROW_GROUPS = ("line_search", "tlr_init")
"""The groups that get a row: the line searches at their defaults, TLR's other initial rates."""
ADAM_DIRECTION = ("adam_sls", "adam_salsa")
"""Line searches along Adam's direction (besides every method named ``adam_*``)."""
SGD_GROUPS = ("sgd",)
IMAGE_ADAM_GROUPS = ("adam", "adam_const")
LM_ADAM_GROUPS = ("adamw",)

SMALL = 5.0
"""A phase's ratio below ``1 / SMALL`` (above ``SMALL``): steps smaller (larger) than the
reference's."""
LARGE_EARLY = 3.0
"""Start ratio above this with a positive start loss gap: too large early."""
NO_DECAY = 3.0
"""End ratio above this where the reference anneals: no decay."""
ANNEAL = 3.0
"""The reference anneals when its middle geometric mean is at least this times its end one."""
COLLAPSE_FACTOR = 10.0
"""A collapse: the step size below ``1 / COLLAPSE_FACTOR`` of its running peak."""
COLLAPSE_WINDOW = 0.02
"""The running median of the collapse test, as a fraction of the stored points (at least 3)."""
ZERO_STEPS = 0.05
"""A phase's fraction of zero steps above this is flagged."""
LOSS_GAP = 0.05
"""Loss gaps (nats) beyond this are flagged."""
PLOT_POINTS = 1000
"""At most this many updates of the grid are drawn."""


def is_adam_direction(method: str) -> bool:
  """Whether the line search ``method`` steps along Adam's preconditioned direction."""
  return method in ADAM_DIRECTION or method.startswith("adam_")


def phase_bounds(total: int) -> tuple[int, int]:
  """The last update of the start phase and of the middle phase of a run of ``total``."""
  return tuple(int(math.floor(f * total + 1e-9)) for f in PHASE_FRACTIONS)


def phase_masks(total: int) -> dict[str, np.ndarray]:
  """Per phase, the boolean mask over the updates ``1..total`` in it."""
  updates = np.arange(1, total + 1)
  first, second = phase_bounds(total)
  return {"start": updates <= first, "middle": (updates > first) & (updates <= second),
          "end": updates > second}


def total_updates(payload: dict[str, Any]) -> int:
  """The updates of a run: ``steps`` (lm) or ``epochs x steps_per_epoch``, else the last
  stored update of any curve."""
  settings = payload.get("settings") or {}
  if settings.get("steps"):
    return int(settings["steps"])
  if settings.get("epochs") and settings.get("steps_per_epoch"):
    return int(settings["epochs"]) * int(settings["steps_per_epoch"])
  last = [max(r["curve"]["step"]) for r in payload.get("results", [])
          if (r.get("curve") or {}).get("step")]
  return int(max(last, default=0))


def _floats(values: Sequence[Any]) -> np.ndarray:
  """``values`` as float64, None and non-finite values as NaN."""
  out = np.asarray([np.nan if v is None else float(v) for v in values], np.float64)
  out[~np.isfinite(out)] = np.nan
  return out


def on_grid(steps: Sequence[int], values: Sequence[Any], total: int) -> np.ndarray:
  """A stored curve on the updates ``1..total``: the nearest stored point's value.

  Updates farther than one stored spacing before the first or after the last stored
  point are NaN, and so are missing or non-finite values.

  Example:
    >>> on_grid([1, 3, 5], [1.0, None, 0.0], 7).tolist()
    [1.0, 1.0, nan, nan, 0.0, 0.0, 0.0]
  """
  grid = np.arange(1, total + 1, dtype=np.float64)
  s = np.asarray(steps, np.float64)
  v = _floats(values)
  if not len(s) or total < 1:
    return np.full(total, np.nan)
  order = np.argsort(s, kind="stable")
  s, v = s[order], v[order]
  right = np.clip(np.searchsorted(s, grid), 0, len(s) - 1)
  left = np.clip(right - 1, 0, len(s) - 1)
  pick = np.where(np.abs(grid - s[left]) <= np.abs(s[right] - grid), left, right)
  out = v[pick]
  spacing = max(1.0, float(np.median(np.diff(s)))) if len(s) > 1 else 1.0
  out[(grid < s[0] - spacing) | (grid > s[-1] + spacing)] = np.nan
  return out


def _log_positive(values: np.ndarray) -> np.ndarray:
  with np.errstate(all="ignore"):
    return np.where(values > 0, np.log(np.where(values > 0, values, 1.0)), np.nan)


def _nanmean(values: Any, axis: int | None = None) -> Any:
  """The mean of the finite values (NaN where there are none), without warnings."""
  arr = np.asarray(values, np.float64)
  finite = np.isfinite(arr)
  count = np.sum(finite, axis=axis)
  total = np.sum(np.where(finite, arr, 0.0), axis=axis)
  with np.errstate(all="ignore"):
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _value(x: Any) -> float | None:
  x = float(x)
  return x if math.isfinite(x) else None


def collapse_update(steps: Sequence[int], step_sizes: Sequence[Any],
                    factor: float = COLLAPSE_FACTOR,
                    window: float = COLLAPSE_WINDOW) -> int | None:
  """The first stored update whose step size is below ``1 / factor`` of its running peak.

  Both on a centred running median of the positive finite steps over ``window`` of the
  points (an odd count, at least 3), so that one spike or one dip does not count.

  Example:
    >>> collapse_update(range(1, 101), [1.0] * 40 + [0.05] * 60)
    41
    >>> collapse_update(range(1, 101), [1.0] * 40 + [50.0] + [1.0] * 59) is None
    True
  """
  s = np.asarray(steps, np.float64)
  logs = _log_positive(_floats(step_sizes))
  keep = np.isfinite(logs)
  s, logs = s[keep], logs[keep]
  if len(logs) < 3:
    return None
  half = max(1, int(round(window * len(logs) / 2)))
  padded = np.pad(logs, half, mode="edge")
  smooth = np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)
  below = smooth < np.maximum.accumulate(smooth) - math.log(factor)
  return int(s[np.argmax(below)]) if below.any() else None


def _runs(results: list[dict[str, Any]], label: str) -> list[dict[str, Any]]:
  return [r for r in results if r["label"] == label]


def profile(runs: list[dict[str, Any]], total: int) -> dict[str, Any]:
  """Per phase, the statistics over the seeds of ``runs`` (the runs of one label).

  Returns ``log_step`` (mean over seeds of each seed's mean log positive step), ``loss``
  (mean over seeds of each seed's mean finite loss), ``zero`` and ``negative`` (mean over
  seeds of the fraction of updates whose step is 0, or negative), each a dict by phase
  (None where no seed has a value; also ``all`` for ``zero`` and ``negative``), and
  ``log_curve``: the mean over seeds of the log positive step at each update (NaN where
  none).
  """
  masks = phase_masks(total)
  masks_all = {**masks, "all": np.ones(total, bool)}
  logs, losses, zeros, negatives = [], [], [], []
  for run in runs:
    curve = run.get("curve") or {}
    steps = curve.get("step") or []
    size = on_grid(steps, curve.get("step_size") or [None] * len(steps), total)
    loss = on_grid(steps, curve.get("loss") or [None] * len(steps), total)
    logs.append(_log_positive(size))
    losses.append(loss)
    known = np.isfinite(size)
    zeros.append({p: np.sum((size == 0) & m) / np.sum(known & m) if np.sum(known & m)
                  else np.nan for p, m in masks_all.items()})
    negatives.append({p: np.sum((size < 0) & m) / np.sum(known & m) if np.sum(known & m)
                      else np.nan for p, m in masks_all.items()})
  log_curve = _nanmean(np.asarray(logs), axis=0) if logs else np.full(total, np.nan)
  per_seed_log = [{p: _nanmean(x[m]) for p, m in masks.items()} for x in logs]
  per_seed_loss = [{p: _nanmean(x[m]) for p, m in masks.items()} for x in losses]

  def over_seeds(per_seed: list[dict[str, float]], phases: Sequence[str]) -> dict[str, Any]:
    return {p: _value(_nanmean([d[p] for d in per_seed])) if per_seed else None
            for p in phases}

  return {"log_step": over_seeds(per_seed_log, PHASES),
          "loss": over_seeds(per_seed_loss, PHASES),
          "zero": over_seeds(zeros, (*PHASES, "all")),
          "negative": over_seeds(negatives, (*PHASES, "all")),
          "log_curve": log_curve}


def _normalised(results: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
  """Copies of the runs with the keys that ``benchmarks.quality.summarise_runs`` and
  ``tuned`` read (a missing metric as None, not diverged, an unknown rate as NaN)."""
  out = []
  for r in results:
    r = dict(r)
    r.setdefault(metric, None)
    r["diverged"] = bool(r.get("diverged", False))
    r["optimizer"] = dict(r.get("optimizer") or {})
    if r["optimizer"].get("learning_rate") is None:
      r["optimizer"]["learning_rate"] = math.nan
    out.append(r)
  return out


def is_lm(payload: dict[str, Any]) -> bool:
  """Whether ``payload`` is a result file of the ``lm`` suite (scored in bits per character)."""
  if (payload.get("settings") or {}).get("suite") == "lm":
    return True
  return any("val_bpc" in r for r in payload.get("results", []))


def references(payload: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
  """The tuned reference points of a result file: ``sgd``, ``adam`` (the Adam-type one) and
  ``best`` (the best of those two, the fallback of the loss and validation columns).

  Each is a ``benchmarks.quality.tuned`` point (its label, group, optimizer, statistics of
  the validation metric over seeds) or None where the file lacks the group.
  """
  lm = is_lm(payload)
  metric = "val_bpc" if lm else "val_accuracy"
  summary = q.summarise_runs(_normalised(payload.get("results", []), metric), (metric,))
  better = min if lm else max

  def best_of(groups: Sequence[str]) -> dict[str, Any] | None:
    points = [quality_lm.tuned(summary, g) if lm else q.tuned(summary, g) for g in groups]
    points = [p for p in points if p is not None]
    return better(points, key=lambda p: p[metric]["mean"], default=None)

  sgd = None if lm else best_of(SGD_GROUPS)
  adam = best_of(LM_ADAM_GROUPS if lm else IMAGE_ADAM_GROUPS)
  best = better([p for p in (sgd, adam) if p is not None], key=lambda p: p[metric]["mean"],
                default=None)
  return {"sgd": sgd, "adam": adam, "best": best, "summary": summary, "metric": metric}


def _ratio(log_a: float | None, log_b: float | None) -> float | None:
  return None if log_a is None or log_b is None else math.exp(log_a - log_b)


def effective_log_shift(reference: dict[str, Any] | None) -> float:
  """``-log(1 - momentum)`` of a heavy-ball reference (its effective step over its rate), else 0."""
  config = (reference or {}).get("optimizer") or {}
  momentum = config.get("momentum") or 0.0
  return -math.log(1.0 - momentum) if 0.0 < momentum < 1.0 else 0.0


def diagnose(payload: dict[str, Any]) -> list[dict[str, Any]]:
  """One row per line search of ``payload`` (a result file of the quality protocol).

  Each row: ``label``, ``method``, ``group``, ``seeds``, ``reference`` (the tuned point
  or None), ``comparable`` (whether the step sizes compare), ``step`` and
  ``reference_step`` (geometric means by phase), ``ratio``, ``loss_gap``, ``zero`` and
  ``negative`` (by phase, ``all`` too for the last two), ``collapse`` (``update``: the
  median over the seeds that collapse, ``seeds``, ``of``), ``diverged``, ``val_gap``
  (accuracy points, or bits per character on ``lm``), ``ratio_curve`` (the ratio at each
  update, NaN where unknown; None when not comparable), ``total`` and ``diagnosis`` (a
  list of clauses).
  """
  results = payload.get("results", [])
  total = total_updates(payload)
  refs = references(payload)
  summary, metric = refs["summary"], refs["metric"]
  lm = metric == "val_bpc"
  cache: dict[str, dict[str, Any]] = {}

  def prof(label: str) -> dict[str, Any]:
    if label not in cache:
      cache[label] = profile(_runs(results, label), total)
    return cache[label]

  rows = []
  for label, s in summary.items():
    if s["group"] not in ROW_GROUPS:
      continue
    runs = _runs(results, label)
    family = "adam" if is_adam_direction(s["method"]) else "sgd"
    reference = refs[family]
    comparable = reference is not None
    if reference is None:
      reference = refs["best"]
    mine = prof(label)
    theirs = prof(reference["label"]) if reference is not None else None
    step = {p: None if mine["log_step"][p] is None else math.exp(mine["log_step"][p])
            for p in PHASES}
    # Heavy-ball SGD moves lr / (1 - momentum) per unit of gradient in a steady state.
    shift = effective_log_shift(reference)
    ref_log = {p: None if theirs is None or theirs["log_step"][p] is None
               else theirs["log_step"][p] + shift for p in PHASES}
    ref_step = {p: None if ref_log[p] is None else math.exp(ref_log[p]) for p in PHASES}
    ratio = {p: _ratio(mine["log_step"][p], ref_log[p]) if comparable else None
             for p in PHASES}
    loss_gap = {p: None if theirs is None or mine["loss"][p] is None
                or theirs["loss"][p] is None else mine["loss"][p] - theirs["loss"][p]
                for p in PHASES}
    updates = [collapse_update((r.get("curve") or {}).get("step") or [],
                               (r.get("curve") or {}).get("step_size") or [])
               for r in runs]
    collapsed = [u for u in updates if u is not None]
    val_gap = None
    if reference is not None and s[metric]["mean"] is not None \
       and reference[metric]["mean"] is not None:
      val_gap = s[metric]["mean"] - reference[metric]["mean"]
      val_gap = val_gap if lm else 100 * val_gap
    ratio_curve = None
    if comparable:
      with np.errstate(all="ignore"):
        ratio_curve = np.exp(mine["log_curve"] - theirs["log_curve"] - shift)
    row = {
        "label": label, "method": s["method"], "group": s["group"], "seeds": s["seeds"],
        "reference": reference, "comparable": comparable, "step": step,
        "reference_step": ref_step, "ratio": ratio, "loss_gap": loss_gap,
        "zero": mine["zero"], "negative": mine["negative"],
        "collapse": {"update": int(np.median(collapsed)) if collapsed else None,
                     "seeds": len(collapsed), "of": len(runs)},
        "diverged": int(s["diverged"]), "val_gap": val_gap, "ratio_curve": ratio_curve,
        "total": total,
    }
    row["diagnosis"] = diagnosis(row)
    rows.append(row)
  return rows


def _times(x: float) -> str:
  """A factor for the text: ``8.3x``, ``12x``."""
  return f"{x:.2g}x" if x < 10 else f"{x:.0f}x"


def diagnosis(row: dict[str, Any]) -> list[str]:
  """The clauses of a row's diagnosis (see the module's docstring for the thresholds)."""
  out = []
  n = len(row["seeds"])
  if row["diverged"]:
    out.append(f"diverged in {row['diverged']} of {n} seeds")
  if row["reference"] is None:
    out.append("no reference baseline in the file")
  elif not row["comparable"]:
    out.append("no reference along the same direction: step-size ratio not comparable")
  ratio, gap, ref = row["ratio"], row["loss_gap"], row["reference_step"]
  if ratio["start"] is not None and ratio["start"] > LARGE_EARLY and gap["start"] is not None \
     and gap["start"] > 0:
    out.append(f"too large early: start ratio {_times(ratio['start'])}, start loss "
               f"{gap['start']:+.3f} nats")
  below = [p for p in PHASES if ratio[p] is not None and ratio[p] < 1 / SMALL]
  if below:
    where = ", ".join(f"{p} ({_times(1 / ratio[p])})" for p in below)
    out.append(f"steps more than {SMALL:g}x below the reference in the {where} "
               f"phase{'s' if len(below) > 1 else ''}")
  anneals = (ref["middle"] is not None and ref["end"] is not None
             and ref["middle"] >= ANNEAL * ref["end"])
  above = [p for p in ("middle", "end") if ratio[p] is not None and ratio[p] > SMALL
           and not (p == "end" and anneals)]
  if above:
    where = ", ".join(f"{p} ({_times(ratio[p])})" for p in above)
    out.append(f"steps more than {SMALL:g}x above the reference in the {where} "
               f"phase{'s' if len(above) > 1 else ''}")
  if anneals and ratio["end"] is not None and ratio["end"] > NO_DECAY:
    own = row["step"]
    change = None if own["middle"] is None or own["end"] is None else own["end"] / own["middle"]
    if change is None or change > 1 / ANNEAL:
      head = "no decay"
    else:
      head = "less decay than the reference"
    own_text = "" if change is None else f", its own step x{change:.2g}"
    out.append(f"{head}: end ratio {_times(ratio['end'])} (from the middle to the end phase "
               f"the reference's rate x{ref['end'] / ref['middle']:.2g}{own_text})")
  c = row["collapse"]
  if c["update"] is not None:
    first, second = phase_bounds(row["total"])
    seeds = f"{c['seeds']} of {c['of']} seeds"
    if c["update"] <= second:
      out.append(f"collapse at update {c['update']} (step below 1/{COLLAPSE_FACTOR:g} of its "
                 f"peak; {seeds})")
    else:
      out.append(f"decays below 1/{COLLAPSE_FACTOR:g} of its peak at update {c['update']} "
                 f"(end phase; {seeds})")
  for p in PHASES:
    if row["zero"][p] is not None and row["zero"][p] > ZERO_STEPS:
      out.append(f"no step in {100 * row['zero'][p]:.0f}% of the {p} phase's updates")
  if row["negative"]["all"]:
    out.append(f"negative step in {100 * row['negative']['all']:.1f}% of updates")
  gaps = {p: g for p, g in gap.items() if g is not None}
  if gaps:
    worst = max(gaps, key=gaps.get)
    if gaps[worst] > LOSS_GAP:
      out.append(f"training loss above the reference most in the {worst} phase "
                 f"({gaps[worst]:+.3f} nats)")
    elif len(gaps) == len(PHASES) and all(g < -LOSS_GAP for g in gaps.values()):
      out.append("training loss below the reference in every phase")
  return out or ["no flag"]


def _num(x: float | None, fmt: str = ".3g") -> str:
  return "-" if x is None else format(x, fmt)


def _reference_name(point: dict[str, Any]) -> str:
  opt = point["optimizer"]
  parts = [str(opt.get("schedule", "?"))]
  if opt.get("warmup_steps"):
    parts.append(f"warm-up {opt['warmup_steps']}")
  if opt.get("momentum"):
    parts.append(f"momentum {opt['momentum']:g}")
  return f"{point['label']} ({', '.join(parts)})"


def markdown(payload: dict[str, Any], rows: list[dict[str, Any]], source: str = "") -> str:
  """The table of ``rows`` (from :func:`diagnose`) with the settings and the references."""
  settings = payload.get("settings") or {}
  total = total_updates(payload)
  first, second = phase_bounds(total)
  lm = is_lm(payload)
  refs = references(payload)
  metric_unit = "bits/char" if lm else "points"
  lines = [
      f"# Where the line searches' gaps come from: `{settings.get('suite', '?')}`"
      f"{f' ({os.path.basename(source)})' if source else ''}",
      "",
      f"{settings.get('model', '?')}, {total} updates per run, seeds "
      f"{settings.get('seeds', '?')}{' (partial)' if payload.get('partial_note') else ''}. "
      f"Phases: start = updates 1-{first}, middle = {first + 1}-{second}, end = "
      f"{second + 1}-{total}.",
      "",
  ]
  for key, name in (("sgd", "SGD"), ("adam", "Adam-type")):
    point = refs[key]
    if key == "sgd" and lm:
      continue
    if point is None:
      lines.append(f"- Reference {name}: none in the file.")
    else:
      score = point[refs["metric"]]["mean"]
      value = f"{score:.3f} bits/char" if lm else f"{100 * score:.2f}%"
      lines.append(f"- Reference {name}: {_reference_name(point)}, validation {value} "
                   f"(seeds {', '.join(map(str, point['seeds']))}).")
  lines += [
      "",
      "| method | reference | ratio start | ratio middle | ratio end | loss gap start | "
      "loss gap middle | loss gap end | zero steps % (s/m/e) | collapse at | "
      f"val gap ({metric_unit}) | diagnosis |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for row in rows:
    ref = row["reference"]
    ref_name = "-" if ref is None else ref["label"] + ("" if row["comparable"] else " (loss only)")
    ratios = [("n/c" if not row["comparable"] and ref is not None else _num(row["ratio"][p]))
              for p in PHASES]
    gaps = [_num(row["loss_gap"][p], "+.3f") for p in PHASES]
    zeros = "/".join(_num(None if row["zero"][p] is None else 100 * row["zero"][p], ".0f")
                     for p in PHASES)
    c = row["collapse"]
    collapse = "-" if c["update"] is None else f"{c['update']} ({c['seeds']}/{c['of']})"
    seeds = "" if len(row["seeds"]) == len(settings.get("seeds", row["seeds"])) else (
        f" (seeds {', '.join(map(str, row['seeds']))})")
    lines.append(
        f"| {row['label']}{seeds} | {ref_name} | {' | '.join(ratios)} | {' | '.join(gaps)} | "
        f"{zeros} | {collapse} | {_num(row['val_gap'], '+.3f' if lm else '+.2f')} | "
        f"{'; '.join(row['diagnosis'])} |")
  lines += [
      "",
      "Ratio: the geometric mean of the line search's applied step over the phase's updates "
      "(positive steps only), over the geometric mean of its reference's scheduled rate; "
      "geometric mean over seeds. n/c: no reference along the same direction (the loss and "
      "validation columns then use the best tuned reference). A heavy-ball reference "
      "(SGD, momentum m) counts its effective step, its rate / (1 - m). Loss gap: mean "
      "mini-batch training loss (nats) minus the reference's. "
      f"Collapse: the first update where the step (running median) falls below "
      f"1/{COLLAPSE_FACTOR:g} of its running peak, median over the seeds that collapse "
      "(those seeds / all). Val gap: line search minus reference"
      f"{' (positive: worse)' if lm else ' (negative: worse)'}. Thresholds of the diagnosis: "
      f"small/large steps {SMALL:g}x, too large early {LARGE_EARLY:g}x with a positive start "
      f"loss gap, no decay {NO_DECAY:g}x where the reference anneals by {ANNEAL:g}x or more, "
      f"zero steps {100 * ZERO_STEPS:g}% of a phase, loss gap {LOSS_GAP:g} nats "
      "(`benchmarks/gap_diagnosis.py`).",
  ]
  return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], rows: list[dict[str, Any]], path: str) -> str:
  """Writes the ratio figure of ``rows`` (from :func:`diagnose`) to ``path``; returns it."""
  settings = payload.get("settings") or {}
  total = total_updates(payload)
  fig = Figure(figsize=(11, 5), layout="constrained")
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  shown = [r for r in rows if r["ratio_curve"] is not None
           and np.isfinite(r["ratio_curve"]).any()]
  keep = q._subsample(total, PLOT_POINTS)
  cmap = matplotlib.colormaps["tab10"]
  for i, row in enumerate(shown):
    ref = row["reference"]["label"]
    ax.plot(keep + 1, row["ratio_curve"][keep], lw=1.0, color=cmap(i % 10),
            ls=("-", "--", "-.")[(i // 10) % 3], label=f"{row['label']} / {ref}")
  ax.axhline(1.0, color="k", lw=1.0)
  for bound in phase_bounds(total):
    ax.axvline(bound + 0.5, color="k", lw=0.8, ls=":")
  if shown:
    ax.set_yscale("log")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  else:
    ax.text(0.5, 0.5, "no line search with a comparable reference", ha="center",
            va="center", transform=ax.transAxes)
  skipped = [r["label"] for r in rows if r not in shown]
  note = f"\nnot shown (no comparable reference or no steps): {', '.join(skipped)}" \
      if skipped else ""
  ax.set(xlabel="update", ylabel="step size / reference rate",
         title=f"{settings.get('suite', '?')}: {settings.get('model', '?')}, {total} updates, "
               f"seeds {settings.get('seeds', '?')}; geometric mean over seeds, phases dotted"
               f"{note}")
  ax.title.set_fontsize(9)
  ax.grid(alpha=0.3)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  return path


def prefixes(paths: Sequence[str], suites: Sequence[str], out: str | None) -> list[str]:
  """The output prefix of each result file (see the module's docstring).

  Example:
    >>> prefixes(["a/quality_cifar.json", "a/quality_cifar_10ep.json"], ["cifar", "cifar"],
    ...          "/tmp/gap")
    ['/tmp/gap_cifar', '/tmp/gap_quality_cifar_10ep']
  """
  base = out if out is not None else os.path.join(q.RESULTS, "gap_diagnosis")
  single = out is not None and len(paths) == 1
  used, result = set(), []
  for path, suite in zip(paths, suites, strict=True):
    prefix = base if single else f"{base}_{suite}"
    if prefix in used:
      prefix = f"{base}_{os.path.splitext(os.path.basename(path))[0]}"
    used.add(prefix)
    result.append(prefix)
  return result


def main(argv: Sequence[str] | None = None) -> list[str]:
  """Diagnoses every result file; writes ``<prefix>.md`` and ``<prefix>.png``; returns the
  paths written."""
  parser = argparse.ArgumentParser(prog="python -m benchmarks.gap_diagnosis",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("json", nargs="+", help="result files of benchmarks.quality")
  parser.add_argument("--out", default=None,
                      help="output prefix (default benchmarks/results/gap_diagnosis_<suite>)")
  args = parser.parse_args(argv)
  payloads = []
  for path in args.json:
    with open(path) as f:
      payloads.append(json.load(f))
  suites = [str((p.get("settings") or {}).get("suite") or ("lm" if is_lm(p) else "unknown"))
            for p in payloads]
  written = []
  for path, payload, prefix in zip(args.json, payloads, prefixes(args.json, suites, args.out),
                                   strict=True):
    rows = diagnose(payload)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(f"{prefix}.md", "w") as f:
      f.write(markdown(payload, rows, path))
    written += [f"{prefix}.md", plot(payload, rows, f"{prefix}.png")]
  for path in written:
    print(path)
  return written


if __name__ == "__main__":
  main()
