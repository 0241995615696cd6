"""Line search on a metric: l-SLS, a-SLS and sa-SLS (accuracy-based SLS).

The search of SLS runs on a metric the user passes: the loss to minimise
(l-SLS), or the accuracy (a-SLS) or a smooth accuracy (sa-SLS) to maximise.
The accuracy has no gradient, so the slope of the Armijo condition is a finite
difference along the search direction, for every metric alike.

References:
  Hackel, "Accuracy Based Line Search", 2023 (seed 000), Sec. 5, Alg. 3-5,
  Eq. 26-30; code: github.com/OsaneHackel/accuracy-SLS.
  Vaswani et al., Painless Stochastic Gradient, NeurIPS 2019 (SLS, the
  defaults and the reset rule).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_ls import _core, _sls


class ScaleByMetricSlsState(NamedTuple):
  """State of :func:`scale_by_metric_sls`, :func:`l_sls`, :func:`a_sls` and :func:`sa_sls`.

  Attributes:
    learning_rate: the step size applied in the last update (float32): the
      accepted step, or 0 when the last update made no step (see ``exhausted``).
    step_size: the step size the next search starts from, before its reset.
    num_evals: how many times the metric (``metric_fn``, or ``value_fn`` for
      l-SLS) ran in the last update (int32): the metric at ``params`` unless it
      was given, the one at the finite-difference point, and every trial.
    exhausted: whether the last search ended without an acceptable step
      (trial budget or ``min_step_size`` reached).
    slope: the finite-difference directional derivative of the metric along
      the search direction ``d`` in the last update,
      ``(m(w + eps d) - m(w)) / eps`` (in :func:`optax_ls.compute_dtype` of the
      parameters: float64 for float64 ones, else float32; 0 when that update made no
      search because of a non-finite input). For l-SLS with ``d = -g`` it
      approximates ``-||g||^2``; the paper's ``h'(0)`` is ``-slope`` for a
      minimised metric and ``slope`` for a maximised one.
    no_step_count: how many updates in a row made no step (int32; 0 after a step).
    no_step_reason: why the last update made no step (int32; 0: it made one; see
      :func:`optax_ls.check_progress`): an invalid injected hyperparameter, a non-finite
      metric, direction or ``value``, a zero direction (or, with ``require_improvement``,
      a slope that shows no improvement), or an exhausted search.
  """

  learning_rate: jax.Array
  step_size: jax.Array
  num_evals: jax.Array
  exhausted: jax.Array
  slope: jax.Array
  no_step_count: jax.Array
  no_step_reason: jax.Array


def scale_by_metric_sls(
    maximize: bool,
    init_step_size: float = 1.0,
    c: float = 0.1,
    decrease_factor: float = 0.9,
    gamma: float = 2.0,
    n_batches_per_epoch: int | None = None,
    reset_option: int = 1,
    max_backtracking_steps: int = 100,
    eps: float = 1e-4,
    min_step_size: float = 1e-8,
    max_step_size: float = 1e3,
    require_improvement: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales a descent direction by an Armijo line search on a metric.

  The incoming ``updates`` are a search direction :math:`d` (``-g`` for SGD) and :math:`m` is
  the metric on the current mini-batch (``metric_fn``; ``value_fn`` when minimising without
  it). The slope is a finite difference, computed once per update (Eq. 26-27),
  :math:`s = (m(w + \epsilon d) - m(w)) / \epsilon`; after the SLS reset of the step size the
  search backtracks, :math:`\eta \leftarrow \beta_b \eta`, until (Eq. 29, Alg. 4)

  .. math::
    \text{minimise: } m(w + \eta d) \le m(w) + c\,\eta\,s, \qquad
    \text{maximise: } m(w + \eta d) \ge m(w) + c\,\eta\,s,

  and the update is :math:`\eta d`. See :doc:`/methods/metric_sls` for why the step size can
  collapse, the resolution of the slope, the differences from the reference code and the
  robustness rules.

  Args:
    maximize: whether the metric is maximised (accuracy) or minimised (loss).
    init_step_size: the first step size (the paper's :math:`\eta_{\max}`), default 1.
    c: sufficient improvement constant, in (0, 1), default 0.1.
    decrease_factor: backtracking factor :math:`\beta_b`, in (0, 1), default 0.9.
    gamma: growth factor per epoch of ``reset_option=1``, at least 1, default 2.
    n_batches_per_epoch: mini-batches per epoch; required for ``reset_option=1``.
    reset_option: 0 (keep), 1 (grow by ``gamma`` per epoch, default) or 2 (restart from
      ``init_step_size``), as in :func:`sls`.
    max_backtracking_steps: the largest number of trials per update, default 100.
    eps: the finite-difference step :math:`\epsilon`, positive, default 1e-4.
    min_step_size: the smallest step size tried, default 1e-8.
    max_step_size: the largest step size, default 1e3.
    require_improvement: make no step (and keep the step size) when the slope shows no
      improvement, default False (ours; off in the paper).

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleByMetricSlsState`.
    Its ``update`` takes ``value_fn`` (required; the metric when minimising without
    ``metric_fn``, not called otherwise), ``metric_fn`` (the scalar metric
    ``metric_fn(params, **kwargs)``; required when maximising), ``value`` (the loss at
    ``params``), ``metric_value`` (the metric at ``params``, if known), ``grad`` (accepted and
    unused) and the keyword arguments of the metric.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> x = jnp.array([[1.0, 2.0], [-1.0, 0.5], [2.0, -1.0], [-2.0, -1.5]])
    >>> y = jnp.array([0, 1, 0, 1])
    >>> def loss_fn(w):
    ...   return optax.softmax_cross_entropy_with_integer_labels(x @ w, y).mean()
    >>> opt = optax.chain(optax.scale(-1.0),
    ...                   optax_ls.scale_by_metric_sls(maximize=True, reset_option=0))
    >>> w = jnp.zeros((2, 2))
    >>> state = opt.init(w)
    >>> loss, g = jax.value_and_grad(loss_fn)(w)
    >>> updates, state = opt.update(
    ...     g, state, w, value=loss, value_fn=loss_fn,
    ...     metric_fn=lambda p: optax_ls.smooth_accuracy(x @ p, y))
    >>> w = optax.apply_updates(w, updates)
    >>> bool(optax_ls.smooth_accuracy(x @ w, y) > 0.5)
    True

  References:
    Hackel, Accuracy Based Line Search, Bachelor's thesis, 2023, Sec. 5,
    Alg. 3-4, Eq. 26-29 (code: github.com/OsaneHackel/accuracy-SLS).
    Vaswani et al., Painless Stochastic Gradient: Interpolation,
    Line-Search, and Convergence Rates, NeurIPS 2019, Alg. 1-2 (SLS).
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _metric_sls("scale_by_metric_sls", 1.0, **locals())


def l_sls(
    init_step_size: float = 1.0,
    c: float = 0.1,
    decrease_factor: float = 0.9,
    gamma: float = 2.0,
    n_batches_per_epoch: int | None = None,
    reset_option: int = 1,
    max_backtracking_steps: int = 100,
    eps: float = 1e-4,
    min_step_size: float = 1e-8,
    max_step_size: float = 1e3,
    require_improvement: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""l-SLS: SGD with an Armijo line search on the loss, finite-difference slope.

  SLS (:func:`sls`) with the slope :math:`-\|g\|^2` replaced by the finite difference of the
  metric :math:`m` (``metric_fn`` if given, else the loss ``value_fn``) along :math:`-g`
  (Eq. 26): the step :math:`\eta` is accepted when

  .. math::
    m(w - \eta g) \le m(w) + c\,\eta\,\frac{m(w - \epsilon g) - m(w)}{\epsilon}.

  It takes gradients and makes one ``value_fn`` call more per step than :func:`sls`; the
  defaults are SLS's, which the paper keeps. See :doc:`/methods/metric_sls` for the resolution
  of the slope, the differences from the reference code and the robustness rules.

  Args:
    init_step_size: the first step size (the paper's :math:`\eta_{\max}`), default 1.
    c: sufficient improvement constant, in (0, 1), default 0.1.
    decrease_factor: backtracking factor :math:`\beta_b`, in (0, 1), default 0.9.
    gamma: growth factor per epoch of ``reset_option=1``, at least 1, default 2.
    n_batches_per_epoch: mini-batches per epoch; required for ``reset_option=1`` (the
      default), unused otherwise.
    reset_option: 0 (keep), 1 (grow by ``gamma`` per epoch, default) or 2 (restart from
      ``init_step_size``), as in :func:`sls`.
    max_backtracking_steps: the largest number of trials per update, default 100.
    eps: the finite-difference step :math:`\epsilon` of the slope, positive, default 1e-4.
    min_step_size: the smallest step size tried, default 1e-8.
    max_step_size: the largest step size, default 1e3.
    require_improvement: make no step (and keep the step size) when the slope shows no
      decrease, default False, as in the paper.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleByMetricSlsState`,
    taking the gradients as ``updates``. Its ``update`` takes ``value_fn`` (required; the
    metric unless ``metric_fn`` is given), ``metric_fn`` (optional, another metric to
    minimise), ``value`` (the loss at ``params``; one more call when omitted),
    ``metric_value`` (the metric at ``params``, if known), ``grad`` (accepted and unused) and
    the keyword arguments of the metric.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w, x, y):
    ...   return jnp.mean((x @ w - y) ** 2)
    >>> x = jnp.array([[1.0, 2.0], [3.0, 1.0], [0.5, -1.0]])
    >>> y = jnp.array([1.0, 2.0, 0.0])
    >>> opt = optax_ls.l_sls(reset_option=0)
    >>> @jax.jit
    ... def step(w, state):
    ...   loss, g = jax.value_and_grad(loss_fn)(w, x, y)
    ...   updates, state = opt.update(g, state, w, value=loss, value_fn=loss_fn, x=x, y=y)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> for _ in range(20):
    ...   w, state = step(w, state)
    >>> bool(loss_fn(w, x, y) < 0.01)
    True

  References:
    Hackel, Accuracy Based Line Search, Bachelor's thesis, 2023, Sec. 5.1,
    Alg. 3-4, Eq. 26, 29 (l-SLS).
    Vaswani et al., Painless Stochastic Gradient: Interpolation,
    Line-Search, and Convergence Rates, NeurIPS 2019, Alg. 1-2 (SLS).
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _metric_sls("l_sls", -1.0, maximize=False, **locals())


def a_sls(
    init_step_size: float = 1.0,
    c: float = 0.1,
    decrease_factor: float = 0.9,
    gamma: float = 2.0,
    n_batches_per_epoch: int | None = None,
    reset_option: int = 1,
    max_backtracking_steps: int = 100,
    eps: float = 1e-4,
    min_step_size: float = 1e-8,
    max_step_size: float = 1e3,
    require_improvement: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""a-SLS: SGD whose step size maximises the accuracy by an Armijo line search.

  Takes gradients, searches along :math:`-g` and accepts :math:`\eta` when

  .. math::
    a(w - \eta g) \ge a(w) + c\,\eta\,\frac{a(w - \epsilon g) - a(w)}{\epsilon},

  with :math:`a` the accuracy on the mini-batch, passed as ``metric_fn`` (e.g. with
  :func:`accuracy`). As the paper found, it does not train: the accuracy is piecewise
  constant, so only short steps meet the condition and the step size collapses (Sec. 6.1);
  use :func:`sa_sls` to train. See :doc:`/methods/metric_sls` for the collapse and the
  robustness rules.

  Args:
    init_step_size: the first step size (the paper's :math:`\eta_{\max}`), default 1.
    c: sufficient improvement constant, in (0, 1), default 0.1.
    decrease_factor: backtracking factor :math:`\beta_b`, in (0, 1), default 0.9.
    gamma: growth factor per epoch of ``reset_option=1``, at least 1, default 2.
    n_batches_per_epoch: mini-batches per epoch; required for ``reset_option=1`` (the
      default), unused otherwise.
    reset_option: 0 (keep), 1 (grow by ``gamma`` per epoch, default) or 2 (restart from
      ``init_step_size``), as in :func:`sls`.
    max_backtracking_steps: the largest number of trials per update, default 100.
    eps: the finite-difference step :math:`\epsilon` of the slope, positive, default 1e-4.
    min_step_size: the smallest step size tried, default 1e-8.
    max_step_size: the largest step size, default 1e3.
    require_improvement: make no step (and keep the step size) when the slope shows no
      improvement, default False, as in the paper.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleByMetricSlsState`,
    taking the gradients as ``updates``. Its ``update`` takes ``metric_fn`` (required, the
    accuracy on the mini-batch), ``value_fn`` (required for a uniform call; not called),
    ``value`` (optional: the loss; a non-finite one skips the step), ``metric_value`` (the
    metric at ``params``, if known), ``grad`` (accepted and unused) and the keyword arguments
    of the metric.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> x = jnp.array([[1.0, 2.0], [-1.0, 0.5], [2.0, -1.0], [-2.0, -1.5]])
    >>> y = jnp.array([0, 1, 0, 1])
    >>> def loss_fn(w):
    ...   return optax.softmax_cross_entropy_with_integer_labels(x @ w, y).mean()
    >>> opt = optax_ls.a_sls(reset_option=0)
    >>> w = jnp.zeros((2, 2))
    >>> state = opt.init(w)
    >>> loss, g = jax.value_and_grad(loss_fn)(w)
    >>> updates, state = opt.update(g, state, w, value=loss, value_fn=loss_fn,
    ...                             metric_fn=lambda p: optax_ls.accuracy(x @ p, y))
    >>> w = optax.apply_updates(w, updates)
    >>> float(optax_ls.accuracy(x @ w, y))
    1.0

  References:
    Hackel, Accuracy Based Line Search, Bachelor's thesis, 2023, Sec. 5.1
    (Alg. 3-4, Eq. 27, 29) and Sec. 6.1 (the collapse, Fig. 15).
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _metric_sls("a_sls", -1.0, maximize=True, **locals())


def sa_sls(
    init_step_size: float = 1.0,
    c: float = 0.1,
    decrease_factor: float = 0.9,
    gamma: float = 2.0,
    n_batches_per_epoch: int | None = None,
    reset_option: int = 1,
    max_backtracking_steps: int = 100,
    eps: float = 1e-4,
    min_step_size: float = 1e-8,
    max_step_size: float = 1e3,
    require_improvement: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""sa-SLS: SGD whose step size maximises a smooth accuracy by an Armijo line search.

  :func:`a_sls` on the smooth accuracy :math:`sa` of :func:`smooth_accuracy` (Eq. 30), passed
  as ``metric_fn``: the step :math:`\eta` along :math:`-g` is accepted when

  .. math::
    sa(w - \eta g) \ge sa(w) + c\,\eta\,\frac{sa(w - \epsilon g) - sa(w)}{\epsilon}.

  The paper's defaults are SLS's with :math:`\epsilon = 10^{-4}`; it reports occasional
  collapses of the step size (3 of 40 runs). See :doc:`/methods/metric_sls` for their cause,
  the cost per step and the robustness rules.

  Args:
    init_step_size: the first step size (the paper's :math:`\eta_{\max}`), default 1.
    c: sufficient improvement constant, in (0, 1), default 0.1.
    decrease_factor: backtracking factor :math:`\beta_b`, in (0, 1), default 0.9.
    gamma: growth factor per epoch of ``reset_option=1``, at least 1, default 2.
    n_batches_per_epoch: mini-batches per epoch; required for ``reset_option=1`` (the
      default), unused otherwise.
    reset_option: 0 (keep), 1 (grow by ``gamma`` per epoch, default) or 2 (restart from
      ``init_step_size``), as in :func:`sls`.
    max_backtracking_steps: the largest number of trials per update, default 100.
    eps: the finite-difference step :math:`\epsilon` of the slope, positive, default 1e-4.
    min_step_size: the smallest step size tried, default 1e-8.
    max_step_size: the largest step size, default 1e3.
    require_improvement: make no step (and keep the step size) when the slope shows no
      improvement, default False, as in the paper.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with a :class:`ScaleByMetricSlsState`,
    taking the gradients as ``updates``. Its ``update`` takes ``metric_fn`` (required, the
    smooth accuracy on the mini-batch), ``value_fn`` (required for a uniform call; not
    called), ``value`` (optional: the loss; a non-finite one skips the step),
    ``metric_value`` (the metric at ``params``, if known), ``grad`` (accepted and unused) and
    the keyword arguments of the metric.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> x = jnp.array([[1.0, 2.0], [-1.0, 0.5], [2.0, -1.0], [-2.0, -1.5]])
    >>> y = jnp.array([0, 1, 0, 1])
    >>> def loss_fn(w, x, y):
    ...   return optax.softmax_cross_entropy_with_integer_labels(x @ w, y).mean()
    >>> def metric_fn(w, x, y):
    ...   return optax_ls.smooth_accuracy(x @ w, y)
    >>> opt = optax_ls.sa_sls(n_batches_per_epoch=1)
    >>> @jax.jit
    ... def step(w, state):
    ...   loss, g = jax.value_and_grad(loss_fn)(w, x, y)
    ...   updates, state = opt.update(g, state, w, value=loss, value_fn=loss_fn,
    ...                               metric_fn=metric_fn, x=x, y=y)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.zeros((2, 2))
    >>> state = opt.init(w)
    >>> for _ in range(10):
    ...   w, state = step(w, state)
    >>> bool(metric_fn(w, x, y) > 0.6)
    True

  References:
    Hackel, Accuracy Based Line Search, Bachelor's thesis, 2023, Sec. 5,
    Alg. 3-5, Eq. 27-30 (code: github.com/OsaneHackel/accuracy-SLS).
  """
  # Every argument of this function is a hyperparameter of the transformation.
  return _metric_sls("sa_sls", -1.0, maximize=True, **locals())


