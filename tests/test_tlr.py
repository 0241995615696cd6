"""Trainable learning rate (GD-TLR): the paper's rules against NumPy, bounds, per layer."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import optax_ls
from optax_ls import _core
from tests import test_common as common
from tests.method_registry import TLR_PER_LAYER
from tests.problems import init_mlp, regression_batch

_SHAPES = {"a": (3,), "b": (2, 2)}


def _gradient_sequence(seed: int, steps: int) -> list[dict[str, np.ndarray]]:
  """Gradients that agree, disagree, vanish and scale: every case of Eq. 9."""
  rng = np.random.default_rng(seed)
  seq = []
  g = {k: rng.normal(size=s) for k, s in _SHAPES.items()}
  for t in range(steps):
    kind = t % 5
    if kind == 0:
      g = {k: rng.normal(size=s) for k, s in _SHAPES.items()}  # unrelated
    elif kind == 1:
      g = {k: 0.7 * v + 0.1 * rng.normal(size=v.shape) for k, v in g.items()}  # agrees
    elif kind == 2:
      g = {k: -1.5 * v for k, v in g.items()}  # overshoot: opposite
    elif kind == 3:
      g = {"a": np.zeros(3), "b": 2.0 * g["b"]}  # one tensor vanishes
    else:
      g = {k: 0.0 * v for k, v in g.items()}  # zero gradient
    seq.append(g)
  return seq


def _flat(tree: dict[str, np.ndarray], keys=None) -> np.ndarray:
  keys = sorted(tree) if keys is None else keys
  return np.concatenate([np.ravel(tree[k]) for k in keys]).astype(np.float64)


def _numpy_factor(g: np.ndarray, g_prev: np.ndarray, c: float) -> float:
  """1 + <g, g'> / max(4 <g, g - g'>, <g, g'> / c) in float64 (Eq. 7-9); 1 when g = 0."""
  cross = g @ g_prev
  denom = max(4.0 * (g @ (g - g_prev)), cross / c)
  return 1.0 if denom <= 0 else 1.0 + cross / denom


def _run_sequence(opt, seq):
  params = {k: jnp.zeros(s) for k, s in _SHAPES.items()}
  state = opt.init(params)
  update = jax.jit(opt.update)
  rates, updates = [], []
  for g in seq:
    u, state = update({k: jnp.asarray(v, jnp.float32) for k, v in g.items()}, state, params)
    rates.append(jax.tree.map(float, optax.tree.get(state, "learning_rate")))
    updates.append(jax.tree.map(np.asarray, u))
  return rates, updates, state


