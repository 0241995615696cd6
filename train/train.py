"""Library functions of the harness: state, the sharded train step, evaluation and the run.

The train step is one :func:`jax.jit` over a :class:`jax.sharding.Mesh` with one
axis ``'data'``: the batch is sharded over the devices (``P('data')``), the state
is replicated (``P()``) and donated. Under jit the loss is the global-batch loss,
so every device takes the same line-search decision; XLA inserts the
all-reduces. Multi-host runs call :func:`jax.distributed.initialize` first
(:func:`maybe_initialize_distributed`) and each process feeds its slice of the
global batch (:func:`global_batch`).

BatchNorm and dropout inside a line search: every ``value_fn`` call of one
update uses the same dropout key (``fold_in(rng, step)``) and the statistics of
the current batch (train mode), and its mutated ``batch_stats`` are dropped;
the running statistics are committed once, from the main forward-backward pass.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

import optax_ls
from models import get_model
from train import checkpoint, data, report
from train.config import Config
from train.errors import ConfigError, config_error
from train.optimizers import Needs, OptimizerConfig, make_optimizer

History = dict[str, dict[str, list[dict[str, Any]]]]
"""Per optimizer name, ``{"train": [...], "eval": [...]}``: the records of :func:`run`."""


class TrainState(struct.PyTreeNode):
  """Everything a run carries from step to step; the static fields are not traced.

  Attributes:
    step: the number of updates made (int32).
    params: the model parameters.
    batch_stats: BatchNorm running statistics (an empty dict without BatchNorm).
    opt_state: the state of ``tx``.
    rng: the run's dropout key (raw ``uint32`` key data); step ``t`` uses
      ``fold_in(rng, t)``.
    apply_fn: the model's ``apply``.
    tx: the optimizer.
    needs: the extra ``update`` inputs ``tx`` takes (see :class:`train.optimizers.Needs`).
    l2: the L2 coefficient of the training objective.
    accumulation_steps: the number of micro-batches each batch is split into
      (:func:`optax_ls.accumulate`; 1 for none).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  rng: jax.Array
  apply_fn: Callable[..., Any] = struct.field(pytree_node=False)
  tx: optax.GradientTransformationExtraArgs = struct.field(pytree_node=False)
  needs: Needs = struct.field(pytree_node=False, default=Needs())
  l2: float = struct.field(pytree_node=False, default=0.0)
  accumulation_steps: int = struct.field(pytree_node=False, default=1)


def maybe_initialize_distributed() -> bool:
  """Calls :func:`jax.distributed.initialize` when the environment asks for a multi-host run.

  It does so when ``OPTAX_LS_DISTRIBUTED=1`` is set; jax then takes the
  coordinator, the number of processes and the process id from its cluster
  auto-detection (SLURM, Open MPI, Cloud TPU, Kubernetes) or from
  ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``. (jax 0.10
  reads ``JAX_COORDINATOR_ADDRESS`` itself but not the other two, so the harness passes
  them; set, they win over the auto-detection.) Returns whether it initialised.
  """
  if os.environ.get("OPTAX_LS_DISTRIBUTED") != "1" or jax.distributed.is_initialized():
    return False

  def from_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None

  jax.distributed.initialize(num_processes=from_env("JAX_NUM_PROCESSES"),
                             process_id=from_env("JAX_PROCESS_ID"))
  return True


def make_mesh() -> Mesh:
  """A one-axis mesh ``'data'`` over all devices (of all processes).

  The harness's data parallelism: the state is replicated over the mesh (``P()``) and every
  batch is split along its first axis over ``'data'`` (``P('data')``), so a global batch of
  ``B`` examples puts ``B / jax.device_count()`` on each device (``B`` must be a multiple of
  it).

  Returns:
    A :class:`jax.sharding.Mesh` of shape ``(jax.device_count(),)`` with the axis name
    ``'data'``.

  Example:
    >>> import jax
    >>> mesh = make_mesh()
    >>> mesh.axis_names, mesh.size == jax.device_count()
    (('data',), True)
  """
  # Auto axes: XLA propagates the batch sharding through the model (an embedding lookup by
  # sharded token ids included) and inserts the all-reduces. Explicit axes, make_mesh's
  # default, would make every such gather name its output sharding.
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross entropy with integer ``labels``, computed in float32."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def init_variables(model: nn.Module, rng: jax.Array, sample_x: np.ndarray) -> dict[str, Any]:
  """The model's ``params`` and ``batch_stats`` (possibly empty) for inputs like ``sample_x``.

  Initialises ``model`` in inference mode (``train=False``) with ``rng`` split into the
  ``'params'`` and ``'dropout'`` keys. The variables depend on ``sample_x`` only through its
  shape beyond the batch axis, so one example is enough.

  Args:
    model: an unbound linen module (e.g. from :func:`models.get_model`).
    rng: a JAX PRNG key; the run uses ``jax.random.key(config.seed)``.
    sample_x: a batch of inputs, ``[n, *image_shape]`` (``n = 1`` will do).

  Returns:
    ``{"params": ..., "batch_stats": ...}``; ``batch_stats`` is ``{}`` for a model without
    BatchNorm.

  Example:
    >>> import jax, numpy as np
    >>> from models import get_model
    >>> model = get_model("mlp", features=(16,), num_classes=10)
    >>> variables = init_variables(model, jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))
    >>> jax.tree.map(np.shape, variables["params"]["Dense_0"]), variables["batch_stats"]
    ({'bias': (16,), 'kernel': (64, 16)}, {})
  """
  return _init_variables(model, rng, jnp.asarray(sample_x))


