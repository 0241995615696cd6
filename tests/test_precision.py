"""One dtype rule: every search decision in ``optax_ls.compute_dtype`` of the parameters and loss.

With float64 parameters the losses, slopes, norms and fitted coefficients are float64, so
PAL's parabola through exact measurements lands on a quadratic's exact line minimum, and a
constant added to the loss (which moves no minimiser) changes no method's steps beyond
float64 rounding. In float32 the same offsets changed PAL's step by up to 83% (C = 1e6).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ls
from tests.method_registry import METHODS, Method
from tests.problems import init_mlp, regression_batch


def native_loss(params, batch):
  """The MLP loss of ``problems.mlp_loss``, computed in the parameters' dtype."""
  dtype = params["w1"].dtype
  x, y = batch["x"].astype(dtype), batch["y"].astype(dtype)
  h = jnp.tanh(x @ params["w1"] + params["b1"])
  return jnp.mean((h @ params["w2"] + params["b2"] - y) ** 2)


def _update_kwargs(method: Method, offset: float, batch):
  """The method's extra ``update`` arguments with ``offset`` added to what it evaluates."""
  if method.name == "pls":
    def per_example(params):
      return jax.vmap(lambda x, y: native_loss(params, {"x": x[None], "y": y[None]}))(
          batch["x"], batch["y"]) + offset
    return {"per_example_loss_fn": per_example}
  if method.update_kwargs is None:
    return {}
  kwargs = method.update_kwargs(native_loss, batch)
  if "metric_fn" in kwargs:  # a searched metric: the offset goes onto the metric
    metric = kwargs["metric_fn"]
    kwargs["metric_fn"] = lambda p: metric(p) + offset
  return kwargs


def _trajectory_runner(method: Method, steps: int = 8):
  """``offset -> (parameters, learning rates)`` of ``steps`` float64 updates on ``loss + offset``.

  One compilation for every offset (the offset is an argument of the jitted step).
  """
  opt = method.make()
  batch = jax.tree.map(lambda a: a.astype(jnp.float64), regression_batch(0))

  @jax.jit
  def step(params, state, offset):
    loss_fn = lambda p, b: native_loss(p, b) + offset  # noqa: E731
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, state = opt.update(grads, state, params, value=loss, grad=grads,
                                value_fn=lambda p: loss_fn(p, batch),
                                **_update_kwargs(method, offset, batch))
    return optax.apply_updates(params, updates), state

  def run(offset: float):
    params = init_mlp(0, dtype=jnp.float64)
    state = opt.init(params)
    path, rates = [], []
    for _ in range(steps):
      params, state = step(params, state, jnp.float64(offset))
      path.append(params)
      rates.append([float(r) for r in jax.tree.leaves(optax.tree.get(state, "learning_rate"))])
    return path, np.asarray(rates)

  return run


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_a_constant_loss_offset_changes_no_float64_step(method: Method):
  # The loss is about 0.5 here: C = 1e6 leaves 1e6 * 2.2e-16 ~ 2e-10 of absolute rounding
  # on every value, so differences of values (and the steps decided from them) agree to
  # about 1e-9 relative; float32 decisions moved steps by 1e-3 to 0.8 at these offsets.
  with jax.enable_x64(True):
    run = _trajectory_runner(method)
    base_path, base_rates = run(0.0)
    for offset in (1e3, 1e6):
      path, rates = run(offset)
      np.testing.assert_allclose(rates, base_rates, rtol=1e-6, atol=1e-12,
                                 err_msg=f"learning rates with offset {offset}")
      for k, (p, q) in enumerate(zip(path, base_path, strict=True)):
        for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q), strict=True):
          assert a.dtype == jnp.float64
          np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9,
                                     err_msg=f"parameters after update {k + 1}, offset {offset}")


def _pal_line_minimum_error(offset: float, seed: int) -> float:
  """PAL's relative distance from the exact line minimum of an 8-dimensional quadratic."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(8, 8))
  hessian = jnp.asarray(a @ a.T + 0.5 * np.eye(8))
  linear, w = jnp.asarray(rng.normal(size=8)), jnp.asarray(rng.normal(size=8))

  def f(v):
    return 0.5 * v @ hessian @ v + linear @ v + offset

  # alpha = 1 and beta = 0: the update goes to the minimum of the parabola through f(w),
  # the slope and f at the measuring point, which is the quadratic's exact line minimum.
  opt = optax_ls.pal(update_step_adaptation=1.0, direction_adaptation=0.0, max_step=1e6)
  g = jax.grad(f)(w)
  updates, _ = jax.jit(lambda g, w: opt.update(g, opt.init(w), w, value=f(w), value_fn=f))(g, w)
  exact = float(g @ g / (g @ hessian @ g))  # argmin_t f(w - t g)
  taken = float(-(updates @ g) / (g @ g))
  return abs(taken - exact) / exact


def test_pal_lands_on_a_float64_quadratics_exact_line_minimum():
  with jax.enable_x64(True):
    errors = [_pal_line_minimum_error(0.0, seed) for seed in range(5)]
    assert max(errors) < 1e-9, errors
    # With an offset of 1e4 the values carry 1e4 * 2.2e-16 of rounding, divided by mu^2.
    errors = [_pal_line_minimum_error(1e4, seed) for seed in range(5)]
    assert max(errors) < 1e-8, errors


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pal_takes_the_measuring_step_on_a_linear_loss_plus_a_constant(dtype):
  # No curvature: PAL's rule takes s = mu (0.1) along the unit direction. Without the
  # rounding-noise floor, the rounding of 10 + x.w fitted a curvature of noise and a step of
  # up to s_max (issue 22), in either precision.
  with jax.enable_x64(True):
    opt = optax_ls.pal()
    for seed in range(6):
      rng = np.random.default_rng(seed)
      n = int(rng.integers(2, 200))
      x = jnp.asarray(rng.normal(size=n), dtype)
      f = lambda w, x=x: x @ w + 10.0  # noqa: E731
      w = jnp.asarray(rng.normal(size=n), dtype)
      _, state = opt.update(jax.grad(f)(w), opt.init(w), w, value=f(w), value_fn=f)
      assert float(state.step) == pytest.approx(0.1, rel=1e-6), (seed, n)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "float64", "complex64"])
def test_compute_dtype_is_the_promoted_real_dtype(dtype):
  with jax.enable_x64(True):
    params = {"w": jnp.zeros(3, dtype), "n": jnp.zeros((), jnp.int32)}
    expected = {"float64": jnp.float64}.get(dtype, jnp.float32)
    assert optax_ls.compute_dtype(params) == expected
    assert optax_ls.compute_dtype(params, jnp.zeros((), jnp.float64)) == jnp.float64
