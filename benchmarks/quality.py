"""Training quality: every line search at its defaults against tuned baselines and peers.

Each line search of ``train/optimizers.py`` (``LINE_SEARCHES``: every optax_ls
method, with its default hyperparameters, no tuning) is trained against four
baselines, each tuned on a small learning-rate grid (the run's group in brackets):

* SGD with heavy-ball momentum 0.9 and the papers' piece-wise constant schedule
  (the rate divided by 10 at 50% and 75% of the run), ``--sgd-grid``
  (default 0.3, 0.1, 0.03, 0.01) [``sgd``];
* Adam with a linear warm-up over the first 5% of the updates then a cosine
  decay to zero, ``--adam-grid`` (default 3e-3, 1e-3, 3e-4, 1e-4) [``adam``];
* Adam at a constant learning rate, no warm-up, ``--adam-const-grid`` (default
  3e-3, 1e-3, 3e-4: Adam's grid without 1e-4, the worst point of warm-up and
  cosine on MNIST, 1.9 points below the best, where on CIFAR-10 3e-4 was already
  8 points below 1e-3) [``adam_const``];
* schedule-free AdamW (``optax.contrib.schedule_free_adamw``) with the same 5%
  warm-up, evaluated at its averaged weights, ``--schedule-free-grid`` (the lm
  suite's option and default, 1e-3, 3e-3, 1e-2: one to ten times tuned Adam's
  rate, its authors' advice) [``schedule_free``];

and against the parameter-free peers at their defaults, ``--peers`` (default
``prodigy,dog``: ``optax.contrib.prodigy`` and ``optax.contrib.dog``) [``peer``].
TLR is run again from the initial rates of ``--tlr-inits`` (its paper's 1e-3,
1e-2, 1e-1) to see whether the initial rate matters [``tlr_init``]. No weight
decay anywhere: every optimizer minimises the same mean cross entropy, the
objective the line searches evaluate. The runs of a seed go in the order line
searches, SGD, Adam, TLR's initial rates, constant Adam, schedule-free AdamW,
peers: the groups added last to the protocol come last, so a result file of the
older protocol resumes (``--resume``) with its runs kept and only those added.

Protocol. Suites (``--suite``, epoch budgets in ``SUITES``): ``mnist`` (MLP
512-512 on the real MNIST subset of ``../shared/data``, batch 128, 20 epochs:
about 50 minutes for the 102 runs on 2 CPU cores, estimated from the 78 runs of
the protocol without its last three groups, which took 38 minutes), ``cifar``
(ResNet-20 on the real CIFAR-10 subset, batch 128, crop and flip augmentation,
10 epochs: about 7.5 hours on 2 CPU cores, estimated from the throughput of a
partial run) and ``digits`` (the embedded scikit-learn digits, MLP 128, batch
32: a smoke test); ``lm`` is the
character-level GPT of ``benchmarks/quality_lm.py``, with its own options. For
each seed (``--seeds``, default 0 1 2) the training file is split at random (the
split fixed by the seed) into a training split and a held-out *validation* split
(the config's ``test_fraction``: 1000 of the 8000 MNIST images, 466 of the 4660
CIFAR images); every optimizer of that seed starts from the same initialisation
and sees the same batches (``train.train.train_one``). A run reports its
validation accuracy after the last epoch, its final training loss (the mean
cross entropy over the whole training split in inference mode, no augmentation),
its wall time (compilation and the per-epoch evaluations included), its mean
``value_fn`` calls per update and its step size at every update (the
``learning_rate`` of its state; none for schedule-free AdamW and the peers).
Tuning: each baseline's grid point is the one with the best mean validation
accuracy over the seeds; the same validation split picks the point and scores
it, so the tuned baselines are favoured (an optimistic estimate of what tuning
buys); a point at the edge of its grid is flagged. The tables compare every row
with tuned SGD (``vs best SGD``, the papers' baseline) and with the best tuned
of SGD and Adam, with warm-up and cosine or constant (``vs best tuned``).
Spreads are the sample standard deviation over seeds (and min-max).

Steadiness of a step-size curve (SaLSa against SLS): after the first epoch, the
mean absolute change of ``log(step size)`` from one update to the next (``tv``)
and the coefficient of variation of the step size (``cv``).

``--full`` runs the same code on a whole data set through TensorFlow Datasets
(``cifar`` -> ``cifar10``, ``mnist`` -> ``mnist``, prepared in ``--data-dir``),
for an accelerator: the validation split is then held out of the tfds training
split in the same way (10%), and the default budget is the suite's
``full_epochs`` (100 for CIFAR-10, 20 for MNIST).

Outputs (``--out``, default ``benchmarks/results``): ``quality_<suite>.json``
(every run, the settings, the date and the versions; rewritten after each run,
so ``--resume`` continues an interrupted protocol, or one run with fewer groups
or grid points), ``quality_<suite>.md`` (the tables and the checked claims; a
partial run, ``--partial-note``, also gets an estimate of the whole protocol's
cost, and its claims are marked as checked on that run only) and the figures
``quality_<suite>_*.png``: validation accuracy with its spread (the line
searches, the peers and the tuned point of each baseline), the step-size
curves of every line search, TLR from several initial rates (when there are
several), SaLSa against SLS. Run from the repository root::

  python -m benchmarks.quality --suite mnist
  python -m benchmarks.quality --suite mnist --resume --json benchmarks/results/quality_mnist.json
  python -m benchmarks.quality --suite cifar --seeds 0 --epochs 1 --methods sls,salsa \\
      --sgd-grid 0.1 --adam-grid 1e-3 --adam-const-grid 1e-3 --schedule-free-grid 3e-3 \\
      --peers prodigy --tlr-inits
  python -m benchmarks.quality --suite cifar --full --data-dir ~/tensorflow_datasets
  python -m benchmarks.quality --plot benchmarks/results/quality_mnist.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import inspect
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import optax_ls
from benchmarks import quality_lm
from models import get_model
from train import data, report
from train import train as harness
from train.config import SHARED_DATA, get_config, positive_float
from train.optimizers import OPTIMIZERS, OptimizerConfig

BASELINES = ("sgd", "adam", "adamw", "polyak_sgd", "cocob", "prodigy", "dog",
             "schedule_free_adamw", "optax_backtracking")
"""The optimizers of ``train/optimizers.py`` that are not optax_ls line searches."""

LINE_SEARCHES = tuple(name for name in OPTIMIZERS if name not in BASELINES)
"""Every optax_ls method of ``train/optimizers.py``: the default ``--methods``."""

SGD_GRID = (0.3, 0.1, 0.03, 0.01)
ADAM_GRID = (3e-3, 1e-3, 3e-4, 1e-4)
ADAM_CONST_GRID = (3e-3, 1e-3, 3e-4)
"""Constant Adam's rates: ``ADAM_GRID`` without 1e-4, warm-up and cosine Adam's worst point."""
SGD_MOMENTUM = 0.9
ADAM_WARMUP = 0.05
"""The linear warm-up of Adam and schedule-free AdamW, as a fraction of the updates of the run."""
TUNED_GROUPS = {
    "sgd": "SGD",
    "adam": "Adam, warm-up + cosine",
    "adam_const": "Adam, constant",
    "schedule_free": "schedule-free AdamW",
}
"""The groups tuned on a learning-rate grid (in the order they run), with their names."""
BEST_TUNED = ("sgd", "adam", "adam_const")
"""The groups whose best tuned point is the reference of ``vs best tuned``."""
TLR_INITS = (1e-3, 1e-2, 1e-1)
TLR_DEFAULT_INIT = inspect.signature(optax_ls.tlr).parameters["init_learning_rate"].default
CURVE_POINTS = 400
"""At most this many points of each per-update curve are kept in the JSON."""
WITHIN = 1.0
"""The claim: untuned line searches within this many points of tuned SGD's accuracy."""
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclasses.dataclass(frozen=True)
class Suite:
  """A model and data set of the protocol.

  Attributes:
    config: the ``train.config.CONFIGS`` entry giving the model, the data file,
      the batch size and the validation fraction.
    epochs: the default epoch budget on this machine.
    data_file: the file of ``SHARED_DATA`` it reads (None: embedded data).
    full_dataset: the tfds data set of ``--full`` (None: no full variant).
    full_epochs: the default epoch budget of ``--full``.
  """

  config: str
  epochs: int
  data_file: str | None
  full_dataset: str | None
  full_epochs: int


