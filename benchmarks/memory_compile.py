"""Peak memory and compile time of one jitted train step of every line search.

Each row is one optimizer of the harness (``train/optimizers.py``), built as
``benchmarks/quality.py`` builds it (``make_optimizer(OptimizerConfig(name))``,
the factory's defaults, the run's shape from ``STEPS_PER_EPOCH``,
``TOTAL_STEPS`` and ``DATASET_SIZE``): every line search of ``LINE_SEARCHES``,
the baselines ``sgd`` and ``adam`` (``optax.sgd(0.1)`` and ``optax.adam(1e-3)``,
in ``optax.inject_hyperparams`` as the harness builds them) and
``optax_backtracking`` (``optax.chain(optax.sgd(1.0),
optax.scale_by_backtracking_linesearch(max_backtracking_steps=15))``, optax's own
line search, called with ``value=``, ``grad=`` and ``value_fn=``). The model is an
MLP ``784 -> width -> width -> 10`` (``models.get_model("mlp", features=(width,
width))``, ReLU) on batches of 128 MNIST-shaped inputs, at the widths
``--widths`` (default 1000, 4000, 16000: 1.8M, 19.1M and 268.8M parameters).

The step is the train step of a real loop: ``jax.value_and_grad`` of the mean
softmax cross entropy, ``tx.update(grads, state, params, value=loss, grad=grads,
value_fn=...)`` (plus ``metric_fn`` and ``metric_value`` for ``a_sls`` and
``sa_sls``, ``per_example_loss_fn`` for ``pls``, as ``train/train.py``'s step
passes them) and ``optax.apply_updates``, jitted with the parameters and the
optimizer state donated (``donate_argnums=(0, 1)``). Nothing runs: every
argument is a ``jax.ShapeDtypeStruct`` and each step is only lowered and
compiled, so a width of 16000 (1.1 GB of parameters) costs no memory.

Memory. From XLA's ``compiled.memory_analysis()`` (jax 0.10: ``argument``,
``output``, ``alias`` and ``temp_size_in_bytes``):

  peak = argument + output - alias + temp,

the bytes the call holds: its arguments, its outputs that do not reuse a
donated argument (``alias``: the outputs written in place of a donated input),
and XLA's temporary buffer (on XLA:CPU one block, as large as the most
temporaries live at once in XLA's buffer assignment). XLA's own
``peak_memory_in_bytes`` is recorded too; on XLA:CPU it leaves the temporaries
out (it is about ``argument + output - alias``). Reported per row: the peak in
bytes and in parameter-sized buffers (``peak / parameter bytes``) at each width,
and its growth with the model, the least-squares slope of peak against
parameter bytes over the widths: how many parameter-sized buffers the step holds
per parameter (activations grow with the width only, the parameters with its
square, so the slope counts the parameter-sized buffers). ``EXPECTED`` gives,
per method, the buffers its algorithm needs at its peak, read from its code in
``optax_ls/`` (see ``EXPECTED``'s doc); ``extra`` is the rounded slope minus that
count. Also measured (``--undonated``, ``--harness``, both on by default): the
same step without donation, and the harness's own ``train.train.train_step``
(``jax.jit(train_step, donate_argnums=0)``, its metrics included).

Compile time. The wall time of ``jax.jit(step).lower(...).compile()`` (tracing,
lowering and XLA's compilation), ``--repeats`` rounds (default 3): in each round,
for each row in a shuffled order, ``jax.clear_caches()``, then the step at the
first width (a fresh compile: its median over the rounds is ``first s``) and
right after, in the same process and with the caches of the first left warm, the
step at the second width (``second s``): what a new model size costs once the
method's code has been traced once. ``optax_backtracking`` is always measured:
each row's times are also given as ratios to its times of the same round (the
median over the rounds of the paired ratios, so slow drifts of a shared machine
cancel). A persistent compilation cache would turn compiles into reads: the run
turns it off and says so.

Run from the repository root::

  python -m benchmarks.memory_compile --json benchmarks/results/memory_compile.json
  python -m benchmarks.memory_compile --methods sgd sls pal --widths 1000 4000 --repeats 1
  python -m benchmarks.memory_compile --smoke --json /tmp/memory_compile.json
  python -m benchmarks.memory_compile --tables benchmarks/results/memory_compile.json

The JSON gets a Markdown twin (``.md``, the tables) next to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

import optax_ls
from benchmarks.quality import LINE_SEARCHES
from models import get_model
from train.optimizers import Built, OptimizerConfig, make_optimizer
from train.train import create_state, cross_entropy, train_step

REFERENCE = "optax_backtracking"
"""The row every compile time is compared with: optax's own backtracking line search."""
BASELINES = ("sgd", "adam", REFERENCE)
METHODS = (*BASELINES, *LINE_SEARCHES)
"""The default rows: the baselines, then every line search of the harness."""
WIDTHS = (1000, 4000, 16000)
SMOKE = dict(widths=[8, 32], batch_size=8, repeats=1, methods=["sgd", "sls"],
             undonated=False, harness=False)
