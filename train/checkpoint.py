"""Orbax checkpoints of a run: the train state's arrays plus the records written so far.

A checkpoint holds ``step``, ``params``, ``batch_stats``, ``opt_state`` and the
dropout ``rng`` of a :class:`train.train.TrainState` (its static fields are
rebuilt from the configuration) and, as JSON, the metrics records and the
running sums a resumed run needs to continue its records. Restoring into a
state built from the same configuration gives back the same arrays, so a
resumed run continues bit for bit (the data order depends only on the seed,
the epoch and the position in it).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def manager(directory: str) -> ocp.CheckpointManager:
  """A checkpoint manager for ``directory`` that keeps the 3 latest checkpoints.

  It saves whenever :func:`save` is called with a step after the latest saved one:
  the caller decides the interval. (Orbax skips, without an error, a save at a step
  at or before the latest checkpoint in ``directory``.) Saving is asynchronous.

  Args:
    directory: where checkpoints go (created if missing; an absolute path is used).

  Returns:
    An ``orbax.checkpoint.CheckpointManager``; call its ``wait_until_finished()``
    before reading what it saved, and ``close()`` when done.

  Example:
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as directory:
    ...   mgr = manager(os.path.join(directory, "checkpoints"))
    ...   mgr.latest_step(), os.path.isdir(os.path.join(directory, "checkpoints"))
    ...   mgr.close()
    (None, True)
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=3, create=True
  )
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _arrays(state: Any) -> dict[str, Any]:
  return {
      "step": state.step,
      "params": state.params,
      "batch_stats": state.batch_stats,
      "opt_state": state.opt_state,
      "rng": state.rng,
  }


def save(mgr: ocp.CheckpointManager, state: Any, extra: dict[str, Any]) -> None:
  """Saves ``state``'s arrays and the JSON-serialisable ``extra`` at ``state.step``.

  The arrays saved are ``step``, ``params``, ``batch_stats``, ``opt_state`` and
  ``rng``; the other fields of ``state`` are not. The write is asynchronous: it may
  still run when :func:`save` returns (``mgr.wait_until_finished()`` waits for it).

  Args:
    mgr: a manager from :func:`manager`.
    state: a :class:`train.train.TrainState`, or any object with the array fields
      ``step`` (a scalar: the checkpoint's step), ``params``, ``batch_stats``,
      ``opt_state`` and ``rng``.
    extra: JSON-serialisable data saved beside the arrays (the harness saves its
      records and running sums there).

  Example:
    >>> import tempfile, flax, jax, jax.numpy as jnp
    >>> @flax.struct.dataclass
    ... class State:
    ...   step: jax.Array
    ...   params: dict
    ...   batch_stats: dict
    ...   opt_state: tuple
    ...   rng: jax.Array
    >>> state = State(jnp.asarray(7), {"w": jnp.ones(3)}, {}, (jnp.zeros(3),),
    ...               jax.random.key_data(jax.random.key(0)))
    >>> with tempfile.TemporaryDirectory() as directory:
    ...   mgr = manager(directory)
    ...   save(mgr, state, {"records": [1, 2]})
    ...   mgr.wait_until_finished()
    ...   mgr.all_steps()
    ...   mgr.close()
    [7]
  """
  step = int(jax.device_get(state.step))
  mgr.save(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(_arrays(state)), extra=ocp.args.JsonSave(extra)
      ),
  )


def restore(mgr: ocp.CheckpointManager, state: Any) -> tuple[Any, dict[str, Any]] | None:
  """The latest checkpoint of ``mgr`` restored into ``state``'s structure, or None if none.

  Args:
    mgr: a manager from :func:`manager`.
    state: a state like the saved one (built from the same configuration): its
      arrays ``step``, ``params``, ``batch_stats``, ``opt_state`` and ``rng`` give the
      structure, shapes, dtypes and shardings to restore, and it must have a
      ``replace`` method (a :class:`flax.struct.PyTreeNode`, like
      :class:`train.train.TrainState`).

  Returns:
    ``(state, extra)``: ``state`` with those arrays replaced by the checkpoint's (its
    other fields kept), and the saved ``extra`` as a dict; or None when ``mgr``
    holds no checkpoint.

  Example:
    >>> import tempfile, flax, jax, jax.numpy as jnp
    >>> @flax.struct.dataclass
    ... class State:
    ...   step: jax.Array
    ...   params: dict
    ...   batch_stats: dict
    ...   opt_state: tuple
    ...   rng: jax.Array
    >>> state = State(jnp.asarray(7), {"w": jnp.ones(3)}, {}, (jnp.zeros(3),),
    ...               jax.random.key_data(jax.random.key(0)))
    >>> fresh = state.replace(step=jnp.asarray(0), params={"w": jnp.zeros(3)})
    >>> with tempfile.TemporaryDirectory() as directory:
    ...   mgr = manager(directory)
    ...   restore(mgr, fresh) is None
    ...   save(mgr, state, {"records": [1, 2]})
    ...   mgr.wait_until_finished()
    ...   restored, extra = restore(mgr, fresh)
    ...   mgr.close()
    True
    >>> int(restored.step), restored.params["w"].tolist(), extra
    (7, [1.0, 1.0, 1.0], {'records': [1, 2]})
  """
  step = mgr.latest_step()
  if step is None:
    return None
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _arrays(state))
  restored = mgr.restore(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), extra=ocp.args.JsonRestore()
      ),
  )
  arrays = restored["state"]
  return state.replace(**arrays), dict(restored["extra"])
