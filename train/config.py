"""The configuration of the main job and its command line."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Config:
  """What ``python -m train`` runs; the defaults are the embedded default run.

  Attributes:
    epochs: passes over the training set.
    batch_size: examples per mini-batch (the last partial batch is dropped).
    seed: seeds the train/test split, the initialisation and the batch order.
    sgd_lr: the constant learning rate of the SGD baseline.
    hidden: the MLP's hidden widths.
    out: a directory for ``metrics.jsonl`` and ``curves.png``, or None for none.
  """

  epochs: int = 20
  batch_size: int = 32
  seed: int = 0
  sgd_lr: float = 0.1
  hidden: tuple[int, ...] = (128,)
  out: str | None = None


def _int_at_least(minimum: int, what: str):
  """An argparse type: an integer that is at least ``minimum`` (``what`` names it)."""

  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
      raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value

  return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "a non-negative integer")


def _positive_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
  if not 0.0 < value < float("inf"):
    raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
  return value


def _widths(text: str) -> tuple[int, ...]:
  parts = [part.strip() for part in text.split(",")]
  try:
    return tuple(_positive_int(part) for part in parts)
  except argparse.ArgumentTypeError:
    raise argparse.ArgumentTypeError(
        f"expected comma-separated positive integers such as 128 or 256,128, got {text!r}"
    ) from None


def build_parser() -> argparse.ArgumentParser:
  """The command line of ``python -m train``; every default is :class:`Config`'s."""
  default = Config()
  parser = argparse.ArgumentParser(
      prog="python -m train",
      description=(
          "Train an MLP on scikit-learn's handwritten digits with SGD + stochastic Armijo "
          "line search (optax_ls.sls) and with plain SGD, side by side from the same "
          "initialisation, and print per-epoch metrics."
      ),
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument("--epochs", type=_positive_int, default=default.epochs, help="epochs")
  parser.add_argument(
      "--batch-size", type=_positive_int, default=default.batch_size, help="examples per batch"
  )
  parser.add_argument(
      "--seed", type=_non_negative_int, default=default.seed, help="split, init and batch seed"
  )
  parser.add_argument(
      "--sgd-lr", type=_positive_float, default=default.sgd_lr, help="SGD baseline learning rate"
  )
  parser.add_argument(
      "--hidden",
      type=_widths,
      default=",".join(map(str, default.hidden)),
      metavar="W1[,W2,...]",
      help="comma-separated hidden layer widths",
  )
  parser.add_argument(
      "--out", default=default.out, metavar="DIR", help="write metrics.jsonl and curves.png here"
  )
  return parser


def parse_args(argv: Sequence[str] | None = None, max_batch_size: int | None = None) -> Config:
  """Parses the command line ``argv`` (``sys.argv[1:]`` when None) into a :class:`Config`.

  Args:
    argv: the arguments, without the program name.
    max_batch_size: the largest batch size allowed (the training set size), if known.

  Returns:
    The configuration; bad arguments exit with argparse's usage message.
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  if max_batch_size is not None and args.batch_size > max_batch_size:
    parser.error(
        f"argument --batch-size: {args.batch_size} exceeds the {max_batch_size} training examples"
    )
  return Config(
      epochs=args.epochs,
      batch_size=args.batch_size,
      seed=args.seed,
      sgd_lr=args.sgd_lr,
      hidden=tuple(args.hidden),
      out=args.out,
  )