"""What ``--smoke`` sets: tiny widths, one round, two rows (and the reference)."""
STEPS_PER_EPOCH = 100
TOTAL_STEPS = 10_000
DATASET_SIZE = 12_800
"""The run's shape the harness gives the optimizers (SLS's reset, TLR's window of
``round(0.33 * 100) = 33`` calls, LABPAL's noise scaling; the schedules' length)."""
INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10

BUSY_NOTE = ("The machine was busy with another job (a long training run on the same 2-core "
             "CPU) during the measurement: the compile times carry that noise (the ratios to "
             "optax are paired within a round to cancel slow drifts); the memory numbers are "
             "exact (XLA's buffer assignment, no timing).")

_P, _G, _T = "params", "gradient", "trial point"
EXPECTED: dict[str, tuple[str, ...]] = {
    "sgd": (_P, _G),
    "adam": (_P, _G, "first moment", "second moment"),
    REFERENCE: (_P, _G, _T),
    "sls": (_P, _G, _T),
    "adam_sls": (_P, _G, "first moment", "second moment", _T),
    "salsa": (_P, _G, _T),
    "adam_salsa": (_P, _G, "first moment", "second moment", _T),
    "adam_salsa_cooldown": (_P, _G, "first moment", "second moment", _T),
    "l_sls": (_P, _G, _T),
    "a_sls": (_P, _G, _T),
    "sa_sls": (_P, _G, _T),
    "pal": (_P, _G, "direction", _T),
    "labpal_sgd": (_P, _G, "direction (the group's sum, then the line)", _T),
    "labpal_nsgd": (_P, _G, "direction (the group's sum, then the line)", _T),
    "gols_i": (_P, _G, "line direction"),
    "pls": (_P, _G, "search direction"),
    "tlr": (_P, _G, "window sum", "previous window sum"),
    "tlr_per_layer": (_P, _G, "window sum", "previous window sum"),
    "tlr_naive": (_P, _G, "trial point, then its gradient"),
    "sgd_hd": (_P, _G, "previous direction"),
}
"""The parameter-sized buffers each method's algorithm needs at the peak of one step.

Read from the methods' code in ``optax_ls/`` (and optax's), counting: the parameters
(updated in place: donated); the gradient of the batch (alive until the update is
applied); every parameter-sized buffer of the state (moments, stored directions,
window sums: an old and a new value share one buffer, the new one being written
element by element in place of the old); one trial point for a method that evaluates
the loss away from ``params`` (its trials, and a metric search's finite-difference
point, one after another in the same buffer). Quantities computed element by element
from those buffers (the direction ``-g``, Adam's ``m / (sqrt(v) + eps)``, PAL's
``-g + beta d``, the update itself) are not counted: a trial point or an update can
be formed from them in one pass. So SGD needs 2 (params, gradient) and Adam 4. Per
method:

* ``optax_backtracking``, ``sls``, ``salsa``, ``l_sls``, ``a_sls``, ``sa_sls``: params,
  gradient, the trial point of the search (``backtracking_search`` evaluates
  ``value_fn(params + eta d)`` in a ``while_loop``; optax's stores no gradient with
  its default ``store_grad=False``);
* ``adam_sls``, ``adam_salsa``, ``adam_salsa_cooldown``: Adam's four plus the trial
  point (the search and applied directions are formed from ``g``, ``m``, ``v``);
* ``pal``: params, gradient, the direction buffer (``d_t = -g_t + 0.4 d_{t-1}``) and the
  point ``params + mu d / ||d||`` of its second measurement;
* ``labpal_sgd``, ``labpal_nsgd``: params, gradient, the direction buffer (the sum of a
  group's gradients, or the line fixed for the measuring phase; no accumulator without
  momentum) and a measuring call's points along the line;
* ``gols_i``: params, gradient, the line direction; it evaluates nothing (it moves to
  its trial point and reads the gradient there on the next call);
* ``pls``: params, gradient, the stored search direction (the noise estimate's
  ``jvp`` takes the gradient itself as its tangent);
* ``tlr``, ``tlr_per_layer``: params, gradient, the running sum of the window and the
  previous window's sum (the harness's window is 33 calls);
* ``tlr_naive``: params, gradient, the trial point ``w - alpha g`` and then the gradient
  there (``value_and_grad`` at the trial point), in the same buffer: the backward pass
  reads a layer's trial weights for the last time (``delta W^T``) before it forms that
  layer's weight gradient, which can then take their place;
* ``sgd_hd``: params, gradient, the previous direction.
"""


