"""Library functions of the main job: state, train step, evaluation and the whole run.

``run(Config())`` trains one MLP on the digits twice from the same initialisation,
with :func:`optax_ls.sls` and with constant-step SGD, on the same batches, and returns
the per-epoch history of both.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from tqdm import tqdm

import optax_ls
from models import get_model
from train import report
from train.config import Config
from train.data import DIGITS_NUM_CLASSES, Split, load_digits_split, num_batches, train_batches

History = dict[str, list[dict[str, Any]]]
"""Per optimizer name, one record per epoch (see :func:`train_epoch`)."""


class TrainState(struct.PyTreeNode):
  """Parameters and optimizer state; ``apply_fn`` and ``tx`` are static (not traced).

  Attributes:
    step: the number of updates made.
    params: the model parameters.
    opt_state: the state of ``tx``.
    apply_fn: the model's ``apply``.
    tx: the optimizer; its ``update`` receives ``value``, ``grad`` and ``value_fn``.
  """

  step: jax.Array
  params: Any
  opt_state: optax.OptState
  apply_fn: Callable[..., jax.Array] = struct.field(pytree_node=False)
  tx: optax.GradientTransformationExtraArgs = struct.field(pytree_node=False)


def init_params(model: nn.Module, rng: jax.Array, sample_x: np.ndarray) -> Any:
  """Initialises ``model``'s parameters for inputs shaped like ``sample_x``."""
  return model.init(rng, jnp.asarray(sample_x))["params"]


