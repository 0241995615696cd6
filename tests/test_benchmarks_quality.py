"""benchmarks/quality.py: the runs, the JSON, the tables, the tuning, the claims, the splits.

The expected values are computed here independently of the script (NumPy
statistics of synthetic results, the numbers of updates from the data sizes).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from benchmarks import quality, quality_lm
from train import data
from train.config import SHARED_DATA, get_config
from train.optimizers import OPTIMIZERS, OptimizerConfig


def test_the_default_methods_are_the_optax_ls_line_searches():
  assert set(quality.LINE_SEARCHES) | set(quality.BASELINES) == set(OPTIMIZERS)
  assert {"sls", "salsa", "sa_sls", "l_sls", "tlr", "pal", "labpal_sgd", "pls"} <= set(
      quality.LINE_SEARCHES)
  assert not {"sgd", "adam"} & set(quality.LINE_SEARCHES)


def test_build_runs_has_distinct_labels_and_no_duplicate_tlr():
  runs = quality.build_runs(["sls", "tlr"], [0.1, 0.01], [1e-3], [1e-3, 1e-2, 1e-1], 1000)
  labels = [r.label for r in runs]
  assert len(set(labels)) == len(labels)
  assert [r.group for r in runs].count("tlr_init") == 2  # 1e-1 is tlr's default: the "tlr" run
  assert {r.optimizer.kwargs["init_learning_rate"] for r in runs if r.group == "tlr_init"} == {
      1e-3, 1e-2}
  sgd = [r.optimizer for r in runs if r.group == "sgd"]
  assert all(o.momentum == 0.9 and o.schedule == "step" for o in sgd)
  (adam,) = [r.optimizer for r in runs if r.group == "adam"]
  assert adam.schedule == "cosine" and adam.warmup_steps == 50  # 5% of 1000 updates
  # Without the default tlr run, every initial rate gets its own run.
  runs = quality.build_runs(["sls"], [], [], [1e-3, 1e-1], 10)
  assert [r.label for r in runs] == ["sls", "tlr init=0.001", "tlr init=0.1"]


def test_build_runs_appends_constant_adam_schedule_free_adamw_and_the_peers():
  runs = quality.build_runs(["sls", "tlr"], [0.1], [1e-3], [1e-3], 1000,
                            adam_const_grid=[3e-3, 3e-4], schedule_free_grid=[1e-2],
                            peers=["prodigy", "dog"])
  # The groups of the older protocol first, in their order, then the three new groups.
  assert [(r.label, r.group) for r in runs] == [
      ("sls", "line_search"), ("tlr", "line_search"), ("sgd lr=0.1", "sgd"),
      ("adam lr=0.001", "adam"), ("tlr init=0.001", "tlr_init"),
      ("adam const lr=0.003", "adam_const"), ("adam const lr=0.0003", "adam_const"),
      ("schedule_free_adamw lr=0.01", "schedule_free"), ("prodigy", "peer"), ("dog", "peer")]
  by_label = {r.label: r.optimizer for r in runs}
  # Constant Adam: no schedule, no warm-up.
  assert by_label["adam const lr=0.003"] == OptimizerConfig("adam", learning_rate=3e-3)
  assert by_label["adam const lr=0.0003"].schedule == "constant"
  assert by_label["adam const lr=0.0003"].warmup_steps == 0
  # Schedule-free AdamW: Adam's 5% warm-up (50 of 1000 updates), no weight decay.
  assert by_label["schedule_free_adamw lr=0.01"] == OptimizerConfig(
      "schedule_free_adamw", learning_rate=1e-2, warmup_steps=50)
  assert by_label["prodigy"] == OptimizerConfig("prodigy")
  assert by_label["dog"] == OptimizerConfig("dog")
  # Without the new arguments: the older protocol's runs, unchanged.
  old = quality.build_runs(["sls", "tlr"], [0.1], [1e-3], [1e-3], 1000)
  assert old == runs[:5]


def test_steadiness_matches_numpy():
  rng = np.random.default_rng(0)
  rates = list(np.exp(rng.normal(size=50)))
  rates[20] = 0.0  # a call without a step (LABPAL's measuring calls): ignored
  kept = np.asarray([r for r in rates[10:] if r > 0])
  s = quality.steadiness(rates, skip=10)
  assert s["tv"] == pytest.approx(np.mean(np.abs(np.diff(np.log(kept)))))
  assert s["cv"] == pytest.approx(np.std(kept) / np.mean(kept))
  assert quality.steadiness([1.0, 2.0, 4.0, 8.0], skip=0)["tv"] == pytest.approx(math.log(2))
  assert quality.steadiness([0.5, 0.5, 0.5], skip=0) == {"tv": 0.0, "cv": 0.0}
  assert quality.steadiness([1.0], skip=0) == {"tv": None, "cv": None}


def _result(label, group, seed, acc, *, lr=None, method=None, kwargs=None, tv=0.1, cv=0.1,
            final=0.1):
  return {
      "label": label, "group": group, "method": method or label.split()[0], "seed": seed,
      "optimizer": {"learning_rate": lr, "kwargs": kwargs or {}},
      "val_accuracy": acc, "train_loss": 1.0 - acc, "wall_s": 1.0, "evals_per_step": 1.0,
      "final_step_size": final, "steadiness": {"tv": tv, "cv": cv}, "diverged": False,
  }


def test_tuning_picks_the_best_mean_over_seeds_and_flags_the_grid_edge():
  accs = {0.3: [0.90, 0.10, 0.91], 0.1: [0.88, 0.89, 0.90], 0.03: [0.80, 0.81, 0.82]}
  results = [_result(f"sgd lr={lr:g}", "sgd", seed, a, lr=lr)
             for lr, seeds in accs.items() for seed, a in enumerate(seeds)]
  summary = quality.summarise(results)
  best = quality.tuned(summary, "sgd")
  # 0.3 has the best seed but a diverged one: the best mean is 0.1's, inside the grid.
  assert best["learning_rate"] == 0.1 and not best["at_edge"]
  assert best["val_accuracy"]["mean"] == pytest.approx(np.mean(accs[0.1]))
  assert best["val_accuracy"]["std"] == pytest.approx(np.std(accs[0.1], ddof=1))
  results = [r for r in results if r["optimizer"]["learning_rate"] != 0.3]
  assert quality.tuned(quality.summarise(results), "sgd")["at_edge"]
  assert quality.tuned(summary, "adam") is None


def test_claims_verdicts_follow_the_numbers():
  results = [_result("sgd lr=0.1", "sgd", s, 0.90, lr=0.1) for s in range(2)]
  results += [_result("sgd lr=0.01", "sgd", s, 0.50, lr=0.01) for s in range(2)]
  results += [_result("sls", "line_search", s, 0.895, tv=0.05, cv=0.3) for s in range(2)]
  results += [_result("salsa", "line_search", s, 0.85, tv=0.01, cv=0.1) for s in range(2)]
  results += [_result("sa_sls", "line_search", s, 0.893) for s in range(2)]
  results += [_result("l_sls", "line_search", s, 0.894) for s in range(2)]
  results += [_result("tlr", "line_search", s, 0.896, final=0.2) for s in range(2)]
  results += [_result("tlr init=0.001", "tlr_init", s, 0.70, method="tlr",
                      kwargs={"init_learning_rate": 1e-3}, final=0.01) for s in range(2)]
  verdicts = {c["claim"].split()[0]: c for c in quality.claims(quality.summarise(results), 5)}
  assert verdicts["SaLSa's"]["verdict"] == "holds"
  within = verdicts["the"]
  assert within["verdict"] == "mixed" and "salsa (85.00%)" in within["detail"]
  assert verdicts["sa-SLS"]["verdict"] == "does not hold" and "-0.10 points" in verdicts[
      "sa-SLS"]["detail"]
  assert verdicts["TLR"]["verdict"] == "does not hold"
  assert "accuracy range 19.60 points" in verdicts["TLR"]["detail"]
  # Final rates within a factor 100**0.25 of each other: converged, though the accuracies differ.
  for r in results:
    if r["label"] == "tlr init=0.001":
      r["final_step_size"] = 0.2 / 3.0
  # SLS steadier than SaLSa in one seed: the claim does not hold in every seed.
  next(r for r in results if r["label"] == "sls")["steadiness"]["tv"] = 0.001
  verdicts = {c["claim"].split()[0]: c for c in quality.claims(quality.summarise(results), 5)}
  assert verdicts["SaLSa's"]["verdict"] == "does not hold"
  assert verdicts["TLR"]["verdict"] == "mixed"


def test_the_cost_estimate_extrapolates_the_measured_throughput():
  runs = [("sls", "line_search", 100.0, 5.0), ("sgd lr=0.1", "sgd", 200.0, 2.5),
          ("adam lr=0.001", "adam", 200.0, 2.5)]
  payload = {"settings": {"steps_per_epoch": 10, "batch_size": 10, "epochs": 1},
             "results": [{**_result(label, group, 0, 0.9), "images_per_s": rate, "wall_s": wall}
                         for label, group, rate, wall in runs]}
  # sls: 1 s per epoch + 4 s overhead; sgd and adam: 0.5 s per epoch + 2 s.
  searches = len(quality.LINE_SEARCHES) + len(quality.TLR_INITS) - 1  # all at sls's cost
  # Constant Adam, schedule-free AdamW and the peers, not measured: at the measured baselines'.
  baselines = (len(quality.SGD_GRID) + len(quality.ADAM_GRID) + len(quality.ADAM_CONST_GRID)
               + len(quality_lm.SCHEDULE_FREE_GRID) + len(quality_lm.PEERS))
  expected = 3 * (searches * (4 + 10 * 1.0) + baselines * (2 + 10 * 0.5))
  assert quality.estimate_seconds(payload, epochs=10, seeds=3) == pytest.approx(expected)
  # A measured peer: 4 s per epoch + 1 s for both peers; the unmeasured baselines at the mean
  # of the three measured families, (2 + 2 + 1) / 3 s + (0.5 + 0.5 + 4) / 3 s per epoch.
  payload["results"].append({**_result("dog", "peer", 0, 0.9), "images_per_s": 25.0,
                             "wall_s": 5.0})
  unmeasured = len(quality.ADAM_CONST_GRID) + len(quality_lm.SCHEDULE_FREE_GRID)
  expected = 3 * (searches * (4 + 10 * 1.0)
                  + (len(quality.SGD_GRID) + len(quality.ADAM_GRID)) * (2 + 10 * 0.5)
                  + len(quality_lm.PEERS) * (1 + 10 * 4.0) + unmeasured * (5 / 3 + 10 * 5 / 3))
  assert quality.estimate_seconds(payload, epochs=10, seeds=3) == pytest.approx(expected)


def _diverged(label, group, seed, *, lr=None, method=None):
  return {**_result(label, group, seed, 0.0, lr=lr, method=method), "val_accuracy": None,
          "train_loss": None, "diverged": True}


def _curve(result):
  """``result`` with the step-size curve the figures draw for a line search."""
  return {**result, "curve": {"step": [1, 2, 3], "step_size": [0.1, 0.2, None]}}


def _payload(results, seeds=(0, 1)):
  settings = {"suite": "mnist", "full": False, "model": "mlp", "dataset": "npz:/d/mnist.npz",
              "num_train": 90, "num_val": 10, "batch_size": 10, "epochs": 3,
              "steps_per_epoch": 9, "seeds": list(seeds)}
  return {"date": "d", "device": "cpu", "command": "c", "settings": settings,
          "partial_note": "", "results": results}


def _rows(text):
  """The main table's rows by their first cell."""
  table = text.split("\n\n")[1].splitlines()[2:]
  return {row.split(" | ")[0][2:]: row for row in table}


