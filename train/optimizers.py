"""The optimizers the harness can train with, chosen by name in the configuration.

Every ``optax_ls`` method and the baselines of METHODS.md (SGD with momentum and a
constant, step or cosine schedule; Adam with warm-up and cosine; AdamW;
``optax.polyak_sgd``; ``optax.contrib.cocob`` and ``prodigy``; optax's own
backtracking line search) are built by :func:`make_optimizer`. Each entry also
says which extra keyword arguments its ``update`` needs from the train step
(:class:`Needs`): the line searches on a metric need ``metric_fn``; PLS needs
per-example losses.

Example::

  >>> from train.optimizers import OptimizerConfig, make_optimizer
  >>> built = make_optimizer(OptimizerConfig(name="sls"), steps_per_epoch=10, total_steps=100)
  >>> built.needs.metric is None
  True
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

import numpy as np
import optax

import optax_ls
from train.errors import ConfigError

SCHEDULES = ("constant", "step", "cosine")

DEFAULT_LEARNING_RATES: dict[str, float] = {
    "sgd": 0.1,
    "adam": 1e-3,
    "adamw": 1e-3,
    "schedule_free_adamw": 0.0025,
}
"""The learning rate of each optimizer that takes one, when ``OptimizerConfig.learning_rate``
is None: SGD 0.1; Adam and AdamW 1e-3 (Kingma and Ba 2015, PyTorch's default);
schedule-free AdamW 0.0025 (``optax.contrib.schedule_free_adamw``'s default). The other
optimizers take no learning rate (the line searches find their own; ``polyak_sgd``, ``cocob``,
``prodigy``, ``dog``, ``optax_backtracking`` have their own defaults, set through ``kwargs``)."""


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  r"""One optimizer of a run.

  ``learning_rate``, ``schedule`` and ``warmup_steps`` make the learning-rate schedule
  :math:`\eta_t` of ``sgd``, ``adam`` and ``adamw`` (the other entries of :data:`OPTIMIZERS`
  ignore them). With peak rate :math:`\eta`, :math:`W` warm-up steps and :math:`T` the run's
  total steps, :math:`\eta_t = \eta\, t / W` for :math:`t < W`, then with
  :math:`s = t - W`:

  * ``constant``: :math:`\eta_t = \eta`;
  * ``step``: :math:`\eta_t = \eta \cdot 0.1^{[s \ge \lfloor T/2 \rfloor] +
    [s \ge \lfloor 3T/4 \rfloor]}` (divided by 10 at 50% and 75% of the run, the TLR paper's
    multistep baseline; the boundaries count from the end of the warm-up);
  * ``cosine``: :math:`\eta_t = \tfrac{\eta}{2} (1 + \cos(\pi s / (T - W)))`, zero at the
    end of the run.

  Attributes:
    name: a key of :data:`OPTIMIZERS`.
    learning_rate: the peak learning rate :math:`\eta` of ``sgd``, ``adam`` and ``adamw``
      and the learning rate of ``schedule_free_adamw``; None (the default) for the
      optimizer's own default, :data:`DEFAULT_LEARNING_RATES` (SGD 0.1, Adam and AdamW
      1e-3, schedule-free AdamW 0.0025; see :func:`learning_rate_of`). Unused by the line
      searches, which find their own (pass ``init_step_size`` in ``kwargs``), and by the
      other baselines.
    momentum: SGD's heavy-ball momentum (0 for none).
    schedule: the baselines' schedule: ``constant``, ``step`` (divide by 10 at
      50% and 75% of the run, the papers' piece-wise constant schedule) or
      ``cosine`` (to zero at the end of the run).
    warmup_steps: linear warm-up of the baselines' learning rate from 0.
    weight_decay: L2 regularisation ``weight_decay/2 * ||w||^2`` (over every parameter,
      BatchNorm scales and biases included) added to the training objective (so that a line
      search's ``value_fn`` and the gradient agree); decoupled weight decay for ``adamw``; 0
      for none.
    kwargs: further keyword arguments of the factory (e.g. ``{"c": 0.5}``, or
      ``{"nesterov": True}`` for ``sgd``); an argument the factory does not take raises a
      ``TypeError`` when the run starts, before any optimizer trains.
  """

  name: str = "sls"
  learning_rate: float | None = None
  momentum: float = 0.0
  schedule: str = "constant"
  warmup_steps: int = 0
  weight_decay: float = 0.0
  kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

  def validate(self) -> OptimizerConfig:
    """Checks the fields' types and ranges; returns ``self``.

    Raises:
      ConfigError: naming the optimizer and the field, for an unknown ``name`` or
        ``schedule``, a field of the wrong type (a string where a number belongs, as
        ``--set opt.momentum=abc`` gives), a negative or non-finite ``learning_rate`` or
        ``weight_decay``, a ``momentum`` outside [0, 1), a negative ``warmup_steps`` or
        ``kwargs`` that are not a dict of names.

    Example:
      >>> OptimizerConfig("sgd", momentum=0.9).validate().momentum
      0.9
      >>> OptimizerConfig("sgd", momentum="abc").validate()
      Traceback (most recent call last):
      ...
      train.errors.ConfigError: optimizer 'sgd': `momentum` must be a number, got 'abc'.
    """
    if not isinstance(self.name, str) or self.name not in OPTIMIZERS:
      raise ConfigError(
          f"Unknown optimizer {self.name!r}; known optimizers: {', '.join(sorted(OPTIMIZERS))}."
      )

    def fail(field: str, expected: str) -> NoReturn:
      raise ConfigError(
          f"optimizer {self.name!r}: `{field}` must be {expected}, got {getattr(self, field)!r}."
      )

    def number(field: str) -> float | None:
      """The field's value as a float; None when it is no number (a string, a bool, ...)."""
      value = getattr(self, field)
      if isinstance(value, bool | np.bool_):
        return None
      if isinstance(value, numbers.Real):
        return float(value)
      if getattr(value, "shape", None) == () and getattr(value, "dtype", None) is not None:
        return float(value) if np.dtype(value.dtype).kind in "iuf" else None  # a 0-d array
      return None

    if self.learning_rate is not None:
      lr = number("learning_rate")
      if lr is None:
        fail("learning_rate", "a number or None")
      if not 0.0 <= lr < math.inf:
        fail("learning_rate", "non-negative and finite")
    momentum = number("momentum")
    if momentum is None:
      fail("momentum", "a number")
    if not 0.0 <= momentum < 1.0:
      fail("momentum", "in [0, 1)")
    if not isinstance(self.schedule, str) or self.schedule not in SCHEDULES:
      fail("schedule", f"one of {SCHEDULES}")
    if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps,
                                                              numbers.Integral):
      fail("warmup_steps", "an integer")
    if self.warmup_steps < 0:
      fail("warmup_steps", ">= 0")
    weight_decay = number("weight_decay")
    if weight_decay is None:
      fail("weight_decay", "a number")
    if not 0.0 <= weight_decay < math.inf:
      fail("weight_decay", ">= 0 and finite")
    if not isinstance(self.kwargs, dict) or not all(isinstance(k, str) for k in self.kwargs):
      fail("kwargs", "a dict of keyword arguments")
    return self


def learning_rate_of(config: OptimizerConfig) -> float | None:
  """The learning rate ``config`` trains with: its own, or its optimizer's default.

  Args:
    config: an optimizer's configuration.

  Returns:
    ``config.learning_rate`` when set, else the default of :data:`DEFAULT_LEARNING_RATES`;
    None for an optimizer that takes no learning rate (the line searches, ``polyak_sgd``,
    ...) and was given none.

  Example:
    >>> [learning_rate_of(OptimizerConfig(name)) for name in ("sgd", "adam", "sls")]
    [0.1, 0.001, None]
    >>> learning_rate_of(OptimizerConfig("adam", learning_rate=3e-4))
    0.0003
  """
  if config.learning_rate is not None:
    return config.learning_rate
  return DEFAULT_LEARNING_RATES.get(config.name)


class Needs(NamedTuple):
  """What the train step passes to ``update`` besides ``value``, ``grad`` and ``value_fn``.

  Attributes:
    metric: ``"loss"``, ``"accuracy"`` or ``"smooth_accuracy"`` for the line
      searches on a metric (for the accuracies the step passes ``metric_fn`` and
      ``metric_value``; for the loss ``value_fn`` is the metric), None otherwise.
    per_example: whether ``update`` takes ``per_example_loss_fn`` (PLS).
  """

  metric: str | None = None
  per_example: bool = False


class Built(NamedTuple):
  """An optimizer ready for the train step.

  Attributes:
    tx: the transformation.
    needs: the extra inputs its ``update`` takes.
    l2: the coefficient ``lambda`` of ``lambda/2 * ||w||^2`` the train step adds
      to the training loss (0 for ``adamw``, whose decay is decoupled).
  """

  tx: optax.GradientTransformationExtraArgs
  needs: Needs
  l2: float = 0.0


class _Context(NamedTuple):
  config: OptimizerConfig
  steps_per_epoch: int
  total_steps: int
  dataset_size: int
  batch_size: int


def _schedule(ctx: _Context) -> optax.Schedule:
  cfg, total = ctx.config, max(ctx.total_steps, 1)
  lr = learning_rate_of(cfg)
  if cfg.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif cfg.schedule == "step":
    main = optax.piecewise_constant_schedule(lr, {int(0.5 * total): 0.1, int(0.75 * total): 0.1})
  else:
    main = optax.cosine_decay_schedule(lr, max(total - cfg.warmup_steps, 1))
  if cfg.warmup_steps <= 0:
    return main
  warmup = optax.linear_schedule(0.0, lr, cfg.warmup_steps)
  return optax.join_schedules([warmup, main], [cfg.warmup_steps])


def _sgd(ctx: _Context) -> optax.GradientTransformation:
  momentum = ctx.config.momentum or None
  return optax.inject_hyperparams(optax.sgd)(
      learning_rate=_schedule(ctx), momentum=momentum, **ctx.config.kwargs
  )


def _adam(ctx: _Context) -> optax.GradientTransformation:
  return optax.inject_hyperparams(optax.adam)(learning_rate=_schedule(ctx), **ctx.config.kwargs)


def _adamw(ctx: _Context) -> optax.GradientTransformation:
  return optax.inject_hyperparams(optax.adamw)(
      learning_rate=_schedule(ctx), weight_decay=ctx.config.weight_decay, **ctx.config.kwargs
  )


def _schedule_free_adamw(ctx: _Context) -> optax.GradientTransformation:
  cfg = ctx.config
  return optax.contrib.schedule_free_adamw(
      **{"learning_rate": learning_rate_of(cfg), "warmup_steps": cfg.warmup_steps or None,
         "weight_decay": cfg.weight_decay, **cfg.kwargs}
  )


def _with_epoch(factory: Callable[..., Any]) -> Callable[[_Context], Any]:
  """A line search whose step-size reset needs the number of batches per epoch."""
  return lambda ctx: factory(
      **{"n_batches_per_epoch": ctx.steps_per_epoch, **ctx.config.kwargs}
  )


def _plain(factory: Callable[..., Any]) -> Callable[[_Context], Any]:
  return lambda ctx: factory(**ctx.config.kwargs)


def _labpal(mode: str) -> Callable[[_Context], Any]:
  return lambda ctx: optax_ls.labpal(
      **{
          "mode": mode,
          "dataset_size": ctx.dataset_size,
          "batch_size": ctx.batch_size,
          **ctx.config.kwargs,
      }
  )


class _Entry(NamedTuple):
  build: Callable[[_Context], optax.GradientTransformation]
  needs: Needs = Needs()
  description: str = ""


OPTIMIZERS: dict[str, _Entry] = {
    # Baselines.
    "sgd": _Entry(_sgd, description="SGD (+momentum), constant/step/cosine schedule"),
    "adam": _Entry(_adam, description="Adam with warm-up and schedule"),
    "adamw": _Entry(_adamw, description="AdamW (decoupled weight decay)"),
    "polyak_sgd": _Entry(
        lambda ctx: optax.polyak_sgd(**{"max_learning_rate": 1.0, **ctx.config.kwargs}),
        description="SGD with the Polyak step size (SPS / ALI-G)",
    ),
    "cocob": _Entry(_plain(optax.contrib.cocob), description="COCOB-Backprop"),
    "prodigy": _Entry(_plain(optax.contrib.prodigy), description="Prodigy"),
    "dog": _Entry(_plain(optax.contrib.dog), description="DoG (distance over gradients)"),
    "schedule_free_adamw": _Entry(
        _schedule_free_adamw,
        description="schedule-free AdamW (learning_rate, warmup_steps, decoupled weight_decay); "
        "evaluated at its averaged weights",
    ),
    "optax_backtracking": _Entry(
        lambda ctx: optax.chain(
            optax.sgd(learning_rate=1.0),
            optax.scale_by_backtracking_linesearch(**{"max_backtracking_steps": 15,
                                                      **ctx.config.kwargs}),
        ),
        description="optax.scale_by_backtracking_linesearch on SGD",
    ),
    # optax_ls: searches within a call.
    "sls": _Entry(_with_epoch(optax_ls.sls), description="SGD + stochastic Armijo line search"),
    "adam_sls": _Entry(_with_epoch(optax_ls.adam_sls), description="Adam + Armijo line search"),
    "salsa": _Entry(_plain(optax_ls.salsa), description="SaLSa (SGD)"),
    "adam_salsa": _Entry(_plain(optax_ls.adam_salsa), description="SaLSa (Adam)"),
    "adam_salsa_cooldown": _Entry(
        lambda ctx: optax_ls.adam_salsa_cooldown(total_steps=max(ctx.total_steps, 1),
                                                 **ctx.config.kwargs),
        description="ours: Adam + SaLSa (c = 0.1) along the momentum direction, warm-up over "
        "the first 5% and cool-down over the last 20% of the run",
    ),
    "l_sls": _Entry(_with_epoch(optax_ls.l_sls), Needs(metric="loss"), "line search on the loss"),
    "a_sls": _Entry(
        _with_epoch(optax_ls.a_sls), Needs(metric="accuracy"), "line search on the accuracy"
    ),
    "sa_sls": _Entry(
        _with_epoch(optax_ls.sa_sls),
        Needs(metric="smooth_accuracy"),
        "line search on the smooth accuracy",
    ),
    "pal": _Entry(_plain(optax_ls.pal), description="PAL"),
    # optax_ls: searches across calls.
    "labpal_sgd": _Entry(_labpal("sgd"), description="LABPAL, SGD variant"),
    "labpal_nsgd": _Entry(_labpal("nsgd"), description="LABPAL, NSGD variant"),
    "gols_i": _Entry(_plain(optax_ls.gols_i), description="GOLS-I (gradient-only line search)"),
    "pls": _Entry(_plain(optax_ls.pls), Needs(per_example=True), "probabilistic line search"),
    "tlr": _Entry(_with_epoch(optax_ls.tlr), description="trainable learning rate (efficient)"),
    "tlr_per_layer": _Entry(
        _with_epoch(functools.partial(optax_ls.tlr, per_layer="layer")),
        description="trainable learning rate, one per layer",
    ),
    "tlr_naive": _Entry(
        _plain(functools.partial(optax_ls.tlr, variant="naive")),
        description="trainable learning rate (naive, extra forward-backward)",
    ),
    "sgd_hd": _Entry(_plain(optax_ls.sgd_hd), description="SGD with hypergradient descent"),
}
"""Optimizer names and how each is built."""


def make_optimizer(
    config: OptimizerConfig,
    *,
    steps_per_epoch: int,
    total_steps: int,
    dataset_size: int = 0,
    batch_size: int = 0,
) -> Built:
  r"""Builds the optimizer ``config`` names.

  ``sgd``, ``adam`` and ``adamw`` are optax's, wrapped in :func:`optax.inject_hyperparams` so
  that the state holds the current rate :math:`\eta_t` of the schedule (see
  :class:`OptimizerConfig` for :math:`\eta_t`; ``total_steps`` is its :math:`T`). The
  ``optax_ls`` methods are built from their factories with ``config.kwargs`` over the
  factories' defaults (see each factory for its paper). The run's shape fills in what a
  method's protocol counts in epochs:

  * ``sls``, ``adam_sls``, ``l_sls``, ``a_sls``, ``sa_sls`` get
    ``n_batches_per_epoch = steps_per_epoch``: the SLS paper's step-size reset (Vaswani et
    al. 2019, Alg. 2, ``reset_option=1``) grows the step by :math:`\gamma^{1/n_b}` per call,
    i.e. by :math:`\gamma` per epoch.
  * ``tlr``, ``tlr_per_layer`` get it too: the TLR paper's efficient variant updates the rate
    once per window of :math:`pN` calls, :math:`N` = ``steps_per_epoch``, :math:`p = 0.33`
    (its Eq. 10).
  * ``labpal_sgd``, ``labpal_nsgd`` get ``dataset_size`` and ``batch_size``: LABPAL's noise
    adaptation (Mutschler, Laube, Zell 2021; seed 002, Sec. 6.4.3, Eq. 6.8) scales its schedule
    by :math:`\epsilon = \frac{128}{|B|} \frac{|D|}{40000}`.

  Weight decay other than AdamW's is L2 regularisation of the training loss,
  :math:`L(w) + \tfrac{\lambda}{2} \lVert w \rVert^2` with :math:`\lambda` =
  ``config.weight_decay`` (``Built.l2``, added by the train step), so every trial of a line
  search sees the objective whose gradient it follows. Every transformation is wrapped in
  :func:`optax.with_extra_args_support`, so ``update`` accepts the train step's keyword
  arguments (``value``, ``grad``, ``value_fn``, ...) whether it uses them or not.

  Args:
    config: the optimizer's configuration.
    steps_per_epoch: update calls per epoch (SLS's step-size reset, TLR's window).
    total_steps: update calls of the whole run (the schedules' :math:`T`).
    dataset_size: training examples (LABPAL's noise adaptation; must be positive for
      ``labpal_*``, which reject the default 0).
    batch_size: examples per batch (LABPAL's noise adaptation; must be positive for
      ``labpal_*``).

  Returns:
    A ``Built``: the transformation ``tx``, the extra inputs its ``update`` needs (``needs``,
    a :class:`Needs`) and the L2 coefficient ``l2`` the train step adds to the loss.

  Raises:
    ConfigError: (a ``ValueError``) for an invalid ``config``
      (:meth:`OptimizerConfig.validate`: an unknown name or schedule, a negative weight
      decay, ...).

  Example:
    >>> import jax.numpy as jnp
    >>> config = OptimizerConfig("sgd", learning_rate=0.1, schedule="step", weight_decay=5e-4)
    >>> built = make_optimizer(config, steps_per_epoch=2, total_steps=8)
    >>> built.l2, built.needs
    (0.0005, Needs(metric=None, per_example=False))
    >>> params, grads = {"w": jnp.ones(2)}, {"w": jnp.ones(2)}
    >>> state, rates = built.tx.init(params), []
    >>> for _ in range(8):
    ...   updates, state = built.tx.update(grads, state, params)
    ...   rates.append(round(float(state.hyperparams["learning_rate"]), 6))
    >>> rates
    [0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    >>> make_optimizer(OptimizerConfig("a_sls"), steps_per_epoch=2, total_steps=8).needs.metric
    'accuracy'
  """
  config.validate()
  entry = OPTIMIZERS[config.name]
  ctx = _Context(config, steps_per_epoch, total_steps, dataset_size, batch_size)
  tx = optax.with_extra_args_support(entry.build(ctx))
  decoupled = ("adamw", "schedule_free_adamw")
  l2 = 0.0 if config.name in decoupled else float(config.weight_decay)
  return Built(tx, entry.needs, l2)
