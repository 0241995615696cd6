"""benchmarks/memory_compile.py: the peak, the slope, the expected counts, a smoke run.

The expected values are computed independently of the script: the peak from XLA's
fields by hand, the slope of exact lines, the state buffers of each method from its
own ``init``.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import memory_compile as bench
from benchmarks.quality import LINE_SEARCHES
from train.optimizers import OPTIMIZERS

# The components of EXPECTED that are not kept in the optimizer's state.
_TRANSIENT = {"params", "gradient", "trial point", "trial point, then its gradient"}


def test_every_line_search_and_baseline_has_a_row_and_an_expected_count():
  assert set(LINE_SEARCHES) <= set(bench.METHODS) <= set(OPTIMIZERS)
  assert {"sgd", "adam", "optax_backtracking"} <= set(bench.METHODS)
  assert set(bench.METHODS) <= set(bench.EXPECTED)
  for name in bench.METHODS:
    what = bench.EXPECTED[name]
    assert what[:2] == ("params", "gradient") and len(set(what)) == len(what)


def test_the_expected_state_buffers_are_those_of_each_init():
  problem = bench.make_problem(8, 4)
  assert problem.n_params == (784 + 1) * 8 + (8 + 1) * 8 + (8 + 1) * 10
  assert problem.param_bytes == 4 * problem.n_params
  for name in bench.METHODS:
    state = jax.eval_shape(bench.build(name, 4).tx.init, problem.params)
    in_state = [w for w in bench.EXPECTED[name] if w not in _TRANSIENT]
    # Scalars (step sizes, counters, a GP's few observations) are far below a parameter set.
    assert bench.tree_bytes(state) / problem.param_bytes == pytest.approx(
        len(in_state), abs=0.05), name


def test_peak_slope_ratio_and_extra():
  memory = {"argument": 100, "output": 60, "alias": 50, "temp": 30}
  assert bench.peak_bytes(memory) == 140
  params = [10.0, 100.0, 1000.0]
  assert bench.slope(params, [3 * p + 7 for p in params]) == pytest.approx(3.0)
  assert bench.slope([10.0], [5.0]) is None and bench.slope([4.0, 4.0], [1.0, 2.0]) is None
  # Paired within a round: a round where both are slow counts as the others.
  assert bench.paired_ratio([2.0, 4.0, 2.2], [1.0, 2.0, 1.0]) == pytest.approx(2.0)
  assert bench.extra_buffers(4.02, 3) == 1 and bench.extra_buffers(2.96, 3) == 0
  assert bench.extra_buffers(None, 3) is None


def test_memory_of_reads_the_donated_alias():
  x = jax.ShapeDtypeStruct((1000,), jnp.float32)

  def double(v):
    return 2.0 * v

  donated = bench.memory_of(jax.jit(double, donate_argnums=0).lower(x).compile())
  kept = bench.memory_of(jax.jit(double).lower(x).compile())
  assert donated["argument"] == donated["output"] == donated["alias"] == 4000
  assert kept["alias"] == 0 and kept["peak"] >= 8000
  assert donated["peak"] == 4000 + donated["temp"] < kept["peak"]


def test_smoke_run_writes_json_and_tables(tmp_path):
  path = tmp_path / "memory_compile.json"
  payload = bench.main(["--smoke", "--json", str(path)])
  assert json.loads(path.read_text())["results"] == payload["results"]
  table = (tmp_path / "memory_compile.md").read_text()
  assert "| `sls` |" in table and "busy" in table
  rows = {r["method"]: r for r in payload["results"]}
  assert list(rows) == ["sgd", "sls", "optax_backtracking"]
  widths = [str(w) for w in bench.SMOKE["widths"]]
  for row in rows.values():
    donated = row["memory"]["donated"]
    assert sorted(donated["widths"], key=int) == widths
    for m in donated["widths"].values():
      assert m["peak"] == m["argument"] + m["output"] - m["alias"] + m["temp"] > 0
      assert m["alias"] > 0  # params and state donated
    c = row["compile"]
    assert len(c["first_s"]) == len(c["second_s"]) == 1 and c["first_median_s"] > 0
  # SGD holds params and gradient; SLS one trial point more.
  assert rows["sgd"]["measured_buffers"] == 2 and rows["sgd"]["extra_buffers"] == 0
  assert rows["sls"]["measured_buffers"] == 3 and rows["sls"]["extra_buffers"] == 0
  assert rows["optax_backtracking"]["compile"]["second_vs_optax"] == 1.0
  np.testing.assert_allclose([p["param_bytes"] for p in payload["problems"]],
                             [bench.make_problem(int(w), 8).param_bytes for w in widths])
  # --tables rewrites the .md from the JSON alone.
  (tmp_path / "memory_compile.md").unlink()
  assert bench.main(["--tables", str(path)])["results"] == payload["results"]
  assert (tmp_path / "memory_compile.md").read_text() == table
