"""Why Adam + SaLSa / Adam + SLS shrink their step on the character GPT: the lines they search.

Trains ``gpt_nano`` on the ``lm`` suite's data (seed 0, ``--steps`` updates) with an
Adam-direction line search of the harness (``adam_salsa`` by default) and, every
``--every`` updates, measures on that update's own objective (its batch and dropout key)
the loss along two directions from the current weights, over a log grid of step sizes
``eta``:

* the *search direction* ``d0 = -g / (sqrt(v_hat) + eps)`` (Adam with ``beta1 = 0``, the
  direction the Armijo condition is checked on, seed 001 Eq. 3 and 7), whose slope is
  ``-s = -sum g^2 / (sqrt(v_hat) + eps)``;
* the *applied direction* ``d1 = -m_hat / (sqrt(v_hat) + eps)`` (Adam's, ``beta1 = 0.9``),
  along which the accepted step is taken, with its slope ``<g, d1>``.

Logged per measured update: the accepted step size and trials; on each line the
minimiser ``eta*`` of the grid, the largest ``eta`` meeting the plain Armijo condition
``f(w) - f(w + eta d) >= c eta s`` (``c`` = 0.3 for SaLSa, 0.1 for SLS; the ratio
``(f(w) - f(w + eta d)) / (eta s)`` is the Armijo ratio), the loss change at the tuned
AdamW rate, and SaLSa's smoothed sides ``h`` and ``s``. JSON and a figure::

  python -m benchmarks.lm_diagnosis --steps 400 --every 40
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import quality as q
from benchmarks import quality_lm
from models import get_model
from train import data
from train import train as harness
from train.config import get_config
from train.optimizers import OptimizerConfig

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
GRID = np.geomspace(1e-6, 1e-1, 31)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the diagnosis; writes the JSON and the figure; returns the payload."""
  parser = argparse.ArgumentParser(prog="python -m benchmarks.lm_diagnosis",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--optimizer", default="adam_salsa", choices=["adam_salsa", "adam_sls"])
  parser.add_argument("--steps", type=int, default=quality_lm.LM_STEPS)
  parser.add_argument("--every", type=int, default=40)
  parser.add_argument("--reference-lr", type=float, default=3e-3,
                      help="the tuned AdamW peak rate the lines are compared at")
  parser.add_argument("--json", default=os.path.join(RESULTS, "lm_diagnosis.json"))
  args = parser.parse_args(argv)
  c = 0.3 if args.optimizer == "adam_salsa" else 0.1

  config = dataclasses.replace(get_config(quality_lm.CONFIG), seed=0, epochs=1, log_every=1)
  train_source, _, spec = quality_lm.load_splits(config, args.steps)
  model = get_model(config.model, num_classes=spec.num_classes, **config.model_kwargs)
  batches = list(data.batches(train_source, spec, batch_size=config.batch_size, seed=0, epoch=0,
                              augment=True))
  variables = harness.init_variables(model, jax.random.key(0), batches[0][0][:1])
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  state = harness.create_state(model, variables, OptimizerConfig(args.optimizer), seed=0,
                               steps_per_epoch=len(batches), total_steps=len(batches),
                               dataset_size=len(train_source), batch_size=config.batch_size)
  state = harness.replicate(state, mesh)
  step_fn, _ = harness.compiled_steps(mesh)

  @jax.jit
  def objective(params, x, y, key):
    logits = model.apply({"params": params}, x, train=True, rngs={"dropout": key})
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

  @jax.jit
  def line(params, direction, x, y, key):
    def at(eta):
      return objective(jax.tree.map(lambda p, d: p + eta * d, params, direction), x, y, key)
    return jax.lax.map(at, jnp.asarray(GRID, jnp.float32))

  b1, b2, eps = 0.9, 0.999, 1e-8
  rows, trace = [], []
  for t, (x, y) in enumerate(batches[: args.steps]):
    params = jax.tree.map(np.asarray, jax.device_get(state.params))
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), t)
    state, metrics = step_fn(state, *harness.global_batch(mesh, x, y))
    opt = state.opt_state
    trace.append({"step": t, "learning_rate": float(metrics["learning_rate"]),
                  "num_evals": int(metrics["num_evals"]),
                  "decrease_avg": float(optax.tree.get(opt, "decrease_avg", 0.0)),
                  "norm_avg": float(optax.tree.get(opt, "norm_avg", 0.0))})
    if t % args.every and t != args.steps - 1:
      continue
    loss, g = jax.value_and_grad(objective)(params, x, y, key)
    count = int(optax.tree.get(opt, "count"))
    mu, nu = optax.tree.get(opt, "mu"), optax.tree.get(opt, "nu")
    v_scale, m_scale = 1 / (1 - b2**count), 1 / (1 - b1**count)
    denom = jax.tree.map(lambda v, k=v_scale: jnp.sqrt(v * k) + eps, nu)
    d0 = jax.tree.map(lambda gi, dn: -gi / dn, g, denom)
    d1 = jax.tree.map(lambda m, dn, k=m_scale: -(m * k) / dn, mu, denom)
    s = float(-optax.tree.vdot(g, d0))
    slope1 = float(optax.tree.vdot(g, d1))
    row = {"step": t, "loss": float(loss), "accepted": trace[-1]["learning_rate"],
           "num_evals": trace[-1]["num_evals"], "s": s, "slope_applied": slope1,
           "cosine_g_d1": float(optax.tree.vdot(g, d1) / (optax.tree.norm(g)
                                                          * optax.tree.norm(d1))),
           "h_avg": trace[-1]["decrease_avg"], "s_avg": trace[-1]["norm_avg"]}
    for name, direction, slope in (("search", d0, -s), ("applied", d1, slope1)):
      values = np.asarray(line(params, direction, x, y, key), np.float64)
      decrease = float(loss) - values
      ratio = decrease / (-slope * GRID) if slope < 0 else np.full_like(GRID, np.nan)
      armijo = GRID[ratio >= c]
      ref = int(np.argmin(np.abs(GRID - args.reference_lr)))
      row[name] = {
          "losses": values.tolist(), "eta_min": float(GRID[int(np.argmin(values))]),
          "largest_armijo": float(armijo.max()) if armijo.size else None,
          "ratio_at_reference": float(ratio[ref]),
          "decrease_at_reference": float(decrease[ref]),
          "decrease_at_min": float(decrease.max()),
      }
    rows.append(row)
    print(f"step {t:4d}  loss {row['loss']:.3f}  accepted {row['accepted']:.2e} "
          f"({row['num_evals']} evals)  search: eta* {row['search']['eta_min']:.1e} "
          f"armijo<= {q._num(row['search']['largest_armijo'], '.1e')} ratio@ref "
          f"{row['search']['ratio_at_reference']:+.3f}  applied: eta* "
          f"{row['applied']['eta_min']:.1e} dec@ref {row['applied']['decrease_at_reference']:+.3f}"
          f"  slope ratio <g,d1>/s {slope1 / -s:+.3f}  "
          f"h/s {row['h_avg'] / max(row['s_avg'], 1e-30):.2e}",
          flush=True)
  payload = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
             "optimizer": args.optimizer, "c": c, "steps": args.steps, "every": args.every,
             "reference_lr": args.reference_lr, "grid": GRID.tolist(), "rows": rows,
             "trace": trace}
  os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
  with open(args.json, "w") as f:
    json.dump(payload, f)
  png = os.path.splitext(args.json)[0] + ".png"
  _plot(payload, png)
  print(f"wrote {args.json}, {png}")
  return payload


