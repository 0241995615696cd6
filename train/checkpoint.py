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

  It saves whenever :func:`save` is called: the caller decides the interval.

  Args:
    directory: where checkpoints go (created if missing; an absolute path is used).
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
  """Saves ``state``'s arrays and the JSON-serialisable ``extra`` at ``state.step``."""
  step = int(jax.device_get(state.step))
  mgr.save(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(_arrays(state)), extra=ocp.args.JsonSave(extra)
      ),
  )


def restore(mgr: ocp.CheckpointManager, state: Any) -> tuple[Any, dict[str, Any]] | None:
  """The latest checkpoint of ``mgr`` restored into ``state``'s structure, or None if none.

  Returns:
    ``(state, extra)``: ``state`` with its arrays replaced, and the saved ``extra``.
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
