"""Landscape runs of the harness: record lines along a training run and draw seed 003's figures.

:func:`record` trains one optimizer of a :class:`train.config.Config` and measures
the full-batch loss along its updates with :class:`optax_ls.landscape.LineMeter`;
the analysis, the report and the figures are the library's (:mod:`optax_ls.landscape`).

``python -m train.landscape`` with no arguments: SGD (lr 0.1) on the embedded digits
MLP for 200 steps, a line every 10 steps, into ``runs/landscape``. The paper's setting
on the real CIFAR-10 subset (seed 003: ResNet-20, SGD lr 0.1, momentum 0 and 0.9)::

  python -m train.landscape --config cifar10_resnet20_subset --optimizer sgd --lr 0.1 \\
      --set opt.momentum=0.9 --max-steps 300 --every 30 --examples 1024 --out runs/sgd_m09

``--plot-only DIR`` re-analyses the lines saved in ``DIR`` and redraws the figures.
Every option of ``python -m train`` works (``--config``, ``--set``, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from models import get_model
from optax_ls import landscape
from train import data
from train.config import Config, config_from_args
from train.config import build_parser as train_parser
from train.optimizers import OptimizerConfig, learning_rate_of
from train.train import create_state, cross_entropy, init_variables, train_step

LINES_DIR = "lines"  # under the run's out: where optax_ls.landscape.load_lines looks
DEFAULT_OUT = "runs/landscape"
DEFAULT_MAX_STEPS = 200

def _analysis_set(source, spec, batch_size: int, examples: int | None, seed: int):
  count = len(source) if examples is None else min(examples, len(source))
  count -= count % batch_size
  if count < batch_size:
    raise ValueError(f"The analysis set needs at least one batch of {batch_size} examples; "
                     f"asked for {examples} of {len(source)}.")
  indices = np.sort(np.random.default_rng([seed, 3]).permutation(len(source))[:count])
  x, y = source.get(indices)
  xs, ys = [], []
  for bx, by, _ in data.eval_batches(data.Dataset(x, y), spec, batch_size=batch_size):
    xs.append(bx)
    ys.append(by)
  return jnp.asarray(np.stack(xs)), jnp.asarray(np.stack(ys))


def record(config: Config, settings: landscape.Settings | None = None, *,
           verbose: bool = True) -> list[landscape.Line]:
  """Trains ``config``'s one optimizer and measures the line of every ``settings.every``-th update.

  The line of update ``u_t = theta_{t+1} - theta_t`` runs through the parameters
  before it, ``l(s) = L(theta_t + s d)`` with ``d = u_t / ||u_t||``; the run's own
  step is ``s_upd = ||u_t||`` (seed 003, Eq. 1; for SGD ``d = -g / ||g||`` and
  ``s_upd = lr ||g||``). ``L`` is the mean training loss (cross-entropy plus the
  run's L2 term) over the analysis set: ``settings.examples`` training examples
  drawn once, without augmentation, in batches of ``config.batch_size``; the
  direction batch is the training batch of the update. A zero update (a measuring
  call of LABPAL, an accepting call of GOLS-I) defines no line: the next non-zero
  update is measured instead.

  With ``config.out``, each line goes to ``out/lines/line_<step>.npz`` as it is
  measured, so that an interrupted run keeps what it measured.

  Args:
    config: a :class:`train.config.Config` with exactly one optimizer.
    settings: what to measure (:class:`optax_ls.landscape.Settings`; None: its defaults).
    verbose: print the run's setting and show a progress bar (loss, lines
      measured, seconds per line).

  Returns:
    The measured :class:`optax_ls.landscape.Line` objects, in training order.

  Raises:
    ValueError: when the config or the settings are not valid, the config has
      not exactly one optimizer, or the data hold less than one batch.

  Example:
    >>> import os, tempfile
    >>> from optax_ls.landscape import Settings
    >>> from train.config import Config
    >>> from train.optimizers import OptimizerConfig
    >>> sgd = OptimizerConfig("sgd", learning_rate=0.1)
    >>> with tempfile.TemporaryDirectory() as tmp:  # one SGD step of the embedded digits MLP
    ...   config = Config(optimizers=(sgd,), max_steps=1, out=tmp)
    ...   settings = Settings(every=1, examples=32, resolution=0.1, max_widenings=0)
    ...   lines = record(config, settings, verbose=False)
    ...   os.listdir(os.path.join(tmp, "lines"))
    ['line_000000.npz']
    >>> len(lines), lines[0].steps.shape, lines[0].batch_losses.shape  # 11 steps, 1 batch
    (1, (11,), (11, 1))
    >>> round(lines[0].update_norm / abs(lines[0].direction_slope), 4)  # s_upd = lr ||g||
    0.1

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 3, Eq. 1 (seed 003).
  """
  settings = landscape.Settings() if settings is None else settings
  config.validate()
  settings.validate()
  if len(config.optimizers) != 1:
    names = [o.name for o in config.optimizers]
    raise ValueError(f"A landscape run follows one optimizer's trajectory; the config has {names}: "
                     "choose one (--optimizer NAME).")
  optimizer = config.optimizers[0]
  train_source, _, spec = data.load(config.dataset, data_dir=config.data_dir, seed=config.seed,
                                    test_fraction=config.test_fraction)
  batch_size = config.batch_size
  steps_per_epoch = data.steps_per_epoch(len(train_source), batch_size)
  if steps_per_epoch < 1:
    raise ValueError(f"`batch_size` {batch_size} exceeds the {len(train_source)} training "
                     "examples.")
  model = get_model(config.model, num_classes=spec.num_classes, **config.model_kwargs)
  sample, _ = next(data.batches(train_source, spec, batch_size=1, seed=0, epoch=0, augment=False))
  variables = init_variables(model, jax.random.key(config.seed), sample)
  total_steps = config.epochs * steps_per_epoch
  last = total_steps if config.max_steps is None else min(config.max_steps, total_steps)
  state = create_state(model, variables, optimizer, seed=config.seed,
                       steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                       dataset_size=len(train_source), batch_size=batch_size)
  analysis_set = _analysis_set(train_source, spec, batch_size, settings.examples, config.seed)
  key = jax.random.key(config.seed + 2)
  train_mode = settings.bn_train_mode

  def example_losses(point, batch):
    params, batch_stats = point
    x, y = batch
    logits = model.apply({"params": params, "batch_stats": batch_stats}, x, train=train_mode,
                         rngs={"dropout": key}, mutable=["batch_stats"] if train_mode else False)
    logits = logits[0] if train_mode else logits
    loss = cross_entropy(logits, y)
    if state.l2:
      loss = loss + 0.5 * state.l2 * sum(jnp.sum(p.astype(jnp.float32) ** 2)
                                         for p in jax.tree.leaves(params))
    return loss

  meter = landscape.LineMeter(example_losses, batches_per_pass=settings.batches_per_pass,
                    steps_per_pass=settings.steps_per_pass)
  step_fn = jax.jit(train_step)  # not donated: the parameters before the update define the line
  line_grid = landscape.grid(*settings.interval, settings.resolution)
  lines_dir = None
  if config.out is not None:
    lines_dir = os.path.join(config.out, LINES_DIR)
    os.makedirs(lines_dir, exist_ok=True)
  if verbose:
    lr = learning_rate_of(optimizer)
    lr_text = "-" if lr is None else f"{lr:g}"
    print(f"landscape: {config.name}, {optimizer.name} (lr {lr_text}, momentum "
          f"{optimizer.momentum:g}), {last} steps, a line every {settings.every}; analysis set "
          f"{analysis_set[1].size} examples in {analysis_set[1].shape[0]} batches, grid "
          f"{len(line_grid)} points on [{settings.interval[0]:g}, {settings.interval[1]:g}]",
          flush=True)
    if config.max_steps is not None and config.max_steps > total_steps:
      print(f"landscape: max_steps {config.max_steps} exceeds the run's {config.epochs} epochs of "
            f"{steps_per_epoch} steps: it stops after {total_steps} (raise --epochs for more)",
            flush=True)

  lines: list[landscape.Line] = []
  pending = False
  bar = tqdm(total=last, disable=not verbose, file=sys.stderr, desc=optimizer.name,
             dynamic_ncols=True)
  step = 0
  epoch = 0
  while step < last:
    for x, y in data.batches(train_source, spec, batch_size=batch_size, seed=config.seed,
                             epoch=epoch, augment=config.augment):
      if step >= last:
        break
      new_state, metrics = step_fn(state, jnp.asarray(x), jnp.asarray(y))
      pending = pending or step % settings.every == 0
      if pending:
        update = jax.tree.map(jnp.subtract, new_state.params, state.params)
        try:
          direction, norm = landscape.unit_direction(update)
        except ValueError:
          direction = None  # a zero update: measure the next one
        if direction is not None:
          zeros = jax.tree.map(jnp.zeros_like, state.batch_stats)
          line = meter.measure(
              (state.params, state.batch_stats), (direction, zeros), analysis_set,
              direction_batch=(jnp.asarray(x), jnp.asarray(y)), steps=line_grid,
              mu=settings.mu, include=(norm,), max_widenings=settings.max_widenings,
              update_norm=norm, step=step)
          lines.append(line)
          pending = False
          if lines_dir is not None:
            line.save(os.path.join(lines_dir, f"line_{step:06d}.npz"))
          bar.set_postfix(loss=f"{float(metrics['loss']):.3f}", lines=len(lines),
                          s_per_line=f"{line.seconds:.1f}")
      state = new_state
      step += 1
      bar.update(1)
    epoch += 1
  bar.close()
  return lines




def build_parser() -> argparse.ArgumentParser:
  parser = train_parser()
  parser.prog = "python -m train.landscape"
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
  parser = build_parser()
  args = parser.parse_args(argv)
  window = args.window
  if args.plot_only:
    lines = landscape.load_lines(args.plot_only)
    saved = landscape.saved_settings(args.plot_only)
    lr = saved.get("learning_rate", 0.1)
    text, paths = landscape.write_report(
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
    settings = landscape.Settings(
        every=args.every, examples=args.examples, interval=tuple(args.interval),
        resolution=args.resolution, mu=args.mu, max_widenings=args.max_widenings,
        batches_per_pass=args.batches_per_pass, steps_per_pass=args.steps_per_pass,
        bn_train_mode=not args.bn_eval, window=window,
    ).validate()
  except ValueError as error:
    parser.error(str(error))
  start = time.perf_counter()
  lines = record(config, settings)
  if not lines:
    print("no line was measured (every update was zero)", file=sys.stderr)
    return 1
  run_lr = learning_rate_of(optimizer)  # None for an optimizer without a learning rate
  lr_text = "-" if run_lr is None else f"{run_lr:g}"
  title = f"{config.name}: {optimizer.name} lr {lr_text} momentum {optimizer.momentum:g}"
  lr = 0.1 if run_lr is None else run_lr  # the SGD rates the lines are compared at
  text, paths = landscape.write_report(
      lines, config.out, window=window, title=title, learning_rates=(lr, lr / 2, lr / 10),
      extra={"config": dataclasses.asdict(config), "settings": dataclasses.asdict(settings),
             "argv": list(sys.argv[1:] if argv is None else argv), "title": title,
             "learning_rate": run_lr})
  print(text)
  print(f"wrote {len(lines)} lines to {config.out}/lines, " + ", ".join(paths)
        + f" ({time.perf_counter() - start:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
