"""``python -m train``: SLS against SGD on the embedded digits data set.

Run ``python -m train --help`` for the options.
"""

from __future__ import annotations

from collections.abc import Sequence

from train.config import parse_args
from train.data import DIGITS_NUM_EXAMPLES, DIGITS_TEST_SIZE
from train.train import History, run


def main(argv: Sequence[str] | None = None) -> History:
  """Parses ``argv`` (the command line when None), runs the training and returns its history."""
  return run(parse_args(argv, max_batch_size=DIGITS_NUM_EXAMPLES - DIGITS_TEST_SIZE))


if __name__ == "__main__":
  main()
