"""``python -m train``: train with optax_ls line searches and baselines.

With no arguments it runs the embedded default (an MLP on scikit-learn's digits,
SLS against SGD). Run ``python -m train --help`` for the options.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from train.config import parse_args
from train.train import History, run


def main(argv: Sequence[str] | None = None) -> History:
  """Parses ``argv`` (the command line when None), runs the training and returns its history.

  Missing data ends the command with its message and exit code 2, without a traceback.
  """
  config = parse_args(argv)
  try:
    return run(config)
  except FileNotFoundError as error:
    print(f"python -m train: error: {error}", file=sys.stderr)
    raise SystemExit(2) from None


if __name__ == "__main__":
  main()
