"""Tests of ``models/``: parameter counts against the published ones, the common interface
(``train``, ``batch_stats``, dropout), the registry, and the blocks' defining properties."""

from __future__ import annotations

import functools
import math

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import (
  MODEL_NAMES,
  TOKEN_MODEL_NAMES,
  count_params,
  densenet,
  get_model,
  layers,
  mlp,
  mobilenetv2,
  resnet,
  wrn,
)

CIFAR = (1, 32, 32, 3)

# ---------------------------------------------------------------------------------------------
# Parameter counts. Two independent checks per network: the exact count equals the one computed
# here from the architecture's description (closed forms below) or, where no closed form is
# written, the count of the reference implementation the figure comes from (torchvision for
# ResNet-50 and MobileNetV2, the common PyTorch CIFAR ports for ResNet-18/34 and DenseNet-121);
# and it rounds to the figure the paper publishes, at the paper's precision.
# ---------------------------------------------------------------------------------------------


def _bn(channels: int) -> int:
  return 2 * channels


def _cifar_resnet_count(n: int, num_classes: int) -> int:
  """He et al.'s ResNet-(6n+2), option A: stem, three stages of n basic blocks, Dense."""
  total = 3 * 9 * 16 + _bn(16)
  channels = 16
  for width in (16, 32, 64):
    for _ in range(n):
      total += channels * width * 9 + _bn(width) + width * width * 9 + _bn(width)
      channels = width
  return total + 64 * num_classes + num_classes


def _wrn_count(depth: int, width: int, num_classes: int) -> int:
  """Pre-activation blocks: BN(in), conv(in, out), BN(out), conv(out, out), 1x1 projection."""
  total = 3 * 9 * 16
  channels = 16
  for group in range(3):
    out = 16 * width * 2**group
    for _ in range((depth - 4) // 6):
      total += _bn(channels) + channels * out * 9 + _bn(out) + out * out * 9
      if channels != out:
        total += channels * out
      channels = out
  return total + _bn(channels) + channels * num_classes + num_classes


def _densenet_count(
    growth: int, blocks: tuple[int, ...], bottleneck: bool, compression: float, init: int,
    num_classes: int,
) -> int:
  """Stem, dense layers (BN-conv, BN-conv), transitions (BN, 1x1 conv), final BN, Dense."""
  total = 3 * 9 * init
  channels = init
  for i, size in enumerate(blocks):
    if i > 0:
      out = math.floor(compression * channels)
      total += _bn(channels) + channels * out
      channels = out
    for _ in range(size):
      if bottleneck:
        total += _bn(channels) + channels * 4 * growth + _bn(4 * growth) + 4 * growth * growth * 9
      else:
        total += _bn(channels) + channels * growth * 9
      channels += growth
  return total + _bn(channels) + channels * num_classes + num_classes


def _mlp_count(features: tuple[int, ...], inputs: int, num_classes: int) -> int:
  widths = (inputs, *features, num_classes)
  return sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))