SUITES = {
    "mnist": Suite("mnist_subset_mlp", 20, "mnist_subset.npz", "mnist", 20),
    "cifar": Suite("cifar10_resnet20_subset", 10, "cifar10_subset.npz", "cifar10", 100),
    "digits": Suite("digits_mlp", 5, None, None, 0),
}


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One optimizer setting of the protocol, trained once per seed.

  Attributes:
    label: the name in the tables (``sls``, ``sgd lr=0.1``, ``adam const lr=0.001``,
      ``tlr init=0.001``, ``prodigy``).
    group: ``line_search``, ``sgd``, ``adam``, ``tlr_init``, ``adam_const``,
      ``schedule_free`` or ``peer``.
    optimizer: the harness's optimizer configuration.
  """

  label: str
  group: str
  optimizer: OptimizerConfig


def build_runs(methods: Sequence[str], sgd_grid: Sequence[float], adam_grid: Sequence[float],
               tlr_inits: Sequence[float], total_steps: int, *,
               adam_const_grid: Sequence[float] = (), schedule_free_grid: Sequence[float] = (),
               peers: Sequence[str] = ()) -> list[RunSpec]:
  """The runs of one seed, in the order they run.

  The line searches, SGD's and Adam's grids, TLR's other initial rates, then
  constant Adam's and schedule-free AdamW's grids and the peers (the groups added
  to the protocol last come last). The TLR run with the default initial rate is
  the line-search run ``tlr`` itself (no duplicate).

  Args:
    methods: the line searches, at their defaults.
    sgd_grid: SGD's learning rates (momentum, step schedule).
    adam_grid: Adam's peak learning rates (warm-up, cosine).
    tlr_inits: TLR's initial rates.
    total_steps: the updates of a run (the warm-ups are ``ADAM_WARMUP`` of them).
    adam_const_grid: constant Adam's learning rates.
    schedule_free_grid: schedule-free AdamW's learning rates (warm-up as Adam's).
    peers: optimizers at their defaults, labelled by their names.

  Returns:
    One :class:`RunSpec` per setting.
  """
  warmup = max(1, round(ADAM_WARMUP * total_steps))
  runs = [RunSpec(name, "line_search", OptimizerConfig(name)) for name in methods]
  runs += [
      RunSpec(f"sgd lr={lr:g}", "sgd",
              OptimizerConfig("sgd", learning_rate=lr, momentum=SGD_MOMENTUM, schedule="step"))
      for lr in sgd_grid
  ]
  runs += [
      RunSpec(f"adam lr={lr:g}", "adam",
              OptimizerConfig("adam", learning_rate=lr, schedule="cosine", warmup_steps=warmup))
      for lr in adam_grid
  ]
  runs += [
      RunSpec(f"tlr init={init:g}", "tlr_init",
              OptimizerConfig("tlr", kwargs={"init_learning_rate": init}))
      for init in tlr_inits
      if not math.isclose(init, TLR_DEFAULT_INIT) or "tlr" not in methods
  ]
  runs += [RunSpec(f"adam const lr={lr:g}", "adam_const", OptimizerConfig("adam", learning_rate=lr))
           for lr in adam_const_grid]
  runs += [
      RunSpec(f"schedule_free_adamw lr={lr:g}", "schedule_free",
              OptimizerConfig("schedule_free_adamw", learning_rate=lr, warmup_steps=warmup))
      for lr in schedule_free_grid
  ]
  runs += [RunSpec(name, "peer", OptimizerConfig(name)) for name in peers]
  return runs


class _Subset:
  """The examples ``indices`` of a source: a validation split held out of a tfds split."""

  def __init__(self, source: Any, indices: np.ndarray):
    self.source, self.indices = source, indices

  def __len__(self) -> int:
    return len(self.indices)

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self.source.get(self.indices[np.asarray(indices)])


def load_splits(config: Any) -> tuple[Any, Any, data.DataSpec]:
  """The training and validation splits of ``config.dataset`` for ``config.seed``.

  Files without a test split (the subsets, digits) are split by
  :func:`train.data.load`; for a tfds data set ``config.test_fraction`` of its
  training split is held out here the same way (its test split is not used).
  """
  train_source, test_source, spec = data.load(
      config.dataset, data_dir=config.data_dir, seed=config.seed,
      test_fraction=config.test_fraction)
  if config.dataset not in data.TFDS_DATASETS:
    return train_source, test_source, spec
  n = len(train_source)
  order = np.random.default_rng(config.seed).permutation(n)
  num_val = round(n * config.test_fraction)
  train_split = _Subset(train_source, np.sort(order[num_val:]))
  val_split = _Subset(train_source, np.sort(order[:num_val]))
  spec = dataclasses.replace(spec, num_train=len(train_split), num_test=len(val_split))
  return train_split, val_split, spec


def steadiness(rates: Sequence[float], skip: int) -> dict[str, float | None]:
  """``tv``: mean ``|log r[t+1] - log r[t]|``; ``cv``: std/mean of ``r`` (after ``skip`` updates).

  Only positive step sizes count (a measuring call of LABPAL applies none).

  Example:
    >>> s = steadiness([1.0, 2.0, 1.0, 2.0], skip=0)
    >>> round(s["tv"], 4), round(s["cv"], 4)
    (0.6931, 0.3333)
  """
  r = np.asarray([x for x in rates[skip:] if x is not None and x > 0], np.float64)
  if len(r) < 2:
    return {"tv": None, "cv": None}
  return {"tv": float(np.mean(np.abs(np.diff(np.log(r))))), "cv": float(np.std(r) / np.mean(r))}


def _finite(value: Any) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def _short(value: Any) -> float | None:
  """A curve point for the JSON: 4 significant digits (None when missing or not finite)."""
  return None if value is None or not math.isfinite(value) else float(f"{value:.4g}")


def _subsample(n: int, points: int) -> np.ndarray:
  if n <= points:
    return np.arange(n)
  return np.unique(np.linspace(0, n - 1, points).round().astype(int))


def summarise_run(spec: RunSpec, seed: int, records: dict[str, list[dict[str, Any]]],
                  train_eval: dict[str, float], wall: float,
                  steps_per_epoch: int) -> dict[str, Any]:
  """The JSON record of one run from the harness's records (``log_every=1``)."""
  train, evals = records["train"], records["eval"]
  rates = [r.get("learning_rate") for r in train]
  evals_per_step = [r["evals_per_step"] for r in train if "evals_per_step" in r]
  keep = _subsample(len(train), CURVE_POINTS)
  final_rate = next((r for r in reversed(rates) if r is not None and r > 0), None)
  last = evals[-1]
  return {
      "label": spec.label,
      "group": spec.group,
      "method": spec.optimizer.name,
      "seed": seed,
      "optimizer": dataclasses.asdict(spec.optimizer),
      "val_accuracy": _finite(last["test_accuracy"]),
      "val_loss": _finite(last["test_loss"]),
      "train_loss": _finite(train_eval["loss"]),
      "train_accuracy": _finite(train_eval["accuracy"]),
      "train_loss_last_epoch": _finite(last["train_loss"]),
      "diverged": not all(math.isfinite(r["loss"]) for r in train),
      "wall_s": wall,
      "images_per_s": report.throughput(train),
      "evals_per_step": float(np.mean(evals_per_step)) if evals_per_step else None,
      "final_step_size": final_rate,
      "steadiness": steadiness(rates, skip=steps_per_epoch),
      "epochs": [
          {"epoch": e["epoch"] + 1, "val_accuracy": _finite(e["test_accuracy"]),
           "val_loss": _finite(e["test_loss"]), "train_loss": _finite(e["train_loss"])}
          for e in evals
      ],
      "curve": {
          "step": [train[i]["step"] for i in keep],
          "step_size": [_short(rates[i]) for i in keep],
          "loss": [_short(train[i]["loss"]) for i in keep],
      },
  }


