"""benchmarks/gap_diagnosis.py: references, phase statistics, collapse, diagnosis, outputs.

The payloads are synthetic, in the format of ``benchmarks.quality.summarise_run`` and
``benchmarks.quality_lm.summarise_run``; the expected values are computed here with NumPy
from the curves the tests build. One test reads the real result files when present.

Example:
  python -m pytest -q -p no:cacheprovider tests/test_gap_diagnosis.py
"""

from __future__ import annotations

import doctest
import json
import math
import os

import numpy as np
import pytest

from benchmarks import gap_diagnosis as gd

T = 200
"""Updates per synthetic run: start 1-20, middle 21-160, end 161-200."""
UPDATES = np.arange(1, T + 1)
RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "benchmarks", "results")


def make_run(label: str, group: str, seed: int, step_size, *, method: str | None = None,
             loss=1.0, lr: float = 0.1, schedule: str = "constant", momentum: float = 0.0,
             warmup: int = 0, val: float | None = 0.9, steps=None, lm: bool = False,
             diverged: bool = False) -> dict:
  """One run record: ``step_size`` and ``loss`` are scalars or per-update sequences."""
  steps = list(UPDATES if steps is None else steps)
  sizes = step_size if np.ndim(step_size) else [step_size] * len(steps)
  losses = loss if np.ndim(loss) else [loss] * len(steps)
  name = method or (label.split()[0] if group not in ("line_search", "tlr_init") else label)
  run = {
      "label": label, "group": group, "method": name, "seed": seed,
      "optimizer": {"name": name, "learning_rate": lr, "momentum": momentum,
                    "schedule": schedule, "warmup_steps": warmup, "weight_decay": 0.0,
                    "kwargs": {}},
      "diverged": diverged, "evals_per_step": 1.0,
      "curve": {"step": [int(s) for s in steps],
                "step_size": [None if v is None else float(v) for v in sizes],
                "loss": [None if v is None else float(v) for v in losses]},
  }
  if lm:
    run.update(val_bpc=val, train_bpc=1.0)
  else:
    run.update(val_accuracy=val, train_loss=0.1, epochs=[])
  return run


def image_payload(runs: list[dict], seeds=(0, 1)) -> dict:
  return {"settings": {"suite": "mnist", "model": "mlp", "epochs": 4, "steps_per_epoch": T // 4,
                       "seeds": list(seeds)}, "results": runs}


def lm_payload(runs: list[dict], seeds=(0, 1)) -> dict:
  return {"settings": {"suite": "lm", "model": "gpt_nano", "steps": T, "seeds": list(seeds)},
          "results": runs}


def sgd_grid(seeds=(0, 1), schedule=None, loss=0.8, momentum=0.0) -> list[dict]:
  """Tuned SGD at 0.1 (val 0.93) and a worse point at 0.3 (val 0.5).

  Without momentum by default, so that the logged rate is the effective step.
  """
  rate = 0.1 if schedule is None else schedule
  return [make_run(f"sgd lr={lr:g}", "sgd", seed, rate if lr == 0.1 else lr, lr=lr,
                   momentum=momentum, schedule="step", val=0.93 if lr == 0.1 else 0.5,
                   loss=loss)
          for lr in (0.1, 0.3) for seed in seeds]


def row_of(rows: list[dict], label: str) -> dict:
  (row,) = [r for r in rows if r["label"] == label]
  return row


def test_a_heavy_ball_reference_compares_by_its_effective_step():
  """SGD at 0.1 with momentum 0.9 moves 1.0 per unit gradient: a constant 0.5 is at ratio 0.5."""
  rows = gd.diagnose(image_payload(sgd_grid(momentum=0.9) + [
      make_run("sls", "line_search", seed, 0.5) for seed in (0, 1)]))
  row = row_of(rows, "sls")
  for phase in gd.PHASES:
    assert row["ratio"][phase] == pytest.approx(0.5)
    assert row["reference_step"][phase] == pytest.approx(1.0)


