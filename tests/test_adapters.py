"""The adapters to Flax (nnx, Linen's TrainState) and to Optax's wrappers (multi_transform,
lookahead)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import optax_ls

X = jnp.linspace(-1.0, 1.0, 64, dtype=jnp.float32).reshape(16, 4)
Y = jnp.sin(3.0 * X[:, 0]) + X[:, 1]


def _rates(opt_state) -> list[float]:
  rates = jax.tree.leaves(optax.tree.get(opt_state, "learning_rate"))
  return [float(jnp.asarray(r)) for r in rates]


# ---------------------------------------------------------------------------
# flax.nnx
# ---------------------------------------------------------------------------


class _NnxMlp(nnx.Module):
  def __init__(self, rngs: nnx.Rngs, dropout: float = 0.0):
    self.hidden = nnx.Linear(4, 8, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.out = nnx.Linear(8, 1, rngs=rngs)

  def __call__(self, x):
    return self.out(self.dropout(jnp.tanh(self.hidden(x))))[:, 0]


def _snapshot(model) -> list[np.ndarray]:
  """Copies of every array of the model's state (random keys as their key data)."""

  def copy(x):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    return np.array(x)

  return [copy(x) for x in jax.tree.leaves(nnx.as_pure(nnx.state(model)))]


def _nnx_loss(model, x, y):
  return jnp.mean((model(x) - y) ** 2)


def test_nnx_optimizer_trains_with_sls():
  model = _NnxMlp(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax_ls.sls(n_batches_per_epoch=1), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(_nnx_loss)(model, x, y)
    value_fn = optax_ls.nnx_value_fn(model, _nnx_loss, x, y)
    at_params = value_fn(nnx.as_pure(nnx.state(model, nnx.Param)))
    optimizer.update(model, grads, value=loss, grad=grads, value_fn=value_fn)
    return loss, at_params

  losses = []
  for _ in range(8):
    loss, at_params = train_step(model, optimizer, X, Y)
    np.testing.assert_allclose(at_params, loss, rtol=1e-6)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0]
  assert all(b <= a for a, b in zip(losses, losses[1:], strict=False))  # Armijo on one batch
  rates = _rates(optimizer.opt_state)
  assert rates and all(r > 0 for r in rates)
  assert int(optimizer.step[...]) == 8


def test_nnx_optimizer_with_dropout_under_jit():
  # A hand-written `nnx.merge(graphdef, params, rest)` shares the model's RngCount, and the
  # search's trials then fail with "Cannot mutate RngCount from a different trace level".
  model = _NnxMlp(nnx.Rngs(0, dropout=1), dropout=0.2)
  optimizer = nnx.Optimizer(model, optax_ls.sls(n_batches_per_epoch=1), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    value_fn = optax_ls.nnx_value_fn(model, _nnx_loss, X, Y)  # before the gradient call
    loss, grads = nnx.value_and_grad(_nnx_loss)(model, X, Y)
    optimizer.update(model, grads, value=loss, grad=grads, value_fn=value_fn)
    return loss, optax.tree.get(optimizer.opt_state, "num_evals")

  evals = [int(train_step(model, optimizer)[1][...]) for _ in range(4)]
  assert sum(evals) > 4  # the search made trials, with dropout, ...
  assert int(model.dropout.rngs.count[...]) == 4  # ... which left the model's stream alone


def test_nnx_value_fn_keeps_the_model_and_its_dropout_masks():
  model = _NnxMlp(nnx.Rngs(0, dropout=1), dropout=0.5)
  params = nnx.as_pure(nnx.state(model, nnx.Param))
  before = _snapshot(model)
  value_fn = optax_ls.nnx_value_fn(model, _nnx_loss, X, Y)
  first, second = float(value_fn(params)), float(value_fn(params))
  # Each call starts from the state of the model when value_fn was built: the same mask.
  assert first == second
  # The user's model (its parameters and its random-number counters) is unchanged ...
  for a, b in zip(before, _snapshot(model), strict=True):
    np.testing.assert_array_equal(a, b)
  # ... so value_fn built before the gradient call evaluates the function the gradient is of,
  loss, _ = nnx.value_and_grad(_nnx_loss)(model, X, Y)
  assert float(loss) == first
  # while the loss call advanced the dropout stream: a later value_fn draws another mask.
  assert float(optax_ls.nnx_value_fn(model, _nnx_loss, X, Y)(params)) != first
  # A trial point is the model with other parameters.
  shifted = jax.tree.map(lambda p: p + 0.1, params)
  assert float(value_fn(shifted)) != first


def test_nnx_value_fn_errors():
  with pytest.raises(TypeError, match="`model` must be a flax.nnx Module"):
    optax_ls.nnx_value_fn({"w": jnp.zeros(2)}, _nnx_loss)
  with pytest.raises(TypeError, match="`loss_fn` must be callable"):
    optax_ls.nnx_value_fn(_NnxMlp(nnx.Rngs(0)), None)


# ---------------------------------------------------------------------------
# Linen TrainState
# ---------------------------------------------------------------------------


class _LinenMlp(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(jnp.tanh(nn.Dense(8)(x)))[:, 0]


def _linen_state(tx) -> train_state.TrainState:
  model = _LinenMlp()
  params = model.init(jax.random.key(0), X)["params"]
  return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


def _linen_loss(params, apply_fn, x, y):
  return jnp.mean((apply_fn({"params": params}, x) - y) ** 2)


def test_train_state_apply_gradients_trains_with_sls():
  state = _linen_state(optax_ls.sls(n_batches_per_epoch=1))

  @jax.jit
  def step(state, x, y):
    value_fn = lambda p: _linen_loss(p, state.apply_fn, x, y)  # noqa: E731
    loss, grads = jax.value_and_grad(value_fn)(state.params)
    return optax_ls.apply_gradients(state, grads, value=loss, value_fn=value_fn), loss

  @jax.jit
  def by_hand(state, x, y):
    value_fn = lambda p: _linen_loss(p, state.apply_fn, x, y)  # noqa: E731
    loss, grads = jax.value_and_grad(value_fn)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params, value=loss,
                                         grad=grads, value_fn=value_fn)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state)

  losses, reference = [], state
  for _ in range(8):
    state, loss = step(state, X, Y)
    reference = by_hand(reference, X, Y)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0]
  assert int(state.step) == 8
  assert all(r > 0 for r in _rates(state.opt_state))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               (state.params, state.opt_state), (reference.params, reference.opt_state))


