"""Adapters that let the line searches compose with Flax and with Optax's wrappers.

A line search needs the mini-batch loss as a function of the parameters it updates
(``value_fn``). Training loops and wrappers that were written for plain gradient
transformations either have no way to pass it, or pass the user's ``value_fn`` on
unchanged while they hand the search a different parameter tree. The adapters close
these gaps:

* :func:`nnx_value_fn`: the loss of a ``flax.nnx`` model as a function of the
  parameter state that ``nnx.Optimizer.update`` passes to the transformation.
* :func:`apply_gradients`: ``TrainState.apply_gradients`` of ``flax.training`` (Linen)
  with the extra arguments of ``update``.
* :func:`multi_transform`: ``optax.multi_transform`` (``optax.partition``) whose groups
  may run line searches: each group's ``value_fn`` takes that group's sub-tree.
* :func:`lookahead`: ``optax.lookahead`` that forwards the extra arguments to the fast
  optimizer.

Flax is imported inside the functions that need it, never when ``optax_ls`` is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_ls import _core

Array = jax.Array

_FUNCTION_ARGS = ("value_fn", "metric_fn", "per_example_loss_fn")
"""Extra arguments of ``update`` that are functions of the parameters.

:func:`multi_transform` hands each group a version that takes the group's sub-tree.
"""

_TREE_ARGS = ("grad", "grad_variance")
"""Extra arguments of ``update`` shaped like the parameters.

:func:`multi_transform` masks them like the updates.
"""

_METHOD_ARGS = (*_FUNCTION_ARGS, *_TREE_ARGS, "value", "metric_value", "value_variance")
"""The extra arguments that the methods' ``update`` consume: not passed to ``value_fn``."""


def _bind(fn: Callable[..., Any], extra_args: dict[str, Any]) -> Callable[[Any], Any]:
  """``fn`` with the keyword arguments it would get from a method's ``update``."""
  return _core.bind_value_fn(fn, {k: v for k, v in extra_args.items() if k not in _METHOD_ARGS})


# ---------------------------------------------------------------------------
# flax.nnx
# ---------------------------------------------------------------------------


def nnx_value_fn(
    model: Any,
    loss_fn: Callable[..., Any],
    *args: Any,
    wrt: Any = None,
    graph: bool | None = None,
    **kwargs: Any,
) -> Callable[[Any], Any]:
  """The loss of a ``flax.nnx`` model as a function of its parameter state.

  ``nnx.Optimizer.update(model, grads, **kwargs)`` calls
  ``tx.update(grads, opt_state, params, **kwargs)`` with ``params`` the model's state
  filtered by the optimizer's ``wrt`` (an ``nnx.State`` of plain arrays), and passes its
  keyword arguments on, after replacing every ``nnx.Variable`` in them by its value. A
  line search evaluates ``value_fn`` on such states, so the model's own loss
  ``loss_fn(model)`` cannot be passed as ``value_fn``. This function returns one that
  can: ``value_fn(params)`` merges ``params`` with the rest of the model's state (taken
  when ``nnx_value_fn`` is called) into a new model and returns
  ``loss_fn(new_model, *args, **kwargs)``.

  The user's model is never changed: state that ``loss_fn`` updates on the new model
  (random-number counters, batch statistics) is thrown away, and every call starts from
  the same state, so all the trials of a search see the same dropout masks. Build it
  *before* the gradient call (``nnx.value_and_grad(loss_fn)(model, ...)`` advances the
  model's random-number streams) to evaluate the same function the gradient is of. It
  can be traced: build and use it inside ``nnx.jit``.

  Args:
    model: a ``flax.nnx`` module (any ``nnx`` graph node).
    loss_fn: ``loss_fn(model, *args, **kwargs) -> scalar``, the mini-batch loss.
    *args: positional arguments of ``loss_fn`` after the model (e.g. the batch).
    wrt: the filter of the optimized variables, as given to ``nnx.Optimizer``
      (default ``nnx.Param``).
    graph: the ``graph`` argument given to ``nnx.Optimizer`` (default None).
    **kwargs: keyword arguments of ``loss_fn``.

  Returns:
    ``value_fn(params) -> loss_fn(model_with_params, *args, **kwargs)``.

  Raises:
    TypeError: if ``model`` is not an ``nnx`` graph node or ``loss_fn`` not callable.

  Example:
    >>> import jax.numpy as jnp, optax_ls
    >>> from flax import nnx
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> optimizer = nnx.Optimizer(model, optax_ls.sls(n_batches_per_epoch=1), wrt=nnx.Param)
    >>> x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
    >>> loss_fn = lambda m, x, y: jnp.mean((m(x) - y) ** 2)
    >>> value_fn = optax_ls.nnx_value_fn(model, loss_fn, x, y)
    >>> loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    >>> _ = optimizer.update(model, grads, value=loss, grad=grads, value_fn=value_fn)
    >>> bool(loss_fn(model, x, y) < loss)
    True

  References:
    Flax NNX, ``nnx.Optimizer.update`` (flax 0.12, ``flax/nnx/training/optimizer.py``).
    Vaswani et al., Painless Stochastic Gradient: Interpolation, Line-Search,
    and Convergence Rates, NeurIPS 2019 (the line search that needs ``value_fn``).
  """
  from flax import nnx

  if not callable(loss_fn):
    raise TypeError(f"nnx_value_fn: `loss_fn` must be callable, got {type(loss_fn).__name__}.")
  if not nnx.graphlib.is_graph_node(model):
    raise TypeError(
        "nnx_value_fn: `model` must be a flax.nnx Module (an nnx graph node), got "
        f"{type(model).__name__}. Call it as `nnx_value_fn(model, loss_fn, *args)`."
    )
  wrt = nnx.Param if wrt is None else wrt
  graphdef, _, rest = nnx.split(model, wrt, ..., graph=graph)
  # The states of `split` hold the model's own Variables: merging them would give a model
  # that shares them, and a loss that updates its state (a dropout stream's counter) would
  # change the user's model. Their values give a model with new Variables.
  rest = nnx.as_pure(rest)

  def value_fn(params: Any) -> Any:
    return loss_fn(nnx.merge(graphdef, nnx.as_pure(params), rest), *args, **kwargs)

  return value_fn


