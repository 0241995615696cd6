"""SGD-HD: hypergradient descent on the learning rate.

References:
  Baydin, Cornish, Martinez Rubio, Schmidt, Wood, "Online Learning Rate
  Adaptation with Hypergradient Descent", ICLR 2018.
  Mutschler, PhD thesis (seed 002), Sec. 2.8, Eq. 2.48-2.49.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_ls import _core


class ScaleByHypergradientState(NamedTuple):
  """State of :func:`scale_by_hypergradient`.

  Attributes:
    learning_rate: the rate :math:`\\alpha_t` applied in the last update
      (float32; negative values are possible without ``min_learning_rate``,
      as in the paper).
    num_evals: always 0: ``value_fn`` is never called (int32).
    previous: the direction of the last update, :math:`d_{t-1}` (float32,
      shaped like the parameters; zeros before the first update).
    no_step_count: how many updates in a row made no step (int32; 0 after a step).
      SGD-HD has no search: every update steps, unless its inputs are not finite or an
      injected hyperparameter is out of its range.
    no_step_reason: why the last update made no step (int32; 0: it made one; see
      :func:`optax_ls.check_progress`): an invalid injected hyperparameter, or a
      non-finite ``value``, direction or ``grad``.
  """

  learning_rate: jax.Array
  num_evals: jax.Array
  previous: optax.Updates
  no_step_count: jax.Array
  no_step_reason: jax.Array


def scale_by_hypergradient(
    init_learning_rate: float = 1e-3,
    beta: float = 1e-3,
    min_learning_rate: float | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales a descent direction by a rate trained by hypergradient descent.

  The incoming ``updates`` are a descent direction :math:`d_t` (``-g_t`` for SGD). The loss
  after the last update, a function of :math:`\alpha`, has the derivative
  :math:`\langle g_t, d_{t-1}\rangle` (Eq. 2.48); one gradient step on it gives

  .. math::
    \alpha_t = \alpha_{t-1} - \beta\,\langle g_t, d_{t-1}\rangle
             \;(= \alpha_{t-1} + \beta\,\langle g_t, g_{t-1}\rangle \text{ for SGD}),

  and the update is :math:`\alpha_t d_t` (:math:`d_{-1} = 0`). On a momentum direction
  (``optax.trace`` chained before) this is SGDN-HD. See :doc:`/methods/sgd_hd` for the
  unbounded rate and the robustness rules.

  Args:
    init_learning_rate: the initial rate :math:`\alpha_0`, positive, default 1e-3 (Baydin et
      al.'s).
    beta: the hyper learning rate :math:`\beta`, positive, default 1e-3 (Baydin et al.'s for
      SGD-HD).
    min_learning_rate: None (default: unbounded, as in the paper) or a floor
      :math:`\alpha_t \leftarrow \max(\alpha_t, \alpha_{\min})`.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a
    :class:`ScaleByHypergradientState`. Its ``update`` needs no keyword argument: ``grad``
    (the gradient :math:`g_t`) defaults to ``-updates``, ``value`` (optional) is only checked
    to be finite, and ``params``, ``value_fn`` and other keyword arguments are ignored.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w):
    ...   return jnp.sum((w - jnp.array([1.0, -2.0])) ** 2)
    >>> opt = optax.chain(optax.scale(-1.0), optax_ls.scale_by_hypergradient(beta=1e-2))
    >>> @jax.jit
    ... def step(w, state):
    ...   updates, state = opt.update(jax.grad(loss_fn)(w), state, w)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> for _ in range(100):
    ...   w, state = step(w, state)
    >>> bool(loss_fn(w) < 1e-3), float(optax.tree.get(state, "learning_rate")) > 1e-3
    (True, True)

  References:
    Baydin, Cornish, Martínez-Rubio, Schmidt, Wood, Online Learning Rate
    Adaptation with Hypergradient Descent, ICLR 2018, Sec. 2; Mutschler,
    Empirics-based Line Searches for Deep Learning, PhD thesis, Tübingen
    2022, Sec. 2.8, Eq. 2.48-2.49.
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _hd_transformation("scale_by_hypergradient", 1.0, **locals())


def sgd_hd(
    init_learning_rate: float = 1e-3,
    beta: float = 1e-3,
    min_learning_rate: float | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""SGD with hypergradient descent on the learning rate (SGD-HD), taking gradients.

  The loss after the last update, :math:`f(w_{t-1} - \alpha g_{t-1})`, has the derivative
  :math:`-\langle g_t, g_{t-1}\rangle` in :math:`\alpha` (Eq. 2.48); one gradient step on it
  with the hyper learning rate :math:`\beta` trains the rate, which then makes the SGD step:

  .. math::
    \alpha_t = \alpha_{t-1} + \beta\,\langle g_t, g_{t-1}\rangle, \qquad
    w_{t+1} = w_t - \alpha_t g_t

  (Eq. 2.49; :math:`g_{-1} = 0`). The rate is unbounded, as in the paper, unless
  ``min_learning_rate`` is given. See :doc:`/methods/sgd_hd` for the momentum variant and the
  robustness rules.

  Args:
    init_learning_rate: the initial rate :math:`\alpha_0`, positive, default 1e-3 (Baydin et
      al.'s).
    beta: the hyper learning rate :math:`\beta`, positive, default 1e-3 (Baydin et al.'s for
      SGD-HD).
    min_learning_rate: None (default: unbounded, as in the paper) or a floor
      :math:`\alpha_t \leftarrow \max(\alpha_t, \alpha_{\min})`.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a
    :class:`ScaleByHypergradientState`, taking the gradients as ``updates``. Its ``update``
    needs no keyword argument: ``grad`` (when ``updates`` were transformed before) defaults to
    ``updates``, ``value`` (optional) is only checked to be finite, and ``params``,
    ``value_fn`` and other keyword arguments are ignored.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w):
    ...   return jnp.sum((w - jnp.array([1.0, -2.0])) ** 2)
    >>> opt = optax_ls.sgd_hd(init_learning_rate=0.1, beta=1e-2, min_learning_rate=0.0)
    >>> @jax.jit
    ... def step(w, state):
    ...   updates, state = opt.update(jax.grad(loss_fn)(w), state, w)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> for _ in range(50):
    ...   w, state = step(w, state)
    >>> bool(loss_fn(w) < 1e-4)
    True

  References:
    Baydin, Cornish, Martínez-Rubio, Schmidt, Wood, Online Learning Rate
    Adaptation with Hypergradient Descent, ICLR 2018, Sec. 2; Mutschler,
    Empirics-based Line Searches for Deep Learning, PhD thesis, Tübingen
    2022, Sec. 2.8, Eq. 2.48-2.49.
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _hd_transformation("sgd_hd", -1.0, **locals())


def _hd_transformation(
    method: str, sign: float, *, init_learning_rate: Any, beta: Any, min_learning_rate: Any
) -> optax.GradientTransformationExtraArgs:
  """SGD-HD along ``d = sign * updates``; ``previous`` stores ``updates`` as given."""
  _core.check("beta", beta, lambda v: v > 0.0, "positive")
  _core.check("init_learning_rate", init_learning_rate, lambda v: v > 0.0, "positive")
  _core.check("min_learning_rate", min_learning_rate, lambda v: True, "a number", optional=True)
  lo, init = _core.concrete(min_learning_rate), _core.concrete(init_learning_rate)
  if lo is not None and init is not None and init < lo:
    raise ValueError(f"`min_learning_rate` must be at most init_learning_rate = {init}, got {lo}.")
  del method

  def init_fn(params: optax.Params) -> ScaleByHypergradientState:
    return ScaleByHypergradientState(
        learning_rate=jnp.array(init_learning_rate, jnp.float32),  # a copy
        num_evals=jnp.zeros((), jnp.int32),
        previous=jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), _core.buffer_dtype(x)), params),
        no_step_count=jnp.zeros((), jnp.int32),
        no_step_reason=jnp.zeros((), jnp.int32),
    )

  def update_fn(
      updates: optax.Updates,
      state: ScaleByHypergradientState,
      params: optax.Params | None = None,
      *,
      value_fn: Callable[..., Any] | None = None,
      value: Any = None,
      grad: optax.Updates | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, ScaleByHypergradientState]:
    del params, value_fn, extra_args
    # <g_t, d_{t-1}> with d = sign * u: -<u_t, u_{t-1}> without `grad`.
    if grad is None:
      slope = -_core.real_vdot(updates, state.previous)
    else:
      # <grad, d_{t-1}>, plus 0 times the sum of the new direction: NaN when u is not
      # finite, so the slope checks the direction as well (two reductions, no buffer: a
      # `0 * u` inside the first sum was written out as a parameter-sized array).
      slope = sign * sum(
          jnp.sum(g.astype(u_prev.dtype) * u_prev) + 0.0 * jnp.sum(u.astype(u_prev.dtype))
          for g, u_prev, u in zip(jax.tree.leaves(grad), jax.tree.leaves(state.previous),
                                  jax.tree.leaves(updates), strict=True))
    # The stored direction is finite, so a non-finite entry of u_t (or grad)
    # makes the slope non-finite (inf * 0 is NaN).
    ok = jnp.isfinite(slope)
    if value is not None:
      ok &= jnp.isfinite(_core.as_scalar(value, "`value`"))
    # An injected hyperparameter out of its range (only known at run time) makes a zero
    # update and keeps the rate, as a non-finite input does.
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    valid = (f32(beta) > 0) & (f32(init_learning_rate) > 0)
    if min_learning_rate is not None:
      valid &= f32(min_learning_rate) <= f32(init_learning_rate)
    ok &= valid
    rate = state.learning_rate - beta * slope
    if min_learning_rate is not None:
      rate = jnp.maximum(rate, min_learning_rate)
    rate = jnp.where(ok, rate, state.learning_rate)
    new_updates = jax.tree.map(
        lambda u: jnp.where(ok, (sign * rate) * u.astype(_core.buffer_dtype(u)),
                            0.0).astype(u.dtype),
        updates)
    previous = jax.tree.map(lambda u, old: jnp.where(ok, u.astype(old.dtype), old),
                            updates, state.previous)
    # No search: an update steps unless invalid or non-finite inputs skip it.
    no_step_count, no_step_reason = _core.no_step(state.no_step_count, ok, invalid=~valid,
                                                  non_finite=True)
    new_state = ScaleByHypergradientState(
        learning_rate=rate, num_evals=jnp.zeros((), jnp.int32), previous=previous,
        no_step_count=no_step_count, no_step_reason=no_step_reason)
    return new_updates, optax.tree.cast_like(new_state, other_tree=state)

  return optax.GradientTransformationExtraArgs(_core.unshare_init(init_fn), update_fn)
