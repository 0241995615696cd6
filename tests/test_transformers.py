"""Tests of ``models.transformer``: shapes and the harness's calling convention, parameter counts
(GPT-2 small's 124,439,808), causality, the padding mask, dropout, bfloat16, validation and the
registry entries.

Tiny models throughout, and few compilations (each costs about half a second on a CPU): every
forward pass is jitted, with the token batch :data:`X` wherever the shape does not matter."""

from __future__ import annotations

import functools
import math

import flax.errors
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import (
    BYTE_OFFSET,
    CLS_ID,
    GPT,
    MODEL_NAMES,
    PAD_ID,
    TOKEN_MODEL_NAMES,
    EncoderClassifier,
    count_params,
    get_model,
    transformer,
)

VOCAB = 11
SIZES = {"num_layers": 2, "num_heads": 2, "width": 16, "context": 16}
TINY = {
    "gpt": GPT(num_classes=VOCAB, **SIZES),
    "encoder": EncoderClassifier(num_classes=3, vocab_size=BYTE_OFFSET + 9, **SIZES),
}
CLASSES = {"gpt": VOCAB, "encoder": 3}


def _tokens(batch: int, length: int, high: int, seed: int = 0) -> np.ndarray:
  """Random token ids, int32. Tokens are NumPy arrays: each eager jnp operation compiles."""
  return np.random.default_rng(seed).integers(0, high, (batch, length)).astype(np.int32)


X = _tokens(4, 7, BYTE_OFFSET + 9, seed=1)
X[:, 0] = CLS_ID
"""A batch of token ids valid for both tiny models: CLS first, some padding."""


def _sentence(body: list[int], pads: int) -> np.ndarray:
  """``[CLS, body..., PAD x pads]`` as a batch of one."""
  return np.asarray([[CLS_ID, *body, *([PAD_ID] * pads)]], np.int32)


@functools.cache
def _params(name: str) -> dict:
  """The tiny models' parameters, initialised once, as the harness does (but jitted)."""
  keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  sample = np.zeros((1, SIZES["context"]), np.int32)
  variables = jax.jit(functools.partial(TINY[name].init, train=False))(keys, sample)
  assert set(variables) == {"params"}
  return variables["params"]


@functools.cache
def _forward(model):
  """``model.apply`` in evaluation, jitted: ``(params, tokens) -> logits``."""
  return jax.jit(lambda params, x: model.apply({"params": params}, x))


def _block_count(width: int, num_layers: int) -> int:
  """Per block: two LayerNorms, qkv (d x 3d + 3d), attention output, MLP d -> 4d -> d."""
  per_block = 2 * 2 * width + (width + 1) * 3 * width + (width + 1) * width
  per_block += (width + 1) * 4 * width + (4 * width + 1) * width
  assert per_block == 12 * width**2 + 13 * width
  return num_layers * per_block


def _gpt_count(vocab: int, width: int, num_layers: int, context: int, tied: bool = True) -> int:
  untied_head = 0 if tied else vocab * width
  return (vocab + context) * width + _block_count(width, num_layers) + 2 * width + untied_head


# ---------------------------------------------------------------------------------------------
# Shapes, dtypes and the harness's calling convention; parameters.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TINY))
def test_harness_calling_convention_shapes_and_dtypes(name):
  model, params = TINY[name], _params(name)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  train = jax.jit(lambda variables, x, key: model.apply(
      variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]))
  logits, state = train({"params": params, "batch_stats": {}}, X, jax.random.key(2))
  expected = (4, 7, VOCAB) if name == "gpt" else (4, 3)
  assert (logits.shape, logits.dtype) == (expected, jnp.float32)
  assert not jax.tree.leaves(state)
  assert np.all(np.isfinite(logits))
  # train=False is the default; dropout_rate defaults to 0, so both agree.
  np.testing.assert_array_equal(_forward(model)(params, X), logits)