def test_the_table_has_every_tuned_group_and_the_peers_against_the_best_tuned(tmp_path):
  accs = {  # label, group, lr: the accuracies of seeds 0 and 1
      ("sls", "line_search", None): (0.89, 0.91),
      ("prodigy", "peer", None): (0.87, 0.89),
      ("sgd lr=0.1", "sgd", 0.1): (0.90, 0.92),
      ("sgd lr=0.01", "sgd", 0.01): (0.85, 0.85),
      ("adam lr=0.001", "adam", 1e-3): (0.92, 0.92),
      ("adam lr=0.0001", "adam", 1e-4): (0.80, 0.80),
      ("adam const lr=0.003", "adam_const", 3e-3): (0.93, 0.93),
      ("adam const lr=0.001", "adam_const", 1e-3): (0.935, 0.945),
      ("adam const lr=0.0003", "adam_const", 3e-4): (0.90, 0.90),
      # Schedule-free AdamW is the best of all, but not a reference of "vs best tuned".
      ("schedule_free_adamw lr=0.01", "schedule_free", 1e-2): (0.95, 0.95),
      ("schedule_free_adamw lr=0.003", "schedule_free", 3e-3): (0.90, 0.90),
  }
  results = [_result(label, group, seed, acc, lr=lr)
             for (label, group, lr), pair in accs.items() for seed, acc in enumerate(pair)]
  results = [_curve(r) if r["group"] == "line_search" else r for r in results]
  results += [_diverged("dog", "peer", seed) for seed in (0, 1)]
  payload = _payload(results)
  text = quality.markdown(payload)
  rows = _rows(text)
  assert list(rows) == ["sls", "prodigy", "dog", "SGD", "Adam, warm-up + cosine",
                        "Adam, constant", "schedule-free AdamW"]
  # vs best SGD: against sgd lr=0.1 (91%); vs best tuned: against adam const lr=0.001 (94%).
  assert rows["sls"].startswith("| sls | defaults | 90.00 ± 1.41 | 89.00-91.00 | -1.00 | -4.00 |")
  assert rows["prodigy"].startswith("| prodigy | parameter-free, defaults | 88.00 ± 1.41 | "
                                    "87.00-89.00 | -3.00 | -6.00 |")
  assert rows["dog"].startswith("| dog | parameter-free, defaults (2 diverged) | - | --- | - | - |")
  assert rows["SGD"].startswith("| SGD | tuned: lr=0.1 (grid edge) | 91.00 ± 1.41 | 90.00-92.00 | "
                                "+0.00 | -3.00 |")
  assert rows["Adam, warm-up + cosine"].startswith(
      "| Adam, warm-up + cosine | tuned: lr=0.001 (grid edge) | 92.00 ± 0.00 | 92.00-92.00 | "
      "+1.00 | -2.00 |")
  assert rows["Adam, constant"].startswith(
      "| Adam, constant | tuned: lr=0.001 | 94.00 ± 0.71 | 93.50-94.50 | +3.00 | +0.00 |")
  assert rows["schedule-free AdamW"].startswith(
      "| schedule-free AdamW | tuned: lr=0.01 (grid edge) | 95.00 ± 0.00 | 95.00-95.00 | +4.00 | "
      "+1.00 |")
  assert "vs best tuned: against Adam, constant (adam const lr=0.001, 94.00 ± 0.71%)" in text
  # The grid table lists every point of the four grids, the picked ones in bold.
  grid = [line for line in text.splitlines() if line.startswith(
      ("| sgd |", "| adam |", "| adam_const |", "| schedule_free |"))]
  assert [" | ".join(line.split(" | ")[:2]) for line in grid] == [
      "| sgd | **0.1**", "| sgd | 0.01", "| adam | **0.001**", "| adam | 0.0001",
      "| adam_const | 0.003", "| adam_const | **0.001**", "| adam_const | 0.0003",
      "| schedule_free | **0.01**", "| schedule_free | 0.003"]
  # The claim is still about tuned SGD.
  (claim,) = [c for c in quality.claims(quality.summarise(results), 3)
              if "tuned SGD" in c["claim"]]
  assert "tuned SGD (sgd lr=0.1) 91.00 ± 1.41%" in claim["detail"]
  paths = quality.plot(payload, str(tmp_path / "q"))
  assert [os.path.basename(p) for p in paths] == ["q_accuracy.png", "q_step_sizes.png"]
  assert all(os.path.getsize(p) > 0 for p in paths)