def _plot(payload: dict[str, Any], path: str) -> None:
  fig = q._figure(13, 4.2)
  rate_ax, search_ax, applied_ax = fig.subplots(1, 3)
  trace = payload["trace"]
  rate_ax.plot([r["step"] for r in trace], [r["learning_rate"] for r in trace], lw=0.8,
               label=f"{payload['optimizer']} accepted step")
  for name, marker in (("search", "o"), ("applied", "s")):
    rows = payload["rows"]
    rate_ax.plot([r["step"] for r in rows], [r[name]["eta_min"] for r in rows],
                 marker, ms=4, label=f"batch-line minimiser, {name} direction")
  rate_ax.axhline(payload["reference_lr"], color="k", ls="--", lw=1, label="tuned AdamW peak")
  rate_ax.set(yscale="log", xlabel="update", ylabel="step size", title="step sizes")
  rate_ax.legend(fontsize=7)
  grid = np.asarray(payload["grid"])
  for ax, name in ((search_ax, "search"), (applied_ax, "applied")):
    for r in payload["rows"]:
      values = np.asarray(r[name]["losses"])
      ax.plot(grid, values - r["loss"], lw=0.9, label=f"update {r['step']}")
    ax.axvline(payload["reference_lr"], color="k", ls="--", lw=1)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set(xscale="log", xlabel="eta", ylabel="f(w + eta d) - f(w), own batch and dropout",
           title=f"{name} direction" + (" (beta1 = 0, Armijo checked here)" if name == "search"
                                          else " (beta1 = 0.9, step taken here)"))
    ax.set_ylim(-0.6, 0.6)
  search_ax.legend(fontsize=6, ncol=2)
  fig.savefig(path, dpi=100)


if __name__ == "__main__":
  main()