@pytest.mark.parametrize("window", [1, 3])
@pytest.mark.parametrize("c", [0.25, 0.1])
def test_efficient_rate_follows_eq_7_to_10(window: int, c: float):
  """The rate and the updates against Eq. 7-10 computed independently in float64."""
  seq = _gradient_sequence(0, 30)
  rates, updates, _ = _run_sequence(
      optax_ls.tlr(window=window, c=c, init_learning_rate=0.05), seq)
  alpha, g_prev, acc = 0.05, np.zeros(7), np.zeros(7)
  for t, g in enumerate(seq):
    acc = _flat(g) if t % window == 0 else acc + _flat(g)
    if t % window == window - 1:  # the window's last call updates the rate (Eq. 10)
      alpha *= _numpy_factor(acc, g_prev, c)
      g_prev = acc
    np.testing.assert_allclose(rates[t], alpha, rtol=2e-5)
    np.testing.assert_allclose(_flat(updates[t]), -alpha * _flat(g), rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("per_layer", [True, "layer"])
def test_per_layer_rates_follow_eq_9_per_group(per_layer):
  """Per tensor (or per parent node), every inner product is taken within it."""
  seq = [{"l1": {"w": g["b"], "b": g["a"]}, "l2": {"w": -g["b"].T, "b": 0.5 * g["a"]}}
         for g in _gradient_sequence(1, 20)]
  opt = optax_ls.tlr(window=1, per_layer=per_layer, init_learning_rate=0.05)
  params = jax.tree.map(jnp.zeros_like, jax.tree.map(jnp.asarray, seq[0]))
  state = opt.init(params)
  groups = ([[("l1", "w")], [("l1", "b")], [("l2", "w")], [("l2", "b")]] if per_layer is True
            else [[("l1", "w"), ("l1", "b")], [("l2", "w"), ("l2", "b")]])
  alpha = [0.05] * len(groups)
  prev = [np.zeros(sum(np.size(seq[0][a][b]) for a, b in grp)) for grp in groups]
  for g in seq:
    _, state = opt.update(jax.tree.map(jnp.asarray, g), state, params)
    for i, grp in enumerate(groups):
      gi = np.concatenate([np.ravel(g[a][b]) for a, b in grp]).astype(np.float64)
      alpha[i] *= _numpy_factor(gi, prev[i], 0.25)
      prev[i] = gi
      for a, b in grp:
        np.testing.assert_allclose(float(state.learning_rate[a][b]), alpha[i], rtol=2e-5)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    c=st.sampled_from([0.05, 0.25, 1.0]),
    scale=st.sampled_from([1e-4, 1.0, 1e3]),
)
def test_efficient_rate_is_bounded_by_one_plus_c(seed: int, c: float, scale: float):
  """3/4 alpha_t < alpha_{t+1} <= (1 + c) alpha_t, exactly, whatever the gradients."""
  rng = np.random.default_rng(seed)
  opt = optax_ls.tlr(window=1, c=c, init_learning_rate=1.0)
  params = {"a": jnp.zeros(4)}
  state = opt.init(params)
  prev = float(state.learning_rate)
  for _ in range(12):
    g = {"a": jnp.asarray(scale * rng.normal(size=4) * rng.integers(0, 2), jnp.float32)}
    _, state = opt.update(g, state, params)
    rate = float(state.learning_rate)
    assert 0.75 * prev < rate <= np.float32(1.0 + c) * np.float32(prev)
    prev = rate


def test_rate_stays_in_bounds_and_guards_the_denominator():
  opt = optax_ls.tlr(window=1, init_learning_rate=0.1, max_learning_rate=0.3)
  params = {"a": jnp.zeros(2)}
  state = opt.init(params)
  for _ in range(20):  # always the same gradient: the rate grows, to the cap
    _, state = opt.update({"a": jnp.ones(2)}, state, params)
  assert float(state.learning_rate) == pytest.approx(0.3)
  # g = 0: the denominator of Eq. 9 is 0; the rate is kept, the update is 0.
  updates, state = opt.update({"a": jnp.zeros(2)}, state, params)
  assert float(state.learning_rate) == pytest.approx(0.3)
  assert float(jnp.abs(updates["a"]).max()) == 0.0


def test_nonfinite_direction_leaves_the_window_untouched():
  opt = optax_ls.tlr(window=3, init_learning_rate=0.1)
  params = {"a": jnp.zeros(2)}
  state = opt.init(params)
  _, state = opt.update({"a": jnp.array([1.0, 2.0])}, state, params)
  updates, bad_state = opt.update({"a": jnp.array([jnp.nan, 2.0])}, state, params)
  assert float(jnp.abs(updates["a"]).max()) == 0.0
  assert int(bad_state.no_step_count) == 1 and int(bad_state.no_step_reason) == _core.NON_FINITE
  chex.assert_trees_all_equal(
      bad_state._replace(num_evals=state.num_evals, no_step_count=state.no_step_count,
                         no_step_reason=state.no_step_reason), state)


