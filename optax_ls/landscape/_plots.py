"""The figures of seed 003 (Fig. 2, 3, 4, 6, 7), drawn from measured lines and their analysis.

Each function draws on its own :class:`matplotlib.figure.Figure` with the Agg canvas
(no ``pyplot``, no global state, nothing to close), saves it as a PNG at 110 dpi and
returns the file's path, not the figure. matplotlib is not a dependency of
``optax_ls``: it is imported when a figure is drawn (``pip install matplotlib``, or the
repository's ``harness`` extra).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from optax_ls.landscape._analysis import smooth, strategy_steps
from optax_ls.landscape._measure import Line

if TYPE_CHECKING:
  from matplotlib.figure import Figure

FIGURES = ("lines", "fits", "distances", "steps", "batch_size")
"""The figure names: ``<out>/<name>.png``."""

_COLOURS = {"run": "tab:blue", "s_opt": "tab:red", "pal": "tab:orange", "fbpal": "tab:purple",
            "mini_exact": "tab:green"}
_SGD_COLOURS = ("tab:cyan", "tab:olive", "tab:brown", "tab:pink", "tab:gray")


def _style(names) -> dict[str, dict[str, Any]]:
  """A distinct colour per strategy; the run dashed (it equals ``sgd_<lr>`` on SGD's own lines)."""
  styles, sgd = {}, 0
  for name in names:
    if name in _COLOURS:
      styles[name] = {"color": _COLOURS[name], "ls": "--" if name == "run" else "-"}
    else:
      styles[name] = {"color": _SGD_COLOURS[sgd % len(_SGD_COLOURS)], "ls": "-"}
      sgd += 1
  return styles


def _figure(**kwargs: Any) -> Figure:
  """A new matplotlib figure on the Agg canvas (matplotlib imported here, not with the module)."""
  try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
  except ImportError as error:
    raise ImportError("The landscape figures need matplotlib: pip install matplotlib.") from error
  figure = Figure(**kwargs)
  FigureCanvasAgg(figure)
  return figure


def _save(figure: Figure, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=110)
  return path


def _kernel(count: int, kernel: int | None) -> int:
  return max(1, min(25, count // 5)) if kernel is None else kernel


def plot_lines(lines: Sequence[Line], path: str, *, count: int = 6, title: str = "") -> str:
  """Fig. 2: representative lines: full-batch loss, direction batch, other batches' spread.

  Up to ``count`` lines, evenly spaced over ``lines``, one panel each (3 columns):
  the full-batch loss ``l(s)`` (red), the direction batch's ``l_m(s)`` (green, when
  measured), the median and 5-95% band of the analysis batches' losses, and
  vertical lines at ``s_opt`` and the run's step ``s_upd``.

  Args:
    lines: the measured lines, in training order.
    path: the PNG file to write.
    count: the most lines drawn.
    title: the figure's title (none when empty).

  Returns:
    ``path``, the PNG written (its directory is created when missing).

  Example:
    >>> import os, tempfile
    >>> import jax.numpy as jnp
    >>> from matplotlib.image import imread
    >>> from optax_ls.landscape import LineMeter, analyse, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.array([[0.0], [-1.0], [-2.0], [-3.0]])  # the direction batch
    >>> meter = LineMeter(loss_fn)
    >>> lines = [  # l(s) = 0.5 (w0 - s)^2: s_opt = w0; the run's step 0.25
    ...     meter.measure(jnp.full(1, w0), -jnp.ones(1), jnp.zeros((2, 4, 1)), direction_batch=mine,
    ...                   steps=grid(-1.0, 3.0, 0.05), update_norm=0.25, step=t)
    ...     for t, w0 in enumerate((1.0, 0.5))]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...   path = plot_lines(lines, os.path.join(tmp, "lines.png"))
    ...   os.path.basename(path), imread(path).shape  # a PNG of (height, width, RGBA)
    ('lines.png', (352, 924, 4))

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 3, Fig. 2 (seed 003).
  """
  picks = np.unique(np.linspace(0, len(lines) - 1, min(count, len(lines))).round().astype(int))
  columns = min(3, len(picks))
  rows = -(-len(picks) // columns)
  figure = _figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
  for k, i in enumerate(picks):
    line = lines[i]
    ax = figure.add_subplot(rows, columns, k + 1)
    low, mid, high = np.percentile(line.batch_losses, [5, 50, 95], axis=1)
    ax.fill_between(line.steps, low, high, color="0.8", label="other batches 5-95%")
    ax.plot(line.steps, mid, color="0.5", lw=0.8, label="other batches median")
    ax.plot(line.steps, line.full, color="tab:red", label="full batch")
    if np.all(np.isfinite(line.direction_losses)):
      ax.plot(line.steps, line.direction_losses, color="tab:green", label="direction batch")
    steps = strategy_steps(line)
    for name in ("s_opt", "run"):
      if np.isfinite(steps[name]):
        ax.axvline(steps[name], color=_COLOURS[name], ls="--", lw=1, label=name)
    ax.set_title(f"line at step {line.step}", fontsize=9)
    ax.set_xlabel("step size s")
    ax.set_ylabel("loss")
    top = np.nanpercentile(np.concatenate([high, line.full]), 99)
    bottom = min(np.nanmin(low), np.nanmin(line.full))
    if np.isfinite(top) and np.isfinite(bottom) and top > bottom:
      ax.set_ylim(bottom - 0.05 * (top - bottom), top + 0.05 * (top - bottom))
    if k == 0:
      ax.legend(fontsize=7)
  if title:
    figure.suptitle(title)
  return _save(figure, path)


def plot_fits(analysis: dict[str, Any], path: str, *, title: str = "") -> str:
  """Fig. 4: MAE of the degree-1 and degree-2 fits; the parabola's curvature and slope.

  Left: ``analysis["mae1"]`` and ``analysis["mae2"]`` over the training step (log
  scale); right: the coefficients ``a`` (``curvature``) and ``b`` (``slope``) of
  the fitted parabola ``a s^2 + b s + c``.

  Args:
    analysis: the output of :func:`analyse`.
    path: the PNG file to write.
    title: the figure's title (none when empty).

  Returns:
    ``path``, the PNG written (its directory is created when missing).

  Example:
    >>> import os, tempfile
    >>> import jax.numpy as jnp
    >>> from matplotlib.image import imread
    >>> from optax_ls.landscape import LineMeter, analyse, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.array([[0.0], [-1.0], [-2.0], [-3.0]])  # the direction batch
    >>> meter = LineMeter(loss_fn)
    >>> lines = [  # l(s) = 0.5 (w0 - s)^2: s_opt = w0; the run's step 0.25
    ...     meter.measure(jnp.full(1, w0), -jnp.ones(1), jnp.zeros((2, 4, 1)), direction_batch=mine,
    ...                   steps=grid(-1.0, 3.0, 0.05), update_norm=0.25, step=t)
    ...     for t, w0 in enumerate((1.0, 0.5))]
    >>> analysis = analyse(lines, batch_sizes=(2, 4, 8))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...   path = plot_fits(analysis, os.path.join(tmp, "fits.png"))
    ...   os.path.basename(path), imread(path).shape  # a PNG of (height, width, RGBA)
    ('fits.png', (374, 1100, 4))

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 4, Fig. 4 (seed 003).
  """
  figure = _figure(figsize=(10, 3.4), layout="constrained")
  ax = figure.add_subplot(1, 2, 1)
  ax.semilogy(analysis["step"], analysis["mae1"], "o-", ms=3, label="degree 1")
  ax.semilogy(analysis["step"], analysis["mae2"], "o-", ms=3, label="degree 2")
  ax.set_xlabel("training step")
  ax.set_ylabel(f"MAE of the fit on |s| <= {analysis['window']:g}")
  ax.legend()
  ax = figure.add_subplot(1, 2, 2)
  ax.plot(analysis["step"], analysis["curvature"], "o-", ms=3,
          label="curvature a (a s^2 + b s + c)")
  ax.plot(analysis["step"], analysis["slope"], "o-", ms=3, label="slope b")
  ax.axhline(0, color="0.6", lw=0.8)
  ax.set_xlabel("training step")
  ax.legend(fontsize=8)
  if title:
    figure.suptitle(title)
  return _save(figure, path)


def plot_distances(analysis: dict[str, Any], path: str, *, title: str = "") -> str:
  """Fig. 3: the shape-distance matrix and the distance of consecutive lines.

  Left: the matrix ``D_ij`` of :func:`shape_distances` over the lines' training
  steps; right: ``D_{i-1,i}`` of consecutive lines (log scale).

  Args:
    analysis: the output of :func:`analyse`.
    path: the PNG file to write.
    title: the figure's title (none when empty).

  Returns:
    ``path``, the PNG written (its directory is created when missing).

  Example:
    >>> import os, tempfile
    >>> import jax.numpy as jnp
    >>> from matplotlib.image import imread
    >>> from optax_ls.landscape import LineMeter, analyse, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.array([[0.0], [-1.0], [-2.0], [-3.0]])  # the direction batch
    >>> meter = LineMeter(loss_fn)
    >>> lines = [  # l(s) = 0.5 (w0 - s)^2: s_opt = w0; the run's step 0.25
    ...     meter.measure(jnp.full(1, w0), -jnp.ones(1), jnp.zeros((2, 4, 1)), direction_batch=mine,
    ...                   steps=grid(-1.0, 3.0, 0.05), update_norm=0.25, step=t)
    ...     for t, w0 in enumerate((1.0, 0.5))]
    >>> analysis = analyse(lines, batch_sizes=(2, 4, 8))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...   path = plot_distances(analysis, os.path.join(tmp, "distances.png"))
    ...   os.path.basename(path), imread(path).shape  # a PNG of (height, width, RGBA)
    ('distances.png', (440, 1100, 4))

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 4, Fig. 3 (seed 003).
  """
  distances = analysis["distances"]
  steps = analysis["step"]
  figure = _figure(figsize=(10, 4), layout="constrained")
  ax = figure.add_subplot(1, 2, 1)
  extent = (steps[0], steps[-1], steps[-1], steps[0]) if len(steps) > 1 else None
  image = ax.imshow(distances, cmap="viridis", extent=extent, aspect="auto")
  figure.colorbar(image, ax=ax, label="MAE of the shifted full-batch losses")
  ax.set_xlabel("line (training step)")
  ax.set_ylabel("line (training step)")
  ax = figure.add_subplot(1, 2, 2)
  if len(steps) > 1:
    ax.semilogy(steps[1:], np.diag(distances, 1), "o-", ms=3)
  ax.set_xlabel("training step")
  ax.set_ylabel("MAE to the previous line")
  if title:
    figure.suptitle(title)
  return _save(figure, path)


def plot_steps(analysis: dict[str, Any], path: str, *, kernel: int | None = None,
               title: str = "") -> str:
  """Fig. 6: each strategy's step, distance to ``s_opt`` and improvement; ``s_opt`` vs ``||g||``.

  Three panels over the training step, one curve per strategy of
  :func:`strategy_steps`, smoothed by :func:`smooth`: the update step ``s_upd``,
  the distance ``s_opt - s_upd`` and the improvement ``l(0) - l(s_upd)``. The
  fourth panel scatters ``s_opt`` against ``|l'_m(0)|`` (``||g||`` for SGD) with
  the fit ``s_opt = c |l'_m(0)|`` of :func:`proportionality` (Eq. 4).

  Args:
    analysis: the output of :func:`analyse`.
    path: the PNG file to write.
    kernel: the smoothing window; None for ``max(1, min(25, L // 5))`` with ``L``
      lines (seed 003: 25).
    title: the figure's title (none when empty).

  Returns:
    ``path``, the PNG written (its directory is created when missing).

  Example:
    >>> import os, tempfile
    >>> import jax.numpy as jnp
    >>> from matplotlib.image import imread
    >>> from optax_ls.landscape import LineMeter, analyse, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.array([[0.0], [-1.0], [-2.0], [-3.0]])  # the direction batch
    >>> meter = LineMeter(loss_fn)
    >>> lines = [  # l(s) = 0.5 (w0 - s)^2: s_opt = w0; the run's step 0.25
    ...     meter.measure(jnp.full(1, w0), -jnp.ones(1), jnp.zeros((2, 4, 1)), direction_batch=mine,
    ...                   steps=grid(-1.0, 3.0, 0.05), update_norm=0.25, step=t)
    ...     for t, w0 in enumerate((1.0, 0.5))]
    >>> analysis = analyse(lines, batch_sizes=(2, 4, 8))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...   path = plot_steps(analysis, os.path.join(tmp, "steps.png"))
    ...   os.path.basename(path), imread(path).shape  # a PNG of (height, width, RGBA)
    ('steps.png', (825, 1210, 4))

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 5, Eq. 4, Fig. 6 (seed 003).
  """
  steps = analysis["step"]
  kernel = _kernel(len(steps), kernel)
  strategies = analysis["strategies"]
  styles = _style(strategies)
  figure = _figure(figsize=(11, 7.5), layout="constrained")
  panels = (("step", "update step s_upd"), ("distance", "s_opt - s_upd"),
            ("improvement", "l(0) - l(s_upd)"))
  for k, (key, label) in enumerate(panels):
    ax = figure.add_subplot(2, 2, k + 1)
    for name, values in strategies.items():
      if key == "distance" and name == "s_opt":
        continue
      ax.plot(steps, smooth(values[key], kernel), label=name, lw=1.2, **styles[name])
    ax.set_xlabel("training step")
    ax.set_ylabel(label + (f" (smoothed, {kernel})" if kernel > 1 else ""))
    if key == "distance":
      ax.axhline(0, color="0.6", lw=0.8)
    if k == 0:
      ax.legend(fontsize=7)
  ax = figure.add_subplot(2, 2, 4)
  g = np.abs(analysis["direction_slope"])
  s_opt = strategies["s_opt"]["step"]
  fit = analysis["proportionality"]
  image = ax.scatter(g, s_opt, c=steps, s=12, cmap="viridis")
  figure.colorbar(image, ax=ax, label="training step")
  if np.isfinite(fit["c"]):
    grid = np.linspace(0, np.nanmax(g) * 1.05, 2)
    ax.plot(grid, fit["c"] * grid, color="tab:red",
            label=f"s_opt = {fit['c']:.3g} |l'_m(0)|  (R^2 {fit['r2']:.2f})")
    ax.legend(fontsize=8)
  ax.set_xlabel("|l'_m(0)| (= ||g|| for SGD)")
  ax.set_ylabel("s_opt")
  if title:
    figure.suptitle(title)
  return _save(figure, path)


def plot_batch_size(analysis: dict[str, Any], path: str, *, kernel: int | None = None,
                    title: str = "") -> str:
  """Fig. 7: improvements of SGD and PAL per batch size; ``|l'_b(0)|`` and its ratio per doubling.

  From ``analysis["batch_size"]`` (:func:`batch_size_relation`), over the training
  step and smoothed by :func:`smooth`: the improvements ``l(0) - l(s)`` of SGD's
  step ``lr |l'_b(0)|`` and of PAL's step per batch size (with ``s_opt``'s for
  reference), ``|l'_b(0)|`` per batch size, and the ratio ``|l'_b(0)| / |l'_b'(0)|``
  of consecutive sizes ``b < b'`` (2 expected for a doubling).

  Args:
    analysis: the output of :func:`analyse` with a ``batch_size`` entry (lines
      measured with a direction batch); a ``KeyError`` otherwise.
    path: the PNG file to write.
    kernel: the smoothing window; None for ``max(1, min(25, L // 5))`` with ``L``
      lines (seed 003: 25).
    title: the figure's title (none when empty).

  Returns:
    ``path``, the PNG written (its directory is created when missing).

  Example:
    >>> import os, tempfile
    >>> import jax.numpy as jnp
    >>> from matplotlib.image import imread
    >>> from optax_ls.landscape import LineMeter, analyse, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> mine = jnp.array([[0.0], [-1.0], [-2.0], [-3.0]])  # the direction batch
    >>> meter = LineMeter(loss_fn)
    >>> lines = [  # l(s) = 0.5 (w0 - s)^2: s_opt = w0; the run's step 0.25
    ...     meter.measure(jnp.full(1, w0), -jnp.ones(1), jnp.zeros((2, 4, 1)), direction_batch=mine,
    ...                   steps=grid(-1.0, 3.0, 0.05), update_norm=0.25, step=t)
    ...     for t, w0 in enumerate((1.0, 0.5))]
    >>> analysis = analyse(lines, batch_sizes=(2, 4, 8))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...   path = plot_batch_size(analysis, os.path.join(tmp, "batch_size.png"))
    ...   os.path.basename(path), imread(path).shape  # a PNG of (height, width, RGBA)
    ('batch_size.png', (825, 1210, 4))

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Sec. 6, Fig. 7 (seed 003).
  """
  relation = analysis["batch_size"]
  sizes = relation["sizes"]
  steps = analysis["step"]
  kernel = _kernel(len(steps), kernel)
  figure = _figure(figsize=(11, 7.5), layout="constrained")
  for k, key in enumerate(("sgd", "pal")):
    ax = figure.add_subplot(2, 2, k + 1)
    for j, size in enumerate(sizes):
      ax.plot(steps, smooth(relation[key][:, j], kernel), label=f"batch {size}", lw=1.2)
    ax.plot(steps, smooth(analysis["strategies"]["s_opt"]["improvement"], kernel), "k--",
            lw=1, label="s_opt")
    name = f"SGD lr {relation['learning_rate']:g}" if key == "sgd" else "PAL"
    ax.set_title(name + " (gaps: no minimum ahead, or a step beyond the measured grid)",
                 fontsize=9)
    ax.set_xlabel("training step")
    ax.set_ylabel("l(0) - l(s_upd)")
    if k == 0:
      ax.legend(fontsize=7)
  ax = figure.add_subplot(2, 2, 3)
  for j, size in enumerate(sizes):
    ax.semilogy(steps, smooth(relation["slope"][:, j], kernel), label=f"batch {size}", lw=1.2)
  ax.set_xlabel("training step")
  ax.set_ylabel("|l'_b(0)|")
  ax.legend(fontsize=7)
  ax = figure.add_subplot(2, 2, 4)
  for j in range(len(sizes) - 1):
    ratio = relation["slope"][:, j] / relation["slope"][:, j + 1]
    expected = sizes[j + 1] / sizes[j]
    ax.plot(steps, smooth(ratio, kernel), lw=1.2,
            label=f"{sizes[j]} -> {sizes[j + 1]} (e.r. {expected:g})")
  ax.axhline(2, color="0.5", ls="--", lw=0.8)
  ax.set_xlabel("training step")
  ax.set_ylabel("|l'_b(0)| / |l'_2b(0)|")
  ax.legend(fontsize=7)
  if title:
    figure.suptitle(title)
  return _save(figure, path)


def plot_all(lines: Sequence[Line], analysis: dict[str, Any], out: str, *, title: str = ""
             ) -> list[str]:
  """Draws every figure of :data:`FIGURES` that the data allow into ``out``; returns the paths.

  ``out/<name>.png`` for each name of :data:`FIGURES`: :func:`plot_lines`,
  :func:`plot_fits`, :func:`plot_distances`, :func:`plot_steps` and, when
  ``analysis`` has a batch-size relation (every line measured with a direction
  batch), :func:`plot_batch_size`.

  Args:
    lines: the measured lines, in training order.
    analysis: the output of :func:`analyse` for ``lines``.
    out: the directory written into (created when missing).
    title: every figure's title (none when empty).

  Returns:
    The paths of the PNG files written, in the order of :data:`FIGURES`.

  Example:
    >>> import os, tempfile
    >>> import jax.numpy as jnp
    >>> from optax_ls.landscape import LineMeter, analyse, grid
    >>> def loss_fn(w, batch):  # per-example losses: a quadratic bowl around each example
    ...   return 0.5 * jnp.sum((w - batch) ** 2, axis=-1)
    >>> meter = LineMeter(loss_fn)
    >>> lines = [  # no direction batch: no batch-size relation, no batch_size.png
    ...     meter.measure(jnp.full(1, w0), -jnp.ones(1), jnp.zeros((2, 4, 1)),
    ...                   steps=grid(-1.0, 3.0, 0.05), step=t)
    ...     for t, w0 in enumerate((1.0, 0.5))]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...   paths = plot_all(lines, analyse(lines), tmp)
    ...   [os.path.basename(p) for p in paths], all(os.path.getsize(p) > 0 for p in paths)
    (['lines.png', 'fits.png', 'distances.png', 'steps.png'], True)

  References:
    Mutschler, Zell, "Empirically explaining SGD from a line search perspective",
    ICANN 2021, Fig. 2, 3, 4, 6, 7 (seed 003).
  """
  paths = [
      plot_lines(lines, os.path.join(out, "lines.png"), title=title),
      plot_fits(analysis, os.path.join(out, "fits.png"), title=title),
      plot_distances(analysis, os.path.join(out, "distances.png"), title=title),
      plot_steps(analysis, os.path.join(out, "steps.png"), title=title),
  ]
  if "batch_size" in analysis:
    paths.append(plot_batch_size(analysis, os.path.join(out, "batch_size.png"), title=title))
  return paths
