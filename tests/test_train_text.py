"""The harness on text: language models and sentence classifiers, dropout inside a line search,
gradient accumulation, bfloat16 activations, bits per character and missing data.

The test session has 8 fake CPU devices (conftest.py): runs built with ``run`` or
``make_mesh`` are data-parallel over 8 devices.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import get_model
from train import data
from train.__main__ import main
from train.config import Config, get_config
from train.optimizers import OptimizerConfig
from train.train import (
    compiled_steps,
    create_state,
    global_batch,
    init_variables,
    make_mesh,
    replicate,
    run,
    train_one,
)

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n") * 12

TINY_GPT = {"num_layers": 1, "num_heads": 2, "width": 16, "context": 8}


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("text") / "tiny.txt"
  path.write_text(TEXT)
  return path


def _lm_config(text_file, **changes) -> Config:
  config = dataclasses.replace(
      get_config("shakespeare_char_gpt"), dataset=f"text:{text_file.name}",
      data_dir=str(text_file.parent), model="gpt", model_kwargs=dict(TINY_GPT),
      sequence_length=8, batch_size=16, eval_batch_size=64, max_steps=3, log_every=1)
  return dataclasses.replace(config, **changes)


def test_language_model_runs_and_reports_bits_per_character(text_file):
  config = _lm_config(text_file)
  history = run(config, verbose=False)
  assert set(history) == {"adam_salsa", "adamw"}
  for records in history.values():
    evals = records["eval"][-1]
    assert math.isfinite(evals["test_loss"])
    assert evals["test_bits_per_char"] == pytest.approx(evals["test_loss"] / math.log(2))
    assert evals["train_bits_per_char"] == pytest.approx(evals["train_loss"] / math.log(2))
    # The loss of a character model starts near log(vocabulary size).
    vocab = len(set(TEXT))
    assert abs(records["train"][0]["loss"] - math.log(vocab)) < 0.5


def test_evaluation_of_a_language_model_is_the_mean_over_every_token(text_file):
  """The eval step's per-token loss equals an independent computation on the held-out text."""
  config = _lm_config(text_file)
  train_source, test_source, spec = data.load(config.dataset, data_dir=config.data_dir,
                                              test_fraction=0.1, context=8)
  model = get_model("gpt", num_classes=spec.num_classes, **TINY_GPT)
  variables = init_variables(model, jax.random.key(0), np.zeros((1, 8), np.int32))
  mesh = make_mesh()
  state, records = train_one(dataclasses.replace(config, max_steps=1),
                             OptimizerConfig("sgd", learning_rate=0.0), model, variables,
                             train_source, test_source, spec, mesh, verbose=False)
  losses = []
  for x, y, mask in data.eval_batches(test_source, spec, batch_size=64):
    logits = model.apply(variables, x)
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    losses.append(np.asarray(per_token)[mask])
  expected = float(np.mean(np.concatenate(losses)))
  assert records["eval"][-1]["test_loss"] == pytest.approx(expected, rel=1e-5)


def _state(optimizer, model, variables, batch_size, accumulation_steps=1):
  return create_state(model, variables, optimizer, seed=0, steps_per_epoch=10, total_steps=10,
                      dataset_size=1000, batch_size=batch_size,
                      accumulation_steps=accumulation_steps)


def _one_step(state, x, y):
  """One compiled step from a copy of ``state`` (the step donates what it is given)."""
  mesh = make_mesh()
  step, _ = compiled_steps(mesh)
  fresh = jax.tree.map(lambda a: jnp.array(a, copy=True), state)
  return step(replicate(fresh, mesh), *global_batch(mesh, x, y))


def _lm_batch(text_file, batch=32):
  train_source, _, spec = data.load(f"text:{text_file}", test_fraction=0.1, context=8)
  x, y = next(data.batches(train_source, spec, batch_size=batch, seed=0, epoch=0, augment=True))
  return spec, x, y


# sls (26 s here) in the slow run: adam_salsa covers the same path in the default run.
@pytest.mark.parametrize("name", [pytest.param("sls", marks=pytest.mark.slow), "adam_salsa"])
def test_dropout_inside_a_line_search_is_one_objective(text_file, name):
  """With dropout, the step repeats exactly and its accepted step is an Armijo step of the
  objective with the step's own dropout key; the key changes the objective."""
  spec, x, y = _lm_batch(text_file)
  model = get_model("gpt", num_classes=spec.num_classes, dropout_rate=0.5, **TINY_GPT)
  variables = init_variables(model, jax.random.key(0), x[:1])
  state = _state(OptimizerConfig(name, kwargs={"init_step_size": 10.0}), model, variables, len(x))
  new_state, metrics = _one_step(state, x, y)
  again, metrics_again = _one_step(state, x, y)
  for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(again.params), strict=True):
    np.testing.assert_array_equal(a, b)
  assert int(metrics["num_evals"]) == int(metrics_again["num_evals"]) >= 2  # it backtracked

  key = jax.random.fold_in(jax.random.key(1), 0)  # the harness's key of step 0 (seed 0)

  def objective(params, dropout_key):
    logits = model.apply({"params": params}, x, train=True, rngs={"dropout": dropout_key})
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

  params = variables["params"]
  loss, grads = jax.value_and_grad(objective)(params, key)
  np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
  eta = float(metrics["learning_rate"])
  c = 0.1 if name == "sls" else 0.3
  if name == "sls":
    slope = float(optax.tree.norm(grads, squared=True))
  else:  # the first Adam step: the direction is sign-like, <g, d> = sum |g| / (|g| + eps)
    slope = float(sum(jnp.sum(g * g / (jnp.abs(g) + 1e-8)) for g in jax.tree.leaves(grads)))
  new_loss = float(objective(jax.device_get(new_state.params), key))
  assert new_loss <= float(loss) - c * eta * slope * (1 - 1e-3) + 1e-5
  other = float(objective(params, jax.random.key(7)))
  assert abs(other - float(loss)) > 1e-3


