"""Printing, saving and plotting the records of a run."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


def format_seconds(seconds: float) -> str:
  """A duration for a person: tenths of a second from 1 s, milliseconds below.

  Args:
    seconds: the duration, non-negative.

  Returns:
    ``"12.3 s"``, ``"34 ms"`` or, under 10 ms, two significant digits of milliseconds
    (``"3.4 ms"``), so that a short epoch does not print as ``0.0 s``.

  Example:
    >>> [format_seconds(s) for s in (75.04, 1.23, 0.0342, 0.0034, 0.0)]
    ['75.0 s', '1.2 s', '34 ms', '3.4 ms', '0 ms']
  """
  if seconds >= 0.9995:
    return f"{seconds:.1f} s"
  if seconds >= 0.01:
    return f"{seconds * 1e3:.0f} ms"
  return f"{seconds * 1e3:.2g} ms"


def format_eval(name: str, evals: dict[str, Any], train: list[dict[str, Any]]) -> str:
  """One line for ``name``'s epoch record ``evals``, with the last step size of ``train``.

  The step size (``learning_rate``) comes from the last train record, when it has one. The
  loss evaluations per step are the epoch's mean, ``evals["evals_per_step"]``; for a record
  without it, those of the last train record (the mean of its metrics window only).

  Args:
    name: the optimizer's name (padded to 12 columns).
    evals: an eval record of :func:`train.train.train_one`, with ``epoch``, ``step``,
      ``train_loss``, ``test_loss``, ``test_accuracy``, ``seconds`` (printed by
      :func:`format_seconds`) and, for optimizers that count them, ``evals_per_step``.
    train: the optimizer's train records so far (may be empty).

  Returns:
    The line, without a newline.

  Example:
    >>> evals = {"epoch": 0, "step": 45, "train_loss": 0.51234, "test_loss": 0.3,
    ...          "test_accuracy": 0.9, "evals_per_step": 1.5, "seconds": 1.23}
    >>> print(format_eval("sls", evals, [{"learning_rate": 0.5, "evals_per_step": 1.25}]))
    ... # doctest: +NORMALIZE_WHITESPACE
    sls          epoch   0  step     45  train_loss 0.5123  test_loss 0.3000  test_acc 0.9000
      step_size 0.5  evals/step 1.50  (1.2 s)
  """
  line = (
      f"{name:<12} epoch {evals['epoch']:>3}  step {evals['step']:>6}  "
      f"train_loss {evals['train_loss']:.4f}  test_loss {evals['test_loss']:.4f}  "
      f"test_acc {evals['test_accuracy']:.4f}"
  )
  if "test_bits_per_char" in evals:
    line += f"  test_bpc {evals['test_bits_per_char']:.3f}"
  if train and "learning_rate" in train[-1]:
    line += f"  step_size {train[-1]['learning_rate']:.3g}"
  if "evals_per_step" in evals:
    line += f"  evals/step {evals['evals_per_step']:.2f}"
  elif train and "evals_per_step" in train[-1]:
    line += f"  evals/step {train[-1]['evals_per_step']:.2f}"
  return line + f"  ({format_seconds(evals['seconds'])})"


def format_no_step(name: str, evals: dict[str, Any]) -> str:
  """The warning line under an epoch in which some updates made no step.

  Args:
    name: the optimizer's name.
    evals: the epoch's eval record, with ``no_step_updates`` and ``no_step_reasons``
      (reason -> number of updates).

  Returns:
    The line, without a newline.

  Example:
    >>> evals = {"epoch": 2, "no_step_updates": 3, "no_step_reasons": {
    ...     "non-finite loss or gradient": 1, "search exhausted": 2}}
    >>> print(format_no_step("sls", evals))  # doctest: +NORMALIZE_WHITESPACE
    sls          epoch   2  WARNING: 3 updates made no step (non-finite loss or gradient: 1,
      search exhausted: 2)
  """
  reasons = ", ".join(f"{reason}: {count}" for reason, count in evals["no_step_reasons"].items())
  return (f"{name:<12} epoch {evals['epoch']:>3}  WARNING: {evals['no_step_updates']} updates "
          f"made no step ({reasons})")


def throughput(train: list[dict[str, Any]]) -> float | None:
  """Median images/s of the metrics windows after the first (which holds the compilation).

  Args:
    train: one optimizer's train records, each with ``images_per_s``.

  Returns:
    The median of ``images_per_s`` over ``train[1:]``, or None when ``train`` has fewer
    than two records.

  Example:
    >>> throughput([{"images_per_s": 10.0}, {"images_per_s": 300.0}, {"images_per_s": 500.0}])
    400.0
    >>> throughput([{"images_per_s": 10.0}]) is None
    True
  """
  rates = [r["images_per_s"] for r in train[1:]]
  return float(np.median(rates)) if rates else None


def summary(history: dict[str, Any], wall_seconds: float, out: str | None) -> str:
  """The closing lines: each optimizer's final test accuracy, loss and throughput.

  Args:
    history: ``{optimizer name: {"train": [...], "eval": [...]}}``, the records of
      :func:`train.train.run`; an optimizer without eval records is left out. The
      throughput is :func:`throughput` of the train records (``-`` when it is None).
    wall_seconds: the run's wall-clock time in seconds.
    out: the directory that :func:`write_metrics` and :func:`plot_curves` wrote to,
      named in a last line, or None for no such line.

  Returns:
    The lines, joined by newlines (no trailing newline).

  Example:
    >>> history = {"sgd": {"train": [{"images_per_s": 900.0}, {"images_per_s": 1000.0}],
    ...                    "eval": [{"test_accuracy": 0.91, "train_loss": 0.25,
    ...                              "test_loss": 0.3}]}}
    >>> print(summary(history, 12.34, None))
    final test accuracy:
      sgd          0.9100  (train loss 0.2500, test loss 0.3000, 1000 images/s)
    wall time: 12.3 s
  """
  lines = ["final test accuracy:"]
  for name, records in history.items():
    if not records["eval"]:
      continue
    last = records["eval"][-1]
    rate = throughput(records["train"])
    rate_text = "-" if rate is None else f"{rate:.0f} images/s"
    lines.append(
        f"  {name:<12} {last['test_accuracy']:.4f}  (train loss {last['train_loss']:.4f}, "
        f"test loss {last['test_loss']:.4f}, {rate_text})"
    )
  lines.append(f"wall time: {wall_seconds:.1f} s")
  if out is not None:
    lines.append(f"wrote {os.path.join(out, METRICS_FILE)} and {os.path.join(out, CURVES_FILE)}")
  return "\n".join(lines)


def _jsonable(value: Any) -> Any:
  if dataclasses.is_dataclass(value):
    return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_jsonable(v) for v in value]
  return value


def write_metrics(history: dict[str, Any], config: Any, out: str) -> str:
  """Writes ``out/metrics.jsonl``; returns its path.

  The first line is ``{"kind": "config", ...}``; then one line per record,
  ``{"kind": "train" | "eval", "optimizer": name, ...}``: for each optimizer in
  turn its train records, then its eval records. An existing file is overwritten.

  Args:
    history: ``{optimizer name: {"train": [...], "eval": [...]}}``, the records of
      :func:`train.train.run` (JSON-serialisable dicts).
    config: the run's configuration, a dataclass (:class:`train.config.Config`) or
      a dict; nested dataclasses become dicts and tuples lists.
    out: the directory (created if missing).

  Returns:
    The path of the file, ``os.path.join(out, "metrics.jsonl")``.

  Example:
    >>> import json, os, tempfile
    >>> from train.config import Config
    >>> history = {"sgd": {"train": [{"step": 10, "loss": 0.5}],
    ...                    "eval": [{"step": 10, "test_accuracy": 0.9}]}}
    >>> with tempfile.TemporaryDirectory() as out:
    ...   path = write_metrics(history, Config(), out)
    ...   with open(path) as f:
    ...     lines = [json.loads(line) for line in f]
    >>> os.path.basename(path), [(r["kind"], r.get("optimizer")) for r in lines]
    ('metrics.jsonl', [('config', None), ('train', 'sgd'), ('eval', 'sgd')])
    >>> lines[0]["name"], lines[0]["model_kwargs"], lines[2]["test_accuracy"]
    ('digits_mlp', {'features': [128]}, 0.9)
  """
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, METRICS_FILE)
  with open(path, "w") as f:
    f.write(json.dumps({"kind": "config", **_jsonable(config)}) + "\n")
    for name, records in history.items():
      for kind in ("train", "eval"):
        for record in records[kind]:
          f.write(json.dumps({"kind": kind, "optimizer": name, **record}) + "\n")
  return path


def plot_curves(history: dict[str, Any], out: str, title: str = "") -> str:
  """Plots the training curves and the step size to ``out/curves.png``; returns the path.

  Four panels: training loss and training accuracy per metrics window (against
  the update step), test accuracy per epoch, and the step size (log scale) of the
  optimizers that report one. Uses the Agg canvas, no pyplot state.

  Args:
    history: ``{optimizer name: {"train": [...], "eval": [...]}}``, the records of
      :func:`train.train.run`: train records with ``step``, ``loss``, ``accuracy`` and
      optionally ``learning_rate`` (plotted where positive), eval records with
      ``step`` and ``test_accuracy``.
    out: the directory (created if missing).
    title: the figure's title; empty for none.

  Returns:
    The path of the image, ``os.path.join(out, "curves.png")``.

  Example:
    >>> import os, tempfile
    >>> train = [{"step": 10, "loss": 1.2, "accuracy": 0.5, "learning_rate": 0.8},
    ...          {"step": 20, "loss": 0.6, "accuracy": 0.8, "learning_rate": 1.1}]
    >>> history = {"sls": {"train": train, "eval": [{"step": 20, "test_accuracy": 0.85}]}}
    >>> with tempfile.TemporaryDirectory() as out:
    ...   path = plot_curves(history, out, title="demo")
    ...   os.path.basename(path), os.path.getsize(path) > 0
    ('curves.png', True)
  """
  os.makedirs(out, exist_ok=True)
  fig = Figure(figsize=(16, 3.8), layout="constrained")
  FigureCanvasAgg(fig)
  loss_ax, acc_ax, test_ax, lr_ax = fig.subplots(1, 4)
  for name, records in history.items():
    train, evals = records["train"], records["eval"]
    steps = [r["step"] for r in train]
    loss_ax.plot(steps, [r["loss"] for r in train], label=name)
    acc_ax.plot(steps, [r["accuracy"] for r in train], label=name)
    test_ax.plot([r["step"] for r in evals], [r["test_accuracy"] for r in evals], marker=".",
                 label=name)
    rated = [r for r in train if r.get("learning_rate", 0) > 0]
    if rated:
      lr_ax.plot([r["step"] for r in rated], [r["learning_rate"] for r in rated], label=name)
  loss_ax.set(title="training loss (mini-batch)", xlabel="step", yscale="log")
  acc_ax.set(title="training accuracy (mini-batch)", xlabel="step")
  test_ax.set(title="test accuracy (each epoch)", xlabel="step")
  lr_ax.set(title="step size", xlabel="step", yscale="log")
  for ax in (loss_ax, acc_ax, test_ax, lr_ax):
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend()
  if title:
    fig.suptitle(title)
  path = os.path.join(out, CURVES_FILE)
  fig.savefig(path, dpi=100)
  return path