PUBLISHED = [
    # (model, input shape, exact count, published figure in millions, its decimals)
    # He et al. 2016, Table 6 / Sec. 4.2: 0.27M, 0.46M, 0.85M (exact: 269,722 / 464,154 / 853,018).
    ("resnet20", {}, CIFAR, _cifar_resnet_count(3, 10), 0.27, 2),
    ("resnet32", {}, CIFAR, _cifar_resnet_count(5, 10), 0.46, 2),
    ("resnet56", {}, CIFAR, _cifar_resnet_count(9, 10), 0.85, 2),
    # ResNet-18/34 with a CIFAR stem, 10 classes: 11.2M / 21.3M (PyTorch ports: 11,173,962 /
    # 21,282,122).
    ("resnet18", {}, CIFAR, 11_173_962, 11.2, 1),
    ("resnet34", {}, CIFAR, 21_282_122, 21.3, 1),
    # ResNet-50, ImageNet, 1000 classes: 25.6M (torchvision: 25,557,032).
    ("resnet50", {}, (1, 224, 224, 3), 25_557_032, 25.6, 1),
    # Huang et al. 2017, Table 2: DenseNet (L=40, k=12) 1.0M (exact: 1,019,722).
    ("densenet40", {}, CIFAR, _densenet_count(12, (12, 12, 12), False, 1.0, 16, 10), 1.0, 1),
    # DenseNet-121 (BC, k=32), CIFAR stem, 10 classes: 6.96M (exact: 6,956,298, as the PyTorch
    # port).
    ("densenet121", {}, CIFAR, _densenet_count(32, (6, 12, 24, 16), True, 0.5, 64, 10), 6.96, 2),
    # MobileNetV2, 10 classes: 2.24M (torchvision's 3,504,872 for 1000 classes minus 1,281 x 990).
    ("mobilenetv2", {}, CIFAR, 3_504_872 - 1281 * 990, 2.24, 2),
    # Zagoruyko & Komodakis 2016, Table / Fig.: WRN-16-4 2.7M (exact: 2,748,890); CIFAR-100 2.77M
    # (exact: 2,772,020).
    ("wrn16_4", {}, CIFAR, _wrn_count(16, 4, 10), 2.7, 1),
    ("wrn16_4", {"num_classes": 100}, CIFAR, _wrn_count(16, 4, 100), 2.77, 2),
    ("wrn", {"depth": 28, "width": 10}, CIFAR, _wrn_count(28, 10, 10), 36.5, 1),
    # The MNIST MLPs: one hidden layer of 1000 (795,010), two of 512 (669,706).
    ("mlp", {"features": (1000,), "num_classes": 10}, (1, 28, 28, 1),
     _mlp_count((1000,), 784, 10), 0.80, 2),
    ("mlp", {"features": (512, 512), "num_classes": 10}, (1, 28, 28, 1),
     _mlp_count((512, 512), 784, 10), 0.67, 2),
]


@pytest.mark.parametrize(("name", "kwargs", "shape", "exact", "published", "decimals"), PUBLISHED)
def test_param_counts_match_published(name, kwargs, shape, exact, published, decimals):
  count = count_params(get_model(name, **kwargs), shape)
  assert count == exact
  assert round(count / 1e6, decimals) == published


def test_cifar_resnet_counts_follow_the_closed_form_at_every_depth():
  for n in (1, 2, 7, 18):  # ResNet-8, -14, -44, -110 (1.7M published for ResNet-110).
    model = resnet.ResNet(stage_sizes=(n, n, n), **_cifar_resnet_kwargs())
    assert count_params(model, CIFAR) == _cifar_resnet_count(n, 10)
  assert round(_cifar_resnet_count(18, 10) / 1e6, 1) == 1.7


def test_mobilenetv2_imagenet_rows_give_torchvision_count():
  model = mobilenetv2.MobileNetV2(
      num_classes=1000, stages=mobilenetv2.IMAGENET_STAGES, stem_strides=2
  )
  assert count_params(model, (1, 224, 224, 3)) == 3_504_872


def test_count_params_counts_params_not_batch_stats():
  model = TINY["wrn"]
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  sizes = {k: sum(math.prod(p.shape) for p in jax.tree.leaves(v)) for k, v in variables.items()}
  assert sizes["batch_stats"] > 0
  assert count_params(model, (1, 8, 8, 3)) == sizes["params"]
  assert count_params(model, (1, 8, 8, 3), train=False) == sizes["params"]


# ---------------------------------------------------------------------------------------------
# The common interface.
# ---------------------------------------------------------------------------------------------


def _cifar_resnet_kwargs() -> dict:
  return {"block_cls": resnet.ResNetBlock, "num_filters": 16, "stem": "cifar",
          "shortcut": "zero_pad"}


TINY: dict[str, nn.Module] = {
    "resnet": resnet.ResNet(stage_sizes=(1, 1), num_classes=3, num_filters=4, stem="cifar",
                            block_cls=resnet.ResNetBlock, shortcut="zero_pad"),
    "resnet_bottleneck": resnet.ResNet(stage_sizes=(1, 1), num_classes=3, num_filters=2,
                                       block_cls=resnet.BottleneckResNetBlock),
    "wrn": wrn.WideResNet(depth=10, width=1, num_classes=3),
    "densenet": densenet.DenseNet(growth_rate=4, block_sizes=(2, 1), num_classes=3,
                                  bottleneck=True, compression=0.5, num_init_features=8),
    "mobilenetv2": mobilenetv2.MobileNetV2(num_classes=3, stages=((1, 8, 1, 1), (6, 8, 2, 2))),
}
"""Small members of each family, run on two 8x8 images (16x16 for the ImageNet stem)."""