def test_apply_gradients_with_a_plain_optax_tx_matches_flax():
  state = _linen_state(optax.sgd(0.1, momentum=0.9))
  grads = jax.grad(_linen_loss)(state.params, state.apply_fn, X, Y)
  ours, flax_ = optax_ls.apply_gradients(state, grads), state.apply_gradients(grads=grads)
  assert int(ours.step) == int(flax_.step) == 1
  jax.tree.map(np.testing.assert_array_equal, (ours.params, ours.opt_state),
               (flax_.params, flax_.opt_state))


def test_apply_gradients_overwrite_with_gradient_collection():
  owg = train_state.OVERWRITE_WITH_GRADIENT
  params = {"params": {"w": jnp.zeros(3)}, owg: {"scale": jnp.ones(())}}
  state = train_state.TrainState.create(apply_fn=None, params=params,
                                        tx=optax_ls.sls(n_batches_per_epoch=1))
  seen = []

  def value_fn(p):
    seen.append(set(p))
    return jnp.sum((p["params"]["w"] * p[owg]["scale"] - 1.0) ** 2)

  loss, grads = jax.value_and_grad(value_fn)(params)
  new = optax_ls.apply_gradients(state, grads, value=loss, value_fn=value_fn)
  assert seen and all(keys == {"params", owg} for keys in seen)
  np.testing.assert_array_equal(new.params[owg]["scale"], grads[owg]["scale"])
  assert float(value_fn({**new.params, owg: params[owg]})) < float(loss)


def test_apply_gradients_rejects_other_states():
  with pytest.raises(TypeError, match="must be a flax.training.train_state.TrainState"):
    optax_ls.apply_gradients({"params": jnp.zeros(2)}, jnp.zeros(2))


# ---------------------------------------------------------------------------
# optax.multi_transform
# ---------------------------------------------------------------------------


def _two_layer_params():
  k1, k2 = jax.random.split(jax.random.key(1))
  return {"hidden": {"w": 0.5 * jax.random.normal(k1, (4, 8)), "b": jnp.zeros(8)},
          "out": {"w": 0.5 * jax.random.normal(k2, (8,)), "b": jnp.zeros(())}}


def _two_layer_loss(p):  # indexes both layers: a masked tree would fail here
  h = jnp.tanh(X @ p["hidden"]["w"] + p["hidden"]["b"])
  return jnp.mean((h @ p["out"]["w"] + p["out"]["b"] - Y) ** 2)


LABELS = {"hidden": {"w": "search", "b": "search"}, "out": "other"}  # a prefix of the params