def create_state(
    model: nn.Module, params: Any, tx: optax.GradientTransformationExtraArgs
) -> TrainState:
  """A fresh :class:`TrainState` holding a copy of ``params``.

  The copy lets several states start from the same ``params`` although
  :func:`train_step` donates (invalidates) the buffers of the state it is given.
  """
  params = jax.tree.map(jnp.array, params)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      apply_fn=model.apply,
      tx=tx,
  )


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The mean softmax cross-entropy of integer ``labels`` under ``logits``."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@functools.partial(jax.jit, donate_argnums=0)
def train_step(
    state: TrainState, x: jax.Array, y: jax.Array
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update on the mini-batch ``(x, y)``, as one jitted function.

  Computes the loss and its gradient, calls ``state.tx.update`` with
  ``value=loss``, ``grad=grads`` and ``value_fn`` (the loss on the same batch),
  and applies the updates. ``state`` is donated: its buffers are reused.

  Returns:
    The new state and the metrics ``loss`` (before the update) and, where
    ``tx``'s state has them, ``learning_rate`` (the step size applied) and
    ``num_evals`` (the ``value_fn`` calls of the update).
  """

  def loss_fn(params: Any) -> jax.Array:
    return cross_entropy(state.apply_fn({"params": params}, x), y)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = state.tx.update(
      grads, state.opt_state, state.params, value=loss, grad=grads, value_fn=loss_fn
  )
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss}
  for key in ("learning_rate", "num_evals"):
    found = optax.tree.get(opt_state, key)
    if found is not None:
      metrics[key] = found
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


@jax.jit
def evaluate(state: TrainState, x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
  """The mean loss and the accuracy of ``state.params`` on ``(x, y)``."""
  logits = state.apply_fn({"params": state.params}, x)
  return {
      "loss": cross_entropy(logits, y),
      "accuracy": jnp.mean(jnp.argmax(logits, axis=-1) == y),
  }


def make_optimizers(
    config: Config, steps_per_epoch: int
) -> dict[str, optax.GradientTransformationExtraArgs]:
  """The optimizers compared: ``sls`` (paper defaults) and constant-step ``sgd``."""
  return {
      "sls": optax_ls.sls(n_batches_per_epoch=steps_per_epoch),
      "sgd": optax.inject_hyperparams(optax.sgd)(learning_rate=config.sgd_lr),
  }


def train_epoch(
    state: TrainState, data: Split, batch_size: int, seed: int, epoch: int
) -> tuple[TrainState, dict[str, Any]]:
  """Trains ``state`` for one epoch and evaluates it on the test set.

  Returns:
    The new state and the epoch's record: ``epoch``, ``train_loss`` (the mean of
    the mini-batch losses before each update), ``test_loss``, ``test_accuracy``,
    ``step_size`` (the last step size of the epoch that moved the parameters:
    an update whose search found no acceptable step applies 0), ``evals_per_step``
    (the mean number of ``value_fn`` calls per update, None for optimizers that
    make none) and ``seconds`` (training time of the epoch, compilation included).
  """
  start = time.perf_counter()
  steps = []
  for x, y in train_batches(data.x_train, data.y_train, batch_size, seed, epoch):
    state, metrics = train_step(state, x, y)
    steps.append(metrics)
  steps = jax.device_get(steps)
  seconds = time.perf_counter() - start
  test = jax.device_get(evaluate(state, data.x_test, data.y_test))
  num_evals = [m["num_evals"] for m in steps if "num_evals" in m]
  accepted = [m["learning_rate"] for m in steps if m["learning_rate"] > 0]
  record = {
      "epoch": epoch,
      "train_loss": float(np.mean([m["loss"] for m in steps])),
      "test_loss": float(test["loss"]),
      "test_accuracy": float(test["accuracy"]),
      "step_size": float(accepted[-1]) if accepted else 0.0,
      "evals_per_step": float(np.mean(num_evals)) if num_evals else None,
      "seconds": seconds,
  }
  return state, record


def run(config: Config, *, verbose: bool = True) -> History:
  """Trains the MLP with each optimizer of :func:`make_optimizers`, side by side.

  Both start from the same initialisation and see the same batches. With
  ``verbose``, shows a progress bar on stderr and prints a table line per epoch
  and optimizer and a summary on stdout. With ``config.out``, writes
  ``metrics.jsonl`` and ``curves.png`` there.

  Args:
    config: the run's configuration.
    verbose: whether to print progress and results.

  Returns:
    Per optimizer name, the records of :func:`train_epoch`, one per epoch.
  """
  start = time.perf_counter()
  data = load_digits_split(config.seed)
  steps_per_epoch = num_batches(len(data.x_train), config.batch_size)
  if steps_per_epoch == 0:
    raise ValueError(
        f"`batch_size` {config.batch_size} exceeds the {len(data.x_train)} training examples."
    )
  model = get_model("mlp", features=config.hidden, num_classes=DIGITS_NUM_CLASSES)
  params = init_params(model, jax.random.key(config.seed), data.x_train[:1])
  states = {
      name: create_state(model, params, tx)
      for name, tx in make_optimizers(config, steps_per_epoch).items()
  }
  history: History = {name: [] for name in states}

  def echo(line: str) -> None:
    if verbose:
      tqdm.write(line, file=sys.stdout)

  echo(
      f"digits: {len(data.x_train)} train / {len(data.x_test)} test images, "
      f"MLP hidden={list(config.hidden)}, {config.epochs} epochs x {steps_per_epoch} steps "
      f"of batch {config.batch_size}, seed {config.seed}"
  )
  echo(report.HEADER)
  bar = tqdm(
      range(1, config.epochs + 1), desc="train", unit="epoch", file=sys.stderr, disable=not verbose
  )
  for epoch in bar:
    for name in states:
      states[name], record = train_epoch(
          states[name], data, config.batch_size, config.seed, epoch
      )
      history[name].append(record)
      echo(report.format_row(name, record))
    bar.set_postfix({f"{name}_acc": f"{h[-1]['test_accuracy']:.3f}" for name, h in history.items()})
  bar.close()
  wall = time.perf_counter() - start

  if config.out is not None:
    report.write_metrics(history, config.out)
    report.plot_curves(history, config.out)
  if verbose:
    print(report.summary(history, wall, config.out))
  return history
