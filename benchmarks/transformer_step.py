"""Time per update of a GPT-2-small-sized model: a line search against Adam, side by side.

The harness's jitted train step (dropout key routed to ``value_fn``, the loss in float32) on
``gpt2_small`` (12 layers, 12 heads, width 768, GPT-2's vocabulary of 50,257 tokens,
124,439,808 parameters) with a context of 256 and a batch of 8 sequences of random tokens,
on one device. The optimizers train from the same initialisation on the same batches; their
steps are interleaved (one step of each per round, after ``--warmup`` rounds that include
the compilation), so that a change of the machine's load falls on both. Reported per
optimizer: the median time per update, the mean ``value_fn`` calls per update, and the
median over rounds of the per-round ratio to the
first optimizer (Adam). The first call's time and evaluations are reported apart: they hold
the compilation and, for a line search, its first search from ``init_step_size`` (91
evaluations for Adam + SaLSa here). The JSON is rewritten after every timed round. A
benchmark, not a test: the figures depend on the machine::

  python -m benchmarks.transformer_step                      # adam against adam_salsa
  python -m benchmarks.transformer_step --optimizers adam,adam_salsa,adam_sls --rounds 5
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from models import get_model
from train.optimizers import OPTIMIZERS, OptimizerConfig
from train.train import compiled_steps, create_state, global_batch, init_variables, replicate

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
VOCAB = 50257


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark; prints a table and writes the JSON; returns its payload."""
  parser = argparse.ArgumentParser(prog="python -m benchmarks.transformer_step",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--optimizers", default="adam,adam_salsa",
                      help="comma-separated harness optimizers; the first is the reference")
  parser.add_argument("--model", default="gpt2_small", help="a models.TOKEN_MODEL_NAMES GPT")
  parser.add_argument("--vocab", type=int, default=VOCAB, help="vocabulary size")
  parser.add_argument("--layers", type=int, help="override the model's number of layers")
  parser.add_argument("--width", type=int, help="override the model's width (4 heads then)")
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--context", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=4, help="timed rounds after the warm-up")
  parser.add_argument("--warmup", type=int, default=1, help="untimed rounds (compilation)")
  parser.add_argument("--dropout", type=float, default=0.1)
  parser.add_argument("--json", default=os.path.join(RESULTS, "transformer_step_cpu.json"))
  args = parser.parse_args(argv)
  names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
  unknown = [n for n in names if n not in OPTIMIZERS]
  if unknown or len(names) < 2:
    parser.error(f"--optimizers: two or more of {', '.join(sorted(OPTIMIZERS))}; got {names}")
  if args.rounds < 1 or args.warmup < 1:
    parser.error("--rounds and --warmup must be >= 1")

  sizes = {} if args.layers is None else {"num_layers": args.layers}
  if args.width is not None:
    sizes.update(width=args.width, num_heads=4)
  model = get_model(args.model, num_classes=args.vocab, context=args.context,
                    dropout_rate=args.dropout, **sizes)
  rng = np.random.default_rng(0)
  batches = [tuple(rng.integers(0, args.vocab, size=(args.batch_size, args.context), dtype=np.int32)
                   for _ in range(2)) for _ in range(args.warmup + args.rounds)]
  variables = init_variables(model, jax.random.key(0), batches[0][0][:1])
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  step, _ = compiled_steps(mesh)
  states = {}
  for name in names:
    state = create_state(model, variables, OptimizerConfig(name, learning_rate=1e-4), seed=0,
                         steps_per_epoch=100, total_steps=1000, dataset_size=100 * args.batch_size,
                         batch_size=args.batch_size)
    states[name] = replicate(state, mesh)
  times: dict[str, list[float]] = {n: [] for n in names}
  evals: dict[str, list[float]] = {n: [] for n in names}
  first: dict[str, dict[str, float]] = {}
  print(f"{args.model} ({num_params:,} parameters), batch {args.batch_size} x {args.context} "
        f"tokens, {jax.devices()[0].device_kind}; {args.warmup} warm-up + {args.rounds} rounds",
        flush=True)
  header = {
      "device": f"{jax.devices()[0].device_kind} ({platform.machine()}, {os.cpu_count()} cores)",
      "model": args.model, "sizes": sizes, "vocab": args.vocab, "num_params": num_params,
      "batch_size": args.batch_size, "context": args.context, "dropout": args.dropout,
      "reference": names[0], "warmup_rounds": args.warmup, "versions": {"jax": jax.__version__},
  }
  payload: dict[str, Any] = {}
  for i, (x, y) in enumerate(batches):
    for name in names:
      gx, gy = global_batch(mesh, x, y)
      tic = time.perf_counter()
      states[name], metrics = step(states[name], gx, gy)
      loss = float(metrics["loss"])  # waits for the step
      seconds = time.perf_counter() - tic
      num_evals = float(metrics.get("num_evals", 0))
      if i == 0:
        first[name] = {"seconds": seconds, "evals": num_evals}
      if i >= args.warmup:
        times[name].append(seconds)
        evals[name].append(num_evals)
      print(f"  round {i} {name:<12} {seconds:7.2f} s  loss {loss:.3f}"
            f"{'  evals ' + str(int(num_evals)) if 'num_evals' in metrics else ''}", flush=True)
    if i >= args.warmup:  # written after every timed round: a run cut short keeps its rounds
      payload = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                 **header, "rounds": i + 1 - args.warmup,
                 "rows": _rows(names, times, evals, first)}
      os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
      with open(args.json, "w") as f:
        json.dump(payload, f, indent=1)
  print(f"\n| optimizer | s/update (median) | x {names[0]} (median of rounds) | evals/update "
        "| first call: s (evals) |\n|---|---|---|---|---|")
  for row in payload["rows"]:
    print(f"| {row['optimizer']} | {row['median_s']:.2f} | {row['ratio_to_reference']:.3f} "
          f"({row['ratio_min_max'][0]:.2f}-{row['ratio_min_max'][1]:.2f}) | "
          f"{row['evals_per_step']:.2f} | {row['first_call_s']:.1f} "
          f"({row['first_call_evals']:.0f}) |")
  print(f"wrote {args.json}")
  return payload


def _rows(names: list[str], times: dict[str, list[float]], evals: dict[str, list[float]],
          first: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
  """Per optimizer: the median time, the paired ratios to ``names[0]``, the evaluations."""
  rows = []
  for name in names:
    ratios = np.asarray(times[name]) / np.asarray(times[names[0]])
    rows.append({
        "optimizer": name,
        "median_s": float(np.median(times[name])),
        "first_call_s": first[name]["seconds"],
        "first_call_evals": first[name]["evals"],
        "evals_per_step": float(np.mean(evals[name])),
        "ratio_to_reference": float(np.median(ratios)),
        "ratio_min_max": [float(ratios.min()), float(ratios.max())],
        "seconds": times[name],
    })
  return rows


if __name__ == "__main__":
  main()