def _run(opt, params, steps, value_fn=_two_layer_loss, **extra):
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(_two_layer_loss)(params)
    updates, state = opt.update(grads, state, params, value=loss, grad=grads,
                                value_fn=value_fn, **extra)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for _ in range(steps):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  return params, state, losses


def _sub_problem(opt, params, steps, with_grad=False):
  """``opt`` on the hidden layer alone, the output layer held at ``params['out']``."""

  def sub_loss(hidden):
    return _two_layer_loss({"hidden": hidden, "out": params["out"]})

  @jax.jit
  def step(hidden, state):
    loss, g = jax.value_and_grad(sub_loss)(hidden)
    extra = {"grad": g} if with_grad else {}
    updates, state = opt.update(g, state, hidden, value=loss, value_fn=sub_loss, **extra)
    return optax.apply_updates(hidden, updates), state

  hidden, state = params["hidden"], opt.init(params["hidden"])
  for _ in range(steps):
    hidden, state = step(hidden, state)
  return hidden, state


def test_multi_transform_searches_one_layer_and_freezes_the_other():
  params = _two_layer_params()
  seen = []

  def value_fn(p):
    seen.append(jax.tree.structure(p))
    return _two_layer_loss(p)

  opt = optax_ls.multi_transform(
      {"search": optax_ls.sls(n_batches_per_epoch=1), "other": optax.set_to_zero()}, LABELS)
  new, state, losses = _run(opt, params, 6, value_fn=value_fn)
  assert seen and all(s == jax.tree.structure(params) for s in seen)  # full trees, no MaskedNode
  jax.tree.map(np.testing.assert_array_equal, new["out"], params["out"])  # bit for bit
  assert losses[-1] < 0.7 * losses[0]
  assert isinstance(state, optax.MultiTransformState)
  assert all(r > 0 for r in _rates(state))

  # The same as SLS on the hidden layer alone, the output layer held fixed.
  hidden, _ = _sub_problem(optax_ls.sls(n_batches_per_epoch=1), params, 6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               new["hidden"], hidden)


def test_multi_transform_search_on_one_part_adam_on_the_other():
  params = _two_layer_params()
  opt = optax_ls.multi_transform(
      {"search": optax_ls.sls(n_batches_per_epoch=1), "other": optax.adam(1e-2)}, LABELS)
  def value_fn(p, *, targets):  # takes a keyword argument of `update`
    return _two_layer_loss(p) + 0.0 * jnp.sum(targets)

  new, state, losses = _run(opt, params, 6, value_fn=value_fn, targets=Y)
  assert losses[-1] < 0.7 * losses[0]
  assert all(r > 0 for r in _rates(state))
  assert not np.allclose(new["out"]["w"], params["out"]["w"])
  # Where no extra argument matters, the result is optax's own multi_transform.
  both = {"search": optax.sgd(0.1), "other": optax.adam(1e-2)}
  ours, _, _ = _run(optax_ls.multi_transform(both, LABELS), params, 3)
  theirs, _, _ = _run(optax.multi_transform(both, LABELS), params, 3)
  jax.tree.map(np.testing.assert_array_equal, ours, theirs)


def test_multi_transform_masks_the_grad_extra_arg():
  # PAL reads `grad` for its slope: it must get the group's part of the gradient.
  params = _two_layer_params()
  opt = optax_ls.multi_transform({"search": optax_ls.pal(), "other": optax.set_to_zero()},
                                 LABELS)
  new, _, losses = _run(opt, params, 4)
  hidden, _ = _sub_problem(optax_ls.pal(), params, 4, with_grad=True)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               new["hidden"], hidden)
  assert losses[-1] < losses[0]


@pytest.mark.parametrize("mask_compatible_extra_args", [False, True])
def test_multi_transform_extra_args_each_group_sees(mask_compatible_extra_args):
  seen = []

  def record(updates, state, params=None, **extra_args):
    seen.append(extra_args)
    return updates, state

  recorder = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), record)
  opt = optax_ls.multi_transform({"a": recorder, "b": optax.set_to_zero()},
                                 {"x": "a", "y": "b"},
                                 mask_compatible_extra_args=mask_compatible_extra_args)
  params = {"x": jnp.asarray(1.0), "y": jnp.asarray(2.0)}
  grads = {"x": jnp.asarray(3.0), "y": jnp.asarray(4.0)}
  tags = {"x": "tag_x", "y": "tag_y"}
  opt.update(grads, opt.init(params), params, grad=grads, tags=tags, other=7,
             value_fn=lambda p, *, other: p["x"] * p["y"] + other)
  (extra,) = seen
  assert extra["grad"] == {"x": grads["x"], "y": optax.MaskedNode()}
  assert extra["tags"] == ({"x": "tag_x", "y": optax.MaskedNode()} if mask_compatible_extra_args
                           else tags)
  assert extra["other"] == 7
  # value_fn takes the group's tree; the rest comes from `params`, `other` from `update`.
  assert float(extra["value_fn"]({"x": jnp.asarray(5.0), "y": optax.MaskedNode()})) == 17.0


