"""Test configuration: eight fake CPU devices for the data-parallel tests.

XLA reads ``XLA_FLAGS`` once, when JAX starts its CPU backend, so the flag is
set here, before any test module imports JAX. Everything that is not
explicitly sharded still runs on the first device.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

# Property tests draw their examples deterministically, so that every run
# checks the same examples (CI never fails on an example no earlier run saw).
from hypothesis import settings  # noqa: E402

settings.register_profile("optax_ls", derandomize=True, deadline=None)
settings.load_profile("optax_ls")

# Doctests are collected from every module of optax_ls, models and train
# (``--doctest-modules``); a ``__main__`` module would run its command on import.
collect_ignore_glob = ["*/__main__.py"]
