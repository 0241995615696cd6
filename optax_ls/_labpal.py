"""LABPAL: the large-batch parabolic approximation line search (SGD and NSGD).

Reference:
  Mutschler, Laube, Zell, "Using a one dimensional parabolic model of the
  full-batch loss to estimate learning rates during training", NeurIPS 2021
  Optimization Workshop (arXiv:2108.13880); seed 002 (Mutschler, PhD thesis), Sec. 6.3.2, Alg. 9,
  and Sec. 6.4.3, Eq. 6.8. PyTorch code: github.com/cogsys-tuebingen/LABPAL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_ls import _core, _phased

_MEASURE, _TRAIN = 0, 1
_MODES = ("sgd", "nsgd")
# Eq. 6.8: the batch size and training-set size the defaults were tuned for.
_BATCH_ORI, _DATASET_ORI = 128.0, 40_000.0


class ScaleByLabpalState(NamedTuple):
  """State of :func:`scale_by_labpal` and :func:`labpal`.

  Attributes:
    clock: the phase machine (:class:`optax_ls._phased.PhaseClock`): ``phase``
      (0 = measuring, 1 = training), ``phase_calls`` (calls made in the current
      phase) and ``calls`` (calls made in total: batches consumed, the paper's
      step count ``t``, measuring calls included).
    group: the gradient accumulation of the batch-size schedule
      (:class:`optax_ls._phased.Group`): ``size`` = ``k`` calls per step,
      ``done`` = calls accumulated so far.
    learning_rate: the learning rate in use: the factor on the (mean,
      momentum) direction of a training update. SGD: ``step / ||d_line||``,
      fixed by each fit; NSGD: ``step / ||d||`` of the last training update
      (``step / ||d_line||`` right after a fit). Held through the measuring
      calls; 0 before the first fit. float32 (float64 for float64 params).
    step: the update step ``min(alpha * s_min, max_step_size)`` of the last
      successful fit (0 before the first): the distance an NSGD update moves.
    num_evals: how many times ``value_fn`` ran in the last call (int32): 2 in
      a measuring call that measures the losses of its batch (3 without
      ``value``), 0 otherwise (training calls, and the calls of a group that
      only accumulate the direction that fixes the line).
    measured: batches measured so far in the current approximation (int32).
    trained: updates made so far in the current training phase (int32).
    loss_sums: sums over the measured batches of ``l(0)``, ``l(s1) - l(0)``
      and ``l(s2) - l(0)`` along the line (shape ``(3,)``).
    line_norm: the norm of the (mean, momentum) direction that defines the
      current line.
    num_fits: successful parabola fits so far (int32).
    num_failed: approximations that failed so far (int32): a non-finite
      measurement or direction, or a parabola without a minimum ahead.
    direction: without momentum: the incoming directions accumulated over
      the current group (summed; the update of a group's last call is read
      from here), and once a line is fixed its mean direction;
      with momentum: the momentum buffer (also the line direction while
      measuring). ``labpal`` keeps gradients here (the direction is their
      negation).
    accumulator: with momentum and a batch-size schedule, the gradients
      accumulated over the current group; None otherwise.
    no_step_count: how many calls in a row that should have made a step made none (int32;
      0 after a step). The zero updates by design leave it (and ``no_step_reason``) as
      it was: the measuring calls, and the training calls that only accumulate their
      group's directions. Counted are the training calls whose direction is not finite
      or zero (or whose hyperparameters are invalid), and the measuring calls at which an
      approximation fails.
    no_step_reason: why the last counted call made no step (int32; 0: it made one; see
      :func:`optax_ls.check_progress`): an invalid injected hyperparameter, a non-finite
      direction or measured loss, a zero direction, or (``EXHAUSTED``) a fitted parabola
      without a minimum ahead.
  """

  clock: _phased.PhaseClock
  group: _phased.Group
  learning_rate: jax.Array
  step: jax.Array
  num_evals: jax.Array
  measured: jax.Array
  trained: jax.Array
  loss_sums: jax.Array
  line_norm: jax.Array
  num_fits: jax.Array
  num_failed: jax.Array
  direction: optax.Updates
  accumulator: optax.Updates | None
  no_step_count: jax.Array
  no_step_reason: jax.Array


def scale_by_labpal(
    mode: str = "nsgd",
    approx_batches: int = 10,
    n_sgd: int = 1000,
    alpha: float = 1.8,
    max_step_size: float = 1.0,
    measure_points: tuple[float, float] = (1e-4, 1e-2),
    momentum: float | None = None,
    t_max: int = 150_000,
    batch_schedule: Sequence[tuple[float, int]] | None = ((0.5, 2), (0.75, 4)),
    dataset_size: int | None = None,
    batch_size: int | None = None,
    reference_curvature: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales a descent direction by LABPAL, a parabolic fit to the large-batch loss.

  LABPAL (Alg. 9) alternates two phases; every ``update`` call consumes one mini-batch. In a
  measuring phase of ``approx_batches`` calls (zero updates) the incoming direction :math:`d`
  of the first call fixes the line :math:`u = d/\|d\|`, and the mean loss over the batches at
  :math:`s \in \{0, s_1, s_2\}` is fitted by a parabola :math:`a s^2 + b s + c`; its minimum
  :math:`s_{\min} = -b/(2a)` gives

  .. math::
    s_{\mathrm{upd}} = \min(\alpha\, s_{\min},\ s_{\max}),
    \qquad \lambda = s_{\mathrm{upd}} / \|d\|,

  which the next ``n_sgd`` calls reuse: ``mode="sgd"`` updates :math:`\lambda\, d_t`,
  ``mode="nsgd"`` updates :math:`s_{\mathrm{upd}}\, d_t/\|d_t\|` (Eq. 6.6). See
  :doc:`/methods/labpal` for the batch-size schedule, the noise adaptation, the momentum, the
  reference-code option and the robustness rules.

  Args:
    mode: ``"nsgd"`` (default: reuse the step along the unit direction; better in the paper)
      or ``"sgd"`` (reuse the learning rate).
    approx_batches: calls whose losses estimate the full-batch loss along the line
      (:math:`|B_a|/|B_i|`), default 10.
    n_sgd: updates between approximations, default 1000.
    alpha: update step adaptation :math:`\alpha > 0`, default 1.8.
    max_step_size: :math:`s_{\max} > 0`, the largest step, default 1.0.
    measure_points: :math:`(s_1, s_2)`, :math:`0 < s_1 < s_2`, the measuring steps besides 0,
      default (1e-4, 1e-2).
    momentum: :math:`\beta \in [0, 1)` of the direction, or None (default: no momentum).
    t_max: training length :math:`T` in calls, before the noise adaptation, default 150000.
    batch_schedule: ``((fraction, k), ...)``: from call ``floor(fraction * T) + 1`` on, an update
      spans :math:`k` calls; default ``((0.5, 2), (0.75, 4))``; None keeps :math:`k = 1`.
    dataset_size: :math:`|D|` for the noise adaptation (with ``batch_size``); default None,
      no adaptation.
    batch_size: :math:`|B|`, the per-call batch size (with ``dataset_size``), default None.
    reference_curvature: use the PyTorch reference code's fit, whose step lands near twice
      the vertex; default False (the paper's formula).

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleByLabpalState`. Its
    ``update`` takes ``value_fn`` (required on every call; only measuring calls run it),
    ``value`` (the loss at ``params``, :math:`l(0)`; one more call per measuring call when
    omitted), ``grad`` (accepted and unused) and the keyword arguments of ``value_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w):
    ...   return jnp.sum(jnp.array([1.0, 3.0]) * (w - 1.0) ** 2)
    >>> opt = optax.chain(optax.scale(-1.0), optax_ls.scale_by_labpal(
    ...     mode="sgd", approx_batches=2, n_sgd=5))
    >>> @jax.jit
    ... def step(w, state):
    ...   loss, g = jax.value_and_grad(loss_fn)(w)
    ...   updates, state = opt.update(g, state, w, value=loss, value_fn=loss_fn)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> phases = []  # the phase of the next call: 0 measure, 1 train
    >>> for _ in range(14):
    ...   w, state = step(w, state)
    ...   phases.append(int(optax.tree.get(state, "phase")))
    >>> phases
    [0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0]
    >>> bool(loss_fn(w) < 0.01 * loss_fn(jnp.zeros(2)))
    True

  References:
    Mutschler, Laube, Zell, Using a one dimensional parabolic model of the
    full-batch loss to estimate learning rates during training, NeurIPS 2021
    Optimization Workshop (arXiv:2108.13880); Mutschler, Empirics-based Line
    Searches for Deep Learning, PhD thesis, Tübingen 2022, Sec. 6.3.2
    (Alg. 9), Eq. 6.6 and Sec. 6.4.3 (Eq. 6.8).
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _labpal_transformation("scale_by_labpal", 1.0, **locals())


def labpal(
    mode: str = "nsgd",
    approx_batches: int = 10,
    n_sgd: int = 1000,
    alpha: float = 1.8,
    max_step_size: float = 1.0,
    measure_points: tuple[float, float] = (1e-4, 1e-2),
    momentum: float | None = None,
    t_max: int = 150_000,
    batch_schedule: Sequence[tuple[float, int]] | None = ((0.5, 2), (0.75, 4)),
    dataset_size: int | None = None,
    batch_size: int | None = None,
    reference_curvature: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""LABPAL&SGD (``mode="sgd"``) or LABPAL&NSGD (``mode="nsgd"``), taking gradients.

  In a measuring phase of ``approx_batches`` calls (zero updates) the line
  :math:`u = -g/\|g\|` is fixed by the gradient :math:`g` of the first call, and the mean loss
  over the batches at :math:`s \in \{0, s_1, s_2\}` is fitted by a parabola
  :math:`a s^2 + b s + c`; its minimum :math:`s_{\min} = -b/(2a)` gives

  .. math::
    s_{\mathrm{upd}} = \min(\alpha\, s_{\min},\ s_{\max}),
    \qquad \lambda = s_{\mathrm{upd}} / \|g\|,

  which the next ``n_sgd`` calls reuse: SGD updates :math:`-\lambda g_t`, NSGD updates
  :math:`-s_{\mathrm{upd}}\, g_t/\|g_t\|` (Alg. 9, Eq. 6.6). A batch-size schedule averages
  the gradients of :math:`k \in \{1, 2, 4\}` calls per update. See :doc:`/methods/labpal` for
  the phases, the schedule and the noise adaptation, the momentum, the reference-code option
  and the robustness rules; the defaults are the paper's.

  Args:
    mode: ``"nsgd"`` (default: reuse the step along the unit direction; better in the paper)
      or ``"sgd"`` (reuse the learning rate).
    approx_batches: calls whose losses estimate the full-batch loss along the line
      (:math:`|B_a|/|B_i|`), default 10.
    n_sgd: updates between approximations, default 1000.
    alpha: update step adaptation :math:`\alpha > 0`, default 1.8.
    max_step_size: :math:`s_{\max} > 0`, the largest step, default 1.0.
    measure_points: :math:`(s_1, s_2)`, :math:`0 < s_1 < s_2`, the measuring steps besides 0,
      default (1e-4, 1e-2).
    momentum: :math:`\beta \in [0, 1)` of the direction, or None (default: no momentum).
    t_max: training length :math:`T` in calls, before the noise adaptation, default 150000.
    batch_schedule: ``((fraction, k), ...)``: from call ``floor(fraction * T) + 1`` on, an update
      spans :math:`k` calls; default ``((0.5, 2), (0.75, 4))``; None keeps :math:`k = 1`.
    dataset_size: :math:`|D|` for the noise adaptation (with ``batch_size``); default None,
      no adaptation.
    batch_size: :math:`|B|`, the per-call batch size (with ``dataset_size``), default None.
    reference_curvature: use the PyTorch reference code's fit, whose step lands near twice
      the vertex; default False (the paper's formula).

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleByLabpalState`,
    taking the gradients as ``updates``. Its ``update`` takes ``value_fn`` (required on every
    call; only measuring calls run it), ``value`` (the loss at ``params``, :math:`l(0)`; one
    more call per measuring call when omitted), ``grad`` (accepted and unused) and the keyword
    arguments of ``value_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w, x, y):
    ...   return jnp.mean((x @ w - y) ** 2)
    >>> x = jnp.array([[1.0, 2.0], [3.0, 1.0], [0.5, -1.0]])
    >>> y = jnp.array([1.0, 2.0, 0.0])
    >>> opt = optax_ls.labpal(mode="sgd", approx_batches=3, n_sgd=20)
    >>> @jax.jit
    ... def step(w, state):
    ...   loss, g = jax.value_and_grad(loss_fn)(w, x, y)
    ...   updates, state = opt.update(g, state, w, value=loss, value_fn=loss_fn, x=x, y=y)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> for _ in range(23):  # 3 measuring calls, then 20 updates
    ...   w, state = step(w, state)
    >>> [int(optax.tree.get(state, k)) for k in ("calls", "num_fits", "phase")]
    [23, 1, 0]
    >>> bool(loss_fn(w, x, y) < 0.05)
    True

  References:
    Mutschler, Laube, Zell, Using a one dimensional parabolic model of the
    full-batch loss to estimate learning rates during training, NeurIPS 2021
    Optimization Workshop (arXiv:2108.13880); Mutschler, Empirics-based Line
    Searches for Deep Learning, PhD thesis, Tübingen 2022, Sec. 6.3.2
    (Alg. 9), Eq. 6.6 and Sec. 6.4.3 (Eq. 6.8).
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _labpal_transformation("labpal", -1.0, **locals())


# ---------------------------------------------------------------------------
# The transformation.
# ---------------------------------------------------------------------------


class _Plan(NamedTuple):
  """What a phase decided for this call; the tree algebra follows it."""

  apply: jax.Array  # update coef * x, x read back from the stored buffer
  coef: jax.Array  # the factor on the candidate x
  store_acc: jax.Array  # store the group's accumulated directions (else keep)
  acc_scale: jax.Array  # ... scaled by this (1, or 1/k when a line is fixed)
  store_momentum: jax.Array  # momentum buffer <- x (else keep)
  group: _phased.Group
  learning_rate: jax.Array
  step: jax.Array
  num_evals: jax.Array
  measured: jax.Array
  trained: jax.Array
  loss_sums: jax.Array
  line_norm: jax.Array
  num_fits: jax.Array
  num_failed: jax.Array
  no_step_count: jax.Array
  no_step_reason: jax.Array


def _labpal_transformation(
    method: str,
    sign: float,
    *,
    mode: str,
    approx_batches: Any,
    n_sgd: Any,
    alpha: Any,
    max_step_size: Any,
    measure_points: tuple[float, float],
    momentum: Any,
    t_max: Any,
    batch_schedule: Sequence[tuple[float, int]] | None,
    dataset_size: Any,
    batch_size: Any,
    reference_curvature: bool,
) -> optax.GradientTransformationExtraArgs:
  """LABPAL along ``sign * updates``: ``scale_by_labpal`` (+1) and ``labpal`` (-1).

  With ``sign = -1`` the incoming updates are gradients: the state accumulates
  them as they come and the sign is applied to the measuring points and to
  the update only.
  """
  _validate(
      mode=mode,
      approx_batches=approx_batches,
      n_sgd=n_sgd,
      alpha=alpha,
      max_step_size=max_step_size,
      measure_points=measure_points,
      momentum=momentum,
      t_max=t_max,
      batch_schedule=batch_schedule,
      dataset_size=dataset_size,
      batch_size=batch_size,
  )
  s1, s2 = (float(s) for s in measure_points)
  group_size = _group_size_fn(t_max, batch_schedule, dataset_size, batch_size)
  accumulates = group_size is not None
  with_accumulator = momentum is not None and accumulates

  def init_fn(params: optax.Params) -> ScaleByLabpalState:
    buffers = jax.tree.map(lambda p: jnp.zeros(p.shape, _core.buffer_dtype(p)), params)
    dtype = _core.compute_dtype(params)
    zero = jnp.zeros((), dtype)
    izero = jnp.zeros((), jnp.int32)
    return ScaleByLabpalState(
        clock=_phased.init_clock(_MEASURE),
        group=_phased.init_group(),
        learning_rate=zero,
        step=zero,
        num_evals=izero,
        measured=izero,
        trained=izero,
        loss_sums=jnp.zeros((3,), dtype),
        line_norm=zero,
        num_fits=izero,
        num_failed=izero,
        direction=buffers,
        accumulator=buffers if with_accumulator else None,
        no_step_count=izero,
        no_step_reason=izero,
    )

  def update_fn(
      updates: optax.Updates,
      state: ScaleByLabpalState,
      params: optax.Params | None = None,
      *,
      value_fn: Callable[..., Any] | None = None,
      value: Any = None,
      grad: optax.Updates | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, ScaleByLabpalState]:
    del grad  # the slope comes from the fitted parabola
    value_fn = _core.require_value_fn(value_fn, method)
    _core.require_params(params, method, "LABPAL measures the loss along a line")
    objective = _core.bind_value_fn(value_fn, extra_args)
    dtype = state.step.dtype
    clock = state.clock

    # The candidate direction x of this call: the group's directions so far
    # (their sum without momentum), with momentum beta * m + mean. The buffers
    # go through conditionals (a call that keeps one only copies it) and the
    # update reads the buffer just written: beyond SGD's work, a training call
    # computes one norm and writes one buffer.
    new_size = 1 if group_size is None else group_size(clock.calls)
    first = state.group.done == 0
    size = jnp.where(first, new_size, state.group.size)
    inv_size = 1.0 / size.astype(dtype)
    held = None
    if accumulates:
      held = state.direction if momentum is None else state.accumulator

    def candidate() -> tuple[optax.Updates, optax.Updates]:
      """``(acc, x)``: the group's directions so far and the candidate ``x``."""
      if held is None:
        acc = jax.tree.map(lambda u, h: u.astype(h.dtype), updates, state.direction)
      else:
        acc = _phased.accumulate(held, updates, first)
      if momentum is None:
        return acc, acc
      return acc, jax.tree.map(lambda m, a: momentum * m + inv_size * a, state.direction, acc)

    if momentum is None:
      mean_scale = inv_size  # the mean direction is x / k
      if held is None:
        sq = _phased.sum_of_squares(updates, dtype)
      else:
        sq = jax.lax.cond(
            first,
            lambda: _phased.sum_of_squares(updates, dtype),
            lambda: _phased.sum_of_squares(candidate()[0], dtype),
        )
    else:
      mean_scale = jnp.ones((), dtype)
      sq = _phased.sum_of_squares(candidate()[1], dtype)
    x_ok = jnp.isfinite(sq)
    x_norm = jnp.sqrt(jnp.where(x_ok, sq, 0.0))
    mean_norm = x_norm * mean_scale
    gcall = _phased.group_step(state.group, new_size, x_ok)
    # An injected hyperparameter out of its range (only known at run time): the
    # approximations fail without measuring and the training calls make no step.
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    valid = (f32(alpha) > 0) & (f32(max_step_size) > 0)
    valid &= (f32(approx_batches) >= 1) & (f32(n_sgd) >= 1)
    if momentum is not None:
      valid &= (f32(momentum) >= 0) & (f32(momentum) < 1)

    def no_step(counted: jax.Array, **flags: Any) -> tuple[jax.Array, jax.Array]:
      """``(no_step_count, no_step_reason)``: a call that is not ``counted`` keeps both."""
      count, reason = _core.no_step(state.no_step_count, False, invalid=~valid, **flags)
      return (jnp.where(counted, count, state.no_step_count),
              jnp.where(counted, reason, state.no_step_reason))

    def measure(clock: _phased.PhaseClock, _) -> tuple[_Plan, _phased.Transition]:
      del clock
      collecting = state.measured == 0  # the line is not fixed yet
      fixing = collecting & gcall.last
      dir_ok = ~collecting | (x_ok & (~gcall.last | (mean_norm > 0)))
      evaluate = dir_ok & (~collecting | fixing) & valid
      line_norm = jnp.where(fixing, mean_norm, state.line_norm)

      def losses(_):
        # The line direction: fixed by this call, or the one held in the state.
        acc, x = candidate()
        fixed = _scale(acc, inv_size) if momentum is None else x
        line = _phased.select_tree(fixing, fixed, state.direction)
        unit = sign / line_norm
        at = lambda s: _scalar(objective(_add_scaled(params, s * unit, line)), dtype)  # noqa: E731
        l0 = _scalar(objective(params) if value is None else value, dtype)
        return jnp.stack([l0, at(s1), at(s2)])

      values = jax.lax.cond(evaluate, losses, lambda _: jnp.zeros((3,), dtype), None)
      finite = jnp.all(jnp.isfinite(values))
      measured_ok = evaluate & finite
      diffs = jnp.stack([values[0], values[1] - values[0], values[2] - values[0]])
      sums = jnp.where(measured_ok, state.loss_sums + diffs, state.loss_sums)
      measured = state.measured + measured_ok.astype(jnp.int32)
      complete = measured >= approx_batches
      fit_ok, step = _fit(sums / jnp.maximum(measured, 1).astype(dtype), s1, s2, alpha,
                          max_step_size, reference_curvature)
      failed = ~dir_ok | (evaluate & ~finite) | (complete & ~fit_ok) | ~valid
      fitted = complete & ~failed
      have_step = state.step > 0
      to_train = fitted | (failed & have_step)
      end = to_train | failed
      num_evals = jnp.where(evaluate, 2 if value is not None else 3, 0)
      group = _where_tree(collecting, gcall.next, state.group)
      # Measuring calls make no step by design; the one at which an approximation fails
      # is counted.
      no_step_count, no_step_reason = no_step(
          failed, non_finite=(collecting & ~x_ok) | (evaluate & ~finite),
          not_descent=collecting & gcall.last & x_ok & (mean_norm <= 0))
      plan = _Plan(
          apply=jnp.zeros((), bool),
          coef=jnp.zeros((), dtype),
          store_acc=collecting & x_ok,
          acc_scale=jnp.where(fixing, inv_size, 1.0).astype(dtype),
          store_momentum=fixing & x_ok,
          group=_where_tree(end, _phased.reset_group(group), group),
          learning_rate=jnp.where(fitted, step / jnp.where(fitted, line_norm, 1.0),
                                  state.learning_rate),
          step=jnp.where(fitted, step, state.step),
          num_evals=num_evals.astype(jnp.int32),
          measured=jnp.where(end, 0, measured),
          trained=jnp.zeros_like(state.trained),
          loss_sums=jnp.where(end, jnp.zeros_like(sums), sums),
          line_norm=jnp.where(fixing & dir_ok, line_norm, state.line_norm),
          num_fits=state.num_fits + fitted.astype(jnp.int32),
          num_failed=state.num_failed + failed.astype(jnp.int32),
          no_step_count=no_step_count,
          no_step_reason=no_step_reason,
      )
      to = _phased.transition(jnp.where(to_train, _TRAIN, _MEASURE), restart=failed & ~to_train)
      return plan, to

    def train(clock: _phased.PhaseClock, _) -> tuple[_Plan, _phased.Transition]:
      del clock
      counted = x_ok & gcall.last
      if mode == "sgd":
        apply = counted & valid
        coef = state.learning_rate * mean_scale
        learning_rate = state.learning_rate
      else:
        apply = counted & (x_norm > 0) & valid
        coef = jnp.where(apply, state.step / jnp.where(apply, x_norm, 1.0), 0.0)
        learning_rate = jnp.where(apply, state.step / jnp.where(apply, mean_norm, 1.0),
                                  state.learning_rate)
      trained = state.trained + counted.astype(jnp.int32)
      done = trained >= n_sgd
      # The calls that only accumulate their group's directions make no step by design.
      moved = apply & (coef > 0) & (x_norm > 0)
      no_step_count, no_step_reason = no_step(~x_ok | (gcall.last & ~moved), non_finite=~x_ok,
                                              not_descent=x_norm <= 0)
      no_step_count = jnp.where(moved, 0, no_step_count)
      no_step_reason = jnp.where(moved, 0, no_step_reason)
      plan = _Plan(
          apply=apply,
          coef=coef.astype(dtype),
          store_acc=x_ok,
          acc_scale=jnp.ones((), dtype),
          store_momentum=counted,
          group=gcall.next,
          learning_rate=learning_rate.astype(dtype),
          step=state.step,
          num_evals=jnp.zeros((), jnp.int32),
          measured=state.measured,
          trained=jnp.where(done, 0, trained),
          loss_sums=state.loss_sums,
          line_norm=state.line_norm,
          num_fits=state.num_fits,
          num_failed=state.num_failed,
          no_step_count=no_step_count.astype(jnp.int32),
          no_step_reason=no_step_reason.astype(jnp.int32),
      )
      return plan, _phased.transition(jnp.where(done, _MEASURE, _TRAIN))

    plan, new_clock = _phased.run_phase(clock, (measure, train), None)

    # Conditionals, so that a call that keeps a buffer only copies it.
    keep = _phased.store_or_keep
    accumulator = state.accumulator
    if momentum is None:
      direction = keep(plan.store_acc, lambda: _scale(candidate()[0], plan.acc_scale),
                       state.direction)
    else:
      direction = keep(plan.store_momentum, lambda: candidate()[1], state.direction)
      if with_accumulator:
        accumulator = keep(plan.store_acc, lambda: candidate()[0], state.accumulator)
    # An update is made only where the call stored its candidate x (the group
    # sum, or the momentum direction) in `direction`.
    new_updates = jax.tree.map(
        lambda xi, u: jnp.where(plan.apply, (sign * plan.coef) * xi, 0.0).astype(u.dtype),
        direction,
        updates,
    )
    new_state = ScaleByLabpalState(
        clock=new_clock,
        group=plan.group,
        learning_rate=plan.learning_rate,
        step=plan.step,
        num_evals=plan.num_evals,
        measured=plan.measured,
        trained=plan.trained,
        loss_sums=plan.loss_sums,
        line_norm=plan.line_norm,
        num_fits=plan.num_fits,
        num_failed=plan.num_failed,
        direction=direction,
        accumulator=accumulator,
        no_step_count=plan.no_step_count,
        no_step_reason=plan.no_step_reason,
    )
    return new_updates, optax.tree.cast_like(new_state, other_tree=state)

  return optax.GradientTransformationExtraArgs(_core.unshare_init(init_fn), update_fn)


