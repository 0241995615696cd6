"""``python -m optax_ls.landscape``: record lines along a training run and draw seed 003's figures.

With no arguments: SGD (lr 0.1) on the embedded digits MLP for 200 steps, a line
every 10 steps, into ``runs/landscape``. The paper's setting on the real CIFAR-10
subset (seed 003: ResNet-20, SGD lr 0.1, momentum 0 and 0.9)::

  python -m optax_ls.landscape --config cifar10_resnet20_subset --optimizer sgd --lr 0.1 \\
      --set opt.momentum=0.9 --max-steps 300 --every 30 --examples 1024 --out runs/sgd_m09

``--plot-only DIR`` re-analyses the lines saved in ``DIR`` and redraws the figures.
Every option of ``python -m train`` works (``--config``, ``--set``, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence

DEFAULT_OUT = "runs/landscape"
DEFAULT_MAX_STEPS = 200


def build_parser() -> argparse.ArgumentParser:
  from train.config import build_parser as train_parser

  parser = train_parser()
  parser.prog = "python -m optax_ls.landscape"
  parser.description = (
      "Measure the full-batch loss along the update directions of a training run (seed 003, "
      "'Empirically explaining SGD from a line search perspective') and draw its figures. "
      "Defaults: SGD lr 0.1 on the embedded digits MLP, 200 steps, a line every 10.")
  group = parser.add_argument_group("landscape")
  group.add_argument("--every", type=int, default=10, metavar="STEPS",
                     help="measure the line of every STEPS-th update (default 10)")
  group.add_argument("--examples", type=int, metavar="N",
                     help="size of the analysis set, the 'full batch' (default: the whole "
                          "training split)")
  group.add_argument("--interval", type=float, nargs=2, default=(-0.5, 0.5), metavar=("LO", "HI"),
                     help="the grid's interval (default -0.5 0.5)")
  group.add_argument("--resolution", type=float, default=0.006,
                     help="the grid's spacing (default 0.006, seed 003's)")
  group.add_argument("--mu", type=float, default=0.1, help="PAL's measuring step (default 0.1)")
  group.add_argument("--max-widenings", type=int, default=4,
                     help="how often the grid may grow beyond an edge (default 4)")
  group.add_argument("--window", type=float,
                     help="half-width of the fits and shape distances (default 0.2, or 0.5 with "
                          "momentum, as seed 003)")
  group.add_argument("--batches-per-pass", type=int, default=1,
                     help="batches evaluated together (vmap) per pass (default 1)")
  group.add_argument("--steps-per-pass", type=int, default=1,
                     help="step sizes evaluated together (vmap) per pass (default 1)")
  group.add_argument("--bn-eval", action="store_true",
                     help="BatchNorm with running averages (default: batch statistics, as the "
                          "training loss)")
  group.add_argument("--plot-only", metavar="DIR",
                     help="only analyse the lines saved in DIR and redraw its figures")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  from optax_ls.landscape import _record
  from train.config import config_from_args
  from train.optimizers import OptimizerConfig, learning_rate_of

  parser = build_parser()
  args = parser.parse_args(argv)
  window = args.window
  if args.plot_only:
    lines = _record.load_lines(args.plot_only)
    saved = _record.saved_settings(args.plot_only)
    lr = saved.get("learning_rate", 0.1)
    text, paths = _record.write_report(
        lines, args.plot_only, window=window or saved.get("window") or 0.2,
        learning_rates=(lr, lr / 2, lr / 10), title=saved.get("title", args.plot_only),
        extra=saved.get("extra"))
    print(text)
    print("wrote " + ", ".join(paths))
    return 0
  if args.optimizer is None:
    args.optimizer = "sgd"
  if args.max_steps is None:
    args.max_steps = DEFAULT_MAX_STEPS
  if args.out is None:
    args.out = DEFAULT_OUT
  config = config_from_args(args, parser)
  if len(config.optimizers) != 1:
    parser.error("a landscape run follows one optimizer: give one name to --optimizer")
  optimizer: OptimizerConfig = config.optimizers[0]
  if window is None:
    window = 0.5 if optimizer.momentum > 0 else 0.2
  try:
    settings = _record.Settings(
        every=args.every, examples=args.examples, interval=tuple(args.interval),
        resolution=args.resolution, mu=args.mu, max_widenings=args.max_widenings,
        batches_per_pass=args.batches_per_pass, steps_per_pass=args.steps_per_pass,
        bn_train_mode=not args.bn_eval, window=window,
    ).validate()
  except ValueError as error:
    parser.error(str(error))
  start = time.perf_counter()
  lines = _record.record(config, settings)
  if not lines:
    print("no line was measured (every update was zero)", file=sys.stderr)
    return 1
  run_lr = learning_rate_of(optimizer)  # None for an optimizer without a learning rate
  lr_text = "-" if run_lr is None else f"{run_lr:g}"
  title = f"{config.name}: {optimizer.name} lr {lr_text} momentum {optimizer.momentum:g}"
  lr = 0.1 if run_lr is None else run_lr  # the SGD rates the lines are compared at
  text, paths = _record.write_report(
      lines, config.out, window=window, title=title, learning_rates=(lr, lr / 2, lr / 10),
      extra={"config": dataclasses.asdict(config), "settings": dataclasses.asdict(settings),
             "argv": list(sys.argv[1:] if argv is None else argv), "title": title})
  print(text)
  print(f"wrote {len(lines)} lines to {config.out}/lines, " + ", ".join(paths)
        + f" ({time.perf_counter() - start:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
