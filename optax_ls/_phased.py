"""The across-call core: searches that span several ``update`` calls.

Some line searches cannot finish inside one ``update``: each of their steps
needs a new mini-batch. LABPAL measures the loss along a fixed line over many
batches before it trains; GOLS-I and PLS evaluate every trial point on a new
batch; the efficient trainable learning rate (TLR) updates its rate once per
window of calls; SGD-HD reads the previous update. In JAX such a method is a
state machine held in the optimizer state: each call consumes the one batch it
is given, runs the code of the current *phase* and says which phase the next
call runs. This module holds that machinery, written once:

* :class:`PhaseClock`: the phase (int32), the calls made in it and the calls
  made in total (the batches consumed, the paper's step count ``t``);
* :func:`run_phase`: one :func:`jax.lax.switch` over the phase; every branch
  ``(clock, operand) -> (out, Transition)`` returns the same structure and a
  :class:`Transition` (the next phase, or a fresh start of the same one), and
  the clock advances;
* :class:`Group` and :func:`group_step`: accumulation over ``k`` calls (a
  batch of ``k`` mini-batches by gradient accumulation), where ``k`` may change
  from one group to the next (a batch-size schedule) and a call with a
  non-finite input can be left out;
* tree helpers for the rest: :func:`accumulate`, :func:`store_or_keep`,
  :func:`select_tree` and :func:`sum_of_squares`.

Everything is traced once: the phase, the counters and the group size are
arrays, so the jitted step compiles once and the branches of all phases are
compiled into it (only the taken one runs). Three habits keep the common call
cheap (measured with ``benchmarks/step_overhead.py`` on XLA:CPU):

* let the branches decide scalars (a step size, flags) and do the
  parameter-sized algebra that all phases share after the switch: a
  conditional's outputs are separate buffers that nothing fuses with, while
  ``coef * direction`` formed outside fuses with ``optax.apply_updates``;
* write a buffer that a call may keep with :func:`store_or_keep` (one
  conditional: a kept buffer is copied, a stored one is not read), and form
  the update from the buffer just written rather than from a select;
* prefer a select to a small nested conditional (:func:`accumulate`): on
  XLA:CPU a conditional costs more than one more read of a buffer.

LABPAL's training call adds to SGD's work one norm of the gradient and one
write of its direction buffer (which also reads it while a batch-size
schedule can group calls), plus a few scalar operations.

How the methods map onto it:

* LABPAL (:mod:`optax_ls._labpal`): phase 0 *measure* (the first group of
  ``k`` calls fixes the line direction, then every call adds the losses of
  its batch at three points of the line; zero update), phase 1 *train*
  (updates with the fitted step, one per group of ``k`` calls); the last
  measuring call fits the parabola and moves to phase 1, the ``n_sgd``-th
  update moves back to phase 0; a failed fit restarts phase 0 or trains on.
* GOLS-I (:mod:`optax_ls._gols`): each trial is one call on a new batch.
  Phase 0 *start*: the direction of the call fixes the line ``d``, the call
  moves the weights to the first trial ``w + lambda d``. Phase 1 *first
  trial*: the call sees the gradient at the trial point and either accepts
  (next phase 0) or moves by ``(lambda' - lambda) d`` to the next trial,
  growing (phase 2) or shrinking (phase 3) the step; phases 2 and 3 go on
  until the sign of the directional derivative changes or the step leaves
  its bounds, which bounds the number of trials. The carry holds ``d``,
  ``lambda`` and the initial directional derivative.
* PLS (:mod:`optax_ls._pls`): like GOLS-I, one evaluation per call at the
  current trial point (phase 0 *start*, phase 1 *trial*); the carry holds the
  Gaussian-process observations in fixed-size arrays (``budget`` trials plus
  the start at index 0), the ``n``-th trial filled at index
  ``clock.phase_calls + 1``, so that their shapes never change.
* Efficient TLR (:mod:`optax_ls._tlr`) and SGD-HD
  (:mod:`optax_ls._hypergradient`) have a single phase and do not use this
  module's clock: TLR counts the calls of its window in its own state (and
  writes its buffers with :func:`store_or_keep`), SGD-HD carries the previous
  update direction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class PhaseClock(NamedTuple):
  """Where a search that spans update calls stands.

  Attributes:
    phase: the phase the next call runs (int32).
    phase_calls: the calls already made in that phase (int32; 0 on the first
      call of a phase, also after a fresh start of the same phase).
    calls: the update calls made in total (int32): the batches consumed.
  """

  phase: Array
  phase_calls: Array
  calls: Array


class Transition(NamedTuple):
  """What a branch of :func:`run_phase` asks for the next call.

  Attributes:
    phase: the phase of the next call (int32 scalar).
    restart: when true, that phase starts afresh (``phase_calls`` 0) even if
      it is the current one.
  """

  phase: Array
  restart: Array


def init_clock(phase: int = 0) -> PhaseClock:
  """A clock at the first call of ``phase``."""
  zero = jnp.zeros((), jnp.int32)
  return PhaseClock(phase=jnp.asarray(phase, jnp.int32), phase_calls=zero, calls=zero)


def transition(phase: Any, restart: Any = False) -> Transition:
  """A :class:`Transition` from Python or traced values."""
  return Transition(jnp.asarray(phase, jnp.int32), jnp.asarray(restart, bool))


def advance(clock: PhaseClock, to: Transition) -> PhaseClock:
  """The clock after one call that asked for ``to``."""
  same = (to.phase == clock.phase) & ~to.restart
  return PhaseClock(
      phase=to.phase,
      phase_calls=jnp.where(same, clock.phase_calls + 1, 0).astype(jnp.int32),
      calls=(clock.calls + 1).astype(jnp.int32),
  )


Branch = Callable[[PhaseClock, Any], tuple[Any, Transition]]


def run_phase(
    clock: PhaseClock, branches: Sequence[Branch], operand: Any
) -> tuple[Any, PhaseClock]:
  """Runs ``branches[clock.phase](clock, operand)`` and advances the clock.

  One :func:`jax.lax.switch`: every branch is traced (and must return the
  same structure, dtypes included), only the current one runs. Branches may
  also close over arrays (e.g. the parameters for a ``value_fn`` call).

  Args:
    clock: the state machine's clock.
    branches: one function per phase, ``(clock, operand) -> (out, transition)``.
    operand: passed to the branch.

  Returns:
    ``(out, new_clock)``.
  """
  if not branches:
    raise ValueError("run_phase needs at least one branch.")
  if len(branches) == 1:
    out, to = branches[0](clock, operand)
  else:
    wrapped = [lambda op, b=b: b(clock, op) for b in branches]
    index = jnp.clip(clock.phase, 0, len(branches) - 1)
    out, to = jax.lax.switch(index, wrapped, operand)
  return out, advance(clock, to)


class Group(NamedTuple):
  """Accumulation of ``size`` calls into one step (e.g. a larger batch).

  Attributes:
    size: the calls the current group spans (int32, at least 1).
    done: the calls already accumulated in it (int32).
  """

  size: Array
  done: Array


def init_group(size: int = 1) -> Group:
  """A :class:`Group` of ``size`` calls with nothing accumulated yet."""
  return Group(size=jnp.asarray(size, jnp.int32), done=jnp.zeros((), jnp.int32))


class GroupCall(NamedTuple):
  """One call's place in its :class:`Group` (see :func:`group_step`).

  Attributes:
    first: the call starts the group (the accumulator is replaced, not added to).
    last: the call completes the group (if it is counted).
    size: the group's size.
    next: the group after this call.
  """

  first: Array
  last: Array
  size: Array
  next: Group


def group_step(group: Group, new_size: Any, counted: Any = True) -> GroupCall:
  """Places one call in a group of calls.

  A group takes its size when it starts (``new_size``, e.g. read from a
  batch-size schedule), so a schedule change never splits a group. A call that
  is not ``counted`` (e.g. its gradient is not finite) leaves the group as it
  was.
  """
  first = group.done == 0
  size = jnp.where(first, jnp.maximum(jnp.asarray(new_size, jnp.int32), 1), group.size)
  last = group.done + 1 >= size
  counted = jnp.asarray(counted, bool)
  done = jnp.where(counted, jnp.where(last, 0, group.done + 1), group.done)
  kept = jnp.where(counted, size, group.size)
  return GroupCall(
      first=first,
      last=last,
      size=size.astype(jnp.int32),
      next=Group(size=kept.astype(jnp.int32), done=done.astype(jnp.int32)),
  )


def reset_group(group: Group) -> Group:
  """The group with nothing accumulated (its next call starts a new one)."""
  return Group(size=group.size, done=jnp.zeros_like(group.done))


# ---------------------------------------------------------------------------
# Tree helpers.
# ---------------------------------------------------------------------------


def accumulate(total: Any, x: Any, first: Array) -> Any:
  """``x`` where ``first``, else ``total + x``; leaves in ``total``'s dtypes.

  A select (it reads ``total`` also when ``first``): on XLA:CPU a nested
  conditional costs more than the extra read (``benchmarks/step_overhead.py``).
  """
  return jax.tree.map(
      lambda t, v: jnp.where(first, v.astype(t.dtype), t + v.astype(t.dtype)), total, x
  )


def store_or_keep(store: Array, new: Callable[[], Any], old: Any) -> Any:
  """``new()`` where ``store``, else a copy of ``old``, in one conditional.

  Only the taken branch reads its inputs: a call that stores does not read
  ``old``, one that keeps does not compute ``new``. The kept value is copied
  inside its branch (a select on the branch's own predicate that XLA cannot
  remove): a branch returning ``old`` unchanged makes XLA copy ``old`` before
  the conditional on every call instead, because an output must not alias a
  non-donated input.
  """
  store = jnp.asarray(store, bool)

  def keep():
    return jax.tree.map(lambda a: jnp.where(store, jnp.zeros_like(a), a), old)

  return jax.lax.cond(store, new, keep)


def select_tree(pred: Array, on_true: Any, on_false: Any) -> Any:
  """``on_true`` where the scalar ``pred`` holds, else ``on_false``, leaf by leaf."""
  return jax.tree.map(lambda a, b: jnp.where(pred, a.astype(b.dtype), b), on_true, on_false)


def sum_of_squares(tree: Any, dtype: Any = jnp.float32) -> Array:
  """``sum(x**2)`` over the tree in ``dtype`` (non-finite if any entry is)."""
  leaves = [jnp.sum(jnp.square(x.astype(dtype))) for x in jax.tree.leaves(tree)]
  return sum(leaves, jnp.zeros((), dtype))
