"""The line-landscape analysis (optax_ls.landscape) and the harness's recording and command
(train.landscape)."""

import dataclasses
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from optax_ls import landscape
from optax_ls.landscape._report import SUMMARY_FILE
from train.landscape import main, record


def _squares(w, batch):
  """Per-example squared error of a linear model: exactly quadratic along any line."""
  x, y = batch
  return 0.5 * (x @ w - y) ** 2


def _least_squares(seed=0, num_batches=5, batch_size=8, dim=4):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(num_batches, batch_size, dim)).astype(np.float32)
  y = rng.normal(size=(num_batches, batch_size)).astype(np.float32)
  w = rng.normal(size=dim).astype(np.float32)
  d = rng.normal(size=dim).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(y), jnp.asarray(w), jnp.asarray(d / np.linalg.norm(d))


def _quadratic_coefficients(x, y, w, d):
  """``(a, b, c)`` of ``l(s) = a s^2 + b s + c``, the full-batch loss along ``w + s d`` (f64)."""
  x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
  y = np.asarray(y, np.float64).reshape(-1)
  r = x @ np.asarray(w, np.float64) - y
  xd = x @ np.asarray(d, np.float64)
  return 0.5 * np.mean(xd**2), np.mean(r * xd), 0.5 * np.mean(r**2)


def test_grid_is_seed_003s_by_default_and_rejects_bad_intervals():
  steps = landscape.grid()
  assert len(steps) == 167
  np.testing.assert_allclose(np.diff(steps), 0.006, atol=1e-12)
  assert steps[0] == -0.5 and steps[-1] <= 0.5
  with pytest.raises(ValueError, match="lo < hi"):
    landscape.grid(0.5, -0.5)
  with pytest.raises(ValueError, match="resolution"):
    landscape.grid(-0.5, 0.5, 0.0)


