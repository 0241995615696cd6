"""The ``lm`` suite of ``python -m benchmarks.quality``: a character-level GPT on Shakespeare.

Every line search of ``LM_METHODS`` with its defaults (no tuning) against the usual
transformer baselines, each tuned on a small grid of peak learning rates, and the
parameter-free peers at their defaults:

* AdamW with a linear warm-up over the first 5% of the updates and a cosine decay to
  zero, weight decay 0.1 (the standard transformer recipe), ``--adamw-grid``;
* Adam at a constant learning rate, ``--adam-grid-lm``;
* schedule-free AdamW (``optax.contrib.schedule_free_adamw``, 5% warm-up, evaluated at
  its averaged weights), ``--schedule-free-grid``;
* Prodigy and DoG (``optax.contrib.prodigy``, ``optax.contrib.dog``) at their defaults.

Protocol. The model, data and batch of the harness's ``shakespeare_char_gpt`` config:
``gpt_nano`` (4 layers, 4 heads, width 128, context 64, dropout 0.1; 0.81M parameters) on
``tiny_shakespeare_train.txt`` (``../shared/data``), whose last 10% (100,385 characters) is
the held-out validation text; batch 32 random windows of 64 characters. Every run makes
``--steps`` updates (default 300, what fits this 2-core machine: see ``LM_STEPS``): one
pass over ``steps x 32`` of the training text's 14,115 64-character blocks, drawn once per
seed; schedules span exactly those updates. Per seed (``--seeds``, default 0 1 2) every
optimizer starts from the same initialisation and sees the same batches and dropout masks.
A run reports its validation loss in bits per character (the whole held-out text, in
windows of 64, inference mode), its training loss (bits per character, mean of the last
10% of the updates' mini-batch losses), wall time, ``value_fn`` calls per update and its
step size at every update. Tuning picks, per baseline family, the grid point with the
lowest mean validation bits per character; the same validation text scores it (an
optimistic estimate of what tuning buys).

Outputs: ``quality_lm.json`` (rewritten after every run; ``--resume`` continues),
``quality_lm.md`` (tables) and the figures ``quality_lm_bpc.png`` (validation bits per
character, mean and seeds), ``quality_lm_loss.png`` (training loss curves) and
``quality_lm_step_sizes.png`` (each line search's step size against the tuned AdamW's
learning rate). ``--plot A.json [B.json ...]`` redraws from one or more result files
(runs of the same settings made in parallel processes are merged)::

  python -m benchmarks.quality --suite lm
  python -m benchmarks.quality --suite lm --seeds 0 --methods adam_salsa --adamw-grid 3e-3 \\
      --adam-grid-lm --schedule-free-grid --peers
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from benchmarks import quality as q
from models import get_model
from train import data
from train import train as harness
from train.config import SHAKESPEARE_FILE, SHARED_DATA, get_config, positive_float
from train.optimizers import OPTIMIZERS, OptimizerConfig

CONFIG = "shakespeare_char_gpt"
LM_METHODS = ("adam_salsa", "adam_sls", "salsa", "sls", "pal", "labpal_sgd", "labpal_nsgd",
              "tlr")
"""The line searches of the suite (the default ``--methods``)."""
PEERS = ("prodigy", "dog")
"""The parameter-free peers, at their defaults."""
ADAMW_GRID = (1e-3, 3e-3, 6e-3, 1e-2)
ADAM_GRID = (1e-3, 3e-3, 1e-2)
SCHEDULE_FREE_GRID = (1e-3, 3e-3, 1e-2)
WARMUP = 0.05
"""The warm-up of AdamW and schedule-free AdamW, as a fraction of the updates."""
ADAMW_WEIGHT_DECAY = 0.1
LM_STEPS = 300
"""The default updates per run: about 60 s for a baseline and 100-200 s for a line search
on this project's 2-core machine, so the 60 runs of the whole protocol take about 2 hours."""
BITS = 1.0 / math.log(2.0)
"""Nats to bits."""
WITHIN_BITS = 0.05
"""The target of the quality issue: within this many bits per character of tuned AdamW."""