def test_gpt2_small_has_gpt2_parameter_count():
  model = get_model("gpt2_small", num_classes=50257)
  shapes = jax.eval_shape(
      functools.partial(model.init, train=False),
      {"params": jax.random.key(0), "dropout": jax.random.key(1)},
      jax.ShapeDtypeStruct((1, 1024), jnp.int32),
  )
  total = sum(math.prod(p.shape) for p in jax.tree.leaves(shapes["params"]))
  assert total == 124_439_808 == _gpt_count(50257, 768, 12, 1024)
  assert count_params(model, (1, 1024)) == total
  params = shapes["params"]
  assert params["wte"]["embedding"].shape == (50257, 768)
  assert params["wpe"]["embedding"].shape == (1024, 768)
  assert params["block_0"]["qkv"]["kernel"].shape == (768, 2304)
  assert "lm_head" not in params


def test_small_sizes_parameter_counts_and_untied_head():
  assert count_params(get_model("gpt_nano", num_classes=65), (1, 64)) == 809_856
  assert _gpt_count(65, 128, 4, 64) == 809_856
  assert count_params(get_model("encoder_tiny", num_classes=2), (1, 128)) == 843_010
  assert (258 + 128) * 128 + _block_count(128, 4) + 2 * 128 + (128 + 1) * 2 == 843_010
  untied = TINY["gpt"].clone(tie_weights=False)
  assert count_params(untied, (1, 4)) == _gpt_count(VOCAB, 16, 2, 16, tied=False)
  shapes = jax.eval_shape(untied.init, jax.random.key(0), np.zeros((1, 4), np.int32))
  assert shapes["params"]["lm_head"]["kernel"].shape == (16, VOCAB)


def test_tied_head_is_the_token_embedding_and_init_follows_gpt2():
  params = _params("gpt")
  logits, state = jax.jit(functools.partial(
      TINY["gpt"].apply, capture_intermediates=True, mutable=["intermediates"]
  ))({"params": params}, X)
  hidden = state["intermediates"]["ln_f"]["__call__"][0]
  np.testing.assert_allclose(logits, hidden @ params["wte"]["embedding"].T, rtol=1e-5, atol=1e-5)
  # Weights N(0, 0.02^2), the residual projections N(0, 0.02^2 / (2 L)) (here L = 2), biases 0.
  for block in ("block_0", "block_1"):
    assert np.std(params[block]["qkv"]["kernel"]) == pytest.approx(0.02, rel=0.1)
    assert np.std(params[block]["mlp_in"]["kernel"]) == pytest.approx(0.02, rel=0.1)
    for name in ("attn_out", "mlp_out"):
      assert np.std(params[block][name]["kernel"]) == pytest.approx(0.01, rel=0.15)
      np.testing.assert_array_equal(params[block][name]["bias"], 0.0)
  assert np.std(params["wte"]["embedding"]) == pytest.approx(0.02, rel=0.15)
  assert np.std(params["wpe"]["embedding"]) == pytest.approx(0.02, rel=0.1)


# ---------------------------------------------------------------------------------------------
# Causality and the padding mask.
# ---------------------------------------------------------------------------------------------


def test_gpt_is_causal():
  params = _params("gpt")
  length = 8
  base = _tokens(1, length, VOCAB, seed=4)
  # Row t changes token t only.
  changed = np.tile(base, (length, 1))
  changed[np.arange(length), np.arange(length)] = (base[0] + 1) % VOCAB
  out = np.asarray(_forward(TINY["gpt"])(params, np.concatenate([base, changed])))
  reference, variants = out[0], out[1:]
  for t in range(length):
    np.testing.assert_allclose(variants[t, :t], reference[:t], rtol=0, atol=1e-6)
    # Every later position sees the change (through the attention of the blocks).
    assert np.all(np.max(np.abs(variants[t, t:] - reference[t:]), axis=-1) > 1e-5)


