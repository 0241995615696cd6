"""Which part of ``adam_salsa_cooldown`` does what: Adam + SaLSa one change at a time.

:func:`optax_ls.adam_salsa_cooldown` differs from the paper's :func:`optax_ls.adam_salsa` in
two options: the search direction (``search_direction="momentum"``: the smoothed Armijo
condition along the direction the update applies) and a schedule of the applied step
(``step_schedule``: a decay at the end of the run, and since 2026-12-08 a warm-up), and in
its constant ``c = 0.1`` (the paper's 0.3). This benchmark trains the variants below with the
quality protocol of ``benchmarks/quality.py`` (same suites, seeds, splits, batches and
initialisations; ``--suite lm`` is the character GPT of ``benchmarks/quality_lm.py``), no
baselines, so that each change is measured on its own:

============================  ======================  ==============================
label                         search direction        applied step
============================  ======================  ==============================
``adam_salsa``                momentum-free (paper)   as searched (paper)
``paper_cosine``              momentum-free (paper)   times a cosine from 1 to 0
``momentum``                  momentum                as searched
``momentum_cosine``           momentum                times a cosine from 1 to 0
``momentum_cooldown``         momentum                1, then linear to 0 over the
                                                      last 20% (``adam_salsa_cooldown``'s
                                                      first configuration, ``c = 0.3``)
``momentum_cooldown_c0.1``    momentum                as ``momentum_cooldown``, with the
                                                      Armijo constant ``c = 0.1`` (0.3)
``warmup_cooldown``           momentum                linear from 0 to 1 over the first
                                                      5%, then as ``momentum_cooldown``
``warmup_cooldown_c0.1``      momentum                as ``warmup_cooldown``, ``c = 0.1``
                                                      (``adam_salsa_cooldown``'s defaults)
============================  ======================  ==============================

The cosine spans the whole run (``optax.cosine_decay_schedule(1, total_steps)``); the
cool-down is :func:`optax_ls.cooldown_schedule` with its default 0.2. Results go to
``benchmarks/results/recipe_ablation_<suite>.{json,md}`` (the JSON is the quality protocol's,
so ``--resume`` and ``python -m benchmarks.quality --plot`` work on it)::

  python -m benchmarks.recipe_ablation --suite mnist                 # 15 runs, about 6 min here
  python -m benchmarks.recipe_ablation --suite lm --seeds 0          # 5 runs, about 15 min here
  python -m benchmarks.recipe_ablation --suite cifar --seeds 0 \
      --variants momentum_cosine,paper_cosine

Every other argument is passed on to ``python -m benchmarks.quality`` (e.g. ``--epochs``,
``--resume``, ``--json``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

import optax

import optax_ls
from train import optimizers as harness_optimizers

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _cosine(total_steps: int) -> optax.Schedule:
  return optax.cosine_decay_schedule(1.0, max(total_steps, 1))


def _variant(search_direction: str, schedule: Callable[[int], optax.Schedule] | None,
             **overrides: Any) -> Callable[[Any], Any]:
  """A harness builder: ``adam_salsa`` with this direction and applied-step schedule."""

  def build(ctx: Any) -> optax.GradientTransformationExtraArgs:
    step_schedule = None if schedule is None else schedule(ctx.total_steps)
    return optax_ls.adam_salsa(search_direction=search_direction, step_schedule=step_schedule,
                               **{**overrides, **ctx.config.kwargs})

  return build


def _cooldown(total_steps: int) -> optax.Schedule:
  return optax_ls.cooldown_schedule(max(total_steps, 1))


WARMUP_FRACTION = 0.05
"""The warm-up variants' share of the run: the tuned Adam(W) baselines' (linear from 0)."""


def _warmup_cooldown(total_steps: int) -> optax.Schedule:
  return optax_ls.cooldown_schedule(max(total_steps, 1), warmup_fraction=WARMUP_FRACTION)


VARIANTS: dict[str, Callable[[Any], Any]] = {
    "adam_salsa": _variant("momentum_free", None),
    "paper_cosine": _variant("momentum_free", _cosine),
    "momentum": _variant("momentum", None),
    "momentum_cosine": _variant("momentum", _cosine),
    "momentum_cooldown": _variant("momentum", _cooldown),
    "momentum_cooldown_c0.1": _variant("momentum", _cooldown, c=0.1),
    "warmup_cooldown": _variant("momentum", _warmup_cooldown),
    "warmup_cooldown_c0.1": _variant("momentum", _warmup_cooldown, c=0.1),
}
"""The variants, by label (``adam_salsa`` is the paper's configuration)."""


def register() -> None:
  """Adds the variants to the harness's optimizers (``adam_salsa`` is already there)."""
  for name, build in VARIANTS.items():
    if name not in harness_optimizers.OPTIMIZERS:
      harness_optimizers.OPTIMIZERS[name] = harness_optimizers._Entry(
          build, description=f"recipe ablation: {name}")


def quality_argv(argv: Sequence[str]) -> list[str]:
  """The ``benchmarks.quality`` command line of an ablation command line."""
  parser = argparse.ArgumentParser(prog="python -m benchmarks.recipe_ablation",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--suite", choices=["mnist", "cifar", "lm", "digits"], default="mnist")
  parser.add_argument("--variants", default=",".join(VARIANTS),
                      help=f"comma-separated labels of {', '.join(VARIANTS)}")
  args, rest = parser.parse_known_args(argv)
  variants = [v.strip() for v in args.variants.split(",") if v.strip()]
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown or not variants:
    parser.error(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
  out = ["--suite", args.suite, "--methods", ",".join(variants)]
  if args.suite == "lm":
    out += ["--adamw-grid", "--adam-grid-lm", "--schedule-free-grid", "--peers", ""]
  else:
    out += ["--sgd-grid", "--adam-grid", "--adam-const-grid", "--schedule-free-grid",
            "--peers", "", "--tlr-inits"]
  if "--json" not in rest:
    out += ["--json", os.path.join(RESULTS, f"recipe_ablation_{args.suite}.json")]
  return out + list(rest)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Registers the variants and runs the quality protocol on them."""
  from benchmarks import quality, quality_lm  # after register(): they read the registry

  register()
  argv = list(sys.argv[1:] if argv is None else argv)
  forwarded = quality_argv(argv)
  payload = quality.main(forwarded)
  # The record names this command, which is the one that reproduces it.
  json_path = forwarded[forwarded.index("--json") + 1]
  payload = {k: v for k, v in payload.items() if k not in ("markdown", "figures")}
  payload["command"] = "python -m benchmarks.recipe_ablation " + shlex.join(argv)
  prefix = os.path.splitext(json_path)[0]
  if "--png" in forwarded:
    prefix = forwarded[forwarded.index("--png") + 1]
  quality._write_json(payload, json_path)
  if forwarded[forwarded.index("--suite") + 1] == "lm":
    return quality.write_outputs(payload, json_path, prefix, quality_lm.markdown, quality_lm.plot)
  return quality.write_outputs(payload, json_path, prefix)


if __name__ == "__main__":
  main()
