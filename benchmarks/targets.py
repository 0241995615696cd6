"""Does one untuned configuration meet the "no learning rate to tune" targets on every workload?

Reads the quality protocol's result files of the three workloads and checks, for one method
of them (default ``adam_salsa_cooldown``), over the seeds where that method ran (the
baselines averaged over the same seeds):

* the gap to the best tuned baseline: on the image suites the best of tuned SGD (``sgd``),
  tuned Adam with warm-up and cosine (``adam``) and constant Adam (``adam_const``), in
  validation accuracy, within ``TARGETS`` points (CIFAR-10 1.0, MNIST 0.5); on ``lm`` tuned
  AdamW with warm-up and cosine (``adamw``), in validation bits per character, within 0.05;
* the seed-to-seed spread: the method's sample standard deviation no larger than that tuned
  baseline's;
* against the parameter-free peers at their defaults (Prodigy, DoG): a better mean.

The tuned point of each group is the grid point with the best mean over the same seeds
(:func:`benchmarks.quality.tuned`), picked and scored on the same validation split (an
optimistic estimate of what tuning buys). A Markdown table on stdout and in ``--out``::

  python -m benchmarks.targets                            # the committed result files
  python -m benchmarks.targets --method adam_sls --out /tmp/targets.md
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

from benchmarks import quality as q

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

WORKLOADS = (
    ("CIFAR-10 subset, ResNet-20, 10 epochs", "quality_cifar_10ep.json", "val_accuracy",
     ("sgd", "adam", "adam_const"), 1.0, "cifar"),
    ("MNIST subset, MLP, 20 epochs", "quality_mnist.json", "val_accuracy",
     ("sgd", "adam", "adam_const"), 0.5, "mnist"),
    ("character GPT, 400 updates", "quality_lm.json", "val_bpc", ("adamw",), 0.05, "lm"),
)
"""Per workload: its name, result file, score, the tuned groups it is compared with, the
largest allowed gap (accuracy points, or bits per character) and its suite."""

PEERS = ("prodigy", "dog")


def check(payload: dict[str, Any], method: str, key: str, groups: Sequence[str],
          allowed: float) -> dict[str, Any] | None:
  """The targets of one workload for ``method`` (None when it has no run in ``payload``)."""
  seeds = sorted({r["seed"] for r in payload["results"] if r["label"] == method})
  if not seeds:
    return None
  results = [r for r in payload["results"] if r["seed"] in seeds]
  summary = q.summarise_runs(results, (key,))
  lower = key == "val_bpc"
  best = min if lower else max
  scale = 1.0 if lower else 100.0
  tuned = [t for t in (q.tuned(summary, g, key=key, best=best) for g in groups) if t]
  tuned = [t for t in tuned if t[key]["mean"] is not None and set(seeds) <= set(t["seeds"])]
  reference = best(tuned, key=lambda t: t[key]["mean"]) if tuned else None
  mine = summary[method][key]

  def better(a: float | None, b: float | None) -> bool | None:
    if a is None or b is None:
      return None
    return a < b if lower else a > b

  single = len(seeds) < 2  # no spread from one seed
  out = {"seeds": seeds, "mean": mine["mean"], "std": None if single else mine["std"],
         "scale": scale,
         "reference": None, "gap": None, "within": None, "spread_ok": None, "peers": {}}
  if reference is not None and mine["mean"] is not None:
    gap = (mine["mean"] - reference[key]["mean"]) * scale
    out.update(
        reference=reference, gap=gap,
        within=(gap <= allowed) if lower else (gap >= -allowed),
        spread_ok=None if single else (mine["std"] is not None
                                       and reference[key]["std"] is not None
                                       and mine["std"] <= reference[key]["std"]))
  for peer in PEERS:
    stats = summary.get(peer)
    if stats is not None and set(seeds) <= set(stats["seeds"]):
      out["peers"][peer] = {"mean": stats[key]["mean"],
                            "beaten": better(mine["mean"], stats[key]["mean"])}
  return out


def _fmt(value: float | None, scale: float, digits: int) -> str:
  return "-" if value is None else f"{value * scale:.{digits}f}"


def _yes(flag: bool | None) -> str:
  return "-" if flag is None else ("**yes**" if flag else "no")


def markdown(method: str, rows: Sequence[tuple[str, float, dict[str, Any] | None]]) -> str:
  """The table of :func:`check`'s results, one row per workload."""
  lines = [
      f"| workload (seeds) | `{method}` | best tuned | gap (allowed) | within | spread <= "
      "tuned's | Prodigy | beats Prodigy | DoG | beats DoG |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  beats = {peer: 0 for peer in PEERS}
  for name, allowed, r in rows:
    if r is None:
      lines.append(f"| {name} | not run | | | | | | | | |")
      continue
    digits = 3 if r["scale"] == 1.0 else 2
    ref = r["reference"]
    ref_text = "-" if ref is None else (
        f"{_fmt(ref[_key(r)]['mean'], r['scale'], digits)} ± "
        f"{_fmt(None if r['std'] is None else ref[_key(r)]['std'], r['scale'], digits)} "
        f"({ref['label']}"
        f"{', grid edge' if ref['at_edge'] else ''})")
    peer_cells = []
    for peer in PEERS:
      p = r["peers"].get(peer)
      peer_cells += ["-", "-"] if p is None else [_fmt(p["mean"], r["scale"], digits),
                                                  _yes(p["beaten"])]
      beats[peer] += bool(p and p["beaten"])
    gap = "-" if r["gap"] is None else f"{r['gap']:+.{digits}f} ({allowed:g})"
    lines.append(
        f"| {name} ({', '.join(map(str, r['seeds']))}) | "
        f"{_fmt(r['mean'], r['scale'], digits)} ± {_fmt(r['std'], r['scale'], digits)} | "
        f"{ref_text} | {gap} | {_yes(r['within'])} | {_yes(r['spread_ok'])} | "
        f"{' | '.join(peer_cells)} |")
  lines += ["", f"Workloads where `{method}` beats Prodigy: {beats['prodigy']}; DoG: "
            f"{beats['dog']} (of {sum(r is not None for _, _, r in rows)} run)."]
  return "\n".join(lines) + "\n"


def _key(row: dict[str, Any]) -> str:
  return "val_bpc" if row["scale"] == 1.0 else "val_accuracy"


def main(argv: Sequence[str] | None = None) -> str:
  """Checks the targets on the result files; prints and returns the table."""
  parser = argparse.ArgumentParser(prog="python -m benchmarks.targets",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--method", default="adam_salsa_cooldown")
  parser.add_argument("--results", default=RESULTS, help="directory of the result files")
  parser.add_argument("--out", help="also write the table to this file")
  parser.add_argument("--more", nargs="*", default=[], metavar="JSON",
                      help="more result files of the same protocol (e.g. a recipe ablation's), "
                           "each added to the workload of its suite: a method run there is "
                           "checked against that workload's baselines")
  args = parser.parse_args(argv)
  more: dict[str, list[dict[str, Any]]] = {}
  for path in args.more:
    with open(path) as f:
      extra = json.load(f)
    more.setdefault(extra["settings"]["suite"], []).extend(extra["results"])
  rows = []
  for name, filename, key, groups, allowed, suite in WORKLOADS:
    path = os.path.join(args.results, filename)
    result = None
    if os.path.exists(path):
      with open(path) as f:
        payload = json.load(f)
      payload["results"] = payload["results"] + more.get(suite, [])
      result = check(payload, args.method, key, groups, allowed)
    rows.append((name, allowed, result))
  text = markdown(args.method, rows)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)
  return text


if __name__ == "__main__":
  main()