@functools.partial(jax.jit, static_argnums=0)
def _init_variables(model: nn.Module, rng: jax.Array, sample_x: jax.Array) -> dict[str, Any]:
  # Jitted: one compilation instead of one dispatch per initialiser (about 10x faster on a CPU
  # for a ResNet); linen modules are hashable, so one model compiles once.
  params_key, dropout_key = jax.random.split(rng)
  variables = model.init({"params": params_key, "dropout": dropout_key}, sample_x, train=False)
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def create_state(
    model: nn.Module,
    variables: dict[str, Any],
    optimizer: OptimizerConfig,
    *,
    seed: int,
    steps_per_epoch: int,
    total_steps: int,
    dataset_size: int,
    batch_size: int,
    accumulation_steps: int = 1,
) -> TrainState:
  """A fresh :class:`TrainState` for ``optimizer`` holding a copy of ``variables``.

  The copy lets several states start from the same variables although the train
  step donates (invalidates) the buffers of the state it is given. The optimizer is built by
  :func:`train.optimizers.make_optimizer` from the run's shape; the state starts at step 0
  with the dropout key ``jax.random.key(seed + 1)``.

  Args:
    model: the linen module; the state keeps ``model.apply``.
    variables: ``{"params": ..., "batch_stats": ...}`` from :func:`init_variables`.
    optimizer: the optimizer's configuration.
    seed: the run's seed (the dropout key is drawn from ``seed + 1``).
    steps_per_epoch: updates per epoch (SLS's step-size reset, TLR's window).
    total_steps: updates of the whole run (the schedules' length).
    dataset_size: training examples (LABPAL's noise adaptation).
    batch_size: examples per update, global over all devices (LABPAL's noise adaptation).
    accumulation_steps: micro-batches per update (gradient accumulation; 1 for none).

  Returns:
    The state, with ``tx``, ``needs`` and ``l2`` of the built optimizer.

  Example:
    >>> import jax, numpy as np
    >>> from models import get_model
    >>> from train import OptimizerConfig
    >>> model = get_model("mlp", features=(16,), num_classes=10)
    >>> variables = init_variables(model, jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))
    >>> state = create_state(model, variables, OptimizerConfig("sgd", weight_decay=1e-4),
    ...                      seed=0, steps_per_epoch=44, total_steps=880, dataset_size=1438,
    ...                      batch_size=32)
    >>> int(state.step), state.l2, state.needs.metric
    (0, 0.0001, None)
    >>> state.params["Dense_0"]["kernel"] is variables["params"]["Dense_0"]["kernel"]
    False
  """
  built = make_optimizer(
      optimizer,
      steps_per_epoch=steps_per_epoch,
      total_steps=total_steps,
      dataset_size=dataset_size,
      batch_size=batch_size,
  )
  params = jax.tree.map(jnp.array, variables["params"])
  batch_stats = jax.tree.map(jnp.array, variables["batch_stats"])
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=batch_stats,
      # A copy of every leaf: some optimizers (optax.contrib.cocob) put one
      # array in two fields, which a donated state must not have.
      opt_state=jax.tree.map(lambda x: jnp.array(x, copy=True), built.tx.init(params)),
      rng=jax.random.key_data(jax.random.key(seed + 1)),
      apply_fn=model.apply,
      tx=built.tx,
      needs=built.needs,
      l2=built.l2,
      accumulation_steps=accumulation_steps,
  )


def find_in_state(opt_state: Any, key: str) -> Any:
  """The value named ``key`` in an optimizer state, or None when there is none.

  :func:`optax.tree.get` (which gives None for a missing name: SGD's state has no
  ``num_evals``), except where the name occurs twice, as ``learning_rate`` does in
  a scheduled :func:`optax.inject_hyperparams` state (the current value and the
  schedule's own state): there the array is the one meant.
  The train step logs ``learning_rate`` and ``num_evals`` this way.

  Args:
    opt_state: the state of any optimizer of :data:`train.optimizers.OPTIMIZERS`
      (or any optax state).
    key: the name of a state field or hyperparameter, e.g. ``"learning_rate"``.

  Returns:
    The value: an array, or a tree of arrays (a per-layer learning rate); None
    when ``opt_state`` holds no value of that name.

  Example:
    >>> import jax.numpy as jnp
    >>> from train import OptimizerConfig, make_optimizer
    >>> sgd = OptimizerConfig("sgd", learning_rate=0.1, schedule="cosine")
    >>> state = make_optimizer(sgd, steps_per_epoch=2, total_steps=8).tx.init(jnp.ones(2))
    >>> round(float(find_in_state(state, "learning_rate")), 6), find_in_state(state, "num_evals")
    (0.1, None)
  """
  try:
    return optax.tree.get(opt_state, key)
  except KeyError:
    return optax.tree.get(opt_state, key, filtering=lambda _, value: isinstance(value, jax.Array))


def _per_example(losses: jax.Array) -> jax.Array:
  """Per-example values ``[B]`` from per-example or per-token ones (``[B, T]``: the mean over T)."""
  return jnp.mean(losses, axis=tuple(range(1, losses.ndim))) if losses.ndim > 1 else losses


