"""The notebooks in ``colabs/``.

Each is stored without outputs, opens with its "Open in Colab" badge (pointing at
its own path in the repository named in ``pyproject.toml``) and the install cell,
and runs top to bottom in smoke mode (``OPTAX_LS_SMOKE=1``) in a fresh kernel, in
a temporary working directory, the way ``jupyter nbconvert --execute`` would.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import time
import tomllib

import nbclient
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLABS = ROOT / "colabs"
NOTEBOOKS = sorted(COLABS.glob("*.ipynb"))
EXPECTED = ("01_quickstart", "02_composing", "03_cifar10_resnet", "04_landscape")
SMOKE_ENV = "OPTAX_LS_SMOKE"
CELL_TIMEOUT_S = 900


def _repository() -> str:
  with open(ROOT / "pyproject.toml", "rb") as f:
    url = tomllib.load(f)["project"]["urls"]["Repository"]
  return url.rstrip("/")


def _read(path: pathlib.Path) -> nbformat.NotebookNode:
  return nbformat.read(path, as_version=4)


def test_every_notebook_is_present():
  assert [p.stem for p in NOTEBOOKS] == list(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_valid_and_stored_without_outputs(path: pathlib.Path):
  nb = _read(path)
  nbformat.validate(nb)
  fix = f"strip them with: python colabs/strip_outputs.py colabs/{path.name}"
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == "code":
      assert cell.outputs == [], f"cell {i} of {path.name} has outputs; {fix}"
      assert cell.execution_count is None, f"cell {i} of {path.name} has a count; {fix}"
  assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_badge_and_install_cell(path: pathlib.Path):
  nb = _read(path)
  first = nb.cells[0]
  assert first.cell_type == "markdown"
  repo = _repository()
  owner_name = repo.removeprefix("https://github.com/")
  badge = (
    "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
    f"(https://colab.research.google.com/github/{owner_name}/blob/main/colabs/{path.name})"
  )
  assert badge in first.source
  install = next(c for c in nb.cells if c.cell_type == "code")
  # On Colab: a clone of the repository (the harness runs from a checkout), installed with the
  # harness's extra; elsewhere only the clone's root on the path.
  assert f'"{repo}"' in install.source and '"git", "clone"' in install.source
  assert "pip" in install.source and "[harness]" in install.source
  assert "google.colab" in install.source  # installs on Colab only
  assert "OPTAX_LS_ROOT" in install.source
  assert re.search(rf"\b{SMOKE_ENV}\b", "".join(c.source for c in nb.cells))


# The CIFAR-10 notebook's smoke run (ResNet-8 on 2 devices through the harness, 1.5-3 minutes on
# 2 cores) and those of the composing and landscape notebooks (about 18 s each) run with the slow
# tests, keeping the default test command within its time; the quick start runs in both.
SLOW_NOTEBOOKS = {"03_cifar10_resnet", "02_composing", "04_landscape"}


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW_NOTEBOOKS else p for p in NOTEBOOKS
], ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path: pathlib.Path, tmp_path, monkeypatch):
  monkeypatch.setenv(SMOKE_ENV, "1")
  # The kernel starts its own JAX: it chooses its devices itself, not this
  # process's eight fake ones (conftest.py).
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  # The kernel runs in tmp_path: the install cell finds the harness through this.
  monkeypatch.setenv("OPTAX_LS_ROOT", str(ROOT))
  nb = _read(path)
  client = nbclient.NotebookClient(
    nb,
    timeout=CELL_TIMEOUT_S,
    kernel_name="python3",
    resources={"metadata": {"path": str(tmp_path)}},
  )
  start = time.perf_counter()
  client.execute()
  elapsed = time.perf_counter() - start
  errors = [
    out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    if out.output_type == "error"
  ]
  assert not errors
  print(f"{path.name}: {elapsed:.1f} s in smoke mode")


def test_strip_outputs_clears_outputs_and_counts(tmp_path):
  spec = importlib.util.spec_from_file_location("strip_outputs", COLABS / "strip_outputs.py")
  strip_outputs = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(strip_outputs)
  nb = nbformat.v4.new_notebook()
  cell = nbformat.v4.new_code_cell("print(1)", execution_count=3)
  cell.outputs = [nbformat.v4.new_output("stream", text="1\n")]
  cell.metadata["execution"] = {"iopub.status.busy": "2026-12-01T00:00:00Z"}
  nb.cells = [nbformat.v4.new_markdown_cell("# t"), cell]
  path = tmp_path / "n.ipynb"
  nbformat.write(nb, path)
  assert strip_outputs.strip(path)
  stripped = _read(path)
  assert stripped.cells[1].outputs == [] and stripped.cells[1].execution_count is None
  assert "execution" not in stripped.cells[1].metadata
  assert stripped.cells[1].source == "print(1)" and stripped.cells[0].source == "# t"
  assert not strip_outputs.strip(path)  # idempotent