def test_a_payload_with_some_groups_only_renders(tmp_path):
  # Peers and schedule-free AdamW only, one of its points diverged: no SGD, no Adam, no line
  # search, so neither "vs" column has a reference.
  results = [_result("prodigy", "peer", s, 0.88) for s in (0, 1)]
  results += [_result("schedule_free_adamw lr=0.003", "schedule_free", s, 0.9, lr=3e-3)
              for s in (0, 1)]
  results += [_diverged("schedule_free_adamw lr=0.01", "schedule_free", s, lr=1e-2)
              for s in (0, 1)]
  text = quality.markdown(_payload(results))
  rows = _rows(text)
  assert list(rows) == ["prodigy", "schedule-free AdamW"]
  assert rows["prodigy"].startswith(
      "| prodigy | parameter-free, defaults | 88.00 ± 0.00 | 88.00-88.00 | - | - |")
  assert rows["schedule-free AdamW"].startswith(
      "| schedule-free AdamW | tuned: lr=0.003 (grid edge) | 90.00 ± 0.00 |")
  assert "vs best tuned:" not in text and "| schedule_free | 0.01 | - | - (2 diverged) |" in text
  paths = quality.plot(_payload(results), str(tmp_path / "some"))
  assert [os.path.basename(p) for p in paths] == ["some_accuracy.png"]
  # Adam constant alone is the reference of "vs best tuned"; a group whose every run diverged
  # has no tuned row, and a figure of diverged runs only still draws.
  results = [_result("adam const lr=0.001", "adam_const", s, 0.9, lr=1e-3) for s in (0, 1)]
  results += [_result("prodigy", "peer", s, 0.8) for s in (0, 1)]
  results += [_diverged("sgd lr=1", "sgd", s, lr=1.0) for s in (0, 1)]
  rows = _rows(quality.markdown(_payload(results)))
  assert list(rows) == ["prodigy", "Adam, constant"]
  assert "| - | -10.00 |" in rows["prodigy"] and "| - | +0.00 |" in rows["Adam, constant"]
  assert quality.plot(_payload([_diverged("dog", "peer", 0)]), str(tmp_path / "none"))