def test_naive_rate_follows_alg_1():
  """alpha_{t+1} = alpha_t + eta <grad L(w - alpha_t g), g>, w -= alpha_{t+1} g (float64)."""
  hess = np.diag([1.0, 2.0, 3.0])

  def loss_fn(w):
    return 0.5 * w @ (jnp.asarray(hess, jnp.float32) @ w)

  opt = optax_ls.tlr(variant="naive", eta=0.005, init_learning_rate=0.05)
  w = jnp.array([1.0, -1.0, 0.5])
  state = opt.init(w)
  w64, alpha = np.asarray(w, np.float64), 0.05
  update = jax.jit(lambda g, s, w, v: opt.update(g, s, w, value=v, value_fn=loss_fn))
  for _ in range(10):
    loss, g = jax.value_and_grad(loss_fn)(w)
    updates, state = update(g, state, w, loss)
    w = optax.apply_updates(w, updates)
    g64 = hess @ w64
    alpha += 0.005 * (hess @ (w64 - alpha * g64)) @ g64
    w64 = w64 - alpha * g64
    assert int(state.num_evals) == 1
    np.testing.assert_allclose(float(state.learning_rate), alpha, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(w), w64, rtol=1e-5, atol=1e-7)


def test_naive_nonfinite_trial_halves_the_rate_without_a_step():
  def loss_fn(w):
    return jnp.where(jnp.sum(w**2) > 1.0, jnp.nan, jnp.sum(w**2))

  opt = optax_ls.tlr(variant="naive", init_learning_rate=4.0)
  w = jnp.array([0.5, 0.0])
  state = opt.init(w)
  for rate in (2.0, 1.0):
    updates, state = opt.update(jax.grad(loss_fn)(w), state, w, value_fn=loss_fn)
    assert float(jnp.abs(updates).max()) == 0.0
    assert float(state.learning_rate) == rate
  updates, state = opt.update(jax.grad(loss_fn)(w), state, w, value_fn=loss_fn)
  assert float(jnp.abs(updates).max()) > 0.0  # w - 1 * g = -0.5: a finite trial


def test_per_layer_gives_different_rates_to_layers_of_different_curvature():
  """A flat and a sharp tensor: the flat one's rate grows, the sharp one's shrinks."""

  def loss_fn(w):
    return 0.5 * jnp.sum(w["flat"] ** 2) + 10.0 * jnp.sum(w["sharp"] ** 2)

  w = {"flat": jnp.ones(3), "sharp": jnp.ones(3)}
  opt = optax_ls.tlr(window=1, per_layer=True, init_learning_rate=0.08)
  state = opt.init(w)
  for _ in range(15):
    updates, state = opt.update(jax.grad(loss_fn)(w), state, w)
    w = optax.apply_updates(w, updates)
  rates = state.learning_rate
  assert float(rates["flat"]) > 0.08 * 1.25**10  # grew at almost every step
  assert float(rates["sharp"]) < 0.1  # held near the stability limit 2 / 20
  assert float(rates["flat"]) > 20 * float(rates["sharp"])


def test_per_layer_inside_nnx_optimizer_groups_kernel_and_bias():
  """per_layer='layer' with flax nnx: the kernel and bias of one Linear share a rate."""

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.hidden = nnx.Linear(4, 16, rngs=rngs)
      self.out = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, x):
      return self.out(jnp.tanh(self.hidden(x)))[:, 0]

  model = Net(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax_ls.tlr(window=2, per_layer="layer"), wrt=nnx.Param)
  x = jnp.linspace(-1.0, 1.0, 64).reshape(16, 4)
  y = jnp.sin(3.0 * x[:, 0])

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(20)]
  assert losses[-1] < 0.5 * losses[0]
  rates = optax.tree.get(optimizer.opt_state, "learning_rate")
  hidden = {float(r[...]) for r in jax.tree.leaves(rates["hidden"])}
  out = {float(r[...]) for r in jax.tree.leaves(rates["out"])}
  assert len(jax.tree.leaves(rates)) == 4  # one rate per tensor, shared within a layer
  assert len(hidden) == 1 and len(out) == 1 and min(hidden | out) > 0.0


def _digits_like_problem(n: int = 512, dim: int = 16, classes: int = 4, seed: int = 0):
  """Linearly separable-ish softmax regression data (a small, real-size problem)."""
  rng = np.random.default_rng(seed)
  teacher = rng.normal(size=(dim, classes))
  x = rng.normal(size=(n, dim)).astype(np.float32)
  y = np.argmax(x @ teacher + 0.5 * rng.normal(size=(n, classes)), axis=1)
  return jnp.asarray(x), jnp.asarray(y)