NOTES: dict[str, str] = {
    REFERENCE: "the direction `-1.0 * g` of `optax.sgd(1.0)` is written out before optax's "
               "`while_loop`, whose body reads it for every trial point",
    "adam_sls": "one, not traced since 2026-12-08 (probably, as in `adam_salsa`, the search "
                "direction hoisted out of the `while_loop`); until then three: "
                "`1 / (sqrt(nu_hat) + eps)`, the search direction and a copy of the first "
                "moment kept for a `where(healthy, new, old)` after the search (the moments "
                "are now committed before it)",
    "adam_salsa": "the search direction `-g / (sqrt(nu_hat) + eps)` (`_salsa.py` 453) is "
                  "written out in the searching branch before the `while_loop` (hoisted out "
                  "of the trial that forms it)",
    "adam_salsa_cooldown": "the applied direction `-mu_hat / (sqrt(nu_hat) + eps)` "
                           "(`_salsa.py` 448), also its search direction, is written out "
                           "before the branch, read by the trials and the update",
    "labpal_sgd": "a measuring call forms both measuring points `params + s1 d / ||d||` and "
                  "`params + s2 d / ||d||` before evaluating them (`_labpal.py` 452-454, "
                  "`jnp.stack([l0, at(s1), at(s2)])`): two trial points live at once",
    "pls": "the `jvp`'s tangent `-g` (`_pls.py` 744, `(sign * u).astype(p.dtype)`) is "
           "written out",
    "tlr": "XLA copies the donated `previous` buffer (the previous window's sum) before the "
           "conditionals that read it (`_tlr.py` 311-320: the inner products under "
           "`lax.cond`, `_phased.store_or_keep`)",
    "tlr_naive": "not extra, a fraction: the boolean mask `isfinite(d)` of `_all_finite` "
                 "(`_tlr.py` 420) is written out, 1 byte per parameter (0.24 of a float32 "
                 "buffer at w=16000)",
}
"""Where the buffers beyond ``EXPECTED`` come from, read in XLA's buffer assignment
(``XLA_FLAGS=--xla_dump_to=DIR --xla_dump_hlo_as_text``: the temporaries of
``*buffer-assignment.txt``, each traced to its HLO instruction's source line) of the
donated step at w=1000 (w=16000 for ``tlr_naive``), XLA:CPU of jax 0.10.2. Static text:
it describes the run of ``results/memory_compile.json``, not a later one."""
NOTES["labpal_nsgd"] = NOTES["labpal_sgd"]
NOTES["tlr_per_layer"] = NOTES["tlr"]


