"""Test configuration: eight fake CPU devices for the data-parallel tests, and
cheaper compilation for the whole run.

XLA reads ``XLA_FLAGS`` once, when JAX starts its CPU backend, so the flag is
set here, before any test module imports JAX. Everything that is not
explicitly sharded still runs on the first device.
"""

import os
import shutil
import tempfile


def _add_xla_flag(name: str, value: str) -> None:
  if name not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{name}={value}".strip()


_add_xla_flag("xla_force_host_platform_device_count", "8")
# The tests compile far more than they run (small models, a few steps each):
# LLVM's cheapest code generation takes about 30% off the suite's time. It
# changes no HLO pass, so the programs' arithmetic is the one users run.
_add_xla_flag("xla_backend_optimization_level", "0")

# Many tests compile the same program (one model and method under several
# properties): a compilation cache shared by the run's processes compiles each
# once. The process that starts the run makes an empty one; ``pytest -n``'s
# workers inherit it through the environment, and the starting process removes
# it at the end, so no run depends on an earlier one. A cache directory the
# user sets is used as it is and kept.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _OWN_CACHE = tempfile.mkdtemp(prefix="optax_ls_test_jax_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


def pytest_sessionfinish(session):
  del session
  if _OWN_CACHE is not None:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


# Property tests draw their examples deterministically, so that every run
# checks the same examples (CI never fails on an example no earlier run saw).
from hypothesis import settings  # noqa: E402

settings.register_profile("optax_ls", derandomize=True, deadline=None)
settings.load_profile("optax_ls")

# Doctests are collected from every module of optax_ls, models and train
# (``--doctest-modules``); a ``__main__`` module would run its command on import.
collect_ignore_glob = ["*/__main__.py"]