# ---------------------------------------------------------------------------
# Pieces.
# ---------------------------------------------------------------------------


def _fit(
    means: jax.Array,
    s1: float,
    s2: float,
    alpha: Any,
    max_step_size: Any,
    reference: bool,
) -> tuple[jax.Array, jax.Array]:
  """The update step from the mean losses ``(l(0), l(s1) - l(0), l(s2) - l(0))``.

  The parabola ``a s^2 + b s + l(0)`` through the three points has
  ``a = (D2/s2 - D1/s1) / (s2 - s1)`` and ``b = D1/s1 - a s1``. Returns
  ``(ok, step)``; ``ok`` is false (and ``step`` 0) without a minimum ahead.
  """
  d1, d2 = means[1], means[2]
  a = (d2 / s2 - d1 / s1) / (s2 - s1)
  b = d1 / s1 - a * s1
  if reference:
    # np.gradient at 0 over (0, s1, s2): slope (l(s1)-l(0))/s1 = b + a s1 and
    # curvature a (second-order exact), halved by the reference code.
    a, b = 0.5 * a, b + a * s1
  ok = jnp.isfinite(a) & jnp.isfinite(b) & (a > 0) & (b < 0)
  vertex = jnp.where(ok, -b / (2.0 * jnp.where(ok, a, 1.0)), 0.0)
  if reference:
    step = alpha * jnp.minimum(vertex, max_step_size)
  else:
    step = jnp.minimum(alpha * vertex, max_step_size)
  ok = ok & jnp.isfinite(step) & (step > 0)
  return ok, jnp.where(ok, step, 0.0).astype(means.dtype)


