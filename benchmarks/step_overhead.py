"""Per-step cost of the line searches against SGD and a one-extra-forward floor.

Each method is one jitted train step ``(params, opt_state, x, y) -> (params,
opt_state, evals)``: ``jax.value_and_grad`` of the loss, ``opt.update`` and
``optax.apply_updates``. Nothing is donated. The methods are

* ``sgd``: ``optax.sgd(0.1)``, the reference (ratio 1.0);
* ``floor``: the same SGD step plus exactly one extra forward pass of the loss
  at the trial point ``params - 0.1 * grads``, whose value gates the update so
  that XLA cannot remove it; no line search can do with less work when its
  first trial is accepted;
* ``floor_armijo``: the floor plus the Armijo test, whose slope ``-<g, g>``
  costs one more read of the gradient; the least an Armijo search can cost;
* ``sls_first``: ``optax_ls.sls`` set up so that its first trial is always
  accepted (``init_step_size=0.01``, ``reset_option=0``): one ``value_fn``
  call per step;
* ``optax_bt_first``: ``optax.sgd(1.0)`` chained with
  ``optax.scale_by_backtracking_linesearch`` capped at ``max_learning_rate=0.01``
  with ``increase_factor=1.0``, so that its first trial is accepted too;
* ``sls_default``: ``optax_ls.sls`` with the paper's defaults
  (``init_step_size=1``, ``reset_option=1``), whose number of trials varies.

Method: every step function is compiled and warmed up first (the time of the
first call, tracing and compilation included, is reported). Then, for each
repeat, the methods run in a shuffled order, each for ``--inner`` calls
followed by ``block_until_ready``. Every method carries its parameters and
optimizer state forward from call to call (and from repeat to repeat) over a
fixed cycle of random mini-batches, so the searches see a real training
trajectory. Reported: the median time per step over the repeats, and the
median over the repeats of the per-repeat ratios to ``sgd`` and ``floor``
(paired within a repeat, so slow drifts of the machine cancel) with their
25th-75th percentiles, plus the mean number of loss evaluations per step.
On a shared CPU host, ``--single-thread`` (one XLA thread pinned to one core)
gives steadier numbers.

Run from the repository root::

  python benchmarks/step_overhead.py --repeats 40 --json /tmp/step_overhead.json

New models go in ``MODELS`` and new methods in ``METHODS`` (see ``register``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
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
  """A model, its loss and the mini-batches the timed steps cycle through.

  Attributes:
    params: the initial parameters.
    loss_fn: ``(params, x, y) -> scalar`` mean loss on the mini-batch.
    batches: a list of ``(x, y)`` device arrays, cycled through by the steps.
    description: one line for the report.
    logits_fn: ``(params, x) -> logits`` for a classifier (else None), for the
      searches on a metric of the logits (sa-SLS).
  """

  params: Any
  loss_fn: Callable[[Any, jax.Array, jax.Array], jax.Array]
  batches: list[tuple[jax.Array, jax.Array]]
  description: str
  logits_fn: Callable[[Any, jax.Array], jax.Array] | None = None


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


def _classifier_problem(
    module: nn.Module, args: argparse.Namespace, input_shape: tuple[int, ...], description: str
) -> Problem:
  """Softmax cross-entropy of ``module`` on random inputs of ``input_shape``, 10 classes."""
  batches = _random_batches(args.seed, args.n_batches, args.batch_size, input_shape, 10)
  params = module.init(jax.random.key(args.seed), batches[0][0])["params"]

  def loss_fn(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = module.apply({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def logits_fn(params: Any, x: jax.Array) -> jax.Array:
    return module.apply({"params": params}, x)

  return Problem(params, loss_fn, batches, description, logits_fn)


def mlp_problem(args: argparse.Namespace) -> Problem:
  """MLP 784-1000-10 with ReLU."""
  module = models.get_model("mlp", features=(1000,), num_classes=10)
  return _classifier_problem(module, args, (784,), "MLP 784-1000-10, ReLU, softmax CE")


MODELS: dict[str, Callable[[argparse.Namespace], Problem]] = {
    "mlp": mlp_problem,
}

# ---------------------------------------------------------------------------
# Methods: name -> builder(problem, args) -> Method.
# ---------------------------------------------------------------------------

# (params, state, x, y) -> (params, state, evals): evals is the int32 number of
# loss evaluations the step made beyond value_and_grad.
StepFn = Callable[[Any, Any, jax.Array, jax.Array], tuple[Any, Any, jax.Array]]


class Method(NamedTuple):
  """A jitted train step and its initial optimizer state.

  Attributes:
    step: ``jax.jit``-ed ``(params, state, x, y) -> (params, state, evals)``.
    init_state: the optimizer state for the problem's initial parameters.
    description: one line for the report.
    init_params: the parameters the timed steps start from (None: the
      problem's initial parameters).
  """

  step: StepFn
  init_state: Any
  description: str
  init_params: Any = None


METHODS: dict[str, Callable[[Problem, argparse.Namespace], Method]] = {}


def register(name: str):
  """Adds a method builder ``(problem, args) -> Method`` to ``METHODS``."""

  def wrap(builder: Callable[[Problem, argparse.Namespace], Method]):
    METHODS[name] = builder
    return builder

  return wrap


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
  loss_fn = problem.loss_fn

  def step(params, state, x, y):
    value, grads = jax.value_and_grad(loss_fn)(params, x, y)
    kwargs = {}
    if line_search:
      kwargs = dict(value=value, value_fn=lambda p: loss_fn(p, x, y))
      if pass_grad:
        kwargs["grad"] = grads
    updates, state = opt.update(grads, state, params, **kwargs)
    params = optax.apply_updates(params, updates)
    if evals_key is None:
      evals = jnp.zeros((), jnp.int32)
    else:
      evals = jnp.asarray(optax.tree.get(state, evals_key), jnp.int32)
    return params, state, evals

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


@register("sgd")
def _sgd(problem: Problem, args: argparse.Namespace) -> Method:
  del args
  return optax_method(problem, optax.sgd(0.1), "optax.sgd(0.1)")


@register("floor")
def _floor(problem: Problem, args: argparse.Namespace) -> Method:
  """SGD plus one forward pass at ``params - 0.1 * grads`` that gates the update."""
  del args
  loss_fn = problem.loss_fn
  opt = optax.sgd(0.1)

  def step(params, state, x, y):
    _, grads = jax.value_and_grad(loss_fn)(params, x, y)
    trial = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    keep = jnp.where(loss_fn(trial, x, y) > -1.0, 1.0, 0.0)  # always 1 for a finite CE
    updates, state = opt.update(grads, state, params)
    updates = jax.tree.map(lambda u: keep * u, updates)
    return optax.apply_updates(params, updates), state, jnp.ones((), jnp.int32)

  return Method(jax.jit(step), opt.init(problem.params), "sgd(0.1) + 1 forward at a trial point")


@register("floor_armijo")
def _floor_armijo(problem: Problem, args: argparse.Namespace) -> Method:
  """The floor plus the Armijo test, which needs the slope ``-<g, g>``.

  Any Armijo search reads the gradient once more for the slope; this is the
  least such a search can cost when its first trial (step 0.01) is accepted.
  The update is ``-0.01 * g`` if the test passes, else zero.
  """
  del args
  loss_fn = problem.loss_fn
  opt = optax.sgd(0.01)

  def step(params, state, x, y):
    value, grads = jax.value_and_grad(loss_fn)(params, x, y)
    slope = -optax.tree.vdot(grads, grads)
    trial = jax.tree.map(lambda p, g: p - 0.01 * g, params, grads)
    accept = loss_fn(trial, x, y) <= value + 0.1 * 0.01 * slope
    updates, state = opt.update(grads, state, params)
    updates = jax.tree.map(lambda u: jnp.where(accept, u, 0.0), updates)
    return optax.apply_updates(params, updates), state, jnp.ones((), jnp.int32)

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
  loss_fn = problem.loss_fn
  opt = optax.sgd(0.1, momentum=0.4)

  def step(params, state, x, y):
    _, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = opt.update(grads, state, params)
    trial = optax.apply_updates(params, updates)
    keep = jnp.where(loss_fn(trial, x, y) > -1.0, 1.0, 0.0)  # always 1 for a finite CE
    updates = jax.tree.map(lambda u: keep * u, updates)
    return optax.apply_updates(params, updates), state, jnp.ones((), jnp.int32)

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
# more often and overstates the overhead.
for _mode in ("sgd", "nsgd"):
  register_line_search(
      f"labpal_{_mode}",
      lambda a, mode=_mode: optax_ls.labpal(
          mode=mode, approx_batches=1, n_sgd=max(a.inner - 1, 1)
      ),
      f"optax_ls.labpal(mode='{_mode}', approx_batches=1, n_sgd=inner-1): one cycle per loop",
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
  if problem.logits_fn is None:
    raise ValueError(f"pls needs per-example losses: problem {problem.description!r} has none.")
  opt = optax_ls.pls()
  loss_fn, logits_fn = problem.loss_fn, problem.logits_fn

  def step(params, state, x, y):
    value, grads = jax.value_and_grad(loss_fn)(params, x, y)

    def per_example(p):
      return optax.softmax_cross_entropy_with_integer_labels(logits_fn(p, x), y)

    updates, state = opt.update(grads, state, params, value=value,
                                per_example_loss_fn=per_example)
    params = optax.apply_updates(params, updates)
    return params, state, jnp.asarray(optax.tree.get(state, "num_evals"), jnp.int32)

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
  loss_fn = problem.loss_fn

  def step(params, state, x, y):
    rate, prev = state
    _, grads = jax.value_and_grad(loss_fn)(params, x, y)
    rate = rate + 1e-3 * optax.tree.vdot(grads, prev)
    params = jax.tree.map(lambda p, g: p - rate * g, params, grads)
    return params, (rate, grads), jnp.zeros((), jnp.int32)

  state = (jnp.asarray(0.1, jnp.float32), optax.tree.zeros_like(problem.params))
  return Method(jax.jit(step), state, "sgd + rate += 1e-3 <g, g_prev> (bare; SGD-HD / TLR floor)")


@register("adam")
def _adam(problem: Problem, args: argparse.Namespace) -> Method:
  del args
  return optax_method(problem, optax.adam(1e-3), "optax.adam(1e-3)")


@register("adam_floor")
def _adam_floor(problem: Problem, args: argparse.Namespace) -> Method:
  """Adam plus one forward pass at a trial point along Adam's direction."""
  del args
  loss_fn = problem.loss_fn
  opt = optax.adam(1e-3)

  def step(params, state, x, y):
    _, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = opt.update(grads, state, params)
    trial = optax.apply_updates(params, updates)
    keep = jnp.where(loss_fn(trial, x, y) > -1.0, 1.0, 0.0)  # always 1 for a finite CE
    updates = jax.tree.map(lambda u: keep * u, updates)
    return optax.apply_updates(params, updates), state, jnp.ones((), jnp.int32)

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
# so its rows are timed from the parameters and state after SALSA_WARMUP
# untimed steps: the regime of the paper's "longer runs".
SALSA_WARMUP = 1000


def register_warmed_line_search(
    name: str,
    make: Callable[[argparse.Namespace], optax.GradientTransformation],
    description: str,
    warmup: int,
) -> None:
  """Like ``register_line_search``, timed from the params and state after ``warmup`` steps."""

  def builder(problem: Problem, args: argparse.Namespace) -> Method:
    inner = optax_method(problem, make(args), description, line_search=True,
                         evals_key="num_evals")
    params, state = problem.params, inner.init_state
    for i in range(warmup):
      x, y = problem.batches[i % len(problem.batches)]
      params, state, _ = inner.step(params, state, x, y)
    return inner._replace(init_state=state, init_params=jax.block_until_ready(params))

  register(name)(builder)


register_warmed_line_search(
    "salsa",
    lambda a: optax_ls.salsa(),
    f"optax_ls.salsa() (paper defaults, speed-up on), after {SALSA_WARMUP} untimed steps",
    SALSA_WARMUP,
)


register_warmed_line_search(
    "salsa_steady",
    lambda a: optax_ls.salsa(increase_factor=1.0),
    f"optax_ls.salsa(increase_factor=1.0): a steady step size (L = 10), after {SALSA_WARMUP} "
    "untimed steps",
    SALSA_WARMUP,
)


register_warmed_line_search(
    "salsa_unchecked",
    lambda a: optax_ls.salsa(increase_factor=1.0, check_gradient=False),
    "salsa_steady with check_gradient=False: updates between searches check only the loss",
    SALSA_WARMUP,
)


register_line_search(
    "salsa_no_speedup",
    lambda a: optax_ls.salsa(speed_up=False),
    "optax_ls.salsa(speed_up=False): a search at every update",
)


register_warmed_line_search(
    "adam_salsa",
    lambda a: optax_ls.adam_salsa(),
    f"optax_ls.adam_salsa() (paper defaults, speed-up on), after {SALSA_WARMUP} untimed steps",
    SALSA_WARMUP,
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
  the step takes the logits of the training forward pass (``has_aux``) and
  passes the metric there as ``metric_value``: one evaluation less.
  """

  def builder(problem: Problem, args: argparse.Namespace) -> Method:
    if problem.logits_fn is None:
      raise ValueError(f"{name} needs a classifier: problem {problem.description!r} has no logits.")
    opt = make(args)
    loss_fn, logits_fn = problem.loss_fn, problem.logits_fn

    def loss_and_logits(params, x, y):
      logits = logits_fn(params, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    def step(params, state, x, y):
      kwargs = {}
      if metric_from_forward:
        (value, logits), grads = jax.value_and_grad(loss_and_logits, has_aux=True)(params, x, y)
        kwargs["metric_value"] = metric(logits, y)
      else:
        value, grads = jax.value_and_grad(loss_fn)(params, x, y)
      updates, state = opt.update(
          grads, state, params, value=value, value_fn=lambda p: loss_fn(p, x, y),
          metric_fn=lambda p: metric(logits_fn(p, x), y), **kwargs
      )
      params = optax.apply_updates(params, updates)
      return params, state, jnp.asarray(optax.tree.get(state, "num_evals"), jnp.int32)

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
    "sa_sls with metric_value from the training forward's logits (has_aux): 1 forward less",
    optax_ls.smooth_accuracy,
    metric_from_forward=True,
)


# Methods whose first trial must be accepted at every step (checked).
FIRST_TRIAL_METHODS = ("sls_first", "optax_bt_first", "adam_sls_first")

# ---------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------


class _Runner:
  """Carries one method's parameters, state and batch index between timed loops."""

  def __init__(self, method: Method, problem: Problem):
    self.method = method
    self.batches = problem.batches
    self.params = problem.params if method.init_params is None else method.init_params
    self.state = method.init_state
    self.index = 0
    self.evals: list[jax.Array] = []

  def run(self, n: int, record: bool = True) -> tuple[float, float]:
    """Makes ``n`` steps; returns their wall and process CPU time in seconds.

    The time runs until the results of the last step are ready.
    """
    step, params, state, evals = self.method.step, self.params, self.state, []
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
      x, y = self.batches[self.index % len(self.batches)]
      self.index += 1
      params, state, e = step(params, state, x, y)
      evals.append(e)
    jax.block_until_ready((params, state, evals))
    elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    self.params, self.state = params, state
    if record:
      self.evals.extend(evals)
    return elapsed, elapsed_cpu


def _quantiles(values: list[float]) -> tuple[float, float, float]:
  """The 25th, 50th and 75th percentiles."""
  q25, q50, q75 = np.percentile(np.asarray(values), [25, 50, 75])
  return float(q25), float(q50), float(q75)


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
  """Compiles, warms up and times every method; returns the results."""
  problem = MODELS[args.model](args)
  names = list(dict.fromkeys(args.methods))
  runners: dict[str, _Runner] = {}
  compile_s: dict[str, float] = {}
  for name in names:
    runner = _Runner(METHODS[name](problem, args), problem)
    compile_s[name] = runner.run(1, record=False)[0]
    runner.run(args.warmup, record=False)
    runners[name] = runner

  wall: dict[str, list[float]] = {name: [] for name in names}
  cpu: dict[str, list[float]] = {name: [] for name in names}
  order_rng = random.Random(args.seed)
  for _ in range(args.repeats):
    order = names[:]
    order_rng.shuffle(order)
    for name in order:
      elapsed, elapsed_cpu = runners[name].run(args.inner)
      wall[name].append(elapsed / args.inner)
      cpu[name].append(elapsed_cpu / args.inner)

  def ratios(name: str, ref: str, times: dict[str, list[float]]) -> list[float] | None:
    """Per-repeat ratios to ``ref``, paired within each repeat."""
    if ref not in times:
      return None
    return [a / b for a, b in zip(times[name], times[ref], strict=True)]

  results = []
  for name in names:
    evals = np.asarray(jax.device_get(runners[name].evals))
    entry = dict(
        method=name,
        description=runners[name].method.description,
        median_ms=1e3 * statistics.median(wall[name]),
        mean_ms=1e3 * statistics.mean(wall[name]),
        cpu_median_ms=1e3 * statistics.median(cpu[name]),
        evals_mean=float(evals.mean()),
        evals_max=int(evals.max()),
        compile_s=compile_s[name],
        times_ms=[1e3 * t for t in wall[name]],
    )
    for ref in ("sgd", "floor"):
      r = ratios(name, ref, wall)
      q = (None, None, None) if r is None else _quantiles(r)
      entry[f"ratio_{ref}"], entry[f"ratio_{ref}_p25"], entry[f"ratio_{ref}_p75"] = q[1], q[0], q[2]
      rc = ratios(name, ref, cpu)
      entry[f"cpu_ratio_{ref}"] = None if rc is None else statistics.median(rc)
    results.append(entry)
  return dict(problem=problem.description, results=results)


def _fmt(value: float | None, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def print_table(report: dict[str, Any]) -> None:
  """Prints the results as a fixed-width table."""
  header = (
      f"{'method':<16}{'ms/step':>9}{'mean':>8}{'x sgd':>8}{'x floor':>9}{'(p25-p75)':>15}"
      f"{'evals/step':>12}{'compile s':>11}"
  )
  print(header)
  print("-" * len(header))
  for r in report["results"]:
    spread = "-"
    if r["ratio_floor_p25"] is not None:
      spread = f"{r['ratio_floor_p25']:.3f}-{r['ratio_floor_p75']:.3f}"
    print(
        f"{r['method']:<16}{r['median_ms']:>9.3f}{r['mean_ms']:>8.3f}"
        f"{_fmt(r['ratio_sgd'], '.3f'):>8}{_fmt(r['ratio_floor'], '.3f'):>9}{spread:>15}"
        f"{r['evals_mean']:>12.3f}{r['compile_s']:>11.2f}"
    )
  print(
      "\nms/step: median over repeats; mean: total time / steps (matches evals/step, "
      "a mean);\nx sgd, x floor: medians of the per-repeat ratios, (p25-p75) of x floor.\n"
  )
  for r in report["results"]:
    print(f"  {r['method']:<16}{r['description']}")


def check_first_trial(report: dict[str, Any]) -> bool:
  """Warns when a method meant to accept its first trial made more trials."""
  ok = True
  for r in report["results"]:
    if r["method"] in FIRST_TRIAL_METHODS and r["evals_max"] != 1:
      ok = False
      print(
          f"WARNING: {r['method']} made up to {r['evals_max']} trials in a step "
          f"(mean {r['evals_mean']:.3f}); its ratios are not at equal trials."
      )
  return ok


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
  """The command line."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
  parser.add_argument(
      "--methods",
      nargs="+",
      choices=list(METHODS),
      default=list(METHODS),
      help="methods to time (the ratios need sgd and floor among them)",
  )
  parser.add_argument("--repeats", type=int, default=30, help="timed loops per method")
  parser.add_argument("--inner", type=int, default=10, help="steps per timed loop")
  parser.add_argument("--warmup", type=int, default=5, help="untimed steps after compiling")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--n-batches", type=int, default=50, help="random mini-batches cycled")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
      "--single-thread",
      action="store_true",
      help="CPU only: one XLA thread pinned to one core, for steadier timings on a shared host",
  )
  parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
  args = parser.parse_args(argv)
  if args.repeats < 1 or args.inner < 1:
    parser.error("--repeats and --inner must be positive")
  return args


def main(argv: list[str] | None = None) -> None:
  """Runs the benchmark, prints the table and optionally writes JSON."""
  args = parse_args(argv)
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
  print(report["problem"])
  print_table(report)
  first_ok = check_first_trial(report)
  if args.json:
    payload = dict(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
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
        **report,
    )
    with open(args.json, "w") as f:
      json.dump(payload, f, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
  main()