# ---------------------------------------------------------------------------
# flax.training.train_state.TrainState (Linen)
# ---------------------------------------------------------------------------


def apply_gradients(
    state: Any,
    grads: Any,
    *,
    value: Any = None,
    value_fn: Callable[..., Any] | None = None,
    **extra_args: Any,
) -> Any:
  """``TrainState.apply_gradients`` that passes the extra arguments of ``update``.

  ``flax.training.train_state.TrainState.apply_gradients(grads=...)`` calls
  ``tx.update(grads, opt_state, params)`` with no extra argument, so a line search gets
  no ``value_fn``. This function does the same step with

  ``state.tx.update(grads, state.opt_state, state.params, value=value, grad=grads,
  value_fn=value_fn, **extra_args)``

  and returns ``state`` with ``step`` incremented by one and the new ``params`` and
  ``opt_state`` (other fields are kept; ``.replace`` them on the result). Like Flax, it
  applies the optimizer to ``grads['params']`` only when ``grads`` has the
  ``'_overwrite_with_gradient'`` collection, which is overwritten by its gradient;
  ``value_fn`` then still receives the whole parameter dictionary. ``grad=`` defaults to
  the gradients the optimizer sees; pass ``grad`` to override it. A ``tx`` without extra
  arguments (e.g. ``optax.sgd``) ignores them.

  Args:
    state: a ``TrainState`` (any dataclass with ``step``, ``params``, ``tx``,
      ``opt_state`` and ``replace``).
    grads: the gradients, shaped like ``state.params``.
    value: the mini-batch loss at ``state.params`` (optional).
    value_fn: ``value_fn(params, **kwargs) -> scalar``, the mini-batch loss.
    **extra_args: further keyword arguments of ``tx.update``.

  Returns:
    The new state.

  Raises:
    TypeError: if ``state`` is not a ``TrainState``-like object.

  Example:
    >>> import jax, jax.numpy as jnp, optax_ls
    >>> from flax.training import train_state
    >>> loss_fn = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> state = train_state.TrainState.create(
    ...     apply_fn=None, params={"w": jnp.zeros(3)}, tx=optax_ls.sls(n_batches_per_epoch=1))
    >>> loss, grads = jax.value_and_grad(loss_fn)(state.params)
    >>> state = optax_ls.apply_gradients(state, grads, value=loss, value_fn=loss_fn)
    >>> int(state.step), bool(loss_fn(state.params) < loss)
    (1, True)

  References:
    Flax Linen, ``flax.training.train_state.TrainState.apply_gradients`` (flax 0.12).
    Vaswani et al., Painless Stochastic Gradient: Interpolation, Line-Search,
    and Convergence Rates, NeurIPS 2019 (the line search that needs ``value_fn``).
  """
  missing = [a for a in ("step", "params", "tx", "opt_state", "replace") if not hasattr(state, a)]
  if missing:
    raise TypeError(
        "apply_gradients: `state` must be a flax.training.train_state.TrainState (or have "
        f"`step`, `params`, `tx`, `opt_state` and `replace`); {type(state).__name__} has no "
        f"{', '.join(missing)}."
    )
  from flax.training.train_state import OVERWRITE_WITH_GRADIENT

  overwrite = isinstance(grads, Mapping) and OVERWRITE_WITH_GRADIENT in grads
  if overwrite:
    opt_grads, opt_params = grads["params"], state.params["params"]
    if value_fn is not None:
      full_value_fn = _bind(_core.require_value_fn(value_fn, "apply_gradients"), extra_args)
      full_params = state.params

      def owg_value_fn(params: Any) -> Any:
        return full_value_fn({**full_params, "params": params})

      value_fn = owg_value_fn
  else:
    opt_grads, opt_params = grads, state.params
  extra_args.setdefault("grad", opt_grads)
  tx = optax.with_extra_args_support(state.tx)
  updates, opt_state = tx.update(opt_grads, state.opt_state, opt_params, value=value,
                                 value_fn=value_fn, **extra_args)
  params = optax.apply_updates(opt_params, updates)
  if overwrite:
    params = {**state.params, "params": params,
              OVERWRITE_WITH_GRADIENT: grads[OVERWRITE_WITH_GRADIENT]}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state)


