"""The documentation site (``docs/``) builds with warnings as errors and covers the public API.

The build is the one ``docs/README.md`` gives users, ``sphinx-build -W --keep-going -b html``,
with the configuration's nitpicky reference checks, run in a subprocess. The static checks
read the ``.rst`` sources: every name of ``optax_ls.__all__`` and ``optax_ls.landscape.__all__``
has an entry, and every method family has its page with the sections the issue asks for (the
maths, the paper, the defaults, the differences from the reference code, the robustness rules,
the API).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType

import pytest

import optax_ls
from optax_ls import landscape

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

METHOD_PAGES = (
  "sls", "adam_sls", "salsa", "metric_sls", "pal", "labpal", "gols", "pls", "tlr", "sgd_hd",
  "accumulate",
)
"""One page per method family, under ``docs/methods/``."""

OTHER_PAGES = ("index", "api", "landscape", "harness", "harness_api", "benchmarks", "building")

SECTIONS = ("Paper", "The method", "Defaults", "Differences", "Robustness rules", "API")
"""The section titles (or their start) every method page has, in this order."""

PACKAGES: tuple[ModuleType, ...] = (optax_ls, landscape)

_DIRECTIVE = re.compile(
  r"^\.\. (?:auto(?:function|class|data|exception)|py:(?:function|class|data|exception))::"
  r"\s+(\S+)", re.MULTILINE)
_MODULE = re.compile(r"^\.\. (?:currentmodule|module|automodule)::\s+(\S+)", re.MULTILINE)


def _documented_names() -> set[str]:
  """The qualified names of every entry in the ``.rst`` sources (``module.name``)."""
  names = set()
  for path in sorted(DOCS.rglob("*.rst")):
    if "_build" in path.parts:
      continue
    text = path.read_text(encoding="utf-8")
    events = sorted([(m.start(), "module", m.group(1)) for m in _MODULE.finditer(text)]
                    + [(m.start(), "entry", m.group(1)) for m in _DIRECTIVE.finditer(text)])
    module = None
    for _, kind, name in events:
      if kind == "module":
        module = name
      elif module is not None and not name.startswith(f"{module}."):
        names.add(f"{module}.{name}")
      else:
        names.add(name)
  return names


def _titles(text: str) -> list[str]:
  """The section titles of a page (a line followed by a line of ``-``)."""
  return re.findall(r"^(\S.*)\n-{3,}\s*$", text, re.MULTILINE)


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_every_public_name_has_an_api_entry(package):
  documented = _documented_names()
  missing = [n for n in package.__all__ if f"{package.__name__}.{n}" not in documented]
  assert not missing, f"no autofunction/autoclass/data entry in docs/ for {missing}"


def test_the_harness_api_page_has_the_harness_entry_points():
  import train

  documented = set(_DIRECTIVE.findall((DOCS / "harness_api.rst").read_text()))
  wanted = {f"{getattr(train, n).__module__}.{n}" for n in train.__all__
            if callable(getattr(train, n))}
  wanted |= {"models.get_model", "train.landscape.record", "train.data.load"}
  missing = sorted(wanted - documented)
  assert not missing, f"missing from docs/harness_api.rst: {missing}"


@pytest.mark.parametrize("page", METHOD_PAGES)
def test_method_page_has_every_section(page):
  path = DOCS / "methods" / f"{page}.rst"
  assert path.is_file(), f"no page {path}"
  text = path.read_text(encoding="utf-8")
  titles = _titles(text)
  positions = []
  for section in SECTIONS:
    found = [i for i, t in enumerate(titles) if t.startswith(section)]
    assert found, f"{path.name}: no section {section!r} (sections: {titles})"
    positions.append(found[0])
  assert positions == sorted(positions), f"{path.name}: sections out of order: {titles}"
  assert ".. math::" in text or ":math:" in text, f"{path.name}: no maths"
  index = (DOCS / "index.rst").read_text(encoding="utf-8")
  assert f"methods/{page}" in index, f"methods/{page} is not in the index's toctree"


def _inventory(path: Path) -> set[str]:
  """The Python object names in a Sphinx ``objects.inv`` (format version 2)."""
  lines = path.read_bytes().split(b"\n", 4)
  assert lines[0].startswith(b"# Sphinx inventory version 2"), lines[0]
  body = zlib.decompress(lines[4]).decode("utf-8")
  names = set()
  for line in body.splitlines():
    match = re.match(r"(.+?)\s+(py:\w+)\s+-?\d+\s", line)
    if match:
      names.add(match.group(1))
  return names


def test_site_builds_with_warnings_as_errors(tmp_path):
  if importlib.util.find_spec("sphinx") is None:
    pytest.fail('Sphinx is not installed: pip install -e ".[test]" (or ".[docs]")')
  out = tmp_path / "html"
  result = subprocess.run(
    [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
     "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
    cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
  )
  assert result.returncode == 0, (
    f"sphinx-build -W failed (exit {result.returncode}):\n{result.stderr[-6000:]}")

  pages = [f"methods/{p}" for p in METHOD_PAGES] + list(OTHER_PAGES)
  missing = [p for p in pages if not (out / f"{p}.html").is_file()]
  assert not missing, f"pages not built: {missing}"
  for index in ("genindex", "py-modindex", "search"):
    assert (out / f"{index}.html").is_file(), f"no {index}.html"

  objects = _inventory(out / "objects.inv")
  for package in PACKAGES:
    missing = [n for n in package.__all__ if f"{package.__name__}.{n}" not in objects]
    assert not missing, f"not in the built API of {package.__name__}: {missing}"

  api = (out / "api.html").read_text(encoding="utf-8")
  unlinked = [n for n in optax_ls.__all__ if f'#optax_ls.{n}"' not in api]
  assert not unlinked, f"the API index does not link {unlinked}"
  sls = (out / "methods" / "sls.html").read_text(encoding="utf-8")
  assert "mathjax" in sls.lower(), "the method pages do not load MathJax"