def smooth_accuracy(logits: jax.Array, labels: jax.Array, scale: float = 1.0) -> jax.Array:
  r"""The smooth accuracy of sa-SLS: a sigmoid of the probability margin, averaged.

  With :math:`p = \mathrm{softmax}(\text{logits})` per example (Alg. 5, Eq. 30),

  .. math::
    sa = \operatorname{mean}\ \sigma\bigl(s\,(p_{y} - \max_{i \ne y} p_i)\bigr),
    \qquad \sigma(x) = \frac{1}{1 + e^{-x}}.

  The paper prints :math:`\sigma(x) = 1/(1 - e^{-x})`, a typo for the logistic
  function its code uses (``torch.sigmoid``). The margin lies in (-1, 1), so
  the result lies in :math:`(\sigma(-s), \sigma(s)) \subset (0, 1)`; a larger
  ``scale`` :math:`s` brings it closer to the hard accuracy (the paper keeps
  1). Pure :mod:`jax.numpy`: works under :func:`jax.jit`, :func:`jax.vmap` and
  :func:`jax.grad`.

  Args:
    logits: ``[..., num_classes]`` unnormalised scores, ``num_classes >= 2``.
    labels: ``[...]`` integer class labels, or ``[..., num_classes]`` one-hot
      labels (their argmax is taken).
    scale: the slope :math:`s` of the sigmoid, default 1 (the paper's).

  Returns:
    The mean over all leading axes, a scalar (float32, or float64 for float64
    logits).

  Example:
    >>> import jax.numpy as jnp, optax_ls
    >>> logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    >>> sa = optax_ls.smooth_accuracy(logits, jnp.array([0, 1]))
    >>> bool(0.0 < sa < 1.0), float(optax_ls.accuracy(logits, jnp.array([0, 1])))
    (True, 0.5)

  References:
    Hackel, Accuracy Based Line Search, Bachelor's thesis, 2023, Sec. 5.1,
    Alg. 5, Eq. 30 (code: github.com/OsaneHackel/accuracy-SLS).
  """
  logits, labels = _logits_and_labels(logits, labels)
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  p = jax.nn.softmax(logits.astype(dtype), axis=-1)
  is_label = labels[..., None] == jnp.arange(logits.shape[-1])
  p_label = jnp.sum(jnp.where(is_label, p, 0.0), axis=-1)
  p_other = jnp.max(jnp.where(is_label, -jnp.inf, p), axis=-1)
  return jnp.mean(jax.nn.sigmoid(scale * (p_label - p_other)))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  r"""The fraction of examples whose largest logit is the label's (the metric of a-SLS).

  For logits :math:`z_n` and labels :math:`y_n` of :math:`N` examples,

  .. math::
    a = \frac{1}{N} \sum_{n=1}^{N} \mathbb{1}\bigl[\operatorname{argmax}_i z_{n,i} = y_n\bigr].

  It is piecewise constant in the parameters (its gradient is zero almost
  everywhere), which is why a-SLS takes its slope by a finite difference and
  why its step size collapses (see :func:`a_sls`). Pure :mod:`jax.numpy`:
  works under :func:`jax.jit` and :func:`jax.vmap`.

  Args:
    logits: ``[..., num_classes]`` scores.
    labels: ``[...]`` integer class labels, or ``[..., num_classes]`` one-hot.

  Returns:
    The mean over all leading axes, a float32 scalar. Ties go to the first
    class, as in :func:`jax.numpy.argmax`.

  Example:
    >>> import jax.numpy as jnp, optax_ls
    >>> float(optax_ls.accuracy(jnp.array([[2.0, 1.0], [0.0, 1.0]]), jnp.array([0, 0])))
    0.5

  References:
    Hackel, Accuracy Based Line Search, Bachelor's thesis, 2023, Sec. 5.1
    (a-SLS, Eq. 27, 29) and Sec. 6.1 (why it fails).
  """
  logits, labels = _logits_and_labels(logits, labels)
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels, dtype=jnp.float32)