# sls in the default run; adam_salsa and pal in the slow run.
@pytest.mark.parametrize("name", ["sls", pytest.param("adam_salsa", marks=pytest.mark.slow),
                                  pytest.param("pal", marks=pytest.mark.slow)])
def test_gradient_accumulation_equals_the_whole_batch(text_file, name):
  """k = 4 micro-batches (each spread over the 8 devices) give the update of one batch."""
  spec, x, y = _lm_batch(text_file, batch=64)
  model = get_model("gpt", num_classes=spec.num_classes, **TINY_GPT)
  variables = init_variables(model, jax.random.key(0), x[:1])
  optimizer = OptimizerConfig(name)
  whole, m1 = _one_step(_state(optimizer, model, variables, len(x)), x, y)
  micro, m4 = _one_step(_state(optimizer, model, variables, len(x), accumulation_steps=4), x, y)
  np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-6)
  np.testing.assert_allclose(m4["grad_norm"], m1["grad_norm"], rtol=1e-5)
  assert int(m4["num_evals"]) == int(m1["num_evals"])
  np.testing.assert_allclose(m4["learning_rate"], m1["learning_rate"], rtol=1e-5)
  # Adam's first direction is g / (|g| + eps): an entry whose gradient rounds differently near
  # zero moves by up to the step size (about 0.02 here) times its rounding; 1e-5 absolute.
  atol = 1e-5 if name == "adam_salsa" else 1e-6
  for a, b in zip(jax.tree.leaves(micro.params), jax.tree.leaves(whole.params), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)


def test_accumulation_steps_from_the_command_line_and_its_checks(text_file):
  history = main(["--config", "shakespeare_char_gpt", "--dataset", f"text:{text_file}",
                  "--model", "gpt", *[f"--set=model.{k}={v}" for k, v in TINY_GPT.items()],
                  "--set", "sequence_length=8", "--set", "accumulation_steps=2",
                  "--batch-size", "32", "--max-steps", "2", "--optimizer", "sls"])
  assert [r["step"] for r in history["sls"]["train"]][-1] == 2
  with pytest.raises(ValueError, match="multiple of `accumulation_steps`"):
    Config(batch_size=32, accumulation_steps=3).validate()
  with pytest.raises(ValueError, match="devices times the 4 micro-batches"):
    run(_lm_config(text_file, batch_size=16, accumulation_steps=4), verbose=False)


def test_bfloat16_language_model_decides_in_float32(text_file):
  spec, x, y = _lm_batch(text_file)
  model = get_model("gpt", num_classes=spec.num_classes, dtype=jnp.bfloat16,
                    param_dtype=jnp.bfloat16, **TINY_GPT)
  variables = init_variables(model, jax.random.key(0), x[:1])
  state = create_state(model, variables, OptimizerConfig("adam_salsa"), seed=0,
                       steps_per_epoch=10, total_steps=10, dataset_size=1000, batch_size=32)
  mesh = make_mesh()
  step, _ = compiled_steps(mesh)
  state = replicate(state, mesh)
  losses = []
  for _ in range(6):
    state, metrics = step(state, *global_batch(mesh, x, y))
    losses.append(float(metrics["loss"]))
  assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(state.params))
  assert metrics["loss"].dtype == jnp.float32
  assert optax.tree.get(state.opt_state, "learning_rate").dtype == jnp.float32
  assert losses[-1] < losses[0]


def test_sentence_classifier_trains_on_a_local_tsv(tmp_path):
  lines = ["sentence\tlabel"] + [f"{w} film, truly {w}\t{int(w == 'great')}"
                                 for w in ["great", "awful"] * 40]
  path = tmp_path / "reviews.tsv"
  path.write_text("\n".join(lines) + "\n")
  config = dataclasses.replace(
      get_config("sst2_encoder"), dataset=f"tsv:{path}", model="encoder",
      model_kwargs={"num_layers": 1, "num_heads": 2, "width": 16, "context": 32},
      sequence_length=32, batch_size=16, eval_batch_size=16, max_steps=4, log_every=1,
      optimizers=(OptimizerConfig("adam_salsa"),))
  history = run(config, verbose=False)
  records = history["adam_salsa"]
  assert len(records["train"]) == 4
  assert all(math.isfinite(r["loss"]) for r in records["train"])
  assert "test_bits_per_char" not in records["eval"][-1]
  assert 0.0 <= records["eval"][-1]["test_accuracy"] <= 1.0


def test_missing_text_fails_with_one_line(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    main(["--config", "shakespeare_char_gpt", "--data-dir", str(tmp_path)])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  assert "tiny_shakespeare_train.txt" in err and str(tmp_path) in err
  assert "Traceback" not in err


def test_text_configs_resolve():
  for name in ("shakespeare_char_gpt", "shakespeare_char_gpt2_small", "sst2_encoder"):
    config = get_config(name).validate()
    model = get_model(config.model, num_classes=65, **config.model_kwargs)
    assert model.context >= config.sequence_length
