"""PAL: Alg. 8 of the thesis, checked against independent float64 computations."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optax_ls

DIM = 5


def _spd(seed: int, cond: float) -> np.ndarray:
  """A random symmetric positive definite matrix with condition number ``cond``."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
  return (q * np.geomspace(1.0, cond, DIM)) @ q.T


def _quadratic(h: np.ndarray, center: np.ndarray):
  h32, c32 = jnp.asarray(h, jnp.float32), jnp.asarray(center, jnp.float32)

  def loss_fn(w):
    r = w - c32
    return 0.5 * r @ h32 @ r

  return loss_fn


def _pal_step(opt, loss_fn, w, state, **kwargs):
  loss, g = jax.value_and_grad(loss_fn)(w)
  updates, state = opt.update(g, state, w, value=loss, value_fn=loss_fn, **kwargs)
  return optax.apply_updates(w, updates), state, g


@settings(max_examples=25)
@given(
    seed=st.integers(0, 10_000),
    cond=st.floats(1.0, 20.0),
    mu=st.sampled_from([0.01, 0.1, 0.5]),
)
def test_convex_quadratic_step_lands_on_the_line_minimum(seed: int, cond: float, mu: float):
  rng = np.random.default_rng(seed + 1)
  h = _spd(seed, cond)
  center = rng.normal(size=DIM)
  loss_fn = _quadratic(h, center)
  opt = optax_ls.pal(measuring_step=mu, update_step_adaptation=1.0, direction_adaptation=0.0,
                     max_step=1e6)
  w0 = np.zeros(DIM)
  new_w, state, _ = _pal_step(opt, loss_fn, jnp.asarray(w0, jnp.float32), opt.init(jnp.zeros(DIM)))
  # Exact line search in float64: along u = -g/||g||, s* = ||g|| / (u^T H u).
  g = h @ (w0 - center)
  u = -g / np.linalg.norm(g)
  s_star = np.linalg.norm(g) / (u @ h @ u)
  # The fit divides l(mu) - l(0) - b mu = a mu^2 by mu^2: float32 rounding of
  # the losses (a few ulps of l(0)) is amplified by l(0) / (a mu^2).
  l0 = 0.5 * center @ h @ center
  rtol = 1e-3 + 8 * np.finfo(np.float32).eps * l0 / (0.5 * (u @ h @ u) * mu**2)
  np.testing.assert_allclose(float(state.step), s_star, rtol=rtol)
  np.testing.assert_allclose(new_w, w0 + float(state.step) * u, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(state.learning_rate), s_star / np.linalg.norm(g), rtol=rtol)
  # At the line minimum the new gradient is orthogonal to the line.
  g_new = h @ (np.asarray(new_w, np.float64) - center)
  assert abs(g_new @ u) <= 2 * rtol * np.linalg.norm(g)


def _np_pal(steps, batches, mu, alpha, beta, s_max):
  """Alg. 8 in float64 on the least-squares mini-batches: the updates it makes."""
  w, d_prev = np.zeros(DIM), np.zeros(DIM)
  out = []
  for x, y in batches[:steps]:
    loss = lambda v, x=x, y=y: np.mean((x @ v - y) ** 2)  # noqa: E731
    g = 2.0 * x.T @ (x @ w - y) / len(y)
    d = -g + beta * d_prev
    u = d / np.linalg.norm(d)
    l0, l_mu, b = loss(w), loss(w + mu * u), g @ u
    a = (l_mu - l0 - b * mu) / mu**2
    s = -alpha * b / (2 * a) if (a > 0 and b < 0) else (mu if b < 0 else 0.0)
    s = min(s, s_max)
    out.append((w.copy(), s))
    w, d_prev = w + s * u, d
  return out


def _ls_batches(n_batches: int = 8, size: int = 16):
  rng = np.random.default_rng(3)
  a = rng.normal(size=(n_batches * size, DIM))
  y = a @ rng.normal(size=DIM) + 0.3 * rng.normal(size=len(a))
  return [(a[i * size:(i + 1) * size], y[i * size:(i + 1) * size]) for i in range(n_batches)]