def peer_step_size(opt_state: Any) -> jax.Array | None:
  """The step size a parameter-free peer chose for its last update, or None for other states.

  Prodigy: its estimate ``estim_lr`` (the step on Adam's direction at optax's default
  ``learning_rate=1``). DoG: ``max_dist / sqrt(sum_sq_norm_grads)`` as of the last update
  (its step on the gradient at ``learning_rate=1``; the first update's fixed initial step
  is not reproduced). Logged as the run's ``learning_rate`` so that the quality figures and
  the gap diagnosis compare them with the line searches' steps.

  Args:
    opt_state: an optimizer state.

  Returns:
    A float32 scalar, or None when ``opt_state`` holds neither peer.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> state = optax.contrib.prodigy().init(jnp.ones(2))
    >>> round(float(peer_step_size(state)), 9), peer_step_size(optax.sgd(0.1).init(jnp.ones(2)))
    (1e-06, None)
  """
  estimate = find_in_state(opt_state, "estim_lr")
  if estimate is not None:
    return jnp.asarray(estimate, jnp.float32)
  max_dist = find_in_state(opt_state, "max_dist")
  squares = find_in_state(opt_state, "sum_sq_norm_grads")
  if max_dist is not None and squares is not None:
    return (max_dist / jnp.sqrt(squares + 1e-8)).astype(jnp.float32)
  return None


def _scalar_rate(rate: Any) -> jax.Array:
  """The logged step size: the mean over the leaves of a per-layer rate tree."""
  leaves = [jnp.mean(jnp.asarray(x, jnp.float32)) for x in jax.tree.leaves(rate)]
  return jnp.mean(jnp.stack(leaves))


def train_step(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[TrainState, dict[str, Any]]:
  r"""One update on the batch ``(x, y)``.

  Computes the loss of the whole batch of :math:`B` examples,

  .. math::

    L(w) = \frac{1}{B} \sum_{i=1}^{B} \ell(f(w; x_i), y_i) + \frac{\lambda}{2}
    \lVert w \rVert^2,

  with :math:`\ell` the softmax cross entropy (in float32; for a language model, whose labels
  are ``[B, T]`` tokens, the mean over the tokens) and :math:`\lambda` = ``state.l2``, and its
  gradient in train mode; calls ``state.tx.update`` with ``value``, ``grad``, ``value_fn``
  (:math:`L` as a function of the parameters, on the same batch and batch statistics, taking
  the dropout key as its keyword argument ``dropout_key``) and ``dropout_key`` itself, which
  ``update`` routes to every ``value_fn`` call, and ``metric_fn``/``metric_value`` or
  ``per_example_loss_fn`` where ``state.needs`` says so; applies the updates and commits the
  batch statistics of the main pass (those of the line search's trials are dropped).

  With ``state.accumulation_steps`` :math:`k > 1` the batch is split into :math:`k`
  micro-batches (:func:`optax_ls.accumulate`: a :func:`jax.lax.scan`, so activation memory
  does not grow with :math:`k`); the loss, the gradient and every ``value_fn`` trial are the
  means over the same micro-batches, i.e. :math:`L` above up to rounding (BatchNorm aside:
  its batch statistics are then those of each micro-batch, and the running statistics take
  their mean).

  The harness runs it as ``jax.jit(train_step, donate_argnums=0)`` with the state replicated
  and ``x``, ``y`` sharded over the mesh's ``'data'`` axis (:func:`compiled_steps`). Under
  ``jit`` the mean above is over the global batch, whatever the sharding: XLA all-reduces the
  per-device sums, so every device computes the same loss, gradient and line-search decision
  and the replicas stay identical. The dropout key of step :math:`t` is
  ``fold_in(state.rng, t)``, the same for every trial of a search.

  Args:
    state: the current state (donated by the harness's compiled step).
    x: a batch of inputs as :func:`train.data.batches` gives them: ``[B, *image_shape]``
      float32 normalised images, or int32 tokens ``[B, T]``.
    y: the integer labels, ``[B]``, or the next tokens ``[B, T]`` of a language model.

  Returns:
    The new state and the metrics ``loss`` (:math:`L(w)` above) and ``accuracy`` of the batch
    before the update, ``learning_rate`` (the step size applied; the mean rate for
    per-layer rates; absent for optimizers without one), ``num_evals`` (where
    the optimizer counts them), ``grad_norm`` and ``update_norm`` (global :math:`\ell_2`
    norms).

  Example:
    >>> import jax, numpy as np, optax
    >>> from models import get_model
    >>> from train import OptimizerConfig
    >>> from train.train import compiled_steps, global_batch, replicate
    >>> model = get_model("mlp", features=(16,), num_classes=10)
    >>> x = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype(np.float32)
    >>> y = np.arange(32) % 10
    >>> variables = init_variables(model, jax.random.key(0), x[:1])
    >>> sgd = OptimizerConfig("sgd", learning_rate=0.1)
    >>> state = create_state(model, variables, sgd, seed=0, steps_per_epoch=4, total_steps=40,
    ...                      dataset_size=128, batch_size=32)
    >>> mesh = make_mesh()
    >>> step, _ = compiled_steps(mesh)
    >>> new_state, metrics = step(replicate(state, mesh), *global_batch(mesh, x, y))
    >>> int(new_state.step), sorted(metrics)
    (1, ['accuracy', 'grad_norm', 'learning_rate', 'loss', 'update_norm'])
    >>> logits = model.apply(variables, x)
    >>> loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    >>> bool(np.isclose(metrics["loss"], loss, rtol=1e-5))  # the mean over all 32 examples
    True
    >>> bool(np.isclose(metrics["update_norm"], 0.1 * metrics["grad_norm"]))  # SGD: -0.1 g
    True
  """
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  k = state.accumulation_steps
  metric = getattr(optax_ls, state.needs.metric) if state.needs.metric in (
      "accuracy", "smooth_accuracy") else None

  def forward(params: Any, x: jax.Array, dropout_key: jax.Array) -> tuple[jax.Array, Any]:
    logits, mutated = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats},
        x,
        train=True,
        rngs={"dropout": dropout_key},
        mutable=["batch_stats"],
    )
    return logits, mutated.get("batch_stats", {})

  def regulariser(params: Any) -> jax.Array:
    if not state.l2:
      return jnp.zeros((), jnp.float32)
    return 0.5 * state.l2 * optax.tree.norm(params, squared=True).astype(jnp.float32)

  def batch_loss(params: Any, batch: tuple[jax.Array, jax.Array], dropout_key: jax.Array):
    """The data loss of a (micro-)batch, with its accuracy, statistics and metric."""
    logits, batch_stats = forward(params, batch[0], dropout_key)
    aux = {"accuracy": jnp.mean(jnp.argmax(logits, axis=-1) == batch[1]),
           "batch_stats": batch_stats}
    if metric is not None:
      aux["metric"] = metric(logits, batch[1])
    return jnp.mean(cross_entropy(logits, batch[1])), aux

  # Over the k micro-batches of (x, y), one after the other (optax_ls.accumulate: a lax.scan);
  # k = 1 is the plain batch. The running statistics of BatchNorm average those of the
  # micro-batches.
  grad_fn = optax_ls.accumulate(jax.value_and_grad(batch_loss, has_aux=True), k)
  (loss, aux), grads = grad_fn(state.params, (x, y), key)
  if state.l2:
    reg, reg_grads = jax.value_and_grad(regulariser)(state.params)
    loss = loss + reg
    grads = jax.tree.map(jnp.add, grads, reg_grads)
  data_loss = optax_ls.accumulate(lambda p, b, r: batch_loss(p, b, r)[0], k)

  def value_fn(params: Any, *, dropout_key: jax.Array) -> jax.Array:
    # The dropout key reaches the search through update's keyword arguments: every trial of
    # one update sees the same masks, so the search compares one objective.
    return data_loss(params, (x, y), dropout_key) + regulariser(params)

  extra: dict[str, Any] = {}
  if metric is not None:
    metric_of = optax_ls.accumulate(lambda p, b: metric(forward(p, b[0], key)[0], b[1]), k)
    extra["metric_fn"] = lambda p: metric_of(p, (x, y))
    extra["metric_value"] = aux["metric"]
  if state.needs.per_example:

    def per_example_loss_fn(p: Any) -> jax.Array:
      # Per-example losses of every micro-batch, back in the batch's order.
      micro = jnp.reshape(jnp.arange(x.shape[0]), (-1, k)).T
      losses = jax.lax.map(
          lambda idx: _per_example(cross_entropy(forward(p, x[idx], key)[0], y[idx])), micro)
      return jnp.reshape(losses.T, (-1,)) + regulariser(p)

    extra["per_example_loss_fn"] = per_example_loss_fn
  updates, opt_state = state.tx.update(
      grads, state.opt_state, state.params, value=loss, grad=grads, value_fn=value_fn,
      dropout_key=key, **extra
  )
  batch_stats = aux["batch_stats"]
  params = optax.apply_updates(state.params, updates)
  metrics = {
      "loss": loss,
      "accuracy": aux["accuracy"],
      "grad_norm": optax.tree.norm(grads),
      "update_norm": optax.tree.norm(updates),
  }
  rate = find_in_state(opt_state, "learning_rate")
  if rate is None:
    rate = peer_step_size(opt_state)  # Prodigy's and DoG's own step sizes
  if rate is not None:
    metrics["learning_rate"] = _scalar_rate(rate)
  num_evals = find_in_state(opt_state, "num_evals")
  if num_evals is not None:
    metrics["num_evals"] = num_evals
  no_step_reason = find_in_state(opt_state, "no_step_reason")  # optax_ls methods: 0 = a step
  if no_step_reason is not None:
    metrics["no_step_reason"] = no_step_reason
  new_state = state.replace(
      step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  return new_state, metrics


def eval_step(state: TrainState, x: jax.Array, y: jax.Array, mask: jax.Array) -> dict[str, Any]:
  """Sums of the loss and of correct predictions over the unmasked examples (inference mode)."""
  logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, x,
                          train=False)
  weights = mask.astype(jnp.float32)
  correct = (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)
  return {
      "loss_sum": jnp.sum(_per_example(cross_entropy(logits, y)) * weights),
      "correct": jnp.sum(_per_example(correct) * weights),
      "count": jnp.sum(weights),
  }


