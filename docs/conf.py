"""Sphinx configuration of the optax_ls documentation site.

Build it from the repository root with warnings as errors::

  python -m sphinx -W --keep-going -b html docs docs/_build/html

``tests/test_docs_site.py`` runs the same build in the default test run.
"""

from __future__ import annotations

import os
import sys

# The packages are importable from an editable install (``pip install -e ".[test]"``); the
# repository root is put first anyway so that a plain checkout builds its own sources.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import optax_ls  # noqa: E402

project = "optax_ls"
author = "the optax_ls authors"
copyright = "the optax_ls authors, Apache-2.0"  # noqa: A001
release = optax_ls.__version__
version = release

REPOSITORY = "https://github.com/optax-ls/optax_ls"
"""The repository (``[project.urls]`` of ``pyproject.toml``): pages link result files there."""

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx.ext.viewcode",
  "sphinx.ext.extlinks",
]

exclude_patterns = ["_build", "README.md"]
root_doc = "index"
language = "en"

# Every reference to this project's objects must resolve. Left unresolved, since the build is
# offline (no intersphinx inventories): other packages, the short names of two type aliases,
# private helpers named in type hints and field lists (``optax_ls._phased.PhaseClock``), and
# and the harness's (``train``, ``models``) names that its API page does not render (its
# data specs, registries and building blocks): the page documents the entry points only.
nitpicky = True
nitpick_ignore_regex = [
  (r"py:.*", r"(jax|optax|numpy|collections|dataclasses|flax|argparse)(\..*)?"),
  (r"py:class", r"(Array|ExampleLossFn)"),
  (r"py:.*", r"((optax_ls|train|models)(\.\w+)*\.)?_\w+(\.\w+)*"),
]


def _harness_names() -> list[str]:
  """The public names of the harness's modules, short and qualified (see nitpicky above)."""
  import importlib
  import pkgutil

  names = []
  for package in ("train", "models"):
    root = importlib.import_module(package)
    modules = [root] + [importlib.import_module(f"{package}.{m.name}")
                        for m in pkgutil.iter_modules(root.__path__) if m.name != "__main__"]
    for module in modules:
      for name in vars(module):
        if not name.startswith("_"):
          names += [name, f"{module.__name__}.{name}"]
  return sorted(set(names))


nitpick_ignore_regex += [(r"py:.*", r"(" + "|".join(_harness_names()) + r")")]

# autodoc: the public API in source order, type hints in the parameter lists.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autosummary_generate = False  # the API index links to the entries on the method pages

# napoleon: the docstrings are Google style. ``Attributes`` of the state NamedTuples become
# field lists (``:ivar:``), so that a field is not documented twice when a class also lists
# its members.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_use_rtype = False

extlinks = {
  "repo": (REPOSITORY + "/blob/main/%s", "%s"),
}

html_theme = "alabaster"
html_title = f"optax_ls {release}"
html_theme_options = {
  "description": "Stochastic line searches as Optax transformations",
  "github_button": False,
  "fixed_sidebar": True,
  "page_width": "1100px",
  "sidebar_width": "240px",
  "show_relbars": True,
  "extra_nav_links": {"Repository": REPOSITORY},
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
html_static_path: list[str] = []
html_show_sourcelink = False
