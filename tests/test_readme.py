"""The README's quick start runs as it stands, outside the repository, and trains."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _quick_start() -> str:
  readme = (ROOT / "README.md").read_text()
  section = readme[readme.index("\n## Quick start\n"):]
  section = section[:section.index("\n## ", 1)]
  blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
  assert blocks, "no python block under '## Quick start'"
  return blocks[0]


def test_the_quick_start_runs_verbatim_and_learns(tmp_path):
  program = tmp_path / "quick_start.py"
  program.write_text(_quick_start())
  # In an empty folder: the program needs the installed library only (and scikit-learn's data).
  result = subprocess.run([sys.executable, str(program)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  pattern = (r"epoch (\d): loss ([\d.]+), test accuracy ([\d.]+), step size ([\d.]+), "
             r"evaluations (\d+)")
  epochs = [tuple(float(v) for v in m) for m in re.findall(pattern, result.stdout)]
  assert [int(e[0]) for e in epochs] == [0, 1, 2, 3, 4], result.stdout
  losses, accuracies, steps, evals = zip(*(e[1:] for e in epochs), strict=True)
  assert losses[-1] < 0.6 * losses[0]
  assert accuracies[-1] > 0.8  # 10 classes: chance is 0.1
  assert all(s > 0 for s in steps) and all(e >= 1 for e in evals)