@dataclasses.dataclass(frozen=True)
class Problem:
  """The abstract arguments of the steps at one width.

  Attributes:
    width: the hidden width.
    model: the flax module.
    params: the parameters as ``jax.ShapeDtypeStruct`` leaves.
    param_bytes: the bytes of the parameters.
    n_params: the number of parameters.
    x: the batch of inputs (``ShapeDtypeStruct``).
    y: the labels (``ShapeDtypeStruct``).
  """

  width: int
  model: Any
  params: Any
  param_bytes: int
  n_params: int
  x: jax.ShapeDtypeStruct
  y: jax.ShapeDtypeStruct


def make_problem(width: int, batch_size: int) -> Problem:
  """The MLP ``784 -> width -> width -> 10`` and a batch, all abstract (no memory)."""
  model = get_model("mlp", features=(width, width), num_classes=NUM_CLASSES)
  x = jax.ShapeDtypeStruct((batch_size, *INPUT_SHAPE), jnp.float32)
  y = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
  params = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *INPUT_SHAPE)), train=False)
  )["params"]
  leaves = jax.tree.leaves(params)
  return Problem(width, model, params, tree_bytes(params), sum(leaf.size for leaf in leaves),
                 x, y)


def tree_bytes(tree: Any) -> int:
  """The bytes of the array leaves of ``tree`` (arrays or ``ShapeDtypeStruct``)."""
  return sum(int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
             for leaf in jax.tree.leaves(tree))


def build(name: str, batch_size: int) -> Built:
  """The harness's optimizer ``name`` at its defaults, as ``benchmarks/quality.py`` builds it."""
  return make_optimizer(OptimizerConfig(name), steps_per_epoch=STEPS_PER_EPOCH,
                        total_steps=TOTAL_STEPS, dataset_size=DATASET_SIZE,
                        batch_size=batch_size)


def make_step(model: Any, built: Built) -> Callable[..., Any]:
  """A fresh train step ``(params, opt_state, x, y) -> (params, opt_state, loss)``.

  ``value_and_grad`` of the mean cross entropy, ``update`` with ``value``, ``grad``,
  ``value_fn`` and what ``built.needs`` asks for (as ``train/train.py``'s step passes
  it), ``optax.apply_updates``. A new closure at every call, so no jit cache keyed on
  the function is shared between compilations.
  """
  metric = (getattr(optax_ls, built.needs.metric)
            if built.needs.metric in ("accuracy", "smooth_accuracy") else None)

  def logits_of(params: Any, x: jax.Array) -> jax.Array:
    return model.apply({"params": params}, x, train=True)

  def loss_fn(params: Any, x: jax.Array, y: jax.Array) -> tuple[jax.Array, Any]:
    logits = logits_of(params, x)
    aux = metric(logits, y) if metric is not None else None
    return jnp.mean(cross_entropy(logits, y)), aux

  def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> tuple[Any, Any, Any]:
    (loss, metric_value), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
    extra: dict[str, Any] = {}
    if metric is not None:
      extra["metric_fn"] = lambda p: metric(logits_of(p, x), y)
      extra["metric_value"] = metric_value
    if built.needs.per_example:
      extra["per_example_loss_fn"] = lambda p: cross_entropy(logits_of(p, x), y)
    updates, opt_state = built.tx.update(
        grads, opt_state, params, value=loss, grad=grads,
        value_fn=lambda p: loss_fn(p, x, y)[0], **extra)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def memory_of(compiled: Any) -> dict[str, int]:
  """The fields of ``compiled.memory_analysis()`` this benchmark reads, and ``peak``."""
  stats = compiled.memory_analysis()
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
            "temp_size_in_bytes", "generated_code_size_in_bytes", "peak_memory_in_bytes")
  out = {field.removesuffix("_size_in_bytes").removesuffix("_in_bytes"):
         int(getattr(stats, field, 0) or 0) for field in fields}
  out["peak"] = peak_bytes(out)
  return out