def _train_epochs(init_rates: tuple[float, ...], batch_size: int, epochs: int = 25):
  """Final full-batch loss and rate for each initial rate (one compilation for all)."""
  x, y = _digits_like_problem()
  n_batches = x.shape[0] // batch_size
  xb = x.reshape(n_batches, batch_size, -1)
  yb = y.reshape(n_batches, batch_size)

  def loss_fn(w, xs, ys):
    logits = jnp.tanh(xs @ w["w1"]) @ w["w2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, ys).mean()

  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  w0 = {"w1": jax.random.normal(k1, (16, 32)) / 4.0, "w2": jax.random.normal(k2, (32, 4)) / 6.0}
  # The initial rate is injected (a state entry), so every run shares one compilation.
  make = optax.inject_hyperparams(optax_ls.tlr)

  @jax.jit
  def train(init_rate):
    opt = make(n_batches_per_epoch=n_batches, init_learning_rate=init_rate)

    def step(carry, batch):
      w, state = carry
      updates, state = opt.update(jax.grad(loss_fn)(w, *batch), state, w)
      return (optax.apply_updates(w, updates), state), None

    def epoch(carry, _):
      return jax.lax.scan(step, carry, (xb, yb))[0], None

    (w, state), _ = jax.lax.scan(epoch, (w0, opt.init(w0)), None, length=epochs)
    return loss_fn(w, x, y), state.inner_state.learning_rate

  return [tuple(map(float, train(jnp.float32(a0)))) for a0 in init_rates]


def test_robust_to_initial_rate_and_batch_size():
  """The spirit of the paper's Fig. 1: alpha_0 = 1e-3..1e-1 and two batch sizes end alike."""
  initial = float(np.log(4.0))  # the loss of a uniform prediction over 4 classes
  all_losses = []
  for batch_size in (32, 64):
    results = _train_epochs((1e-3, 1e-2, 1e-1), batch_size)
    losses = [loss for loss, _ in results]
    rates = [rate for _, rate in results]
    assert max(losses) < 0.5 * initial, results
    # From a 100x spread of alpha_0 the rates end within a factor of 5.
    assert max(rates) < 5.0 * min(rates), results
    all_losses += losses
  assert max(all_losses) < 2.0 * min(all_losses), all_losses


# ---------------------------------------------------------------------------
# The common suite on the per-tensor mode, whose learning_rate is a tree.
# ---------------------------------------------------------------------------


def _assert_rates_positive(state) -> dict:
  rates = optax.tree.get(state, "learning_rate")
  leaves = jax.tree.leaves(rates)
  assert len(leaves) == len(jax.tree.leaves(init_mlp(0)))
  assert all(jnp.shape(r) == () and float(r) > 0.0 for r in leaves)
  return rates


def test_per_layer_state_exposes_a_tree_of_rates():
  _, state, _ = common._run(TLR_PER_LAYER.make(), init_mlp(0), regression_batch(0), steps=3)
  rates = _assert_rates_positive(state)
  assert set(rates) == set(init_mlp(0))
  assert int(optax.tree.get(state, "num_evals")) == 0


def test_window_of_one_call_under_jit_and_inject_hyperparams():
  """window=1 (no accumulator in the state) also under traced hyperparameters."""
  kwargs = {"window": 1, "max_learning_rate": 0.5}
  plain, _, _ = common._run(optax_ls.tlr(**kwargs), init_mlp(0), regression_batch(0), steps=5)
  injected = optax.inject_hyperparams(optax_ls.tlr)(**kwargs)
  p, state, losses = common._run(injected, init_mlp(0), regression_batch(0), steps=5)
  assert state.inner_state.accumulated is None
  chex.assert_trees_all_close(p, plain, rtol=1e-4, atol=1e-5)
  assert losses[-1] < losses[0]
