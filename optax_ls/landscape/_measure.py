"""Measuring the loss along a line through parameter space, jitted and vectorised."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

ExampleLossFn = Callable[[Any, Any], jax.Array]
"""``loss_fn(params, batch) -> [B]``: the per-example losses of one batch."""

DEFAULT_INTERVAL = (-0.5, 0.5)
DEFAULT_RESOLUTION = 0.006
DEFAULT_MU = 0.1


def grid(lo: float = DEFAULT_INTERVAL[0], hi: float = DEFAULT_INTERVAL[1],
         resolution: float = DEFAULT_RESOLUTION) -> np.ndarray:
  """The step sizes ``lo, lo + resolution, ...`` up to ``hi`` (inclusive when it falls on the grid).

  The grid is ``s_k = lo + k * resolution`` for ``k = 0, ..., K - 1`` with
  ``K = floor((hi - lo) / resolution) + 1`` (a tolerance of ``1e-9`` grid spacings
  keeps ``hi`` when rounding puts it just beyond). The default is seed 003's grid:
  ``[-0.5, 0.5]`` at 0.006, 167 points (the last is 0.496).

  Args:
    lo: the first step size, finite and below ``hi``.
    hi: the largest step size the grid may reach.
    resolution: the spacing of the grid, positive.

  Returns:
    A ``float64`` array ``[K]`` of increasing, evenly spaced step sizes.

  Raises:
    ValueError: when ``lo >= hi``, a bound or the resolution is not finite, the
      resolution is not positive, or the grid has fewer than 3 points.

  Example:
    >>> len(grid()), grid(-0.1, 0.1, 0.05).round(3).tolist()
    (167, [-0.1, -0.05, 0.0, 0.05, 0.1])

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 3 (seed 003: ``s in [-0.5, 0.5]`` at a resolution of 0.006,
    167 step sizes per line).
  """
  if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
    raise ValueError(f"The interval must satisfy lo < hi (finite), got [{lo}, {hi}].")
  if not (np.isfinite(resolution) and resolution > 0):
    raise ValueError(f"`resolution` must be a positive number, got {resolution}.")
  count = int(np.floor((hi - lo) / resolution + 1e-9)) + 1
  if count < 3:
    raise ValueError(f"The grid [{lo}, {hi}] at {resolution} has {count} points; it needs >= 3.")
  return lo + resolution * np.arange(count, dtype=np.float64)


def unit_direction(update: Any) -> tuple[Any, float]:
  """``(update / ||update||, ||update||)``: the line's direction and the step taken along it.

  The line of an update ``u`` through the parameters ``theta_0`` before it is
  ``theta_0 + s d`` with the unit direction ``d = u / ||u||`` (the global norm over
  every leaf); the run's own step along it is ``s_upd = ||u||``. For SGD the
  update is ``-lr g``, so the direction is ``-g / ||g||`` and the step
  ``lr ||g||``; with momentum it is ``-m / ||m||`` (seed 003, Sec. 3 below Eq. 1);
  for a line search it is its own update direction and step.

  Args:
    update: the update, a pytree of arrays (e.g. ``new_params - params``).

  Returns:
    ``(direction, norm)``: the unit direction, a pytree shaped and typed like
    ``update``, and the update's global norm ``||u||`` as a Python float.

  Raises:
    ValueError: when the update is zero or not finite (it defines no line).

  Example:
    >>> import jax.numpy as jnp
    >>> direction, norm = unit_direction({"a": jnp.array([3.0]), "b": jnp.array([4.0])})
    >>> round(norm, 6), round(float(direction["a"][0]), 6), round(float(direction["b"][0]), 6)
    (5.0, 0.6, 0.8)

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 3, Eq. 1 (seed 003).
  """
  norm = float(optax.tree.norm(update))
  if not (np.isfinite(norm) and norm > 0):
    raise ValueError(f"The update defines no line: its norm is {norm}.")
  return jax.tree.map(lambda u: u / jnp.asarray(norm, u.dtype), update), norm


@dataclasses.dataclass
class Line:
  """The losses measured along one line ``params + s * direction`` (unit ``direction``).

  The analysis set ``T`` is ``nb`` batches of ``B`` examples; the full-batch loss
  along the line is the mean of the per-example losses (seed 003, Eq. 1)::

    l(s) = L(theta_0 + s d) = 1/|T| sum_{t in T} L(t; theta_0 + s d),

  here the mean of the ``nb`` batch losses (:attr:`full`). The direction-defining
  batch (the training batch whose update gave the direction) is measured apart:
  its loss ``l_m(s)`` and slope ``l'_m(0)`` are what SGD and PAL see.

  Attributes:
    steps: ``[S]`` the step sizes, increasing (seed 003's grid, possibly widened).
    batch_losses: ``[S, nb]`` the mean loss of each analysis batch at each step.
    direction_losses: ``[S]`` the direction-defining batch's loss (NaN when no
      direction batch was given).
    anchors: ``[A]`` step sizes measured per example: ``0`` and PAL's ``mu``.
    anchor_losses: ``[A, nb * B]`` per-example losses of the analysis set there.
    direction_anchor_losses: ``[A, B]`` the same for the direction batch.
    slopes: ``[nb * B]`` per-example directional derivatives at ``s = 0``.
    direction_slopes: ``[B]`` the same for the direction batch; their mean is
      ``l'_m(0)``, which is ``-||g||`` for SGD.
    update_norm: the length of the run's own update along the line (``s_upd``
      of the training run); NaN when unknown.
    step: the training step whose update defined the line.
    seconds: the wall time of the measurement.
    widenings: how many blocks were added to the grid (minimum at an edge, or the
      run's step beyond it).

  Example:
    >>> import jax.numpy as jnp
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> line = LineMeter(loss_fn).measure(  # l(s) = 0.5 (1 - s)^2
    ...     jnp.ones(1), -jnp.ones(1), jnp.zeros((2, 4, 1)), steps=grid(-1.0, 2.0, 0.5))
    >>> line.steps.tolist(), line.batch_losses.shape, line.full.tolist()
    ([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0], (7, 2), [2.0, 1.125, 0.5, 0.125, 0.0, 0.125, 0.5])
    >>> line.value_at_zero, line.slope_at_zero, bool(np.isnan(line.direction_slope))
    (0.5, -1.0, True)

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 3, Eq. 1 and Fig. 2 (seed 003).
  """

  steps: np.ndarray
  batch_losses: np.ndarray
  direction_losses: np.ndarray
  anchors: np.ndarray
  anchor_losses: np.ndarray
  direction_anchor_losses: np.ndarray
  slopes: np.ndarray
  direction_slopes: np.ndarray
  update_norm: float = float("nan")
  step: int = 0
  seconds: float = float("nan")
  widenings: int = 0

  @property
  def full(self) -> np.ndarray:
    """``[S]`` the full-batch loss ``l(s)``: the mean of the batch losses."""
    return self.batch_losses.mean(axis=1)

  @property
  def value_at_zero(self) -> float:
    """``l(0)``, measured exactly (an anchor), not interpolated."""
    return float(self.anchor_losses[0].mean())

  @property
  def slope_at_zero(self) -> float:
    """``l'(0)``: the full-batch directional derivative."""
    return float(self.slopes.mean())

  @property
  def direction_slope(self) -> float:
    """``l'_m(0)``: the direction-defining batch's directional derivative."""
    return float(self.direction_slopes.mean())

  def save(self, path: str) -> None:
    """Writes the line to ``path`` (``.npz``); :meth:`load` reads it back.

    Args:
      path: the file to write (NumPy appends ``.npz`` when it lacks the suffix).
    """
    np.savez_compressed(path, **dataclasses.asdict(self))

  @classmethod
  def load(cls, path: str) -> Line:
    """Reads a line written by :meth:`save`.

    Args:
      path: the ``.npz`` file.

    Returns:
      The :class:`Line`, its scalar fields as Python ``float`` and ``int``.
    """
    with np.load(path) as stored:
      fields = {f.name: stored[f.name] for f in dataclasses.fields(cls)}
    for name in ("update_norm", "seconds"):
      fields[name] = float(fields[name])
    for name in ("step", "widenings"):
      fields[name] = int(fields[name])
    return cls(**fields)


def _along(params: Any, direction: Any, s: jax.Array) -> Any:
  return jax.tree.map(lambda p, d: p + s.astype(p.dtype) * d, params, direction)


def _losses(loss_fn, batches_per_pass, steps_per_pass, params, direction, batches, steps):
  def at_step(s):
    point = _along(params, direction, s)
    return jax.lax.map(lambda b: loss_fn(point, b), batches, batch_size=batches_per_pass)

  return jax.lax.map(at_step, steps, batch_size=steps_per_pass).astype(jnp.float32)


def _slopes(loss_fn, batches_per_pass, params, direction, batches):
  def one(b):
    return jax.jvp(lambda p: loss_fn(p, b), (params,), (direction,))[1]

  return jax.lax.map(one, batches, batch_size=batches_per_pass).astype(jnp.float32)


class LineMeter:
  """Measures losses along lines for one per-example loss function.

  Each measurement is one jitted call: ``lax.map`` over the step sizes (with
  ``steps_per_pass`` of them vectorised together) of ``lax.map`` over the batches
  (``batches_per_pass`` vectorised together). The compiled functions are built
  once per meter and reused: lines of the same shape never recompile (a widened
  grid adds blocks of the original size).

  Args:
    loss_fn: ``loss_fn(params, batch) -> [B]``, the per-example losses of a batch.
      With BatchNorm in train mode a batch's losses depend on the whole batch, as
      in training; each batch is evaluated on its own, also when vectorised.
    batches_per_pass: how many batches one pass evaluates together (``vmap``);
      ``None`` for all of them. More is faster until memory runs out.
    steps_per_pass: how many step sizes one pass evaluates together; ``None``
      for all of them.

  Attributes:
    loss_fn: the per-example loss function given.

  Example:
    >>> import jax.numpy as jnp
    >>> def loss_fn(w, batch):  # per-example squared error of a linear model
    ...   x, y = batch
    ...   return 0.5 * (x @ w - y) ** 2
    >>> meter = LineMeter(loss_fn)
    >>> x = jnp.ones((2, 4, 3)); y = jnp.zeros((2, 4))  # 2 batches of 4 examples
    >>> losses = meter.losses(jnp.zeros(3), jnp.ones(3) / 3**0.5, (x, y), jnp.array([0.0, 1.0]))
    >>> losses.shape, float(losses[1].mean())  # 0.5 * (3 / sqrt(3))^2
    ((2, 2, 4), 1.5)

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 3, Eq. 1 (seed 003).
  """

  def __init__(self, loss_fn: ExampleLossFn, *, batches_per_pass: int | None = 1,
               steps_per_pass: int | None = 1):
    for name, value in (("batches_per_pass", batches_per_pass),
                        ("steps_per_pass", steps_per_pass)):
      if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}.")
    self.loss_fn = loss_fn
    self._losses = jax.jit(functools.partial(_losses, loss_fn, batches_per_pass, steps_per_pass))
    self._slopes = jax.jit(functools.partial(_slopes, loss_fn, batches_per_pass))

  def losses(self, params: Any, direction: Any, batches: Any, steps: Any) -> np.ndarray:
    """``[S, nb, B]`` per-example losses at ``params + s direction`` for each step ``s``.

    Entry ``[k, j, i]`` is ``L(t_ji; params + s_k direction)``, the loss of example
    ``i`` of batch ``j`` at step size ``s_k``.

    Args:
      params: the line's origin, a pytree.
      direction: the direction, shaped like ``params``.
      batches: a pytree whose leaves have the leading axes ``[nb, B]``.
      steps: ``[S]`` the step sizes.

    Returns:
      A ``float32`` NumPy array ``[S, nb, B]``.
    """
    steps = jnp.asarray(steps, jnp.float32)
    return np.asarray(self._losses(params, direction, batches, steps))

  def slopes(self, params: Any, direction: Any, batches: Any) -> np.ndarray:
    """``[nb, B]`` per-example directional derivatives ``<grad L_i, direction>`` at ``params``.

    One forward-mode pass (``jax.jvp``) per batch; no per-example gradients. Their
    mean is the slope ``l'(0)`` of the line's loss at its origin.

    Args:
      params: the line's origin, a pytree.
      direction: the direction, shaped like ``params``.
      batches: a pytree whose leaves have the leading axes ``[nb, B]``.

    Returns:
      A ``float32`` NumPy array ``[nb, B]``.
    """
    return np.asarray(self._slopes(params, direction, batches))

  def measure(
      self,
      params: Any,
      direction: Any,
      batches: Any,
      *,
      direction_batch: Any = None,
      steps: np.ndarray | None = None,
      mu: float = DEFAULT_MU,
      include: Sequence[float] = (),
      max_widenings: int = 4,
      update_norm: float = float("nan"),
      step: int = 0,
  ) -> Line:
    """Measures one :class:`Line`.

    The batch losses are measured on the grid ``steps`` (default :func:`grid`);
    the grid is widened by a block of its own size and spacing beyond an edge
    while the lowest grid point of the full-batch loss ``l(s)`` lies on that edge
    or a step of ``include`` lies beyond it, at most ``max_widenings`` times
    (when both edges call, the right one is widened first unless the minimum is on
    the left edge). Per example, the losses at the anchors ``s = 0`` and
    ``s = mu`` (for PAL's parabola, seed 003 Eq. 2) and the directional
    derivatives at ``s = 0`` are measured too.

    Args:
      params: the line's origin.
      direction: a unit direction shaped like ``params`` (see :func:`unit_direction`).
      batches: the analysis set: a pytree of arrays with leading axes ``[nb, B]``.
      direction_batch: the direction-defining batch (leading axis ``B``), or None.
      steps: the grid of step sizes, increasing and evenly spaced.
      mu: PAL's measuring step, the second anchor.
      include: step sizes the grid must cover (e.g. the run's own step).
      max_widenings: the most blocks added to the grid.
      update_norm: the run's own step along the line, stored with the line.
      step: the training step, stored with the line.

    Returns:
      The :class:`Line`; without ``direction_batch`` its direction fields are NaN.

    Raises:
      ValueError: when ``steps`` is not an increasing, evenly spaced grid of at
        least 3 points, ``max_widenings < 0``, the batches lack the leading axes
        ``[nb, B]`` or the direction batch's size is not ``B``.
    """
    start = time.perf_counter()
    steps = grid() if steps is None else np.asarray(steps, np.float64)
    spacing = np.diff(steps)
    if steps.ndim != 1 or len(steps) < 3 or not np.allclose(spacing, spacing[0]) or spacing[0] <= 0:
      raise ValueError("`steps` must be an increasing, evenly spaced grid of at least 3 points.")
    if max_widenings < 0:
      raise ValueError(f"`max_widenings` must be >= 0, got {max_widenings}.")
    batch_size = _leading(batches, "batches")[1]
    if direction_batch is not None:
      size = _leading(direction_batch, "direction_batch")[0]
      if size != batch_size:
        raise ValueError(f"The direction batch has {size} examples; the analysis batches have "
                         f"{batch_size}: they must be equal.")
      batches = jax.tree.map(lambda d, b: jnp.concatenate([d[None], b]), direction_batch, batches)
    first = 1 if direction_batch is not None else 0
    resolution = float(spacing[0])
    block = len(steps)
    wanted = [float(s) for s in include if np.isfinite(s)]

    blocks = [steps]
    measured = [self.losses(params, direction, batches, steps).mean(axis=2)]
    widenings = 0
    while widenings < max_widenings:
      all_steps = np.concatenate(blocks)
      full = np.concatenate(measured)[:, first:].mean(axis=1)
      lowest = int(np.argmin(np.where(np.isfinite(full), full, np.inf)))
      right = lowest == len(all_steps) - 1 or any(s > all_steps[-1] for s in wanted)
      left = lowest == 0 or any(s < all_steps[0] for s in wanted)
      if not (left or right):
        break
      if right and (lowest != 0 or not left):
        new = all_steps[-1] + resolution * np.arange(1, block + 1)
        blocks.append(new)
        measured.append(self.losses(params, direction, batches, new).mean(axis=2))
      else:
        new = all_steps[0] - resolution * np.arange(block, 0, -1)
        blocks.insert(0, new)
        measured.insert(0, self.losses(params, direction, batches, new).mean(axis=2))
      widenings += 1
    all_steps = np.concatenate(blocks)
    losses = np.concatenate(measured)

    anchors = np.array([0.0, mu])
    anchor = self.losses(params, direction, batches, anchors)
    slopes = self.slopes(params, direction, batches)
    nan_b = np.full(anchor.shape[2], np.nan, np.float32)
    return Line(
        steps=all_steps,
        batch_losses=losses[:, first:],
        direction_losses=losses[:, 0] if first else np.full(len(all_steps), np.nan, np.float32),
        anchors=anchors,
        anchor_losses=anchor[:, first:].reshape(2, -1),
        direction_anchor_losses=anchor[:, 0] if first else np.stack([nan_b, nan_b]),
        slopes=slopes[first:].reshape(-1),
        direction_slopes=slopes[0] if first else nan_b,
        update_norm=float(update_norm),
        step=int(step),
        seconds=time.perf_counter() - start,
        widenings=widenings,
    )


def _leading(tree: Any, name: str) -> tuple[int, ...]:
  """The leading axes shared by every leaf of ``tree`` (2 for batches, 1 for a batch)."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    raise ValueError(f"`{name}` has no arrays.")
  ndim = 2 if name == "batches" else 1
  shapes = {tuple(np.shape(leaf)[:ndim]) for leaf in leaves}
  if len(shapes) != 1 or len(next(iter(shapes))) != ndim:
    what = "[nb, B, ...]" if ndim == 2 else "[B, ...]"
    raise ValueError(f"Every array of `{name}` must have the leading axes {what}; got {shapes}.")
  shape = next(iter(shapes))
  if min(shape) < 1:
    raise ValueError(f"`{name}` is empty: leading axes {shape}.")
  return shape
