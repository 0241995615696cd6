"""The across-call core on its own: a toy state machine against a Python model.

The toy machine averages its inputs over groups of ``k`` calls (``k`` from a
schedule on the call count), emits each group's mean and then holds for
``HOLD`` calls emitting 0. A non-finite input while collecting restarts the
collecting phase (its partial group is dropped). The same machine written as
plain Python, independently of ``_phased``, gives the expected outputs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from optax_ls import _phased

COLLECT, HOLD_PHASE = 0, 1
HOLD = 2


def _k_of(calls):
  """Group sizes: 1 for the first 5 calls, then 3 (jnp and Python alike)."""
  return jnp.where(calls < 5, 1, 3)


class _Toy(NamedTuple):
  clock: _phased.PhaseClock
  group: _phased.Group
  total: jax.Array


def _toy_init() -> _Toy:
  return _Toy(_phased.init_clock(COLLECT), _phased.init_group(), jnp.zeros((), jnp.float32))


@jax.jit
def _toy_step(state: _Toy, x: jax.Array) -> tuple[jax.Array, _Toy]:
  ok = jnp.isfinite(x)
  gcall = _phased.group_step(state.group, _k_of(state.clock.calls), ok)

  def collect(clock, x):
    del clock
    total = _phased.accumulate(state.total, x, gcall.first)
    emit = ok & gcall.last
    out = jnp.where(emit, total / gcall.size, 0.0)
    group = jax.tree.map(lambda a, b: jnp.where(ok, a, b), gcall.next,
                         _phased.reset_group(state.group))
    new = _Toy(state.clock, group, jnp.where(ok, total, 0.0))
    to = _phased.transition(jnp.where(emit, HOLD_PHASE, COLLECT), restart=~ok)
    return (out, new), to

  def hold(clock, x):
    del x
    done = clock.phase_calls + 1 >= HOLD
    return (jnp.zeros(()), state), _phased.transition(jnp.where(done, COLLECT, HOLD_PHASE))

  (out, new), clock = _phased.run_phase(state.clock, (collect, hold), x)
  return out, new._replace(clock=clock)


def _python_model(xs):
  """The toy machine in plain Python: outputs and (phase, phase_calls) after each call."""
  phase, phase_calls, calls = COLLECT, 0, 0
  size, done, total = 1, 0, 0.0
  outs, clocks = [], []
  for x in xs:
    out = 0.0
    if phase == COLLECT:
      if not math.isfinite(x):
        done, total = 0, 0.0
        phase, phase_calls = COLLECT, 0  # restart
      else:
        if done == 0:
          size, total = (1 if calls < 5 else 3), 0.0
        total += x
        done += 1
        if done == size:
          out, done = total / size, 0
          phase, phase_calls = HOLD_PHASE, 0
        else:
          phase_calls += 1
    else:
      if phase_calls + 1 >= HOLD:
        phase, phase_calls = COLLECT, 0
      else:
        phase_calls += 1
    calls += 1
    outs.append(out)
    clocks.append((phase, phase_calls, calls))
  return outs, clocks


@settings(max_examples=25)
@given(st.lists(st.one_of(st.floats(-10, 10, width=32), st.just(math.nan)), min_size=1,
                max_size=30))
def test_toy_machine_matches_python_model(xs):
  expected_outs, expected_clocks = _python_model(xs)
  state = _toy_init()
  for x, out_ref, clock_ref in zip(xs, expected_outs, expected_clocks, strict=True):
    out, state = _toy_step(state, jnp.float32(x))
    np.testing.assert_allclose(float(out), out_ref, rtol=1e-5, atol=1e-5)
    clock = tuple(int(v) for v in state.clock)
    assert clock == clock_ref
  assert _toy_step._cache_size() == 1  # one compilation for every example


def test_advance_counts_calls_and_resets_on_change_or_restart():
  clock = _phased.init_clock(0)
  clock = _phased.advance(clock, _phased.transition(0))
  assert tuple(map(int, clock)) == (0, 1, 1)
  clock = _phased.advance(clock, _phased.transition(0, restart=True))
  assert tuple(map(int, clock)) == (0, 0, 2)
  clock = _phased.advance(clock, _phased.transition(2))
  assert tuple(map(int, clock)) == (2, 0, 3)
  clock = _phased.advance(clock, _phased.transition(2))
  assert tuple(map(int, clock)) == (2, 1, 4)


def test_one_branch_is_a_plain_call_and_empty_raises():
  clock = _phased.init_clock(0)
  out, new = _phased.run_phase(clock, [lambda c, x: (x + 1, _phased.transition(0))], 1.0)
  assert float(out) == 2.0 and int(new.phase_calls) == 1
  with pytest.raises(ValueError):
    _phased.run_phase(clock, [], 1.0)


def test_only_the_current_branch_runs():
  """Under jit, a branch with a side effect (a host callback) runs only when chosen."""
  seen = []

  def branch(i):
    def run(clock, x):
      jax.debug.callback(lambda: seen.append(i))
      return x, _phased.transition(1 - i)

    return run

  step = jax.jit(lambda c, x: _phased.run_phase(c, [branch(0), branch(1)], x))
  clock = _phased.init_clock(0)
  for _ in range(3):
    _, clock = step(clock, jnp.float32(1.0))
  jax.effects_barrier()
  assert seen == [0, 1, 0]


def test_group_step_keeps_uncounted_calls_out():
  group = _phased.init_group()
  sizes = []
  for counted in (True, False, True, True):
    gcall = _phased.group_step(group, 2, counted)
    sizes.append((bool(gcall.first), bool(gcall.last)))
    group = gcall.next
  # The uncounted call neither starts nor advances the group.
  assert sizes == [(True, False), (False, True), (False, True), (True, False)]
  assert int(group.done) == 1


def test_tree_helpers_keep_dtypes():
  total = {"a": jnp.ones(3, jnp.float32), "b": jnp.ones((), jnp.float32)}
  x = {"a": jnp.full(3, 2.0, jnp.bfloat16), "b": jnp.asarray(2.0, jnp.bfloat16)}
  summed = _phased.accumulate(total, x, jnp.asarray(False))
  assert summed["a"].dtype == jnp.float32 and float(summed["b"]) == 3.0
  replaced = _phased.accumulate(total, x, jnp.asarray(True))
  assert float(replaced["b"]) == 2.0
  chosen = _phased.select_tree(jnp.asarray(True), x, total)
  assert chosen["a"].dtype == jnp.float32 and float(chosen["b"]) == 2.0
  assert float(_phased.sum_of_squares(x)) == 4.0 * 3 + 4.0


def test_store_or_keep_under_jit():
  old = {"a": jnp.arange(3.0), "b": jnp.ones(())}
  new = {"a": jnp.full(3, jnp.nan), "b": jnp.zeros(())}
  f = jax.jit(lambda store, old, new: _phased.store_or_keep(store, lambda: new, old))
  kept = f(jnp.asarray(False), old, new)
  assert jnp.array_equal(kept["a"], old["a"]) and float(kept["b"]) == 1.0  # no NaN leaks
  stored = f(jnp.asarray(True), old, new)
  assert bool(jnp.all(jnp.isnan(stored["a"]))) and float(stored["b"]) == 0.0
