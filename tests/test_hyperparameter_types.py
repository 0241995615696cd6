"""Hyperparameters that are not numbers fail at construction, naming the argument.

Before, ``optax_ls.sls(c="0.1")`` built a transformation whose first update
failed deep inside JAX; ``_core.check`` skipped every value it could not turn
into a float. These tests run on every public factory of the registry.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ls
from optax_ls import _core
from tests.method_registry import METHODS, Method

parametrize = pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)


def _numeric_hyperparameters(method: Method) -> list[str]:
  """The factory's arguments that take a number: a numeric default, or an ``int``/``float`` hint.

  Arguments whose default is None count when their annotation names ``int`` or
  ``float`` (``n_batches_per_epoch: int | None``); flags (``bool``) and
  tuples (``measure_points``) do not.
  """
  names = []
  for name, p in inspect.signature(method.factory).parameters.items():
    value = method.kwargs.get(name, p.default)
    annotation = str(p.annotation)
    if isinstance(value, bool) or "bool" in annotation:
      continue
    if isinstance(value, numbers.Real) or (
        value is None and ("int" in annotation or "float" in annotation)
    ):
      names.append(name)
  return names


@parametrize
def test_string_hyperparameter_raises_naming_it(method: Method):
  names = _numeric_hyperparameters(method)
  assert names, f"{method.name} has no numeric hyperparameter"
  for name in names:
    with pytest.raises(ValueError, match=rf"`{name}` must be a number, got 'abc'"):
      method.make(**{name: "abc"})


@parametrize
def test_numeric_string_is_not_a_number(method: Method):
  # "0.1" converts with float(): it was accepted by validation and failed in JAX later.
  name = _numeric_hyperparameters(method)[0]
  with pytest.raises(ValueError, match=rf"`{name}` must be a number, got '0.1'"):
    method.make(**{name: "0.1"})


@pytest.mark.parametrize(
    ("factory", "kwargs", "name"),
    [
        (optax_ls.sls, {"c": "0.1"}, "c"),
        (optax_ls.salsa, {"c": "abc"}, "c"),
        (optax_ls.sls, {"c": None}, "c"),
        (optax_ls.salsa, {"max_step_size": None}, "max_step_size"),
        (optax_ls.sls, {"c": [0.1]}, "c"),
        (optax_ls.sls, {"c": True}, "c"),
        (optax_ls.sls, {"init_step_size": 1.0 + 0.5j}, "init_step_size"),
        (optax_ls.sls, {"c": np.array([0.1, 0.2])}, "c"),
        (optax_ls.sls, {"c": np.array("0.1")}, "c"),
        (optax_ls.pal, {"max_step": jnp.array(True)}, "max_step"),
        (optax_ls.sgd_hd, {"min_learning_rate": "abc"}, "min_learning_rate"),
        (optax_ls.sls, {"increase_factor": "abc"}, "increase_factor"),
        (optax_ls.sls, {"reset_option": "1"}, "reset_option"),
        (optax_ls.labpal, {"momentum": "abc"}, "momentum"),
        (optax_ls.tlr, {"window": "abc"}, "window"),
        (optax_ls.cooldown_schedule, {"total_steps": "10"}, "total_steps"),
    ],
)
def test_non_numbers_raise(factory, kwargs: dict[str, Any], name: str):
  with pytest.raises(ValueError, match=rf"`{name}` must be a (single )?number"):
    factory(**kwargs)


@pytest.mark.parametrize(
    "c",
    [0.1, np.float32(0.1), np.float64(0.1), np.array(0.1), jnp.float32(0.1), jnp.array([0.1])],
    ids=["float", "np_float32", "np_float64", "np_array", "jnp_float32", "jnp_size_one"],
)
def test_numbers_of_every_kind_are_accepted(c):
  optax_ls.sls(c=c, n_batches_per_epoch=10)
  optax_ls.salsa(c=c)


def test_integers_of_every_kind_are_accepted():
  for n in (10, np.int32(10), np.int64(10), jnp.int32(10), np.array(10)):
    optax_ls.sls(n_batches_per_epoch=n, max_backtracking_steps=n)
    optax_ls.salsa(max_search_interval=n)


def test_optional_numbers_still_accept_none():
  optax_ls.sls(momentum=None, reset_option=2, n_batches_per_epoch=None)
  optax_ls.labpal(momentum=None, dataset_size=None, batch_size=None)
  optax_ls.tlr(window=None, n_batches_per_epoch=10)
  optax_ls.sgd_hd(min_learning_rate=None)


def test_range_is_still_checked_after_the_type():
  with pytest.raises(ValueError, match=r"`c` must be in \(0, 1\), got 1.5"):
    optax_ls.sls(c=1.5)
  with pytest.raises(ValueError, match=r"`c` must be in \(0, 1\)"):
    optax_ls.salsa(c=np.float32(1.5))


def test_traced_values_skip_the_checks():
  # Inside jit, inject_hyperparams passes tracers: neither the type nor the range is known.
  seen = []

  @jax.jit
  def f(x):
    _core.check("c", x, lambda v: seen.append(v) or False, "never")
    return x

  f(jnp.float32(0.5))
  assert seen == []


def test_inject_hyperparams_with_validated_values_runs_under_jit():
  opt = optax.inject_hyperparams(optax_ls.sls)(c=0.2, init_step_size=1.0, reset_option=2)
  params = {"w": jnp.ones(3)}
  loss = lambda p: jnp.sum(p["w"] ** 2)  # noqa: E731

  @jax.jit
  def step(params, state):
    value, grad = jax.value_and_grad(loss)(params)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
    return optax.apply_updates(params, updates), state

  new_params, _ = step(params, opt.init(params))
  assert float(loss(new_params)) < float(loss(params))


def test_number_helper():
  assert _core.number("x", 3) == 3.0
  assert _core.number("x", None, optional=True) is None
  with pytest.raises(ValueError, match="`x` must be a number, got None"):
    _core.number("x", None)
  with pytest.raises(ValueError, match=r"`x` must be a single number, got an array of shape"):
    _core.number("x", jnp.zeros((2, 2)))