def test_multi_transform_errors():
  params = _two_layer_params()
  grads = jax.tree.map(jnp.ones_like, params)
  unknown = r"labels \['other'\] have no transformation; `transforms` has the keys \['search'\]"
  with pytest.raises(ValueError, match=unknown):
    optax_ls.multi_transform({"search": optax.sgd(1.0)}, LABELS).init(params)
  with pytest.raises(ValueError, match="`param_labels` must have the structure"):
    optax_ls.multi_transform({"a": optax.sgd(1.0)}, {"hidden": "a", "other": "a"}).init(params)
  with pytest.raises(TypeError, match="non-empty mapping"):
    optax_ls.multi_transform({}, LABELS)
  opt = optax_ls.multi_transform(
      {"search": optax_ls.sls(n_batches_per_epoch=1), "other": optax.sgd(0.1)}, LABELS)
  with pytest.raises(TypeError, match="needs the keyword argument `value_fn`"):
    opt.update(grads, opt.init(params), params)
  with pytest.raises(TypeError, match="`value_fn` must be callable"):
    opt.update(grads, opt.init(params), params, value_fn=1.0)


# ---------------------------------------------------------------------------
# optax.lookahead
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reset_state", [False, True])
def test_lookahead_matches_optax_without_extra_args(reset_state):
  w0 = jnp.asarray([1.0, -2.0, 0.5])
  loss_fn = lambda w: jnp.sum(w**4) + jnp.sum(w)  # noqa: E731
  results = []
  for make in (optax_ls.lookahead, optax.lookahead):
    opt = make(optax.sgd(0.05, momentum=0.9), sync_period=3, slow_step_size=0.5,
               reset_state=reset_state)
    params = optax.LookaheadParams.init_synced(w0)
    state = opt.init(params)

    @jax.jit
    def step(params, state, opt=opt):
      updates, state = opt.update(jax.grad(loss_fn)(params.fast), state, params)
      return optax.apply_updates(params, updates), state

    for _ in range(10):
      params, state = step(params, state)
    results.append((params, state))
  (ours, our_state), (theirs, their_state) = results
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
               ours, theirs)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
               our_state, their_state)
  assert int(our_state.steps_since_sync) == 10 % 3


@pytest.mark.parametrize("reset_state", [False, True])
def test_lookahead_trains_with_sls(reset_state):
  params = optax.LookaheadParams.init_synced(_two_layer_params())
  opt = optax_ls.lookahead(optax_ls.sls(n_batches_per_epoch=1), sync_period=2,
                           slow_step_size=0.5, reset_state=reset_state)
  state = opt.init(params)
  dtypes = jax.tree.map(lambda x: jnp.asarray(x).dtype, state)

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(_two_layer_loss)(params.fast)
    updates, state = opt.update(grads, state, params, value=loss, value_fn=_two_layer_loss)
    return optax.apply_updates(params, updates), state

  start = float(_two_layer_loss(params.slow))
  for i in range(6):
    params, state = step(params, state)
    if i % 2 == 1:  # just synchronized: the fast weights restart from the slow ones
      jax.tree.map(lambda f, s: np.testing.assert_allclose(f, s, rtol=1e-6, atol=1e-7),
                   params.fast, params.slow)
  assert float(_two_layer_loss(params.slow)) < 0.7 * start
  assert all(r > 0 for r in _rates(state))
  assert jax.tree.map(lambda x: jnp.asarray(x).dtype, state) == dtypes


def test_lookahead_errors():
  with pytest.raises(ValueError, match="`sync_period` must be a positive integer"):
    optax_ls.lookahead(optax.sgd(0.1), 0, 0.5)
  with pytest.raises(ValueError, match="`sync_period` must be a positive integer"):
    optax_ls.lookahead(optax.sgd(0.1), 1.5, 0.5)
  with pytest.raises(ValueError, match="`slow_step_size` must be in \\[0, 1\\]"):
    optax_ls.lookahead(optax.sgd(0.1), 2, 1.5)
  opt = optax_ls.lookahead(optax.sgd(0.1), 2, 0.5)
  w = jnp.zeros(2)
  with pytest.raises(TypeError, match="optax.LookaheadParams"):
    opt.update(w, opt.init(w), w)
