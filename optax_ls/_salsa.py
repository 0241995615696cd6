"""SaLSa: the stable Armijo line search adaptation, for SGD and Adam directions.

Reference:
  Kenneweg, Kenneweg, Fumagalli, Hammer, "No learning rates needed:
  Introducing SALSA - Stable Armijo Line Search Adaptation", IJCNN 2024
  (seed 001), Sec. III, Eq. 4-11, Sec. III.D (speed-up) and III.E (defaults).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_ls import _core

SEARCH_DIRECTIONS = ("momentum_free", "momentum")
"""The lines :func:`adam_salsa` can check its condition on (``search_direction``)."""

# The decays of the two step-size averages of the speed-up (Sec. III.D, Eq. 9).
_FAST_DECAY = 0.9
_SLOW_DECAY = 0.99


class ScaleBySalsaState(NamedTuple):
  r"""State of :func:`scale_by_salsa` and :func:`salsa`.

  Attributes:
    learning_rate: the step size applied in the last update (float32): the
      accepted step after a search, the reused step between searches, 0 when
      the last update made no step (see ``exhausted``).
    step_size: the last accepted step size: reused between searches; the next
      search starts from it times ``increase_factor``.
    num_evals: how many times ``value_fn`` ran in the last update (int32); 0
      on an update that did not search.
    exhausted: whether the last search ended without an acceptable step
      (trial budget or ``min_step_size`` reached).
    decrease_avg: :math:`h`, the exponential average of the loss decrease
      :math:`f_B(w) - f_B(w + \eta d)` of the accepted steps (Eq. 5).
    norm_avg: :math:`s`, the exponential average of the gradient norm
      :math:`-\langle g, d\rangle` (:math:`\|g\|^2` for SGD) of the searches
      (Eq. 5).
      Both in :func:`optax_ls.compute_dtype` of the parameters (float64 for float64
      ones, else float32), as every value the search compares.
    step_size_fast: the exponential average (decay 0.9) of the accepted step
      sizes (Eq. 8), updated after each accepted search.
    step_size_slow: the same with decay 0.99.
    search_interval: :math:`L`, a search runs every ``search_interval``
      updates (Eq. 9-11; int32 in ``[1, max_search_interval]``); tracked but
      unused when ``speed_up=False``.
    steps_since_search: updates made since the last one that searched (int32;
      0 when the last update searched).
    no_step_count: how many updates in a row made no step (int32; 0 after a step). An
      update between searches that reuses the last accepted step makes one.
    no_step_reason: why the last update made no step (int32; 0: it made one; see
      :func:`optax_ls.check_progress`): an invalid injected hyperparameter, a non-finite
      ``value`` or gradient (or ``value_fn(params)``), a direction that is zero or does not
      descend, or an exhausted search.
  """

  learning_rate: jax.Array
  step_size: jax.Array
  num_evals: jax.Array
  exhausted: jax.Array
  decrease_avg: jax.Array
  norm_avg: jax.Array
  step_size_fast: jax.Array
  step_size_slow: jax.Array
  search_interval: jax.Array
  steps_since_search: jax.Array
  no_step_count: jax.Array
  no_step_reason: jax.Array


class AdamSalsaState(NamedTuple):
  r"""State of :func:`adam_salsa`.

  Attributes:
    count: number of updates made (int32), for Adam's bias correction.
    mu: first moment of the gradients.
    nu: second moment of the gradients.
    learning_rate: the step size applied in the last update (0 if none).
    step_size: the last accepted step size (see :class:`ScaleBySalsaState`).
    num_evals: how many times ``value_fn`` ran in the last update (int32).
    exhausted: whether the last search ended without an acceptable step.
    decrease_avg: :math:`h`, the averaged loss decrease (Eq. 5).
    norm_avg: :math:`s`, the averaged preconditioned gradient norm
      :math:`\sum_i g_i^2 / (\sqrt{\hat v_i} + \epsilon)` (Eq. 7).
      Both in :func:`optax_ls.compute_dtype` of the parameters.
    step_size_fast: the 0.9 average of the accepted step sizes (Eq. 8).
    step_size_slow: the 0.99 average of the accepted step sizes.
    search_interval: :math:`L`, the search interval (Eq. 11; int32).
    steps_since_search: updates made since the last one that searched (int32).
    no_step_count: how many updates in a row made no step (int32; 0 after a step). An
      update that reuses the last accepted step makes one; one whose step the
      ``step_schedule`` scales to 0 (the end of a cool-down) is zero by design and leaves
      the count and the reason as they were.
    no_step_reason: why the last update made no step (int32; 0: it made one; see
      :func:`optax_ls.check_progress`), as in :class:`ScaleBySalsaState`.
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  learning_rate: jax.Array
  step_size: jax.Array
  num_evals: jax.Array
  exhausted: jax.Array
  decrease_avg: jax.Array
  norm_avg: jax.Array
  step_size_fast: jax.Array
  step_size_slow: jax.Array
  search_interval: jax.Array
  steps_since_search: jax.Array
  no_step_count: jax.Array
  no_step_reason: jax.Array


class _Hyper(NamedTuple):
  init_step_size: Any
  c: Any
  b3: Any
  decrease_factor: Any
  increase_factor: Any
  speed_up: bool
  max_search_interval: Any
  max_backtracking_steps: Any
  require_decrease: bool
  min_step_size: Any
  max_step_size: Any
  check_gradient: bool


