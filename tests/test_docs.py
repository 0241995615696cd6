"""The public API's docstrings: every section a reader needs is there.

Every public function (``__all__`` of ``optax_ls``, ``optax_ls.landscape``,
``models`` and ``train``, and the public functions of the harness's submodules
``train.data``, ``train.report``, ``train.checkpoint`` and ``train.config``)
documents its arguments and what it returns and has a runnable example; the
methods, the analysis and the models name the paper they come from. Public
classes document every field. The examples themselves run as doctests
(``--doctest-modules`` over these packages, see ``pyproject.toml``).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from types import ModuleType

import pytest

import models
import optax_ls
import train
import train.checkpoint
import train.config
import train.data
import train.report
from optax_ls import landscape

PACKAGES: tuple[tuple[ModuleType, bool], ...] = (
  # (package, whether its docstrings must cite a paper)
  (optax_ls, True),
  (landscape, True),
  (models, True),
  (train, False),
)

MODULES: tuple[ModuleType, ...] = (train.data, train.report, train.checkpoint, train.config)
"""Modules whose public functions (defined there, no leading underscore) are public API too,
without citation requirement. The named configurations (the values of
``train.config.CONFIGS``) take no arguments and are documented by ``get_config``."""


def _public(kind):
  for package, cite in PACKAGES:
    for name in package.__all__:
      obj = getattr(package, name)
      if kind(obj) and obj.__module__.split(".")[0] == package.__name__.split(".")[0]:
        yield pytest.param(obj, cite, id=f"{package.__name__}.{name}")


def _module_functions():
  exempt = set(train.config.CONFIGS.values())
  for module in MODULES:
    for name, obj in vars(module).items():
      if (inspect.isfunction(obj) and obj.__module__ == module.__name__
          and not name.startswith("_") and obj not in exempt):
        yield pytest.param(obj, False, id=f"{module.__name__}.{name}")


def _section(doc: str, title: str) -> str:
  """The text of the Google-style section ``title`` (empty when absent)."""
  match = re.search(rf"^{title}:\n((?:[ \t]+.*\n?|\n)+)", doc, re.MULTILINE)
  return match.group(1) if match else ""


def _parameters(fn) -> list[str]:
  sig = inspect.signature(fn)
  return [
    p.name for p in sig.parameters.values()
    if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in ("self", "cls")
  ]


def _returns_nothing(fn) -> bool:
  return inspect.signature(fn).return_annotation in (None, "None")


@pytest.mark.parametrize(
  ("fn", "cite"), [*_public(inspect.isfunction), *_module_functions()]
)
def test_public_function_docstring_is_complete(fn, cite):
  doc = inspect.getdoc(fn) or ""
  assert doc, "no docstring"
  args = _section(doc, "Args")
  missing = [p for p in _parameters(fn) if not re.search(rf"^\s*\**{p}\b.*:", args, re.MULTILINE)]
  assert not missing, f"arguments not documented under Args: {missing}"
  if not _returns_nothing(fn):
    assert _section(doc, "Returns"), "no Returns section"
  assert ">>>" in _section(doc, "Examples?"), "no runnable example under Example"
  if cite:
    assert _section(doc, "References"), "no References section"


def _fields(cls) -> list[str]:
  if dataclasses.is_dataclass(cls):
    return [f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]
  return list(getattr(cls, "_fields", ()))


@pytest.mark.parametrize(("cls", "cite"), list(_public(inspect.isclass)))
def test_public_class_docstring_documents_every_field(cls, cite):
  doc = inspect.getdoc(cls) or ""
  assert doc, "no docstring"
  fields = [f for f in _fields(cls) if f not in ("parent", "name")]
  attributes = _section(doc, "Attributes")
  missing = [f for f in fields if not re.search(rf"^\s*{f}\b.*:", attributes, re.MULTILINE)]
  assert not missing, f"fields not documented under Attributes: {missing}"


@pytest.mark.parametrize(
  "cls", [pytest.param(getattr(models, n), id=n) for n in models.__all__
          if inspect.isclass(getattr(models, n))]
)
def test_model_docstring_has_example_and_reference(cls):
  doc = inspect.getdoc(cls) or ""
  assert ">>>" in _section(doc, "Examples?")
  assert _section(doc, "References")
