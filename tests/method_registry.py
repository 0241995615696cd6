"""The registry of methods that the common test suite runs on.

Every method of optax_ls registers here, once, with the keyword arguments that
make it a healthy optimizer on the small test problems and with invalid
hyperparameters it must reject. ``test_common.py`` then runs the shared
checks (jit, recompilation, dtypes, non-finite values, zero gradients,
validation, composition, sharding) on each entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import optax_ls
from tests.problems import mlp_loss


@dataclasses.dataclass(frozen=True)
class Method:
  """A method under test.

  Attributes:
    name: test id.
    factory: the public factory.
    kwargs: arguments that make a healthy optimizer on ``problems.py``.
    invalid: ``(kwargs, argument name)`` pairs that must raise ``ValueError``
      naming the argument at construction.
    injectable: hyperparameters to pass through ``optax.inject_hyperparams``.
    first_trial: overrides that make the first ``value_fn`` evaluation away
      from ``params`` of the first update lie at distance ``>= 0.05`` (the
      non-finite test puts NaN/inf there).
    evaluates_landing_point: whether the method evaluates the point it moves
      to before moving (a backtracking search does). Methods that step to a
      computed point without evaluating it (PAL, LABPAL) set False: the
      non-finite test then requires a zero update instead of a decrease.
    update_kwargs: ``(loss_fn, batch) -> dict`` of extra keyword arguments for
      ``update`` (e.g. a ``metric_fn``), added by ``problems.make_step``.
    min_evals: the least ``num_evals`` a step reports after three steps on
      the test problem (0 for methods whose training calls evaluate nothing).
    needs_value_fn: whether ``update`` requires ``value_fn``. Methods that
      use only the value and gradient of the batch they are given (GOLS-I,
      PLS, efficient TLR, SGD-HD) set False: the suite then checks that they
      run without one, and skips the non-finite *trial* test (they evaluate
      no trial through ``value_fn``; non-finite inputs are covered by the
      non-finite value/gradient test).
  """

  name: str
  factory: Callable[..., optax.GradientTransformationExtraArgs]
  kwargs: dict[str, Any]
  invalid: tuple[tuple[dict[str, Any], str], ...] = ()
  injectable: tuple[str, ...] = ()
  first_trial: dict[str, Any] = dataclasses.field(
      default_factory=lambda: {"init_step_size": 1.0, "reset_option": 2}
  )
  evaluates_landing_point: bool = True
  update_kwargs: Callable[[Callable[..., Any], Any], dict[str, Any]] | None = None
  min_evals: int = 1
  needs_value_fn: bool = True

  def make(self, **overrides: Any) -> optax.GradientTransformationExtraArgs:
    return self.factory(**{**self.kwargs, **overrides})


_SLS_INVALID = (
    ({"c": 0.0}, "c"),
    ({"c": 1.0}, "c"),
    ({"decrease_factor": 1.0}, "decrease_factor"),
    ({"decrease_factor": 0.0}, "decrease_factor"),
    ({"gamma": 0.5}, "gamma"),
    ({"init_step_size": -1.0}, "init_step_size"),
    ({"reset_option": 3}, "reset_option"),
    ({"reset_option": 1, "n_batches_per_epoch": None}, "n_batches_per_epoch"),
    ({"n_batches_per_epoch": 0}, "n_batches_per_epoch"),
    ({"max_backtracking_steps": 0}, "max_backtracking_steps"),
    ({"min_step_size": 0.0}, "min_step_size"),
    ({"init_step_size": 1e4, "max_step_size": 10.0}, "init_step_size"),
)

_SALSA_INVALID = (
    ({"c": 0.0}, "c"),
    ({"c": 1.0}, "c"),
    ({"b3": 1.0}, "b3"),
    ({"b3": -0.1}, "b3"),
    ({"decrease_factor": 1.0}, "decrease_factor"),
    ({"increase_factor": 0.9}, "increase_factor"),
    ({"init_step_size": 0.0}, "init_step_size"),
    ({"init_step_size": 1e4, "max_step_size": 10.0}, "init_step_size"),
    ({"min_step_size": 0.0}, "min_step_size"),
    ({"max_backtracking_steps": 0}, "max_backtracking_steps"),
    ({"max_search_interval": 0}, "max_search_interval"),
    ({"max_search_interval": 2.5}, "max_search_interval"),
    ({"speed_up": 1}, "speed_up"),
)

_LABPAL_INVALID = (
    ({"mode": "adam"}, "mode"),
    ({"approx_batches": 0}, "approx_batches"),
    ({"n_sgd": 2.5}, "n_sgd"),
    ({"alpha": 0.0}, "alpha"),
    ({"max_step_size": -1.0}, "max_step_size"),
    ({"measure_points": (1e-2, 1e-4)}, "measure_points"),
    ({"momentum": 1.0}, "momentum"),
    ({"t_max": 0}, "t_max"),
    ({"batch_schedule": ((0.75, 2), (0.5, 4))}, "batch_schedule"),
    ({"batch_schedule": ((0.5, 0),)}, "batch_schedule"),
    ({"dataset_size": 50_000}, "batch_size"),
    ({"dataset_size": 50_000, "batch_size": 0}, "batch_size"),
)

_METRIC_SLS_INVALID = _SLS_INVALID + (
    ({"eps": 0.0}, "eps"),
    ({"require_improvement": "yes"}, "require_improvement"),
)


_TLR_INVALID = (
    ({"variant": "fast"}, "variant"),
    ({"per_layer": "block"}, "per_layer"),
    ({"init_learning_rate": 0.0}, "init_learning_rate"),
    ({"init_learning_rate": 1e4, "max_learning_rate": 10.0}, "init_learning_rate"),
    ({"min_learning_rate": 0.0}, "min_learning_rate"),
    ({"c": 0.0}, "c"),
    ({"p": 0.0}, "p"),
    ({"window": 0}, "window"),
    ({"window": 2}, "window"),  # with n_batches_per_epoch: one or the other
    ({"n_batches_per_epoch": None}, "n_batches_per_epoch"),
    ({"n_batches_per_epoch": 0}, "n_batches_per_epoch"),
)


def _smooth_metric(loss_fn: Callable[..., Any], batch: Any) -> dict[str, Any]:
  """sa-SLS's maximised metric on a regression problem: ``exp(-loss)``, smooth, in (0, 1]."""
  return {"metric_fn": lambda p: jnp.exp(-loss_fn(p, batch))}


