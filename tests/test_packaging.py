"""The distribution: a wheel of ``optax_ls`` alone, with jax, optax and numpy as its only needs.

The harness (``train``, ``models``) and the benchmarks stay in the repository and run from
its root; nothing of them, nor of their dependencies, is installed with the library or
imported by it.
"""

from __future__ import annotations

import ast
import pathlib
import shutil
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "optax_ls"
# The harness's packages and the harness extra's dependencies (import names).
NOT_THE_LIBRARYS = ("train", "models", "benchmarks", "flax", "orbax", "tensorflow_datasets",
                    "tensorflow", "sklearn", "tqdm", "matplotlib", "chex")


def _run(code: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                        timeout=120)


def test_the_wheel_holds_only_optax_ls_and_needs_only_jax_optax_numpy(tmp_path):
  source = tmp_path / "source"  # a copy: the build writes build/ and egg-info beside it
  source.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(ROOT / name, source / name)
  shutil.copytree(LIBRARY, source / "optax_ls",
                  ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  out = tmp_path / "wheel"
  # The backend that pyproject.toml names, as pip or `python -m build` would call it.
  built = _run(f"from setuptools import build_meta; print(build_meta.build_wheel({str(out)!r}))",
               cwd=source)
  assert built.returncode == 0, built.stderr[-2000:]
  wheel = out / built.stdout.strip().splitlines()[-1]
  with zipfile.ZipFile(wheel) as archive:
    names = archive.namelist()
    metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
  tops = {name.split("/")[0] for name in names}
  assert "optax_ls" in tops
  assert [top for top in tops - {"optax_ls"} if not top.endswith(".dist-info")] == []
  assert "optax_ls/landscape/_measure.py" in names and "optax_ls/_sls.py" in names
  assert not any("train/" in n or "models/" in n or "benchmarks/" in n for n in names)
  requires = [line.removeprefix("Requires-Dist:").strip() for line in metadata.splitlines()
              if line.startswith("Requires-Dist:")]
  core = sorted(r.split("<")[0].split(">")[0].split("=")[0].strip()
                for r in requires if "extra ==" not in r)
  assert core == ["jax", "numpy", "optax"]
  harness = [r for r in requires if 'extra == "harness"' in r]
  assert any(r.startswith("flax") for r in harness) and any(r.startswith("orbax") for r in harness)


def test_the_library_imports_nothing_of_the_harness():
  # Statically: no module of optax_ls imports the harness, at any depth; the optional
  # integrations (the Flax adapters, the landscape's figures) import flax or matplotlib only
  # inside the functions that need them, never when the module loads.
  optional_inside_functions = {"flax", "matplotlib"}
  for path in sorted(LIBRARY.rglob("*.py")):
    tree = ast.parse(path.read_text(), str(path))
    inside = {id(node) for block in ast.walk(tree)  # in functions, or for type checkers only
              if isinstance(block, ast.FunctionDef | ast.AsyncFunctionDef)
              or (isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING")
              for node in ast.walk(block)}
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        modules = [node.module or ""]
      else:
        continue
      for module in modules:
        top = module.split(".")[0]
        if id(node) in inside and top in optional_inside_functions:
          continue
        assert top not in NOT_THE_LIBRARYS, f"{path.relative_to(ROOT)} imports {module}"
  # And at run time: importing the library and its landscape loads none of them.
  result = _run("import sys, optax_ls, optax_ls.landscape\n"
                f"print(sorted(m for m in {NOT_THE_LIBRARYS!r} if m in sys.modules))",
                cwd=ROOT.parent)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "[]"


def test_a_users_own_train_and_models_do_not_clash_with_the_harness(tmp_path):
  (tmp_path / "train.py").write_text("WHOSE = 'user'\n")
  (tmp_path / "models").mkdir()
  (tmp_path / "models" / "__init__.py").write_text("WHOSE = 'user'\n")
  mine = _run("import optax_ls, train, models\n"
              "print(train.WHOSE, models.WHOSE, optax_ls.sls.__name__)", cwd=tmp_path)
  assert mine.returncode == 0, mine.stderr[-2000:]
  assert mine.stdout.split() == ["user", "user", "sls"]
  # Elsewhere `train` is nobody's (the harness is not installed) ...
  elsewhere = _run("import importlib.util; print(importlib.util.find_spec('train'))",
                   cwd=tmp_path.parent)
  assert elsewhere.stdout.strip() == "None"
  # ... and from the repository's root it is the harness, as the README's command needs.
  harness = _run("import train.config; print(train.config.__file__)", cwd=ROOT)
  assert harness.returncode == 0, harness.stderr[-2000:]
  assert pathlib.Path(harness.stdout.strip()).parent == ROOT / "train"