def scale_by_salsa(
    init_step_size: float = 1.0,
    c: float = 0.3,
    b3: float = 0.99,
    decrease_factor: float = 0.9,
    increase_factor: float = 2.0 ** (1.0 / 500),
    speed_up: bool = True,
    max_search_interval: int = 10,
    max_backtracking_steps: int = 100,
    require_decrease: bool = False,
    min_step_size: float = 1e-8,
    max_step_size: float = 1e3,
    check_gradient: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales a descent direction by SaLSa, the stable Armijo line search adaptation.

  The incoming ``updates`` are a descent direction :math:`d_k` (``-g_k`` for SGD) and the
  update is :math:`\eta_k d_k`. SaLSa smooths both sides of the Armijo condition over the
  mini-batches (Eq. 4-6),

  .. math::
    h_k &= \beta_3 h_{k-1} + (1 - \beta_3)\,(f_k(w_k) - f_k(w_k + \eta_k d_k)),\\
    s_k &= \beta_3 s_{k-1} + (1 - \beta_3)\,(-\langle g_k, d_k\rangle),\\
    &\text{accept } \eta_k \text{ when } h_k \ge c\,\eta_k\,s_k,

  backtracking from :math:`\eta_{k-1}` times ``increase_factor``; with ``speed_up`` it searches
  only every :math:`L \le L_{max}` updates and reuses the last step in between. See
  :doc:`/methods/salsa` for the speed-up and its warm-up, the robustness rules and the
  differences from the authors' code.

  Args:
    init_step_size: the step size before the first search, default 1.
    c: the sufficient decrease constant, in (0, 1), default 0.3 (the paper's).
    b3: :math:`\beta_3`, the decay of :math:`h` and :math:`s`, in [0, 1), default 0.99; 0
      gives the plain Armijo condition.
    decrease_factor: backtracking factor, in (0, 1), default 0.9.
    increase_factor: growth of the step size before each search, at least 1, default
      :math:`2^{1/500}`.
    speed_up: search only every :math:`L` updates (Sec. III.D), default True; False searches
      at every update.
    max_search_interval: :math:`L_{max}`, a positive integer, default 10.
    max_backtracking_steps: the largest number of trials per search, default 100.
    require_decrease: also require :math:`f_B(w + \eta d) \le f_B(w)` of an accepted step (the
      paper's convergence theorem), default False.
    min_step_size: the smallest step size tried, default 1e-8.
    max_step_size: the largest step size, default 1e3.
    check_gradient: check the gradient on the updates that do not search too (a zero update
      for a non-finite one), default True.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleBySalsaState`. Its
    ``update`` takes ``value_fn`` (required; ``value_fn(params, **kwargs)`` is the mini-batch
    loss), ``value`` (the loss at ``params``; one extra call on updates that search when
    omitted), ``grad`` (for the slope; defaults to ``-updates``) and the keyword arguments of
    ``value_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w, x, y):
    ...   return jnp.mean((x @ w - y) ** 2)
    >>> x = jnp.array([[1.0, 2.0], [3.0, 1.0], [0.5, -1.0]])
    >>> y = jnp.array([1.0, 2.0, 0.0])
    >>> opt = optax.chain(optax.scale(-1.0), optax_ls.scale_by_salsa())
    >>> @jax.jit
    ... def step(w, state):
    ...   loss, g = jax.value_and_grad(loss_fn)(w, x, y)
    ...   updates, state = opt.update(g, state, w, value=loss, grad=g,
    ...                               value_fn=loss_fn, x=x, y=y)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> for _ in range(30):
    ...   w, state = step(w, state)
    >>> bool(loss_fn(w, x, y) < 0.01)
    True

  References:
    Kenneweg et al., No learning rates needed: Introducing SALSA - Stable
    Armijo Line Search Adaptation, IJCNN 2024, Sec. III.
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _salsa_transformation("scale_by_salsa", 1.0, **locals())


def salsa(
    init_step_size: float = 1.0,
    c: float = 0.3,
    b3: float = 0.99,
    decrease_factor: float = 0.9,
    increase_factor: float = 2.0 ** (1.0 / 500),
    speed_up: bool = True,
    max_search_interval: int = 10,
    max_backtracking_steps: int = 100,
    require_decrease: bool = False,
    min_step_size: float = 1e-8,
    max_step_size: float = 1e3,
    check_gradient: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""SGD with SaLSa, the stable Armijo line search adaptation, taking gradients.

  The direction is the negative mini-batch gradient :math:`-g_k`; the Armijo condition is
  smoothed by exponential averages of both its sides (Eq. 4-6),

  .. math::
    h_k &= \beta_3 h_{k-1} + (1 - \beta_3)\,(f_k(w_k) - f_k(w_k - \eta_k g_k)),\\
    s_k &= \beta_3 s_{k-1} + (1 - \beta_3)\,\|g_k\|^2,\\
    &\text{accept } \eta_k \text{ when } h_k \ge c\,\eta_k\,s_k,

  backtracking from :math:`\eta_{k-1}` times ``increase_factor``; the update is
  :math:`-\eta_k g_k`. With ``speed_up`` it searches only every :math:`L \le L_{max}` updates
  and reuses the last step in between. It makes the updates of
  ``optax.chain(optax.scale(-1), scale_by_salsa(...))`` without writing out :math:`-g`. See
  :doc:`/methods/salsa` for the speed-up, the robustness rules and the differences from the
  authors' code; the defaults are the paper's (Sec. III.E).

  Args:
    init_step_size: the step size before the first search, default 1.
    c: the sufficient decrease constant, in (0, 1), default 0.3.
    b3: :math:`\beta_3`, the decay of :math:`h` and :math:`s`, in [0, 1), default 0.99; 0
      gives the plain Armijo condition.
    decrease_factor: backtracking factor, in (0, 1), default 0.9.
    increase_factor: growth of the step size before each search, at least 1, default
      :math:`2^{1/500}`.
    speed_up: search only every :math:`L` updates, default True; False searches at every update.
    max_search_interval: :math:`L_{max}`, a positive integer, default 10.
    max_backtracking_steps: the largest number of trials per search, default 100.
    require_decrease: also require :math:`f_B(w - \eta g) \le f_B(w)` of an accepted step,
      default False (as in the paper's experiments).
    min_step_size: the smallest step size tried, default 1e-8.
    max_step_size: the largest step size, default 1e3.
    check_gradient: check the gradient on the updates that do not search too (a zero update
      for a non-finite one), default True.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleBySalsaState`, taking
    the gradients as ``updates``. Its ``update`` takes ``value_fn`` (required), ``value`` (one
    extra ``value_fn`` call on updates that search when omitted), ``grad`` (for the slope, when
    ``updates`` were transformed before; defaults to ``updates``) and the keyword arguments of
    ``value_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w, x, y):
    ...   return jnp.mean((x @ w - y) ** 2)
    >>> x = jnp.array([[1.0, 2.0], [3.0, 1.0], [0.5, -1.0]])
    >>> y = jnp.array([1.0, 2.0, 0.0])
    >>> opt = optax_ls.salsa()
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> loss, g = jax.value_and_grad(loss_fn)(w, x, y)
    >>> updates, state = opt.update(g, state, w, value=loss, value_fn=loss_fn, x=x, y=y)
    >>> w = optax.apply_updates(w, updates)
    >>> float(state.learning_rate) > 0, int(state.steps_since_search)
    (True, 0)

  References:
    Kenneweg et al., No learning rates needed: Introducing SALSA - Stable
    Armijo Line Search Adaptation, IJCNN 2024, Sec. III.
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _salsa_transformation("salsa", -1.0, **locals())


def adam_salsa(
    init_step_size: float = 1.0,
    c: float = 0.3,
    b3: float = 0.99,
    decrease_factor: float = 0.9,
    increase_factor: float = 2.0 ** (1.0 / 500),
    speed_up: bool = True,
    max_search_interval: int = 10,
    max_backtracking_steps: int = 100,
    require_decrease: bool = False,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    min_step_size: float = 1e-8,
    max_step_size: float = 1e3,
    search_direction: str = "momentum_free",
    step_schedule: optax.Schedule | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam with SaLSa, the stable Armijo line search adaptation (Adam + SaLSa).

  With Adam's bias-corrected moments :math:`\hat m_k, \hat v_k`, the smoothed Armijo condition
  of :func:`scale_by_salsa` is checked along the momentum-free direction
  :math:`-g_k / (\sqrt{\hat v_k} + \epsilon)`, with the preconditioned norm (Eq. 7)

  .. math::
    s_k = \beta_3 s_{k-1} + (1-\beta_3) \sum_i \frac{g_{k,i}^2}{\sqrt{\hat v_{k,i}} + \epsilon},

  and every update, searched or not, applies the current step along the momentum direction,
  :math:`-\eta\,\hat m_k / (\sqrt{\hat v_k} + \epsilon)`. See :doc:`/methods/salsa` for the
  speed-up, our two options (``search_direction``, ``step_schedule``), the robustness rules
  and the differences from the authors' code.

  Args:
    init_step_size: the step size before the first search, default 1.
    c: the sufficient decrease constant, in (0, 1), default 0.3.
    b3: :math:`\beta_3`, the decay of :math:`h` and :math:`s`, in [0, 1), default 0.99.
    decrease_factor: backtracking factor, in (0, 1), default 0.9.
    increase_factor: growth of the step size before each search, at least 1, default
      :math:`2^{1/500}`.
    speed_up: search only every :math:`L` updates, default True; False searches every update.
    max_search_interval: :math:`L_{max}`, a positive integer, default 10.
    max_backtracking_steps: the largest number of trials per search, default 100.
    require_decrease: also require that an accepted step decreases the loss, default False.
    b1: Adam's first-moment decay, for the applied direction, default 0.9.
    b2: Adam's second-moment decay, default 0.999.
    eps: Adam's epsilon, added to :math:`\sqrt{\hat v}`, default 1e-8.
    min_step_size: the smallest step size tried, default 1e-8.
    max_step_size: the largest step size, default 1e3.
    search_direction: ``"momentum_free"`` (the paper's, default) or ``"momentum"`` (ours: the
      condition is checked along the applied direction, with its own slope).
    step_schedule: None (default) or a schedule giving a factor in [0, 1] on the applied step
      (ours, e.g. :func:`cooldown_schedule`); the search keeps the unscaled step.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with an :class:`AdamSalsaState`, taking
    the gradients as ``updates``. Its ``update`` takes ``value_fn`` (required), ``value`` (one
    extra ``value_fn`` call on updates that search when omitted), ``grad`` (for the slope;
    defaults to ``updates``) and the keyword arguments of ``value_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w):
    ...   return jnp.sum((w - jnp.array([1.0, -2.0])) ** 2)
    >>> opt = optax_ls.adam_salsa(init_step_size=0.1)
    >>> @jax.jit
    ... def step(w, state):
    ...   loss, g = jax.value_and_grad(loss_fn)(w)
    ...   updates, state = opt.update(g, state, w, value=loss, value_fn=loss_fn)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> for _ in range(50):
    ...   w, state = step(w, state)
    >>> bool(loss_fn(w) < 0.1 * loss_fn(jnp.zeros(2)))
    True

  References:
    Kenneweg et al., No learning rates needed: Introducing SALSA - Stable
    Armijo Line Search Adaptation, IJCNN 2024, Sec. II.B and III (Eq. 7).
  """
  h = _validate(
      init_step_size=init_step_size,
      c=c,
      b3=b3,
      decrease_factor=decrease_factor,
      increase_factor=increase_factor,
      speed_up=speed_up,
      max_search_interval=max_search_interval,
      max_backtracking_steps=max_backtracking_steps,
      require_decrease=require_decrease,
      min_step_size=min_step_size,
      max_step_size=max_step_size,
      check_gradient=True,  # the moments read the gradient anyway
  )
  _core.check("b1", b1, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
  _core.check("b2", b2, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
  _core.check("eps", eps, lambda v: v > 0.0, "positive")
  if search_direction not in SEARCH_DIRECTIONS:
    raise ValueError(
        f"`search_direction` must be one of {SEARCH_DIRECTIONS}, got {search_direction!r}."
    )
  along_momentum = search_direction == "momentum"
  if step_schedule is not None and not callable(step_schedule):
    raise ValueError(f"`step_schedule` must be a schedule (a callable) or None, got "
                     f"{step_schedule!r}.")

  def init_fn(params: optax.Params) -> AdamSalsaState:
    def zeros() -> optax.Params:  # two calls: separate buffers, so the state can be donated
      return jax.tree.map(lambda p: jnp.zeros(p.shape, _core.buffer_dtype(p)), params)

    return AdamSalsaState(
        count=jnp.zeros((), jnp.int32), mu=zeros(), nu=zeros(),
        **_init_search_fields(init_step_size, _core.compute_dtype(params)),
    )

  def update_fn(
      updates: optax.Updates,
      state: AdamSalsaState,
      params: optax.Params | None = None,
      *,
      value_fn: Callable[..., Any] | None = None,
      value: Any = None,
      grad: optax.Updates | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, AdamSalsaState]:
    value_fn = _core.require_value_fn(value_fn, "adam_salsa")
    _core.require_params(params, "adam_salsa")
    g = jax.tree.map(lambda u: u.astype(_core.buffer_dtype(u)), updates)
    # -sum |g|: finite and negative for a usable gradient. (Not -||g||^2: XLA
    # would share g^2 with the second moment and write it out.)
    check = -optax.tree.sum(jax.tree.map(jnp.abs, g))
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    valid = _runtime_valid(h) & (f32(b1) >= 0) & (f32(b1) < 1) & (f32(b2) >= 0) & (f32(b2) < 1)
    valid &= f32(eps) > 0
    healthy = jnp.isfinite(check) & valid
    if value is not None:
      healthy = healthy & jnp.isfinite(_core.as_scalar(value, "`value`"))
    # An update skipped for a non-finite gradient or value (or an invalid injected
    # hyperparameter) leaves the moments as they were; the kept moments also give the
    # directions (any direction is masked to zero on a skipped update), so each moment is
    # written once.
    keep = lambda new, old: jax.tree.map(  # noqa: E731
        lambda n, o: jnp.where(healthy, n, o), new, old
    )
    count = jnp.where(healthy, optax.safe_increment(state.count), state.count)
    mu = keep(optax.tree.update_moment(g, state.mu, b1, 1), state.mu)
    nu = keep(optax.tree.update_moment_per_elem_norm(g, state.nu, b2, 2), state.nu)
    mu_hat = optax.tree.bias_correction(mu, b1, count)
    applied_dir = jax.tree.map(lambda mi, v: -mi * _inv_denom(v, b2, count, eps), mu_hat, nu)

    def search_dir() -> optax.Updates:
      if along_momentum:
        return applied_dir
      return jax.tree.map(lambda gi, v: -gi * _inv_denom(v, b2, count, eps), g, nu)

    # The search direction and its slope are computed from g and nu inside the
    # search (each trial recomputes the direction rather than reading a written
    # out copy), so that an update that does not search costs about an Adam
    # step plus the reduction of `check` (measured in benchmarks/step_overhead.py).
    outcome = _step(
        h, state, value_fn, extra_args, params, value,
        trial_params=lambda eta: _core.add_step(params, eta, search_dir()),
        slope_fn=lambda: _core.real_vdot(g if grad is None else grad, search_dir()),
        check=check,
        reuse_without_descent=along_momentum,
        valid=valid,
    )
    fields = outcome.fields
    if step_schedule is not None:
      # count already includes this update when it is healthy; t counts the ones before.
      factor = jnp.asarray(step_schedule(jnp.maximum(count - 1, 0)), jnp.float32)
      # A step the schedule scales to 0 (the end of a cool-down) is zero by design.
      scheduled_out = outcome.moved & (factor == 0)
      fields = fields._replace(
          learning_rate=fields.learning_rate * factor,
          no_step_count=jnp.where(scheduled_out, state.no_step_count, fields.no_step_count),
          no_step_reason=jnp.where(scheduled_out, state.no_step_reason, fields.no_step_reason),
      )
    lr = fields.learning_rate
    new_updates = _core.masked_scale(outcome.moved, lr, applied_dir, updates)
    new_state = AdamSalsaState(count=count, mu=mu, nu=nu, **fields._asdict())
    return new_updates, optax.tree.cast_like(new_state, other_tree=state)

  return optax.GradientTransformationExtraArgs(_core.unshare_init(init_fn), update_fn)


def cooldown_schedule(total_steps: int, cooldown_fraction: float = 0.2,
                      warmup_fraction: float = 0.0) -> optax.Schedule:
  """The factor 1 until the last ``cooldown_fraction`` of ``total_steps``, then linear to 0.

  The factor of update ``t`` (from 0) is ``min(1, (total_steps - t) / n)`` with
  ``n = max(1, round(cooldown_fraction * total_steps))`` updates of cool-down; 0 from
  ``total_steps`` on. ``cooldown_fraction=0`` keeps the factor 1 for the whole run. With
  ``warmup_fraction > 0`` the factor is also multiplied by ``min(1, (t + 1) / w)``,
  ``w = max(1, round(warmup_fraction * total_steps))``: a linear warm-up. It is the
  ``step_schedule`` of :func:`adam_salsa_cooldown`; see :doc:`/methods/salsa`.

  Args:
    total_steps: the number of updates of the run (a positive integer).
    cooldown_fraction: the final fraction of the run over which the factor falls to 0, in
      [0, 1], default 0.2.
    warmup_fraction: the first fraction of the run over which the factor rises linearly to
      1, in [0, 1), default 0 (none).

  Returns:
    An :data:`optax.Schedule` of the update count.

  Example:
    >>> import optax_ls
    >>> f = optax_ls.cooldown_schedule(10, 0.2)
    >>> [round(float(f(t)), 2) for t in range(11)]
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0]

  References:
    Hägele et al., Scaling Laws and Compute-Optimal Training Beyond Fixed Training
    Durations, NeurIPS 2024 (the constant rate with a final linear cool-down).
  """
  _core.check("total_steps", total_steps, lambda v: v >= 1 and v == int(v),
              "a positive integer")
  _core.check("cooldown_fraction", cooldown_fraction, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
  _core.check("warmup_fraction", warmup_fraction, lambda v: 0.0 <= v < 1.0, "in [0, 1)")

  def schedule(count: jax.Array) -> jax.Array:
    # jnp throughout: optax.inject_hyperparams may pass the arguments traced.
    total = jnp.asarray(total_steps, jnp.float32)
    t = jnp.asarray(count, jnp.float32)
    n = jnp.maximum(1.0, jnp.round(jnp.asarray(cooldown_fraction, jnp.float32) * total))
    factor = jnp.clip((total - t) / n, 0.0, 1.0)
    warmup = jnp.asarray(warmup_fraction, jnp.float32)
    w = jnp.maximum(1.0, jnp.round(warmup * total))
    return jnp.where(warmup > 0, jnp.minimum(1.0, (t + 1.0) / w), 1.0) * factor

  return schedule


def adam_salsa_cooldown(
    total_steps: int,
    cooldown_fraction: float = 0.2,
    warmup_fraction: float = 0.05,
    init_step_size: float = 1.0,
    c: float = 0.1,
    b3: float = 0.99,
    decrease_factor: float = 0.9,
    increase_factor: float = 2.0 ** (1.0 / 500),
    speed_up: bool = True,
    max_search_interval: int = 10,
    max_backtracking_steps: int = 100,
    require_decrease: bool = False,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    min_step_size: float = 1e-8,
    max_step_size: float = 1e3,
) -> optax.GradientTransformationExtraArgs:
  r"""Our recommended line search: Adam + SaLSa along the momentum direction, with a cool-down.

  Not a method of the papers: :func:`adam_salsa` with ``search_direction="momentum"`` (the
  smoothed Armijo condition is checked along the applied direction
  :math:`-\hat m / (\sqrt{\hat v} + \epsilon)`), the sufficient decrease constant
  ``c = 0.1`` (the paper's 0.3), and
  ``step_schedule=cooldown_schedule(total_steps, cooldown_fraction, warmup_fraction)``: the
  searched step is applied times a factor rising linearly over the first ``warmup_fraction``
  of the run, as it is in the middle, then, over the last ``cooldown_fraction`` of the run,
  times a factor falling linearly to 0. Everything else is the paper's. See
  :doc:`/methods/salsa` for why each option helps (measured on three workloads;
  ``warmup_fraction=0, c=0.3`` gives the recipe's first configuration).

  Args:
    total_steps: the number of updates of the run (a positive integer).
    cooldown_fraction: the final fraction of the run over which the step falls to 0, in
      [0, 1], default 0.2 (0 for none).
    warmup_fraction: the first fraction of the run over which the applied step rises
      linearly from 1/w of the searched one to all of it (w its updates), in [0, 1), default
      0.05 (0 for none); see :func:`cooldown_schedule`.
    init_step_size: the step size before the first search, default 1.
    c: the sufficient decrease constant, in (0, 1), default 0.1 (the paper's 0.3).
    b3: :math:`\beta_3`, the decay of :math:`h` and :math:`s`, in [0, 1), default 0.99.
    decrease_factor: backtracking factor, in (0, 1), default 0.9.
    increase_factor: growth of the step size before each search, at least 1, default
      :math:`2^{1/500}`.
    speed_up: search only every :math:`L` updates, default True.
    max_search_interval: :math:`L_{max}`, a positive integer, default 10.
    max_backtracking_steps: the largest number of trials per search, default 100.
    require_decrease: also require that an accepted step decreases the loss, default False.
    b1: Adam's first-moment decay, default 0.9.
    b2: Adam's second-moment decay, default 0.999.
    eps: Adam's epsilon, added to :math:`\sqrt{\hat v}`, default 1e-8.
    min_step_size: the smallest step size tried, default 1e-8.
    max_step_size: the largest step size, default 1e3.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with an :class:`AdamSalsaState`, called
    as :func:`adam_salsa` (``value_fn`` required, ``value`` recommended).

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w):
    ...   return jnp.sum((w - jnp.array([1.0, -2.0])) ** 2)
    >>> opt = optax_ls.adam_salsa_cooldown(total_steps=60)
    >>> @jax.jit
    ... def step(w, state):
    ...   loss, g = jax.value_and_grad(loss_fn)(w)
    ...   updates, state = opt.update(g, state, w, value=loss, value_fn=loss_fn)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> for _ in range(60):
    ...   w, state = step(w, state)
    >>> bool(loss_fn(w) < 0.01 * loss_fn(jnp.zeros(2)))
    True
    >>> # The last update applied 1/12 of the searched step (12 updates of cool-down).
    >>> round(float(state.learning_rate / state.step_size), 3)
    0.083

  References:
    Kenneweg et al., No learning rates needed: Introducing SALSA - Stable Armijo Line
    Search Adaptation, IJCNN 2024, Sec. III (the search); Hägele et al., Scaling Laws and
    Compute-Optimal Training Beyond Fixed Training Durations, NeurIPS 2024 (the cool-down).
  """
  schedule = cooldown_schedule(total_steps, cooldown_fraction, warmup_fraction)
  return adam_salsa(
      init_step_size=init_step_size, c=c, b3=b3, decrease_factor=decrease_factor,
      increase_factor=increase_factor, speed_up=speed_up,
      max_search_interval=max_search_interval,
      max_backtracking_steps=max_backtracking_steps, require_decrease=require_decrease, b1=b1,
      b2=b2, eps=eps, min_step_size=min_step_size, max_step_size=max_step_size,
      search_direction="momentum", step_schedule=schedule,
  )


def salsa_rule(
    value0: jax.Array,
    norm_avg: jax.Array,
    decrease_avg: jax.Array,
    c: float | jax.Array,
    b3: float | jax.Array,
    decrease_factor: float | jax.Array,
    require_decrease: bool = False,
) -> _core.StepRule:
  r"""The smoothed Armijo (SaLSa) step rule for :func:`optax_ls.backtracking_search`.

  A trial :math:`\eta` with value :math:`f_B(w + \eta d)` is accepted when
  :math:`\beta_3 h_{k-1} + (1-\beta_3)(f_B(w) - f_B(w + \eta d)) \ge c\,\eta\,s_k`
  (Eq. 6), with ``decrease_avg`` :math:`= h_{k-1}` and ``norm_avg``
  :math:`= s_k` (already including this search's slope); otherwise the next
  trial is ``decrease_factor`` times smaller. With ``require_decrease`` an
  accepted trial must also satisfy :math:`f_B(w + \eta d) \le f_B(w)`.
  """

  def rule(eta: jax.Array, value: jax.Array):
    decrease = value0 - value
    ok = b3 * decrease_avg + (1.0 - b3) * decrease >= c * eta * norm_avg
    if require_decrease:
      ok = ok & (decrease >= 0.0)
    return ok, eta * decrease_factor, ok

  return rule


# ---------------------------------------------------------------------------
# Shared pieces.
# ---------------------------------------------------------------------------


class _Fields(NamedTuple):
  """The search fields common to both states (same names as the state fields)."""

  learning_rate: jax.Array
  step_size: jax.Array
  num_evals: jax.Array
  exhausted: jax.Array
  decrease_avg: jax.Array
  norm_avg: jax.Array
  step_size_fast: jax.Array
  step_size_slow: jax.Array
  search_interval: jax.Array
  steps_since_search: jax.Array
  no_step_count: jax.Array
  no_step_reason: jax.Array


class _Outcome(NamedTuple):
  moved: jax.Array  # whether a non-zero step is applied
  fields: _Fields  # fields.learning_rate is the applied step (0 if none)


def _init_search_fields(init_step_size: Any, dtype: Any) -> dict[str, jax.Array]:
  """The search fields at the start; the averaged margins in ``dtype`` (the decisions')."""
  zero = jnp.zeros((), jnp.float32)
  return _Fields(
      learning_rate=jnp.asarray(init_step_size, jnp.float32),
      step_size=jnp.asarray(init_step_size, jnp.float32),
      num_evals=jnp.zeros((), jnp.int32),
      exhausted=jnp.zeros((), bool),
      decrease_avg=jnp.zeros((), dtype),
      norm_avg=jnp.zeros((), dtype),
      step_size_fast=zero,
      step_size_slow=zero,
      # L = 1 and no update since: the first update searches.
      search_interval=jnp.ones((), jnp.int32),
      steps_since_search=jnp.zeros((), jnp.int32),
      no_step_count=jnp.zeros((), jnp.int32),
      no_step_reason=jnp.zeros((), jnp.int32),
  )._asdict()


def _inv_denom(nu: jax.Array, b2: Any, count: jax.Array, eps: Any) -> jax.Array:
  """``1 / (sqrt(nu_hat) + eps)``, with Adam's bias correction of ``nu``."""
  return 1.0 / (jnp.sqrt(nu / (1.0 - b2**count)) + eps)


def _search_interval(fast: jax.Array, slow: jax.Array, max_interval: Any) -> jax.Array:
  """Eq. 9-11: ``clip(round(1 / (r - 1)), 1, max_interval)``, ``r = fast/slow`` (or inverse)."""
  r = fast / slow
  r = jnp.maximum(r, 1.0 / r)
  # r == 1 (an unchanged step size) or a non-finite r: the longest interval.
  x = jnp.where(r > 1.0, 1.0 / (r - 1.0), jnp.inf)
  x = jnp.clip(x, 1.0, jnp.asarray(max_interval, jnp.float32))
  return jnp.round(x).astype(jnp.int32)


class _Search(NamedTuple):
  """What an update learns from its search (or from skipping it), all scalars."""

  searched: jax.Array  # a search ran (due, finite value and slope, descent)
  ascent: jax.Array  # due, finite value and slope, but no descent direction
  non_finite: jax.Array  # due and ready, but the value or the slope is not finite
  accepted: jax.Array
  step_size: jax.Array  # the accepted (or last) trial
  next_step_size: jax.Array  # where an exhausted search resumes
  num_evals: jax.Array
  norm_avg: jax.Array  # s_k of the search
  decrease_avg: jax.Array  # h_k at the last trial


def _step(
    h: _Hyper,
    state: ScaleBySalsaState | AdamSalsaState,
    value_fn: Callable[..., Any],
    extra_args: dict[str, Any],
    params: optax.Params,
    value: Any,
    trial_params: Callable[[jax.Array], optax.Params],
    slope_fn: Callable[[], jax.Array],
    check: jax.Array | None,
    reuse_without_descent: bool = False,
    valid: jax.Array | None = None,
) -> _Outcome:
  """One SaLSa update: searches if due, else reuses the last accepted step.

  ``trial_params(eta)`` is the trial point at step size ``eta`` along the
  search direction and ``slope_fn()`` that direction's slope; both are only
  evaluated on an update that searches (inside :func:`jax.lax.cond`), so that
  the others cost about an SGD (or Adam) step. ``check`` is a cheap scalar,
  finite and negative when the gradient can be used (e.g. ``-||g||^2``), or
  None: updates that do not search then check ``value`` only. With
  ``reuse_without_descent``, a due search whose direction is not a descent
  direction (finite value and slope, slope >= 0) applies the last accepted
  step instead of none, and the next update searches. ``valid`` (default: the SaLSa
  hyperparameters, :func:`_runtime_valid`) false makes a zero update without a search.
  """
  objective = _core.bind_value_fn(value_fn, extra_args)
  due = state.steps_since_search + 1 >= state.search_interval
  if not h.speed_up:
    due = jnp.ones((), bool)
  if valid is None:
    valid = _runtime_valid(h)
  finite = jnp.ones((), bool) if check is None else jnp.isfinite(check)
  ready = finite if check is None else finite & (check < 0)
  # The decisions' dtype: of the parameters and the loss (traced, not run, without `value`).
  dtype = _core.compute_dtype(params, jax.eval_shape(objective, params) if value is None
                              else value)
  if value is not None:
    value0 = _core.as_scalar(value, "`value`", dtype)
    value_finite = jnp.isfinite(value0)
    finite, ready = finite & value_finite, ready & value_finite
  ready = ready & valid
  b3 = h.b3

  def search() -> _Search:
    slope = jnp.asarray(slope_fn()).astype(dtype)
    if value is None:
      # The loss at params, only when the gradient can be used.
      v0 = jax.lax.cond(
          ready, lambda: _core.as_scalar(objective(params), "`value_fn(params)`", dtype),
          lambda: jnp.full((), jnp.nan, dtype),
      )
      extra = ready.astype(jnp.int32)
    else:
      v0, extra = value0, 0
    line_finite = jnp.isfinite(v0) & jnp.isfinite(slope)
    descent = ready & line_finite & (slope < 0)
    norm_avg = b3 * state.norm_avg + (1.0 - b3) * (-slope)
    rule = salsa_rule(v0, norm_avg, state.decrease_avg, h.c, b3, h.decrease_factor,
                      h.require_decrease)
    first = jnp.clip(state.step_size * h.increase_factor, h.min_step_size, h.max_step_size)
    result = _core.backtracking_search(
        lambda eta: objective(trial_params(eta)),
        rule,
        first,
        max_evals=h.max_backtracking_steps,
        min_step_size=h.min_step_size,
        max_step_size=h.max_step_size,
        enabled=descent,
        value_dtype=dtype,
    )
    return _Search(
        searched=descent,
        ascent=ready & line_finite & ~descent,
        non_finite=ready & ~line_finite,
        accepted=descent & result.accepted,
        step_size=result.step_size,
        next_step_size=result.next_step_size,
        num_evals=(result.num_evals + extra).astype(jnp.int32),
        norm_avg=jnp.asarray(norm_avg).astype(dtype),
        decrease_avg=jnp.asarray(b3 * state.decrease_avg + (1.0 - b3) * (v0 - result.value)
                                 ).astype(dtype),
    )

  def skip() -> _Search:
    zero = jnp.zeros((), jnp.float32)
    return _Search(
        searched=jnp.zeros((), bool),
        ascent=jnp.zeros((), bool),
        non_finite=jnp.zeros((), bool),
        accepted=jnp.zeros((), bool),
        step_size=zero,
        next_step_size=zero,
        num_evals=jnp.zeros((), jnp.int32),
        norm_avg=jnp.asarray(state.norm_avg).astype(dtype),
        decrease_avg=jnp.asarray(state.decrease_avg).astype(dtype),
    )

  # The predicate depends on the state alone, not on this update's gradient:
  # on an accelerator the branch can be chosen before the gradient is ready.
  out = jax.lax.cond(due, search, skip)
  accepted = out.accepted
  exhausted = out.searched & ~accepted
  eta = out.step_size
  fast = _FAST_DECAY * state.step_size_fast + (1.0 - _FAST_DECAY) * eta
  slow = _SLOW_DECAY * state.step_size_slow + (1.0 - _SLOW_DECAY) * eta
  keep = lambda new, old: jnp.where(accepted, new, old)  # noqa: E731
  resume = jnp.maximum(out.next_step_size, h.min_step_size)
  step_size = jnp.where(accepted, eta, jnp.where(exhausted, resume, state.step_size))
  interval = jnp.where(
      accepted,
      _search_interval(fast, slow, h.max_search_interval),
      jnp.where(exhausted, 1, state.search_interval),
  )
  # Between searches the last accepted step is applied as it is.
  reuse = ~due & ready
  if reuse_without_descent:
    reuse = reuse | out.ascent
  applied = jnp.where(accepted, eta, jnp.where(reuse, state.step_size, 0.0))
  applied = applied.astype(jnp.float32)
  moved = applied > 0
  no_step_count, no_step_reason = _core.no_step(
      state.no_step_count, moved, invalid=~valid, non_finite=~finite | out.non_finite,
      not_descent=(False if check is None else check >= 0) | out.ascent, exhausted=exhausted)
  fields = _Fields(
      learning_rate=applied,
      step_size=step_size.astype(jnp.float32),
      num_evals=out.num_evals,
      exhausted=exhausted,
      decrease_avg=keep(out.decrease_avg, state.decrease_avg),
      norm_avg=keep(out.norm_avg, state.norm_avg),
      step_size_fast=keep(fast, state.step_size_fast),
      step_size_slow=keep(slow, state.step_size_slow),
      search_interval=interval.astype(jnp.int32),
      steps_since_search=jnp.where(out.searched, 0, state.steps_since_search + 1).astype(
          jnp.int32),
      no_step_count=no_step_count,
      no_step_reason=no_step_reason,
  )
  return _Outcome(moved=moved, fields=fields)


def _salsa_transformation(
    method: str, sign: float, **hyper: Any
) -> optax.GradientTransformationExtraArgs:
  """SaLSa along ``sign * updates``: ``scale_by_salsa`` (+1) and ``salsa`` (-1).

  ``salsa`` searches along the incoming gradient with a negative step instead
  of chaining ``optax.scale(-1)``, so the negated gradient is never written out.
  """
  h = _validate(**hyper)

  def init_fn(params: optax.Params) -> ScaleBySalsaState:
    return ScaleBySalsaState(**_init_search_fields(h.init_step_size,
                                                   _core.compute_dtype(params)))

  def update_fn(
      updates: optax.Updates,
      state: ScaleBySalsaState,
      params: optax.Params | None = None,
      *,
      value_fn: Callable[..., Any] | None = None,
      value: Any = None,
      grad: optax.Updates | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, ScaleBySalsaState]:
    value_fn = _core.require_value_fn(value_fn, method)
    _core.require_params(params, method)
    # The direction is d = sign * updates; without `grad`, g = -d is assumed.
    def slope_fn() -> jax.Array:
      if grad is None:
        return -_core.real_vdot(updates, updates)
      return sign * _core.real_vdot(grad, updates)

    # With check_gradient the slope, computed at every update, also guards the
    # updates that do not search; without, it is computed only when searching.
    slope = slope_fn() if h.check_gradient else None
    outcome = _step(
        h, state, value_fn, extra_args, params, value,
        trial_params=lambda eta: _core.add_step(params, sign * eta, updates),
        slope_fn=slope_fn if slope is None else (lambda: slope),
        check=slope,
    )
    new_updates = _core.masked_scale(outcome.moved, sign * outcome.fields.learning_rate, updates,
                                     updates)
    new_state = ScaleBySalsaState(**outcome.fields._asdict())
    return new_updates, optax.tree.cast_like(new_state, other_tree=state)

  return optax.GradientTransformationExtraArgs(_core.unshare_init(init_fn), update_fn)


def _runtime_valid(h: _Hyper) -> jax.Array:
  """Whether the hyperparameters are valid as traced values (``optax.inject_hyperparams``).

  Construction checks the concrete ones; an injected value is only known here. With an
  invalid one an update searches not (no trial budget spent on a condition that cannot
  hold) and makes no step.
  """
  f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
  ok = (f32(h.c) > 0) & (f32(h.c) < 1) & (f32(h.b3) >= 0) & (f32(h.b3) < 1)
  ok &= (f32(h.decrease_factor) > 0) & (f32(h.decrease_factor) < 1)
  ok &= f32(h.increase_factor) >= 1
  ok &= (f32(h.min_step_size) > 0) & (f32(h.init_step_size) > 0)
  ok &= f32(h.max_step_size) >= f32(h.min_step_size)
  ok &= (f32(h.max_backtracking_steps) >= 1) & (f32(h.max_search_interval) >= 1)
  return ok


def _validate(**kw: Any) -> _Hyper:
  """Checks the SaLSa hyperparameters; raises ``ValueError`` naming the argument."""
  check = _core.check
  check("c", kw["c"], lambda v: 0.0 < v < 1.0, "in (0, 1)")
  check("b3", kw["b3"], lambda v: 0.0 <= v < 1.0, "in [0, 1)")
  check("decrease_factor", kw["decrease_factor"], lambda v: 0.0 < v < 1.0, "in (0, 1)")
  check("increase_factor", kw["increase_factor"], lambda v: v >= 1.0, "at least 1")
  _core.check_step_sizes(kw["init_step_size"], kw["min_step_size"], kw["max_step_size"])
  for name in ("max_backtracking_steps", "max_search_interval"):
    check(name, kw[name], lambda v: v >= 1 and v == int(v), "a positive integer")
  for name in ("speed_up", "require_decrease", "check_gradient"):
    if not isinstance(kw[name], bool):
      raise ValueError(f"`{name}` must be a bool, got {kw[name]!r}.")
  return _Hyper(**kw)