def peak_bytes(memory: dict[str, int]) -> int:
  """``argument + output - alias + temp``: the bytes one call of the step holds."""
  return memory["argument"] + memory["output"] - memory["alias"] + memory["temp"]


def slope(param_bytes: Sequence[float], peaks: Sequence[float]) -> float | None:
  """The least-squares slope of ``peaks`` against ``param_bytes`` (None for fewer than 2)."""
  if len(param_bytes) < 2 or len(set(param_bytes)) < 2:
    return None
  return float(np.polyfit(np.asarray(param_bytes, np.float64), np.asarray(peaks, np.float64),
                          1)[0])


def paired_ratio(times: Sequence[float], reference: Sequence[float]) -> float | None:
  """The median of the per-round ratios ``times[r] / reference[r]``."""
  ratios = [t / r for t, r in zip(times, reference, strict=True) if r > 0]
  return float(statistics.median(ratios)) if ratios else None


def extra_buffers(measured_slope: float | None, expected: int | None) -> int | None:
  """The rounded slope minus the expected count (None when either is unknown)."""
  if measured_slope is None or expected is None:
    return None
  return int(round(measured_slope)) - expected


def compile_timed(step: Callable[..., Any], args: Sequence[Any],
                  donate: tuple[int, ...]) -> tuple[Any, float, float]:
  """``(compiled, lower_s, compile_s)`` of ``jax.jit(step, donate_argnums=donate)``."""
  start = time.perf_counter()
  lowered = jax.jit(step, donate_argnums=donate).lower(*args)
  mid = time.perf_counter()
  compiled = lowered.compile()
  return compiled, mid - start, time.perf_counter() - mid


class Row:
  """One method: its optimizer, its abstract states per width, what was measured."""

  def __init__(self, name: str, problems: Sequence[Problem], batch_size: int):
    self.name = name
    self.built = build(name, batch_size)
    self.states = {p.width: jax.eval_shape(self.built.tx.init, p.params) for p in problems}
    self.state_buffers = {p.width: tree_bytes(self.states[p.width]) / p.param_bytes
                          for p in problems}
    self.memory: dict[str, dict[int, dict[str, int]]] = {
        "donated": {}, "undonated": {}, "harness": {}}
    self.first: list[float] = []
    self.second: list[float] = []
    self.first_lower: list[float] = []
    self.second_lower: list[float] = []

  def compile(self, problem: Problem,
              donate: tuple[int, ...] = (0, 1)) -> tuple[Any, float, float]:
    """``(compiled, lower_s, compile_s)`` of the step at ``problem``'s width."""
    step = make_step(problem.model, self.built)
    args = (problem.params, self.states[problem.width], problem.x, problem.y)
    return compile_timed(step, args, donate)

  def compile_harness(self, problem: Problem, batch_size: int) -> Any:
    """The harness's ``train_step``, its state donated, at ``problem``'s width."""
    state = jax.eval_shape(
        lambda v: create_state(problem.model, v, OptimizerConfig(self.name), seed=0,
                               steps_per_epoch=STEPS_PER_EPOCH, total_steps=TOTAL_STEPS,
                               dataset_size=DATASET_SIZE, batch_size=batch_size),
        {"params": problem.params, "batch_stats": {}})
    return jax.jit(train_step, donate_argnums=0).lower(state, problem.x, problem.y).compile()


