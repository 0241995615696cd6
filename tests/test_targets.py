"""benchmarks/targets.py: the targets of one configuration against tuned baselines and peers."""

from __future__ import annotations

import json

import pytest

from benchmarks import targets


def _run(label: str, group: str, seed: int, score: float, lr: float | None = None,
         key: str = "val_accuracy") -> dict:
  return {"label": label, "group": group, "method": label.split()[0], "seed": seed,
          "optimizer": {"name": label.split()[0], "learning_rate": lr}, key: score,
          "diverged": False}


def _image(recipe=(0.95, 0.96, 0.94), seeds=(0, 1, 2)) -> dict:
  runs = []
  for i, seed in enumerate(seeds):
    runs += [_run("recipe", "line_search", seed, recipe[i]),
             _run("sgd lr=0.1", "sgd", seed, 0.955 + 0.005 * i, 0.1),
             _run("sgd lr=0.03", "sgd", seed, 0.90, 0.03),
             _run("adam lr=0.001", "adam", seed, 0.951 + 0.001 * i, 1e-3),
             _run("prodigy", "peer", seed, 0.94),
             _run("dog", "peer", seed, 0.96)]
  return {"results": runs}


def test_gap_spread_and_peers_against_independent_means():
  r = targets.check(_image(), "recipe", "val_accuracy", ("sgd", "adam"), 0.5)
  # Best tuned: SGD 0.1 (mean 0.960) over Adam (0.952); the recipe's mean 0.950.
  assert r["reference"]["label"] == "sgd lr=0.1"
  assert r["gap"] == pytest.approx(-1.0)
  assert r["within"] is False
  # Spreads: recipe std 0.01, SGD's 0.005.
  assert r["spread_ok"] is False
  assert r["peers"]["prodigy"]["beaten"] is True and r["peers"]["dog"]["beaten"] is False


def test_baselines_are_averaged_over_the_methods_seeds_only():
  payload = _image()
  payload["results"] = [r for r in payload["results"]
                        if not (r["label"] == "recipe" and r["seed"] == 2)]
  r = targets.check(payload, "recipe", "val_accuracy", ("sgd", "adam"), 1.0)
  assert r["seeds"] == [0, 1]
  # SGD 0.1 over seeds 0 and 1: 0.9575; the recipe 0.955.
  assert r["gap"] == pytest.approx(-0.25)
  assert r["within"] is True


def test_a_single_seed_has_no_spread_and_lower_is_better_for_bits():
  runs = [_run("recipe", "line_search", 0, 3.20, key="val_bpc"),
          _run("adamw lr=0.003", "adamw", 0, 3.30, 3e-3, key="val_bpc"),
          _run("adamw lr=0.001", "adamw", 0, 3.40, 1e-3, key="val_bpc"),
          _run("prodigy", "peer", 0, 3.10, key="val_bpc")]
  r = targets.check({"results": runs}, "recipe", "val_bpc", ("adamw",), 0.05)
  assert r["gap"] == pytest.approx(-0.10) and r["within"] is True
  assert r["spread_ok"] is None and r["std"] is None
  assert r["peers"]["prodigy"]["beaten"] is False and "dog" not in r["peers"]


def test_main_writes_a_row_per_workload(tmp_path):
  (tmp_path / "quality_mnist.json").write_text(json.dumps(_image()))
  out = tmp_path / "t.md"
  text = targets.main(["--method", "recipe", "--results", str(tmp_path), "--out", str(out)])
  assert out.read_text() == text
  rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
  assert len(rows) == 3 and sum("not run" in row for row in rows) == 2
  assert "beats Prodigy: 1; DoG: 0 (of 1 run)" in text


def test_more_result_files_join_the_workload_of_their_suite(tmp_path):
  baselines = _image()
  baselines["results"] = [r for r in baselines["results"] if r["label"] != "recipe"]
  (tmp_path / "quality_mnist.json").write_text(json.dumps(baselines))
  variant = {"settings": {"suite": "mnist"},
             "results": [_run("variant", "line_search", s, 0.97) for s in (0, 1, 2)]}
  (tmp_path / "ablation.json").write_text(json.dumps(variant))
  text = targets.main(["--method", "variant", "--results", str(tmp_path), "--more",
                       str(tmp_path / "ablation.json")])
  (mnist,) = [line for line in text.splitlines() if line.startswith("| MNIST")]
  # 0.97 against SGD 0.1's 0.960: +1.00 points; beats Prodigy (0.94) and DoG (0.96).
  assert "97.00 ± 0.00" in mnist and "+1.00 (0.5)" in mnist
  assert "beats Prodigy: 1; DoG: 1 (of 1 run)" in text
