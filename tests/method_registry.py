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

import optax

import optax_ls


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
)