def test_measured_line_on_a_quadratic_is_exact_and_its_parabola_fit_has_no_error():
  x, y, w, d = _least_squares()
  line = landscape.LineMeter(_squares).measure(w, d, (x, y), steps=landscape.grid(-1, 1, 0.05))
  a, b, c = _quadratic_coefficients(x, y, w, d)
  expected = a * line.steps**2 + b * line.steps + c
  np.testing.assert_allclose(line.full, expected, rtol=2e-6, atol=2e-6)
  fit = landscape.fit_polynomial(line.steps, line.full, 2)
  np.testing.assert_allclose(fit.coefficients, [a, b, c], rtol=1e-4, atol=1e-5)
  assert fit.mae < 1e-6 * max(1.0, c)
  # A straight line cannot follow it: the degree-1 error is of the order of the curvature.
  assert landscape.fit_polynomial(line.steps, line.full, 1).mae > 0.05 * a
  # The slope at 0 (forward mode, per example) is b; l(0) is c.
  np.testing.assert_allclose(line.slope_at_zero, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(line.value_at_zero, c, rtol=1e-6)
  # s_opt, and the full-batch PAL step, are the vertex -b / 2a.
  steps = landscape.strategy_steps(line)
  np.testing.assert_allclose(steps["s_opt"], -b / (2 * a), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(steps["fbpal"], -b / (2 * a), rtol=1e-4, atol=1e-6)


def test_full_batch_loss_is_the_mean_of_the_per_batch_losses_and_of_the_whole_set():
  x, y, w, d = _least_squares(seed=1, num_batches=6)
  steps = landscape.grid(-0.5, 0.5, 0.1)
  line = landscape.LineMeter(_squares, batches_per_pass=4).measure(w, d, (x, y), steps=steps,
                                                                   max_widenings=0)
  for i, s in enumerate(line.steps):
    point = w + s * d
    per_batch = [float(jnp.mean(_squares(point, (x[j], y[j])))) for j in range(len(x))]
    whole = float(jnp.mean(_squares(point, (x.reshape(-1, 4), y.reshape(-1)))))
    np.testing.assert_allclose(line.batch_losses[i], per_batch, rtol=1e-5)
    np.testing.assert_allclose(line.full[i], np.mean(per_batch), rtol=1e-5)
    np.testing.assert_allclose(line.full[i], whole, rtol=1e-5)


def test_direction_batch_is_measured_apart_from_the_analysis_set():
  x, y, w, d = _least_squares(seed=2)
  rng = np.random.default_rng(3)
  bx = jnp.asarray(rng.normal(size=(8, 4)).astype(np.float32))
  by = jnp.asarray(rng.normal(size=8).astype(np.float32))
  line = landscape.LineMeter(_squares).measure(w, d, (x, y), direction_batch=(bx, by),
                                               steps=landscape.grid(-1, 1, 0.1))
  assert line.batch_losses.shape == (len(line.steps), 5)
  a, b, c = _quadratic_coefficients(bx[None], by[None], w, d)
  np.testing.assert_allclose(line.direction_losses, a * line.steps**2 + b * line.steps + c,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(line.direction_slope, b, rtol=1e-5, atol=1e-6)
  # Per-example directional derivatives: <x_i w - y_i, x_i d> for each example.
  per_example = (np.asarray(bx) @ np.asarray(w) - np.asarray(by)) * (np.asarray(bx) @ np.asarray(d))
  np.testing.assert_allclose(line.direction_slopes, per_example, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="must be equal"):
    landscape.LineMeter(_squares).measure(w, d, (x, y), direction_batch=(bx[:4], by[:4]))


def test_s_opt_of_a_known_non_quadratic_function():
  target = 0.3712

  def loss_fn(w, batch):
    u = w[0] - target + batch
    return jnp.log(jnp.cosh(3 * u)) + u**4  # minimum at u = 0, not a parabola

  batches = jnp.zeros((1, 1))
  line = landscape.LineMeter(loss_fn).measure(jnp.zeros(1), jnp.ones(1), batches)
  steps = landscape.strategy_steps(line)
  assert abs(steps["s_opt"] - target) < 1e-3  # the grid's spacing is 6e-3
  assert landscape.fit_polynomial(line.steps, line.full, 2, window=0.5).mae > 1e-3


def test_grid_widens_when_the_minimum_is_at_an_edge_without_recompiling():
  target = 1.37

  def loss_fn(w, batch):
    return (w[0] - target) ** 2 + 0.0 * batch

  meter = landscape.LineMeter(loss_fn)
  steps = landscape.grid(-0.5, 0.5, 0.05)
  line = meter.measure(jnp.zeros(1), jnp.ones(1), jnp.zeros((2, 3)), steps=steps)
  assert line.widenings == 1 and line.steps[-1] > target
  np.testing.assert_allclose(np.diff(line.steps), 0.05, atol=1e-9)
  np.testing.assert_allclose(landscape.minimum(line.steps, line.full), target, atol=1e-4)
  # To the left, and capped by max_widenings.
  left = meter.measure(jnp.zeros(1), -jnp.ones(1), jnp.zeros((2, 3)), steps=steps)
  assert left.widenings == 1 and left.steps[0] < -target
  capped = meter.measure(jnp.zeros(1), jnp.ones(1) * 0.1, jnp.zeros((2, 3)), steps=steps,
                         max_widenings=2)
  assert capped.widenings == 2 and capped.steps[-1] < target / 0.1
  # A step the grid must include widens it too.
  wide = meter.measure(jnp.zeros(1), jnp.ones(1), jnp.zeros((2, 3)), steps=steps,
                       include=(2.1,))
  assert wide.steps[-1] >= 2.1
  # Every block has the grid's size: one compilation for the grid, one for the anchors.
  assert meter._losses._cache_size() == 2


def test_improvement_and_loss_at_interpolate_the_line_and_are_nan_outside():
  x, y, w, d = _least_squares(seed=4)
  line = landscape.LineMeter(_squares).measure(w, d, (x, y), steps=landscape.grid(-1, 1, 0.01),
                                               max_widenings=0)
  a, b, c = _quadratic_coefficients(x, y, w, d)
  for s in (-0.53, 0.0, 0.217, 0.9):
    np.testing.assert_allclose(landscape.loss_at(line, s), a * s * s + b * s + c,
                               rtol=1e-4, atol=a * 0.01**2 / 8 + 1e-5)
    np.testing.assert_allclose(landscape.improvement(line, s), -(a * s * s + b * s),
                               rtol=1e-3, atol=a * 0.01**2 / 8 + 1e-5)
  assert np.isnan(landscape.loss_at(line, 1.5)) and np.isnan(landscape.improvement(line, -2.0))


def test_parabolic_step_is_the_vertex_and_nan_without_a_minimum_ahead():
  for a, b in ((2.0, -1.0), (0.5, -3.0), (10.0, -0.1)):
    mu = 0.1
    value = lambda s, a=a, b=b: a * s * s + b * s + 1.0  # noqa: E731
    np.testing.assert_allclose(landscape.parabolic_step(value(0), b, value(mu), mu), -b / (2 * a),
                               rtol=1e-9)
  assert np.isnan(landscape.parabolic_step(1.0, -1.0, 0.8, 0.1))  # concave
  assert np.isnan(landscape.parabolic_step(1.0, 1.0, 1.2, 0.1))  # ascending


def test_shape_distances_ignore_offsets_and_are_symmetric():
  x, y, w, d = _least_squares(seed=5)
  meter = landscape.LineMeter(_squares)
  steps = landscape.grid(-0.5, 0.5, 0.02)
  base = meter.measure(w, d, (x, y), steps=steps, max_widenings=0)
  shifted = meter.measure(w, d, (x, y + 0.0), steps=steps, max_widenings=0)
  shifted.batch_losses = shifted.batch_losses + 3.0  # the same shape, another offset
  other = meter.measure(w, -d, (x, y), steps=steps, max_widenings=0)
  distances = landscape.shape_distances([base, shifted, other], window=0.2)
  np.testing.assert_allclose(np.diag(distances), 0.0, atol=1e-7)
  np.testing.assert_allclose(distances, distances.T, atol=1e-7)
  assert distances[0, 1] < 1e-5
  keep = np.abs(steps) <= 0.2 + 1e-12
  shape = lambda values: values[keep] - values[keep].min()  # noqa: E731
  expected = np.mean(np.abs(shape(base.full) - shape(other.full)))
  np.testing.assert_allclose(distances[0, 2], expected, rtol=1e-6)
  assert distances[0, 2] > 1e-3
  short = meter.measure(w, d, (x, y), steps=landscape.grid(-0.1, 0.1, 0.02), max_widenings=0)
  with pytest.raises(ValueError, match="does not cover"):
    landscape.shape_distances([base, short], window=0.2)


def test_smaller_batches_drop_the_flattest_examples_and_larger_ones_add_others():
  x, y, w, d = _least_squares(seed=6, batch_size=16)
  rng = np.random.default_rng(7)
  bx = jnp.asarray(rng.normal(size=(16, 4)).astype(np.float32))
  by = jnp.asarray(rng.normal(size=16).astype(np.float32))
  line = landscape.LineMeter(_squares).measure(w, d, (x, y), direction_batch=(bx, by),
                                               steps=landscape.grid(-1, 1, 0.05))
  sizes = (2, 4, 8, 16, 32, 64)
  chosen = landscape.batch_size_slopes(line, sizes, seed=1)
  slopes = np.concatenate([line.direction_slopes, line.slopes])
  for size in sizes:
    assert len(chosen[size]) == size == len(np.unique(chosen[size]))
  for small, large in zip(sizes[:3], sizes[1:4], strict=True):
    assert set(chosen[small]) <= set(chosen[large])  # nested
    assert slopes[chosen[small]].mean() <= slopes[chosen[large]].mean() + 1e-7  # steeper
    assert slopes[chosen[small]].max() <= slopes[chosen[large]].max()
  assert set(range(16)) == set(chosen[16]) and set(range(16)) <= set(chosen[32])
  relation = landscape.batch_size_relation(line, sizes, learning_rate=0.1, seed=1)
  np.testing.assert_allclose(relation["slope"],
                             [abs(slopes[chosen[s]].mean()) for s in sizes], rtol=1e-6)
  assert relation["sgd"].shape == relation["pal"].shape == (len(sizes),)


def test_proportionality_of_s_opt_to_the_gradient_norm():
  g = np.array([0.5, 1.0, 2.0, 3.0])
  exact = landscape.proportionality(0.07 * g, -g)
  np.testing.assert_allclose([exact["c"], exact["r2"], exact["pearson"], exact["ratio_cv"]],
                             [0.07, 1.0, 1.0, 0.0], atol=1e-12)
  noisy = landscape.proportionality(0.07 * g + np.array([0.02, -0.03, 0.01, 0.0]), g)
  assert 0 < noisy["r2"] < 1 and 0 < noisy["ratio_cv"]
  unrelated = landscape.proportionality(np.array([0.3, 0.1, 0.3, 0.1]), g)
  assert unrelated["r2"] < noisy["r2"]


def test_line_files_round_trip(tmp_path):
  x, y, w, d = _least_squares(seed=8)
  line = landscape.LineMeter(_squares).measure(w, d, (x, y), direction_batch=(x[0], y[0]),
                                               steps=landscape.grid(-0.5, 0.5, 0.1),
                                               update_norm=0.25, step=40)
  line.save(str(tmp_path / "line_000040.npz"))
  (loaded,) = landscape.load_lines(str(tmp_path))
  assert loaded.step == 40 and loaded.update_norm == 0.25 and loaded.widenings == line.widenings
  for name in ("steps", "batch_losses", "direction_losses", "anchor_losses", "slopes"):
    np.testing.assert_array_equal(getattr(loaded, name), getattr(line, name))
  with pytest.raises(FileNotFoundError):
    landscape.load_lines(str(tmp_path / "missing"))


def test_unit_direction_and_bad_input():
  direction, norm = landscape.unit_direction({"a": jnp.array([3.0]), "b": jnp.array([4.0])})
  assert norm == pytest.approx(5.0)
  np.testing.assert_allclose([direction["a"][0], direction["b"][0]], [0.6, 0.8], rtol=1e-6)
  with pytest.raises(ValueError, match="no line"):
    landscape.unit_direction({"a": jnp.zeros(2)})
  with pytest.raises(ValueError, match="no line"):
    landscape.unit_direction({"a": jnp.array([jnp.nan])})
  with pytest.raises(ValueError, match="batches_per_pass"):
    landscape.LineMeter(_squares, batches_per_pass=0)
  x, y, w, d = _least_squares()
  with pytest.raises(ValueError, match="leading axes"):
    landscape.LineMeter(_squares).measure(w, d, (x[0], y[0]))
  with pytest.raises(ValueError, match="evenly spaced"):
    landscape.LineMeter(_squares).measure(w, d, (x, y), steps=np.array([0.0, 0.1, 0.5]))


def _digits_config(optimizer="sgd", steps=12, **kwargs):
  from train.config import Config
  from train.optimizers import OptimizerConfig

  return Config(optimizers=(OptimizerConfig(optimizer, **kwargs),), max_steps=steps,
                batch_size=32)


def test_record_follows_sgd_and_its_step_is_lr_times_the_batch_gradient_norm(tmp_path):
  import dataclasses

  config = dataclasses.replace(_digits_config(learning_rate=0.1), out=str(tmp_path))
  settings = landscape.Settings(every=5, examples=256, resolution=0.05)
  lines = record(config, settings, verbose=False)
  assert [line.step for line in lines] == [0, 5, 10]
  assert len(os.listdir(tmp_path / "lines")) == 3
  for line in lines:
    # SGD's update is -lr g: the direction batch's slope along -g/||g|| is -||g||.
    assert line.direction_slope < 0
    np.testing.assert_allclose(line.update_norm, 0.1 * abs(line.direction_slope), rtol=1e-4)
    assert line.batch_losses.shape[1] == 256 // 32
    assert line.steps[0] <= -0.5 and line.steps[-1] >= min(0.5, line.update_norm)
  # The line's origin is the pre-update parameters: l_m(run step) < l_m(0) on a small step.
  first = lines[0]
  assert np.interp(first.update_norm, first.steps, first.direction_losses) < float(
      first.direction_anchor_losses[0].mean())


def test_record_skips_zero_updates_to_the_next_line():
  # LABPAL's measuring calls (here 3 of every 5: steps 0-2 and 5-7) make zero updates.
  config = _digits_config("labpal_sgd", steps=10, kwargs={"approx_batches": 3, "n_sgd": 2})
  lines = record(config, landscape.Settings(every=2, examples=64, resolution=0.1),
                           verbose=False)
  assert [line.step for line in lines] == [3, 4, 8]  # 0 and 2 -> 3; 4; 6 and 8 -> 8
  assert all(line.update_norm > 0 for line in lines)


def test_record_rejects_several_optimizers():
  from train.config import Config

  with pytest.raises(ValueError, match="one optimizer"):
    record(Config(max_steps=2), landscape.Settings(every=1), verbose=False)
  with pytest.raises(ValueError, match="every"):
    landscape.Settings(every=0).validate()


def test_command_records_reports_and_replots(tmp_path, capsys):
  out = tmp_path / "run"
  code = main(["--max-steps", "21", "--every", "5", "--examples", "192", "--resolution", "0.05",
               "--out", str(out)])
  assert code == 0
  printed = capsys.readouterr().out
  assert "parabola fit" in printed and "s_opt ~ c" in printed
  for name in landscape.FIGURES:
    assert (out / f"{name}.png").stat().st_size > 10_000
  summary = json.loads((out / SUMMARY_FILE).read_text())
  assert summary["headline"]["lines"] == 5
  assert summary["settings"]["settings"]["every"] == 5
  assert len(summary["analysis"]["mae2"]) == 5
  assert all(m2 <= m1 for m1, m2 in zip(summary["analysis"]["mae1"], summary["analysis"]["mae2"],
                                        strict=True))
  (out / "lines.png").unlink()
  assert main(["--plot-only", str(out)]) == 0
  assert (out / "lines.png").exists()
  replotted = json.loads((out / SUMMARY_FILE).read_text())
  assert replotted["settings"] == summary["settings"]  # the run's settings are kept
  assert replotted["headline"] == summary["headline"]
  assert landscape.saved_settings(str(out))["learning_rate"] == 0.1  # SGD's default, resolved


def test_command_rejects_bad_settings(capsys):
  with pytest.raises(SystemExit):
    main(["--every", "0"])
  assert "every" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    main(["--optimizer", "sgd,adam"])


def test_record_says_when_the_epochs_end_the_run_before_max_steps(capsys):
  import re

  from train.config import get_config

  config = dataclasses.replace(get_config("digits_mlp"), epochs=1, batch_size=256, max_steps=50)
  config = dataclasses.replace(config, optimizers=config.optimizers[1:])  # SGD only
  settings = landscape.Settings(every=2, examples=256, resolution=0.25)
  lines = record(config, settings)
  match = re.search(r"max_steps 50 exceeds the run's 1 epochs of (\d+) steps: it stops after "
                    r"(\d+)", capsys.readouterr().out)
  assert match and match.group(1) == match.group(2)
  assert [line.step for line in lines] == list(range(0, int(match.group(2)), 2))
