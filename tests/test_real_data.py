"""Slow tests: the harness configs on the real data subsets (``../shared/data``).

The directory is ``$OPTAX_LS_DATA_DIR`` (default: ``../shared/data`` next to the
repository, see :data:`train.config.SHARED_DATA`); the tests skip when the files
are absent, as on a user's fresh clone.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from train.config import SHARED_DATA, get_config
from train.optimizers import OptimizerConfig
from train.train import run

pytestmark = pytest.mark.slow


def _require(file: str) -> None:
  path = os.path.join(SHARED_DATA, file)
  if not os.path.exists(path):
    pytest.skip(f"{path} not found (set OPTAX_LS_DATA_DIR to the directory of the data subsets)")


def test_sls_beats_untuned_sgd_on_the_real_mnist_subset(tmp_path):
  """The README's MNIST command, 3 epochs: SLS without tuning against SGD(0.1)."""
  _require("mnist_subset.npz")
  config = dataclasses.replace(get_config("mnist_subset_mlp"), epochs=3, out=str(tmp_path))
  history = run(config, verbose=False)
  sls, sgd = history["sls"]["eval"], history["sgd"]["eval"]
  print(f"MNIST subset, MLP 512-512, 3 epochs: sls test accuracy {sls[-1]['test_accuracy']:.4f}, "
        f"sgd {sgd[-1]['test_accuracy']:.4f}")
  assert sls[-1]["test_accuracy"] > 0.88
  assert sls[-1]["train_loss"] < sgd[-1]["train_loss"]
  assert sls[-1]["train_loss"] < 0.5 * sls[0]["train_loss"]
  rates = [r["learning_rate"] for r in history["sls"]["train"]]
  assert all(0.0 < s <= 1e3 for s in rates)


def test_resnet20_learns_on_the_real_cifar10_subset(tmp_path):
  """ResNet-20 with SLS on the CIFAR-10 subset: 2 epochs lift accuracy above chance."""
  _require("cifar10_subset.npz")
  config = dataclasses.replace(get_config("cifar10_resnet20_subset"), epochs=2,
                               optimizers=(OptimizerConfig("sls"),), out=str(tmp_path))
  history = run(config, verbose=False)
  evals = history["sls"]["eval"]
  assert evals[-1]["train_loss"] < evals[0]["train_loss"]
  assert evals[-1]["test_accuracy"] > 0.15  # chance: 0.1
  assert np.isfinite([r["loss"] for r in history["sls"]["train"]]).all()


def test_landscape_lines_on_the_real_mnist_subset_are_parabolic(tmp_path):
  """Seed 003's core result 1 on real data: the full-batch loss along SGD's lines is a parabola."""
  from optax_ls import landscape
  from train.landscape import record

  _require("mnist_subset.npz")
  config = dataclasses.replace(
      get_config("mnist_subset_mlp"), optimizers=(OptimizerConfig("sgd", learning_rate=0.1),),
      max_steps=41, out=str(tmp_path))
  lines = record(config, landscape.Settings(every=10, examples=2048, resolution=0.02),
                 verbose=False)
  text, paths = landscape.write_report(lines, str(tmp_path), window=0.2)
  print(text)
  analysis = landscape.analyse(lines, window=0.2)
  assert len(lines) == 5 and len(paths) == len(landscape.FIGURES)
  # Degree 2 fits far better than degree 1, and to a small fraction of the loss's range.
  assert np.all(analysis["mae2"] < 0.2 * analysis["mae1"])
  ranges = [np.ptp(line.full[np.abs(line.steps) <= 0.2]) for line in lines]
  assert np.all(analysis["mae2"] < 0.05 * np.array(ranges))
  assert np.all(analysis["curvature"] > 0)
  # SGD's own step is lr ||g||, and it lowers the full-batch loss.
  np.testing.assert_allclose(analysis["strategies"]["run"]["step"],
                             analysis["strategies"]["sgd_0.1"]["step"], rtol=1e-3)
  assert np.all(analysis["strategies"]["run"]["improvement"] > 0)
