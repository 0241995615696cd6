"""BatchNorm statistics after a line search's steps: how much of a CIFAR-10 gap is stale averages?

A network with BatchNorm is evaluated with running averages of the batch statistics
(momentum 0.9 here, PyTorch's 0.1). Large or fast-changing steps, as a line search can
take, move the weights faster than the averages follow, so that the evaluated network is
not the trained one. This probe trains each optimizer of the CIFAR-10 quality suite
(ResNet-20 on the subset, the protocol of ``benchmarks/quality.py``) and evaluates its
final weights twice: with the running averages it ended with, and with averages
*recalibrated* at the final weights (64 training batches, no augmentation, in training
mode: 0.9**64 < 1e-3 of the old averages remain). A large gain from recalibrating means
that the gap is partly an evaluation artefact of stale statistics; none means it is not.
It also reports the applied step's largest and last values, and the largest relative
change of the running averages over the last epoch::

  python -m benchmarks.bn_probe --seeds 0 --methods sls,adam_salsa_cooldown \\
      --sgd-lr 0.03 --adam-lr 3e-3 --json benchmarks/results/bn_probe_cifar.json

Writes the JSON (every run as it finishes; ``--resume`` keeps the finished ones) and a
Markdown table beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import quality
from models import get_model
from train import data
from train import train as harness
from train.config import SHARED_DATA, get_config

RECALIBRATION_BATCHES = 64


def recalibrated(state: Any, model: Any, source: Any, spec: data.DataSpec, *, batch_size: int,
                 batches: int = RECALIBRATION_BATCHES, seed: int = 0) -> Any:
  """``state`` with its BatchNorm averages re-estimated at its own weights.

  Runs ``batches`` training batches (no augmentation, repeating the split as needed)
  through the model in training mode, each updating the running averages.
  """
  apply = jax.jit(lambda params, stats, x: model.apply(
      {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"],
      rngs={"dropout": jax.random.key(seed)})[1]["batch_stats"])
  stats, done, epoch = state.batch_stats, 0, 0
  while done < batches:
    for x, _ in data.batches(source, spec, batch_size=batch_size, seed=seed + 1000, epoch=epoch,
                             augment=False):
      stats = apply(state.params, stats, jnp.asarray(x))
      done += 1
      if done == batches:
        break
    epoch += 1
  return state.replace(batch_stats=stats)


def stats_change(before: Any, after: Any) -> float:
  """The largest relative change of a running mean or variance, over the layers."""
  changes = jax.tree.map(
      lambda a, b: float(jnp.linalg.norm(b - a) / (jnp.linalg.norm(a) + 1e-12)), before, after)
  return max(jax.tree.leaves(changes))


def probe_one(config: Any, spec_run: quality.RunSpec, splits: Any, mesh: Any) -> dict[str, Any]:
  """Trains one run and evaluates its final weights with old and recalibrated averages."""
  train_source, val_source, spec = splits
  model = get_model(config.model, num_classes=spec.num_classes, **config.model_kwargs)
  sample, _ = next(data.batches(train_source, spec, batch_size=1, seed=0, epoch=0,
                                augment=False))
  variables = harness.init_variables(model, jax.random.key(config.seed), sample)
  tic = time.perf_counter()
  state, records = harness.train_one(config, spec_run.optimizer, model, variables, train_source,
                                     val_source, spec, mesh, verbose=False)
  eval_batch = -(-config.eval_batch_size // jax.device_count()) * jax.device_count()
  fresh = recalibrated(state, model, train_source, spec, batch_size=config.batch_size,
                       seed=config.seed)
  out: dict[str, Any] = {"label": spec_run.label, "seed": config.seed}
  for name, s in (("running", state), ("recalibrated", fresh)):
    val = harness.evaluate(s, val_source, spec, eval_batch, mesh)
    train = harness.evaluate(s, train_source, spec, eval_batch, mesh)
    out[f"val_accuracy_{name}"] = val["accuracy"]
    out[f"train_loss_{name}"] = train["loss"]
  out["stats_change"] = stats_change(state.batch_stats, fresh.batch_stats)
  rates = [r["learning_rate"] for r in records["train"] if "learning_rate" in r]
  if rates:
    out["step_max"], out["step_last"] = float(np.max(rates)), float(rates[-1])
  out["wall_s"] = time.perf_counter() - tic
  return out


def markdown(payload: dict[str, Any]) -> str:
  """The table: per optimizer, the mean over seeds of each figure (± std where several)."""
  rows: dict[str, list[dict[str, Any]]] = {}
  for r in payload["results"]:
    rows.setdefault(r["label"], []).append(r)

  def cell(runs: list[dict[str, Any]], key: str, scale: float = 1.0, fmt: str = ".2f") -> str:
    values = [scale * r[key] for r in runs if r.get(key) is not None]
    if not values:
      return "-"
    text = f"{np.mean(values):{fmt}}"
    return text + (f" ± {np.std(values):{fmt}}" if len(values) > 1 else "")

  lines = [
      f"BatchNorm probe, {payload['settings']['model']} on {payload['settings']['dataset']}, "
      f"{payload['settings']['epochs']} epochs, seeds {payload['settings']['seeds']} "
      f"({payload['date']}, {payload['device']}): validation accuracy (%) of the final weights "
      "with the running BatchNorm averages and with averages recalibrated at those weights.",
      "",
      "| optimizer | val acc, running | val acc, recalibrated | gain | train loss, running | "
      "train loss, recalibrated | averages' change on recalibrating | largest step | last "
      "step |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for label, runs in rows.items():
    for r in runs:
      r["gain"] = r["val_accuracy_recalibrated"] - r["val_accuracy_running"]
    lines.append(
        f"| `{label}` | {cell(runs, 'val_accuracy_running', 100)} | "
        f"{cell(runs, 'val_accuracy_recalibrated', 100)} | {cell(runs, 'gain', 100)} | "
        f"{cell(runs, 'train_loss_running', fmt='.3f')} | "
        f"{cell(runs, 'train_loss_recalibrated', fmt='.3f')} | "
        f"{cell(runs, 'stats_change', fmt='.3f')} | {cell(runs, 'step_max', fmt='.3g')} | "
        f"{cell(runs, 'step_last', fmt='.3g')} |")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.bn_probe",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0])
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--methods", default="sls,adam_salsa_cooldown",
                      help="line searches at their defaults (comma-separated)")
  parser.add_argument("--sgd-lr", type=float, nargs="*", default=[0.03],
                      help="SGD-momentum's rates (step schedule, as the quality protocol)")
  parser.add_argument("--adam-lr", type=float, nargs="*", default=[3e-3],
                      help="Adam's peak rates (warm-up and cosine, as the quality protocol)")
  parser.add_argument("--json", default="benchmarks/results/bn_probe_cifar.json")
  parser.add_argument("--resume", action="store_true")
  parser.add_argument("--max-steps", type=int, help="stop each run early (a smoke test)")
  args = parser.parse_args(argv)
  suite = quality.SUITES["cifar"]
  path = os.path.join(SHARED_DATA, suite.data_file)
  if not os.path.exists(path):
    parser.error(f"{path} not found: set OPTAX_LS_DATA_DIR to the directory of the data subsets")
  methods = [m for m in args.methods.split(",") if m]
  base = get_config(suite.config)
  mesh = harness.make_mesh()
  configs = {s: dataclasses.replace(base, seed=s, epochs=args.epochs, log_every=1, out=None,
                                    max_steps=args.max_steps, checkpoint_every=0, resume=False)
             for s in args.seeds}
  splits = {s: quality.load_splits(configs[s]) for s in args.seeds}
  train_source = splits[args.seeds[0]][0]
  total = data.steps_per_epoch(len(train_source), base.batch_size) * args.epochs
  runs = quality.build_runs(methods, args.sgd_lr, args.adam_lr, [], total)
  settings = {"model": base.model, "dataset": os.path.basename(path), "epochs": args.epochs,
              "seeds": args.seeds, "max_steps": args.max_steps,
              "recalibration_batches": RECALIBRATION_BATCHES}
  results = []
  if args.resume and os.path.exists(args.json):
    with open(args.json) as f:
      old = json.load(f)
    if old["settings"] == settings:
      results = old["results"]
  payload = {"date": datetime.date.today().isoformat(),
             "device": f"{jax.devices()[0].device_kind}, {os.cpu_count()} CPU cores",
             "settings": settings, "results": results}
  done = {(r["label"], r["seed"]) for r in results}
  for seed in args.seeds:
    for run in runs:
      if (run.label, seed) in done:
        continue
      result = probe_one(configs[seed], run, splits[seed], mesh)
      results.append(result)
      with open(args.json, "w") as f:
        json.dump(payload, f, indent=1)
      print(f"{run.label:<24} seed {seed}: val acc {100 * result['val_accuracy_running']:.2f}% "
            f"-> {100 * result['val_accuracy_recalibrated']:.2f}% recalibrated "
            f"({result['wall_s']:.0f} s)", flush=True)
  with open(args.json, "w") as f:
    json.dump(payload, f, indent=1)
  text = markdown(payload)
  with open(os.path.splitext(args.json)[0] + ".md", "w") as f:
    f.write(text)
  print(text)
  return payload


if __name__ == "__main__":
  main()