def _result(row: Row, problems: Sequence[Problem]) -> dict[str, Any]:
  """The JSON record of a measured row."""
  expected = EXPECTED.get(row.name)
  by_kind = {}
  for kind, memory in row.memory.items():
    if not memory:
      continue
    points = [(p.param_bytes, memory[p.width]["peak"]) for p in problems if p.width in memory]
    by_kind[kind] = {
        "widths": {str(p.width): {**memory[p.width],
                                  "peak_buffers": memory[p.width]["peak"] / p.param_bytes}
                   for p in problems if p.width in memory},
        "slope_buffers": slope([b for b, _ in points], [m for _, m in points]),
    }
  measured = by_kind.get("donated", {}).get("slope_buffers")
  return {
      "method": row.name,
      "expected_buffers": None if expected is None else len(expected),
      "expected_what": None if expected is None else list(expected),
      "state_buffers": row.state_buffers[problems[-1].width],
      "measured_buffers": None if measured is None else int(round(measured)),
      "extra_buffers": extra_buffers(measured, None if expected is None else len(expected)),
      "memory": by_kind,
      "compile": {
          "first_s": row.first,
          "first_lower_s": row.first_lower,
          "first_median_s": statistics.median(row.first) if row.first else None,
          "second_s": row.second,
          "second_lower_s": row.second_lower,
          "second_median_s": statistics.median(row.second) if row.second else None,
          "second_over_first": paired_ratio(row.second, row.first),
      },
  }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
  """Compiles every row (``args.repeats`` timed rounds, then the memory-only compiles)."""
  problems = [make_problem(w, args.batch_size) for w in args.widths]
  names = list(dict.fromkeys([*args.methods, REFERENCE]))
  rows = {name: Row(name, problems, args.batch_size) for name in names}
  first, second = problems[0], problems[1]
  for r in range(args.repeats):
    order = list(names)
    random.Random(args.seed + r).shuffle(order)
    for name in order:
      row = rows[name]
      jax.clear_caches()
      compiled, lower_s, compile_s = row.compile(first)
      row.first.append(lower_s + compile_s)
      row.first_lower.append(lower_s)
      if r == 0:
        row.memory["donated"][first.width] = memory_of(compiled)
      compiled, lower_s, compile_s = row.compile(second)
      row.second.append(lower_s + compile_s)
      row.second_lower.append(lower_s)
      if r == 0:
        row.memory["donated"][second.width] = memory_of(compiled)
      print(f"round {r + 1}/{args.repeats} {name:20s} width {first.width}: "
            f"{row.first[-1]:6.2f} s, then width {second.width}: {row.second[-1]:6.2f} s",
            flush=True)
  for name in names:
    row = rows[name]
    for problem in problems[2:]:
      row.memory["donated"][problem.width] = memory_of(row.compile(problem)[0])
    if args.undonated:
      for problem in problems:
        row.memory["undonated"][problem.width] = memory_of(row.compile(problem, ())[0])
    if args.harness:
      for problem in problems:
        row.memory["harness"][problem.width] = memory_of(
            row.compile_harness(problem, args.batch_size))
    jax.clear_caches()
    print(f"memory {name}: done", flush=True)
  results = [_result(rows[name], problems) for name in names]
  reference = rows[REFERENCE]
  for result in results:
    row = rows[result["method"]]
    result["compile"]["first_vs_optax"] = paired_ratio(row.first, reference.first)
    result["compile"]["second_vs_optax"] = paired_ratio(row.second, reference.second)
  return results


def _mb(n: float) -> str:
  return f"{n / 2**20:,.1f}"


def _num(value: float | None, fmt: str = ".2f") -> str:
  return "-" if value is None else format(value, fmt)


def _grouped(pairs: Any) -> str:
  """``"`a`, `b`<text>; `c`<text>"``: the methods sharing a text, in their first order."""
  groups: dict[str, list[str]] = {}
  for method, text in pairs:
    groups.setdefault(text, []).append(f"`{method}`")
  return "; ".join(", ".join(methods) + (text if text.startswith(":") else " " + text)
                   for text, methods in groups.items())


