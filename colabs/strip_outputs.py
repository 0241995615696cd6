"""Strips the outputs of notebooks before they are committed.

The notebooks are stored without outputs (``tests/test_colabs.py`` checks it):
after running one locally, ``python colabs/strip_outputs.py colabs/*.ipynb``
clears every code cell's outputs and execution count and the per-cell
execution metadata, and leaves everything else as it was.
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Sequence

import nbformat


def strip(path: pathlib.Path) -> bool:
  """Clears the outputs of the notebook at ``path`` in place.

  Args:
    path: an ``.ipynb`` file.

  Returns:
    Whether the file changed.
  """
  nb = nbformat.read(path, as_version=4)
  before = nbformat.writes(nb)
  for cell in nb.cells:
    cell.metadata.pop("execution", None)
    if cell.cell_type == "code":
      cell.outputs = []
      cell.execution_count = None
  after = nbformat.writes(nb)
  if after != before:
    path.write_text(after + "\n" if not after.endswith("\n") else after)
  return after != before


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("notebooks", nargs="+", type=pathlib.Path)
  args = parser.parse_args(argv)
  for path in args.notebooks:
    print(f"{path}: {'stripped' if strip(path) else 'already clean'}")


if __name__ == "__main__":
  main()