# ---------------------------------------------------------------------------
# optax.multi_transform
# ---------------------------------------------------------------------------


def _is_masked(x: Any) -> bool:
  return isinstance(x, optax.MaskedNode)


def _mask_tree(tree: Any, mask: Any) -> Any:
  """``tree`` with the leaves (or sub-trees) where ``mask`` is false replaced by MaskedNode."""
  return jax.tree.map(lambda m, x: x if m else optax.MaskedNode(), mask, tree)


def _fill(sub: Any, full: Any) -> Any:
  """``sub`` with each ``MaskedNode`` replaced by the matching part of ``full``."""
  return jax.tree.map(lambda s, f: f if _is_masked(s) else s, sub, full, is_leaf=_is_masked)


def _labels_of(param_labels: Any, tree: Any, transforms: Mapping[Hashable, Any]) -> Any:
  """The label tree for ``tree``, checked against it and against ``transforms``."""
  labels = param_labels(tree) if callable(param_labels) else param_labels
  try:
    jax.tree.map(lambda *_: None, labels, tree)
  except ValueError as e:
    raise ValueError(
        "multi_transform: `param_labels` must have the structure of the parameters (or of a "
        f"prefix of it): {e}"
    ) from e
  label_set = set(jax.tree.leaves(labels))
  unknown = label_set - set(transforms)
  if unknown:
    raise ValueError(
        f"multi_transform: the labels [{', '.join(sorted(map(repr, unknown)))}] have no "
        f"transformation; `transforms` has the keys [{', '.join(sorted(map(repr, transforms)))}]."
    )
  return labels


