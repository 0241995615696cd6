"""SLS: the stochastic Armijo (and Goldstein) line search, and Adam + SLS.

References:
  Vaswani, Mishkin, Laradji, Schmidt, Gidel, Lacoste-Julien, "Painless
  Stochastic Gradient: Interpolation, Line-Search, and Convergence Rates",
  NeurIPS 2019 (Alg. 1-2; seed 002 Sec. 2.6.3, Alg. 3).
  Kenneweg, Kenneweg, Fumagalli, Hammer, "No learning rates needed:
  Introducing SALSA - Stable Armijo Line Search Adaptation", IJCNN 2024,
  Sec. II.B (the Adam-preconditioned criterion, Eq. 2-3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_ls import _core

_LINE_SEARCH_FNS = ("armijo", "goldstein")


class ScaleBySlsState(NamedTuple):
  """State of :func:`scale_by_sls`.

  Attributes:
    learning_rate: the step size applied in the last update (float32): the
      accepted step, or 0 when the last update made no step (see ``exhausted``).
    step_size: the step size the next search starts from, before its reset.
    num_evals: how many times ``value_fn`` ran in the last update (int32).
    exhausted: whether the last search ended without an acceptable step
      (trial budget or ``min_step_size`` reached).
    prev_update: the previous update, for Polyak momentum (None without).
    no_step_count: how many updates in a row made no step (int32; 0 after a step).
    no_step_reason: why the last update made no step (int32; 0: it made one; see
      :func:`optax_ls.check_progress`).
  """

  learning_rate: jax.Array
  step_size: jax.Array
  num_evals: jax.Array
  exhausted: jax.Array
  prev_update: optax.Updates | None
  no_step_count: jax.Array
  no_step_reason: jax.Array


class AdamSlsState(NamedTuple):
  """State of :func:`adam_sls`.

  Attributes:
    count: number of updates made (int32), for Adam's bias correction.
    mu: first moment of the gradients.
    nu: second moment of the gradients.
    learning_rate: the step size applied in the last update (0 if none).
    step_size: the step size the next search starts from, before its reset.
    num_evals: how many times ``value_fn`` ran in the last update (int32).
    exhausted: whether the last search ended without an acceptable step.
    no_step_count: how many updates in a row made no step (int32; 0 after a step).
    no_step_reason: why the last update made no step (int32; 0: it made one; see
      :func:`optax_ls.check_progress`).
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  learning_rate: jax.Array
  step_size: jax.Array
  num_evals: jax.Array
  exhausted: jax.Array
  no_step_count: jax.Array
  no_step_reason: jax.Array


class _Hyper(NamedTuple):
  init_step_size: Any
  c: Any
  decrease_factor: Any
  gamma: Any
  n_batches_per_epoch: Any
  reset_option: Any
  max_backtracking_steps: Any
  line_search_fn: str
  increase_factor: Any
  min_step_size: Any
  max_step_size: Any