def test_encoder_ignores_padding():
  model, params = TINY["encoder"], _params("encoder")
  forward = _forward(model)
  body = [3 + BYTE_OFFSET, 7 + BYTE_OFFSET, 1 + BYTE_OFFSET]
  unpadded = forward(params, _sentence(body, 0))
  for pads in (3, 10):
    np.testing.assert_allclose(forward(params, _sentence(body, pads)), unpadded, rtol=1e-5,
                               atol=1e-5)
  # Rows 0 and 1 are equal off the padding and padded in the same places (also in the middle);
  # row 2 changes a real token; row 3 puts a real token at the padded positions.
  padded = X[0].copy()
  padded[[2, 4, 5]], padded[[1, 3, 6]] = PAD_ID, 4
  batch = np.stack([padded, padded, padded, np.where(padded == PAD_ID, 6, padded)])
  batch[2, 3] = 5
  out = np.asarray(forward(params, batch))
  np.testing.assert_array_equal(out[0], out[1])
  assert np.max(np.abs(out[2] - out[0])) > 1e-4
  assert np.max(np.abs(out[3] - out[0])) > 1e-4
  # Whatever enters the hidden states at padded positions (their position embeddings, the PAD
  # embedding) cannot reach the output.
  noise = np.random.default_rng(5).standard_normal((SIZES["context"], SIZES["width"]))
  at_padding = np.zeros((SIZES["context"], 1))
  at_padding[: padded.shape[0]] = (padded == PAD_ID)[:, None]
  wte = np.array(params["wte"]["embedding"])
  wte[PAD_ID] += noise[0]
  perturbed = {
      **params,
      "wpe": {"embedding": np.asarray(params["wpe"]["embedding"] + noise * at_padding, np.float32)},
      "wte": {"embedding": wte},
  }
  changed = np.asarray(forward(perturbed, batch))
  np.testing.assert_allclose(changed[:3], out[:3], rtol=1e-5, atol=1e-5)
  assert np.max(np.abs(changed[3] - out[3])) > 1e-4  # Row 3 has no padding: it sees the noise.


def test_pad_id_is_an_attribute():
  model = TINY["encoder"].clone(pad_id=2)
  params = _params("encoder")
  x = np.stack([X[0], X[0]])
  x[1, 3:] = 2
  wpe = np.array(params["wpe"]["embedding"])
  wpe[3:] += np.random.default_rng(6).standard_normal((SIZES["context"] - 3, SIZES["width"]))
  perturbed = {**params, "wpe": {"embedding": wpe}}
  forward = _forward(model)
  out, changed = np.asarray(forward(params, x)), np.asarray(forward(perturbed, x))
  np.testing.assert_allclose(changed[1], out[1], rtol=1e-5, atol=1e-5)
  assert np.max(np.abs(changed[0] - out[0])) > 1e-4


# ---------------------------------------------------------------------------------------------
# Dropout and bfloat16.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TINY))
def test_dropout_only_when_training(name):
  model = TINY[name].clone(dropout_rate=0.3)
  variables = {"params": _params(name), "batch_stats": {}}

  @jax.jit
  def run(key, other):
    def train(key):
      logits, _ = model.apply(variables, X, train=True, rngs={"dropout": key},
                              mutable=["batch_stats"])
      return logits

    def evaluate(key):
      return model.apply(variables, X, train=False, rngs={"dropout": key})

    return train(key), train(key), train(other), evaluate(key), evaluate(other)

  # 'rbg' keys: dropout as with the default keys, in a fraction of threefry's compile time.
  first, again, other, evaluated, evaluated_other = run(jax.random.key(0, impl="rbg"),
                                                        jax.random.key(1, impl="rbg"))
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, other)
  assert not np.allclose(first, evaluated)
  np.testing.assert_array_equal(evaluated, evaluated_other)
  np.testing.assert_allclose(evaluated, _forward(TINY[name])(variables["params"], X), rtol=1e-6,
                             atol=1e-6)
  # The 'dropout' rng is needed only in training with a positive rate.
  with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
    jax.eval_shape(functools.partial(model.apply, train=True), variables, X)