def markdown(payload: dict[str, Any]) -> str:
  """The two tables (memory, compile time) with the run's header."""
  widths = payload["settings"]["widths"]
  problems = {str(p["width"]): p for p in payload["problems"]}
  lines = [
      f"Run {payload['date']} on {payload['device']}; jax {payload['versions']['jax']}, "
      f"optax {payload['versions']['optax']}. Command: `{payload['command']}`.",
      "",
      f"**Note.** {payload['note']}",
      "",
      "MLP 784-w-w-10, batch " + str(payload["settings"]["batch_size"]) + "; parameters: "
      + ", ".join(f"w={w}: {problems[str(w)]['n_params']:,} ({_mb(problems[str(w)]['param_bytes'])}"
                  " MiB)" for w in widths) + ".",
      "Peak = argument + output - alias + temp bytes of `compiled.memory_analysis()`; "
      "`xP` = in parameter-sized buffers (peak / parameter bytes). `slope`: least-squares "
      "slope of the peak against the parameter bytes over the widths (buffers per "
      "parameter). `need`: the buffers the algorithm needs (`EXPECTED`); `extra` = "
      "round(slope) - need. Donated: params and optimizer state (`donate_argnums=(0, 1)`).",
      "",
  ]
  head = ["method", "need", "state", "slope", "extra"]
  head += [f"peak w={w} MiB (xP)" for w in widths]
  head += ["slope, not donated", "slope, harness step"]
  lines.append("| " + " | ".join(head) + " |")
  lines.append("|" + "---|" * len(head))
  for r in payload["results"]:
    donated = r["memory"].get("donated", {})
    cells = [f"`{r['method']}`", _num(r["expected_buffers"], "d"), _num(r["state_buffers"]),
             _num(donated.get("slope_buffers")),
             "-" if r["extra_buffers"] is None else f"{r['extra_buffers']:+d}"]
    for w in widths:
      m = donated.get("widths", {}).get(str(w))
      cells.append("-" if m is None else f"{_mb(m['peak'])} ({m['peak_buffers']:.2f})")
    for kind in ("undonated", "harness"):
      cells.append(_num(r["memory"].get(kind, {}).get("slope_buffers")))
    lines.append("| " + " | ".join(cells) + " |")
  notes = _grouped((r["method"], f"({r['extra_buffers']:+d}): {NOTES[r['method']]}")
                   for r in payload["results"]
                   if r["method"] in NOTES and r["extra_buffers"] is not None
                   and (r["extra_buffers"] or r["method"] == "tlr_naive"))
  if notes:
    lines += ["", "Where the extra buffers come from (XLA's buffer assignment, see `NOTES`): "
              + notes + "."]
  lines += [
      "",
      "What each method needs (`need`): " + _grouped(
          (r["method"], ": " + ", ".join(r["expected_what"]))
          for r in payload["results"] if r["expected_what"]) + ".",
      "",
      f"Compile time (`lower().compile()` wall time, {payload['settings']['repeats']} rounds, "
      f"shuffled order): `first` = at w={widths[0]} after `jax.clear_caches()` (median); "
      f"`second` = at w={widths[1]} right after, caches warm (median); `x optax` = median "
      f"of the per-round ratios to `{REFERENCE}` (optax's own line search).",
      "",
      "| method | first s | of which lowering s | first x optax | second s | second x optax "
      "| second / first |",
      "|---|---|---|---|---|---|---|",
  ]
  for r in payload["results"]:
    c = r["compile"]
    lower = statistics.median(c["first_lower_s"]) if c["first_lower_s"] else None
    lines.append(
        f"| `{r['method']}` | {_num(c['first_median_s'])} | {_num(lower)} | "
        f"{_num(c['first_vs_optax'])} | {_num(c['second_median_s'])} | "
        f"{_num(c['second_vs_optax'])} | {_num(c['second_over_first'])} |")
  return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """The command line."""
  parser = argparse.ArgumentParser(
      prog="python -m benchmarks.memory_compile", description=__doc__.split("\n\n")[0])
  parser.add_argument("--methods", nargs="+", choices=list(METHODS), metavar="NAME",
                      default=list(METHODS),
                      help="optimizers of train/optimizers.py, of: " + ", ".join(METHODS)
                      + f" (default: all; {REFERENCE} is always measured)")
  parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS),
                      help="hidden widths, at least 2 (compile times at the first two)")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3, help="timed compile rounds")
  parser.add_argument("--undonated", action=argparse.BooleanOptionalAction, default=True,
                      help="also the memory of the step without donation")
  parser.add_argument("--harness", action=argparse.BooleanOptionalAction, default=True,
                      help="also the memory of the harness's train.train.train_step")
  parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled orders")
  parser.add_argument("--note", default=BUSY_NOTE, help="a note on the machine's load")
  parser.add_argument("--smoke", action="store_true",
                      help="a quick check: " + ", ".join(f"{k}={v}" for k, v in SMOKE.items()))
  parser.add_argument("--json", metavar="PATH",
                      help="write the results there (and the tables to PATH with .md)")
  parser.add_argument("--tables", metavar="JSON",
                      help="no compiling: rewrite the tables (.md) of these results")
  args = parser.parse_args(argv)
  if args.tables:
    return args
  if args.smoke:
    for key, value in SMOKE.items():
      setattr(args, key, value)
  if len(args.widths) < 2 or min(args.widths) < 1 or len(set(args.widths)) != len(args.widths):
    parser.error("--widths: at least two distinct positive widths")
  if args.repeats < 1 or args.batch_size < 1:
    parser.error("--repeats and --batch-size must be positive")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Measures, prints the tables, writes ``--json`` and its ``.md``; returns the payload."""
  args = parse_args(argv)
  if args.tables:
    with open(args.tables) as f:
      payload = json.load(f)
    _write_tables(payload, os.path.splitext(args.tables)[0] + ".md")
    return payload
  cache_dir = jax.config.jax_compilation_cache_dir
  persistent = bool(cache_dir) and jax.config.jax_enable_compilation_cache
  if persistent:  # a cache hit would time a file read, not a compilation
    jax.config.update("jax_enable_compilation_cache", False)
  device = jax.devices()[0]
  start = time.perf_counter()
  try:
    results = run(args)
  finally:
    if persistent:
      jax.config.update("jax_enable_compilation_cache", True)
  problems = [make_problem(w, args.batch_size) for w in args.widths]
  payload = {
      "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      "command": "python -m benchmarks.memory_compile "
                 + shlex.join(sys.argv[1:] if argv is None else list(argv)),
      "device": f"{jax.device_count()} x {device.device_kind} ({device.platform}, "
                f"{platform.machine()}, {os.cpu_count()} CPU cores)",
      "versions": {"python": platform.python_version(), "jax": jax.__version__,
                   "jaxlib": jaxlib.__version__,
                   "optax": optax.__version__, "optax_ls": optax_ls.__version__},
      "note": args.note,
      "persistent_cache_disabled": persistent,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "seconds": round(time.perf_counter() - start, 1),
      "settings": {k: v for k, v in vars(args).items() if k not in ("json", "note")},
      "problems": [{"width": p.width, "n_params": p.n_params, "param_bytes": p.param_bytes}
                   for p in problems],
      "peak_definition": "argument + output - alias + temp (bytes of memory_analysis())",
      "results": results,
  }
  if args.json:
    with open(args.json, "w") as f:
      json.dump(payload, f, indent=1)
    print(f"wrote {args.json}")
    _write_tables(payload, os.path.splitext(args.json)[0] + ".md")
  else:
    print("\n" + markdown(payload))
  return payload


def _write_tables(payload: dict[str, Any], md_path: str) -> None:
  """Prints the tables and writes them to ``md_path``."""
  text = markdown(payload)
  print("\n" + text)
  with open(md_path, "w") as f:
    f.write(text)
  print(f"wrote {md_path}")


if __name__ == "__main__":
  main(sys.argv[1:])