# Summaries, tables and claims.


def _values(runs: list[dict[str, Any]], key: str) -> np.ndarray:
  return np.asarray([np.nan if r[key] is None else r[key] for r in runs], np.float64)


def _stats(values: np.ndarray) -> dict[str, float | None]:
  finite = values[np.isfinite(values)]
  if not len(finite):
    return {"mean": None, "std": None, "min": None, "max": None}
  return {
      "mean": float(np.mean(finite)),
      "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0,
      "min": float(np.min(finite)),
      "max": float(np.max(finite)),
  }


def summarise_runs(results: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
  """Per label (in the order of first appearance): its setting and the statistics over seeds
  of each of ``keys``."""
  out = {}
  for label in dict.fromkeys(r["label"] for r in results):
    runs = [r for r in results if r["label"] == label]
    out[label] = {
        "label": label,
        "group": runs[0]["group"],
        "method": runs[0]["method"],
        "optimizer": runs[0]["optimizer"],
        "seeds": [r["seed"] for r in runs],
        **{key: _stats(_values(runs, key)) for key in keys},
        "diverged": sum(r["diverged"] for r in runs),
    }
  return out


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """Per label (in the order of first appearance): the statistics over seeds."""
  out = summarise_runs(results, ("val_accuracy", "train_loss", "wall_s", "evals_per_step",
                                 "final_step_size"))
  for label, summary in out.items():
    runs = [r for r in results if r["label"] == label]
    for key in ("tv", "cv"):
      summary[key] = _stats(np.asarray([np.nan if r["steadiness"][key] is None
                                        else r["steadiness"][key] for r in runs]))
  return out


def tuned(summary: dict[str, dict[str, Any]], group: str, key: str = "val_accuracy",
          best: Callable[..., Any] = max) -> dict[str, Any] | None:
  """The grid point of ``group`` with the best mean ``key`` (``best``: max, or min for a loss).

  Adds ``learning_rate``, ``grid_size`` and ``at_edge`` (the point is the
  grid's smallest or largest rate) to the point's statistics.
  """
  grid = [s for s in summary.values() if s["group"] == group]
  scored = [s for s in grid if s[key]["mean"] is not None]
  if not scored:
    return None
  point = best(scored, key=lambda s: s[key]["mean"])
  rates = sorted(s["optimizer"]["learning_rate"] for s in grid)
  lr = point["optimizer"]["learning_rate"]
  edge = len(rates) > 1 and lr in (rates[0], rates[-1])
  return {"learning_rate": lr, "grid_size": len(rates), "at_edge": edge, **point}


def _pct(stats: dict[str, Any], key: str = "mean") -> str:
  return "-" if stats[key] is None else f"{100 * stats[key]:.2f}"


def _acc(stats: dict[str, Any]) -> str:
  if stats["mean"] is None:
    return "-"
  return f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"


def _num(value: float | None, fmt: str = ".3g") -> str:
  return "-" if value is None else format(value, fmt)


def claims(summary: dict[str, dict[str, Any]], epochs: int) -> list[dict[str, str]]:
  """The papers' qualitative claims, each with a verdict computed from ``summary``.

  Verdicts: ``holds``, ``does not hold``, ``mixed`` or ``not measured``.
  """
  out = []
  pairs = [(a, b) for a, b in (("salsa", "sls"), ("adam_salsa", "adam_sls"))
           if a in summary and b in summary]
  if pairs and epochs > 1:
    verdicts, details = [], []
    for steady, plain in pairs:
      a, b = summary[steady], summary[plain]
      if a["tv"]["mean"] is None or b["tv"]["mean"] is None:
        continue
      ok = a["tv"]["max"] < b["tv"]["min"] and a["cv"]["mean"] < b["cv"]["mean"]
      verdicts.append(ok)
      details.append(
          f"{steady} tv {a['tv']['mean']:.3g} (max over seeds {a['tv']['max']:.3g}), cv "
          f"{a['cv']['mean']:.3g}; {plain} tv {b['tv']['mean']:.3g} (min {b['tv']['min']:.3g}), "
          f"cv {b['cv']['mean']:.3g}")
    if verdicts:
      verdict = "holds" if all(verdicts) else "does not hold" if not any(verdicts) else "mixed"
      out.append({"claim": "SaLSa's step size is steadier than SLS's (after the first epoch: "
                           "smaller mean |change of log step| in every seed, smaller mean cv)",
                  "verdict": verdict, "detail": "; ".join(details)})
  sgd = tuned(summary, "sgd")
  searches = {k: s for k, s in summary.items()
              if s["group"] == "line_search" and s["val_accuracy"]["mean"] is not None}
  if sgd is not None and sgd["grid_size"] > 1 and searches:
    target = sgd["val_accuracy"]["mean"] - WITHIN / 100
    within = sorted(k for k, s in searches.items() if s["val_accuracy"]["mean"] >= target)
    below = sorted(k for k, s in searches.items() if s["val_accuracy"]["mean"] < target)
    verdict = "holds" if not below else "does not hold" if not within else "mixed"
    below_text = ", ".join(f"{k} ({_pct(searches[k]['val_accuracy'])}%)" for k in below)
    out.append({
        "claim": f"the line searches without tuning come within {WITHIN:g} point of tuned SGD's "
                 "validation accuracy (mean over seeds)",
        "verdict": verdict,
        "detail": f"tuned SGD ({sgd['label']}) {_acc(sgd['val_accuracy'])}%; within: "
                  f"{', '.join(within) or 'none'}; more than {WITHIN:g} point below: "
                  f"{below_text or 'none'}",
    })
  if "sa_sls" in summary and "l_sls" in summary:
    sa, loss = summary["sa_sls"], summary["l_sls"]
    if sa["val_accuracy"]["mean"] is not None and loss["val_accuracy"]["mean"] is not None:
      diff = 100 * (sa["val_accuracy"]["mean"] - loss["val_accuracy"]["mean"])
      verdict = "holds" if diff > 0 else "does not hold"
      out.append({
          "claim": "sa-SLS (line search on the smooth accuracy) reaches a higher validation "
                   "accuracy than l-SLS (on the loss)",
          "verdict": verdict,
          "detail": f"sa_sls {_acc(sa['val_accuracy'])}% (min {_pct(sa['val_accuracy'], 'min')}), "
                    f"l_sls {_acc(loss['val_accuracy'])}% (min {_pct(loss['val_accuracy'], 'min')})"
                    f": {diff:+.2f} points; final step size sa_sls "
                    f"{_num(sa['final_step_size']['mean'])} (min "
                    f"{_num(sa['final_step_size']['min'])}), l_sls "
                    f"{_num(loss['final_step_size']['mean'])}; evals/step "
                    f"{_num(sa['evals_per_step']['mean'])} vs "
                    f"{_num(loss['evals_per_step']['mean'])}",
      })
  tlr = _tlr_runs(summary)
  if len(tlr) > 1:
    accs = [s["val_accuracy"]["mean"] for _, s in tlr]
    finals = [s["final_step_size"]["mean"] for _, s in tlr]
    if None not in accs and None not in finals:
      spread = 100 * (max(accs) - min(accs))
      inits = [init for init, _ in tlr]
      ratio_in, ratio_out = max(inits) / min(inits), max(finals) / min(finals)
      converged = ratio_out <= ratio_in**0.25
      close = spread <= WITHIN
      verdict = ("holds" if close and converged else "mixed" if close or converged
                 else "does not hold")
      out.append({
          "claim": f"TLR is insensitive to its initial rate (the validation accuracies of the "
                   f"initial rates within {WITHIN:g} point, and the final rates within the fourth "
                   "root of the initial rates' span)",
          "verdict": verdict,
          "detail": "initial rate -> accuracy, final rate: " + ", ".join(
              f"{init:g} -> {100 * acc:.2f}%, {final:.3g}"
              for init, acc, final in zip(inits, accs, finals, strict=True))
          + f"; accuracy range {spread:.2f} points; the initial rates span a factor "
            f"{ratio_in:.3g}, the final rates {ratio_out:.3g}",
      })
  return out


def _tlr_runs(summary: dict[str, dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
  """TLR's runs by initial rate (the default run included), sorted."""
  out = {}
  for s in summary.values():
    if s["method"] == "tlr" and s["group"] in ("line_search", "tlr_init"):
      out[s["optimizer"]["kwargs"].get("init_learning_rate", TLR_DEFAULT_INIT)] = s
  return sorted(out.items())


def estimate_seconds(payload: dict[str, Any], epochs: int, seeds: int) -> float | None:
  """The wall time of the whole protocol (the default settings) extrapolated from ``payload``.

  A run costs ``overhead + epochs * epoch_s``: ``epoch_s`` from its median
  throughput after the first update, ``overhead`` (compilation, the final
  evaluation) the rest of its measured wall time. Settings not measured take
  the measured point of their family (a grid's other points, TLR's other
  initial rates, the other peers), else, for a line search, the median of the
  measured line searches and, for a baseline or a peer, the mean of the measured
  baselines and peers (the line searches' median when none is measured).
  """
  settings = payload["settings"]
  images = settings["steps_per_epoch"] * settings["batch_size"]
  cost = {}
  for r in payload["results"]:
    if r.get("images_per_s"):
      epoch_s = images / r["images_per_s"]
      overhead = max(r["wall_s"] - settings["epochs"] * epoch_s, 0.0)
      # TLR's other initial rates cost what TLR costs: one family.
      family = r["method"] if r["group"] in ("line_search", "tlr_init") else r["group"]
      cost.setdefault(family, []).append((overhead, epoch_s))
  if not cost:
    return None
  mean = {k: np.mean(v, axis=0) for k, v in cost.items()}
  searches = [mean[m] for m in LINE_SEARCHES if m in mean]
  fallback = np.median(searches, axis=0) if searches else np.mean(list(mean.values()), axis=0)
  baseline_groups = (*TUNED_GROUPS, "peer")
  baselines = [mean[g] for g in baseline_groups if g in mean]
  baseline_fallback = np.mean(baselines, axis=0) if baselines else fallback
  families = [*LINE_SEARCHES] + ["tlr"] * (len(TLR_INITS) - 1)
  grids = {"sgd": SGD_GRID, "adam": ADAM_GRID, "adam_const": ADAM_CONST_GRID,
           "schedule_free": quality_lm.SCHEDULE_FREE_GRID, "peer": quality_lm.PEERS}
  per_seed = sum(float(mean.get(f, fallback) @ np.array([1.0, epochs])) for f in families)
  per_seed += sum(len(grid) * float(mean.get(g, baseline_fallback) @ np.array([1.0, epochs]))
                  for g, grid in grids.items())
  return seeds * per_seed


def _dataset(settings: dict[str, Any]) -> str:
  """The data set's name: the file name of an ``npz:PATH``."""
  name = settings["dataset"]
  return os.path.basename(name) if name.startswith(data.NPZ_PREFIX) else name


def best_tuned(summary: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
  """The reference of ``vs best tuned``: the tuned point of ``BEST_TUNED`` with the best mean
  validation accuracy (tuned SGD, or tuned Adam with warm-up and cosine or constant)."""
  points = [b for b in (tuned(summary, group) for group in BEST_TUNED) if b is not None]
  return max(points, key=lambda b: b["val_accuracy"]["mean"], default=None)


def markdown(payload: dict[str, Any]) -> str:
  """The tables and the checked claims of ``payload`` (the JSON of :func:`main`).

  The main table has a row per line search and per peer, at their defaults, and
  per tuned group (its best grid point), with the difference to tuned SGD and to
  :func:`best_tuned`; the grid table lists every grid point.
  """
  summary = summarise(payload["results"])
  settings = payload["settings"]
  best = {group: tuned(summary, group) for group in TUNED_GROUPS}
  top = best_tuned(summary)
  lines = [
      f"Suite `{settings['suite']}`{' (--full)' if settings['full'] else ''}: "
      f"{settings['model']} on {_dataset(settings)} ({settings['num_train']} training / "
      f"{settings['num_val']} validation images), batch {settings['batch_size']}, "
      f"{settings['epochs']} epochs, seeds {settings['seeds']}. "
      f"{'**Partial**: ' + payload['partial_note'] + ' ' if payload.get('partial_note') else ''}"
      f"Run on {payload['date']} ({payload['device']}) with `{payload['command']}`.",
      "",
      "| optimizer | setting | val. acc. % (mean ± std) | min-max | vs best SGD | vs best tuned | "
      "train loss | evals/step | final step | s/run |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  references = [None if b is None else b["val_accuracy"]["mean"] for b in (best["sgd"], top)]
  rows = [(k, s, "defaults") for k, s in summary.items() if s["group"] == "line_search"]
  rows += [(k, s, "parameter-free, defaults") for k, s in summary.items() if s["group"] == "peer"]
  for group, name in TUNED_GROUPS.items():
    point = best[group]
    if point is not None:
      edge = " (grid edge)" if point["at_edge"] else ""
      how = "tuned" if point["grid_size"] > 1 else "not tuned"
      rows.append((name, point, f"{how}: lr={point['learning_rate']:g}{edge}"))
  for name, s, setting in rows:
    acc = s["val_accuracy"]
    deltas = " | ".join("-" if ref is None or acc["mean"] is None
                        else f"{100 * (acc['mean'] - ref):+.2f}" for ref in references)
    diverged = f" ({s['diverged']} diverged)" if s["diverged"] else ""
    lines.append(
        f"| {name} | {setting}{diverged} | {_acc(acc)} | {_pct(acc, 'min')}-{_pct(acc, 'max')} | "
        f"{deltas} | {_num(s['train_loss']['mean'], '.4f')} | "
        f"{_num(s['evals_per_step']['mean'], '.2f')} | {_num(s['final_step_size']['mean'])} | "
        f"{_num(s['wall_s']['mean'], '.0f')} |")
  if top is not None:
    lines += ["", f"vs best tuned: against {TUNED_GROUPS[top['group']]} ({top['label']}, "
              f"{_acc(top['val_accuracy'])}%), the best of tuned SGD and tuned Adam (warm-up + "
              "cosine or constant)."]
  order = {group: i for i, group in enumerate(TUNED_GROUPS)}
  grid = sorted(((k, s) for k, s in summary.items() if s["group"] in order),
                key=lambda kv: (order[kv[1]["group"]], -kv[1]["optimizer"]["learning_rate"]))
  if grid:
    lines += ["", "Learning-rate grids of the baselines (the picked point in bold):", "",
              "| baseline | lr | val. acc. % | train loss | s/run |", "|---|---|---|---|---|"]
    picked = {b["label"] for b in best.values() if b is not None}
    for label, s in grid:
      bold = "**" if label in picked else ""
      diverged = f" ({s['diverged']} diverged)" if s["diverged"] else ""
      lines.append(f"| {s['group']} | {bold}{s['optimizer']['learning_rate']:g}{bold} | "
                   f"{_acc(s['val_accuracy'])} | "
                   f"{_num(s['train_loss']['mean'], '.4f')}{diverged} | "
                   f"{_num(s['wall_s']['mean'], '.0f')} |")
  tlr = _tlr_runs(summary)
  if len(tlr) > 1:
    lines += ["", "TLR from several initial rates:", "",
              "| initial rate | val. acc. % | train loss | final step |", "|---|---|---|---|"]
    for init, s in tlr:
      lines.append(f"| {init:g} | {_acc(s['val_accuracy'])} | "
                   f"{_num(s['train_loss']['mean'], '.4f')} | "
                   f"{_num(s['final_step_size']['mean'])} |")
  steady = [k for k in ("sls", "salsa", "adam_sls", "adam_salsa")
            if k in summary and summary[k]["tv"]["mean"] is not None]
  if steady:
    lines += ["", "Steadiness of the step size after the first epoch (mean over seeds; tv: mean "
              "absolute change of log step size per update; cv: std/mean):", "",
              "| method | tv | cv |", "|---|---|---|"]
    for k in steady:
      lines.append(f"| {k} | {_num(summary[k]['tv']['mean'])} | {_num(summary[k]['cv']['mean'])} |")
  if payload.get("partial_note"):
    suite = SUITES[settings["suite"]]
    epochs = suite.full_epochs if settings["full"] else suite.epochs
    seconds = estimate_seconds(payload, epochs, 3)
    if seconds is not None:
      grids = " + ".join(str(len(g)) for g in (SGD_GRID, ADAM_GRID, ADAM_CONST_GRID,
                                                  quality_lm.SCHEDULE_FREE_GRID))
      lines += ["", "Estimated wall time of the whole protocol on this machine "
                f"({len(LINE_SEARCHES)} line searches, {len(TLR_INITS) - 1} more TLR initial "
                f"rates, {grids} grid points, {len(quality_lm.PEERS)} peers, 3 seeds, "
                f"{epochs} epochs): about {seconds / 3600:.0f} h (from the throughput measured "
                "here; unmeasured line searches at the median of the measured ones, unmeasured "
                "baselines at the mean of the measured baselines)."]
  checked = claims(summary, settings["epochs"])
  if checked:
    heading = ("Claims checked on this partial run only (indications, not the protocol's "
               "verdicts):" if payload.get("partial_note") else "Claims checked:")
    lines += ["", heading, ""]
    lines += [f"- {c['claim']}: **{c['verdict']}**. {c['detail']}." for c in checked]
  return "\n".join(lines) + "\n"


# Figures.


def _geomean(curves: list[list[float | None]]) -> np.ndarray:
  arr = np.asarray([[np.nan if v is None or v <= 0 else v for v in c] for c in curves], np.float64)
  with np.errstate(all="ignore"):
    logs = np.log(arr)
    count = np.sum(np.isfinite(logs), axis=0)
    mean = np.where(count > 0, np.nansum(np.where(np.isfinite(logs), logs, 0), axis=0)
                    / np.maximum(count, 1), np.nan)
  return np.exp(mean)


def _curves(results: list[dict[str, Any]], label: str) -> tuple[np.ndarray, list, np.ndarray]:
  runs = [r for r in results if r["label"] == label]
  steps = np.asarray(runs[0]["curve"]["step"])
  curves = [r["curve"]["step_size"] for r in runs if len(r["curve"]["step"]) == len(steps)]
  return steps, curves, _geomean(curves)


def _figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(fig)
  return fig


BAR_COLOURS = {"line_search": "tab:blue", "peer": "tab:orange", "sgd": "tab:gray",
               "adam": "tab:olive", "adam_const": "tab:brown", "schedule_free": "tab:purple"}
"""The colours of the accuracy figure's bars, by group."""
BAR_NAMES = {"sgd": "SGD", "adam": "Adam cosine", "adam_const": "Adam const",
             "schedule_free": "schedule-free"}
"""The names of the tuned groups' bars in the accuracy figure (followed by the picked rate)."""


def plot(payload: dict[str, Any], prefix: str) -> list[str]:
  """Writes the four figures ``<prefix>_{accuracy,step_sizes,tlr,salsa_vs_sls}.png``."""
  results = payload["results"]
  summary = summarise(results)
  settings = payload["settings"]
  title = (f"{settings['model']} on {_dataset(settings)}, {settings['epochs']} epochs, "
           f"seeds {settings['seeds']}{' (partial)' if payload.get('partial_note') else ''}")
  steps_per_epoch = settings["steps_per_epoch"]
  paths = []
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)

  # (a) Validation accuracy with its spread: line searches, peers, each tuned group's point.
  sgd = tuned(summary, "sgd")
  bars = [(k, s, BAR_COLOURS[s["group"]]) for k, s in summary.items()
          if s["group"] in ("line_search", "peer")]
  for group, short in BAR_NAMES.items():
    point = tuned(summary, group)
    if point is not None:
      bars.append((f"{short} lr={point['learning_rate']:g}", point, BAR_COLOURS[group]))
  fig = _figure(max(6.0, 0.55 * len(bars) + 2), 4.2)
  ax = fig.subplots()
  names = []
  for i, (name, s, colour) in enumerate(bars):
    runs = [r for r in results if r["label"] == s["label"]]
    accs = [100 * r["val_accuracy"] for r in runs if r["val_accuracy"] is not None]
    names.append(name if accs else f"{name} (diverged)")
    if not accs:
      continue
    std = np.std(accs, ddof=1) if len(accs) > 1 else 0.0
    ax.bar(i, np.mean(accs), yerr=std, color=colour, alpha=0.7, capsize=3)
    ax.plot([i] * len(accs), accs, "k.", ms=4)
  if sgd is not None:
    ref = 100 * sgd["val_accuracy"]["mean"]
    ax.axhline(ref, color="tab:gray", lw=1)
    ax.axhline(ref - WITHIN, color="tab:red", lw=1, ls="--", label=f"tuned SGD - {WITHIN:g} point")
    ax.legend(loc="lower left")
  means = [100 * s["val_accuracy"]["mean"] for _, s, _ in bars if s["val_accuracy"]["mean"]]
  if means:
    ax.set_ylim(max(0.0, min(means) - 5), min(100.0, max(means) + 2))
  ax.set_xticks(range(len(bars)), names, rotation=60, ha="right")
  ax.set(ylabel="validation accuracy (%)",
         title=f"{title}\nmean ± std over seeds (dots: seeds); blue: line searches, orange: "
               "peers, at their defaults")
  ax.grid(alpha=0.3, axis="y")
  paths.append(f"{prefix}_accuracy.png")
  fig.savefig(paths[-1], dpi=100)

  # (b) Step-size curves of every line search.
  searches = [k for k, s in summary.items() if s["group"] == "line_search"]
  if searches:
    cols = min(4, len(searches))
    rows = -(-len(searches) // cols)
    fig = _figure(3.6 * cols, 2.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, label in zip(axes, searches, strict=False):
      steps, curves, mean = _curves(results, label)
      for curve in curves:
        c = np.asarray([np.nan if v is None or v <= 0 else v for v in curve])
        ax.plot(steps, c, color="tab:blue", alpha=0.25, lw=0.6)
      ax.plot(steps, mean, color="tab:blue", lw=1.2)
      if np.isfinite(mean).any():
        ax.set_yscale("log")
      ax.set_title(label, fontsize=9)
      ax.grid(alpha=0.3)
      ax.tick_params(labelsize=7)
    for ax in axes[len(searches):]:
      ax.set_visible(False)
    fig.suptitle(f"step size per update (log; thin: seeds, bold: geometric mean)\n{title}",
                 fontsize=10)
    paths.append(f"{prefix}_step_sizes.png")
    fig.savefig(paths[-1], dpi=100)

  # (c) TLR from several initial rates.
  tlr = _tlr_runs(summary)
  if len(tlr) > 1:
    fig = _figure(11, 3.8)
    rate_ax, acc_ax = fig.subplots(1, 2)
    for init, s in tlr:
      label = s["label"]
      steps, _, mean = _curves(results, label)
      line = rate_ax.plot(steps, mean, label=f"init {init:g}")[0]
      runs = [r for r in results if r["label"] == label]
      epochs = [e["epoch"] for e in runs[0]["epochs"]]
      accs = np.asarray([[100 * (e["val_accuracy"] or np.nan) for e in r["epochs"]] for r in runs
                         if len(r["epochs"]) == len(epochs)])
      acc_ax.plot(epochs, np.nanmean(accs, axis=0), marker=".", color=line.get_color(),
                  label=f"init {init:g}: {_pct(s['val_accuracy'])}%")
    rate_ax.set(yscale="log", xlabel="update", ylabel="step size",
                title="TLR step size (geometric mean over seeds)")
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy (%)",
               title="validation accuracy (mean over seeds)")
    for ax in (rate_ax, acc_ax):
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    paths.append(f"{prefix}_tlr.png")
    fig.savefig(paths[-1], dpi=100)

  # (d) SaLSa against SLS.
  pairs = [(a, b) for a, b in (("salsa", "sls"), ("adam_salsa", "adam_sls"))
           if a in summary and b in summary]
  if pairs:
    fig = _figure(5.5 * len(pairs), 3.8)
    axes = np.atleast_1d(fig.subplots(1, len(pairs)))
    for ax, pair in zip(axes, pairs, strict=True):
      for label, colour in zip(pair, ("tab:green", "tab:red"), strict=True):
        steps, curves, _ = _curves(results, label)
        s = summary[label]
        for i, curve in enumerate(curves):
          c = np.asarray([np.nan if v is None or v <= 0 else v for v in curve])
          ax.plot(steps, c, color=colour, lw=0.7, alpha=0.8,
                  label=(f"{label}: tv {_num(s['tv']['mean'])}, cv {_num(s['cv']['mean'])}"
                         if i == 0 else None))
      ax.axvline(steps_per_epoch, color="k", lw=0.6, ls=":")
      ax.set(yscale="log", xlabel="update", ylabel="step size", title=" vs ".join(pair))
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8)
    fig.suptitle(f"step size of every seed; steadiness after the first epoch (dotted)\n{title}",
                 fontsize=10)
    paths.append(f"{prefix}_salsa_vs_sls.png")
    fig.savefig(paths[-1], dpi=100)
  return paths


# Running the protocol.


def _format_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _eta(todo: list[tuple[int, RunSpec]], done_times: dict[str, list[float]]) -> float:
  """Seconds left: each remaining run costs its label's mean so far (else the overall mean)."""
  overall = [t for times in done_times.values() for t in times]
  if not overall:
    return float("nan")
  fallback = float(np.mean(overall))
  return sum(float(np.mean(done_times[s.label])) if s.label in done_times else fallback
             for _, s in todo)


def _write_json(payload: dict[str, Any], path: str) -> None:
  """Writes ``payload`` with one line per run (atomically: a crash leaves the last good file)."""
  head = json.dumps({k: v for k, v in payload.items() if k != "results"}, indent=1)
  runs = ",\n".join("  " + json.dumps(r) for r in payload["results"])
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(f'{head[:-2]},\n "results": [\n{runs}\n ]\n}}\n')
  os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
  """The command line of ``python -m benchmarks.quality``."""
  parser = argparse.ArgumentParser(
      prog="python -m benchmarks.quality",
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="Line searches: " + ", ".join(LINE_SEARCHES) + ".\n\nThe image suites (mnist, "
             "cifar, digits) also use two options of --suite lm, with the same\ndefaults: "
             "--schedule-free-grid (schedule-free AdamW, 5% warm-up) and --peers.")
  parser.add_argument("--suite", choices=sorted([*SUITES, "lm"]), default="mnist",
                      help="mnist, cifar, digits, or lm (a character-level GPT on Shakespeare: "
                      "benchmarks/quality_lm.py)")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--epochs", type=int, help="epochs per run (default: the suite's budget)")
  parser.add_argument("--methods",
                      help="comma-separated optimizers trained with their defaults "
                           "(default: every line search; for lm, its eight)")
  parser.add_argument("--sgd-grid", type=positive_float, nargs="*",
                      default=list(SGD_GRID), help="SGD's learning rates (momentum 0.9, step "
                      "schedule); with no value: no SGD")
  parser.add_argument("--adam-grid", type=positive_float, nargs="*",
                      default=list(ADAM_GRID), help="Adam's peak learning rates (5%% warm-up, "
                      "cosine); with no value: no Adam")
  parser.add_argument("--adam-const-grid", type=positive_float, nargs="*",
                      default=list(ADAM_CONST_GRID), help="constant Adam's learning rates (no "
                      "warm-up; the lm suite's are --adam-grid-lm); with no value: none")
  parser.add_argument("--tlr-inits", type=positive_float, nargs="*",
                      default=list(TLR_INITS), help="TLR's initial rates (needs tlr in --methods "
                      "for the default one); with no value: none")
  parser.add_argument("--full", action="store_true",
                      help="the whole data set through tfds (cifar10 / mnist), for an accelerator")
  parser.add_argument("--data-dir", help="tfds data directory for --full")
  parser.add_argument("--out", default=RESULTS, help="directory of the outputs")
  parser.add_argument("--json", help="JSON path (default OUT/quality_<suite>[_full].json)")
  parser.add_argument("--png", help="figure prefix (default: the JSON path without .json)")
  parser.add_argument("--resume", action="store_true",
                      help="keep the finished runs of an existing JSON with the same settings")
  parser.add_argument("--partial-note", default="",
                      help="a note saying the results are partial (printed with the tables)")
  parser.add_argument("--plot", metavar="JSON",
                      help="only redraw the figures and the tables of this JSON")
  parser.add_argument("--plot-more", nargs="*", default=[], metavar="JSON",
                      help="lm: more result files merged with --plot's (parallel parts of one "
                      "protocol); with --json, the merged file is written there")
  quality_lm.add_arguments(parser)
  return parser


def _versions() -> dict[str, str]:
  import flax
  import optax

  return {"python": platform.python_version(), "jax": jax.__version__, "optax": optax.__version__,
          "flax": flax.__version__, "numpy": np.__version__, "optax_ls": optax_ls.__version__}


def write_outputs(payload: dict[str, Any], json_path: str, prefix: str,
                  tables: Callable[[dict[str, Any]], str] | None = None,
                  figures: Callable[[dict[str, Any], str], list[str]] | None = None
                  ) -> dict[str, Any]:
  """Writes ``<prefix>.md`` (``tables``, default :func:`markdown`) and the figures
  (``figures``, default :func:`plot`), prints the tables; returns the payload with the paths."""
  text = (tables or markdown)(payload)
  md_path = prefix + ".md"
  with open(md_path, "w") as f:
    f.write(text)
  paths = (figures or plot)(payload, prefix)
  print(text)
  print("wrote " + ", ".join([json_path, md_path, *paths]), flush=True)
  return {**payload, "markdown": md_path, "figures": paths}


_SELECTION = ("seeds", "methods", "sgd_grid", "adam_grid", "tlr_inits", "adam_const_grid",
              "schedule_free_grid", "peers")
"""Settings that choose which runs are made, not what a run does (``--resume`` ignores them, so
a file written before a group existed, without its setting, resumes)."""


def resumed_results(json_path: str, settings: dict[str, Any], selection: Sequence[str],
                    labels: set[str], seeds: Sequence[int]) -> list[dict[str, Any]]:
  """The finished runs of ``json_path`` to keep with ``--resume``.

  Runs are kept when the file's settings equal ``settings`` outside ``selection`` (the
  settings that choose runs, not what a run does), and their label and seed are asked for.
  A key of ``selection`` may be missing from either side: a file written before a group of
  runs existed lacks that group's setting and resumes all the same.
  """
  if not os.path.exists(json_path):
    return []
  with open(json_path) as f:
    old = json.load(f)
  def what_a_run_does(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in selection}
  if what_a_run_does(old["settings"]) != what_a_run_does(settings):
    print(f"not resuming: {json_path} has other settings", flush=True)
    return []
  results = [r for r in old["results"] if r["seed"] in seeds and r["label"] in labels]
  print(f"resuming: {len(results)} runs kept from {json_path}", flush=True)
  return results


def new_payload(argv: Sequence[str] | None, settings: dict[str, Any], partial_note: str,
                results: list[dict[str, Any]]) -> dict[str, Any]:
  """The JSON payload of a protocol run: date, command, device, versions, settings, runs."""
  return {
      "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      "command": "python -m benchmarks.quality " + shlex.join(sys.argv[1:] if argv is None
                                                                else list(argv)),
      "device": f"{jax.device_count()} x {jax.devices()[0].device_kind} ({platform.machine()}, "
                f"{os.cpu_count()} CPU cores)",
      "versions": _versions(),
      "settings": settings,
      "partial_note": partial_note,
      "results": results,
  }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the protocol (or with ``--plot`` only redraws); returns the JSON payload.

  The payload also carries ``markdown`` and ``figures``, the paths written.
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.suite == "lm":
    if args.methods is None:
      args.methods = ",".join(quality_lm.LM_METHODS)
    if not args.seeds or min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
      parser.error("--seeds: distinct non-negative integers")
    return quality_lm.main(args, parser, argv)
  if args.methods is None:
    args.methods = ",".join(LINE_SEARCHES)
  if args.plot:
    with open(args.plot) as f:
      payload = json.load(f)
    prefix = args.png or os.path.splitext(args.plot)[0]
    return write_outputs(payload, args.plot, prefix)

  suite = SUITES[args.suite]
  methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  unknown = [m for m in methods if m not in OPTIMIZERS]
  if unknown:
    parser.error(f"--methods: unknown {unknown}; known: {', '.join(sorted(OPTIMIZERS))}")
  if len(set(methods)) != len(methods):
    parser.error(f"--methods: repeated names in {methods}")
  peers = [m.strip() for m in args.peers.split(",") if m.strip()]
  unknown = [m for m in peers if m not in OPTIMIZERS]
  if unknown:
    parser.error(f"--peers: unknown {unknown}; known: {', '.join(sorted(OPTIMIZERS))}")
  if len(set(peers)) != len(peers) or set(peers) & set(methods):
    parser.error(f"--peers: repeated names, or names also in --methods, in {peers}")
  if not args.seeds or min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
    parser.error("--seeds: distinct non-negative integers")
  base = get_config(suite.config)
  epochs = args.epochs if args.epochs is not None else (
      suite.full_epochs if args.full else suite.epochs)
  if epochs < 1:
    parser.error("--epochs must be >= 1")
  if args.full:
    if suite.full_dataset is None:
      parser.error(f"--full: suite {args.suite!r} has no full data set")
    base = dataclasses.replace(base, dataset=suite.full_dataset, data_dir=args.data_dir,
                               test_fraction=0.1)
  elif suite.data_file is not None:
    path = os.path.join(SHARED_DATA, suite.data_file)
    if not os.path.exists(path):
      parser.error(f"{path} not found: set OPTAX_LS_DATA_DIR to the directory of the data "
                   "subsets")
  name = f"quality_{args.suite}{'_full' if args.full else ''}"
  json_path = args.json or os.path.join(args.out, name + ".json")
  prefix = args.png or os.path.splitext(json_path)[0]
  os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)

  mesh = harness.make_mesh()
  configs, splits = {}, {}
  for seed in args.seeds:
    configs[seed] = dataclasses.replace(base, seed=seed, epochs=epochs, log_every=1, out=None,
                                        max_steps=None, checkpoint_every=0, resume=False)
  first = configs[args.seeds[0]]
  try:
    splits[args.seeds[0]] = load_splits(first)
  except FileNotFoundError as error:  # a tfds data set not prepared: the message says how
    parser.error(str(error))
  train_source, val_source, spec = splits[args.seeds[0]]
  steps_per_epoch = data.steps_per_epoch(len(train_source), first.batch_size)
  runs = build_runs(methods, args.sgd_grid, args.adam_grid, args.tlr_inits,
                    steps_per_epoch * epochs, adam_const_grid=args.adam_const_grid,
                    schedule_free_grid=args.schedule_free_grid, peers=peers)
  settings = {
      "suite": args.suite, "full": args.full, "config": suite.config, "dataset": first.dataset,
      "model": first.model, "model_kwargs": first.model_kwargs, "batch_size": first.batch_size,
      "augment": first.augment, "val_fraction": first.test_fraction, "epochs": epochs,
      "num_train": len(train_source), "num_val": len(val_source),
      "steps_per_epoch": steps_per_epoch, "seeds": list(args.seeds), "methods": methods,
      "sgd_grid": args.sgd_grid, "sgd_momentum": SGD_MOMENTUM, "sgd_schedule": "step",
      "adam_grid": args.adam_grid, "adam_warmup_fraction": ADAM_WARMUP,
      "adam_schedule": "cosine", "tlr_inits": args.tlr_inits,
      "adam_const_grid": args.adam_const_grid, "schedule_free_grid": args.schedule_free_grid,
      "peers": peers,
  }
  settings = json.loads(json.dumps(settings))  # as a JSON file holds them (lists, not tuples)
  results = (resumed_results(json_path, settings, _SELECTION, {s.label for s in runs}, args.seeds)
             if args.resume else [])
  done = {(r["label"], r["seed"]) for r in results}
  todo = [(seed, spec_) for seed in args.seeds for spec_ in runs if (spec_.label, seed) not in done]
  payload = new_payload(argv, settings, args.partial_note, results)
  print(f"{name}: {settings['model']} on {settings['dataset']} ({settings['num_train']} train / "
        f"{settings['num_val']} val), batch {first.batch_size}, {epochs} epochs, "
        f"{len(runs)} settings x {len(args.seeds)} seeds = {len(runs) * len(args.seeds)} runs "
        f"({len(todo)} to run)", flush=True)
  times: dict[str, list[float]] = {}
  for r in results:
    times.setdefault(r["label"], []).append(r["wall_s"])
  start = time.perf_counter()
  total = len(runs) * len(args.seeds)
  current_seed, model, variables = None, None, None
  while todo:
    seed, run_spec = todo.pop(0)
    config = configs[seed]
    if seed != current_seed:
      if seed not in splits:
        splits[seed] = load_splits(config)
      train_source, val_source, spec = splits.pop(seed)
      model = get_model(config.model, num_classes=spec.num_classes, **config.model_kwargs)
      sample, _ = next(data.batches(train_source, spec, batch_size=1, seed=0, epoch=0,
                                    augment=False))
      variables = harness.init_variables(model, jax.random.key(seed), sample)
      current_seed = seed
    tic = time.perf_counter()
    state, records = harness.train_one(config, run_spec.optimizer, model, variables,
                                       train_source, val_source, spec, mesh, verbose=False)
    eval_batch = -(-config.eval_batch_size // jax.device_count()) * jax.device_count()
    train_eval = harness.evaluate(state, train_source, spec, eval_batch, mesh)
    wall = time.perf_counter() - tic
    del state
    result = summarise_run(run_spec, seed, records, train_eval, wall, steps_per_epoch)
    results.append(result)
    times.setdefault(run_spec.label, []).append(wall)
    _write_json(payload, json_path)
    acc = "-" if result["val_accuracy"] is None else f"{100 * result['val_accuracy']:.2f}%"
    loss = _num(result["train_loss"], ".4f")
    print(f"[{len(results):>3}/{total}] {run_spec.label:<28} seed {seed}  val acc {acc:>7}  "
          f"train loss {loss:>7}  {wall:6.1f} s  elapsed "
          f"{_format_seconds(time.perf_counter() - start)}  ETA "
          f"{_format_seconds(_eta(todo, times)) if todo else '0m00s'}", flush=True)
  _write_json(payload, json_path)
  return write_outputs(payload, json_path, prefix)


if __name__ == "__main__":
  main()