@pytest.mark.parametrize("beta", [0.0, 0.4])
@pytest.mark.parametrize("alpha", [1.0, 1.6])
def test_matches_algorithm_8_in_float64(alpha: float, beta: float):
  batches = _ls_batches()
  mu, s_max = 0.1, 10**0.5
  expected = _np_pal(len(batches), batches, mu, alpha, beta, s_max)
  opt = optax_ls.pal(measuring_step=mu, update_step_adaptation=alpha,
                     direction_adaptation=beta, max_step=s_max)

  def loss_fn(w, x, y):
    return jnp.mean((x @ w - y) ** 2)

  w = jnp.zeros(DIM)
  state = opt.init(w)
  step = jax.jit(lambda w, s, x, y: _pal_step(opt, lambda v: loss_fn(v, x, y), w, s))
  for (x, y), (w_np, s_np) in zip(batches, expected, strict=True):
    np.testing.assert_allclose(w, w_np, rtol=1e-4, atol=1e-5)
    w, state, _ = step(w, state, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    np.testing.assert_allclose(float(state.step), s_np, rtol=1e-3, atol=1e-6)
    assert int(state.num_evals) == 1  # two forwards and one backward per step


def test_concave_and_linear_lines_step_to_the_measuring_point():
  mu = 0.25
  opt = optax_ls.pal(measuring_step=mu, direction_adaptation=0.0)
  c = jnp.array([1.0, -2.0, 0.5, 0.0, 3.0])
  e = jnp.zeros(DIM).at[0].set(2.0)
  # a < 0, then a = 0 (exactly, in float32: every loss on the line is a small dyadic number).
  for loss_fn, w0 in ((lambda w: c @ w - jnp.sum(w**2), jnp.full(DIM, 0.1)),
                      (lambda w: e @ w, jnp.zeros(DIM))):
    new_w, state, g = _pal_step(opt, loss_fn, w0, opt.init(w0))
    assert float(state.step) == pytest.approx(mu)
    np.testing.assert_allclose(new_w - w0, -mu * g / jnp.linalg.norm(g), rtol=1e-5, atol=1e-7)
    assert float(loss_fn(new_w)) < float(loss_fn(w0))


def test_zero_slope_gives_no_step():
  opt = optax_ls.pal()
  loss_fn = lambda w: jnp.sum(w**2)  # noqa: E731
  w0 = jnp.zeros(DIM)  # the minimum: g = 0 and the direction is zero
  new_w, state, _ = _pal_step(opt, loss_fn, w0, opt.init(w0))
  chex.assert_trees_all_equal(new_w, w0)
  assert float(state.step) == 0.0 and float(state.learning_rate) == 0.0


def test_adapted_direction_that_is_not_a_descent_direction_gives_no_step():
  opt = optax_ls.pal(direction_adaptation=0.4)
  loss_fn = _quadratic(np.eye(DIM), np.ones(DIM))
  w0 = jnp.zeros(DIM)
  g = jax.grad(loss_fn)(w0)
  # With d_{t-1} = 10 g, d_t = -g + 0.4 * 10 g = 3 g points uphill (pal stores -d).
  state = opt.init(w0)._replace(direction=-10.0 * g)
  new_w, new_state, _ = _pal_step(opt, loss_fn, w0, state)
  chex.assert_trees_all_equal(new_w, w0)
  assert float(new_state.step) == 0.0 and float(new_state.learning_rate) == 0.0
  # Alg. 8 keeps d_t as the next d_{t-1}.
  np.testing.assert_allclose(new_state.direction, -3.0 * g, rtol=1e-6)


def test_step_is_capped_at_max_step():
  # The parabola's minimum (the center, at distance 3 * sqrt(5) = 6.7) lies beyond s_max = 2,
  # with a curvature (a = 0.5) far above float32 rounding. (A curvature of 1e-4 would be
  # one ulp of the loss here: rounding noise, which PAL counts as none.)
  loss_fn = _quadratic(np.eye(DIM), np.full(DIM, 3.0))
  opt = optax_ls.pal(direction_adaptation=0.0, max_step=2.0)
  w0 = jnp.zeros(DIM)
  new_w, state, _ = _pal_step(opt, loss_fn, w0, opt.init(w0))
  assert float(state.step) == pytest.approx(2.0)
  assert float(optax.tree.norm(new_w - w0)) == pytest.approx(2.0, rel=1e-5)


def test_both_evaluations_see_the_same_dropout_key():
  """The key is routed to value_fn: the line is the one the gradient came from."""
  h, center = _spd(0, 4.0), np.linspace(-1.0, 1.0, DIM)

  def loss_fn(w, key):  # a quadratic with a random dropout mask on the residual
    mask = jax.random.bernoulli(key, 0.5, (DIM,)) / 0.5
    r = mask * (w - jnp.asarray(center, jnp.float32))
    return 0.5 * r @ jnp.asarray(h, jnp.float32) @ r

  key = jax.random.key(7)
  opt = optax_ls.pal(direction_adaptation=0.0, max_step=1e6)
  w0 = jnp.zeros(DIM)
  loss, g = jax.value_and_grad(loss_fn)(w0, key)
  updates, state = jax.jit(
      lambda w, s, k: opt.update(g, s, w, value=loss, value_fn=loss_fn, key=k)
  )(w0, opt.init(w0), key)
  # The exact line minimum of the masked quadratic drawn with the same key.
  m = np.asarray(jax.random.bernoulli(key, 0.5, (DIM,)) / 0.5, np.float64)
  hm = m[:, None] * h * m[None, :]
  g64 = hm @ (0.0 - center)
  u = -g64 / np.linalg.norm(g64)
  np.testing.assert_allclose(float(state.step), np.linalg.norm(g64) / (u @ hm @ u), rtol=2e-3)
  np.testing.assert_allclose(updates, float(state.step) * u, rtol=2e-3, atol=1e-6)


def test_pal_equals_scale_by_pal_after_negation():
  batches = _ls_batches(6)
  chained = optax.chain(optax.scale(-1.0), optax_ls.scale_by_pal())
  direct = optax_ls.pal()

  def run(opt):
    w, state = jnp.zeros(DIM), opt.init(jnp.zeros(DIM))
    for x, y in batches:
      loss_fn = lambda v, x=x, y=y: jnp.mean((x @ v - y) ** 2)  # noqa: E731
      w, state, _ = _pal_step(opt, loss_fn, w, state)
    return w, optax.tree.get(state, "learning_rate")

  (w1, lr1), (w2, lr2) = run(chained), run(direct)
  chex.assert_trees_all_close(w1, w2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(lr1, lr2, rtol=1e-5)


def test_value_is_measured_when_omitted():
  loss_fn = _quadratic(_spd(1, 3.0), np.ones(DIM))
  opt = optax_ls.pal()
  w0 = jnp.zeros(DIM)
  g = jax.grad(loss_fn)(w0)
  with_value, s1 = opt.update(g, opt.init(w0), w0, value=loss_fn(w0), value_fn=loss_fn)
  without, s2 = opt.update(g, opt.init(w0), w0, value_fn=loss_fn)
  chex.assert_trees_all_close(with_value, without, rtol=1e-6)
  assert int(s1.num_evals) == 1 and int(s2.num_evals) == 2


@pytest.mark.parametrize("beta", [0.0, 0.4])
def test_passing_grad_gives_the_same_updates(beta: float):
  loss_fn = _quadratic(_spd(2, 5.0), np.linspace(0.0, 1.0, DIM))
  w0 = jnp.full(DIM, 0.3)
  g = jax.grad(loss_fn)(w0)
  for opt in (optax_ls.pal(direction_adaptation=beta),
              optax.chain(optax.scale(-1.0), optax_ls.scale_by_pal(direction_adaptation=beta))):
    # One update first, so that the direction buffer is not zero.
    _, state = opt.update(-g, opt.init(w0), w0, value=loss_fn(w0), value_fn=loss_fn)
    plain, _ = opt.update(g, state, w0, value=loss_fn(w0), value_fn=loss_fn)
    copy = jax.tree.map(jnp.array, g)  # equal values, another object
    for grad in (g, copy):
      given_grad, _ = opt.update(g, state, w0, value=loss_fn(w0), value_fn=loss_fn, grad=grad)
      chex.assert_trees_all_close(plain, given_grad, rtol=1e-6)