def _old_payload():
  """A result file of the protocol before constant Adam, schedule-free AdamW and the peers."""
  settings = {"suite": "mnist", "full": False, "epochs": 20, "seeds": [0, 1], "methods": ["sls"],
              "sgd_grid": [0.1], "sgd_momentum": 0.9, "adam_grid": [0.001],
              "adam_warmup_fraction": 0.05, "tlr_inits": []}
  results = [_result(label, group, seed, 0.9, lr=lr)
             for label, group, lr in (("sls", "line_search", None), ("sgd lr=0.1", "sgd", 0.1),
                                      ("adam lr=0.001", "adam", 1e-3))
             for seed in (0, 1)]
  return {"settings": settings, "results": results}


def test_resume_keeps_the_runs_of_a_file_without_the_new_groups(tmp_path):
  old = _old_payload()
  path = tmp_path / "old.json"
  path.write_text(json.dumps(old))
  runs = quality.build_runs(["sls"], [0.1], [1e-3], [], 100, adam_const_grid=[1e-3],
                            schedule_free_grid=[3e-3], peers=["prodigy", "dog"])
  labels = {r.label for r in runs}
  settings = {**old["settings"], "adam_const_grid": [1e-3], "schedule_free_grid": [3e-3],
              "peers": ["prodigy", "dog"]}
  kept = quality.resumed_results(str(path), settings, quality._SELECTION, labels, [0, 1])
  assert kept == old["results"]
  # Only the new groups' runs are left to run.
  done = {(r["label"], r["seed"]) for r in kept}
  todo = [(r.label, seed) for seed in (0, 1) for r in runs if (r.label, seed) not in done]
  assert todo == [(label, seed) for seed in (0, 1) for label in (
      "adam const lr=0.001", "schedule_free_adamw lr=0.003", "prodigy", "dog")]
  # The other seeds are dropped, and a setting of what a run does still has to match.
  assert quality.resumed_results(str(path), {**settings, "seeds": [1]}, quality._SELECTION,
                                 labels, [1]) == [r for r in old["results"] if r["seed"] == 1]
  assert quality.resumed_results(str(path), {**settings, "epochs": 5}, quality._SELECTION,
                                 labels, [0, 1]) == []
  # The new settings choose runs: a file written with them resumes with other values too.
  path.write_text(json.dumps({**old, "settings": settings}))
  assert quality.resumed_results(str(path), {**settings, "peers": [], "adam_const_grid": [3e-4]},
                                 quality._SELECTION, labels, [0, 1]) == old["results"]