# ---------------------------------------------------------------------------
# Shared pieces.
# ---------------------------------------------------------------------------


def _logits_and_labels(logits: Any, labels: Any) -> tuple[jax.Array, jax.Array]:
  """Checks the shapes; turns one-hot labels into integer labels."""
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  if logits.ndim < 1 or logits.shape[-1] < 2:
    raise ValueError(f"`logits` must have a last axis of at least 2 classes, got {logits.shape}.")
  if labels.ndim == logits.ndim:
    labels = jnp.argmax(labels, axis=-1)
  if labels.shape != logits.shape[:-1]:
    raise ValueError(
        f"`labels` must have shape {logits.shape[:-1]} (integer labels) or {logits.shape} "
        f"(one-hot), got {labels.shape}."
    )
  return logits, labels


def _require_metric_fn(metric_fn: Callable[..., Any] | None, method: str) -> Callable[..., Any]:
  """Raises a clear error when a maximised metric was not passed to ``update``."""
  if metric_fn is None:
    raise TypeError(
        f"{method}.update needs the keyword argument `metric_fn`: a function "
        "`metric_fn(params, **kwargs) -> scalar` giving the metric to maximise on the current "
        "mini-batch, e.g. `metric_fn=lambda p: optax_ls.smooth_accuracy(model.apply(p, x), y)` "
        "(sa-SLS) or `metric_fn=lambda p: optax_ls.accuracy(model.apply(p, x), y)` (a-SLS). "
        "Call it as `opt.update(grads, state, params, value=loss, "
        "value_fn=lambda p: loss_fn(p, batch), metric_fn=...)`."
    )
  if not callable(metric_fn):
    raise TypeError(f"{method}: `metric_fn` must be callable, got {type(metric_fn).__name__}.")
  return metric_fn


