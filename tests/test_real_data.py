"""Slow tests on the real MNIST subset beside the project (``../shared/data``).

The directory is read from ``OPTAX_LS_DATA`` (default: ``../shared/data`` next
to the repository); the tests skip when the file is absent, as on a user's
fresh clone.
"""

from __future__ import annotations

import os
import pathlib

import jax
import numpy as np
import optax
import pytest

import optax_ls
from models import MLP
from train.data import train_batches
from train.train import create_state, evaluate, init_params, train_step

pytestmark = pytest.mark.slow

DATA_DIR = pathlib.Path(
    os.environ.get("OPTAX_LS_DATA", pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _mnist_subset():
  path = DATA_DIR / "mnist_subset.npz"
  if not path.exists():
    pytest.skip(f"{path} not found (set OPTAX_LS_DATA to the directory of the data subsets)")
  data = np.load(path)
  x = data["x"].astype(np.float32) / 255.0
  y = data["y"].astype(np.int32)
  return x[:7000], y[:7000], x[7000:], y[7000:]


def _train(opt, model, params, x_train, y_train, epochs: int, batch_size: int):
  """Trains with the main job's jitted step; returns the state, epoch losses and step sizes."""
  state = create_state(model, params, opt)
  epoch_losses, step_sizes = [], []
  for epoch in range(epochs):
    losses = []
    for x, y in train_batches(x_train, y_train, batch_size, seed=0, epoch=epoch):
      state, metrics = train_step(state, x, y)
      losses.append(float(metrics["loss"]))
      step_sizes.append(float(metrics.get("learning_rate", 0.0)))
    epoch_losses.append(float(np.mean(losses)))
  return state, epoch_losses, step_sizes


def test_sls_trains_an_mlp_on_real_mnist_without_tuning():
  x_train, y_train, x_test, y_test = _mnist_subset()
  batch_size, epochs = 128, 3
  model = MLP(features=(1000,), num_classes=10)
  params = init_params(model, jax.random.PRNGKey(0), x_train[:1])
  sls = optax_ls.sls(n_batches_per_epoch=len(x_train) // batch_size)
  state, sls_losses, step_sizes = _train(sls, model, params, x_train, y_train, epochs, batch_size)
  _, sgd_losses, _ = _train(optax.sgd(0.1), model, params, x_train, y_train, epochs, batch_size)
  accuracy = float(evaluate(state, x_test, y_test)["accuracy"])
  print(f"MNIST subset, MLP 784-1000-10, {epochs} epochs: sls test accuracy {accuracy:.4f}, "
        f"epoch losses sls {np.round(sls_losses, 3)} sgd(0.1) {np.round(sgd_losses, 3)}")
  assert accuracy > 0.85
  assert sls_losses[-1] < sgd_losses[-1], "untuned sls should beat SGD(0.1) on training loss"
  assert sls_losses[-1] < 0.5 * sls_losses[0]
  assert all(0.0 <= s <= 1e3 for s in step_sizes)
  assert not bool(optax.tree.get(state.opt_state, "exhausted"))