GROUPS = {
    "line_search": "line search (defaults)",
    "adamw": "AdamW, warm-up + cosine",
    "adam": "Adam, constant",
    "schedule_free": "schedule-free AdamW",
    "peer": "parameter-free (defaults)",
}


@dataclasses.dataclass(frozen=True)
class LmRun:
  """One optimizer setting of the suite, trained once per seed.

  Attributes:
    label: the name in the tables (``adam_salsa``, ``adamw lr=0.003``).
    group: a key of :data:`GROUPS`.
    optimizer: the harness's optimizer configuration.
  """

  label: str
  group: str
  optimizer: OptimizerConfig


def build_runs(methods: Sequence[str], adamw_grid: Sequence[float], adam_grid: Sequence[float],
               schedule_free_grid: Sequence[float], peers: Sequence[str],
               steps: int) -> list[LmRun]:
  """The settings of one seed, in the order they run."""
  warmup = max(1, round(WARMUP * steps))
  runs = [LmRun(name, "line_search", OptimizerConfig(name)) for name in methods]
  runs += [LmRun(f"adamw lr={lr:g}", "adamw",
                 OptimizerConfig("adamw", learning_rate=lr, schedule="cosine",
                                 warmup_steps=warmup, weight_decay=ADAMW_WEIGHT_DECAY))
           for lr in adamw_grid]
  runs += [LmRun(f"adam lr={lr:g}", "adam", OptimizerConfig("adam", learning_rate=lr))
           for lr in adam_grid]
  runs += [LmRun(f"schedule_free_adamw lr={lr:g}", "schedule_free",
                 OptimizerConfig("schedule_free_adamw", learning_rate=lr, warmup_steps=warmup))
           for lr in schedule_free_grid]
  runs += [LmRun(name, "peer", OptimizerConfig(name)) for name in peers]
  return runs


def load_splits(config: Any, steps: int) -> tuple[Any, Any, data.DataSpec]:
  """The training windows of one seed (``steps x batch`` of them) and the validation text."""
  train_source, val_source, spec = data.load(
      config.dataset, data_dir=config.data_dir, seed=config.seed,
      test_fraction=config.test_fraction, context=config.sequence_length)
  need = steps * config.batch_size
  if need > len(train_source):
    raise ValueError(f"--steps {steps} x batch {config.batch_size} exceeds the "
                     f"{len(train_source)} training windows")
  chosen = np.sort(np.random.default_rng([config.seed, 7]).permutation(len(train_source))[:need])
  train_split = q._Subset(train_source, chosen)
  return train_split, val_source, dataclasses.replace(spec, num_train=need)


