"""The command line's errors, default learning rates and epoch lines.

Bad ``--set`` values and missing data end ``python -m train`` with one argparse-style line
and exit code 2, never a traceback; ``--optimizer adam`` trains at Adam's own default rate;
the epoch line shows the epoch's time and mean evaluations per step as its records hold
them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import train.config
from train.__main__ import main
from train.config import CONFIGS, build_parser, parse_args
from train.errors import ConfigError
from train.optimizers import (
    DEFAULT_LEARNING_RATES,
    OPTIMIZERS,
    OptimizerConfig,
    learning_rate_of,
    make_optimizer,
)
from train.report import METRICS_FILE, format_eval
from train.train import find_in_state

ERROR = "python -m train: error: "


@pytest.fixture
def no_training(monkeypatch):
  """Makes ``run`` fail the test if it starts to train any optimizer."""
  import train.train as train_module

  def never(*args, **kwargs):
    raise AssertionError("an optimizer trained although the run's arguments are wrong")

  monkeypatch.setattr(train_module, "train_one", never)


def _exit_with_error(argv: list[str], capsys) -> str:
  """Runs the command line; asserts it exits with 2 and no traceback; returns stderr."""
  with pytest.raises(SystemExit) as exit_info:
    main(argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "Traceback" not in err
  assert err.strip().splitlines()[-1].startswith(ERROR)
  return err


# ---------------------------------------------------------------------------
# --set with bad values.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "assignment, message",
    [
        # Found when the optimizers and the model are built, before any trains: one line.
        ("opt.kwargs.c=abc", "optimizer 'sls': `c` must be a number, got 'abc'"),
        ("opt.kwargs.c=0.5x", "optimizer 'sls': `c` must be a number, got '0.5x'"),
        ("opt.kwargs.nonsense=1", "unexpected keyword argument 'nonsense'"),
        ("model.nonsense=1", "model 'mlp'"),
        ("model.features=abc", "model 'mlp'"),
    ],
)
def test_bad_set_values_found_by_the_run_end_with_one_line(assignment, message, capsys,
                                                           no_training):
  err = _exit_with_error(["--set", assignment, "--max-steps", "1"], capsys)
  assert len(err.strip().splitlines()) == 1
  assert message in err


@pytest.mark.parametrize(
    "assignment, message",
    [
        # Found by Config.validate, through argparse: its usage, then the one-line error.
        ("seed=abc", "`seed` must be an integer, got 'abc'"),
        ("epochs=abc", "`epochs` must be an integer, got 'abc'"),
        ("augment=abc", "`augment` must be True or False, got 'abc'"),
        ("test_fraction=abc", "`test_fraction` must be a number, got 'abc'"),
        ("max_steps=abc", "`max_steps` must be an integer or None, got 'abc'"),
        ("opt.learning_rate=abc", "optimizer 'sls': `learning_rate` must be a number or None"),
        ("opt.momentum=abc", "optimizer 'sls': `momentum` must be a number, got 'abc'"),
        ("opt.momentum=1.5", "optimizer 'sls': `momentum` must be in [0, 1)"),
        ("opt.warmup_steps=abc", "optimizer 'sls': `warmup_steps` must be an integer"),
        ("opt.weight_decay=abc", "optimizer 'sls': `weight_decay` must be a number"),
        ("opt.schedule=abc", "optimizer 'sls': `schedule` must be one of"),
        ("nonsense=1", "unknown key 'nonsense'"),
        ("opt.nonsense=1", "unknown optimizer field 'nonsense'"),
    ],
)
def test_bad_set_values_found_by_validation_exit_through_argparse(assignment, message, capsys,
                                                                  no_training):
  err = _exit_with_error(["--set", assignment], capsys)
  assert message in err.strip().splitlines()[-1]


def test_validation_errors_are_value_errors_naming_the_field():
  with pytest.raises(ValueError, match="`epochs` must be an integer"):
    train.config.Config(epochs="3").validate()
  with pytest.raises(ConfigError, match="optimizer 'adam': `momentum` must be a number"):
    train.config.Config(optimizers=(OptimizerConfig("adam", momentum="0.9"),)).validate()
  # Numbers of every kind and paths still pass.
  train.config.Config(epochs=np.int64(2), test_fraction=np.float32(0.25), out=os.curdir,
                      optimizers=[OptimizerConfig("sgd", learning_rate=np.float64(0.1))]).validate()


# ---------------------------------------------------------------------------
# Missing data.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [name for name in CONFIGS if name != "digits_mlp"])
def test_missing_data_ends_every_config_with_one_line(name, tmp_path, monkeypatch, capsys,
                                                      no_training):
  """npz subsets, text files and tfds data sets alike: one line naming where it looked."""
  missing = tmp_path / "missing"
  monkeypatch.setattr(train.config, "SHARED_DATA", str(missing))  # as $OPTAX_LS_DATA_DIR
  err = _exit_with_error(["--config", name, "--data-dir", str(missing)], capsys)
  assert len(err.strip().splitlines()) == 1, err  # no absl warnings of tfds either
  assert str(missing) in err


def test_missing_data_from_the_shell_ends_with_one_line(tmp_path):
  missing = tmp_path / "nonexistent"
  env = {**os.environ, "OPTAX_LS_DATA_DIR": str(missing), "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(
      [sys.executable, "-m", "train", "--config", "cifar10_resnet20_subset"],
      capture_output=True, text=True, env=env, timeout=300,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"{ERROR}No .npz file at {missing}/cifar10_subset.npz "
      f"(from npz:{missing}/cifar10_subset.npz)."
  ]
  assert result.stdout == ""


# ---------------------------------------------------------------------------
# Default learning rates.
# ---------------------------------------------------------------------------


def test_each_baseline_has_its_own_default_learning_rate():
  assert DEFAULT_LEARNING_RATES == {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3,
                                    "schedule_free_adamw": 0.0025}
  assert set(DEFAULT_LEARNING_RATES) <= set(OPTIMIZERS)
  assert OptimizerConfig("adam").learning_rate is None
  for name, rate in DEFAULT_LEARNING_RATES.items():
    assert learning_rate_of(OptimizerConfig(name)) == rate
    assert learning_rate_of(OptimizerConfig(name, learning_rate=0.05)) == 0.05
  assert learning_rate_of(OptimizerConfig("sls")) is None


@pytest.mark.parametrize("name, rate", [("sgd", 0.1), ("adam", 1e-3), ("adamw", 1e-3)])
def test_optimizer_from_the_command_line_trains_at_its_default_rate(name, rate):
  config = parse_args(["--optimizer", name])
  built = make_optimizer(config.optimizers[0], steps_per_epoch=2, total_steps=4)
  params, grads = {"w": jnp.ones(3)}, {"w": jnp.full(3, 0.5)}
  state = built.tx.init(params)
  updates, state = built.tx.update(grads, state, params)
  assert float(find_in_state(state, "learning_rate")) == pytest.approx(rate)
  # The first SGD update is -lr g; Adam's and AdamW's (no decay here) are -lr sign(g).
  expected = -rate * (0.5 if name == "sgd" else 1.0)
  np.testing.assert_allclose(updates["w"], expected, rtol=1e-4)


def test_schedule_free_adamw_trains_at_optax_default_rate():
  params, grads = {"w": jnp.ones(3)}, {"w": jnp.full(3, 0.5)}
  updates = {}
  for lr in (None, 0.0025):
    built = make_optimizer(OptimizerConfig("schedule_free_adamw", learning_rate=lr),
                           steps_per_epoch=2, total_steps=4)
    updates[lr] = built.tx.update(grads, built.tx.init(params), params)[0]["w"]
  np.testing.assert_array_equal(updates[None], updates[0.0025])
  assert float(jnp.abs(updates[None]).max()) > 0


def test_explicit_learning_rates_are_kept():
  config = parse_args(["--optimizer", "adam,sgd", "--lr", "0.05"])
  assert [o.learning_rate for o in config.optimizers] == [0.05, 0.05]
  config = parse_args(["--optimizer", "adam", "--set", "opt.learning_rate=3e-4"])
  assert learning_rate_of(config.optimizers[0]) == 3e-4
  # The configs that set a rate keep it: the default run's SGD, the CIFAR runs' Adam.
  assert [learning_rate_of(o) for o in parse_args([]).optimizers] == [None, 0.1]
  cifar = parse_args(["--config", "cifar10_resnet34"])
  assert [learning_rate_of(o) for o in cifar.optimizers] == [None, 1e-3, 0.1]


def test_help_names_the_default_learning_rates():
  text = build_parser().format_help()
  assert "adam 0.001" in " ".join(text.split()) and "sgd 0.1" in text


def test_adam_from_the_command_line_runs_and_records_its_rate(tmp_path, capsys):
  history = main(["--optimizer", "adam", "--epochs", "1", "--max-steps", "3", "--set",
                  "log_every=1", "--out", str(tmp_path)])
  assert [r["learning_rate"] for r in history["adam"]["train"]] == pytest.approx([1e-3] * 3)
  config_line = json.loads((tmp_path / METRICS_FILE).read_text().splitlines()[0])
  assert config_line["optimizers"][0]["learning_rate"] is None  # "the optimizer's default"
  assert "step_size 0.001" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# The epoch lines.
# ---------------------------------------------------------------------------

_EPOCH_LINE = re.compile(
    r"^(?P<name>\S+)\s+epoch\s+(?P<epoch>\d+)\s.*?(?:evals/step (?P<evals>[\d.]+)\s+)?"
    r"\((?P<time>[\d.]+) (?P<unit>s|ms)\)$"
)


@pytest.fixture(scope="module")
def labpal_run(tmp_path_factory):
  """Three epochs of LABPAL on the digits, a train record per step."""
  import contextlib
  import io

  out = tmp_path_factory.mktemp("labpal")
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    history = main(["--optimizer", "labpal_sgd", "--epochs", "3", "--set", "log_every=1",
                    "--out", str(out)])
  lines = [m.groupdict() for m in map(_EPOCH_LINE.match, stdout.getvalue().splitlines()) if m]
  records = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
  return history, lines, records


def test_epoch_lines_show_a_positive_time_for_every_epoch(labpal_run):
  history, lines, _ = labpal_run
  assert [int(line["epoch"]) for line in lines] == [0, 1, 2]
  for line in lines:
    # The digits MLP trains an epoch in milliseconds: "(0.0 s)" said it took none.
    assert float(line["time"]) > 0, line
  for line, record in zip(lines, history["labpal_sgd"]["eval"], strict=True):
    seconds = float(line["time"]) / (1000.0 if line["unit"] == "ms" else 1.0)
    assert seconds == pytest.approx(record["seconds"], rel=0.06, abs=0.051)


@pytest.mark.parametrize("seconds", [0.0342, 0.0047, 0.0004, 0.2, 1.23, 75.04])
def test_epoch_line_time_is_positive_and_close_for_short_epochs(seconds):
  # One device trains a digits epoch in about 30 ms: it printed as "(0.0 s)".
  evals = {"epoch": 1, "step": 88, "train_loss": 0.5, "test_loss": 0.4, "test_accuracy": 0.9,
           "seconds": seconds}
  line = _EPOCH_LINE.match(format_eval("sgd", evals, [{"learning_rate": 0.1}])).groupdict()
  shown = float(line["time"]) / (1000.0 if line["unit"] == "ms" else 1.0)
  assert shown > 0
  assert shown == pytest.approx(seconds, rel=0.06)


def test_epoch_line_shows_the_epochs_mean_evaluations_per_step(labpal_run):
  _, lines, records = labpal_run
  train = [r for r in records if r["kind"] == "train"]
  evals = [r for r in records if r["kind"] == "eval"]
  assert len(train) == 3 * 44  # log_every=1: one record per update
  means = [float(np.mean([r["evals_per_step"] for r in train if r["epoch"] == epoch]))
           for epoch in range(3)]
  # LABPAL measures at its start (two evaluations per measuring call), then steps without.
  assert means[0] > 0 and means[-1] == 0
  for line, record, mean in zip(lines, evals, means, strict=True):
    assert record["evals_per_step"] == pytest.approx(mean)
    assert line["evals"] == f"{mean:.2f}"


# ---------------------------------------------------------------------------
# Updates that make no step.
# ---------------------------------------------------------------------------


def test_epochs_with_updates_that_made_no_step_are_warned_and_recorded(capsys):
  # One trial per search from a huge step: almost every search ends without a step.
  history = main(["--optimizer", "sls", "--epochs", "1", "--max-steps", "6", "--set",
                  "opt.kwargs.max_backtracking_steps=1", "--set", "opt.kwargs.reset_option=2",
                  "--set", "opt.kwargs.init_step_size=1000"])
  (evals,) = history["sls"]["eval"]
  assert evals["no_step_updates"] == 6
  assert evals["no_step_reasons"] == {"search exhausted (no trial step was accepted)": 6}
  out = capsys.readouterr().out
  assert re.search(r"sls\s+epoch\s+0\s+WARNING: 6 updates made no step \(search exhausted", out)
  # A healthy run has nothing to warn about.
  history = main(["--optimizer", "sls", "--epochs", "1", "--max-steps", "6"])
  assert history["sls"]["eval"][0]["no_step_updates"] == 0
  assert "WARNING" not in capsys.readouterr().out


def test_the_peers_log_their_own_step_sizes():
  # Prodigy's estimate d grows from its d0 = 1e-6; DoG's step is max_dist / sqrt(sum |g|^2).
  history = main(["--optimizer", "prodigy,dog", "--epochs", "1", "--max-steps", "8", "--set",
                  "log_every=1"])
  prodigy = [r["learning_rate"] for r in history["prodigy"]["train"]]
  dog = [r["learning_rate"] for r in history["dog"]["train"]]
  assert len(prodigy) == len(dog) == 8
  assert prodigy[0] >= 1e-6 * (1 - 1e-6) and prodigy[-1] > prodigy[0]  # d never decreases
  assert all(0 < rate < 1 for rate in dog)