@functools.cache
def compiled_steps(mesh: Mesh) -> tuple[Callable[..., Any], Callable[..., Any]]:
  """The jitted train and eval steps on ``mesh`` (state replicated, batch on ``'data'``)."""
  replicated = NamedSharding(mesh, P())
  train = jax.jit(train_step, donate_argnums=0, out_shardings=(replicated, replicated))
  evaluate = jax.jit(eval_step, out_shardings=replicated)
  return train, evaluate


def _checkpoint_manager(config: Config, optimizer: OptimizerConfig) -> Any:
  """The checkpoint manager of ``optimizer``'s run, or None when the run keeps none.

  A run that does not resume refuses a directory that holds checkpoints already:
  orbax would save none of its own there until it passed the earlier run's latest
  step, and a later ``--resume`` would continue the earlier run.
  """
  if config.out is None or not (config.checkpoint_every or config.resume):
    return None
  directory = os.path.join(config.out, "checkpoints", optimizer.name)
  manager = checkpoint.manager(directory)
  latest = manager.latest_step()
  if latest is not None and not config.resume:
    manager.close()
    raise ConfigError(
        f"{directory} holds checkpoints of an earlier run (latest step {latest}). Pass --resume "
        "(Config.resume) to continue that run, or choose another --out (or delete the directory) "
        "to start afresh."
    )
  return manager


