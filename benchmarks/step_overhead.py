"""Per-step cost of the line searches against SGD and a one-extra-forward floor.

Each row is one jitted train step ``(params, opt_state, model_state, x, y) ->
(params, opt_state, model_state, evals)``: ``jax.value_and_grad`` of the loss
in train mode, ``opt.update`` and ``optax.apply_updates``, as the harness's
``train/train.py::train_step`` does. ``model_state`` holds the BatchNorm
statistics (an empty dict for the MLP): the step returns those of its main
forward-backward pass, while every ``value_fn`` call normalizes with the
statistics of the batch and drops the ones it mutates. Nothing is donated.
Two models (``--model``):

* ``mlp``: ``models.get_model("mlp", features=(1000,), num_classes=10)`` on
  MNIST-shaped 28x28x1 inputs (784 after flattening);
* ``resnet20``: ``models.get_model("resnet20", num_classes=10)`` on
  CIFAR-shaped 32x32x3 inputs, BatchNorm in train mode.

Inputs are standard normal images labelled by a fixed random linear teacher,
or with ``--data DIR`` the real images of ``DIR/mnist_subset.npz`` (``mlp``) or
``DIR/cifar10_subset.npz`` (``resnet20``), normalized per channel; when the
file is absent the run says so and uses random inputs. The rows:

* ``sgd``: ``optax.sgd(0.1)``, the reference (ratio 1.0);
* ``floor``: the same SGD step plus exactly one extra forward pass of the loss
  at the trial point ``params - 0.1 * grads``, whose value gates the update so
  that XLA cannot remove it; no line search can do with less work when its
  first trial is accepted;
* the other floors (``floor_armijo``, ``floor_momentum``, ``floor_hd``,
  ``adam_floor``), the optax_ls methods and the optax baselines: see
  ``benchmarks/README.md`` for the table, and ``HARNESS_ROWS`` for the rows of
  every optimizer of ``train/optimizers.py``.

Method: every step function is compiled and warmed up first (the time of the
first call, tracing and compilation included, is reported). Then, for each
repeat, the rows run in a shuffled order, each for ``--inner`` calls followed
by ``block_until_ready``. Every row carries its parameters, optimizer state
and BatchNorm statistics forward from call to call (and from repeat to
repeat) over a fixed cycle of mini-batches, so the searches see a real
training trajectory. Reported: the median time per step over the repeats, and
the median over the repeats of the per-repeat ratios to ``sgd`` and ``floor``
(paired within a repeat, so slow drifts of the machine cancel) with their
25th-75th percentiles, the mean number of loss evaluations per step, and the
number of recompilations after the first step (the size of the step's jit
cache minus one: must be 0, except for the rows of ``EXPECTED_RECOMPILES``,
whose library compiles twice; ``--strict`` exits with status 1 otherwise).
Derived rows (``labpal_*_amortised``) combine two timed rows (see
``DERIVED``); ``TARGETS`` lists the overhead targets of the issues, checked
at the end (met / not met). On a shared CPU host, ``--single-thread`` (one XLA
thread pinned to one core) gives steadier numbers.

Run from the repository root::

  python -m benchmarks.step_overhead --repeats 40 --json /tmp/step_overhead.json
  python -m benchmarks.step_overhead --model resnet20 --repeats 5 --inner 2 \\
      --methods sgd floor sls_first pal
  python -m benchmarks.step_overhead --plot mlp.json resnet20.json --png chart.png --markdown

New models go in ``MODELS`` and new rows in ``METHODS`` (see ``register``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import models
import optax_ls

# ---------------------------------------------------------------------------
# Models: name -> builder(args) -> Problem.
# ---------------------------------------------------------------------------


class Problem(NamedTuple):
  """A classifier, its train-mode loss and the mini-batches the timed steps cycle through.

  Attributes:
    params: the initial parameters.
    model_state: the initial BatchNorm statistics (``batch_stats``; an empty
      dict for a model without BatchNorm).
    forward: ``(params, model_state, x) -> (logits, new_model_state)`` in
      train mode: BatchNorm normalizes with the batch's statistics and returns
      the updated running statistics.
    batches: a list of ``(x, y)`` device arrays, cycled through by the steps.
    description: one line for the report.
    data: where the inputs come from (``random`` or the path of the subset).
  """

  params: Any
  model_state: Any
  forward: Callable[[Any, Any, jax.Array], tuple[jax.Array, Any]]
  batches: list[tuple[jax.Array, jax.Array]]
  description: str
  data: str = "random"

  def train_loss(
      self, params: Any, model_state: Any, x: jax.Array, y: jax.Array
  ) -> tuple[jax.Array, tuple[jax.Array, Any]]:
    """The mean softmax cross entropy and, as aux, the logits and the new statistics."""
    logits, model_state = self.forward(params, model_state, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, (logits, model_state)

  def value_fn(self, model_state: Any, x: jax.Array, y: jax.Array) -> Callable[[Any], jax.Array]:
    """``params -> loss`` on the batch, mutated statistics dropped (a search's ``value_fn``)."""
    return lambda p: self.train_loss(p, model_state, x, y)[0]

  def logits_fn(self, model_state: Any, x: jax.Array) -> Callable[[Any], jax.Array]:
    """``params -> logits`` on the batch, mutated statistics dropped (for a metric's search)."""
    return lambda p: self.forward(p, model_state, x)[0]


def _random_batches(
    seed: int, n_batches: int, batch_size: int, input_shape: tuple[int, ...], n_classes: int
) -> list[tuple[jax.Array, jax.Array]]:
  """Standard normal float32 inputs labelled by a fixed random linear teacher.

  The label is ``argmax(x @ T)`` for a random ``T``: the task is learnable, so
  training on it (and the step sizes the searches see) behaves like a real run
  rather than the memorization of random labels.
  """
  rng = np.random.default_rng(seed)
  dim = int(np.prod(input_shape))
  teacher = rng.standard_normal((dim, n_classes), dtype=np.float32)
  batches = []
  for _ in range(n_batches):
    x = rng.standard_normal((batch_size, *input_shape), dtype=np.float32)
    y = np.argmax(x.reshape(batch_size, dim) @ teacher, axis=-1).astype(np.int32)
    batches.append((jnp.asarray(x), jnp.asarray(y)))
  return batches


def _subset_batches(
    path: str, seed: int, n_batches: int, batch_size: int, input_shape: tuple[int, ...]
) -> list[tuple[jax.Array, jax.Array]]:
  """Up to ``n_batches`` batches of the subset's images (uint8 NHWC ``x``, labels ``y``).

  The images are scaled to [0, 1] and normalized with the subset's per-channel
  mean and standard deviation; the examples are shuffled once with ``seed``.
  """
  with np.load(path) as data:
    x, y = np.asarray(data["x"]), np.asarray(data["y"])
  if x.shape[1:] != input_shape:
    raise ValueError(f"{path}: images of shape {x.shape[1:]}, expected {input_shape}.")
  x = x.astype(np.float32) / 255.0
  mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
  std = np.maximum(x.std(axis=(0, 1, 2), dtype=np.float64), 1e-6)
  x = ((x - mean) / std).astype(np.float32)
  order = np.random.default_rng(seed).permutation(len(x))
  n = min(n_batches, len(x) // batch_size)
  if n < 1:
    raise ValueError(f"{path}: {len(x)} examples, fewer than one batch of {batch_size}.")
  batches = []
  for i in range(n):
    index = order[i * batch_size:(i + 1) * batch_size]
    batches.append((jnp.asarray(x[index]), jnp.asarray(y[index].astype(np.int32))))
  return batches


def _classifier_problem(
    module: nn.Module,
    args: argparse.Namespace,
    input_shape: tuple[int, ...],
    subset: str,
    description: str,
) -> Problem:
  """Softmax cross-entropy of ``module`` (10 classes) on random or real inputs of ``input_shape``.

  With ``args.data`` set and ``args.data/subset`` present, the batches are the
  subset's images; otherwise random inputs (see ``_random_batches``).
  """
  data = "random"
  path = os.path.join(args.data, subset) if args.data else None
  if path is not None and os.path.exists(path):
    batches = _subset_batches(path, args.seed, args.n_batches, args.batch_size, input_shape)
    data = path
  else:
    if path is not None:
      print(f"{path} not found: random inputs instead.")
    batches = _random_batches(args.seed, args.n_batches, args.batch_size, input_shape, 10)
  variables = module.init(jax.random.key(args.seed), batches[0][0], train=False)
  params, model_state = variables["params"], dict(variables.get("batch_stats", {}))

  def forward(params: Any, model_state: Any, x: jax.Array) -> tuple[jax.Array, Any]:
    if not model_state:
      return module.apply({"params": params}, x, train=True), model_state
    logits, mutated = module.apply(
        {"params": params, "batch_stats": model_state}, x, train=True, mutable=["batch_stats"]
    )
    return logits, mutated["batch_stats"]

  return Problem(params, model_state, forward, batches, description, data)


def mlp_problem(args: argparse.Namespace) -> Problem:
  """MLP 784-1000-10 with ReLU on MNIST-shaped inputs."""
  module = models.get_model("mlp", features=(1000,), num_classes=10)
  return _classifier_problem(
      module, args, (28, 28, 1), "mnist_subset.npz", "MLP 784-1000-10, ReLU, softmax CE"
  )


def resnet20_problem(args: argparse.Namespace) -> Problem:
  """ResNet-20 (option A) on CIFAR-shaped inputs, BatchNorm in train mode."""
  module = models.get_model("resnet20", num_classes=10)
  return _classifier_problem(
      module,
      args,
      (32, 32, 3),
      "cifar10_subset.npz",
      "ResNet-20 (269,722 params), BatchNorm in train mode, softmax CE",
  )


MODELS: dict[str, Callable[[argparse.Namespace], Problem]] = {
    "mlp": mlp_problem,
    "resnet20": resnet20_problem,
}


class ModelSettings(NamedTuple):
  """Per-model defaults of the run (each can be overridden on the command line).

  Attributes:
    warmup: untimed steps after the first (compiling) call of every row.
    salsa_warmup: untimed steps the SaLSa rows make before their first call,
      so that they are timed in the regime of the speed-up.
    salsa_prime: after ``salsa_warmup``, set SaLSa's two step-size averages
      to the current step size, the state a run with a steady step size
      reaches after about 740 updates (the search interval ``L`` is 10 from
      the next search on): for a model whose 740 warm-up steps would take too
      long to run.
  """

  warmup: int
  salsa_warmup: int
  salsa_prime: bool


MODEL_SETTINGS: dict[str, ModelSettings] = {
    "mlp": ModelSettings(warmup=5, salsa_warmup=1000, salsa_prime=False),
    # ResNet-20 on a CPU takes seconds per step: 1000 warm-up steps per SaLSa
    # row would take most of an hour, so 10 steps and a primed state.
    "resnet20": ModelSettings(warmup=1, salsa_warmup=10, salsa_prime=True),
}

# ---------------------------------------------------------------------------
# Methods: name -> builder(problem, args) -> Method.
# ---------------------------------------------------------------------------

# (params, state, model_state, x, y) -> (params, state, model_state, evals):
# evals is the int32 number of loss evaluations the step made beyond
# value_and_grad.
StepFn = Callable[[Any, Any, Any, jax.Array, jax.Array], tuple[Any, Any, Any, jax.Array]]


class Method(NamedTuple):
  """A jitted train step and its initial optimizer state.

  Attributes:
    step: ``jax.jit``-ed ``(params, state, model_state, x, y) -> (params,
      state, model_state, evals)``.
    init_state: the optimizer state for the problem's initial parameters.
    description: one line for the report.
    init_params: the parameters the timed steps start from (None: the
      problem's initial parameters).
    init_model_state: the BatchNorm statistics they start from (None: the
      problem's).
    compile_s: the time of the first call when the builder made it (warmed
      rows); None: the first call of the timing is the compiling one.
  """

  step: StepFn
  init_state: Any
  description: str
  init_params: Any = None
  init_model_state: Any = None
  compile_s: float | None = None


METHODS: dict[str, Callable[[Problem, argparse.Namespace], Method]] = {}


def register(name: str):
  """Adds a method builder ``(problem, args) -> Method`` to ``METHODS``."""

  def wrap(builder: Callable[[Problem, argparse.Namespace], Method]):
    METHODS[name] = builder
    return builder

  return wrap


def main_pass(
    problem: Problem, params: Any, model_state: Any, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, Any, jax.Array, Any]:
  """The step's forward-backward pass: ``(loss, grads, logits, new_model_state)``."""
  (value, (logits, model_state)), grads = jax.value_and_grad(problem.train_loss, has_aux=True)(
      params, model_state, x, y
  )
  return value, grads, logits, model_state


def optax_method(
    problem: Problem,
    opt: optax.GradientTransformation,
    description: str,
    *,
    line_search: bool = False,
    pass_grad: bool = False,
    evals_key: str | None = None,
) -> Method:
  """The train step of an optax optimizer, with ``value_fn`` for a line search.

  Args:
    problem: the model and its loss.
    opt: the optimizer.
    description: one line for the report.
    line_search: pass ``value=`` and ``value_fn=`` to ``opt.update``.
    pass_grad: pass ``grad=`` too (required by optax's backtracking search).
    evals_key: the state field counting the loss evaluations of the last update.
  """

  def step(params, state, model_state, x, y):
    value, grads, _, new_model_state = main_pass(problem, params, model_state, x, y)
    kwargs = {}
    if line_search:
      kwargs = dict(value=value, value_fn=problem.value_fn(model_state, x, y))
      if pass_grad:
        kwargs["grad"] = grads
    updates, state = opt.update(grads, state, params, **kwargs)
    params = optax.apply_updates(params, updates)
    if evals_key is None:
      evals = jnp.zeros((), jnp.int32)
    else:
      evals = jnp.asarray(optax.tree.get(state, evals_key), jnp.int32)
    return params, state, new_model_state, evals

  return Method(jax.jit(step), opt.init(problem.params), description)


def register_line_search(
    name: str, make: Callable[[argparse.Namespace], optax.GradientTransformation], description: str
) -> None:
  """Registers an optax_ls method: ``make(args)`` builds it, ``description`` may use ``{n}``.

  Its train step passes ``value`` and ``value_fn``, and reads ``num_evals``.
  """

  def builder(problem: Problem, args: argparse.Namespace) -> Method:
    return optax_method(
        problem,
        make(args),
        description.format(n=args.n_batches),
        line_search=True,
        evals_key="num_evals",
    )

  register(name)(builder)


def register_baseline(name: str, make: Callable[[], optax.GradientTransformation],
                      description: str, *, pass_value: bool = False) -> None:
  """Registers an optimizer of optax (no ``value_fn``); ``pass_value`` passes ``value=``."""

  def builder(problem: Problem, args: argparse.Namespace) -> Method:
    del args
    opt = make()
    if not pass_value:
      return optax_method(problem, opt, description)

    def step(params, state, model_state, x, y):
      value, grads, _, model_state = main_pass(problem, params, model_state, x, y)
      updates, state = opt.update(grads, state, params, value=value)
      return optax.apply_updates(params, updates), state, model_state, jnp.zeros((), jnp.int32)

    return Method(jax.jit(step), opt.init(problem.params), description)

  register(name)(builder)


register_baseline("sgd", lambda: optax.sgd(0.1), "optax.sgd(0.1)")


@register("floor")
def _floor(problem: Problem, args: argparse.Namespace) -> Method:
  """SGD plus one forward pass at ``params - 0.1 * grads`` that gates the update."""
  del args
  opt = optax.sgd(0.1)

  def step(params, state, model_state, x, y):
    _, grads, _, new_model_state = main_pass(problem, params, model_state, x, y)
    trial = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    # Always 1 for a finite CE.
    keep = jnp.where(problem.value_fn(model_state, x, y)(trial) > -1.0, 1.0, 0.0)
    updates, state = opt.update(grads, state, params)
    updates = jax.tree.map(lambda u: keep * u, updates)
    return optax.apply_updates(params, updates), state, new_model_state, jnp.ones((), jnp.int32)

  return Method(jax.jit(step), opt.init(problem.params), "sgd(0.1) + 1 forward at a trial point")


@register("floor_armijo")
def _floor_armijo(problem: Problem, args: argparse.Namespace) -> Method:
  """The floor plus the Armijo test, which needs the slope ``-<g, g>``.

  Any Armijo search reads the gradient once more for the slope; this is the
  least such a search can cost when its first trial (step 0.01) is accepted.
  The update is ``-0.01 * g`` if the test passes, else zero.
  """
  del args
  opt = optax.sgd(0.01)

  def step(params, state, model_state, x, y):
    value, grads, _, new_model_state = main_pass(problem, params, model_state, x, y)
    slope = -optax.tree.vdot(grads, grads)
    trial = jax.tree.map(lambda p, g: p - 0.01 * g, params, grads)
    accept = problem.value_fn(model_state, x, y)(trial) <= value + 0.1 * 0.01 * slope
    updates, state = opt.update(grads, state, params)
    updates = jax.tree.map(lambda u: jnp.where(accept, u, 0.0), updates)
    return optax.apply_updates(params, updates), state, new_model_state, jnp.ones((), jnp.int32)

  return Method(jax.jit(step), opt.init(problem.params), "floor + Armijo test (slope -<g, g>)")


# SLS that accepts its first trial: a small step kept from call to call.
register_line_search(
    "sls_first",
    lambda a: optax_ls.sls(n_batches_per_epoch=a.n_batches, init_step_size=0.01, reset_option=0),
    "optax_ls.sls(init_step_size=0.01, reset_option=0)",
)


@register("optax_bt_first")
def _optax_bt_first(problem: Problem, args: argparse.Namespace) -> Method:
  """optax's backtracking search capped at a step its first trial accepts."""
  del args
  opt = optax.chain(
      optax.sgd(1.0),
      optax.scale_by_backtracking_linesearch(
          max_backtracking_steps=15, max_learning_rate=0.01, increase_factor=1.0
      ),
  )
  return optax_method(
      problem,
      opt,
      "sgd(1) + scale_by_backtracking_linesearch(max_learning_rate=0.01, increase_factor=1)",
      line_search=True,
      pass_grad=True,
      evals_key="num_linesearch_steps",
  )


register_line_search(
    "sls_default",
    lambda a: optax_ls.sls(n_batches_per_epoch=a.n_batches),
    "optax_ls.sls(n_batches_per_epoch={n}) (paper defaults)",
)


register_line_search(
    "sls_goldstein",
    lambda a: optax_ls.sls(n_batches_per_epoch=a.n_batches, line_search_fn="goldstein"),
    "optax_ls.sls(n_batches_per_epoch={n}, line_search_fn='goldstein')",
)


register_line_search(
    "sls_momentum",
    lambda a: optax_ls.sls(n_batches_per_epoch=a.n_batches, momentum=0.6),
    "optax_ls.sls(n_batches_per_epoch={n}, momentum=0.6)",
)


@register("floor_momentum")
def _floor_momentum(problem: Problem, args: argparse.Namespace) -> Method:
  """The floor with momentum 0.4: the least a search along PAL's adapted direction can cost.

  PAL's default direction ``d_t = -g_t + 0.4 d_{t-1}`` reads and writes a
  parameter-sized buffer, as SGD with momentum does.
  """
  del args
  opt = optax.sgd(0.1, momentum=0.4)

  def step(params, state, model_state, x, y):
    _, grads, _, new_model_state = main_pass(problem, params, model_state, x, y)
    updates, state = opt.update(grads, state, params)
    trial = optax.apply_updates(params, updates)
    # Always 1 for a finite CE.
    keep = jnp.where(problem.value_fn(model_state, x, y)(trial) > -1.0, 1.0, 0.0)
    updates = jax.tree.map(lambda u: keep * u, updates)
    return optax.apply_updates(params, updates), state, new_model_state, jnp.ones((), jnp.int32)

  return Method(
      jax.jit(step), opt.init(problem.params), "sgd(0.1, momentum=0.4) + 1 forward at a trial point"
  )


register_line_search(
    "pal",
    lambda a: optax_ls.pal(),
    "optax_ls.pal() (paper defaults: mu=0.1, alpha=1, beta=0.4; 1 value_fn call)",
)


register_line_search(
    "pal_beta0",
    lambda a: optax_ls.pal(direction_adaptation=0.0),
    "optax_ls.pal(direction_adaptation=0.0): no direction buffer",
)


# LABPAL amortised over whole cycles: one measuring call (zero update, two
# value_fn calls) and `--inner` - 1 training calls, so that every timed loop of
# `--inner` calls is exactly one cycle (`--inner` >= 2). The defaults' share of
# measuring calls, 10 in 1010, is `--inner 101`; a smaller `--inner` measures
# more often and overstates the overhead: the derived rows
# `labpal_*_amortised` (see DERIVED) give the defaults' share from this row and
# the `labpal_*_train` row, which times the training calls alone.
LABPAL_CYCLE = 101  # calls per measuring call with the defaults (1010 / 10)

for _mode in ("sgd", "nsgd"):
  register_line_search(
      f"labpal_{_mode}",
      lambda a, mode=_mode: optax_ls.labpal(
          mode=mode, approx_batches=1, n_sgd=max(a.inner - 1, 1)
      ),
      f"optax_ls.labpal(mode='{_mode}', approx_batches=1, n_sgd=inner-1): one cycle per loop",
  )
  register_line_search(
      f"labpal_{_mode}_train",
      lambda a, mode=_mode: optax_ls.labpal(mode=mode, approx_batches=1, n_sgd=10**9),
      f"optax_ls.labpal(mode='{_mode}', approx_batches=1, n_sgd=10**9): training calls only "
      "(the first, measuring call is the compiling one)",
  )


register_line_search(
    "gols_i",
    lambda a: optax_ls.gols_i(),
    "optax_ls.gols_i() (paper defaults): each call one trial on a new batch, no value_fn call",
)


@register("pls")
def _pls(problem: Problem, args: argparse.Namespace) -> Method:
  """PLS with its per-example losses: one trial per call, a jvp on calls that start a search."""
  del args
  opt = optax_ls.pls()

  def step(params, state, model_state, x, y):
    value, grads, _, new_model_state = main_pass(problem, params, model_state, x, y)
    logits_fn = problem.logits_fn(model_state, x)

    def per_example(p):
      return optax.softmax_cross_entropy_with_integer_labels(logits_fn(p), y)

    updates, state = opt.update(grads, state, params, value=value,
                                per_example_loss_fn=per_example)
    params = optax.apply_updates(params, updates)
    evals = jnp.asarray(optax.tree.get(state, "num_evals"), jnp.int32)
    return params, state, new_model_state, evals

  return Method(jax.jit(step), opt.init(problem.params),
                "optax_ls.pls() (paper defaults) with per_example_loss_fn: one trial per call")


# Trainable learning rate and SGD-HD: one forward-backward per step, no value_fn
# call. The efficient TLR rows use the paper's window of round(0.33 * N) calls.
register_line_search(
    "tlr",
    lambda a: optax_ls.tlr(n_batches_per_epoch=a.n_batches),
    "optax_ls.tlr(n_batches_per_epoch={n}) (efficient, window round(0.33 * {n}), c=1/4)",
)


register_line_search(
    "tlr_per_layer",
    lambda a: optax_ls.tlr(n_batches_per_epoch=a.n_batches, per_layer=True),
    "optax_ls.tlr(n_batches_per_epoch={n}, per_layer=True): one rate per tensor",
)


register_line_search(
    "tlr_layer",
    lambda a: optax_ls.tlr(n_batches_per_epoch=a.n_batches, per_layer="layer"),
    "optax_ls.tlr(n_batches_per_epoch={n}, per_layer='layer'): one rate per layer (the harness's "
    "tlr_per_layer)",
)


register_line_search(
    "tlr_naive",
    lambda a: optax_ls.tlr(variant="naive"),
    "optax_ls.tlr(variant='naive'): + 1 forward-backward at w - alpha g per step",
)


register_line_search(
    "sgd_hd",
    lambda a: optax_ls.sgd_hd(init_learning_rate=0.01, beta=1e-3),
    "optax_ls.sgd_hd(init_learning_rate=0.01, beta=1e-3)",
)


@register("floor_hd")
def _floor_hd(problem: Problem, args: argparse.Namespace) -> Method:
  """The least a rate learned from consecutive gradients can cost (SGD-HD, efficient TLR).

  SGD whose rate moves by ``beta <g_t, g_{t-1}>`` before the update, written
  bare (no checks, no bounds): on top of SGD, one read of the stored gradient,
  one more read of ``g`` for the inner product (the rate must be known before
  the update), and one write of ``g`` into the state.
  """
  del args

  def step(params, state, model_state, x, y):
    rate, prev = state
    _, grads, _, model_state = main_pass(problem, params, model_state, x, y)
    rate = rate + 1e-3 * optax.tree.vdot(grads, prev)
    params = jax.tree.map(lambda p, g: p - rate * g, params, grads)
    return params, (rate, grads), model_state, jnp.zeros((), jnp.int32)

  state = (jnp.asarray(0.1, jnp.float32), optax.tree.zeros_like(problem.params))
  return Method(jax.jit(step), state, "sgd + rate += 1e-3 <g, g_prev> (bare; SGD-HD / TLR floor)")


register_baseline("adam", lambda: optax.adam(1e-3), "optax.adam(1e-3)")


@register("adam_floor")
def _adam_floor(problem: Problem, args: argparse.Namespace) -> Method:
  """Adam plus one forward pass at a trial point along Adam's direction."""
  del args
  opt = optax.adam(1e-3)

  def step(params, state, model_state, x, y):
    _, grads, _, new_model_state = main_pass(problem, params, model_state, x, y)
    updates, state = opt.update(grads, state, params)
    trial = optax.apply_updates(params, updates)
    # Always 1 for a finite CE.
    keep = jnp.where(problem.value_fn(model_state, x, y)(trial) > -1.0, 1.0, 0.0)
    updates = jax.tree.map(lambda u: keep * u, updates)
    return optax.apply_updates(params, updates), state, new_model_state, jnp.ones((), jnp.int32)

  return Method(jax.jit(step), opt.init(problem.params), "adam(1e-3) + 1 forward at a trial point")


register_line_search(
    "adam_sls_first",
    lambda a: optax_ls.adam_sls(init_step_size=1e-3, reset_option=0),
    "optax_ls.adam_sls(init_step_size=1e-3, reset_option=0)",
)


register_line_search(
    "adam_sls",
    lambda a: optax_ls.adam_sls(n_batches_per_epoch=a.n_batches),
    "optax_ls.adam_sls(n_batches_per_epoch={n})",
)


# SaLSa with the speed-up searches at every update until its two step-size
# averages fill (L reaches 10 after about 740 updates at a constant step size),
# so its rows are timed from the parameters and state after `salsa_warmup`
# untimed steps (per model, MODEL_SETTINGS): the regime of the paper's "longer
# runs". Where that is too long to run (ResNet-20 on a CPU), the state after a
# short warm-up is primed: see `prime_salsa`.


def prime_salsa(state: Any) -> Any:
  """SaLSa's state with both step-size averages set to its current step size.

  A run whose step size has stayed at ``step_size`` for long has averages
  ``step_size_fast == step_size_slow == step_size`` (Eq. 8), so its next search
  sets the interval ``L`` to ``max_search_interval`` (Eq. 9-11, ``r = 1``):
  this skips the ~740 updates the zero-started averages take to get there.
  """
  step_size = optax.tree.get(state, "step_size")
  return optax.tree.set(state, step_size_fast=step_size, step_size_slow=step_size)


def register_warmed_line_search(
    name: str,
    make: Callable[[argparse.Namespace], optax.GradientTransformation],
    description: str,
) -> None:
  """Like ``register_line_search``, timed after ``args.salsa_warmup`` untimed steps.

  With ``args.salsa_prime`` the state after the warm-up goes through
  ``prime_salsa``. The first (compiling) call is timed here.
  """

  def builder(problem: Problem, args: argparse.Namespace) -> Method:
    inner = optax_method(problem, make(args), description, line_search=True,
                         evals_key="num_evals")
    params, state, model_state = problem.params, inner.init_state, problem.model_state
    compile_s = None
    for i in range(args.salsa_warmup):
      x, y = problem.batches[i % len(problem.batches)]
      start = time.perf_counter()
      params, state, model_state, _ = inner.step(params, state, model_state, x, y)
      if i == 0:
        jax.block_until_ready(params)
        compile_s = time.perf_counter() - start
    if args.salsa_prime:
      state = prime_salsa(state)
    how = f", after {args.salsa_warmup} untimed steps" + (", primed" if args.salsa_prime else "")
    return inner._replace(
        init_state=state,
        init_params=jax.block_until_ready(params),
        init_model_state=model_state,
        description=description + how,
        compile_s=compile_s,
    )

  register(name)(builder)


register_warmed_line_search(
    "salsa",
    lambda a: optax_ls.salsa(),
    "optax_ls.salsa() (paper defaults, speed-up on)",
)


register_warmed_line_search(
    "salsa_steady",
    lambda a: optax_ls.salsa(increase_factor=1.0),
    "optax_ls.salsa(increase_factor=1.0): a steady step size (L = 10)",
)


register_warmed_line_search(
    "salsa_unchecked",
    lambda a: optax_ls.salsa(increase_factor=1.0, check_gradient=False),
    "salsa_steady with check_gradient=False: updates between searches check only the loss",
)


register_line_search(
    "salsa_no_speedup",
    lambda a: optax_ls.salsa(speed_up=False),
    "optax_ls.salsa(speed_up=False): a search at every update",
)


register_warmed_line_search(
    "adam_salsa",
    lambda a: optax_ls.adam_salsa(),
    "optax_ls.adam_salsa() (paper defaults, speed-up on)",
)


register_warmed_line_search(
    "adam_salsa_cooldown",
    # A run long enough that the timed steps are before the cool-down (in its warm-up: the
    # schedule's factor costs the same at every update).
    lambda a: optax_ls.adam_salsa_cooldown(total_steps=10**6),
    "optax_ls.adam_salsa_cooldown(): SaLSa along Adam's momentum direction (ours)",
)


register_line_search(
    "l_sls",
    lambda a: optax_ls.l_sls(n_batches_per_epoch=a.n_batches),
    "optax_ls.l_sls(n_batches_per_epoch={n}): SLS with a finite-difference slope (+1 forward)",
)


def register_metric_line_search(
    name: str,
    make: Callable[[argparse.Namespace], optax.GradientTransformation],
    description: str,
    metric: Callable[[jax.Array, jax.Array], jax.Array],
    *,
    metric_from_forward: bool = False,
) -> None:
  """Registers a search on ``metric(logits, labels)`` (sa-SLS, a-SLS).

  Its train step passes ``metric_fn`` (the metric of the model's logits on the
  batch) besides ``value`` and ``value_fn``, and reads ``num_evals``, which
  counts every metric evaluation of the update: the one at ``params``, the one
  at the finite-difference point and the trials. With ``metric_from_forward``
  the step takes the logits of the training forward pass and passes the
  metric there as ``metric_value``, as the harness does: one evaluation less.
  """

  def builder(problem: Problem, args: argparse.Namespace) -> Method:
    opt = make(args)

    def step(params, state, model_state, x, y):
      value, grads, logits, new_model_state = main_pass(problem, params, model_state, x, y)
      kwargs = {}
      if metric_from_forward:
        kwargs["metric_value"] = metric(logits, y)
      logits_fn = problem.logits_fn(model_state, x)
      updates, state = opt.update(
          grads, state, params, value=value, value_fn=problem.value_fn(model_state, x, y),
          metric_fn=lambda p: metric(logits_fn(p), y), **kwargs
      )
      params = optax.apply_updates(params, updates)
      evals = jnp.asarray(optax.tree.get(state, "num_evals"), jnp.int32)
      return params, state, new_model_state, evals

    return Method(jax.jit(step), opt.init(problem.params), description.format(n=args.n_batches))

  register(name)(builder)


register_metric_line_search(
    "sa_sls",
    lambda a: optax_ls.sa_sls(n_batches_per_epoch=a.n_batches),
    "optax_ls.sa_sls(n_batches_per_epoch={n}) on smooth_accuracy(logits, y): metric at w, "
    "w - eps g and trials",
    optax_ls.smooth_accuracy,
)


register_metric_line_search(
    "sa_sls_aux",
    lambda a: optax_ls.sa_sls(n_batches_per_epoch=a.n_batches),
    "sa_sls with metric_value from the training forward's logits (as the harness): 1 forward less",
    optax_ls.smooth_accuracy,
    metric_from_forward=True,
)


register_metric_line_search(
    "a_sls",
    lambda a: optax_ls.a_sls(n_batches_per_epoch=a.n_batches),
    "optax_ls.a_sls(n_batches_per_epoch={n}) on accuracy(logits, y), metric_value from the "
    "training forward (as the harness)",
    optax_ls.accuracy,
    metric_from_forward=True,
)


# The harness's baselines (train/optimizers.py), from optax itself, with the
# defaults the harness uses.
register_baseline("sgd_momentum", lambda: optax.sgd(0.1, momentum=0.9),
                  "optax.sgd(0.1, momentum=0.9)")
register_baseline("adamw", lambda: optax.adamw(1e-3, weight_decay=1e-4),
                  "optax.adamw(1e-3, weight_decay=1e-4)")
register_baseline("polyak_sgd", lambda: optax.polyak_sgd(max_learning_rate=1.0),
                  "optax.polyak_sgd(max_learning_rate=1.0) (update takes value=)",
                  pass_value=True)
register_baseline("cocob", optax.contrib.cocob, "optax.contrib.cocob() (defaults)")
register_baseline("prodigy", optax.contrib.prodigy, "optax.contrib.prodigy() (defaults)")
register_baseline("dog", optax.contrib.dog, "optax.contrib.dog() (defaults)")
register_baseline("schedule_free_adamw", lambda: optax.contrib.schedule_free_adamw(0.1),
                  "optax.contrib.schedule_free_adamw(0.1) (the harness's learning rate)")


@register("optax_backtracking")
def _optax_backtracking(problem: Problem, args: argparse.Namespace) -> Method:
  """optax's backtracking search on SGD with the harness's settings (its own defaults)."""
  del args
  opt = optax.chain(
      optax.sgd(1.0), optax.scale_by_backtracking_linesearch(max_backtracking_steps=15)
  )
  return optax_method(
      problem,
      opt,
      "sgd(1) + scale_by_backtracking_linesearch(max_backtracking_steps=15) (optax defaults)",
      line_search=True,
      pass_grad=True,
      evals_key="num_linesearch_steps",
  )


# Rows meant to accept their first trial at every step (checked).
FIRST_TRIAL_METHODS = ("sls_first", "optax_bt_first", "adam_sls_first")

# Rows whose optimizer, as its library ships it, compiles the step twice: the
# count and why. Reported, and allowed by --strict up to that count.
EXPECTED_RECOMPILES: dict[str, tuple[int, str]] = {
    name: (1, "optax's scale_by_backtracking_linesearch initializes num_linesearch_steps as "
              "jnp.asarray(0), weakly typed, and its update returns a strongly typed int32: the "
              "second call compiles again")
    for name in ("optax_bt_first", "optax_backtracking")
}

# Every optimizer name of the harness (train/optimizers.py OPTIMIZERS) and the
# rows that time it with the harness's settings (checked by the tests).
HARNESS_ROWS: dict[str, tuple[str, ...]] = {
    "sgd": ("sgd", "sgd_momentum"),
    "adam": ("adam",),
    "adamw": ("adamw",),
    "polyak_sgd": ("polyak_sgd",),
    "cocob": ("cocob",),
    "prodigy": ("prodigy",),
    "dog": ("dog",),
    "schedule_free_adamw": ("schedule_free_adamw",),
    "optax_backtracking": ("optax_backtracking",),
    "sls": ("sls_default",),
    "adam_sls": ("adam_sls",),
    "salsa": ("salsa",),
    "adam_salsa": ("adam_salsa",),
    "adam_salsa_cooldown": ("adam_salsa_cooldown",),
    "l_sls": ("l_sls",),
    "a_sls": ("a_sls",),
    "sa_sls": ("sa_sls_aux",),
    "pal": ("pal",),
    "labpal_sgd": ("labpal_sgd",),
    "labpal_nsgd": ("labpal_nsgd",),
    "gols_i": ("gols_i",),
    "pls": ("pls",),
    "tlr": ("tlr",),
    "tlr_per_layer": ("tlr_layer",),
    "tlr_naive": ("tlr_naive",),
    "sgd_hd": ("sgd_hd",),
}


class Derived(NamedTuple):
  """A row computed from two timed rows: a cycle of one measuring call and training calls.

  The row ``cycle`` times loops of ``--inner`` calls, one of them measuring;
  ``train`` times training calls alone. Per repeat, the measuring call costs
  ``t_m = inner * t_cycle - (inner - 1) * t_train``, and a cycle of ``period``
  calls (one measuring) costs ``(t_m + (period - 1) * t_train) / period`` per
  call; the same for the evaluations per step.
  """

  cycle: str
  train: str
  period: int
  description: str


DERIVED: dict[str, Derived] = {
    f"labpal_{mode}_amortised": Derived(
        f"labpal_{mode}",
        f"labpal_{mode}_train",
        LABPAL_CYCLE,
        f"labpal_{mode} at the defaults' share of measuring calls (10 in 1010), from "
        f"labpal_{mode} and labpal_{mode}_train",
    )
    for mode in ("sgd", "nsgd")
}


class Target(NamedTuple):
  """An overhead target of the issues: ``row`` at most ``bound`` times ``reference``.

  Attributes:
    goal: the target, in words.
    row: the row (or derived row) it is checked on.
    reference: the row the paired ratio is taken to.
    bound: the largest ratio that meets the target (the median over repeats).
    floor: a row doing the least work such a method must do on top of SGD
      (None: none), reported beside the verdict to explain a miss.
  """

  goal: str
  row: str
  reference: str
  bound: float
  floor: str | None = None


TARGETS: tuple[Target, ...] = (
    Target("SLS within 1.05x of the floor (first trial accepted)", "sls_first", "floor", 1.05,
           "floor_armijo"),
    Target("PAL within 1.05x of the floor", "pal", "floor", 1.05, "floor_momentum"),
    Target("SaLSa with the speed-up at most 1.1x SGD", "salsa", "sgd", 1.1),
    Target("SaLSa, steady step size, at most 1.1x SGD", "salsa_steady", "sgd", 1.1),
    Target("Adam SaLSa with the speed-up at most 1.1x Adam", "adam_salsa", "adam", 1.1),
    Target("LABPAL (SGD) at most 1.15x SGD", "labpal_sgd_amortised", "sgd", 1.15),
    Target("LABPAL (NSGD) at most 1.15x SGD", "labpal_nsgd_amortised", "sgd", 1.15),
    Target("TLR (efficient) at most 1.05x SGD", "tlr", "sgd", 1.05, "floor_hd"),
    Target("TLR per layer at most 1.05x SGD", "tlr_per_layer", "sgd", 1.05, "floor_hd"),
    Target("SGD-HD at most 1.05x SGD", "sgd_hd", "sgd", 1.05, "floor_hd"),
)

# ---------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------


class _Runner:
  """Carries one row's parameters, state, statistics and batch index between timed loops."""

  def __init__(self, method: Method, problem: Problem):
    self.method = method
    self.batches = problem.batches
    self.params = problem.params if method.init_params is None else method.init_params
    self.model_state = (
        problem.model_state if method.init_model_state is None else method.init_model_state
    )
    self.state = method.init_state
    self.index = 0
    self.evals: list[jax.Array] = []

  def run(self, n: int, record: bool = True) -> tuple[float, float]:
    """Makes ``n`` steps; returns their wall and process CPU time in seconds.

    The time runs until the results of the last step are ready.
    """
    step, params, state, model_state, evals = (
        self.method.step, self.params, self.state, self.model_state, []
    )
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
      x, y = self.batches[self.index % len(self.batches)]
      self.index += 1
      params, state, model_state, e = step(params, state, model_state, x, y)
      evals.append(e)
    jax.block_until_ready((params, state, model_state, evals))
    elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    self.params, self.state, self.model_state = params, state, model_state
    if record:
      self.evals.extend(evals)
    return elapsed, elapsed_cpu


def count_compilations(step: Callable[..., Any]) -> int | None:
  """How many times the jitted ``step`` was compiled: its cache size (None if unknown).

  Every call of a row has the same argument shapes and dtypes, so any entry
  beyond the first is a recompilation (e.g. a state whose dtype or weak type
  changed after an update).
  """
  size = getattr(step, "_cache_size", None)
  return None if size is None else int(size())


def static_flops(runner: _Runner) -> float | None:
  """XLA's flop count of the row's step, from the lowered (unoptimized) program.

  Static: a loop body and every branch of a conditional count once, so it is
  the cost of a step whose search makes one trial and takes every branch. No
  compilation (the jit cache, and so the recompilation count, is untouched).
  """
  x, y = runner.batches[0]
  lowered = runner.method.step.lower(runner.params, runner.state, runner.model_state, x, y)
  cost = lowered.cost_analysis()
  if isinstance(cost, list):
    cost = cost[0] if cost else None
  flops = None if not cost else cost.get("flops")
  return None if flops is None else float(flops)


def _quantiles(values: list[float]) -> tuple[float, float, float]:
  """The 25th, 50th and 75th percentiles."""
  q25, q50, q75 = np.percentile(np.asarray(values), [25, 50, 75])
  return float(q25), float(q50), float(q75)


def paired_ratios(times: dict[str, list[float]], name: str, ref: str) -> list[float] | None:
  """Per-repeat ratios of ``name``'s times to ``ref``'s, paired within each repeat."""
  if name not in times or ref not in times:
    return None
  return [a / b for a, b in zip(times[name], times[ref], strict=True)]


def derive(spec: Derived, inner: int, times: dict[str, list[float]]) -> list[float] | None:
  """The per-repeat times per call of a derived row (see ``Derived``), None without its rows."""
  if spec.cycle not in times or spec.train not in times or inner < 2:
    return None
  out = []
  for cycle, train in zip(times[spec.cycle], times[spec.train], strict=True):
    measure = inner * cycle - (inner - 1) * train
    out.append((measure + (spec.period - 1) * train) / spec.period)
  return out


def check_targets(times: dict[str, list[float]]) -> list[dict[str, Any]]:
  """Checks every target of ``TARGETS`` on the per-repeat times of the rows.

  A target is met when the median of the paired per-repeat ratios is at most
  its bound; ``borderline`` says the bound lies within their 25th-75th
  percentiles. ``reason`` explains a miss where the floor row tells: a floor
  already above the bound (the least work of such a method costs more than
  the bound allows on this model), or the method's cost above its floor.
  """
  out = []
  for t in TARGETS:
    entry: dict[str, Any] = dict(goal=t.goal, row=t.row, reference=t.reference, bound=t.bound,
                                 floor=t.floor)
    ratios = paired_ratios(times, t.row, t.reference)
    if ratios is None:
      out.append(dict(entry, verdict="not measured", met=None, reason=""))
      continue
    q25, q50, q75 = _quantiles(ratios)
    entry.update(ratio=q50, ratio_p25=q25, ratio_p75=q75, met=q50 <= t.bound,
                 borderline=q25 <= t.bound <= q75)
    entry["verdict"] = "met" if entry["met"] else "not met"
    reason = ""
    floor_ref = paired_ratios(times, t.floor, t.reference) if t.floor else None
    row_floor = paired_ratios(times, t.row, t.floor) if t.floor else None
    if floor_ref is not None and row_floor is not None:
      entry["floor_ratio"] = statistics.median(floor_ref)
      entry["ratio_to_floor"] = statistics.median(row_floor)
      if not entry["met"]:
        if entry["floor_ratio"] > t.bound:
          reason = (f"its floor {t.floor} alone is {entry['floor_ratio']:.3f}x {t.reference}: the "
                    "least extra work of such a method exceeds the bound here")
        else:
          reason = (f"{entry['ratio_to_floor']:.3f}x its floor {t.floor} "
                    f"({entry['floor_ratio']:.3f}x {t.reference}): work beyond the least")
    entry["reason"] = reason
    out.append(entry)
  return out


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
  """Compiles, warms up and times every row; returns the results."""
  problem = MODELS[args.model](args)
  names = list(dict.fromkeys(args.methods))
  runners: dict[str, _Runner] = {}
  compile_s: dict[str, float] = {}
  for name in names:
    method = METHODS[name](problem, args)
    runner = _Runner(method, problem)
    first = runner.run(1, record=False)[0]
    compile_s[name] = first if method.compile_s is None else method.compile_s
    runner.run(args.warmup, record=False)
    runners[name] = runner
    print(f"  {name}: first call {compile_s[name]:.2f} s", file=sys.stderr, flush=True)

  wall: dict[str, list[float]] = {name: [] for name in names}
  cpu: dict[str, list[float]] = {name: [] for name in names}
  order_rng = random.Random(args.seed)
  for repeat in range(args.repeats):
    order = names[:]
    order_rng.shuffle(order)
    for name in order:
      elapsed, elapsed_cpu = runners[name].run(args.inner)
      wall[name].append(elapsed / args.inner)
      cpu[name].append(elapsed_cpu / args.inner)
    print(f"  repeat {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)

  evals = {name: np.asarray(jax.device_get(r.evals), np.float64) for name, r in runners.items()}
  rows: dict[str, dict[str, Any]] = {}
  for name in names:
    compiles = count_compilations(runners[name].method.step)
    rows[name] = dict(
        method=name,
        description=runners[name].method.description,
        derived=False,
        evals_mean=float(evals[name].mean()),
        evals_max=int(evals[name].max()),
        compile_s=compile_s[name],
        compilations=compiles,
        recompiles=None if compiles is None else compiles - 1,
        # After the timing, so that the first call's time includes the tracing.
        flops=static_flops(runners[name]),
    )
  for name, spec in DERIVED.items():
    derived_wall = derive(spec, args.inner, wall)
    if derived_wall is None:
      continue
    wall[name], cpu[name] = derived_wall, derive(spec, args.inner, cpu)
    cycle, train = evals[spec.cycle].mean(), evals[spec.train].mean()
    measure = args.inner * cycle - (args.inner - 1) * train
    rows[name] = dict(
        method=name,
        description=spec.description,
        derived=True,
        evals_mean=float((measure + (spec.period - 1) * train) / spec.period),
        evals_max=int(max(evals[spec.cycle].max(), evals[spec.train].max())),
        compile_s=None,
        compilations=None,
        recompiles=None,
        flops=None,
    )

  results = []
  for name, entry in rows.items():
    entry.update(
        median_ms=1e3 * statistics.median(wall[name]),
        mean_ms=1e3 * statistics.mean(wall[name]),
        cpu_median_ms=1e3 * statistics.median(cpu[name]),
        times_ms=[1e3 * t for t in wall[name]],
    )
    sgd_flops = rows["sgd"]["flops"] if "sgd" in rows else None
    entry["flops_sgd"] = entry["flops"] / sgd_flops if entry["flops"] and sgd_flops else None
    for ref in ("sgd", "floor"):
      r = paired_ratios(wall, name, ref)
      q = (None, None, None) if r is None else _quantiles(r)
      entry[f"ratio_{ref}"], entry[f"ratio_{ref}_p25"], entry[f"ratio_{ref}_p75"] = q[1], q[0], q[2]
      rc = paired_ratios(cpu, name, ref)
      entry[f"cpu_ratio_{ref}"] = None if rc is None else statistics.median(rc)
    results.append(entry)
  return dict(problem=problem.description, data=problem.data, results=results,
              targets=check_targets(wall))


# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def print_table(report: dict[str, Any]) -> None:
  """Prints the results as a fixed-width table."""
  header = (
      f"{'method':<24}{'ms/step':>10}{'mean':>10}{'x sgd':>8}{'x floor':>9}{'(p25-p75)':>15}"
      f"{'evals/step':>12}{'compile s':>11}{'recomp':>8}{'flops x sgd':>13}"
  )
  print(header)
  print("-" * len(header))
  for r in report["results"]:
    spread = "-"
    if r["ratio_floor_p25"] is not None:
      spread = f"{r['ratio_floor_p25']:.3f}-{r['ratio_floor_p75']:.3f}"
    name = r["method"] + ("*" if r["derived"] else "")
    print(
        f"{name:<24}{r['median_ms']:>10.3f}{r['mean_ms']:>10.3f}"
        f"{_fmt(r['ratio_sgd'], '.3f'):>8}{_fmt(r['ratio_floor'], '.3f'):>9}{spread:>15}"
        f"{r['evals_mean']:>12.3f}{_fmt(r['compile_s'], '.2f'):>11}"
        f"{_fmt(r['recompiles'], 'd'):>8}{_fmt(r.get('flops_sgd'), '.3f'):>13}"
    )
  print(
      "\nms/step: median over repeats; mean: total time / steps (matches evals/step, "
      "a mean);\nx sgd, x floor: medians of the per-repeat ratios, (p25-p75) of x floor;\n"
      "compile s: the first call, compilation included; recomp: compilations after the first "
      "step;\nflops x sgd: XLA's static flop count (one trial, every branch) / sgd's;\n"
      "*: derived from two timed rows.\n"
  )
  for r in report["results"]:
    print(f"  {r['method']:<24}{r['description']}")


def print_targets(targets: list[dict[str, Any]]) -> None:
  """Prints the verdict of every target."""
  print("\nTargets:")
  for t in targets:
    if t["met"] is None:
      print(f"  {t['goal']}: not measured ({t['row']} or {t['reference']} not timed)")
      continue
    line = (f"  {t['goal']}: {t['row']} {t['ratio']:.3f}x {t['reference']} "
            f"({t['ratio_p25']:.3f}-{t['ratio_p75']:.3f}): {t['verdict'].upper()}")
    if t["borderline"]:
      line += " (borderline: the bound lies within p25-p75)"
    if t["reason"]:
      line += f"; {t['reason']}"
    print(line)


def check_first_trial(report: dict[str, Any]) -> bool:
  """Warns when a row meant to accept its first trial made more trials."""
  ok = True
  for r in report["results"]:
    if r["method"] in FIRST_TRIAL_METHODS and r["evals_max"] != 1:
      ok = False
      print(
          f"WARNING: {r['method']} made up to {r['evals_max']} trials in a step "
          f"(mean {r['evals_mean']:.3f}); its ratios are not at equal trials."
      )
  return ok


def check_recompiles(report: dict[str, Any]) -> bool:
  """Warns about every row that compiled again after its first step.

  Returns:
    False if a row compiled again more often than ``EXPECTED_RECOMPILES``
    allows (0 for a row not listed there).
  """
  ok = True
  for r in report["results"]:
    if not r["recompiles"]:
      continue
    allowed, why = EXPECTED_RECOMPILES.get(r["method"], (0, ""))
    line = f"{r['method']} compiled {r['recompiles']} more time(s) after its first step"
    if r["recompiles"] <= allowed:
      print(f"NOTE: {line} (expected: {why}).")
    else:
      ok = False
      print(f"WARNING: {line}.")
  return ok


def markdown(report: dict[str, Any]) -> str:
  """The rows and the targets of a report as two Markdown tables (for the READMEs)."""
  flops = any(r.get("flops_sgd") is not None for r in report["results"])
  lines = [
      "| row | ms/step | x sgd (p25-p75) | x floor | evals/step | compile s | recompiles |"
      + (" flops x sgd |" if flops else ""),
      "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if flops else ""),
  ]
  for r in report["results"]:
    spread = "-"
    if r["ratio_sgd"] is not None:
      spread = f"{r['ratio_sgd']:.3f} ({r['ratio_sgd_p25']:.3f}-{r['ratio_sgd_p75']:.3f})"
    name = f"`{r['method']}`" + (" (derived)" if r["derived"] else "")
    lines.append(
        f"| {name} | {r['median_ms']:.2f} | {spread} | {_fmt(r['ratio_floor'], '.3f')} | "
        f"{r['evals_mean']:.3f} | {_fmt(r['compile_s'], '.1f')} | "
        f"{_fmt(r['recompiles'], 'd')} |"
        + (f" {_fmt(r.get('flops_sgd'), '.3f')} |" if flops else "")
    )
  lines += ["", "| target | row | ratio (p25-p75) | verdict | note |", "|---|---|---:|---|---|"]
  for t in report.get("targets", []):
    if t["met"] is None:
      lines.append(f"| {t['goal']} | `{t['row']}` | - | not measured | |")
      continue
    note = t["reason"] + ("; borderline (bound within p25-p75)" if t["borderline"] else "")
    lines.append(
        f"| {t['goal']} | `{t['row']}` vs `{t['reference']}` | {t['ratio']:.3f} "
        f"({t['ratio_p25']:.3f}-{t['ratio_p75']:.3f}) | {t['verdict']} | {note.strip('; ')} |"
    )
  return "\n".join(lines)


# Lines of the chart: (x as a function of the floor's ratio to sgd, label, colour).
_TARGET_LINES: tuple[tuple[Callable[[float | None], float | None], str, str], ...] = (
    (lambda f: 1.0, "sgd", "black"),
    (lambda f: 1.05, "1.05x sgd (TLR, SGD-HD)", "tab:purple"),
    (lambda f: 1.1, "1.1x sgd (SaLSa)", "tab:orange"),
    (lambda f: 1.15, "1.15x sgd (LABPAL)", "tab:brown"),
    (lambda f: None if f is None else 1.05 * f, "1.05x floor (SLS, PAL)", "tab:cyan"),
)


def plot(reports: Sequence[dict[str, Any]], path: str) -> None:
  """A bar chart of the median ratio to sgd per row, 25-75% error bars, one panel per report.

  Rows that carry a target are green (met) or red (not met), the floors blue,
  the other rows grey; dashed lines mark the targets (1.05x floor is drawn at
  1.05 times the floor's ratio to sgd in that run).
  """
  import matplotlib  # only for the chart

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  n_rows = max(len(r["results"]) for r in reports)
  fig, axes = plt.subplots(
      1, len(reports), figsize=(7.5 * len(reports), 0.26 * n_rows + 2.2), squeeze=False
  )
  for ax, report in zip(axes[0], reports, strict=True):
    results = [r for r in report["results"] if r["ratio_sgd"] is not None]
    verdicts = {t["row"]: t["met"] for t in report.get("targets", []) if t["met"] is not None}
    med = np.asarray([r["ratio_sgd"] for r in results])
    low = med - np.asarray([r["ratio_sgd_p25"] for r in results])
    high = np.asarray([r["ratio_sgd_p75"] for r in results]) - med
    colours = []
    for r in results:
      if r["method"] in verdicts:
        colours.append("tab:green" if verdicts[r["method"]] else "tab:red")
      elif "floor" in r["method"]:
        colours.append("tab:blue")
      else:
        colours.append("lightgrey")
    y = np.arange(len(results))
    right = min(float(np.max(med + high)) * 1.08, 3.0)
    ax.barh(y, np.minimum(med, right), xerr=[low, high], color=colours, capsize=2,
            error_kw=dict(lw=0.8))
    for i, value in enumerate(med):
      ax.text(min(value + high[i], right) + 0.02, i, f"{value:.2f}", va="center", fontsize=6)
    floor = next((r["ratio_sgd"] for r in results if r["method"] == "floor"), None)
    for where, label, colour in _TARGET_LINES:
      x = where(floor)
      if x is not None:
        ax.axvline(x, color=colour, ls="--" if label != "sgd" else "-", lw=0.9, label=label)
    ax.set_yticks(y, [r["method"] + ("*" if r["derived"] else "") for r in results], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0.0, right + 0.25)
    ax.set_xlabel("time per step / sgd (median over repeats, bars: 25-75%)")
    settings = report.get("settings", {})
    ax.set_title(
        f"{report['problem']}\nbatch {settings.get('batch_size', '?')}, "
        f"{os.path.basename(str(report.get('data', 'random')))} inputs, "
        f"{settings.get('repeats', '?')} x {settings.get('inner', '?')} steps, "
        f"{report.get('date', '')[:10]}",
        fontsize=8,
    )
    ax.legend(fontsize=6, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


# ---------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------


def use_single_thread() -> None:
  """Pins the process to one core and XLA:CPU to one thread (less noise on a busy host).

  Must run before JAX initializes its backends.
  """
  from jax._src import xla_bridge  # private; only used to fail clearly

  if xla_bridge.backends_are_initialized():
    raise RuntimeError("--single-thread must be set before JAX initializes its backends.")
  flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
  if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  """The command line; per-model defaults (``MODEL_SETTINGS``) fill what is not given."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
  parser.add_argument(
      "--methods",
      nargs="+",
      choices=list(METHODS),
      metavar="ROW",
      default=list(METHODS),
      help="rows to time, of: " + ", ".join(METHODS) + " (the ratios need sgd and floor among "
      "them; default: all)",
  )
  parser.add_argument("--repeats", type=int, default=30, help="timed loops per row")
  parser.add_argument("--inner", type=int, default=10, help="steps per timed loop")
  parser.add_argument("--warmup", type=int, help="untimed steps after compiling (per model)")
  parser.add_argument("--salsa-warmup", type=int,
                      help="untimed steps of the SaLSa rows before timing (per model)")
  parser.add_argument("--salsa-prime", action=argparse.BooleanOptionalAction, default=None,
                      help="prime SaLSa's step-size averages after its warm-up (per model)")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--n-batches", type=int, default=50, help="mini-batches cycled")
  parser.add_argument("--data", metavar="DIR",
                      help="real images from DIR/mnist_subset.npz or DIR/cifar10_subset.npz")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
      "--single-thread",
      action="store_true",
      help="CPU only: one XLA thread pinned to one core, for steadier timings on a shared host",
  )
  parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
  parser.add_argument("--png", metavar="PATH", help="also draw the bar chart")
  parser.add_argument("--markdown", action="store_true",
                      help="also print the rows and the targets as Markdown tables")
  parser.add_argument("--plot", metavar="JSON", nargs="+",
                      help="no timing: draw the chart of these results (one panel each) to "
                      "--png and/or print them with --markdown")
  parser.add_argument("--strict", action="store_true",
                      help="exit with status 1 if a row recompiled after its first step "
                      "(beyond EXPECTED_RECOMPILES)")
  args = parser.parse_args(argv)
  if args.plot and not (args.png or args.markdown):
    parser.error("--plot needs --png or --markdown")
  if args.repeats < 1 or args.inner < 1:
    parser.error("--repeats and --inner must be positive")
  defaults = MODEL_SETTINGS[args.model]
  for field in ModelSettings._fields:
    if getattr(args, field) is None:
      setattr(args, field, getattr(defaults, field))
  if args.warmup < 0 or args.salsa_warmup < 1:
    parser.error("--warmup must be >= 0 and --salsa-warmup >= 1")
  return args


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
  """Runs the benchmark, prints the table and the targets, optionally writes JSON and the chart.

  Returns:
    What ``--json`` writes (None with ``--plot``).

  Raises:
    SystemExit: with status 1 under ``--strict`` when a row recompiled (beyond
      ``EXPECTED_RECOMPILES``).
  """
  args = parse_args(argv)
  if args.plot:
    reports = []
    for path in args.plot:
      with open(path) as f:
        reports.append(json.load(f))
    if args.markdown:
      for report in reports:
        print(f"{report['problem']} ({report.get('date', '')})\n\n{markdown(report)}\n")
    if args.png:
      plot(reports, args.png)
      print(f"wrote {args.png}")
    return None
  if args.single_thread:
    use_single_thread()
  device = jax.devices()[0]
  print(
      f"jax {jax.__version__}, optax {optax.__version__}, device {device.platform}:"
      f"{device.device_kind}, {os.cpu_count()} CPUs"
      + (" (single XLA thread, pinned)" if args.single_thread else "")
  )
  print(
      f"model {args.model}, batch {args.batch_size}, {args.repeats} repeats x "
      f"{args.inner} steps, shuffled order, state carried forward\n"
  )
  report = benchmark(args)
  print(f"{report['problem']}; inputs: {report['data']}")
  print_table(report)
  print_targets(report["targets"])
  if args.markdown:
    print(f"\n{markdown(report)}\n")
  first_ok = check_first_trial(report)
  recompiles_ok = check_recompiles(report)
  payload = dict(
      date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      model=args.model,
      jax_version=jax.__version__,
      optax_version=optax.__version__,
      flax_version=flax.__version__,
      optax_ls_version=getattr(optax_ls, "__version__", None),
      device=dict(platform=device.platform, kind=device.device_kind, count=jax.device_count()),
      host=dict(
          machine=platform.machine(),
          cpu_count=os.cpu_count(),
          python=platform.python_version(),
          xla_flags=os.environ.get("XLA_FLAGS", ""),
      ),
      settings=vars(args),
      first_trial_accepted=first_ok,
      recompiles_ok=recompiles_ok,
      **report,
  )
  if args.json:
    with open(args.json, "w") as f:
      json.dump(payload, f, indent=2)
    print(f"\nwrote {args.json}")
  if args.png:
    plot([payload], args.png)
    print(f"wrote {args.png}")
  if args.strict and not recompiles_ok:
    raise SystemExit(1)
  return payload


if __name__ == "__main__":
  main(sys.argv[1:])
