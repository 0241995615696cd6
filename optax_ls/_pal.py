"""PAL: the parabolic approximation line search.

Reference:
  Mutschler, Zell, "Parabolic Approximation Line Search for DNNs", NeurIPS
  2020; seed 002 (Mutschler, PhD thesis), Sec. 4.4, Alg. 8.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_ls import _core


class ScaleByPalState(NamedTuple):
  r"""State of :func:`scale_by_pal` and :func:`pal`.

  Attributes:
    learning_rate: the learning rate of the last update, ``step / ||d||``
      (float32; 0 when no step was made), the figure the paper plots for PAL.
    step: the step ``s`` along the unit direction ``d / ||d||`` of the last
      update (float32; 0 when no step was made).
    num_evals: how many times ``value_fn`` ran in the last update (int32): 1,
      or 2 when ``value`` was not passed.
    direction: the last line direction ``d`` (float32), kept for the
      direction adaptation ``d_t = -g_t + beta d_{t-1}``. ``pal`` stores its
      negation ``-d`` (it works on gradients); ``scale_by_pal`` stores ``d``.
      With ``direction_adaptation=0`` it is not needed and stays zero.
    no_step_count: how many updates in a row made no step (int32; 0 after a step).
    no_step_reason: why the last update made no step (int32; 0: it made one; see
      :func:`optax_ls.check_progress`): an invalid injected hyperparameter, a non-finite
      :math:`l_0`, :math:`l_\mu`, slope or direction, or a zero direction or one along
      which the loss does not descend (:math:`b \ge 0`).
  """

  learning_rate: jax.Array
  step: jax.Array
  num_evals: jax.Array
  direction: optax.Updates
  no_step_count: jax.Array
  no_step_reason: jax.Array


_CURVATURE_NOISE = 16.0
"""Multiples of the decision dtype's epsilon times the measured magnitudes below which a
fitted curvature is rounding noise: the rounding of l_0, l_mu and b*mu, and of losses summed
over a few hundred terms (measured: up to 18 for linear losses of 500 terms, 99% below 6)."""


def scale_by_pal(
    measuring_step: float = 0.1,
    update_step_adaptation: float = 1.0,
    direction_adaptation: float = 0.4,
    max_step: float = 10**0.5,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales a descent direction by the parabolic approximation line search (PAL).

  The incoming ``updates`` are a descent direction :math:`v_t` (``-g_t`` for SGD). PAL follows
  :math:`d_t = v_t + \beta d_{t-1}`, :math:`u = d_t / \|d_t\|`, and fits a parabola to the
  mini-batch loss along :math:`u` from :math:`l_0 = f_B(w)`, the slope
  :math:`b = \langle g_t, u\rangle` and :math:`l_\mu = f_B(w + \mu u)`:

  .. math::
    a = \frac{l_\mu - l_0 - b\mu}{\mu^2}, \qquad
    s = \begin{cases}
      -\alpha\, b / (2a) & a > 0,\ b < 0\\
      \mu & a \le 0,\ b < 0\\
      0 & \text{otherwise},
    \end{cases}

  and the update is :math:`\min(s, s_{\max})\, u`. See :doc:`/methods/pal` for the randomness
  ``value_fn`` must share with the gradient and the robustness rules. The measurements and
  the fit are computed in :func:`optax_ls.compute_dtype` (float64 for float64 parameters), and
  a curvature inside their rounding noise counts as :math:`a \le 0` (ours).

  Args:
    measuring_step: :math:`\mu > 0`, the distance of the second measurement along the unit
      direction, default 0.1 (the paper's; alternative 0.01).
    update_step_adaptation: :math:`\alpha > 0`, the factor on the parabola's minimum,
      default 1.0 (alternative 1.6).
    direction_adaptation: :math:`\beta \in [0, 1]`, default 0.4 (alternative 0).
    max_step: :math:`s_{\max} > 0`, the largest step along the unit direction, default
      :math:`10^{0.5} \approx 3.16`.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleByPalState`. Its
    ``update`` takes ``value_fn`` (required; ``value_fn(params, **kwargs)`` is the mini-batch
    loss), ``value`` (the loss at ``params``; one more call when omitted), ``grad`` (for the
    slope :math:`b`; defaults to ``-updates``) and the keyword arguments of ``value_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w):  # a convex quadratic: PAL steps to the line minimum
    ...   return jnp.sum(jnp.array([1.0, 3.0]) * (w - 1.0) ** 2)
    >>> opt = optax.chain(optax.scale(-1.0), optax_ls.scale_by_pal(direction_adaptation=0.0))
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> loss, g = jax.value_and_grad(loss_fn)(w)
    >>> updates, state = opt.update(g, state, w, value=loss, grad=g, value_fn=loss_fn)
    >>> w = optax.apply_updates(w, updates)
    >>> bool(loss_fn(w) < 0.5 * loss)
    True

  References:
    Mutschler, Zell, Parabolic Approximation Line Search for DNNs, NeurIPS
    2020, Alg. 1; Mutschler, Empirics-based Line Searches for Deep Learning,
    PhD thesis, Tübingen 2022, Sec. 4.4, Alg. 8.
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _pal_transformation("scale_by_pal", 1.0, **locals())


def pal(
    measuring_step: float = 0.1,
    update_step_adaptation: float = 1.0,
    direction_adaptation: float = 0.4,
    max_step: float = 10**0.5,
) -> optax.GradientTransformationExtraArgs:
  r"""SGD with the parabolic approximation line search (PAL), taking gradients.

  The line direction is :math:`d_t = -g_t + \beta d_{t-1}` (Eq. 4.3), :math:`u = d_t /
  \|d_t\|`. PAL fits a parabola to the mini-batch loss along :math:`u` from
  :math:`l_0 = f_B(w)`, the slope :math:`b = \langle g_t, u\rangle` and one more loss
  :math:`l_\mu = f_B(w + \mu u)` on the same batch,

  .. math::
    a = \frac{l_\mu - l_0 - b\mu}{\mu^2}, \qquad
    s = \begin{cases}
      -\alpha\, b / (2a) & a > 0,\ b < 0\\
      \mu & a \le 0,\ b < 0\\
      0 & \text{otherwise},
    \end{cases}

  and updates by :math:`\min(s, s_{\max})\, u` (Alg. 8): two forward passes and one backward
  pass per step. See :doc:`/methods/pal` for the cases, the randomness ``value_fn`` must share
  with the gradient and the robustness rules; the defaults are the paper's.

  Args:
    measuring_step: :math:`\mu > 0`, the distance of the second measurement along the unit
      direction, default 0.1 (alternative 0.01).
    update_step_adaptation: :math:`\alpha > 0`, the factor on the parabola's minimum,
      default 1.0 (alternative 1.6).
    direction_adaptation: :math:`\beta \in [0, 1]`, the weight of the previous direction,
      default 0.4 (alternative 0, plain SGD directions).
    max_step: :math:`s_{\max} > 0`, the largest step along the unit direction, default
      :math:`10^{0.5} \approx 3.16`.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleByPalState`, taking
    the gradients as ``updates``. Its ``update`` takes ``value_fn`` (required), ``value`` (one
    more ``value_fn`` call when omitted), ``grad`` (for the slope :math:`b`, when ``updates``
    were transformed before; defaults to ``updates``) and the keyword arguments of
    ``value_fn`` (e.g. the dropout key of the gradient's pass).

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w, x, y):
    ...   return jnp.mean((x @ w - y) ** 2)
    >>> x = jnp.array([[1.0, 2.0], [3.0, 1.0], [0.5, -1.0]])
    >>> y = jnp.array([1.0, 2.0, 0.0])
    >>> opt = optax_ls.pal()
    >>> @jax.jit
    ... def step(w, state):
    ...   loss, g = jax.value_and_grad(loss_fn)(w, x, y)
    ...   updates, state = opt.update(g, state, w, value=loss, value_fn=loss_fn, x=x, y=y)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> for _ in range(10):
    ...   w, state = step(w, state)
    >>> bool(loss_fn(w, x, y) < 0.05)
    True

  References:
    Mutschler, Zell, Parabolic Approximation Line Search for DNNs, NeurIPS
    2020, Alg. 1; Mutschler, Empirics-based Line Searches for Deep Learning,
    PhD thesis, Tübingen 2022, Sec. 4.4, Alg. 8 and Eq. 4.3.
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _pal_transformation("pal", -1.0, **locals())


def _pal_transformation(
    method: str,
    sign: float,
    *,
    measuring_step: Any,
    update_step_adaptation: Any,
    direction_adaptation: Any,
    max_step: Any,
) -> optax.GradientTransformationExtraArgs:
  """PAL along ``sign * updates``: ``scale_by_pal`` (+1) and ``pal`` (-1).

  With ``sign = -1`` the incoming updates are gradients and the state holds
  ``-d``: the adapted direction is then ``sign * (g + beta * state.direction)``.
  """
  check = _core.check
  check("measuring_step", measuring_step, lambda v: v > 0.0, "positive")
  check("update_step_adaptation", update_step_adaptation, lambda v: v > 0.0, "positive")
  check("direction_adaptation", direction_adaptation, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
  check("max_step", max_step, lambda v: v > 0.0, "positive")

  def init_fn(params: optax.Params) -> ScaleByPalState:
    return ScaleByPalState(
        learning_rate=jnp.zeros((), jnp.float32),
        step=jnp.zeros((), jnp.float32),
        num_evals=jnp.zeros((), jnp.int32),
        direction=jax.tree.map(lambda p: jnp.zeros(p.shape, _core.buffer_dtype(p)), params),
        no_step_count=jnp.zeros((), jnp.int32),
        no_step_reason=jnp.zeros((), jnp.int32),
    )

  def update_fn(
      updates: optax.Updates,
      state: ScaleByPalState,
      params: optax.Params | None = None,
      *,
      value_fn: Callable[..., Any] | None = None,
      value: Any = None,
      grad: optax.Updates | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, ScaleByPalState]:
    value_fn = _core.require_value_fn(value_fn, method)
    _core.require_params(params, method, "PAL measures the loss along a line")
    objective = _core.bind_value_fn(value_fn, extra_args)
    num_evals = jnp.zeros((), jnp.int32)
    if value is None:
      value = objective(params)
      num_evals += 1
    dtype = _core.compute_dtype(params)  # the decisions' dtype (float64 for float64 params)
    l0 = _core.as_scalar(value, "`value`", dtype)

    # The stored direction (d for sign=+1, -d for sign=-1) and the line
    # direction d = sign * stored.
    # With beta = 0 known at construction the buffer is neither read nor
    # written (it stays zero): two parameter-sized passes less per step.
    no_adaptation = _core.concrete(direction_adaptation) == 0.0
    # An injected hyperparameter out of its range (only known at run time): no step, and the
    # direction buffer keeps the last valid direction.
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    valid = (f32(measuring_step) > 0) & (f32(update_step_adaptation) > 0) & (f32(max_step) > 0)
    valid &= (f32(direction_adaptation) >= 0) & (f32(direction_adaptation) <= 1)
    if no_adaptation:
      stored = jax.tree.map(lambda u: u.astype(_core.buffer_dtype(u)), updates)
    else:
      # The new direction is written once, into the buffer: an entry that is not finite
      # (or a non-finite loss, or an invalid hyperparameter) keeps the buffer's entry,
      # decided entry by entry from what is known before any reduction, so that the
      # buffer needs no second pass (a non-finite entry of the updates also makes the
      # slope below non-finite: no step is made along the mixed direction).
      keep_new = valid & jnp.isfinite(l0)

      def adapt(u: jax.Array, p: jax.Array) -> jax.Array:
        new = u.astype(p.dtype) + direction_adaptation * p
        return jnp.where(keep_new & jnp.isfinite(new), new, p)

      stored = jax.tree.map(adapt, updates, state.direction)
    own_grad = grad is None or (sign < 0 and grad is updates)
    if own_grad and not no_adaptation:
      # ||d||^2 and <updates, d> in one pass over both (a variadic reduction).
      squared_norm, cross = _core.real_vdots(stored, [stored, updates])
    else:
      squared_norm = _core.real_vdot(stored, stored)
    norm = jnp.sqrt(squared_norm)
    # The slope b = <g, d/||d||>. Without `grad`, g = -updates for
    # scale_by_pal (d = stored) and g = updates for pal (d = -stored): both give
    # <g, d> = -<updates, stored>, which is -||d||^2 when beta = 0 (one pass
    # over the parameters less).
    if own_grad:
      dot = -squared_norm if no_adaptation else -cross
    else:
      dot = sign * _core.real_vdot(grad, stored)
      if not no_adaptation:  # the updates' finiteness, which `stored` no longer shows
        dot += 0.0 * optax.tree.sum(updates)
    finite = jnp.isfinite(l0) & jnp.isfinite(dot) & jnp.isfinite(norm)
    healthy = finite & (norm > 0)
    inv_norm = jnp.where(healthy, 1.0 / jnp.where(norm > 0, norm, 1.0), 0.0)
    b = dot * inv_norm
    mu = jnp.asarray(measuring_step, l0.dtype)

    # The second measurement, made at every update: putting it under a
    # lax.cond (to skip it when s = 0 anyway) costs more than it saves on
    # XLA:CPU (about 6% of a step with beta > 0, measured): the direction then
    # has to be written out before the branch instead of fused into the trial
    # point. An unhealthy direction gives a trial point at params (or NaN),
    # whose value is masked below.
    l_mu = _core.as_scalar(
        objective(_core.add_step(params, sign * mu * inv_norm, stored)), "`value_fn(...)`",
        l0.dtype)
    measured = healthy & (b < 0) & valid
    num_evals += 1
    a = (l_mu - l0 - b * mu) / mu**2
    # A curvature inside the rounding noise of the three measurements is none (a <= 0): its
    # parabola's minimum would be an artefact of rounding (ours; see docs/methods/pal.rst).
    noise = _CURVATURE_NOISE * jnp.finfo(a.dtype).eps * (
        jnp.abs(l0) + jnp.abs(l_mu) + jnp.abs(b * mu)) / mu**2
    curved = a > noise
    s = jnp.where(curved, -update_step_adaptation * b / (2.0 * jnp.where(curved, a, 1.0)), mu)
    ok = measured & jnp.isfinite(a) & jnp.isfinite(s)
    s = jnp.where(ok, jnp.minimum(s, max_step), 0.0)
    learning_rate = s * inv_norm

    new_updates = _core.masked_scale(ok, sign * learning_rate, stored, updates)
    no_step_count, no_step_reason = _core.no_step(
        state.no_step_count, s > 0, invalid=~valid, non_finite=~finite | (measured & ~ok),
        not_descent=b >= 0)
    new_state = ScaleByPalState(
        learning_rate=learning_rate,
        step=s,
        num_evals=num_evals,
        direction=state.direction if no_adaptation else stored,
        no_step_count=no_step_count,
        no_step_reason=no_step_reason,
    )
    return new_updates, optax.tree.cast_like(new_state, other_tree=state)

  return optax.GradientTransformationExtraArgs(_core.unshare_init(init_fn), update_fn)