def replicate(state: TrainState, mesh: Mesh) -> TrainState:
  """``state`` placed on every device of ``mesh``: a full copy per device.

  The data-parallel layout of the harness: parameters, BatchNorm statistics and
  the optimizer state are replicated (``PartitionSpec()``), the batch is sharded
  (:func:`global_batch`), so every device applies the same update, line-search
  decisions included.

  Args:
    state: a :class:`TrainState` (or any pytree of arrays).
    mesh: the mesh from :func:`make_mesh`.

  Returns:
    ``state`` with every array on all devices of ``mesh``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> placed = replicate({"w": jnp.ones(3)}, make_mesh())
    >>> placed["w"].sharding.is_fully_replicated
    True
    >>> len(placed["w"].addressable_shards) == jax.device_count()  # one copy per device
    True
  """
  return jax.device_put(state, NamedSharding(mesh, P()))


def global_batch(mesh: Mesh, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
  """Global arrays sharded on ``'data'`` from the same global batch read by every process.

  Each process passes its rows (``process_index``-th slice) to
  :func:`jax.make_array_from_process_local_data`; with one process that is the
  whole batch. The leading (batch) axis is split evenly over the devices of
  ``mesh``: with ``D`` devices, device ``d`` holds rows ``d B/D`` to
  ``(d + 1) B/D - 1`` of a batch of ``B``, so ``B`` must be a multiple of ``D``.

  Args:
    mesh: the mesh from :func:`make_mesh` (one axis, ``'data'``).
    *arrays: the global batch's arrays (e.g. images and labels), the same on every
      process, each with the batch on its first axis.

  Returns:
    One :class:`jax.Array` per input, sharded ``PartitionSpec('data')``.

  Example:
    >>> import numpy as np
    >>> import jax
    >>> n = 2 * jax.device_count()  # a multiple of the number of devices
    >>> x, y = global_batch(make_mesh(), np.zeros((n, 4), np.float32), np.arange(n))
    >>> x.sharding.spec == jax.sharding.PartitionSpec("data")
    True
    >>> [int(s.data[0]) for s in y.addressable_shards] == list(range(0, n, 2))  # 2 rows each
    True
  """
  sharding = NamedSharding(mesh, P("data"))
  count, index = jax.process_count(), jax.process_index()
  out = []
  for array in arrays:
    rows = len(array) // count
    local = array[index * rows : (index + 1) * rows]
    out.append(jax.make_array_from_process_local_data(sharding, local, array.shape))
  return tuple(out)


def evaluate(state: TrainState, source: Any, spec: data.DataSpec, batch_size: int,
             mesh: Mesh) -> dict[str, float]:
  r"""The mean loss and the accuracy of ``state`` on the whole split ``source``.

  In inference mode (running BatchNorm statistics, no dropout) and without the L2 term: over
  the :math:`n` examples of ``source``,
  :math:`\frac{1}{n} \sum_i \ell(f(w; x_i), y_i)` and
  :math:`\frac{1}{n} \sum_i [\arg\max f(w; x_i) = y_i]`. The batches of
  :func:`train.data.eval_batches` are sharded over ``mesh`` like the training batches; the
  last one is padded and its padding masked out, so every example counts once.

  Args:
    state: the state to evaluate (replicated on ``mesh``, or on the default device).
    source: the split, a :class:`train.data.Source`.
    spec: the data set's :class:`train.data.DataSpec` (normalisation, image shape).
    batch_size: examples per evaluation batch, a multiple of the number of devices of
      ``mesh``.
    mesh: the mesh of :func:`make_mesh`.

  Returns:
    ``{"loss": ..., "accuracy": ...}`` as Python floats.

  Example:
    >>> import jax, numpy as np
    >>> from models import get_model
    >>> from train import OptimizerConfig, data
    >>> _, test, spec = data.load("digits", test_fraction=0.2)
    >>> model = get_model("mlp", features=(16,), num_classes=spec.num_classes)
    >>> variables = init_variables(model, jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))
    >>> state = create_state(model, variables, OptimizerConfig("sgd"), seed=0, steps_per_epoch=1,
    ...                      total_steps=1, dataset_size=1, batch_size=1)
    >>> result = evaluate(state, test, spec, batch_size=64, mesh=make_mesh())
    >>> sorted(result), 0.0 <= result["accuracy"] <= 1.0
    (['accuracy', 'loss'], True)
    >>> bool(abs(result["loss"] - np.log(10)) < 0.5)  # near chance before training
    True
  """
  _, eval_fn = compiled_steps(mesh)
  # Without the optimizer, whose state and static fields would make every optimizer of a run
  # compile its own eval step: the model alone decides the compilation.
  model_state = state.replace(params=eval_params(state), opt_state=None, tx=None, needs=Needs(),
                              l2=0.0, accumulation_steps=1)
  totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
  for x, y, mask in data.eval_batches(source, spec, batch_size=batch_size):
    sums = jax.device_get(eval_fn(model_state, *global_batch(mesh, x, y, mask)))
    for key in totals:
      totals[key] += float(sums[key])
  count = max(totals["count"], 1.0)
  return {"loss": totals["loss_sum"] / count, "accuracy": totals["correct"] / count}


def eval_params(state: TrainState) -> Any:
  """The parameters to evaluate: ``state.params``, or a schedule-free optimizer's average.

  Schedule-free methods (:func:`optax.contrib.schedule_free_adamw`) train at an
  interpolation of two sequences and are meant to be evaluated at their average
  (:func:`optax.contrib.schedule_free_eval_params`); every other optimizer is evaluated
  where it stands.

  Args:
    state: a :class:`TrainState`.

  Returns:
    A tree shaped like ``state.params``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from models import get_model
    >>> from train import OptimizerConfig
    >>> model = get_model("mlp", features=(4,), num_classes=3)
    >>> variables = init_variables(model, jax.random.key(0), jnp.zeros((1, 2, 2, 1)))
    >>> state = create_state(model, variables, OptimizerConfig("sgd"), seed=0, steps_per_epoch=1,
    ...                      total_steps=1, dataset_size=1, batch_size=1)
    >>> eval_params(state) is state.params
    True
  """
  is_schedule_free = lambda x: isinstance(x, optax.contrib.ScheduleFreeState)  # noqa: E731
  for leaf in jax.tree.leaves(state.opt_state, is_leaf=is_schedule_free):
    if is_schedule_free(leaf):
      return optax.contrib.schedule_free_eval_params(leaf, state.params)
  return state.params


@dataclasses.dataclass
class _Window:
  """Step metrics since the last metrics line, and the time they took."""

  metrics: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  start: float = dataclasses.field(default_factory=time.perf_counter)


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _summarise_window(window: _Window, step: int, epoch: int, batch_size: int) -> dict[str, Any]:
  fetched = jax.device_get(window.metrics)
  seconds = time.perf_counter() - window.start
  record: dict[str, Any] = {
      "step": step,
      "epoch": epoch,
      "loss": float(np.mean([m["loss"] for m in fetched])),
      "accuracy": float(np.mean([m["accuracy"] for m in fetched])),
      "grad_norm": float(np.mean([m["grad_norm"] for m in fetched])),
      "update_norm": float(np.mean([m["update_norm"] for m in fetched])),
      "images_per_s": len(fetched) * batch_size / max(seconds, 1e-9),
  }
  if "learning_rate" in fetched[-1]:
    record["learning_rate"] = float(fetched[-1]["learning_rate"])
  if "num_evals" in fetched[-1]:
    record["evals_per_step"] = float(np.mean([m["num_evals"] for m in fetched]))
  return record


def train_one(
    config: Config,
    optimizer: OptimizerConfig,
    model: nn.Module,
    variables: dict[str, Any],
    train_source: Any,
    test_source: Any,
    spec: data.DataSpec,
    mesh: Mesh,
    *,
    verbose: bool = True,
) -> tuple[TrainState, dict[str, list[dict[str, Any]]]]:
  """Trains ``model`` from ``variables`` with ``optimizer``; returns the state and the records.

  Runs ``min(config.epochs * S, config.max_steps)`` updates of :func:`train_step`, ``S`` =
  ``len(train_source) // config.batch_size`` per epoch (the last partial batch is dropped),
  on the batches of :func:`train.data.batches` (their order and augmentation fixed by
  ``(config.seed, epoch)``), sharded over ``mesh``. The schedules span all ``config.epochs``
  even when ``max_steps`` stops the run earlier. With ``config.out`` and
  ``config.checkpoint_every``, saves a checkpoint under ``out/checkpoints/<optimizer.name>``
  every that many updates, and with ``config.resume`` continues from the latest one, the
  records included.

  Train records (every ``config.log_every`` updates, and at the last): ``step``, ``epoch``, the
  window means of ``loss``, ``accuracy``, ``grad_norm``, ``update_norm``,
  ``evals_per_step`` (where the optimizer counts them), the last ``learning_rate`` and
  ``images_per_s``. Eval records (every epoch, and where ``max_steps`` stops a run inside
  one): ``epoch``, ``step``, ``test_loss``, ``test_accuracy`` (:func:`evaluate`),
  ``train_loss`` (the epoch's mean mini-batch loss), ``evals_per_step`` (the mean over the
  epoch's updates, where the optimizer counts evaluations) and ``seconds`` (the epoch's
  training and evaluation).

  Args:
    config: the run's configuration (epochs, batch size, seed, logging, checkpoints).
    optimizer: the optimizer to train with (one of ``config.optimizers``, or any other).
    model: the linen module.
    variables: the initial ``{"params", "batch_stats"}`` (:func:`init_variables`); copied,
      never donated, so several optimizers can start from them.
    train_source: the training split (a :class:`train.data.Source`).
    test_source: the split evaluated every epoch.
    spec: the data set's :class:`train.data.DataSpec`.
    mesh: the device mesh (:func:`make_mesh`); ``config.batch_size`` must be a multiple of
      the number of devices.
    verbose: show a progress bar (stderr) and a line per epoch (stdout), on process 0.

  Returns:
    The final :class:`TrainState` and ``{"train": [...], "eval": [...]}``, the records.

  Raises:
    ValueError: when the run keeps checkpoints (``config.out`` with
      ``config.checkpoint_every``), does not resume, and its checkpoint directory holds an
      earlier run's checkpoints (:func:`run` checks this for every optimizer before any
      trains).

  Example:
    >>> import dataclasses, jax, numpy as np
    >>> from models import get_model
    >>> from train import data, get_config
    >>> config = dataclasses.replace(get_config("digits_mlp"), epochs=1, max_steps=3)
    >>> train, test, spec = data.load(config.dataset, test_fraction=config.test_fraction)
    >>> model = get_model("mlp", features=(16,), num_classes=spec.num_classes)
    >>> variables = init_variables(model, jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))
    >>> sgd = config.optimizers[1]
    >>> state, records = train_one(config, sgd, model, variables, train, test, spec, make_mesh(),
    ...                            verbose=False)
    >>> sgd.name, int(state.step), [r["step"] for r in records["eval"]]
    ('sgd', 3, [3])
    >>> sorted(records["eval"][0])
    ['epoch', 'seconds', 'step', 'test_accuracy', 'test_loss', 'train_loss']
  """
  steps_per_epoch = data.steps_per_epoch(len(train_source), config.batch_size)
  schedule_steps = steps_per_epoch * config.epochs
  total_steps = schedule_steps
  if config.max_steps is not None:
    total_steps = min(total_steps, config.max_steps)
  state = create_state(
      model,
      variables,
      optimizer,
      seed=config.seed,
      steps_per_epoch=steps_per_epoch,
      total_steps=schedule_steps,
      dataset_size=len(train_source),
      batch_size=config.batch_size,
      accumulation_steps=config.accumulation_steps,
  )
  state = replicate(state, mesh)
  records: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
  manager = _checkpoint_manager(config, optimizer)
  window = _Window()
  epoch_losses: list[Any] = []
  epoch_evals: list[Any] = []  # num_evals of the epoch's steps, where the optimizer counts them
  epoch_no_step: list[Any] = []  # no_step_reason of the epoch's steps (optax_ls methods)
  if manager is not None and config.resume:
    restored = checkpoint.restore(manager, state)
    if restored is not None:
      state, extra = restored
      state = replicate(state, mesh)
      records, epoch_losses, window.metrics = (
          extra["records"], extra["epoch_losses"], extra["window"]
      )
      epoch_evals = extra.get("epoch_evals", [])  # absent from older checkpoints
      epoch_no_step = extra.get("epoch_no_step", [])
  train_fn, _ = compiled_steps(mesh)
  step = int(state.step)
  eval_batch = _round_up(config.eval_batch_size, jax.device_count())

  def eval_record(state, epoch, step, epoch_losses, epoch_evals, epoch_start,
                  epoch_no_step) -> dict[str, Any]:
    test = evaluate(state, test_source, spec, eval_batch, mesh)
    losses = [float(v) for v in jax.device_get(epoch_losses)]
    record = {
        "epoch": epoch,
        "step": step,
        "train_loss": float(np.mean(losses)) if losses else float("nan"),
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "seconds": time.perf_counter() - epoch_start,
    }
    if epoch_evals:
      record["evals_per_step"] = float(np.mean([float(v) for v in jax.device_get(epoch_evals)]))
    if epoch_no_step:
      reasons = [int(v) for v in jax.device_get(epoch_no_step)]
      record["no_step_updates"] = sum(r != 0 for r in reasons)
      record["no_step_reasons"] = {optax_ls.NO_STEP_REASONS[r]: reasons.count(r)
                                   for r in sorted(set(reasons)) if r != 0}
    if spec.kind == "lm":  # nats per character -> bits per character
      record["train_bits_per_char"] = record["train_loss"] / math.log(2)
      record["test_bits_per_char"] = record["test_loss"] / math.log(2)
    return record

  def echo(line: str) -> None:
    if verbose and jax.process_index() == 0:
      tqdm.write(line, file=sys.stdout)

  bar = tqdm(
      total=total_steps,
      initial=step,
      desc=optimizer.name,
      unit="step",
      file=sys.stderr,
      disable=not verbose or jax.process_index() != 0,
      dynamic_ncols=True,
  )
  epoch_start = time.perf_counter()
  while step < total_steps:
    epoch, start_batch = divmod(step, steps_per_epoch)
    batches: Iterator[tuple[np.ndarray, np.ndarray]] = data.batches(
        train_source, spec, batch_size=config.batch_size, seed=config.seed, epoch=epoch,
        augment=config.augment, start_batch=start_batch,
    )
    for x, y in batches:
      state, metrics = train_fn(state, *global_batch(mesh, x, y))
      step += 1
      window.metrics.append(metrics)
      epoch_losses.append(metrics["loss"])
      if "num_evals" in metrics:
        epoch_evals.append(metrics["num_evals"])
      if "no_step_reason" in metrics:
        epoch_no_step.append(metrics["no_step_reason"])
      bar.update(1)
      if step % config.log_every == 0 or step == total_steps:
        record = _summarise_window(window, step, epoch, config.batch_size)
        records["train"].append(record)
        postfix = {"loss": f"{record['loss']:.4f}", "acc": f"{record['accuracy']:.3f}",
                   "img/s": f"{record['images_per_s']:.0f}"}
        if "learning_rate" in record:
          postfix["lr"] = f"{record['learning_rate']:.3g}"
        bar.set_postfix(postfix)
        window = _Window()
      if step % steps_per_epoch == 0:
        eval_start = time.perf_counter()
        records["eval"].append(eval_record(state, epoch, step, epoch_losses, epoch_evals,
                                           epoch_start, epoch_no_step))
        echo(report.format_eval(optimizer.name, records["eval"][-1], records["train"]))
        if records["eval"][-1].get("no_step_updates"):
          echo(report.format_no_step(optimizer.name, records["eval"][-1]))
        epoch_losses, epoch_evals, epoch_start = [], [], time.perf_counter()
        epoch_no_step = []
        window.start += epoch_start - eval_start  # evaluating is not training throughput
      if manager is not None and config.checkpoint_every and step % config.checkpoint_every == 0:
        # The records and the partial sums of the epoch and of the metrics
        # window travel with the arrays, so that a resumed run writes the same
        # records (up to timings) as an uninterrupted one.
        fetched = jax.device_get((epoch_losses, window.metrics, epoch_evals, epoch_no_step))
        checkpoint.save(manager, state, {
            "records": records,
            "epoch_losses": [float(v) for v in fetched[0]],
            "window": [{k: float(v) for k, v in m.items()} for m in fetched[1]],
            "epoch_evals": [float(v) for v in fetched[2]],
            "epoch_no_step": [int(v) for v in fetched[3]],
        })
      if step >= total_steps:
        break
  if step % steps_per_epoch and (not records["eval"] or records["eval"][-1]["step"] != step):
    # A run stopped by `max_steps` inside an epoch is evaluated where it stopped.
    records["eval"].append(eval_record(state, step // steps_per_epoch, step, epoch_losses,
                                        epoch_evals, epoch_start, epoch_no_step))
    echo(report.format_eval(optimizer.name, records["eval"][-1], records["train"]))
    if records["eval"][-1].get("no_step_updates"):
      echo(report.format_no_step(optimizer.name, records["eval"][-1]))
  bar.close()
  if manager is not None:
    manager.wait_until_finished()
    manager.close()
  return state, records


def run(config: Config, *, verbose: bool = True) -> History:
  """Trains ``config.model`` with each of ``config.optimizers``, from the same initialisation.

  Validates ``config``, initialises a multi-host run when the environment asks for one
  (:func:`maybe_initialize_distributed`), loads ``config.dataset``
  (:func:`train.data.load`), builds the model with the data set's number of classes
  (:func:`models.get_model`), initialises it once from ``jax.random.key(config.seed)``
  (:func:`init_variables`) and trains each optimizer in turn with :func:`train_one` on a
  mesh over all devices (:func:`make_mesh`). All optimizers see the same batches in the same
  order. With ``verbose``, shows a progress bar per optimizer (loss, accuracy, step size,
  images/s) on stderr and a line per epoch and a summary on stdout. With ``config.out``,
  writes ``metrics.jsonl`` (one JSON object per line) and ``curves.png``, and
  checkpoints under ``out/checkpoints/<optimizer>`` every
  ``config.checkpoint_every`` updates; ``config.resume`` continues from them.

  Args:
    config: the run (see :class:`train.config.Config` and :func:`train.config.get_config`).
    verbose: print progress and results (process 0 only); False runs silently.

  Returns:
    Per optimizer name, its train and eval records (see :func:`train_one`).

  Raises:
    ConfigError: (a ``ValueError``; a ``TypeError`` too for an argument a factory does not
      take) before any optimizer trains, for an invalid ``config``
      (:meth:`train.config.Config.validate`), a data set that cannot be read as given (an
      unknown name, a malformed file), a ``batch_size`` larger than the training split or not
      a multiple of the number of devices, an optimizer or model its arguments cannot build,
      or checkpoints of an earlier run where this one would save its own.
    FileNotFoundError: for missing data (a local file, a tfds data set not prepared).

  Example:
    >>> import dataclasses
    >>> from train import OptimizerConfig, get_config
    >>> config = dataclasses.replace(get_config("digits_mlp"), epochs=1, max_steps=4,
    ...                              optimizers=(OptimizerConfig("sls"),))
    >>> history = run(config, verbose=False)
    >>> list(history), [r["step"] for r in history["sls"]["train"]]
    (['sls'], [4])
    >>> bool(history["sls"]["train"][-1]["learning_rate"] > 0)
    True
  """
  config.validate()
  maybe_initialize_distributed()
  start = time.perf_counter()
  lengths = {} if config.sequence_length is None else {
      "context": config.sequence_length, "max_length": config.sequence_length}
  try:
    train_source, test_source, spec = data.load(
        config.dataset, data_dir=config.data_dir, seed=config.seed,
        test_fraction=config.test_fraction, **lengths,
    )
  except ValueError as e:  # an unknown data set, a malformed file (missing ones stay as they are)
    raise ConfigError(str(e)) from e
  if config.batch_size > len(train_source):
    raise ConfigError(
        f"`batch_size` {config.batch_size} exceeds the {len(train_source)} training examples."
    )
  steps_per_epoch = data.steps_per_epoch(len(train_source), config.batch_size)
  # Before any optimizer trains: every optimizer's arguments, and no earlier run's checkpoints
  # where one would save its own.
  for optimizer in config.optimizers:
    try:
      make_optimizer(optimizer, steps_per_epoch=steps_per_epoch,
                     total_steps=steps_per_epoch * config.epochs,
                     dataset_size=len(train_source), batch_size=config.batch_size)
    except (TypeError, ValueError) as e:
      raise config_error(e, f"optimizer {optimizer.name!r}") from e
    manager = _checkpoint_manager(config, optimizer)
    if manager is not None:
      manager.close()
  mesh = make_mesh()
  if config.batch_size % (jax.device_count() * config.accumulation_steps):
    raise ConfigError(
        f"`batch_size` {config.batch_size} must be a multiple of the {jax.device_count()} "
        f"devices times the {config.accumulation_steps} micro-batches (accumulation_steps)."
    )
  sample, _ = next(data.batches(train_source, spec, batch_size=1, seed=0, epoch=0, augment=False))
  try:  # the model's arguments (``--set model.KEY=VALUE``) show when it is built and initialised
    model = get_model(config.model, num_classes=spec.num_classes, **config.model_kwargs)
    variables = init_variables(model, jax.random.key(config.seed), sample)
  except (TypeError, ValueError) as e:
    raise config_error(e, f"model {config.model!r} with {config.model_kwargs}") from e
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
  if verbose and jax.process_index() == 0:
    print(
        f"{config.name}: {spec.name} {len(train_source)} train / {len(test_source)} test, "
        f"{config.model} ({num_params / 1e6:.3g}M params), batch {config.batch_size} on "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s), {config.epochs} epochs, "
        f"seed {config.seed}",
        flush=True,
    )
  history: History = {}
  for optimizer in config.optimizers:
    _, history[optimizer.name] = train_one(
        config, optimizer, model, variables, train_source, test_source, spec, mesh,
        verbose=verbose,
    )
  wall = time.perf_counter() - start
  if config.out is not None and jax.process_index() == 0:
    report.write_metrics(history, config, config.out)
    report.plot_curves(history, config.out, title=config.name)
  if verbose and jax.process_index() == 0:
    print(report.summary(history, wall, config.out))
  return history