@pytest.mark.parametrize("name", sorted(TINY))
def test_bfloat16_computation_float32_params(name):
  model = TINY[name].clone(dtype=jnp.bfloat16)
  shapes = jax.eval_shape(model.init, jax.random.key(0), X)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(shapes))
  params = _params(name)
  logits, state = jax.jit(functools.partial(
      model.apply, capture_intermediates=True, mutable=["intermediates"]
  ))({"params": params}, X)
  assert state["intermediates"]["block_0"]["qkv"]["__call__"][0].dtype == jnp.bfloat16
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  np.testing.assert_allclose(logits, _forward(TINY[name])(params, X), atol=0.05)


# ---------------------------------------------------------------------------------------------
# Training, validation and the registry.
# ---------------------------------------------------------------------------------------------


def test_gpt_gradients_are_finite_and_reach_every_parameter():
  model, params = TINY["gpt"], _params("gpt")
  x = _tokens(2, 9, VOCAB, seed=8)

  @jax.jit
  def grad(params):
    def loss(params):
      logits = model.apply({"params": params}, x[:, :-1], train=True)
      logp = jax.nn.log_softmax(logits)
      return -jnp.mean(jnp.take_along_axis(logp, x[:, 1:, None], axis=-1))

    return jax.grad(loss)(params)

  grads = grad(params)
  assert all(np.all(np.isfinite(g)) and np.any(np.asarray(g) != 0)
             for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("name", sorted(TINY))
def test_input_longer_than_context_raises(name):
  model = TINY[name]
  too_long = jax.ShapeDtypeStruct((1, SIZES["context"] + 1), jnp.int32)
  with pytest.raises(ValueError, match="more than the context of 16"):
    jax.eval_shape(model.init, jax.random.key(0), too_long)
  with pytest.raises(ValueError, match="integers"):
    jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 4), jnp.float32))


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"width": 15}, "num_heads"),
        ({"num_layers": 0}, "num_layers"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"context": 0}, "context"),
    ],
)
def test_invalid_attributes_raise_value_error_naming_them(kwargs, argument):
  for name in ("gpt", "encoder"):
    with pytest.raises(ValueError, match=argument):
      get_model(name, **{"num_classes": 5, **SIZES, **kwargs})
  with pytest.raises(ValueError, match="pad_id"):
    get_model("encoder", num_classes=2, pad_id=258)


def test_registry_entries():
  expected = {
      "gpt": (GPT, 4, 4, 128, 64),
      "gpt_nano": (GPT, 4, 4, 128, 64),
      "gpt2_small": (GPT, 12, 12, 768, 1024),
      "encoder": (EncoderClassifier, 4, 4, 128, 128),
      "encoder_tiny": (EncoderClassifier, 4, 4, 128, 128),
  }
  assert set(expected) == set(TOKEN_MODEL_NAMES) <= set(MODEL_NAMES)
  for name, (cls, layers, heads, width, context) in expected.items():
    model = get_model(name, num_classes=7)
    assert type(model) is cls
    sizes = (model.num_layers, model.num_heads, model.width, model.context)
    assert (model.num_classes, *sizes) == (7, layers, heads, width, context)
    assert model.dropout_rate == 0.0
  assert get_model("encoder_tiny", num_classes=2).vocab_size == 258 == BYTE_OFFSET + 256
  assert (PAD_ID, CLS_ID, BYTE_OFFSET) == (0, 1, 2)
  assert transformer.GPTNano(num_classes=65).tie_weights
  custom = get_model("gpt", num_classes=5, num_layers=1, width=8, num_heads=2, context=4)
  out = jax.eval_shape(custom.init_with_output, jax.random.key(0), np.zeros((3, 4), np.int32))
  assert out[0].shape == (3, 4, 5)