def test_peers_must_be_known_and_not_line_searches_too(tmp_path, capsys):
  for peers, message in (("prodigy,nope", "unknown ['nope']"), ("sls", "also in --methods"),
                         ("dog,dog", "repeated")):
    with pytest.raises(SystemExit) as exit_info:
      quality.main(["--suite", "digits", "--methods", "sls", "--peers", peers,
                    "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_main_on_digits_writes_the_json_the_table_and_the_figures(tmp_path):
  common = ["--suite", "digits", "--seeds", "0", "--epochs", "1", "--sgd-grid", "0.1", "0.01",
            "--adam-grid", "1e-3", "--tlr-inits", "--adam-const-grid", "1e-3",
            "--schedule-free-grid", "3e-3", "--out", str(tmp_path)]
  new_groups = ["adam const lr=0.001", "schedule_free_adamw lr=0.003", "prodigy"]
  first = quality.main([*common, "--methods", "sls", "--peers", "prodigy"])
  assert [r["label"] for r in first["results"]] == [
      "sls", "sgd lr=0.1", "sgd lr=0.01", "adam lr=0.001", *new_groups]
  payload = quality.main([*common, "--methods", "sls,salsa", "--peers", "prodigy", "--resume"])
  path = tmp_path / "quality_digits.json"
  assert json.loads(path.read_text()) == {k: payload[k] for k in payload
                                           if k not in ("markdown", "figures")}
  labels = [r["label"] for r in payload["results"]]
  assert sorted(labels) == sorted(["sls", "salsa", "sgd lr=0.1", "sgd lr=0.01", "adam lr=0.001",
                                   *new_groups])
  assert {k: payload["settings"][k] for k in ("adam_const_grid", "schedule_free_grid",
                                              "peers")} == {
      "adam_const_grid": [1e-3], "schedule_free_grid": [3e-3], "peers": ["prodigy"]}
  # --resume kept the finished runs as they were.
  assert [r for r in payload["results"] if r["label"] == "sls"] == [first["results"][0]]
  train, val, _ = data.load("digits", seed=0, test_fraction=0.2)
  steps = len(train) // 32
  settings = payload["settings"]
  assert (settings["num_train"], settings["num_val"], settings["steps_per_epoch"]) == (
      len(train), len(val), steps)
  for r in payload["results"]:
    assert r["seed"] == 0 and len(r["epochs"]) == 1 and r["wall_s"] > 0
    assert 0.0 <= r["val_accuracy"] <= 1.0 and r["train_loss"] > 0 and not r["diverged"]
    # Accuracies are counts over the validation split.
    assert r["val_accuracy"] * len(val) == pytest.approx(round(r["val_accuracy"] * len(val)))
    assert r["curve"]["step"] == list(range(1, steps + 1))
    rates = r["curve"]["step_size"]
    if r["group"] == "schedule_free":  # no learning_rate in its state
      assert rates == [None] * steps and r["final_step_size"] is None
      continue
    if r["group"] == "peer":  # their own steps (Prodigy's d from 1e-6, DoG's eta)
      assert all(s is not None and s > 0 for s in rates) and r["final_step_size"] > 0
      continue
    if r["group"] == "adam":  # the linear warm-up starts from 0
      assert rates[0] == 0.0
      rates = rates[1:]
    assert all(s is not None and s > 0 for s in rates)
  by_label = {r["label"]: r for r in payload["results"]}
  assert by_label["sls"]["evals_per_step"] >= 1.0
  assert by_label["sgd lr=0.1"]["evals_per_step"] is None
  assert by_label["sgd lr=0.1"]["curve"]["step_size"][0] == pytest.approx(0.1)
  assert by_label["adam const lr=0.001"]["curve"]["step_size"] == [0.001] * steps
  assert by_label["schedule_free_adamw lr=0.003"]["optimizer"]["warmup_steps"] == max(
      1, round(0.05 * steps))
  # SLS resets init_step_size=1 to 2**(1/steps per epoch), then backtracks by 0.9: its first
  # step is 2**(1/steps) * 0.9**k.
  k = (math.log(by_label["sls"]["curve"]["step_size"][0]) - math.log(2) / steps) / math.log(0.9)
  assert k == pytest.approx(round(k), abs=0.01) and round(k) >= 0  # curves keep 4 digits
  table = (tmp_path / "quality_digits.md").read_text()
  best_sgd = max(("sgd lr=0.1", "sgd lr=0.01"), key=lambda k: by_label[k]["val_accuracy"])
  best = max(by_label[k]["val_accuracy"] for k in (best_sgd, "adam lr=0.001",
                                                   "adam const lr=0.001"))
  salsa = 100 * by_label["salsa"]["val_accuracy"]
  delta = salsa - 100 * by_label[best_sgd]["val_accuracy"]
  delta_best = salsa - 100 * best
  assert (f"| salsa | defaults | {salsa:.2f} ± 0.00 | {salsa:.2f}-{salsa:.2f} | {delta:+.2f} | "
          f"{delta_best:+.2f} |") in table
  assert f"| SGD | tuned: lr={best_sgd[7:]} (grid edge) |" in table
  # Grids of one point.
  assert "| Adam, warm-up + cosine | not tuned: lr=0.001 |" in table
  assert "| Adam, constant | not tuned: lr=0.001 |" in table
  assert "| schedule-free AdamW | not tuned: lr=0.003 |" in table
  assert "| prodigy | parameter-free, defaults |" in table
  assert "| adam_const | **0.001** |" in table and "| schedule_free | **0.003** |" in table
  assert "Claims checked" in table
  assert [os.path.basename(p) for p in payload["figures"]] == [
      "quality_digits_accuracy.png", "quality_digits_step_sizes.png",
      "quality_digits_salsa_vs_sls.png"]
  assert all(os.path.getsize(p) > 0 for p in payload["figures"])
  # --plot redraws from the JSON alone.
  redrawn = quality.main(["--plot", str(path), "--png", str(tmp_path / "again")])
  assert redrawn["results"] == payload["results"] and os.path.exists(tmp_path / "again.md")
  # A partial run still checks its claims, marked as checked on that run only.
  partial = json.loads(path.read_text()) | {"partial_note": "two line searches only."}
  (tmp_path / "partial.json").write_text(json.dumps(partial))
  quality.main(["--plot", str(tmp_path / "partial.json")])
  text = (tmp_path / "partial.md").read_text()
  assert "**Partial**: two line searches only." in text and "Estimated wall time" in text
  assert "Claims checked on this partial run only" in text and "Claims checked:" not in text


def test_a_missing_data_file_is_a_usage_error(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(quality, "SHARED_DATA", str(tmp_path))
  with pytest.raises(SystemExit) as exit_info:
    quality.main(["--suite", "mnist", "--out", str(tmp_path)])
  assert exit_info.value.code == 2
  assert "OPTAX_LS_DATA_DIR" in capsys.readouterr().err


def test_full_holds_out_the_validation_split_of_the_tfds_training_split():
  from tests.tfds_mock import mock_tfds

  config = dataclasses.replace(get_config("cifar10_resnet20_subset"), dataset="cifar10",
                               test_fraction=0.1, seed=3)
  with mock_tfds(num_examples=40):
    train, val, spec = quality.load_splits(config)
    assert (len(train), len(val)) == (36, 4) and (spec.num_train, spec.num_test) == (36, 4)
    assert not set(train.indices) & set(val.indices)
    assert sorted([*train.indices, *val.indices]) == list(range(40))
    x, y = val.get(np.arange(4))
    x_ref, y_ref = train.source.get(val.indices)
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)


@pytest.mark.slow
def test_full_runs_the_same_code_on_a_tfds_data_set(tmp_path):
  from tests.tfds_mock import mock_tfds

  with mock_tfds(num_examples=160):
    payload = quality.main(["--suite", "mnist", "--full", "--seeds", "0", "--epochs", "1",
                            "--methods", "sls", "--sgd-grid", "--adam-grid", "--tlr-inits",
                            "--adam-const-grid", "--schedule-free-grid", "--peers", "",
                            "--out", str(tmp_path)])
  settings = payload["settings"]
  assert settings["full"] and settings["dataset"] == "mnist"
  assert (settings["num_train"], settings["num_val"], settings["steps_per_epoch"]) == (144, 16, 1)
  assert [r["label"] for r in payload["results"]] == ["sls"]
  assert (tmp_path / "quality_mnist_full.json").exists()


@pytest.mark.slow
def test_the_mnist_suite_runs_on_the_real_subset(tmp_path):
  if not os.path.exists(os.path.join(SHARED_DATA, "mnist_subset.npz")):
    pytest.skip(f"{SHARED_DATA}/mnist_subset.npz not found (set OPTAX_LS_DATA_DIR)")
  payload = quality.main(["--suite", "mnist", "--seeds", "0", "--epochs", "1", "--methods",
                          "sls,salsa", "--sgd-grid", "0.1", "--adam-grid", "--tlr-inits",
                          "--adam-const-grid", "--schedule-free-grid", "--peers", "",
                          "--out", str(tmp_path)])
  assert payload["settings"]["num_train"] + payload["settings"]["num_val"] == 8000
  assert all(r["val_accuracy"] > 0.8 for r in payload["results"])


@pytest.mark.slow
def test_the_committed_mnist_results_resume_with_the_new_groups(tmp_path):
  source = os.path.join(quality.RESULTS, "quality_mnist.json")
  if not os.path.exists(os.path.join(SHARED_DATA, "mnist_subset.npz")) or not os.path.exists(
      source):
    pytest.skip("needs mnist_subset.npz (OPTAX_LS_DATA_DIR) and benchmarks/results/"
                "quality_mnist.json")
  with open(source) as f:
    old = json.load(f)
  # As a file of the protocol before constant Adam, schedule-free AdamW and the peers existed:
  # without their settings and runs.
  for key in ("adam_const_grid", "schedule_free_grid", "peers"):
    old["settings"].pop(key, None)
  old["results"] = [r for r in old["results"]
                    if r["group"] in ("line_search", "sgd", "adam", "tlr_init")]
  # The data file's path as this checkout's harness writes it (the file records its own).
  old["settings"]["dataset"] = get_config("mnist_subset_mlp").dataset
  path = tmp_path / "quality_mnist.json"
  path.write_text(json.dumps(old))
  settings = old["settings"]
  payload = quality.main(["--suite", "mnist", "--seeds", "0", "--methods",
                          ",".join(settings["methods"]), "--sgd-grid",
                          *map(str, settings["sgd_grid"]), "--adam-grid",
                          *map(str, settings["adam_grid"]), "--tlr-inits",
                          *map(str, settings["tlr_inits"]), "--adam-const-grid",
                          "--schedule-free-grid", "--peers", "dog", "--resume", "--json",
                          str(path)])
  kept = [r for r in old["results"] if r["seed"] == 0]
  # Every line search, every grid point, TLR's initial rates other than its default.
  assert len(kept) == (len(settings["methods"]) + len(settings["sgd_grid"])
                       + len(settings["adam_grid"]) + len(settings["tlr_inits"]) - 1)
  assert payload["results"][:-1] == kept
  assert payload["results"][-1]["label"] == "dog" and payload["results"][-1]["group"] == "peer"


# The lm suite (benchmarks/quality_lm.py).


def _lm_result(label, group, seed, bpc, lr=None, method=None):
  optimizer = {"name": method or label.split()[0], "learning_rate": lr or 0.1, "kwargs": {}}
  steps = list(range(1, 11))
  return {"label": label, "group": group, "method": optimizer["name"], "seed": seed,
          "optimizer": optimizer, "val_bpc": bpc, "val_accuracy": 0.3, "train_bpc": bpc + 0.01,
          "diverged": False, "wall_s": 10.0 + seed, "evals_per_step": 1.5 if group ==
          "line_search" else None, "final_step_size": 1e-3,
          "curve": {"step": steps, "step_size": [1e-3] * 10, "loss": [2.0] * 10,
                    "evals": [1.0] * 10}}


def _lm_payload(results, seeds=(0, 1)):
  settings = {"suite": "lm", "dataset": "text:tiny.txt", "model": "gpt_nano", "num_params": 10,
              "batch_size": 32, "context": 64, "steps": 10, "num_val": 5, "seeds": list(seeds)}
  return {"date": "d", "device": "cpu", "command": "c", "settings": settings, "results": results,
          "partial_note": ""}


def test_lm_suite_tunes_by_the_lowest_bits_per_character_and_tabulates(tmp_path):
  from benchmarks import quality_lm

  results = []
  for seed in (0, 1):
    results += [_lm_result("adam_salsa", "line_search", seed, 3.50 + 0.02 * seed),
                _lm_result("prodigy", "peer", seed, 3.60),
                _lm_result("adamw lr=0.001", "adamw", seed, 3.40, lr=1e-3),
                _lm_result("adamw lr=0.003", "adamw", seed, 3.30 + 0.04 * seed, lr=3e-3),
                _lm_result("adamw lr=0.01", "adamw", seed, 3.70, lr=1e-2)]
  summary = quality_lm.summarise(results)
  best = quality_lm.tuned(summary, "adamw")
  assert best["label"] == "adamw lr=0.003" and not best["at_edge"] and best["grid_size"] == 3
  assert best["val_bpc"]["mean"] == pytest.approx(3.32)
  assert best["val_bpc"]["std"] == pytest.approx(np.std([3.30, 3.34], ddof=1))
  text = quality_lm.markdown(_lm_payload(results))
  rows = [line for line in text.splitlines() if line.startswith("| ")]
  # Sorted by validation bits per character: tuned AdamW, adam_salsa, prodigy.
  assert [r.split(" | ")[0] for r in rows[1:4]] == ["| AdamW, warm-up + cosine", "| adam_salsa",
                                                    "| prodigy"]
  assert "+0.190" in rows[2]  # adam_salsa's 3.51 against the tuned 3.32
  assert "within 0.05 bits per character of tuned AdamW" in text and text.strip().endswith(
      "none.")
  paths = quality_lm.plot(_lm_payload(results), str(tmp_path / "lm"))
  assert all(os.path.getsize(p) > 0 for p in paths) and len(paths) == 3


def test_lm_suite_merges_parallel_result_files(tmp_path):
  from benchmarks import quality_lm

  a = _lm_payload([_lm_result("adam_salsa", "line_search", s, 3.5) for s in (0, 1, 2)])
  b = _lm_payload([_lm_result("adamw lr=0.003", "adamw", s, 3.3, lr=3e-3) for s in (0, 2)])
  a["settings"]["adamw_grid"], b["settings"]["adamw_grid"] = [0.003], [0.001, 0.003]
  for name, payload in (("a", a), ("b", b)):
    (tmp_path / f"{name}.json").write_text(json.dumps(payload))
  merged = quality_lm.merge([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
  assert merged["settings"]["seeds"] == [0, 1, 2]
  assert merged["settings"]["adamw_grid"] == [0.001, 0.003]  # the union of the files' grids
  assert [(r["label"], r["seed"]) for r in merged["results"]] == [
      ("adam_salsa", 0), ("adam_salsa", 1), ("adam_salsa", 2), ("adamw lr=0.003", 0),
      ("adamw lr=0.003", 2)]
  b["settings"]["steps"] = 11
  (tmp_path / "b.json").write_text(json.dumps(b))
  with pytest.raises(ValueError, match="different settings"):
    quality_lm.merge([str(tmp_path / "a.json"), str(tmp_path / "b.json")])


def test_lm_suite_draws_the_training_windows_by_seed(tmp_path):
  from benchmarks import quality_lm

  text = "".join(chr(97 + (i * 7) % 26) for i in range(4000))
  (tmp_path / "t.txt").write_text(text)
  config = dataclasses.replace(get_config("shakespeare_char_gpt"), dataset="text:t.txt",
                               data_dir=str(tmp_path), sequence_length=8, batch_size=4)
  train, val, spec = quality_lm.load_splits(config, steps=20)
  assert len(train) == 80 and spec.num_train == 80
  assert len(val) == (400 - 1 - 8) // 8  # the last 10% of the text, in windows of 8
  other, _, _ = quality_lm.load_splits(dataclasses.replace(config, seed=1), steps=20)
  assert not np.array_equal(train.indices, other.indices)
  with pytest.raises(ValueError, match="exceeds"):
    quality_lm.load_splits(config, steps=1000)