def _scalar(value: Any, what: str) -> jax.Array:
  """A scalar in its own dtype, with a clear error otherwise."""
  value = jnp.asarray(value)
  if value.size != 1:
    raise ValueError(f"{what} must be a scalar, got an array of shape {value.shape}.")
  return value.reshape(())


def _metric_sls(
    method: str,
    sign: float,
    *,
    maximize: bool,
    eps: Any,
    require_improvement: bool,
    **hyper: Any,
) -> optax.GradientTransformationExtraArgs:
  """The search along ``sign * updates`` on a metric.

  ``scale_by_metric_sls`` (+1) takes a direction; ``l_sls``, ``a_sls`` and
  ``sa_sls`` (-1) take gradients and search with negative steps, so that the
  negated gradient is never written out (as ``sls`` does).
  """
  for name, flag in (("maximize", maximize), ("require_improvement", require_improvement)):
    if not isinstance(flag, bool):
      raise ValueError(f"`{name}` must be a bool, got {flag!r}.")
  h = _sls._validate(method, line_search_fn="armijo", increase_factor=2.0, **hyper)
  _core.check("eps", eps, lambda v: v > 0.0, "positive")
  # The search minimises orientation * m: -m for a maximised metric.
  orientation = -1.0 if maximize else 1.0

  def init_fn(params: optax.Params) -> ScaleByMetricSlsState:
    return ScaleByMetricSlsState(
        learning_rate=jnp.asarray(h.init_step_size, jnp.float32),
        step_size=jnp.asarray(h.init_step_size, jnp.float32),
        num_evals=jnp.zeros((), jnp.int32),
        exhausted=jnp.zeros((), bool),
        slope=jnp.zeros((), _core.compute_dtype(params)),
        no_step_count=jnp.zeros((), jnp.int32),
        no_step_reason=jnp.zeros((), jnp.int32),
    )

  def update_fn(
      updates: optax.Updates,
      state: ScaleByMetricSlsState,
      params: optax.Params | None = None,
      *,
      value_fn: Callable[..., Any] | None = None,
      value: Any = None,
      metric_fn: Callable[..., Any] | None = None,
      metric_value: Any = None,
      grad: optax.Updates | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, ScaleByMetricSlsState]:
    del grad  # the slope is a finite difference
    value_fn = _core.require_value_fn(value_fn, method)
    if maximize:
      metric_fn = _require_metric_fn(metric_fn, method)
    elif metric_fn is None:
      metric_fn, metric_value = value_fn, value if metric_value is None else metric_value
    elif not callable(metric_fn):
      raise TypeError(f"{method}: `metric_fn` must be callable, got {type(metric_fn).__name__}.")
    _core.require_params(params, method)
    metric = _core.bind_value_fn(metric_fn, extra_args)

    def metric_at(step: Any) -> jax.Array:
      """The metric at ``params + sign * step * d``."""
      return metric(_core.add_step(params, jnp.asarray(sign * step, jnp.float32), updates))

    num_evals = 1  # the finite-difference point
    if metric_value is None:
      metric_value = metric(params)
      num_evals += 1
    m0 = _scalar(metric_value, "the metric at `params`")
    m_eps = _scalar(metric_at(eps), "the metric")
    # The decisions in the dtype of the parameters and the metric (float64 for either).
    dtype = _core.compute_dtype(params, m0, m_eps)
    slope = (m_eps.astype(dtype) - m0.astype(dtype)) / eps
    value0 = orientation * m0.astype(dtype)
    dd = _core.real_vdot(updates, updates)
    healthy = jnp.isfinite(value0) & jnp.isfinite(slope) & jnp.isfinite(dd)
    if value is not None:  # a non-finite loss makes the gradient suspect, whatever the metric
      healthy = healthy & jnp.isfinite(_scalar(value, "`value`"))
    # An injected hyperparameter out of its range (only known at run time) runs no search.
    valid = _sls._runtime_valid(h) & (jnp.asarray(eps, jnp.float32) > 0)
    enabled = healthy & (dd > 0) & valid
    not_descent = dd <= 0
    if require_improvement:
      enabled = enabled & (orientation * slope < 0)
      not_descent = not_descent | (orientation * slope >= 0)

    result = _core.backtracking_search(
        lambda eta: orientation * _core.as_scalar(metric_at(eta), "the metric", dtype),
        # A slope that shows no improvement would let the threshold admit a worse metric
        # than m(w) (ours: it then asks for no worsening; see docs/methods/metric_sls.rst).
        _core.armijo_rule(value0, jnp.minimum(orientation * slope, 0.0), h.c,
                          h.decrease_factor),
        _sls._reset_step_size(h, state.step_size),
        max_evals=h.max_backtracking_steps,
        min_step_size=h.min_step_size,
        max_step_size=h.max_step_size,
        enabled=enabled,
        value_dtype=dtype,
    )
    accepted = enabled & result.accepted
    exhausted = enabled & ~result.accepted
    learning_rate = jnp.where(accepted, result.step_size, 0.0).astype(jnp.float32)
    resume = jnp.maximum(result.next_step_size, h.min_step_size)
    step_size = jnp.where(accepted, result.step_size,
                          jnp.where(exhausted, resume, state.step_size))
    new_updates = _core.masked_scale(accepted, sign * learning_rate, updates, updates)
    no_step_count, no_step_reason = _core.no_step(
        state.no_step_count, learning_rate > 0, invalid=~valid, non_finite=~healthy,
        not_descent=not_descent, exhausted=exhausted)
    new_state = ScaleByMetricSlsState(
        learning_rate=learning_rate,
        step_size=step_size.astype(jnp.float32),
        num_evals=result.num_evals + num_evals,
        exhausted=exhausted,
        slope=jnp.where(healthy, slope, 0.0),
        no_step_count=no_step_count,
        no_step_reason=no_step_reason,
    )
    return new_updates, optax.tree.cast_like(new_state, other_tree=state)

  return optax.GradientTransformationExtraArgs(_core.unshare_init(init_fn), update_fn)