def summarise_run(spec: LmRun, seed: int, records: dict[str, list[dict[str, Any]]],
                  wall: float) -> dict[str, Any]:
  """The JSON record of one run from the harness's records (``log_every=1``)."""
  train, evals = records["train"], records["eval"]
  rates = [r.get("learning_rate") for r in train]
  losses = [r["loss"] for r in train]
  tail = max(1, len(losses) // 10)
  evals_per_step = [r["evals_per_step"] for r in train if "evals_per_step" in r]
  keep = q._subsample(len(train), q.CURVE_POINTS)
  last = evals[-1]
  final_rate = next((r for r in reversed(rates) if r is not None and r > 0), None)
  return {
      "label": spec.label,
      "group": spec.group,
      "method": spec.optimizer.name,
      "seed": seed,
      "optimizer": dataclasses.asdict(spec.optimizer),
      "val_bpc": q._finite(last["test_loss"] * BITS),
      "val_accuracy": q._finite(last["test_accuracy"]),
      "train_bpc": q._finite(float(np.mean(losses[-tail:])) * BITS),
      "diverged": not all(math.isfinite(v) for v in losses),
      "wall_s": wall,
      "evals_per_step": float(np.mean(evals_per_step)) if evals_per_step else None,
      "final_step_size": final_rate,
      "curve": {
          "step": [train[i]["step"] for i in keep],
          "step_size": [q._short(rates[i]) for i in keep],
          "loss": [q._short(train[i]["loss"]) for i in keep],
          "evals": [q._short(train[i].get("evals_per_step")) for i in keep],
      },
  }


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """Per label (in the order of first appearance): the statistics over seeds."""
  return q.summarise_runs(results, ("val_bpc", "train_bpc", "wall_s", "evals_per_step",
                                    "final_step_size"))


def tuned(summary: dict[str, dict[str, Any]], group: str) -> dict[str, Any] | None:
  """The grid point of ``group`` with the lowest mean validation bits per character."""
  return q.tuned(summary, group, key="val_bpc", best=min)


def _bpc(stats: dict[str, Any]) -> str:
  if stats["mean"] is None:
    return "-"
  return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def markdown(payload: dict[str, Any]) -> str:
  """The table of ``payload`` (the JSON of :func:`main`), rows sorted by validation bpc."""
  summary = summarise(payload["results"])
  settings = payload["settings"]
  reference = tuned(summary, "adamw")
  ref = None if reference is None else reference["val_bpc"]["mean"]
  lines = [
      f"Suite `lm`: {settings['model']} ({settings['num_params']:,} parameters) on "
      f"{os.path.basename(settings['dataset'])}, {settings['steps']} updates of batch "
      f"{settings['batch_size']} x {settings['context']} characters, validation on the held-out "
      f"{settings['num_val']} windows, seeds {settings['seeds']}. "
      f"{'**Partial**: ' + payload['partial_note'] + ' ' if payload.get('partial_note') else ''}"
      f"Run on {payload['date']} ({payload['device']}) with `{payload['command']}`.",
      "",
      "| optimizer | setting | val. bits/char (mean ± std) | min-max | vs tuned AdamW | "
      "train bits/char | evals/step | final step | s/run |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  rows = [(k, s, "defaults") for k, s in summary.items() if s["group"] in ("line_search", "peer")]
  for group in ("adamw", "adam", "schedule_free"):
    best = tuned(summary, group)
    if best is not None:
      edge = " (grid edge)" if best["at_edge"] else ""
      how = "tuned" if best["grid_size"] > 1 else "not tuned"
      rows.append((GROUPS[group], best, f"{how}: lr={best['learning_rate']:g}{edge}"))
  rows.sort(key=lambda row: math.inf if row[1]["val_bpc"]["mean"] is None
            else row[1]["val_bpc"]["mean"])
  for name, s, setting in rows:
    b = s["val_bpc"]
    delta = "-" if ref is None or b["mean"] is None else f"{b['mean'] - ref:+.3f}"
    diverged = f" ({s['diverged']} diverged)" if s["diverged"] else ""
    lines.append(
        f"| {name} | {setting}{diverged} | {_bpc(b)} | {q._num(b['min'], '.3f')}-"
        f"{q._num(b['max'], '.3f')} | {delta} | {q._num(s['train_bpc']['mean'], '.3f')} | "
        f"{q._num(s['evals_per_step']['mean'], '.2f')} | "
        f"{q._num(s['final_step_size']['mean'])} | {q._num(s['wall_s']['mean'], '.0f')} |")
  order = {"adamw": 0, "adam": 1, "schedule_free": 2}
  grid = sorted((s for s in summary.values() if s["group"] in order),
                key=lambda s: (order[s["group"]], s["optimizer"]["learning_rate"]))
  if grid:
    picked = {b["label"] for b in (tuned(summary, g) for g in ("adamw", "adam", "schedule_free"))
              if b is not None}
    lines += ["", "Learning-rate grids (the picked point in bold):", "",
              "| baseline | lr | val. bits/char | train bits/char | s/run |",
              "|---|---|---|---|---|"]
    for s in grid:
      bold = "**" if s["label"] in picked else ""
      few = (f" (seed{'s' if len(s['seeds']) > 1 else ''} {', '.join(map(str, s['seeds']))} "
             "only)" if len(s["seeds"]) < len(settings["seeds"]) else "")
      lines.append(f"| {GROUPS[s['group']]} | {bold}{s['optimizer']['learning_rate']:g}{bold} | "
                   f"{_bpc(s['val_bpc'])}{few} | {q._num(s['train_bpc']['mean'], '.3f')} | "
                   f"{q._num(s['wall_s']['mean'], '.0f')} |")
  if ref is not None:
    within = [k for k, s in summary.items() if s["group"] == "line_search"
              and s["val_bpc"]["mean"] is not None and s["val_bpc"]["mean"] <= ref + WITHIN_BITS]
    lines += ["", f"Line searches within {WITHIN_BITS} bits per character of tuned AdamW "
              f"({reference['label']}, {_bpc(reference['val_bpc'])}): "
              f"{', '.join(within) or 'none'}."]
  return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], prefix: str) -> list[str]:
  """Writes ``<prefix>_bpc.png``, ``<prefix>_loss.png`` and ``<prefix>_step_sizes.png``."""
  results = payload["results"]
  summary = summarise(results)
  settings = payload["settings"]
  title = (f"{settings['model']} on Shakespeare characters, {settings['steps']} updates, "
           f"seeds {settings['seeds']}{' (partial)' if payload.get('partial_note') else ''}")
  paths = []
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  colours = {"line_search": "tab:blue", "adamw": "tab:olive", "adam": "tab:gray",
             "schedule_free": "tab:purple", "peer": "tab:orange"}
  shown = [s for s in summary.values() if s["group"] in ("line_search", "peer")]
  shown += [b for b in (tuned(summary, g) for g in ("adamw", "adam", "schedule_free")) if b]
  shown.sort(key=lambda s: math.inf if s["val_bpc"]["mean"] is None else s["val_bpc"]["mean"])

  fig = q._figure(max(6.0, 0.6 * len(shown) + 2), 5.0)
  ax = fig.subplots()
  for i, s in enumerate(shown):
    values = [r["val_bpc"] for r in results if r["label"] == s["label"] and r["val_bpc"]]
    if values:
      std = np.std(values, ddof=1) if len(values) > 1 else 0.0
      ax.bar(i, np.mean(values), yerr=std, color=colours[s["group"]], alpha=0.7, capsize=3)
      ax.plot([i] * len(values), values, "k.", ms=4)
  best = tuned(summary, "adamw")
  if best is not None and best["val_bpc"]["mean"] is not None:
    ax.axhline(best["val_bpc"]["mean"] + WITHIN_BITS, color="tab:red", ls="--", lw=1,
               label=f"tuned AdamW + {WITHIN_BITS}")
    ax.legend(loc="upper left")
  lows = [s["val_bpc"]["min"] for s in shown if s["val_bpc"]["min"] is not None]
  highs = [s["val_bpc"]["max"] for s in shown if s["val_bpc"]["max"] is not None]
  if lows:
    ax.set_ylim(min(lows) - 0.1, max(highs) + 0.1)
  ax.set_xticks(range(len(shown)), [s["label"] for s in shown], rotation=60, ha="right")
  ax.set(ylabel="validation bits/char (lower: better)",
         title=f"{title}\nmean ± std (dots: seeds); blue: line searches at their defaults")
  ax.grid(alpha=0.3, axis="y")
  paths.append(f"{prefix}_bpc.png")
  fig.savefig(paths[-1], dpi=100)

  fig = q._figure(8, 4.5)
  ax = fig.subplots()
  for s in shown:
    runs = [r for r in results if r["label"] == s["label"]]
    steps = np.asarray(runs[0]["curve"]["step"])
    curves = np.asarray([[np.nan if v is None else v * BITS for v in r["curve"]["loss"]]
                         for r in runs if len(r["curve"]["step"]) == len(steps)])
    mean = np.nanmean(curves, axis=0)
    width = max(1, len(mean) // 30)
    smooth = np.convolve(mean, np.ones(width) / width, mode="valid")
    ax.plot(steps[width - 1:], smooth, color=colours[s["group"]],
            lw=1.6 if s["group"] != "line_search" else 1.0, label=s["label"])
  ax.set(xlabel="update", ylabel="training loss (bits/char, running mean)", title=title)
  ax.set_ylim(top=4.5)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  paths.append(f"{prefix}_loss.png")
  fig.savefig(paths[-1], dpi=100)

  searches = [s for s in summary.values() if s["group"] == "line_search"]
  if searches:
    fig = q._figure(8, 4.5)
    ax = fig.subplots()
    for s in searches:
      steps, _, mean = q._curves(results, s["label"])
      ax.plot(steps, mean, lw=1.0, label=s["label"])
    if best is not None:
      steps, _, mean = q._curves(results, best["label"])
      ax.plot(steps, mean, color="k", lw=2.0, ls="--", label=f"tuned {best['label']}")
    # The peers' own steps, where their runs logged them (Prodigy's d, DoG's eta).
    for s in summary.values():
      runs = [r for r in results if r["label"] == s["label"]]
      if s["group"] == "peer" and all(any(v for v in r["curve"]["step_size"] if v)
                                      for r in runs):
        steps, _, mean = q._curves(results, s["label"])
        ax.plot(steps, mean, color="0.4", lw=1.4, ls=":", label=f"{s['label']} (its own step)")
    ax.set(yscale="log", xlabel="update", ylabel="step size (geometric mean over seeds)",
           title=f"step sizes of the line searches against the tuned AdamW rate\n{title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    paths.append(f"{prefix}_step_sizes.png")
    fig.savefig(paths[-1], dpi=100)
  return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of the ``lm`` suite (added to ``python -m benchmarks.quality``'s parser)."""
  group = parser.add_argument_group("--suite lm")
  group.add_argument("--steps", type=int, default=LM_STEPS,
                     help=f"updates per run (default {LM_STEPS})")
  group.add_argument("--adamw-grid", type=positive_float, nargs="*", default=list(ADAMW_GRID),
                     help="AdamW's peak learning rates (5%% warm-up, cosine, weight decay 0.1)")
  group.add_argument("--adam-grid-lm", dest="adam_grid_lm", type=positive_float, nargs="*",
                     default=list(ADAM_GRID), help="constant Adam's learning rates")
  group.add_argument("--schedule-free-grid", type=positive_float, nargs="*",
                     default=list(SCHEDULE_FREE_GRID),
                     help="schedule-free AdamW's learning rates")
  group.add_argument("--peers", default=",".join(PEERS),
                     help="parameter-free optimizers at their defaults (comma-separated; "
                          "empty for none)")


def merge(paths: Sequence[str]) -> dict[str, Any]:
  """One payload from result files of the same settings (runs made in parallel processes)."""
  payloads = []
  for path in paths:
    with open(path) as f:
      payloads.append(json.load(f))
  base = payloads[0]
  keys = ("steps", "batch_size", "context", "dataset", "model")
  results = {}
  for p in payloads:
    if any(p["settings"][k] != base["settings"][k] for k in keys):
      raise ValueError(f"cannot merge result files of different settings: {paths}")
    for r in p["results"]:
      results[(r["label"], r["seed"])] = r
  seeds = sorted({seed for _, seed in results})
  order = {label: i for i, label in enumerate(dict.fromkeys(
      r["label"] for p in payloads for r in p["results"]))}
  merged = sorted(results.values(), key=lambda r: (order[r["label"]], r["seed"]))
  commands = "; ".join(dict.fromkeys(p["command"] for p in payloads))
  settings = {**base["settings"], "seeds": seeds}
  for key in ("methods", "peers", "adamw_grid", "adam_grid", "schedule_free_grid"):
    values = [v for p in payloads for v in p["settings"].get(key, [])]
    settings[key] = list(dict.fromkeys(values)) if key in ("methods", "peers") else sorted(
        set(values))
  return {**base, "command": commands, "settings": settings, "results": merged}


def main(args: argparse.Namespace, parser: argparse.ArgumentParser,
         argv: Sequence[str] | None) -> dict[str, Any]:
  """Runs the ``lm`` suite with the parsed ``args`` of ``python -m benchmarks.quality``."""
  if args.plot:
    paths = [args.plot, *args.plot_more]
    payload = merge(paths)
    prefix = args.png or os.path.splitext(args.json or args.plot)[0]
    if args.json:
      q._write_json(payload, args.json)
    return q.write_outputs(payload, args.json or args.plot, prefix, markdown, plot)
  methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else []
  peers = [m.strip() for m in args.peers.split(",") if m.strip()]
  unknown = [m for m in methods + peers if m not in OPTIMIZERS]
  if unknown:
    parser.error(f"unknown optimizers {unknown}; known: {', '.join(sorted(OPTIMIZERS))}")
  if args.steps < 1:
    parser.error("--steps must be >= 1")
  base = get_config(CONFIG)
  path = os.path.join(base.data_dir or SHARED_DATA, SHAKESPEARE_FILE)
  if not os.path.exists(path):
    parser.error(f"{path} not found: set OPTAX_LS_DATA_DIR to the directory of the data")
  json_path = args.json or os.path.join(args.out, "quality_lm.json")
  prefix = args.png or os.path.splitext(json_path)[0]
  os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
  runs = build_runs(methods, args.adamw_grid, args.adam_grid_lm, args.schedule_free_grid, peers,
                    args.steps)
  mesh = harness.make_mesh()
  configs = {seed: dataclasses.replace(base, seed=seed, epochs=1, log_every=1, out=None,
                                       max_steps=None, checkpoint_every=0, resume=False)
             for seed in args.seeds}
  first = configs[args.seeds[0]]
  train_source, val_source, spec = load_splits(first, args.steps)
  model = get_model(first.model, num_classes=spec.num_classes, **first.model_kwargs)
  sample, _ = next(data.batches(train_source, spec, batch_size=1, seed=0, epoch=0, augment=False))
  variables = harness.init_variables(model, jax.random.key(0), sample)
  settings = json.loads(json.dumps({
      "suite": "lm", "config": CONFIG, "dataset": first.dataset, "model": first.model,
      "model_kwargs": first.model_kwargs,
      "num_params": sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"])),
      "batch_size": first.batch_size, "context": first.sequence_length, "steps": args.steps,
      "num_train_windows": len(train_source), "num_val": len(val_source),
      "seeds": list(args.seeds), "methods": methods, "adamw_grid": args.adamw_grid,
      "adamw_weight_decay": ADAMW_WEIGHT_DECAY, "adam_grid": args.adam_grid_lm,
      "schedule_free_grid": args.schedule_free_grid, "peers": peers,
      "warmup_fraction": WARMUP,
  }))
  selection = ("seeds", "methods", "adamw_grid", "adam_grid", "schedule_free_grid", "peers")
  results = (q.resumed_results(json_path, settings, selection, {s.label for s in runs},
                               args.seeds) if args.resume else [])
  done = {(r["label"], r["seed"]) for r in results}
  todo = [(seed, s) for seed in args.seeds for s in runs if (s.label, seed) not in done]
  payload = q.new_payload(argv, settings, args.partial_note, results)
  total = len(runs) * len(args.seeds)
  print(f"quality_lm: {first.model} on {os.path.basename(first.dataset)}, {args.steps} updates, "
        f"{len(runs)} settings x {len(args.seeds)} seeds = {total} runs ({len(todo)} to run)",
        flush=True)
  times: dict[str, list[float]] = {}
  for r in results:
    times.setdefault(r["label"], []).append(r["wall_s"])
  start = time.perf_counter()
  current = None
  while todo:
    seed, run = todo.pop(0)
    config = configs[seed]
    if seed != current:
      train_source, val_source, spec = load_splits(config, args.steps)
      sample, _ = next(data.batches(train_source, spec, batch_size=1, seed=0, epoch=0,
                                    augment=False))
      variables = harness.init_variables(model, jax.random.key(seed), sample)
      current = seed
    tic = time.perf_counter()
    _, records = harness.train_one(config, run.optimizer, model, variables, train_source,
                                   val_source, spec, mesh, verbose=False)
    wall = time.perf_counter() - tic
    result = summarise_run(run, seed, records, wall)
    results.append(result)
    times.setdefault(run.label, []).append(wall)
    q._write_json(payload, json_path)
    print(f"[{len(results):>3}/{total}] {run.label:<28} seed {seed}  val bpc "
          f"{q._num(result['val_bpc'], '.3f'):>6}  train bpc {q._num(result['train_bpc'], '.3f')}"
          f"  step {q._num(result['final_step_size'])}  {wall:6.1f} s  elapsed "
          f"{q._format_seconds(time.perf_counter() - start)}  ETA "
          f"{q._format_seconds(q._eta(todo, times)) if todo else '0m00s'}", flush=True)
  q._write_json(payload, json_path)
  return q.write_outputs(payload, json_path, prefix, markdown, plot)
