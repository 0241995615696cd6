"""Cost of measuring one line: a Python loop over points against the landscape's LineMeter.

Rows, each measuring the per-example losses of ``--batches`` batches of 128 at
``--points`` step sizes along a random unit direction (train-mode BatchNorm):

* ``python_loop``: one jitted call of the batch loss per (step size, batch), the
  loop in Python (what the measurement would cost without the meter);
* ``meter_b1_s1``: ``LineMeter(batches_per_pass=1, steps_per_pass=1)``, the
  default: one jitted call, ``lax.map`` over step sizes and batches;
* ``meter_bN_s1``: all batches vectorised (``vmap``) in one pass;
* ``meter_b1_s4``: 4 step sizes vectorised in one pass (the weights differ per
  step size: XLA then runs batched convolutions).

Every row is compiled and warmed up first; then the rows run in a shuffled
order ``--repeats`` times and the median wall time per row is reported, with
images per second. Run from the repository root::

  python benchmarks/landscape_passes.py --model resnet20 --json /tmp/landscape_passes.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from models import get_model
from optax_ls.landscape import LineMeter, unit_direction
from train.train import cross_entropy

SHAPES = {"resnet20": (32, 32, 3), "mlp": (28, 28, 1)}
MODEL_KWARGS = {"mlp": {"features": (1000,)}}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", choices=sorted(SHAPES), default="resnet20")
  parser.add_argument("--batches", type=int, default=8)
  parser.add_argument("--points", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--json", help="write the results here")
  args = parser.parse_args(argv)

  model = get_model(args.model, num_classes=10, **MODEL_KWARGS.get(args.model, {}))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(args.batches, 128, *SHAPES[args.model])).astype(np.float32))
  y = jnp.asarray(rng.integers(0, 10, size=(args.batches, 128)))
  variables = model.init(jax.random.key(0), x[0], train=False)
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})

  def losses(point, batch):
    p, stats = point
    logits, _ = model.apply({"params": p, "batch_stats": stats}, batch[0], train=True,
                            mutable=["batch_stats"])
    return cross_entropy(logits, batch[1])

  direction, _ = unit_direction(jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape),
                                                                   p.dtype), params))
  origin = (params, batch_stats)
  line = (direction, jax.tree.map(jnp.zeros_like, batch_stats))
  steps = np.linspace(-0.5, 0.5, args.points)

  batch_loss = jax.jit(lambda point, batch: losses(point, batch))

  def python_loop():
    out = []
    for s in steps:
      point = jax.tree.map(lambda p, d, s=s: p + s * d, origin, line)
      out.append([batch_loss(point, (x[i], y[i])) for i in range(args.batches)])
    return jax.block_until_ready(out)

  rows = {"python_loop": python_loop}
  for b, s in ((1, 1), (args.batches, 1), (1, 4)):
    meter = LineMeter(losses, batches_per_pass=b, steps_per_pass=s)
    name = f"meter_b{'N' if b == args.batches else b}_s{s}"
    rows[name] = lambda meter=meter: meter.losses(origin, line, (x, y), steps)

  compile_s = {}
  for name, fn in rows.items():
    start = time.perf_counter()
    fn()
    compile_s[name] = time.perf_counter() - start
  times = {name: [] for name in rows}
  for _ in range(args.repeats):
    order = list(rows)
    random.shuffle(order)
    for name in order:
      start = time.perf_counter()
      rows[name]()
      times[name].append(time.perf_counter() - start)
  images = args.points * args.batches * 128
  results = {
      "date": datetime.date.today().isoformat(),
      "machine": f"{platform.processor() or platform.machine()}, {jax.devices()[0].platform}",
      "model": args.model, "batches": args.batches, "points": args.points,
      "rows": {name: {"median_s": statistics.median(t), "first_call_s": compile_s[name],
                      "images_per_s": images / statistics.median(t)}
               for name, t in times.items()},
  }
  print(f"{args.model}: {args.points} step sizes x {args.batches} batches of 128 "
        f"({images} forward images), median of {args.repeats}")
  for name, row in results["rows"].items():
    print(f"  {name:<12} {row['median_s']:7.2f} s  {row['images_per_s']:7.0f} images/s  "
          f"(first call {row['first_call_s']:.1f} s)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  return results


if __name__ == "__main__":
  main()
