"""Tests of the main job ``python -m train`` and its library functions."""

from __future__ import annotations

import contextlib
import io
import json

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

from models import MLP, get_model
from train import Config, evaluate, init_params, load_digits_split, train_batches, train_step
from train.__main__ import main
from train.config import parse_args
from train.report import CURVES_FILE, METRICS_FILE

EPOCHS = 2


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
  """A 2-epoch run of the command line with ``--out``.

  Returns the history, the standard output, the output directory and how many
  times ``train_step`` and ``evaluate`` were compiled during the run.
  """
  out = tmp_path_factory.mktemp("run")
  stdout = io.StringIO()
  cached = train_step._cache_size(), evaluate._cache_size()
  with contextlib.redirect_stdout(stdout):
    history = main(["--epochs", str(EPOCHS), "--out", str(out)])
  compiles = train_step._cache_size() - cached[0], evaluate._cache_size() - cached[1]
  return history, stdout.getvalue(), out, compiles


def _rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """The examples as rows (pixels then label), sorted, to compare sets of examples."""
  table = np.concatenate([x.reshape(len(x), -1), y[:, None].astype(x.dtype)], axis=1)
  return table[np.lexsort(table.T[::-1])]


def test_digits_split_is_deterministic_disjoint_and_complete():
  a, b, other = load_digits_split(0), load_digits_split(0), load_digits_split(1)
  for u, v in zip(a, b, strict=True):
    np.testing.assert_array_equal(u, v)
  assert not np.array_equal(a.y_test, other.y_test)
  assert a.x_train.shape == (1437, 8, 8, 1) and a.x_test.shape == (360, 8, 8, 1)
  assert a.x_train.dtype == np.float32 and 0.0 <= a.x_train.min() and a.x_train.max() == 1.0
  # The digits hold no duplicate images, so train and test partition the data set.
  digits = load_digits()
  both = _rows(np.concatenate([a.x_train, a.x_test]), np.concatenate([a.y_train, a.y_test]))
  full = _rows((digits.images / 16.0).astype(np.float32), digits.target)
  np.testing.assert_array_equal(both, full)
  assert len(np.unique(both, axis=0)) == len(both)


def test_train_batches_are_deterministic_full_and_reshuffled():
  split = load_digits_split(0)
  first = list(train_batches(split.x_train, split.y_train, 32, seed=0, epoch=1))
  again = list(train_batches(split.x_train, split.y_train, 32, seed=0, epoch=1))
  later = list(train_batches(split.x_train, split.y_train, 32, seed=0, epoch=2))
  assert len(first) == 1437 // 32
  assert all(x.shape == (32, 8, 8, 1) and y.shape == (32,) for x, y in first)
  for (x, y), (x2, y2) in zip(first, again, strict=True):
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
  assert not np.array_equal(first[0][1], later[0][1])


def test_get_model():
  model = get_model("mlp", features=(16, 8), num_classes=10)
  assert isinstance(model, MLP)
  x = np.zeros((2, 8, 8, 1), np.float32)
  params = jax.eval_shape(lambda key: init_params(model, key, x), jax.random.key(0))
  shapes = [p.shape for p in jax.tree.leaves(params)]
  assert shapes == [(16,), (64, 16), (8,), (16, 8), (10,), (8, 10)]
  assert jax.eval_shape(model.apply, {"params": params}, x).shape == (2, 10)
  with pytest.raises(ValueError, match="known models: mlp"):
    get_model("resnet1000")


def test_each_step_compiles_once(cli_run):
  history, _, _, (step_compiles, eval_compiles) = cli_run
  # 2 optimizers x 2 epochs x 44 steps, one compilation per optimizer: none after the first call.
  assert step_compiles == len(history) == 2
  assert eval_compiles == 2


def test_both_optimizers_learn(cli_run):
  history, _, _, _ = cli_run
  assert set(history) == {"sls", "sgd"}
  for name, records in history.items():
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    losses = [r["train_loss"] for r in records]
    assert losses[-1] < losses[0] < np.log(10.0), name
  sls, sgd = history["sls"][-1], history["sgd"][-1]
  # Measured over seeds 0-4 after 2 epochs: sls 0.91-0.96, sgd (lr 0.1) 0.88-0.92 (chance: 0.1).
  assert sls["test_accuracy"] > 0.85
  assert sgd["test_accuracy"] > 0.75
  # The line search finds steps well above SGD's 0.1: sls trains faster (0.22-0.29 vs 0.90-0.97).
  assert sls["train_loss"] < 0.5 * sgd["train_loss"]
  assert sls["step_size"] > 0.1 and 1.0 <= sls["evals_per_step"] < 3.0
  assert sgd["step_size"] == pytest.approx(0.1) and sgd["evals_per_step"] is None


def test_cli_prints_a_table_and_writes_metrics_and_curves(cli_run):
  history, stdout, out, _ = cli_run
  rows = [line.split() for line in stdout.splitlines() if line.split()[:1] in (["1"], ["2"])]
  assert [(r[0], r[1]) for r in rows] == [("1", "sls"), ("1", "sgd"), ("2", "sls"), ("2", "sgd")]
  assert "final test accuracy" in stdout and "wall time" in stdout
  lines = (out / METRICS_FILE).read_text().splitlines()
  records = [json.loads(line) for line in lines]
  assert len(records) == 2 * EPOCHS
  assert records[0]["optimizer"] == "sls"
  assert records[0]["test_accuracy"] == history["sls"][0]["test_accuracy"]
  png = (out / CURVES_FILE).read_bytes()
  assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_parse_args_defaults_and_options():
  assert parse_args([]) == Config()
  config = parse_args(["--epochs", "3", "--hidden", "64, 32", "--sgd-lr", "0.05", "--seed", "7"])
  assert config.epochs == 3 and config.hidden == (64, 32)
  assert config.sgd_lr == 0.05 and config.seed == 7


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs: expected a positive integer"),
        (["--batch-size", "-4"], "--batch-size: expected a positive integer"),
        (["--batch-size", "5000"], "exceeds the 1437 training examples"),
        (["--sgd-lr", "nan"], "--sgd-lr: expected a positive finite number"),
        (["--hidden", "128,x"], "--hidden: expected comma-separated positive integers"),
        (["--seed", "-1"], "--seed: expected a non-negative integer"),
    ],
)
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