def _step_metric(loss_fn: Callable[..., Any], batch: Any, levels: int = 64) -> dict[str, Any]:
  """a-SLS's maximised metric: ``exp(-loss)`` rounded down to a multiple of ``1 / levels``.

  Piecewise constant with a zero derivative almost everywhere, like the
  accuracy of ``levels`` examples. It is built from the loss alone because the
  suites call ``update_kwargs`` with any ``loss_fn`` (flax modules, a poisoned
  loss, ``batch=None``); it is non-finite wherever the loss is NaN or -inf and
  0 (the worst value) where it is +inf.
  """
  return {"metric_fn": lambda p: jnp.floor(levels * jnp.exp(-loss_fn(p, batch))) / levels}


def _per_example_mlp_loss(loss_fn: Callable[..., Any], batch: Any) -> dict[str, Any]:
  """PLS's ``per_example_loss_fn``: the losses of ``problems.mlp_loss`` example by example.

  Built from ``mlp_loss`` itself, not from ``loss_fn``: every suite loss with a
  batch is that MLP's (sharded or wrapped in ``shard_map``, which a one-example
  batch cannot be split for). Without a batch (the flax test) there is none:
  PLS then treats observations as exact.
  """
  del loss_fn
  if batch is None:
    return {}

  def per_example(params):
    return jax.vmap(lambda x, y: mlp_loss(params, {"x": x[None], "y": y[None]}))(
        batch["x"], batch["y"])

  return {"per_example_loss_fn": per_example}


