"""The BatchNorm probe's recalibration: averages re-estimated at the weights, whatever they were."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import bn_probe
from models import get_model
from train import OptimizerConfig, data
from train.train import create_state, init_variables


@pytest.mark.slow  # compiles a ResNet (about 30 s): a benchmark's helper, not the library
def test_recalibration_forgets_the_old_averages_and_matches_the_batch_statistics(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / "tiny.npz"
  np.savez(path, x=rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8),
           y=rng.integers(0, 3, 64))
  source, _, spec = data.load(f"npz:{path}", test_fraction=0.25)
  model = get_model("resnet20", num_classes=spec.num_classes, stage_sizes=(1, 1, 1),
                    num_filters=4)
  sample, _ = next(data.batches(source, spec, batch_size=1, seed=0, epoch=0, augment=False))
  state = create_state(model, init_variables(model, jax.random.key(0), sample),
                       OptimizerConfig("sgd"), seed=0, steps_per_epoch=1, total_steps=1,
                       dataset_size=len(source), batch_size=16)
  fresh = bn_probe.recalibrated(state, model, source, spec, batch_size=16)
  # From deliberately wrong averages (means 5, variances 10), the same result: 0.9**64 (1e-3)
  # of the start remains.
  wrong = state.replace(batch_stats=jax.tree_util.tree_map_with_path(
      lambda p, v: jnp.full_like(v, 10.0 if "var" in jax.tree_util.keystr(p) else 5.0),
      state.batch_stats))
  again = bn_probe.recalibrated(wrong, model, source, spec, batch_size=16)
  for a, b in zip(jax.tree.leaves(fresh.batch_stats), jax.tree.leaves(again.batch_stats),
                  strict=True):
    np.testing.assert_allclose(a, b, rtol=0.0, atol=0.015)
  assert bn_probe.stats_change(wrong.batch_stats, again.batch_stats) > 0.5
  assert bn_probe.stats_change(fresh.batch_stats, fresh.batch_stats) == 0.0
