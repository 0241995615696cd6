"""Printing, saving and plotting the history of a run."""

from __future__ import annotations

import json
import os
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"

HEADER = (
    f"{'epoch':>5}  {'optimizer':<9}  {'train_loss':>10}  {'test_acc':>8}  "
    f"{'step_size':>9}  {'evals/step':>10}"
)


def format_row(name: str, record: dict[str, Any]) -> str:
  """One table line (matching :data:`HEADER`) for ``name``'s epoch ``record``."""
  evals = record["evals_per_step"]
  evals_text = "-" if evals is None else f"{evals:.2f}"
  return (
      f"{record['epoch']:>5}  {name:<9}  {record['train_loss']:>10.4f}  "
      f"{record['test_accuracy']:>8.4f}  {record['step_size']:>9.3g}  {evals_text:>10}"
  )


def summary(history: dict[str, list[dict[str, Any]]], wall_seconds: float, out: str | None) -> str:
  """The closing lines: each optimizer's final test accuracy and training time."""
  lines = ["final test accuracy:"]
  for name, records in history.items():
    train_seconds = sum(r["seconds"] for r in records)
    lines.append(
        f"  {name:<9} {records[-1]['test_accuracy']:.4f}  "
        f"(train loss {records[-1]['train_loss']:.4f}, {train_seconds:.1f} s training)"
    )
  lines.append(f"wall time: {wall_seconds:.1f} s")
  if out is not None:
    lines.append(f"wrote {os.path.join(out, METRICS_FILE)} and {os.path.join(out, CURVES_FILE)}")
  return "\n".join(lines)


def write_metrics(history: dict[str, list[dict[str, Any]]], out: str) -> str:
  """Writes one JSON object per optimizer and epoch to ``out/metrics.jsonl``; returns its path."""
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, METRICS_FILE)
  with open(path, "w") as f:
    for name, records in history.items():
      for record in records:
        f.write(json.dumps({"optimizer": name, **record}) + "\n")
  return path


def plot_curves(history: dict[str, list[dict[str, Any]]], out: str) -> str:
  """Plots train loss, test accuracy and step size per epoch to ``out/curves.png``.

  Uses the Agg canvas directly, so no display and no global pyplot state are involved.
  Returns the path written.
  """
  os.makedirs(out, exist_ok=True)
  fig = Figure(figsize=(13, 3.8), layout="constrained")
  FigureCanvasAgg(fig)
  loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
  for name, records in history.items():
    epochs = [r["epoch"] for r in records]
    loss_ax.plot(epochs, [r["train_loss"] for r in records], marker=".", label=name)
    acc_ax.plot(epochs, [r["test_accuracy"] for r in records], marker=".", label=name)
    lr_ax.plot(epochs, [r["step_size"] for r in records], marker=".", label=name)
  loss_ax.set(title="train loss (epoch mean)", xlabel="epoch", yscale="log")
  acc_ax.set(title="test accuracy", xlabel="epoch")
  lr_ax.set(title="step size (last update of the epoch)", xlabel="epoch", yscale="log")
  for ax in (loss_ax, acc_ax, lr_ax):
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
  path = os.path.join(out, CURVES_FILE)
  fig.savefig(path, dpi=110)
  return path
