"""One process of the harness's multi-process runs in ``tests/test_multiprocess.py``.

Run as ``python -m tests.multiprocess_worker RESULT --steps N [--checkpoint-every K]
[--out DIR] [--resume]`` from the repository's root. The environment decides the run's
shape, as it does on a cluster: ``XLA_FLAGS=--xla_force_host_platform_device_count=D`` gives
the process ``D`` CPU devices, and ``OPTAX_LS_DISTRIBUTED=1`` with
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` makes it one process
of a multi-process run (:func:`train.train.maybe_initialize_distributed`); without them it is a
plain single-process run.

The process trains :data:`OPTIMIZERS` with :func:`train.train.run` (the harness's multi-host
path: the distributed runtime, the global mesh, every process feeding its rows of each global
batch, checkpoints written by all processes) and writes ``RESULT.<process index>.npz``: every
array of each optimizer's final state, from the process's own copy, and the run's records
(JSON). It also records which rows of the first global batch its devices hold and the step of
every checkpoint the run restored.

Exit code 77, with one line on stderr, means that the CPU backend could not be started with
the cross-process collectives (gloo); the test then skips.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import numpy as np

# The optimizers of the run, one after the other from the same initialisation. SLS and SaLSa
# start at a step size of 10, so that their searches backtrack (the test checks that some
# step takes several trials); LABPAL alternates 2 measuring calls (no update) with 2 SGD
# updates, so that a few steps cross its phases (a resume at step 3 lands in an SGD phase).
OPTIMIZERS = (
    ("sls", {"init_step_size": 10.0}),
    ("salsa", {"init_step_size": 10.0}),
    ("pal", {}),
    ("labpal_sgd", {"approx_batches": 2, "n_sgd": 2}),
)
BATCH_SIZE = 32  # global: 16 rows per process with 2 processes, 4 per device with 8 devices
SKIP_EXIT = 77  # "skipped": no cross-process collectives on this CPU build


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("result")
  parser.add_argument("--steps", type=int, required=True)
  parser.add_argument("--checkpoint-every", type=int, default=0)
  parser.add_argument("--out")
  parser.add_argument("--resume", action="store_true")
  args = parser.parse_args(argv)

  import train.train as harness
  from train import data
  from train.config import Config
  from train.optimizers import OptimizerConfig

  # The harness's own initialisation (run() calls it again and finds it done). Started here so
  # that a CPU build without cross-process collectives is told apart from a failing run.
  distributed = harness.maybe_initialize_distributed()
  try:
    jax.devices()
  except Exception as error:  # the message decides
    if distributed and any(w in str(error).lower() for w in ("gloo", "collectives")):
      message = " ".join(str(error).split())[:300]
      print(f"CPU cross-process collectives (gloo) unavailable: {message}", file=sys.stderr)
      raise SystemExit(SKIP_EXIT) from None
    raise

  config = Config(
      name="multiprocess", dataset="digits", model="mlp", model_kwargs={"features": (16,)},
      optimizers=tuple(OptimizerConfig(name, kwargs=kwargs) for name, kwargs in OPTIMIZERS),
      epochs=2, batch_size=BATCH_SIZE, eval_batch_size=64, augment=False,
      max_steps=args.steps, log_every=1, checkpoint_every=args.checkpoint_every,
      resume=args.resume, out=args.out,
  )

  # Which rows of the first global batch this process's devices hold (global_batch feeds the
  # process's own slice of the batch every process reads).
  train_source, _, spec = data.load(config.dataset, seed=config.seed,
                                    test_fraction=config.test_fraction)
  x, y = next(data.batches(train_source, spec, batch_size=BATCH_SIZE, seed=config.seed,
                           epoch=0, augment=False))
  _, labels = harness.global_batch(harness.make_mesh(), x, y)
  local_rows = sorted(
      (s.index[0].start, s.index[0].stop, bool(np.array_equal(np.asarray(s.data),
                                                             y[s.index[0]])))
      for s in labels.addressable_shards
  )

  # run() returns the records; the final states are taken on their way out of train_one, and
  # the steps of the checkpoints it restores on their way out of checkpoint.restore.
  states, restored_steps = {}, []
  train_one, restore = harness.train_one, harness.checkpoint.restore

  def keep_state(config, optimizer, *rest, **kwargs):
    state, records = train_one(config, optimizer, *rest, **kwargs)
    states[optimizer.name] = state
    return state, records

  def note_step(manager, state):
    restored = restore(manager, state)
    restored_steps.append(None if restored is None else int(restored[0].step))
    return restored

  harness.train_one, harness.checkpoint.restore = keep_state, note_step
  history = harness.run(config, verbose=False)

  arrays = {}
  for name, state in states.items():
    leaves = jax.tree_util.tree_flatten_with_path(
        (state.step, state.params, state.batch_stats, state.opt_state, state.rng))[0]
    for path, leaf in leaves:
      # The replicated state: every process holds a full copy; this one's own is compared.
      assert leaf.sharding.is_fully_replicated, (name, jax.tree_util.keystr(path))
      arrays[f"{name}{jax.tree_util.keystr(path)}"] = np.asarray(leaf.addressable_data(0))
  info = {
      "process_index": jax.process_index(),
      "process_count": jax.process_count(),
      "device_count": jax.device_count(),
      "local_device_count": jax.local_device_count(),
      "cpu_collectives": jax.config.jax_cpu_collectives_implementation,
      "local_rows": local_rows,
      "restored_steps": restored_steps,
      "history": history,
  }
  np.savez(f"{args.result}.{jax.process_index()}.npz", info=np.array(json.dumps(info)),
           **arrays)


if __name__ == "__main__":
  main()