def _normal(*shape: int, seed: int = 0) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _images(name: str, batch: int = 2, seed: int = 0) -> jax.Array:
  size = 16 if name == "resnet_bottleneck" else 8
  return _normal(batch, size, size, 3, seed=seed)


def _init(model: nn.Module, x: jax.Array, seed: int = 0) -> dict:
  """Variables of ``model`` drawn with NumPy (``model.init`` compiles an initialiser per shape).

  Kernels ~ N(0, 1 / fan_in); BatchNorm scales 1 + N(0, 0.1^2), biases N(0, 0.1^2); running
  means 0 and variances 1, as ``model.init`` leaves them.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)

  def draw(path, leaf):
    name = path[-1].key
    if name == "mean":
      return jnp.zeros(leaf.shape)
    if name == "var":
      return jnp.ones(leaf.shape)
    if len(leaf.shape) == 1:
      return jnp.asarray((name == "scale") + 0.1 * rng.standard_normal(leaf.shape), jnp.float32)
    fan_in = math.prod(leaf.shape[:-1])
    return jnp.asarray(rng.standard_normal(leaf.shape) / math.sqrt(fan_in), jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _apply_fns(model: nn.Module):
  """``model.apply`` jitted in training (with a ``'dropout'`` key) and in evaluation; both return
  the logits and the ``batch_stats`` after the call."""

  @jax.jit
  def train(variables, x, key):
    logits, state = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                rngs={"dropout": key})
    return logits, state["batch_stats"]

  @jax.jit
  def evaluate(variables, x):
    logits, state = model.apply(variables, x, train=False, mutable=["batch_stats"])
    return logits, state["batch_stats"]

  return train, evaluate


def _registry_kwargs(name: str) -> dict:
  if name == "mlp":
    return {"features": (16,), "num_classes": 7}
  if name == "wrn":
    return {"depth": 10, "width": 2, "num_classes": 7}
  return {"num_classes": 7}


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n not in TOKEN_MODEL_NAMES])
def test_every_registered_model_maps_images_to_logits(name):
  # The transformers take tokens: tests/test_transformers.py.
  model = get_model(name, **_registry_kwargs(name))
  assert model.num_classes == 7
  size = 64 if name == "resnet50" else 32
  x = jnp.zeros((2, size, size, 3))
  out, variables = jax.eval_shape(
      functools.partial(model.init_with_output, train=False), jax.random.key(0), x
  )
  assert out.shape == (2, 7)
  assert set(variables) == ({"params"} if name == "mlp" else {"params", "batch_stats"})


@pytest.mark.parametrize("name", ["mlp", *sorted(TINY)])
def test_dtype_is_the_computation_dtype_params_stay_float32(name):
  if name == "mlp":
    model = mlp.MLP(features=(8,), num_classes=3, dtype=jnp.bfloat16)
  else:
    model = TINY[name].clone(dtype=jnp.bfloat16)
  x = _images(name, batch=2)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  for train in (True, False):
    out = jax.eval_shape(
        lambda v, train=train: model.apply(v, x, train=train, mutable=["batch_stats"])[0],
        variables,
    )
    assert (out.shape, out.dtype) == ((2, 3), jnp.bfloat16)


@pytest.mark.parametrize("name", sorted(TINY))
def test_batch_stats_update_only_when_training(name):
  model = TINY[name]
  train, evaluate = _apply_fns(model)
  x = _images(name)
  variables = _init(model, x)
  stats = variables["batch_stats"]
  _, trained = train(variables, x, jax.random.key(0))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, trained)
  assert all(jax.tree.leaves(changed))
  _, evaluated = evaluate(variables, x)
  jax.tree.map(np.testing.assert_array_equal, stats, evaluated)
  # In evaluation an image's logits do not depend on the rest of the batch; in training they do.
  variables = {**variables, "batch_stats": trained}
  others = x.at[1:].set(_images(name, batch=x.shape[0] - 1, seed=1))
  np.testing.assert_allclose(evaluate(variables, x)[0][0], evaluate(variables, others)[0][0],
                             rtol=1e-5, atol=1e-5)
  key = jax.random.key(0)
  assert not np.allclose(train(variables, x, key)[0][0], train(variables, others, key)[0][0])


def test_batchnorm_momentum_and_epsilon_as_in_torch():
  model = TINY["resnet"]
  x = _images("resnet")
  variables = _init(model, x)
  _, state = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"],
                         capture_intermediates=True)
  conv_out = np.asarray(state["intermediates"]["conv_init"]["__call__"][0], np.float64)
  running = state["batch_stats"]["bn_init"]
  np.testing.assert_allclose(running["mean"], 0.1 * conv_out.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(running["var"], 0.9 + 0.1 * conv_out.var((0, 1, 2)), rtol=1e-4)
  variables = {**variables, "batch_stats": state["batch_stats"]}
  _, inter = model.apply(variables, x, train=False, mutable=["intermediates"],
                         capture_intermediates=True)
  conv_out = np.asarray(inter["intermediates"]["conv_init"]["__call__"][0], np.float64)
  normalised = np.asarray(inter["intermediates"]["bn_init"]["__call__"][0], np.float64)
  mean, var = (np.asarray(running[k], np.float64) for k in ("mean", "var"))
  scale, bias = (np.asarray(variables["params"]["bn_init"][k], np.float64)
                 for k in ("scale", "bias"))
  np.testing.assert_allclose(normalised, (conv_out - mean) / np.sqrt(var + 1e-5) * scale + bias,
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["wrn", "densenet"])
def test_dropout_only_when_training(family):
  tiny = TINY[family]
  model = tiny.clone(dropout_rate=0.5)
  train, evaluate = _apply_fns(model)
  x = _images(family)
  variables = _init(model, x)
  # train=False is deterministic and the same as without dropout.
  first = evaluate(variables, x)[0]
  np.testing.assert_array_equal(first, evaluate(variables, x)[0])
  np.testing.assert_array_equal(first, _apply_fns(tiny)[1](variables, x)[0])
  # 'rbg' keys: dropout as with the default keys, in a fraction of threefry's compile time.
  key, other = jax.random.key(0, impl="rbg"), jax.random.key(1, impl="rbg")
  np.testing.assert_array_equal(train(variables, x, key)[0], train(variables, x, key)[0])
  assert not np.allclose(train(variables, x, key)[0], train(variables, x, other)[0])
  # The 'dropout' rng is needed only in training with a positive rate (checked by tracing).
  jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
  jax.eval_shape(functools.partial(tiny.apply, train=True, mutable=["batch_stats"]), variables, x)
  with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
    jax.eval_shape(functools.partial(model.apply, train=True, mutable=["batch_stats"]),
                   variables, x)


def test_mlp_ignores_train():
  model = mlp.MLP(features=(8,), num_classes=3)
  x = _images("mlp")
  variables = _init(model, x)
  np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x, train=False))
  assert set(variables) == {"params"}


def test_cifar_resnet_forward_backward_is_finite():
  model = resnet.ResNet(stage_sizes=(1, 1, 1), **_cifar_resnet_kwargs())  # ResNet-8.
  x = _images("resnet", batch=2)
  labels = jnp.array([3, 7])
  variables = _init(model, x)

  @jax.jit
  def loss_and_grad(params):
    def loss(params):
      logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                              train=True, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return jax.value_and_grad(loss)(params)

  value, grads = loss_and_grad(variables["params"])
  assert np.isfinite(value)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads))


# ---------------------------------------------------------------------------------------------
# Blocks.
# ---------------------------------------------------------------------------------------------


def _constant(key, shape, dtype=jnp.float32):
  """A kernel initialiser without randomness (each random initialiser costs a compilation)."""
  del key
  return jnp.full(shape, 0.1, dtype)


def _block(block_cls, shortcut: str, zero_init_residual: bool, strides: int = 2):
  conv = functools.partial(nn.Conv, use_bias=False, kernel_init=_constant)
  return block_cls(
      8, conv=conv, norm=layers.batch_norm(False, jnp.float32), act=nn.relu, strides=strides,
      shortcut=shortcut, zero_init_residual=zero_init_residual,
  )


@pytest.mark.parametrize("block_cls", [resnet.ResNetBlock, resnet.BottleneckResNetBlock])
def test_zero_init_residual_block_is_relu_of_its_shortcut(block_cls):
  x = _normal(2, 6, 6, 4)
  block = _block(block_cls, "zero_pad", zero_init_residual=True)
  variables = block.init(jax.random.key(1), x)
  assert "conv_proj" not in variables["params"]  # option A has no parameters.
  out = np.asarray(block.apply(variables, x))
  features = out.shape[-1]
  shortcut = np.pad(np.asarray(x)[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (0, features - 4)))
  np.testing.assert_allclose(out, np.maximum(shortcut, 0.0), atol=1e-6)


def test_residual_bn_scale_starts_at_one_by_default_and_projection_has_parameters():
  x = jnp.zeros((1, 6, 6, 4))
  variables = _block(resnet.ResNetBlock, "projection", False).init(jax.random.key(0), x)
  params = variables["params"]
  np.testing.assert_array_equal(params["BatchNorm_1"]["scale"], np.ones(8))
  assert params["conv_proj"]["kernel"].shape == (1, 1, 4, 8)
  assert "norm_proj" in params
  same = _block(resnet.ResNetBlock, "projection", False, strides=1)
  shapes = jax.eval_shape(same.init, jax.random.key(0), jnp.zeros((1, 6, 6, 8)))
  assert "conv_proj" not in shapes["params"]


def test_stride_two_convolutions_pad_symmetrically_like_torch():
  block = _block(resnet.ResNetBlock, "zero_pad", False)
  x = _normal(1, 6, 6, 8)
  variables = _init(block, x)
  kernel = variables["params"]["Conv_0"]["kernel"]
  expected = jax.lax.conv_general_dilated(
      x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  _, inter = block.apply(variables, x, mutable=["intermediates"], capture_intermediates=True)
  np.testing.assert_allclose(inter["intermediates"]["Conv_0"]["__call__"][0], expected,
                             rtol=1e-5, atol=1e-5)


def test_mobilenetv2_adds_the_input_only_when_shapes_match():
  block = functools.partial(
      mobilenetv2.InvertedResidual, conv=layers.conv_no_bias(nn.Conv, jnp.float32),
      norm=layers.batch_norm(False, jnp.float32), act=nn.relu6,
  )
  x = _normal(2, 4, 4, 8)
  residual = block(8, 6)
  variables = _init(residual, x)
  zeroed = jax.tree.map(jnp.zeros_like, variables)  # last BN scale 0: the branch outputs 0.
  np.testing.assert_allclose(residual.apply(zeroed, x), x, atol=1e-6)
  for plain in (block(8, 6, strides=2), block(16, 6)):
    out = plain.apply(jax.tree.map(jnp.zeros_like, _init(plain, x)), x)
    np.testing.assert_array_equal(out, np.zeros_like(out))
  # t = 1 has no expansion convolution: depthwise and projection only.
  assert len(jax.eval_shape(block(8, 1).init, jax.random.key(1), x)["params"]) == 4


# ---------------------------------------------------------------------------------------------
# Registry and validation.
# ---------------------------------------------------------------------------------------------


def test_registry_names_and_unknown_name():
  assert set(MODEL_NAMES) == {
      "mlp", "resnet20", "resnet32", "resnet56", "resnet18", "resnet34", "resnet50",
      "densenet40", "densenet121", "mobilenetv2", "wrn16_4", "wrn",
      "gpt", "gpt_nano", "gpt2_small", "encoder", "encoder_tiny",
  }
  with pytest.raises(ValueError, match="Unknown model 'resnet1000'") as error:
    get_model("resnet1000")
  assert all(name in str(error.value) for name in MODEL_NAMES)


@pytest.mark.parametrize(
    ("name", "kwargs", "argument"),
    [
        ("wrn", {"depth": 15, "width": 4}, "depth"),
        ("wrn", {"depth": 16, "width": 0}, "width"),
        ("wrn16_4", {"dropout_rate": 1.0}, "dropout_rate"),
        ("densenet40", {"dropout_rate": -0.1}, "dropout_rate"),
        ("densenet121", {"compression": 0.0}, "compression"),
        ("resnet18", {"stem": "tiny"}, "stem"),
        ("resnet20", {"shortcut": "option_c"}, "shortcut"),
    ],
)
def test_invalid_attributes_raise_value_error_naming_them(name, kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    get_model(name, **kwargs)