def step_schedule(lr: float) -> np.ndarray:
  """The harness's step schedule: the rate /10 after 50% and again after 75% of the run."""
  return lr * np.where(UPDATES <= T // 2, 1.0, np.where(UPDATES <= 3 * T // 4, 0.1, 0.01))


def phase_geomean(values: np.ndarray, lo: int, hi: int) -> float:
  """The geometric mean of ``values`` over the updates ``lo..hi`` (1-based, inclusive)."""
  return float(np.exp(np.mean(np.log(values[lo - 1:hi]))))


def test_the_module_doctests_pass():
  assert doctest.testmod(gd).failed == 0


def test_phase_bounds_and_total_updates():
  assert gd.phase_bounds(T) == (20, 160)
  assert gd.phase_bounds(96) == (9, 76)
  masks = gd.phase_masks(T)
  assert [int(m.sum()) for m in masks.values()] == [20, 140, 40]
  assert gd.total_updates(image_payload([])) == T
  assert gd.total_updates(lm_payload([])) == T
  run = make_run("sls", "line_search", 0, 0.1, steps=[1, 5, 9])
  assert gd.total_updates({"settings": {}, "results": [run]}) == 9


def test_constant_half_step_gives_ratio_half_in_every_phase():
  runs = [make_run("sls", "line_search", s, 0.05, loss=1.0, val=0.9) for s in (0, 1)]
  rows = gd.diagnose(image_payload(runs + sgd_grid()))
  row = row_of(rows, "sls")
  assert row["reference"]["label"] == "sgd lr=0.1" and row["comparable"]
  for p in gd.PHASES:
    assert row["ratio"][p] == pytest.approx(0.5)
    assert row["step"][p] == pytest.approx(0.05)
    assert row["reference_step"][p] == pytest.approx(0.1)
    assert row["loss_gap"][p] == pytest.approx(0.2)
    assert row["zero"][p] == 0.0
  assert row["val_gap"] == pytest.approx(100 * (0.9 - 0.93))
  assert row["collapse"]["update"] is None
  assert np.allclose(row["ratio_curve"], 0.5)
  text = "; ".join(row["diagnosis"])
  assert "decay" not in text and "below the reference" not in text
  assert "training loss above the reference most in the " in text and "(+0.200 nats)" in text


def test_a_step_schedule_reference_gives_the_phase_geometric_means_and_no_decay():
  ref = step_schedule(0.1)
  runs = sgd_grid(schedule=ref)
  runs += [make_run("sls", "line_search", s, 0.1) for s in (0, 1)]       # never decays
  runs += [make_run("salsa", "line_search", s, ref) for s in (0, 1)]     # follows the schedule
  runs += [make_run("pal", "line_search", s, np.where(UPDATES <= 160, 0.1, 0.02))
           for s in (0, 1)]                                               # decays 5x at the end
  rows = gd.diagnose(image_payload(runs))
  sls = row_of(rows, "sls")
  middle = phase_geomean(ref, 21, 160)
  assert middle == pytest.approx(0.1 * 10 ** (-(50 + 2 * 10) / 140))  # 80 at lr, 50 /10, 10 /100
  assert sls["reference_step"]["start"] == pytest.approx(0.1)
  assert sls["reference_step"]["middle"] == pytest.approx(middle)
  assert sls["reference_step"]["end"] == pytest.approx(0.001)
  assert sls["ratio"]["middle"] == pytest.approx(0.1 / middle)
  assert sls["ratio"]["end"] == pytest.approx(100.0)
  assert any(c.startswith("no decay: end ratio 100x") for c in sls["diagnosis"])
  salsa = row_of(rows, "salsa")
  assert all(salsa["ratio"][p] == pytest.approx(1.0) for p in gd.PHASES)
  assert not any("decay" in c for c in salsa["diagnosis"])
  pal = row_of(rows, "pal")
  assert pal["ratio"]["end"] == pytest.approx(20.0)
  assert any(c.startswith("less decay than the reference: end ratio 20x") for c in
             pal["diagnosis"])
  assert not any(c.startswith("no decay") for c in pal["diagnosis"])


def test_no_decay_needs_a_reference_that_anneals():
  runs = [make_run("sgd lr=0.1", "sgd", s, 0.1, val=0.93) for s in (0, 1)]  # constant SGD
  runs += [make_run("sls", "line_search", s, 0.7) for s in (0, 1)]
  row = row_of(gd.diagnose(image_payload(runs)), "sls")
  assert row["ratio"]["end"] == pytest.approx(7.0)
  assert not any("decay" in c for c in row["diagnosis"])
  assert "steps more than 5x above the reference in the middle (7x), end (7x) phases" in (
      row["diagnosis"])


def test_too_large_early_and_small_steps_are_flagged():
  start = UPDATES <= 20
  runs = sgd_grid(loss=1.0)
  runs += [make_run("tlr", "line_search", s, np.where(start, 0.5, 0.01),
                    loss=np.where(start, 2.0, 1.0)) for s in (0, 1)]
  row = row_of(gd.diagnose(image_payload(runs)), "tlr")
  assert row["ratio"]["start"] == pytest.approx(5.0)
  assert row["ratio"]["middle"] == pytest.approx(0.1)
  assert row["loss_gap"]["start"] == pytest.approx(1.0)
  assert row["loss_gap"]["middle"] == pytest.approx(0.0)
  text = "; ".join(row["diagnosis"])
  assert "too large early: start ratio 5x, start loss +1.000 nats" in text
  assert "steps more than 5x below the reference in the middle (10x), end (10x) phases" in text
  assert "collapse at update 21" in text  # 0.5 -> 0.01 after update 20


def test_adam_direction_methods_get_the_adam_type_reference():
  runs = sgd_grid()
  warm = np.where(UPDATES == 1, 0.0, 1e-3)  # a warm-up's rate 0 at update 1: left out
  runs += [make_run("adam lr=0.001", "adam", s, warm, lr=1e-3, schedule="cosine", warmup=10,
                    val=0.94) for s in (0, 1)]
  runs += [make_run("adam const lr=0.003", "adam_const", s, 3e-3, lr=3e-3, method="adam",
                    val=0.95) for s in (0, 1)]
  for name in ("adam_sls", "adam_salsa", "adam_salsa_cooldown", "sls", "a_sls"):
    runs += [make_run(name, "line_search", s, 2e-3) for s in (0, 1)]
  runs += [make_run("tlr init=0.001", "tlr_init", s, 0.2, method="tlr") for s in (0, 1)]
  payload = image_payload(runs)
  rows = gd.diagnose(payload)
  assert [r["label"] for r in rows] == ["adam_sls", "adam_salsa", "adam_salsa_cooldown", "sls",
                                        "a_sls", "tlr init=0.001"]
  for name in ("adam_sls", "adam_salsa", "adam_salsa_cooldown"):
    row = row_of(rows, name)
    assert row["reference"]["label"] == "adam const lr=0.003"  # the better Adam-type point
    assert row["ratio"]["middle"] == pytest.approx(2 / 3)
  for name in ("sls", "a_sls", "tlr init=0.001"):
    assert row_of(rows, name)["reference"]["label"] == "sgd lr=0.1"
  assert row_of(rows, "tlr init=0.001")["ratio"]["start"] == pytest.approx(2.0)
  # Without constant Adam, the warm-up + cosine point; its rate 0 at update 1 is left out.
  payload["results"] = [r for r in runs if r["group"] != "adam_const"]
  row = row_of(gd.diagnose(payload), "adam_sls")
  assert row["reference"]["label"] == "adam lr=0.001"
  assert row["reference_step"]["start"] == pytest.approx(1e-3)
  assert row["ratio"]["start"] == pytest.approx(2.0)
  assert math.isnan(row["ratio_curve"][0]) and row["ratio_curve"][1] == pytest.approx(2.0)


def test_lm_uses_adamw_and_marks_other_ratios_not_comparable(tmp_path):
  runs = []
  for lr, val in ((1e-3, 3.4), (3e-3, 3.3)):
    runs += [make_run(f"adamw lr={lr:g}", "adamw", s, lr, lr=lr, schedule="cosine", val=val,
                      loss=1.5, lm=True) for s in (0, 1)]
  runs += [make_run("adam lr=0.001", "adam", s, 1e-3, lr=1e-3, val=3.0, lm=True)
           for s in (0, 1)]  # constant Adam: not the lm reference, however good
  runs += [make_run("adam_salsa", "line_search", s, 3e-4, loss=2.0, val=3.6, lm=True)
           for s in (0, 1)]
  runs += [make_run("sls", "line_search", s, 0.1, loss=2.5, val=4.0, lm=True) for s in (0, 1)]
  payload = lm_payload(runs)
  rows = gd.diagnose(payload)
  salsa, sls = row_of(rows, "adam_salsa"), row_of(rows, "sls")
  assert salsa["reference"]["label"] == "adamw lr=0.003" and salsa["comparable"]
  assert salsa["ratio"]["middle"] == pytest.approx(0.1)
  assert salsa["val_gap"] == pytest.approx(0.3)  # bits per character, positive: worse
  assert sls["reference"]["label"] == "adamw lr=0.003" and not sls["comparable"]
  assert all(sls["ratio"][p] is None for p in gd.PHASES) and sls["ratio_curve"] is None
  assert all(sls["loss_gap"][p] == pytest.approx(1.0) for p in gd.PHASES)
  assert sls["val_gap"] == pytest.approx(0.7)
  assert any("not comparable" in c for c in sls["diagnosis"])
  text = gd.markdown(payload, rows)
  (line,) = [x for x in text.splitlines() if x.startswith("| sls ")]
  assert "adamw lr=0.003 (loss only) | n/c | n/c | n/c | +1.000 | +1.000 | +1.000" in line
  assert "val gap (bits/char)" in text and "Reference SGD" not in text
  assert os.path.exists(gd.plot(payload, rows, str(tmp_path / "lm.png")))


def test_zero_and_negative_steps_are_counted():
  zeros = np.where(UPDATES <= 10, 0.0, 0.05)  # 10 of the 20 start updates without a step
  runs = sgd_grid()
  runs += [make_run("labpal_sgd", "line_search", 0, zeros),
           make_run("labpal_sgd", "line_search", 1, 0.05)]
  runs += [make_run("sgd_hd", "line_search", s, np.where(UPDATES % 20 == 0, -0.01, 0.05))
           for s in (0, 1)]
  rows = gd.diagnose(image_payload(runs))
  row = row_of(rows, "labpal_sgd")
  assert row["zero"]["start"] == pytest.approx(0.25)  # mean over seeds of 10/20 and 0/20
  assert row["zero"]["middle"] == 0.0 and row["zero"]["end"] == 0.0
  assert row["zero"]["all"] == pytest.approx(10 / T / 2)
  assert row["ratio"]["start"] == pytest.approx(0.5)  # zeros left out of the geometric mean
  assert "no step in 25% of the start phase's updates" in row["diagnosis"]
  assert row["collapse"]["update"] is None
  hd = row_of(rows, "sgd_hd")
  assert hd["negative"]["all"] == pytest.approx(0.05) and hd["zero"]["all"] == 0.0
  assert "negative step in 5.0% of updates" in hd["diagnosis"]
  assert hd["ratio"]["middle"] == pytest.approx(0.5)


def test_a_collapse_is_detected_at_the_right_update():
  def falls_at(u: int) -> np.ndarray:
    return np.where(UPDATES < u, 0.1, 1e-3)

  assert gd.collapse_update(UPDATES, falls_at(137)) == 137
  assert gd.collapse_update(UPDATES, 0.1 * 0.99 ** UPDATES) is None  # 0.99^199 = 0.14 > 0.1
  decay = 0.1 * 0.98 ** UPDATES  # peak at update 1; below a tenth from 0.98^(u - 1) < 0.1
  assert gd.collapse_update(UPDATES, decay) == 1 + math.ceil(math.log(0.1) / math.log(0.98))
  assert gd.collapse_update(UPDATES, decay) == UPDATES[np.argmax(decay < decay[0] / 10)]
  one_off = np.full(T, 0.1)
  one_off[50], one_off[120] = 10.0, 1e-6  # one spike, one dip: no collapse
  assert gd.collapse_update(UPDATES, one_off) is None
  growing = np.geomspace(1e-3, 0.1, T)  # starts 100x below its maximum: not a collapse
  assert gd.collapse_update(UPDATES, growing) is None
  runs = sgd_grid(seeds=(0, 1, 2))
  runs += [make_run("sls", "line_search", 0, falls_at(137)),
           make_run("sls", "line_search", 1, falls_at(141)),
           make_run("sls", "line_search", 2, 0.1)]
  runs += [make_run("salsa", "line_search", s, falls_at(181)) for s in (0, 1, 2)]
  rows = gd.diagnose(image_payload(runs, seeds=(0, 1, 2)))
  row = row_of(rows, "sls")
  assert row["collapse"] == {"update": 139, "seeds": 2, "of": 3}
  assert ("collapse at update 139 (step below 1/10 of its peak; 2 of 3 seeds)"
          in row["diagnosis"])
  end = row_of(rows, "salsa")
  assert end["collapse"]["update"] == 181
  assert any(c.startswith("decays below 1/10 of its peak at update 181 (end phase")
             for c in end["diagnosis"])


def test_curves_of_different_lengths_are_put_on_the_update_grid():
  kept = np.unique(np.linspace(1, T, 67).round().astype(int))  # a subsampled curve
  runs = sgd_grid()
  runs += [make_run("sls", "line_search", s, 0.05, steps=kept) for s in (0, 1)]
  rate = np.where(UPDATES <= 100, 0.2, 0.02)
  runs += [make_run("pal", "line_search", s, rate[kept - 1], steps=kept) for s in (0, 1)]
  rows = gd.diagnose(image_payload(runs))
  assert all(row_of(rows, "sls")["ratio"][p] == pytest.approx(0.5) for p in gd.PHASES)
  pal = row_of(rows, "pal")
  # Each update takes its nearest stored point: around update 100 the change moves by at
  # most half a stored spacing (3 updates).
  grid = gd.on_grid(kept, rate[kept - 1], T)
  assert np.sum(grid != rate) <= 2
  expected = phase_geomean(grid, 21, 160) / 0.1
  assert pal["ratio"]["middle"] == pytest.approx(expected)
  assert pal["ratio"]["middle"] == pytest.approx(phase_geomean(rate, 21, 160) / 0.1, rel=0.05)
  assert pal["ratio"]["end"] == pytest.approx(0.2)
  # A curve that stops early (a shorter run) leaves the later updates missing.
  assert np.isnan(gd.on_grid([1, 2, 3, 4], [1.0] * 4, 10)[5:]).all()


def test_missing_groups_diverged_runs_missing_values_and_partial_seeds(tmp_path):
  sizes = [0.05] * T
  sizes[30:40] = [None] * 10
  sizes[40] = float("nan")
  losses = np.full(T, 1.0)
  losses[150:] = np.inf  # a diverged run: its non-finite losses are left out
  runs = [make_run("sls", "line_search", 0, sizes, loss=losses, val=None, diverged=True),
          make_run("sls", "line_search", 1, 0.05, loss=1.0, val=0.9)]
  runs += [make_run("tlr", "line_search", 0, 0.05)]  # seed 0 only
  runs += [make_run("pal", "line_search", s, None) for s in (0, 1)]  # no step sizes at all
  payload = image_payload(runs)
  rows = gd.diagnose(payload)  # no baseline at all
  assert [r["reference"] for r in rows] == [None, None, None]
  assert all("no reference baseline in the file" in r["diagnosis"] for r in rows)
  gd.markdown(payload, rows)
  gd.plot(payload, rows, str(tmp_path / "none.png"))
  payload["results"] = runs + sgd_grid(loss=0.5)
  payload["results"] += [make_run("sgd lr=0.1", "sgd", 2, float("nan"), loss=None, val=None,
                                  diverged=True)]  # a diverged extra seed of the reference
  rows = gd.diagnose(payload)
  sls = row_of(rows, "sls")
  assert sls["diverged"] == 1 and "diverged in 1 of 2 seeds" in sls["diagnosis"]
  assert all(sls["ratio"][p] == pytest.approx(0.5) for p in gd.PHASES)
  assert sls["loss_gap"]["end"] == pytest.approx(0.5)
  assert sls["val_gap"] == pytest.approx(100 * (0.9 - 0.93))
  assert row_of(rows, "tlr")["seeds"] == [0]
  pal = row_of(rows, "pal")
  assert all(pal["ratio"][p] is None for p in gd.PHASES) and pal["collapse"]["update"] is None
  text = gd.markdown(payload, rows)
  assert "| tlr (seeds 0) | sgd lr=0.1 |" in text
  assert os.path.exists(gd.plot(payload, rows, str(tmp_path / "some.png")))


def test_main_writes_the_table_and_the_figure(tmp_path, capsys):
  runs = sgd_grid() + [make_run(m, "line_search", s, 0.05) for m in ("sls", "salsa")
                       for s in (0, 1)]
  path = tmp_path / "quality_mnist.json"
  path.write_text(json.dumps(image_payload(runs)))
  written = gd.main([str(path), "--out", str(tmp_path / "out" / "gap")])
  assert written == [str(tmp_path / "out" / "gap.md"), str(tmp_path / "out" / "gap.png")]
  text = (tmp_path / "out" / "gap.md").read_text()
  assert [x.split(" | ")[0] for x in text.splitlines() if x.startswith("| s")] == [
      "| sls", "| salsa"]
  assert os.path.getsize(tmp_path / "out" / "gap.png") > 0
  assert capsys.readouterr().out.split() == written
  assert gd.prefixes(["a/quality_lm.json", "b/quality_mnist.json"], ["lm", "mnist"], None) == [
      os.path.join(gd.q.RESULTS, "gap_diagnosis_lm"),
      os.path.join(gd.q.RESULTS, "gap_diagnosis_mnist")]


@pytest.mark.parametrize("name", ["quality_mnist.json", "quality_lm.json"])
def test_the_real_result_files(name):
  path = os.path.join(RESULTS, name)
  if not os.path.exists(path):
    pytest.skip(f"{name} absent")
  with open(path) as f:
    payload = json.load(f)
  rows = gd.diagnose(payload)
  searches = list(dict.fromkeys(r["label"] for r in payload["results"]
                                if r["group"] == "line_search"))
  assert [r["label"] for r in rows if r["group"] == "line_search"] == searches
  lm = name == "quality_lm.json"
  for row in rows:
    comparable = not lm or gd.is_adam_direction(row["method"])
    assert row["comparable"] == comparable
    if comparable:
      assert all(row["ratio"][p] is not None and math.isfinite(row["ratio"][p])
                 and row["ratio"][p] > 0 for p in gd.PHASES)
    else:
      assert all(row["ratio"][p] is None for p in gd.PHASES)
    assert row["diagnosis"]
  assert len([x for x in gd.markdown(payload, rows).splitlines() if x.startswith("| ")]) == (
      len(rows) + 1)
