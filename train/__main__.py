"""``python -m train``: train with optax_ls line searches and baselines.

With no arguments it runs the embedded default (an MLP on scikit-learn's digits,
SLS against SGD). Run ``python -m train --help`` for the options.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from train.config import parse_args
from train.errors import ConfigError
from train.train import History, run


def main(argv: Sequence[str] | None = None) -> History:
  """Parses ``argv`` (the command line when None), runs the training and returns its history.

  Bad arguments end the command as argparse ends it: a usage message, then
  ``python -m train: error: ...`` and exit code 2. So do, on one line without a traceback,
  missing data (``FileNotFoundError``) and the errors the run finds before training
  (:class:`train.errors.ConfigError`: a value that an optimizer's factory or the model
  rejects, e.g. ``--set opt.kwargs.c=abc``, an argument none takes, a batch size the data
  cannot fill).

  Raises:
    SystemExit: with code 2, after the message on stderr.
  """
  config = parse_args(argv)
  try:
    return run(config)
  except (FileNotFoundError, ConfigError) as error:
    message = " ".join(str(error).split())  # one line, whatever the message holds
    print(f"python -m train: error: {message}", file=sys.stderr)
    raise SystemExit(2) from None


if __name__ == "__main__":
  main()