def _group_size_fn(
    t_max: Any, schedule: Sequence[tuple[float, int]] | None, dataset_size: Any, batch_size: Any
) -> Callable[[jax.Array], jax.Array] | None:
  """``calls -> k`` of the batch-size schedule, or None when ``k`` is always 1.

  The schedule's boundaries are ``floor(fraction * eps * t_max)`` calls and
  its factors ``max(1, floor(eps * k))`` (Eq. 6.8; ``eps = 1`` without the
  noise adaptation).
  """
  if schedule is None and dataset_size is None:
    return None
  fractions = [float(f) for f, _ in schedule or ()]
  factors = [1] + [int(k) for _, k in schedule or ()]
  hyper = (t_max, dataset_size, batch_size)
  if all(v is None or _core.concrete(v) is not None for v in hyper):
    eps = 1.0
    if dataset_size is not None:
      eps = (_BATCH_ORI / float(batch_size)) * (float(dataset_size) / _DATASET_ORI)
    horizon = float(t_max) * eps
    bounds = jnp.asarray([math.floor(f * horizon) for f in fractions], jnp.int32)
    # A small tolerance, so that eps * k = 2.9999999... counts as 3.
    ks = jnp.asarray([max(1, math.floor(eps * k + 1e-9)) for k in factors], jnp.int32)
  else:  # traced under optax.inject_hyperparams
    eps = jnp.ones((), jnp.float32)
    if dataset_size is not None:
      eps = (_BATCH_ORI / jnp.asarray(batch_size, jnp.float32)) * (
          jnp.asarray(dataset_size, jnp.float32) / _DATASET_ORI
      )
    horizon = jnp.asarray(t_max, jnp.float32) * eps
    bounds = jnp.floor(jnp.asarray(fractions, jnp.float32) * horizon)
    ks = jnp.maximum(jnp.floor(eps * jnp.asarray(factors, jnp.float32) + 1e-6), 1.0)
    ks = ks.astype(jnp.int32)

  def group_size(calls: jax.Array) -> jax.Array:
    index = jnp.sum(calls > bounds) if fractions else 0
    return ks[index]

  return group_size


