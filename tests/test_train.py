"""Tests of the training harness: the main job, configs, the sharded step, data sets, resume.

The test session has 8 fake CPU devices (conftest.py), so every run here is a
data-parallel run over a mesh of 8 devices unless a test builds a smaller mesh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from models.resnet import ResNet, ResNetBlock
from tests.tfds_mock import mock_tfds
from train import data
from train.__main__ import main
from train.config import CONFIGS, Config, apply_override, get_config, parse_args
from train.optimizers import OPTIMIZERS, OptimizerConfig, make_optimizer
from train.report import CURVES_FILE, METRICS_FILE
from train.train import compiled_steps, find_in_state, init_variables, make_mesh, run, train_one

EPOCHS = 2


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
  """A 2-epoch run of the command line with ``--out``.

  Returns the history, the standard output, the output directory and how many
  times the train and eval steps were compiled during the run.
  """
  out = tmp_path_factory.mktemp("run")
  stdout = io.StringIO()
  train_fn, eval_fn = compiled_steps(make_mesh())
  cached = train_fn._cache_size(), eval_fn._cache_size()
  with contextlib.redirect_stdout(stdout):
    history = main(["--epochs", str(EPOCHS), "--out", str(out)])
  compiles = train_fn._cache_size() - cached[0], eval_fn._cache_size() - cached[1]
  return history, stdout.getvalue(), out, compiles


def test_each_step_compiles_once_per_optimizer(cli_run):
  history, _, _, (train_compiles, eval_compiles) = cli_run
  # 2 optimizers x 2 epochs x 44 steps: one compilation per optimizer, none after; the eval
  # step depends on the model only, so the second optimizer reuses the first one's.
  assert train_compiles == len(history) == 2
  assert eval_compiles == 1


def test_default_run_learns(cli_run):
  history, _, _, _ = cli_run
  assert set(history) == {"sls", "sgd"}
  for name, records in history.items():
    evals = records["eval"]
    assert [r["epoch"] for r in evals] == list(range(EPOCHS))
    assert evals[-1]["train_loss"] < evals[0]["train_loss"] < np.log(10.0), name
  sls, sgd = history["sls"], history["sgd"]
  # Chance is 0.1. Measured after 2 epochs (seed 0): sls 0.95, sgd 0.89.
  assert sls["eval"][-1]["test_accuracy"] > 0.85
  assert sgd["eval"][-1]["test_accuracy"] > 0.75
  # The line search finds steps well above SGD's 0.1 and trains faster.
  assert sls["eval"][-1]["train_loss"] < 0.5 * sgd["eval"][-1]["train_loss"]
  assert all(r["learning_rate"] > 0.1 for r in sls["train"][2:])
  assert all(1.0 <= r["evals_per_step"] < 3.0 for r in sls["train"])
  assert all(r["learning_rate"] == pytest.approx(0.1) for r in sgd["train"])
  assert all("evals_per_step" not in r for r in sgd["train"])


def test_cli_prints_progress_and_writes_metrics_and_curves(cli_run):
  history, stdout, out, _ = cli_run
  assert "digits" in stdout and "8 cpu device(s)" in stdout
  lines = [line for line in stdout.splitlines() if " epoch " in line]
  assert [line.split()[0] for line in lines] == ["sls", "sls", "sgd", "sgd"]
  assert "final test accuracy" in stdout and "images/s" in stdout
  records = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
  assert records[0]["kind"] == "config" and records[0]["name"] == "digits_mlp"
  evals = [r for r in records if r["kind"] == "eval"]
  trains = [r for r in records if r["kind"] == "train"]
  assert len(evals) == 2 * EPOCHS
  # 44 steps per epoch, a line every 10 and one at the end of the run.
  assert len(trains) == 2 * len(history["sls"]["train"]) == 2 * 9
  assert evals[0]["test_accuracy"] == history["sls"]["eval"][0]["test_accuracy"]
  png = (out / CURVES_FILE).read_bytes()
  assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000


def test_parse_args_defaults_and_overrides():
  assert parse_args([]) == Config()
  config = parse_args([
      "--config", "mnist_subset_mlp", "--epochs", "3", "--seed", "7", "--optimizer", "sgd,adam",
      "--lr", "0.05", "--set", "model.features=(64, 32)", "--set", "opt.momentum=0.9",
      "--set", "batch_size=64",
  ])
  assert config.name == "mnist_subset_mlp" and config.epochs == 3 and config.seed == 7
  assert config.model_kwargs == {"features": (64, 32)} and config.batch_size == 64
  assert [(o.name, o.learning_rate, o.momentum) for o in config.optimizers] == [
      ("sgd", 0.05, 0.9), ("adam", 0.05, 0.9)]
  changed = apply_override(Config(), "opt.kwargs.c=0.5")
  assert all(o.kwargs == {"c": 0.5} for o in changed.optimizers)


def test_every_config_validates_and_names_known_parts():
  from models import MODEL_NAMES

  for name in CONFIGS:
    config = get_config(name).validate()
    assert config.model in MODEL_NAMES
    assert all(o.name in OPTIMIZERS for o in config.optimizers)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs: expected a positive integer"),
        (["--batch-size", "-4"], "--batch-size: expected a positive integer"),
        (["--lr", "nan"], "--lr: expected a positive finite number"),
        (["--seed", "-1"], "--seed: expected a non-negative integer"),
        (["--optimizer", "sgd,foo"], "unknown ['foo']"),
        (["--config", "nope"], "invalid choice: 'nope'"),
        (["--set", "model.num_classes=3"], "must not set num_classes"),
        (["--set", "nonsense=1"], "unknown key 'nonsense'"),
        (["--set", "opt.speed=1"], "unknown optimizer field 'speed'"),
        (["--resume"], "need an `out` directory"),
    ],
)
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def test_batch_size_must_fit_the_data_and_the_devices():
  with pytest.raises(ValueError, match="exceeds the 1438 training examples"):
    run(Config(batch_size=5000), verbose=False)
  with pytest.raises(ValueError, match="multiple of the 8 devices"):
    run(Config(batch_size=30), verbose=False)


# The baselines and the optax_ls methods whose update takes extra inputs from the
# train step run by default; the other optax_ls methods are covered by the
# common suite (tests/test_common.py) and by the default run (sls), and run here
# with the slow tests.
_DEFAULT_OPTIMIZERS = {"sgd", "adam", "adamw", "polyak_sgd", "cocob", "prodigy", "dog",
                       "schedule_free_adamw",
                       "optax_backtracking", "l_sls", "a_sls", "sa_sls", "labpal_sgd", "pls"}


@pytest.mark.parametrize("name", [
    name if name in _DEFAULT_OPTIMIZERS else pytest.param(name, marks=pytest.mark.slow)
    for name in sorted(OPTIMIZERS)
])
def test_every_optimizer_builds_and_steps(name):
  """Each optimizer of the registry runs two steps of the real train step."""
  config = Config(optimizers=(OptimizerConfig(name, learning_rate=0.01),), epochs=1,
                  batch_size=16, max_steps=2, log_every=1)
  train_source, test_source, spec = data.load("digits", test_fraction=0.2)
  model = _tiny_mlp(spec)
  variables = init_variables(model, jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  state, records = train_one(config, config.optimizers[0], model, variables, train_source,
                             test_source, spec, mesh, verbose=False)
  assert int(state.step) == 2
  assert all(np.isfinite(r["loss"]) for r in records["train"])
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def _tiny_mlp(spec: data.DataSpec):
  from models import get_model

  return get_model("mlp", features=(16,), num_classes=spec.num_classes)


def test_weight_decay_is_l2_in_the_objective_except_for_adamw():
  assert make_optimizer(OptimizerConfig("sls", weight_decay=1e-3), steps_per_epoch=10,
                        total_steps=100).l2 == 1e-3
  assert make_optimizer(OptimizerConfig("adamw", weight_decay=1e-3), steps_per_epoch=10,
                        total_steps=100).l2 == 0.0
  with pytest.raises(ValueError, match="`schedule`"):
    make_optimizer(OptimizerConfig("sgd", schedule="linear"), steps_per_epoch=1, total_steps=1)


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
  built = make_optimizer(OptimizerConfig("sgd", learning_rate=0.1, schedule="step"),
                         steps_per_epoch=10, total_steps=100)
  params = {"w": jnp.ones(3)}
  state = built.tx.init(params)
  rates = []
  for _ in range(100):
    _, state = built.tx.update({"w": jnp.ones(3)}, state, params)
    rates.append(float(find_in_state(state, "learning_rate")))
  np.testing.assert_allclose(rates[:50], 0.1, rtol=1e-6)
  np.testing.assert_allclose(rates[50:75], 0.01, rtol=1e-5)
  np.testing.assert_allclose(rates[75:], 0.001, rtol=1e-5)


def _small_resnet(num_classes: int) -> ResNet:
  """A ResNet with BatchNorm small enough for fast tests (two stages of one block)."""
  return ResNet(stage_sizes=(1, 1), block_cls=ResNetBlock, num_classes=num_classes,
                num_filters=4, stem="cifar", shortcut="zero_pad")


def _npz(tmp_path, n: int = 96, size: int = 8, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
  y = rng.integers(0, 4, size=n)
  path = tmp_path / "tiny.npz"
  np.savez(path, x=x, y=y)
  return path


def test_full_loop_on_a_local_npz(tmp_path):
  path = _npz(tmp_path)
  config = Config(name="npz", dataset=f"npz:{path}", test_fraction=0.25, model="mlp",
                  model_kwargs={"features": (32,)}, optimizers=(OptimizerConfig("sls"),),
                  epochs=2, batch_size=8, eval_batch_size=16, log_every=3,
                  out=str(tmp_path / "out"))
  history = run(config, verbose=False)
  evals = history["sls"]["eval"]
  assert len(evals) == 2 and all(0.0 <= r["test_accuracy"] <= 1.0 for r in evals)
  # 72 training images, batches of 8: 9 steps per epoch.
  assert evals[-1]["step"] == 18
  assert (tmp_path / "out" / CURVES_FILE).exists()


def test_full_loop_on_tfds_mock_data(tmp_path):
  """cifar10 through ``tfds.data_source`` (mocked) with augmentation; line search on the accuracy.

  (BatchNorm ResNets run in the sharding and resume tests below; a ResNet-20 here
  would only add a minute of compilation.)
  """
  config = Config(name="mock", dataset="cifar10", model="mlp", model_kwargs={"features": (32,)},
                  optimizers=(OptimizerConfig("sa_sls"),), epochs=1, batch_size=16,
                  eval_batch_size=16, log_every=2, out=str(tmp_path))
  with mock_tfds(num_examples=48):
    history = run(config, verbose=False)
  train_records, evals = history["sa_sls"]["train"], history["sa_sls"]["eval"]
  assert [r["step"] for r in train_records] == [2, 3]
  assert len(evals) == 1 and np.isfinite(evals[0]["test_loss"])
  lines = (tmp_path / METRICS_FILE).read_text().splitlines()
  assert json.loads(lines[0])["dataset"] == "cifar10"


def _steps(npz, mesh: Mesh, optimizer: str, num_steps: int, tmp_path=None, **overrides):
  """Trains the small ResNet on the ``npz`` data with ``optimizer`` on ``mesh``."""
  train_source, test_source, spec = data.load(f"npz:{npz}", test_fraction=0.25)
  model = _small_resnet(spec.num_classes)
  variables = init_variables(model, jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))
  config = Config(dataset="npz", optimizers=(OptimizerConfig(optimizer, learning_rate=0.1),),
                  epochs=3, batch_size=16, eval_batch_size=16, max_steps=num_steps, log_every=1,
                  out=None if tmp_path is None else str(tmp_path), **overrides)
  return train_one(config, config.optimizers[0], model, variables, train_source, test_source,
                   spec, mesh, verbose=False)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
  """A 128-image colour ``.npz`` shared by the sharding and resume tests."""
  return _npz(tmp_path_factory.mktemp("npz"), n=128)


@pytest.mark.parametrize("optimizer", ["sgd", "sls"])
def test_eight_devices_match_one_device(npz, optimizer):
  """The same first steps (loss and params within 1e-5) on 1 and on 8 devices, BatchNorm on."""
  assert jax.device_count() == 8
  one = Mesh(np.array(jax.devices()[:1]), ("data",))
  eight = Mesh(np.array(jax.devices()), ("data",))
  state1, records1 = _steps(npz, one, optimizer, 4)
  state8, records8 = _steps(npz, eight, optimizer, 4)
  losses1 = [r["loss"] for r in records1["train"]]
  losses8 = [r["loss"] for r in records8["train"]]
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5, atol=1e-5)
  assert losses1[-1] != losses1[0]  # the parameters moved
  for a, b in zip(jax.tree.leaves(state8.params), jax.tree.leaves(state1.params), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(state8.batch_stats), jax.tree.leaves(state1.batch_stats),
                  strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
  if optimizer == "sls":
    rates1 = [r["learning_rate"] for r in records1["train"]]
    rates8 = [r["learning_rate"] for r in records8["train"]]
    np.testing.assert_allclose(rates8, rates1, rtol=1e-5)


def test_line_search_trials_do_not_touch_batch_stats(npz):
  """After one ``sls`` step the running statistics are those of the main forward pass alone."""
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  state, records = _steps(npz, mesh, "sls", 1)
  assert records["train"][0]["evals_per_step"] >= 1
  train_source, _, spec = data.load(f"npz:{npz}", test_fraction=0.25)
  x, _ = next(data.batches(train_source, spec, batch_size=16, seed=0, epoch=0, augment=True))
  model = _small_resnet(spec.num_classes)
  variables = init_variables(model, jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))
  _, mutated = model.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
  for a, b in zip(jax.tree.leaves(state.batch_stats), jax.tree.leaves(mutated["batch_stats"]),
                  strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("optimizer", ["sls", pytest.param("sgd", marks=pytest.mark.slow)])
def test_resume_continues_exactly(npz, tmp_path, optimizer):
  """Stop after 5 steps (checkpoint every 5), resume to 11: equal to an uninterrupted 11."""
  mesh = make_mesh()
  full_state, full = _steps(npz, mesh, optimizer, 11)
  _steps(npz, mesh, optimizer, 5, tmp_path, checkpoint_every=5)
  # The checkpoint of step 10 of the second part is written, but the run resumes from 5.
  resumed_state, resumed = _steps(npz, mesh, optimizer, 11, tmp_path, checkpoint_every=5,
                                  resume=True)
  assert int(resumed_state.step) == 11
  for a, b in zip(jax.tree.leaves(resumed_state), jax.tree.leaves(full_state), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  def strip(records):
    return {k: [{f: v for f, v in r.items() if f not in ("images_per_s", "seconds")} for r in rs]
            for k, rs in records.items()}

  assert strip(resumed) == strip(full)


def test_resume_without_checkpoint_starts_fresh(npz, tmp_path):
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  state, records = _steps(npz, mesh, "sgd", 2, tmp_path, resume=True)
  assert int(state.step) == 2 and len(records["train"]) == 2


def test_config_dataclass_is_frozen():
  with pytest.raises(dataclasses.FrozenInstanceError):
    Config().epochs = 3  # type: ignore[misc]


@pytest.fixture
def no_training(monkeypatch):
  """Makes ``run`` fail the test if it starts to train any optimizer."""
  import train.train as train_module

  def never(*args, **kwargs):
    raise AssertionError("an optimizer trained before the run's checks were done")

  monkeypatch.setattr(train_module, "train_one", never)


def test_an_argument_no_optimizer_takes_fails_before_any_trains(no_training):
  config = apply_override(
      dataclasses.replace(get_config("digits_mlp"), optimizers=(OptimizerConfig("sls"),
                                                                OptimizerConfig("adam"))),
      "opt.kwargs.c=0.5",
  )
  with pytest.raises(TypeError, match="optimizer 'adam'"):
    run(config, verbose=False)


def test_sgd_takes_its_factory_arguments():
  built = make_optimizer(OptimizerConfig("sgd", momentum=0.9, kwargs={"nesterov": True}),
                         steps_per_epoch=1, total_steps=4)
  params, grads = jnp.ones(2), jnp.ones(2)
  state = built.tx.init(params)
  updates, _ = built.tx.update(grads, state, params)
  # Nesterov's first update is -lr (1 + momentum) g; plain heavy ball's is -lr g.
  np.testing.assert_allclose(updates, -0.1 * 1.9 * np.ones(2), rtol=1e-6)


def test_a_fresh_run_refuses_an_earlier_runs_checkpoints(npz, tmp_path, request):
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  _steps(npz, mesh, "sgd", 4, tmp_path, checkpoint_every=2)
  # Orbax would skip this run's saves at steps 2 and 4 (not after the latest, 4), and a later
  # --resume would continue the earlier run: refused.
  with pytest.raises(ValueError, match="holds checkpoints of an earlier run.*--resume"):
    _steps(npz, mesh, "sgd", 4, tmp_path, checkpoint_every=2)
  state, _ = _steps(npz, mesh, "sgd", 6, tmp_path, checkpoint_every=2, resume=True)
  assert int(state.step) == 6
  # run() checks every optimizer's directory before the first one trains.
  request.getfixturevalue("no_training")
  config = Config(dataset=f"npz:{npz}", model="mlp", model_kwargs={"features": (8,)},
                  optimizers=(OptimizerConfig("sls"), OptimizerConfig("sgd")), epochs=1,
                  batch_size=16, checkpoint_every=2, out=str(tmp_path))
  with pytest.raises(ValueError, match="checkpoints/sgd holds checkpoints"):
    run(config, verbose=False)