def multi_transform(
    transforms: Mapping[Hashable, optax.GradientTransformation],
    param_labels: Any,
    *,
    mask_compatible_extra_args: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """``optax.multi_transform`` whose groups may run line searches.

  Same signature, semantics and state (``optax.MultiTransformState`` holding one
  ``optax.MaskedState`` per label) as ``optax.multi_transform``: each label's
  transformation is applied, through ``optax.masked``, to the parameters with that
  label, and sees the others as ``optax.MaskedNode``. ``optax.masked`` passes the extra
  arguments of ``update`` on unchanged, so a line search in a group would call the
  user's ``value_fn`` (a function of all the parameters) on the group's masked tree.
  Here each group gets instead

  * ``value_fn`` (and ``metric_fn``, ``per_example_loss_fn``): a function of the
    group's masked tree that fills the masked-out parts with the current parameters and
    calls the user's function on the full tree (with the keyword arguments of
    ``update`` it takes). The other groups are held at their current values during a
    group's search;
  * ``grad`` (and ``grad_variance``): masked like the updates.

  Other extra arguments are passed on unchanged, or masked when
  ``mask_compatible_extra_args`` is true and they have the structure of the updates
  (as in optax). Freeze a group with ``optax.set_to_zero()``.

  Args:
    transforms: a mapping from labels to transformations.
    param_labels: a tree of labels with the structure of the parameters (or a prefix
      of it), or a function of the parameters returning one.
    mask_compatible_extra_args: whether to also mask the other extra arguments that
      have the structure of the updates.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs`.

  Raises:
    TypeError: if ``transforms`` is not a non-empty mapping.
    ValueError: (from ``init`` and ``update``) if a label has no transformation or the
      labels do not match the parameters' structure.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> params = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    >>> loss_fn = lambda p: jnp.sum((p["a"] - 1.0) ** 2) + jnp.sum((p["b"] + 1.0) ** 2)
    >>> opt = optax_ls.multi_transform(
    ...     {"search": optax_ls.sls(n_batches_per_epoch=1), "frozen": optax.set_to_zero()},
    ...     {"a": "search", "b": "frozen"})
    >>> state = opt.init(params)
    >>> loss, grads = jax.value_and_grad(loss_fn)(params)
    >>> updates, state = opt.update(grads, state, params, value=loss, value_fn=loss_fn)
    >>> new = optax.apply_updates(params, updates)
    >>> bool(loss_fn(new) < loss), new["b"].tolist()
    (True, [0.0, 0.0])

  References:
    Optax, ``optax.multi_transform`` / ``optax.partition`` and ``optax.masked``
    (optax 0.2.8, ``optax/transforms/_combining.py``, ``_masking.py``).
  """
  if not isinstance(transforms, Mapping) or not transforms:
    raise TypeError(
        "multi_transform: `transforms` must be a non-empty mapping from labels to "
        f"transformations, got {transforms!r}."
    )
  transforms = {k: optax.with_extra_args_support(tx) for k, tx in transforms.items()}

  def masks(labels: Any) -> dict[Hashable, Any]:
    return {group: jax.tree.map(lambda label, g=group: label == g, labels) for group in transforms}

  def init_fn(params: optax.Params) -> optax.MultiTransformState:
    group_masks = masks(_labels_of(param_labels, params, transforms))
    return optax.MultiTransformState({
        group: optax.masked(tx, group_masks[group]).init(params)
        for group, tx in transforms.items()
    })

  def group_args(extra_args: dict[str, Any], mask: Any, updates: Any, params: Any,
                 bound: dict[str, Callable[[Any], Any]]) -> dict[str, Any]:
    structure = jax.tree.structure(updates)
    out = {}
    for name, arg in extra_args.items():
      if name in bound:
        out[name] = _sub_fn(bound[name], params, name)
      elif name in _TREE_ARGS and arg is not None:
        out[name] = _mask_tree(arg, mask)
      elif (mask_compatible_extra_args and not callable(arg)
            and jax.tree.structure(arg) == structure):
        out[name] = _mask_tree(arg, mask)
      else:
        out[name] = arg
    return out

  def update_fn(updates: optax.Updates, state: optax.MultiTransformState,
                params: optax.Params | None = None,
                **extra_args: Any) -> tuple[optax.Updates, optax.MultiTransformState]:
    group_masks = masks(_labels_of(param_labels, updates, transforms))
    # The user's functions with the keyword arguments of this call bound, once.
    bound = {}
    for name in _FUNCTION_ARGS:
      fn = extra_args.get(name)
      if fn is not None:
        if not callable(fn):
          raise TypeError(
              f"multi_transform: `{name}` must be callable, got {type(fn).__name__}.")
        bound[name] = _bind(fn, extra_args)
    new_states = {}
    for group, tx in transforms.items():
      mask = group_masks[group]
      updates, new_states[group] = optax.masked(tx, mask).update(
          updates, state.inner_states[group], params,
          **group_args(extra_args, mask, updates, params, bound))
    return updates, optax.MultiTransformState(new_states)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _sub_fn(fn: Callable[[Any], Any], params: Any, name: str) -> Callable[[Any], Any]:
  """``fn`` of the full parameters as a function of a masked sub-tree of them."""

  def sub_fn(sub_params: Any) -> Any:
    if params is None:
      raise ValueError(
          f"multi_transform.update needs `params` to complete the sub-tree passed to `{name}`.")
    return fn(_fill(sub_params, params))

  return sub_fn


# ---------------------------------------------------------------------------
# optax.lookahead
# ---------------------------------------------------------------------------


def lookahead(
    fast_optimizer: optax.GradientTransformation,
    sync_period: int,
    slow_step_size: float,
    reset_state: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""``optax.lookahead`` that passes the extra arguments of ``update`` to the fast optimizer.

  Lookahead (Zhang et al., 2019) keeps slow weights :math:`\phi` and fast weights
  :math:`\theta`. The fast optimizer updates :math:`\theta`; every ``sync_period``
  (:math:`k`) steps the slow weights move towards the fast ones and the fast weights
  restart from them:

  .. math::
    \phi \leftarrow \phi + \alpha\,(\theta - \phi), \qquad \theta \leftarrow \phi,

  with :math:`\alpha` = ``slow_step_size``. ``optax.lookahead`` does this but is no
  :class:`optax.GradientTransformationExtraArgs`, so a line search as the fast optimizer
  gets no ``value_fn``. This version has the same parameters (``optax.LookaheadParams``,
  whose ``fast`` part the gradients are computed at) and state (``optax.LookaheadState``)
  and passes every extra argument to the fast optimizer unchanged: ``value_fn`` is a
  function of a plain parameter tree, which the fast optimizer evaluates around
  ``params.fast``. Updates must be applied unchanged (``optax.apply_updates``).

  Args:
    fast_optimizer: the inner optimizer (any transformation).
    sync_period: :math:`k`, the number of fast steps between synchronizations, a
      positive integer.
    slow_step_size: :math:`\alpha`, in [0, 1].
    reset_state: whether to reset the fast optimizer's state (to its ``init`` at the
      fast parameters) at each synchronization.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` over ``optax.LookaheadParams``
    (``init`` also takes the plain parameters).

  Raises:
    ValueError: if ``sync_period`` or ``slow_step_size`` is out of range.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> loss_fn = lambda w: jnp.sum((w - 1.0) ** 2)
    >>> opt = optax_ls.lookahead(optax_ls.sls(n_batches_per_epoch=1), 2, 0.5)
    >>> params = optax.LookaheadParams.init_synced(jnp.zeros(2))
    >>> state = opt.init(params)
    >>> for _ in range(4):
    ...   loss, g = jax.value_and_grad(loss_fn)(params.fast)
    ...   updates, state = opt.update(g, state, params, value=loss, value_fn=loss_fn)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(loss_fn(params.slow) < 0.5 * loss_fn(jnp.zeros(2)))
    True

  References:
    Zhang, Lucas, Hinton, Ba, Lookahead Optimizer: k steps forward, 1 step back,
    NeurIPS 2019, Alg. 1.
  """
  _core.check("sync_period", sync_period, lambda v: v >= 1 and v.is_integer(),
              "a positive integer")
  _core.check("slow_step_size", slow_step_size, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
  fast = optax.with_extra_args_support(fast_optimizer)

  def init_fn(params: Any) -> optax.LookaheadState:
    fast_params = params.fast if isinstance(params, optax.LookaheadParams) else params
    return optax.LookaheadState(fast_state=fast.init(fast_params),
                                steps_since_sync=jnp.zeros((), jnp.int32))

  def update_fn(updates: optax.Updates, state: optax.LookaheadState,
                params: optax.LookaheadParams | None = None,
                **extra_args: Any) -> tuple[optax.LookaheadParams, optax.LookaheadState]:
    if not isinstance(params, optax.LookaheadParams):
      raise TypeError(
          "lookahead.update needs `params` as optax.LookaheadParams(fast=..., slow=...) "
          "(start from optax.LookaheadParams.init_synced(params)), got "
          f"{type(params).__name__}.")
    fast_updates, fast_state = fast.update(updates, state.fast_state, params.fast,
                                           **extra_args)
    sync = state.steps_since_sync + 1 >= sync_period

    def slow_target(theta: Array, u: Array, phi: Array) -> Array:
      """phi + alpha (theta + u - phi), the slow weights after a synchronization."""
      dtype = jnp.promote_types(jnp.result_type(theta, u, phi), jnp.float32)
      phi = phi.astype(dtype)
      return phi + slow_step_size * (theta.astype(dtype) + u.astype(dtype) - phi)

    def to_fast(theta: Array, u: Array, phi: Array) -> Array:
      target = slow_target(theta, u, phi)
      return jnp.where(sync, target - theta.astype(target.dtype), u).astype(u.dtype)

    def to_slow(theta: Array, u: Array, phi: Array) -> Array:
      target = slow_target(theta, u, phi)
      return jnp.where(sync, target - phi.astype(target.dtype), 0.0).astype(phi.dtype)

    fast_params, slow_params = params.fast, params.slow
    new_updates = optax.LookaheadParams(
        fast=jax.tree.map(to_fast, fast_params, fast_updates, slow_params),
        slow=jax.tree.map(to_slow, fast_params, fast_updates, slow_params))
    if reset_state:
      fresh = fast.init(params.fast)
      fast_state = jax.tree.map(
          lambda now, new: jnp.where(sync, new, now).astype(jnp.asarray(now).dtype),
          fast_state, fresh)
    steps = jnp.where(sync, 0, state.steps_since_sync + 1).astype(jnp.int32)
    return new_updates, optax.LookaheadState(fast_state=fast_state, steps_since_sync=steps)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)