def _validate(**kw: Any) -> None:
  """Checks LABPAL's hyperparameters; raises ``ValueError`` naming the argument."""
  if kw["mode"] not in _MODES:
    raise ValueError(f"`mode` must be one of {_MODES}, got {kw['mode']!r}.")
  check = _core.check
  integer = lambda v: v >= 1 and v == int(v)  # noqa: E731
  check("approx_batches", kw["approx_batches"], integer, "a positive integer")
  check("n_sgd", kw["n_sgd"], integer, "a positive integer")
  check("alpha", kw["alpha"], lambda v: v > 0.0, "positive")
  check("max_step_size", kw["max_step_size"], lambda v: v > 0.0, "positive")
  check("momentum", kw["momentum"], lambda v: 0.0 <= v < 1.0, "in [0, 1) or None",
        optional=True)
  check("t_max", kw["t_max"], integer, "a positive integer")
  check("dataset_size", kw["dataset_size"], integer, "a positive integer", optional=True)
  check("batch_size", kw["batch_size"], integer, "a positive integer", optional=True)
  if (kw["dataset_size"] is None) != (kw["batch_size"] is None):
    missing = "batch_size" if kw["batch_size"] is None else "dataset_size"
    raise ValueError(
        f"`{missing}` is needed too: the noise adaptation factor "
        "eps = (128 / batch_size) * (dataset_size / 40000) uses both; pass both or neither."
    )
  points = kw["measure_points"]
  try:
    s1, s2 = (float(s) for s in points)
  except (TypeError, ValueError):
    raise ValueError(
        f"`measure_points` must be two numbers (s1, s2), got {points!r}."
    ) from None
  if not (0.0 < s1 < s2 and math.isfinite(s2)):
    raise ValueError(f"`measure_points` must satisfy 0 < s1 < s2, got {points!r}.")
  schedule = kw["batch_schedule"]
  if schedule is not None:
    try:
      pairs = [(float(f), k) for f, k in schedule]
    except (TypeError, ValueError):
      raise ValueError(
          f"`batch_schedule` must be a sequence of (fraction, k) pairs, got {schedule!r}."
      ) from None
    fractions = [f for f, _ in pairs]
    if any(not 0.0 < f <= 1.0 for f in fractions) or fractions != sorted(set(fractions)):
      raise ValueError(
          "`batch_schedule` fractions must increase strictly within (0, 1], "
          f"got {schedule!r}."
      )
    if any(isinstance(k, bool) or int(k) != k or k < 1 for _, k in pairs):
      raise ValueError(f"`batch_schedule` factors must be positive integers, got {schedule!r}.")


def _scalar(value: Any, dtype: Any) -> jax.Array:
  value = jnp.asarray(value)
  if value.size != 1:
    raise ValueError(f"the loss must be a scalar, got an array of shape {value.shape}.")
  return value.reshape(()).astype(dtype)


def _scale(tree: Any, factor: jax.Array) -> Any:
  return jax.tree.map(lambda t: (factor * t).astype(t.dtype), tree)


def _add_scaled(params: Any, step: jax.Array, direction: Any) -> Any:
  """``params + step * direction`` in the direction's precision, in the params' dtypes."""
  return jax.tree.map(
      lambda p, d: (p.astype(d.dtype) + step.astype(d.dtype) * d).astype(p.dtype),
      params,
      direction,
  )


def _where_tree(pred: jax.Array, a: Any, b: Any) -> Any:
  return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)