def scale_by_sls(
    init_step_size: float = 1.0,
    c: float = 0.1,
    decrease_factor: float = 0.9,
    gamma: float = 2.0,
    n_batches_per_epoch: int | None = None,
    reset_option: int = 1,
    max_backtracking_steps: int = 100,
    line_search_fn: str = "armijo",
    increase_factor: float = 2.0,
    momentum: float | None = None,
    min_step_size: float = 1e-8,
    max_step_size: float | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales a descent direction by a stochastic Armijo line search (SLS).

  The incoming ``updates`` are a descent direction :math:`d` (``-g`` for SGD). The step size
  of the last update is reset (``reset_option``), then shrunk, :math:`\eta \leftarrow \beta_b
  \eta`, on the same mini-batch until the Armijo condition

  .. math::
    f_B(w + \eta d) \le f_B(w) + c\,\eta\,\langle g, d \rangle

  holds; the update is :math:`\eta d`, plus ``momentum`` times the previous update. See
  :doc:`/methods/sls` for the reset options, the Goldstein variant and the robustness rules.

  Args:
    init_step_size: the first step size (the paper's :math:`\eta_{\max}`), default 1.
    c: sufficient decrease constant, in (0, 1), default 0.1; below 0.5 for Goldstein.
    decrease_factor: backtracking factor :math:`\beta_b`, in (0, 1), default 0.9.
    gamma: growth factor per epoch of ``reset_option=1``, at least 1, default 2.
    n_batches_per_epoch: mini-batches per epoch; required for ``reset_option=1``.
    reset_option: 0 (keep), 1 (grow by ``gamma`` per epoch, default) or 2 (restart from
      ``init_step_size``).
    max_backtracking_steps: the largest number of trials per update, default 100.
    line_search_fn: ``"armijo"`` (default) or ``"goldstein"``.
    increase_factor: Goldstein's growth factor :math:`\beta_f` (> 1), default 2.
    momentum: Polyak momentum in [0, 1), or None (default) for none.
    min_step_size: the smallest step size tried, default 1e-8.
    max_step_size: the largest step size; None (default) means 10 for Goldstein and 1e3 for
      Armijo.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleBySlsState`. Its
    ``update`` takes ``value_fn`` (required; ``value_fn(params, **kwargs)`` is the mini-batch
    loss), ``value`` (the loss at ``params``; one extra call when omitted), ``grad`` (for the
    slope; defaults to ``-updates``) and the keyword arguments of ``value_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w, x, y):
    ...   return jnp.mean((x @ w - y) ** 2)
    >>> x = jnp.array([[1.0, 2.0], [3.0, 1.0], [0.5, -1.0]])
    >>> y = jnp.array([1.0, 2.0, 0.0])
    >>> opt = optax.chain(optax.scale(-1.0), optax_ls.scale_by_sls(reset_option=0))
    >>> @jax.jit
    ... def step(w, state):
    ...   loss, g = jax.value_and_grad(loss_fn)(w, x, y)
    ...   updates, state = opt.update(g, state, w, value=loss, grad=g,
    ...                               value_fn=loss_fn, x=x, y=y)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> for _ in range(20):
    ...   w, state = step(w, state)
    >>> bool(loss_fn(w, x, y) < 0.01)
    True

  References:
    Vaswani, Mishkin, Laradji, Schmidt, Gidel, Lacoste-Julien, Painless
    Stochastic Gradient: Interpolation, Line-Search, and Convergence Rates,
    NeurIPS 2019, Alg. 1 (backtracking) and Alg. 2 (reset); Mutschler, PhD
    thesis, Tübingen 2022, Sec. 2.6.3, Alg. 3.
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _sls_transformation("scale_by_sls", 1.0, **locals())


def sls(
    init_step_size: float = 1.0,
    c: float = 0.1,
    decrease_factor: float = 0.9,
    gamma: float = 2.0,
    n_batches_per_epoch: int | None = None,
    reset_option: int = 1,
    max_backtracking_steps: int = 100,
    line_search_fn: str = "armijo",
    increase_factor: float = 2.0,
    momentum: float | None = None,
    min_step_size: float = 1e-8,
    max_step_size: float | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""SGD with a stochastic Armijo line search (SLS), taking gradients.

  The direction is the negative mini-batch gradient :math:`-g`. The step size of the last
  update is reset (``reset_option``; the default grows it by :math:`\gamma^{1/n_b}`), then
  shrunk, :math:`\eta \leftarrow \beta_b\,\eta`, on the same mini-batch until

  .. math::
    f_B(w - \eta g) \le f_B(w) - c\,\eta\,\|g\|^2

  holds, and the update is :math:`-\eta g`. It makes the updates of
  ``optax.chain(optax.scale(-1), scale_by_sls(...))`` without writing out :math:`-g`. See
  :doc:`/methods/sls` for the reset options, the Goldstein variant and the robustness rules.

  Args:
    init_step_size: the first step size (the paper's :math:`\eta_{\max}`), default 1.
    c: sufficient decrease constant, in (0, 1), default 0.1; below 0.5 for Goldstein.
    decrease_factor: backtracking factor :math:`\beta_b`, in (0, 1), default 0.9.
    gamma: growth factor per epoch of ``reset_option=1``, at least 1, default 2.
    n_batches_per_epoch: mini-batches per epoch :math:`n_b`; required for ``reset_option=1``
      (the default), unused otherwise.
    reset_option: 0 (keep), 1 (grow by ``gamma`` per epoch, default) or 2 (restart from
      ``init_step_size``).
    max_backtracking_steps: the largest number of trials per update, default 100.
    line_search_fn: ``"armijo"`` (default) or ``"goldstein"``.
    increase_factor: Goldstein's growth factor :math:`\beta_f` (> 1), default 2; unused by
      Armijo.
    momentum: Polyak momentum in [0, 1) added to the searched step, or None (default).
    min_step_size: the smallest step size tried, default 1e-8.
    max_step_size: the largest step size; None (default) means 10 for Goldstein and 1e3 for
      Armijo.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleBySlsState`, taking
    the gradients as ``updates``. Its ``update`` takes ``value_fn`` (required), ``value`` (one
    extra ``value_fn`` call when omitted), ``grad`` (for the slope, when ``updates`` were
    transformed before; defaults to ``updates``) and the keyword arguments of ``value_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w, x, y):
    ...   return jnp.mean((x @ w - y) ** 2)
    >>> x = jnp.array([[1.0, 2.0], [3.0, 1.0], [0.5, -1.0]])
    >>> y = jnp.array([1.0, 2.0, 0.0])
    >>> opt = optax_ls.sls(n_batches_per_epoch=1)
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> loss, g = jax.value_and_grad(loss_fn)(w, x, y)
    >>> updates, state = opt.update(g, state, w, value=loss, value_fn=loss_fn, x=x, y=y)
    >>> w = optax.apply_updates(w, updates)
    >>> float(optax.tree.get(state, "learning_rate")) > 0
    True

  References:
    Vaswani, Mishkin, Laradji, Schmidt, Gidel, Lacoste-Julien, Painless
    Stochastic Gradient: Interpolation, Line-Search, and Convergence Rates,
    NeurIPS 2019, Alg. 1 (backtracking) and Alg. 2 (reset); Mutschler, PhD
    thesis, Tübingen 2022, Sec. 2.6.3, Alg. 3.
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _sls_transformation("sls", -1.0, **locals())


def adam_sls(
    init_step_size: float = 1.0,
    c: float = 0.1,
    decrease_factor: float = 0.9,
    gamma: float = 2.0,
    n_batches_per_epoch: int | None = None,
    reset_option: int = 1,
    max_backtracking_steps: int = 100,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    min_step_size: float = 1e-8,
    max_step_size: float = 1e3,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam with a preconditioned stochastic Armijo line search (Adam + SLS).

  With Adam's bias-corrected moments :math:`\hat m_k, \hat v_k`, the search backtracks along
  the momentum-free direction :math:`d_k = -g_k / (\sqrt{\hat v_k} + \epsilon)` until

  .. math::
    f_B(w + \eta d_k) \le f_B(w) - c\,\eta \sum_i \frac{g_{k,i}^2}{\sqrt{\hat v_{k,i}} + \epsilon},

  and the update applies the accepted step along the momentum direction,
  :math:`-\eta\,\hat m_k / (\sqrt{\hat v_k} + \epsilon)`. The step size is reset before each
  search as in :func:`sls`. See :doc:`/methods/adam_sls` for the paper's reset and the
  robustness rules.

  Args:
    init_step_size: the first step size, default 1.
    c: sufficient decrease constant, in (0, 1), default 0.1.
    decrease_factor: backtracking factor, in (0, 1), default 0.9.
    gamma: growth factor per epoch of ``reset_option=1``, at least 1, default 2.
    n_batches_per_epoch: mini-batches per epoch; required for ``reset_option=1`` (the
      default), unused otherwise.
    reset_option: 0 (keep), 1 (grow by ``gamma`` per epoch, default) or 2 (restart from
      ``init_step_size``).
    max_backtracking_steps: the largest number of trials per update, default 100.
    b1: Adam's first-moment decay, for the applied direction, default 0.9.
    b2: Adam's second-moment decay, default 0.999.
    eps: Adam's epsilon, added to :math:`\sqrt{\hat v}`, default 1e-8.
    min_step_size: the smallest step size tried, default 1e-8.
    max_step_size: the largest step size, default 1e3.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with an :class:`AdamSlsState`, taking
    the gradients as ``updates``. Its ``update`` takes ``value_fn`` (required), ``value`` (one
    extra ``value_fn`` call when omitted), ``grad`` (for the slope, e.g. before clipping;
    defaults to ``updates``) and the keyword arguments of ``value_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w):
    ...   return jnp.sum((w - jnp.array([1.0, -2.0])) ** 2)
    >>> opt = optax_ls.adam_sls(reset_option=0)
    >>> @jax.jit
    ... def step(w, state):
    ...   loss, g = jax.value_and_grad(loss_fn)(w)
    ...   updates, state = opt.update(g, state, w, value=loss, value_fn=loss_fn)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> for _ in range(50):
    ...   w, state = step(w, state)
    >>> bool(loss_fn(w) < loss_fn(jnp.zeros(2)))
    True

  References:
    Kenneweg et al., No learning rates needed: Introducing SALSA, 2024, Sec. II.B.
    Vaswani et al., Adaptive Gradient Methods Converge Faster with
    Over-Parameterization (but you should do a line-search), 2020.
  """
  h = _validate(
      "adam_sls",
      init_step_size=init_step_size,
      c=c,
      decrease_factor=decrease_factor,
      gamma=gamma,
      n_batches_per_epoch=n_batches_per_epoch,
      reset_option=reset_option,
      max_backtracking_steps=max_backtracking_steps,
      line_search_fn="armijo",
      increase_factor=2.0,
      min_step_size=min_step_size,
      max_step_size=max_step_size,
  )
  _core.check("b1", b1, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
  _core.check("b2", b2, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
  _core.check("eps", eps, lambda v: v > 0.0, "positive")

  def init_fn(params: optax.Params) -> AdamSlsState:
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, _core.buffer_dtype(p)), params)
    return AdamSlsState(
        count=jnp.zeros((), jnp.int32),
        mu=zeros,
        nu=zeros,
        learning_rate=jnp.asarray(init_step_size, jnp.float32),
        step_size=jnp.asarray(init_step_size, jnp.float32),
        num_evals=jnp.zeros((), jnp.int32),
        exhausted=jnp.zeros((), bool),
        no_step_count=jnp.zeros((), jnp.int32),
        no_step_reason=jnp.zeros((), jnp.int32),
    )

  def update_fn(
      updates: optax.Updates,
      state: AdamSlsState,
      params: optax.Params | None = None,
      *,
      value_fn: Callable[..., Any] | None = None,
      value: Any = None,
      grad: optax.Updates | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, AdamSlsState]:
    value_fn = _core.require_value_fn(value_fn, "adam_sls")
    _core.require_params(params, "adam_sls")
    g = jax.tree.map(lambda u: u.astype(_core.buffer_dtype(u)), updates)
    count = optax.safe_increment(state.count)
    mu = optax.tree.update_moment(g, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(g, state.nu, b2, 2)

    def inv_denom(v: jax.Array) -> jax.Array:
      return 1.0 / (jnp.sqrt(optax.tree.bias_correction(v, b2, count)) + eps)

    def search_dir(nu: optax.Updates) -> optax.Updates:
      return jax.tree.map(lambda gi, v: -gi * inv_denom(v), g, nu)

    if value is None:
      value = _core.bind_value_fn(value_fn, extra_args)(params)
      extra_evals = 1
    else:
      extra_evals = 0
    # Whether this update may change the moments is known from the inputs alone (a finite
    # loss and gradient), before the moments are formed: each is then written once, in
    # place, and no copy of the old ones, of the preconditioner or of a direction outlives
    # the search (each direction is formed elementwise where it is used). A skipped update
    # (non-finite inputs) leaves the moments as they were.
    check = optax.tree.sum(jax.tree.map(jnp.abs, g))
    if grad is not None and grad is not updates:
      check += 0.0 * optax.tree.sum(grad)  # NaN if grad is
    healthy = jnp.isfinite(_core.as_scalar(value, "`value`", _core.compute_dtype(params)))
    healthy &= jnp.isfinite(check)
    keep = lambda new, old: jax.tree.map(  # noqa: E731
        lambda n, o: jnp.where(healthy, n, o), new, old
    )
    mu, nu = keep(mu, state.mu), keep(nu, state.nu)
    slope = _core.real_vdot(g if grad is None else grad, search_dir(nu))
    outcome = _search(h, value_fn, extra_args, params, value,
                      lambda eta: _core.add_step(params, eta, search_dir(nu)), slope,
                      state.step_size, no_step_count=state.no_step_count)
    mu_hat = optax.tree.bias_correction(mu, b1, count)
    applied_dir = jax.tree.map(lambda mi, v: -mi * inv_denom(v), mu_hat, nu)
    new_updates = _core.masked_scale(outcome.moved, outcome.learning_rate, applied_dir, updates)
    new_state = AdamSlsState(
        count=jnp.where(healthy, count, state.count),
        mu=mu,
        nu=nu,
        learning_rate=outcome.learning_rate,
        step_size=outcome.step_size,
        num_evals=outcome.num_evals + extra_evals,
        exhausted=outcome.exhausted,
        no_step_count=outcome.no_step_count,
        no_step_reason=outcome.no_step_reason,
    )
    return new_updates, optax.tree.cast_like(new_state, other_tree=state)

  return optax.GradientTransformationExtraArgs(_core.unshare_init(init_fn), update_fn)


def _sls_transformation(
    method: str, sign: float, *, momentum: float | None, **hyper: Any
) -> optax.GradientTransformationExtraArgs:
  """SLS along ``sign * updates``: ``scale_by_sls`` (+1) and ``sls`` (-1).

  ``sls`` searches along the incoming gradient with a negative step instead of
  chaining ``optax.scale(-1)``: the negated gradient is then never written out,
  which saves a parameter-sized copy per step (measured in
  ``benchmarks/step_overhead.py``).
  """
  h = _validate(method, **hyper)
  _core.check("momentum", momentum, lambda v: 0.0 <= v < 1.0, "in [0, 1)", optional=True)
  init_step_size = hyper["init_step_size"]

  def init_fn(params: optax.Params) -> ScaleBySlsState:
    prev_update = None if momentum is None else optax.tree.zeros_like(params)
    return ScaleBySlsState(
        learning_rate=jnp.asarray(init_step_size, jnp.float32),
        step_size=jnp.asarray(init_step_size, jnp.float32),
        num_evals=jnp.zeros((), jnp.int32),
        exhausted=jnp.zeros((), bool),
        prev_update=prev_update,
        no_step_count=jnp.zeros((), jnp.int32),
        no_step_reason=jnp.zeros((), jnp.int32),
    )

  def update_fn(
      updates: optax.Updates,
      state: ScaleBySlsState,
      params: optax.Params | None = None,
      *,
      value_fn: Callable[..., Any] | None = None,
      value: Any = None,
      grad: optax.Updates | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, ScaleBySlsState]:
    value_fn = _core.require_value_fn(value_fn, method)
    _core.require_params(params, method)
    # The direction is d = sign * updates; without `grad`, g = -d is assumed.
    if grad is None:
      slope = -_core.real_vdot(updates, updates)
    else:
      slope = sign * _core.real_vdot(grad, updates)
    outcome = _search(h, value_fn, extra_args, params, value,
                      lambda eta: _core.add_step(params, sign * eta, updates), slope,
                      state.step_size, no_step_count=state.no_step_count)
    new_updates = _core.masked_scale(outcome.moved, sign * outcome.learning_rate, updates,
                                     updates)
    prev_update = None
    if momentum is not None:
      new_updates = jax.tree.map(
          lambda u, p: jnp.where(outcome.moved, u + momentum * p, u).astype(u.dtype),
          new_updates,
          state.prev_update,
      )
      prev_update = jax.tree.map(
          lambda u, p: jnp.where(outcome.moved, u, p), new_updates, state.prev_update
      )
    new_state = ScaleBySlsState(
        learning_rate=outcome.learning_rate,
        step_size=outcome.step_size,
        num_evals=outcome.num_evals,
        exhausted=outcome.exhausted,
        prev_update=prev_update,
        no_step_count=outcome.no_step_count,
        no_step_reason=outcome.no_step_reason,
    )
    return new_updates, optax.tree.cast_like(new_state, other_tree=state)

  return optax.GradientTransformationExtraArgs(_core.unshare_init(init_fn), update_fn)


# ---------------------------------------------------------------------------
# Shared pieces.
# ---------------------------------------------------------------------------


class _Outcome(NamedTuple):
  moved: jax.Array  # whether a non-zero step is applied
  learning_rate: jax.Array  # the applied step (0 if none)
  step_size: jax.Array  # where the next search starts from
  num_evals: jax.Array
  exhausted: jax.Array
  no_step_count: jax.Array  # updates in a row without a step, this one included
  no_step_reason: jax.Array  # why no step was made (_core.NO_STEP_REASONS; 0: a step)


def _runtime_valid(h: _Hyper) -> jax.Array:
  """Whether the hyperparameters are valid as traced values (``optax.inject_hyperparams``).

  Construction checks the concrete ones; an injected value is only known here. An
  invalid one runs no search (not a trial budget spent on a condition that cannot hold).
  """
  upper = 0.5 if h.line_search_fn == "goldstein" else 1.0
  f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
  ok = (f32(h.c) > 0) & (f32(h.c) < upper)
  ok &= (f32(h.decrease_factor) > 0) & (f32(h.decrease_factor) < 1) & (f32(h.gamma) >= 1)
  ok &= (f32(h.min_step_size) > 0) & (f32(h.init_step_size) > 0)
  ok &= f32(h.max_step_size) >= f32(h.min_step_size)
  ok &= f32(h.max_backtracking_steps) >= 1
  if h.line_search_fn == "goldstein":
    ok &= f32(h.increase_factor) > 1
  return ok


def _reset_step_size(h: _Hyper, step_size: jax.Array) -> jax.Array:
  """The step size of the first trial (Alg. 2 of the paper), inside the bounds."""
  n = h.n_batches_per_epoch
  grown = step_size * (h.gamma ** (1.0 / n) if n is not None else 1.0)
  option = jnp.asarray(h.reset_option)
  first = jnp.where(
      option == 0,
      step_size,
      jnp.where(option == 1, grown, jnp.asarray(h.init_step_size, jnp.float32)),
  )
  return jnp.clip(first, h.min_step_size, h.max_step_size).astype(jnp.float32)


def _search(
    h: _Hyper,
    value_fn: Callable[..., Any],
    extra_args: dict[str, Any],
    params: optax.Params,
    value: Any,
    trial_params: Callable[[jax.Array], optax.Params],
    slope: jax.Array,
    step_size: jax.Array,
    *,
    no_step_count: jax.Array,
) -> _Outcome:
  """Resets the step size, searches ``trial_params(eta)`` and reads the outcome.

  ``trial_params(eta)`` is the trial point at step size ``eta``; formed inside the loop, its
  direction is not written out when it is an elementwise function of live buffers.
  """
  objective = _core.bind_value_fn(value_fn, extra_args)
  num_extra = 0
  if value is None:
    value = objective(params)
    num_extra = 1
  value0 = _core.as_scalar(value, "`value`", _core.compute_dtype(params))
  healthy = jnp.isfinite(value0) & jnp.isfinite(slope)
  valid = _runtime_valid(h)
  descent = healthy & (slope < 0) & valid

  if h.line_search_fn == "goldstein":
    rule = _core.goldstein_rule(
        value0, slope, h.c, h.decrease_factor, h.increase_factor, h.max_step_size
    )
  else:
    rule = _core.armijo_rule(value0, slope, h.c, h.decrease_factor)

  result = _core.backtracking_search(
      lambda eta: objective(trial_params(eta)),
      rule,
      _reset_step_size(h, step_size),
      max_evals=h.max_backtracking_steps,
      min_step_size=h.min_step_size,
      max_step_size=h.max_step_size,
      enabled=descent,
      value_dtype=value0.dtype,
  )
  applied = jnp.where(result.accepted, result.step_size, result.fallback_step_size)
  applied = jnp.where(descent, applied, 0.0)
  exhausted = descent & ~result.accepted
  resume = jnp.maximum(result.next_step_size, h.min_step_size)
  new_step_size = jnp.where(
      result.accepted, result.step_size, jnp.where(exhausted, resume, step_size)
  )
  no_step_count, no_step_reason = _core.no_step(
      no_step_count, applied > 0, invalid=~valid, non_finite=~healthy, not_descent=slope >= 0,
      exhausted=exhausted)
  return _Outcome(
      moved=applied > 0,
      learning_rate=applied.astype(jnp.float32),
      step_size=new_step_size.astype(jnp.float32),
      num_evals=result.num_evals + num_extra,
      exhausted=exhausted,
      no_step_count=no_step_count,
      no_step_reason=no_step_reason,
  )


def _validate(method: str, **kw: Any) -> _Hyper:
  """Checks the SLS hyperparameters; raises ``ValueError`` naming the argument."""
  ls = kw["line_search_fn"]
  if ls not in _LINE_SEARCH_FNS:
    raise ValueError(f"`line_search_fn` must be one of {_LINE_SEARCH_FNS}, got {ls!r}.")
  if kw["max_step_size"] is None:
    kw["max_step_size"] = 10.0 if ls == "goldstein" else 1e3
  check = _core.check
  if ls == "goldstein":
    check("c", kw["c"], lambda v: 0.0 < v < 0.5, "in (0, 0.5) for the Goldstein line search")
    check("increase_factor", kw["increase_factor"], lambda v: v > 1.0, "greater than 1")
  else:
    check("c", kw["c"], lambda v: 0.0 < v < 1.0, "in (0, 1)")
    # Unused by the Armijo search, but still a number.
    check("increase_factor", kw["increase_factor"], lambda v: True, "a number")
  check("decrease_factor", kw["decrease_factor"], lambda v: 0.0 < v < 1.0, "in (0, 1)")
  check("gamma", kw["gamma"], lambda v: v >= 1.0, "at least 1")
  _core.check_step_sizes(kw["init_step_size"], kw["min_step_size"], kw["max_step_size"])
  check(
      "max_backtracking_steps",
      kw["max_backtracking_steps"],
      lambda v: v >= 1 and v == int(v),
      "a positive integer",
  )
  check("reset_option", kw["reset_option"], lambda v: v in (0, 1, 2), "0, 1 or 2")
  option = _core.concrete(kw["reset_option"])
  n = kw["n_batches_per_epoch"]
  if option == 1 and n is None:
    raise ValueError(
        f"{method}: `reset_option=1` grows the step size by gamma**(1/n_batches_per_epoch) "
        "before each search, so `n_batches_per_epoch` (mini-batches per epoch) is required; "
        "pass it, or choose reset_option=0 (keep) or 2 (restart from init_step_size)."
    )
  check("n_batches_per_epoch", n, lambda v: v >= 1, "a positive number of batches",
        optional=True)
  return _Hyper(**kw)
