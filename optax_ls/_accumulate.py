"""Gradient accumulation that a line search can use: one objective over ``k`` micro-batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def accumulate(
    fn: Callable[..., Any], num_microbatches: int, *, batch_argnum: int = 1
) -> Callable[..., Any]:
  r"""Makes ``fn`` average its outputs over ``num_microbatches`` slices of its batch.

  For a line search on a batch too large for the device's memory: split the batch of
  :math:`B` examples into :math:`k` micro-batches of :math:`B/k` and use

  .. math::

    F(w) = \frac{1}{k} \sum_{j=1}^{k} f(w; \text{batch}_j)

  both for the gradient (``accumulate(jax.value_and_grad(loss_fn), k)``) and for the search's
  ``value_fn`` (``accumulate(loss_fn, k)``), so that every trial evaluates the objective whose
  gradient gave the direction. The micro-batches run one after the other in a
  :func:`jax.lax.scan`. See :doc:`/methods/accumulate` for the sharding, the arguments shared
  by the micro-batches and why ``optax.MultiSteps`` is not a substitute.

  Args:
    fn: ``fn(*args, **kwargs)`` whose argument ``batch_argnum`` is a batch: a pytree whose
      leaves all have the batch size :math:`B` as their leading axis.
    num_microbatches: :math:`k`, a positive integer dividing :math:`B`; 1 calls ``fn``
      unchanged.
    batch_argnum: the position of the batch among ``fn``'s positional arguments, default 1
      (``fn(params, batch)``).

  Returns:
    A function with ``fn``'s signature returning the mean of each leaf of ``fn``'s outputs over
    the micro-batches, in the outputs' dtypes. It raises a ``ValueError`` when the batch size
    is not a multiple of :math:`k`.

  Raises:
    ValueError: if ``num_microbatches`` is not a positive integer.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_ls
    >>> def loss_fn(w, batch):
    ...   return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)
    >>> batch = {"x": jnp.arange(24.0).reshape(8, 3) / 10, "y": jnp.ones(8)}
    >>> w = jnp.zeros(3)
    >>> value_and_grad = optax_ls.accumulate(jax.value_and_grad(loss_fn), 4)
    >>> loss, grads = value_and_grad(w, batch)  # 4 micro-batches of 2
    >>> bool(jnp.allclose(grads, jax.grad(loss_fn)(w, batch)))
    True
    >>> opt = optax_ls.sls(n_batches_per_epoch=10)
    >>> value_fn = lambda p: optax_ls.accumulate(loss_fn, 4)(p, batch)
    >>> updates, state = opt.update(grads, opt.init(w), w, value=loss, value_fn=value_fn)
    >>> bool(value_fn(optax.apply_updates(w, updates)) < loss)
    True

  References:
    Mutschler, "Empirics-based Line Searches for Deep Learning", PhD thesis, 2022,
    Sec. 6.3.2 (LABPAL grows its batch by accumulating gradients over calls; this
    function does it within one call, so that a search can evaluate the result).
    Kenneweg et al., "No learning rates needed: Introducing SALSA - Stable Armijo Line
    Search Adaptation", IJCNN 2024, Sec. IV (line searches on transformers, whose batches
    are the usual reason to accumulate).
  """
  if isinstance(num_microbatches, bool) or not isinstance(num_microbatches, int):
    raise ValueError(
        f"`num_microbatches` must be a positive integer, got {num_microbatches!r}."
    )
  if num_microbatches < 1:
    raise ValueError(f"`num_microbatches` must be a positive integer, got {num_microbatches}.")
  if num_microbatches == 1:
    return fn
  k = num_microbatches

  def averaged(*args: Any, **kwargs: Any) -> Any:
    if batch_argnum >= len(args):
      raise ValueError(
          f"accumulate: the batch is positional argument {batch_argnum}, but the call has "
          f"{len(args)} positional arguments."
      )
    batch = args[batch_argnum]
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(batch)}
    if len(sizes) != 1 or None in sizes:
      raise ValueError(
          "accumulate: every leaf of the batch must have the same leading (batch) axis, "
          f"got leading sizes {sorted(sizes, key=str)}."
      )
    (size,) = sizes
    if size % k:
      raise ValueError(
          f"accumulate: the batch size {size} is not a multiple of num_microbatches={k}."
      )
    # Micro-batch j holds examples j, j + k, j + 2k, ...: a batch sharded over devices along
    # its first axis then keeps every micro-batch spread over all the devices.
    split = jax.tree.map(lambda x: x.reshape(size // k, k, *x.shape[1:]).swapaxes(0, 1), batch)

    def call(micro: Any) -> Any:
      return fn(*args[:batch_argnum], micro, *args[batch_argnum + 1 :], **kwargs)

    out_shape = jax.eval_shape(call, jax.tree.map(lambda x: x[0], split))
    # Sums in at least float32 (bfloat16 outputs are added in float32 and rounded once).
    total0 = jax.tree.map(
        lambda s: jnp.zeros(s.shape, jnp.promote_types(s.dtype, jnp.float32)), out_shape
    )

    def body(total: Any, micro: Any) -> tuple[Any, None]:
      out = call(micro)
      return jax.tree.map(lambda t, o: t + o.astype(t.dtype), total, out), None

    total, _ = jax.lax.scan(body, total0, split)
    return jax.tree.map(lambda t, s: (t / k).astype(s.dtype), total, out_shape)

  return averaged