METHODS: tuple[Method, ...] = (
    Method(
        name="sls",
        factory=optax_ls.sls,
        kwargs={"n_batches_per_epoch": 10},
        invalid=_SLS_INVALID
        + (
            ({"line_search_fn": "wolfe"}, "line_search_fn"),
            ({"line_search_fn": "goldstein", "c": 0.5}, "c"),
            ({"momentum": 1.0}, "momentum"),
        ),
        injectable=("init_step_size", "c", "decrease_factor", "gamma"),
    ),
    Method(
        name="sls_goldstein",
        factory=optax_ls.sls,
        kwargs={"n_batches_per_epoch": 10, "line_search_fn": "goldstein"},
        invalid=(({"increase_factor": 1.0}, "increase_factor"),),
        injectable=("c", "decrease_factor"),
    ),
    Method(
        name="sls_momentum",
        factory=optax_ls.sls,
        kwargs={"n_batches_per_epoch": 10, "momentum": 0.6, "reset_option": 0},
        invalid=(({"momentum": -0.1}, "momentum"),),
        injectable=("momentum", "c"),
    ),
    Method(
        name="adam_sls",
        factory=optax_ls.adam_sls,
        kwargs={"n_batches_per_epoch": 10, "init_step_size": 0.1},
        invalid=_SLS_INVALID
        + (
            ({"b1": 1.0}, "b1"),
            ({"b2": -0.1}, "b2"),
            ({"eps": 0.0}, "eps"),
        ),
        injectable=("init_step_size", "c", "b1", "b2"),
    ),
    Method(
        name="pal",
        factory=optax_ls.pal,
        kwargs={},
        invalid=(
            ({"measuring_step": 0.0}, "measuring_step"),
            ({"update_step_adaptation": -1.0}, "update_step_adaptation"),
            ({"direction_adaptation": 1.5}, "direction_adaptation"),
            ({"direction_adaptation": -0.1}, "direction_adaptation"),
            ({"max_step": 0.0}, "max_step"),
        ),
        injectable=("measuring_step", "update_step_adaptation", "direction_adaptation"),
        # The measuring point lies 0.1 from params; PAL steps without evaluating.
        first_trial={"measuring_step": 0.1},
        evaluates_landing_point=False,
    ),
    # SaLSa searches at every update until its step-size averages fill (L = 1
    # for the first ~90 searches), so the suite's few steps all search.
    Method(
        name="salsa",
        factory=optax_ls.salsa,
        kwargs={},
        invalid=_SALSA_INVALID,
        injectable=("init_step_size", "c", "b3", "decrease_factor", "max_search_interval"),
        first_trial={"init_step_size": 1.0},
    ),
    Method(
        name="salsa_no_speedup",
        factory=optax_ls.salsa,
        kwargs={"speed_up": False},
        invalid=(
            ({"require_decrease": "yes"}, "require_decrease"),
            ({"check_gradient": None}, "check_gradient"),
        ),
        injectable=("c", "b3", "increase_factor"),
        first_trial={"init_step_size": 1.0},
    ),
    Method(
        name="adam_salsa",
        factory=optax_ls.adam_salsa,
        kwargs={"init_step_size": 0.1},
        invalid=_SALSA_INVALID
        + (
            ({"b1": 1.0}, "b1"),
            ({"b2": -0.1}, "b2"),
            ({"eps": 0.0}, "eps"),
        ),
        injectable=("init_step_size", "c", "b3", "b1", "b2"),
        first_trial={"init_step_size": 1.0},
    ),
    Method(
        name="adam_salsa_cooldown",
        factory=optax_ls.adam_salsa_cooldown,
        # The suite's runs reach the cool-down (the last 6 of 30 updates) of a short run.
        kwargs={"total_steps": 30, "init_step_size": 0.1},
        invalid=(
            ({"total_steps": 0}, "total_steps"),
            ({"total_steps": 2.5}, "total_steps"),
            ({"cooldown_fraction": 1.5}, "cooldown_fraction"),
            ({"c": 1.0}, "c"),
            ({"b1": 1.0}, "b1"),
        ),
        injectable=("init_step_size", "c", "b3"),
        first_trial={"init_step_size": 1.0},
        # The third update's momentum direction climbs on the suite's batch: it reuses the
        # last step without a trial (num_evals 0).
        min_evals=0,
    ),
    *(
        Method(
            name=f"labpal_{mode}",
            factory=optax_ls.labpal,
            # Cycles of 2 measuring calls (zero updates) and 5 updates: the
            # suite's 30 steps span 4 fits, and step 3 is an update.
            kwargs={"mode": mode, "approx_batches": 2, "n_sgd": 5},
            invalid=_LABPAL_INVALID,
            injectable=("alpha", "max_step_size", "n_sgd", "approx_batches"),
            # The first value_fn call measures at s1 = 0.1 from params.
            first_trial={"measure_points": (0.1, 0.2)},
            evaluates_landing_point=False,
            min_evals=0,  # training calls evaluate nothing
        )
        for mode in ("sgd", "nsgd")
    ),
    Method(
        name="l_sls",
        factory=optax_ls.l_sls,
        kwargs={"n_batches_per_epoch": 10},
        invalid=_METRIC_SLS_INVALID,
        injectable=("init_step_size", "c", "decrease_factor", "gamma", "eps"),
    ),
    Method(
        name="sa_sls",
        factory=optax_ls.sa_sls,
        kwargs={"n_batches_per_epoch": 10},
        invalid=_METRIC_SLS_INVALID,
        injectable=("init_step_size", "c", "decrease_factor", "eps"),
        update_kwargs=_smooth_metric,
    ),
    Method(
        name="a_sls",
        factory=optax_ls.a_sls,
        kwargs={"n_batches_per_epoch": 10},
        invalid=_METRIC_SLS_INVALID,
        injectable=("init_step_size", "c", "decrease_factor", "eps"),
        update_kwargs=_step_metric,
    ),
    Method(
        name="gols_i",
        factory=optax_ls.gols_i,
        # The thesis's grid starts GOLS-I at 1e-3 to 1; the paper's 1e-8 needs
        # about 25 calls to grow. Every call tests or moves to a trial point.
        kwargs={"init_step_size": 0.1},
        invalid=(
            ({"init_step_size": 0.0}, "init_step_size"),
            ({"c2": 0.0}, "c2"),
            ({"eta": 1.0}, "eta"),
            ({"eta": 0.5}, "eta"),
            ({"min_step_size": -1.0}, "min_step_size"),
            ({"max_step_size": 0.0}, "max_step_size"),
            ({"min_step_size": 1.0, "max_step_size": 0.5}, "max_step_size"),
        ),
        injectable=("init_step_size", "c2", "eta", "min_step_size", "max_step_size"),
        # It moves to a trial point before its gradient is seen (next call).
        evaluates_landing_point=False,
        min_evals=0,  # gradient-only: value_fn is never called
        needs_value_fn=False,
    ),
    Method(
        name="tlr",
        factory=optax_ls.tlr,
        # The paper's SGD form: a window of round(0.33 * 10) = 3 calls.
        kwargs={"n_batches_per_epoch": 10},
        invalid=_TLR_INVALID,
        injectable=("init_learning_rate", "c", "p", "n_batches_per_epoch"),
        first_trial={},
        evaluates_landing_point=False,
        min_evals=0,  # value_fn is never called
        needs_value_fn=False,
    ),
    Method(
        name="tlr_naive",
        factory=optax_ls.tlr,
        kwargs={"variant": "naive"},
        invalid=_TLR_INVALID[:5] + (({"variant": "naive", "eta": 0.0}, "eta"),),
        injectable=("init_learning_rate", "eta", "max_learning_rate"),
        # The trial point w - 0.1 g lies about 0.3 from params; the step to
        # w - alpha' g with the trained rate is not evaluated.
        first_trial={"init_learning_rate": 0.1},
        evaluates_landing_point=False,
    ),
    Method(
        name="sgd_hd",
        factory=optax_ls.sgd_hd,
        kwargs={"init_learning_rate": 0.1, "beta": 0.01},
        invalid=(
            ({"beta": 0.0}, "beta"),
            ({"init_learning_rate": -0.1}, "init_learning_rate"),
            ({"min_learning_rate": 0.2}, "min_learning_rate"),
        ),
        injectable=("init_learning_rate", "beta"),
        first_trial={},
        evaluates_landing_point=False,
        min_evals=0,  # value_fn is never called
        needs_value_fn=False,
    ),
    Method(
        name="pls",
        factory=optax_ls.pls,
        kwargs={},
        invalid=(
            ({"init_step_size": 0.0}, "init_step_size"),
            ({"c1": 0.0}, "c1"),
            ({"c2": 1.0}, "c2"),
            ({"c1": 0.5, "c2": 0.4}, "c2"),
            ({"wolfe_threshold": 1.0}, "wolfe_threshold"),
            ({"budget": 0}, "budget"),
            ({"budget": 2.5}, "budget"),
            ({"reset_factor": 0.0}, "reset_factor"),
            ({"max_extrapolations": -1}, "max_extrapolations"),
            ({"min_step_size": 0.0}, "min_step_size"),
        ),
        injectable=("init_step_size", "c1", "c2", "wolfe_threshold", "reset_factor"),
        first_trial={},
        # Each call observes the point it stands at; it moves before seeing the next.
        evaluates_landing_point=False,
        update_kwargs=_per_example_mlp_loss,
        needs_value_fn=False,
    ),
)

# One rate per tensor: its `learning_rate` is a tree of rates.
TLR_PER_LAYER = Method(
    name="tlr_per_layer",
    factory=optax_ls.tlr,
    kwargs={"n_batches_per_epoch": 10, "per_layer": True},
    invalid=_TLR_INVALID,
    injectable=("init_learning_rate", "c"),
    first_trial={},
    evaluates_landing_point=False,
    min_evals=0,
    needs_value_fn=False,
)

METHODS = (*METHODS, TLR_PER_LAYER)
