"""Pictures of predictions and training runs, drawn with matplotlib's Agg backend (no display needed).

Figures are built with the object API (``matplotlib.figure.Figure``), never ``pyplot``, so drawing holds
no global state and works from a server's worker thread.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from PIL import Image

from deepgaze_jax.cli import printable

#: Probability masses the contour lines enclose, smallest region first.
MASSES = (0.25, 0.5, 0.75)
#: Longest side drawn at full resolution; larger images are shrunk first (:func:`shrink_for_drawing`),
#: since the pictures are at most about 1000 pixels wide and matplotlib's full-size float copies of a
#: 64-megapixel image took 8 GB.
DRAW_MAX_SIDE = 2048


def shrink_for_drawing(image: np.ndarray, log_density: np.ndarray,
                       max_side: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Shrink an image and its log density by the smallest integer factor ``k`` that brings the longer
    side to at most ``max_side`` (default :data:`DRAW_MAX_SIDE`), for drawing.

    ``image``: ``(H, W, 3)`` uint8; ``log_density``: ``(H, W)`` nats. Each output pixel is the mean of a
    ``k x k`` block (fewer pixels at the right and bottom edges): the colour for the image (to within
    one level), the probability for the density, returned as its log (nats per original pixel, so
    levels and colour bar keep their meaning). Returns ``(image, log_density, k)``, shapes
    ``(ceil(H / k), ceil(W / k))``; ``k = 1`` returns the inputs themselves.
    """
    height, width = np.shape(log_density)
    k = math.ceil(max(height, width) / (max_side or DRAW_MAX_SIDE))
    if k <= 1:
        return image, log_density, 1
    peak = float(np.max(log_density))
    probability = np.exp(np.asarray(log_density, np.float32) - np.float32(peak))
    small = np.asarray(Image.fromarray(probability, "F").reduce(k))
    del probability
    small = np.log(np.maximum(small, np.finfo(np.float32).tiny)) + np.float32(peak)
    return np.asarray(Image.fromarray(np.asarray(image, np.uint8)).reduce(k)), small, k


def _shrink_points(points: Sequence[float] | None, k: int) -> Sequence[float] | None:
    """Pixel coordinates on the grid shrunk by ``k`` (pixel centres map to block centres)."""
    return points if points is None or k == 1 else (np.asarray(points, np.float64) + 0.5) / k - 0.5


def mass_thresholds(log_density: np.ndarray, masses: Sequence[float] = MASSES) -> np.ndarray:
    """Log-density levels whose super-level sets hold the given probability masses.

    For each ``m`` in ``masses`` returns the largest ``t`` such that the pixels with
    ``log_density >= t`` together hold at least ``m`` of the mass. ``log_density``: ``(H, W)`` nats,
    normalised (``logsumexp`` 0). Returns ``(len(masses),)`` levels in nats, decreasing with mass.
    """
    flat = np.sort(np.asarray(log_density, np.float64).ravel())[::-1]
    cumulative = np.cumsum(np.exp(flat))
    cumulative /= cumulative[-1]
    index = np.searchsorted(cumulative, np.asarray(masses, np.float64) - 1e-12)
    return flat[np.minimum(index, flat.size - 1)]


def _contours(ax, log_density: np.ndarray, masses: Sequence[float], color: str) -> None:
    levels = mass_thresholds(log_density, masses)
    order = np.argsort(levels)  # contour wants increasing levels: largest mass first
    levels, labels = levels[order], [f"{round(100 * masses[i])}%" for i in order]
    if len(np.unique(levels)) != len(levels) or np.ptp(log_density) == 0:
        return  # a flat map has no contour lines to draw
    cs = ax.contour(log_density, levels=levels, colors=color, linewidths=1.2, linestyles="solid")
    cs.set(path_effects=[patheffects.withStroke(linewidth=2.4, foreground="black")])
    ax.clabel(cs, fmt=dict(zip(cs.levels, labels)), fontsize=7, inline=True)


def draw_prediction(ax, image: np.ndarray, log_density: np.ndarray, xs: Sequence[float] | None = None,
                    ys: Sequence[float] | None = None, masses: Sequence[float] = MASSES,
                    heat_alpha: float = 0.55, cmap: str = "inferno") -> None:
    """Draw ``image`` with the density as a translucent heat map, contours enclosing ``masses`` of the
    probability and fixations ``(xs, ys)`` (pixel coordinates) as dots, on a matplotlib axis."""
    image = np.asarray(image)
    log_density = np.asarray(log_density, np.float32)
    if image.shape[:2] != log_density.shape:
        raise ValueError(f"image of shape {image.shape} does not match density of shape {log_density.shape}")
    density = np.exp(log_density - log_density.max())  # 1 at the peak
    ax.imshow(image, interpolation="antialiased")
    # Opacity grows with the square root of the density so that broad, low regions still show.
    ax.imshow(density, cmap=cmap, alpha=heat_alpha * np.sqrt(density), interpolation="antialiased")
    _contours(ax, log_density, masses, "white")
    if xs is not None and ys is not None and len(xs):
        ax.scatter(xs, ys, s=14, c="#00e5ff", edgecolors="black", linewidths=0.5, zorder=3)
    ax.set_axis_off()


def _png_bytes(fig: Figure, **kwargs) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buffer, format="png", **kwargs)
    return buffer.getvalue()


def overlay_png(image: np.ndarray, log_density: np.ndarray, xs: Sequence[float] | None = None,
                ys: Sequence[float] | None = None, max_side: int | None = 1024) -> bytes:
    """PNG bytes of :func:`draw_prediction` at the image's own size (shrunk so that the longer side is
    at most ``max_side`` pixels), without margins: the picture the web page shows. Images with a side
    over ``max(DRAW_MAX_SIDE, max_side)`` are drawn shrunk (:func:`shrink_for_drawing`)."""
    height, width = np.shape(log_density)
    scale = min(1.0, max_side / max(height, width)) if max_side else 1.0
    dpi = 100
    fig = Figure(figsize=(max(width * scale, 1) / dpi, max(height * scale, 1) / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    image, log_density, k = shrink_for_drawing(image, log_density, max(DRAW_MAX_SIDE, max_side or 0))
    draw_prediction(ax, image, log_density, _shrink_points(xs, k), _shrink_points(ys, k))
    return _png_bytes(fig)


def save_prediction(path: str | os.PathLike, image: np.ndarray, log_density: np.ndarray,
                    xs: Sequence[float] | None = None, ys: Sequence[float] | None = None,
                    title: str | None = None) -> None:
    """Save :func:`prediction_png` to ``path``."""
    _write(path, prediction_png(image, log_density, xs, ys, title))


def prediction_png(image: np.ndarray, log_density: np.ndarray, xs: Sequence[float] | None = None,
                   ys: Sequence[float] | None = None, title: str | None = None) -> bytes:
    """PNG bytes of two panels: the image with heat map, 25/50/75 % mass contours and fixations; and
    the log density itself as a heat map with a colour bar (nats). ``title`` may be a file name with
    undecodable bytes (surrogate escapes), drawn as ``\\xff``. Images with a side over
    :data:`DRAW_MAX_SIDE` are drawn shrunk (:func:`shrink_for_drawing`)."""
    height, width = np.shape(log_density)
    panel = 4.5
    fig = Figure(figsize=(2 * panel + 1.2, panel * height / width + 0.8), dpi=110, layout="constrained")
    left, right = fig.subplots(1, 2)
    image, log_density, k = shrink_for_drawing(image, log_density)
    xs, ys = _shrink_points(xs, k), _shrink_points(ys, k)
    draw_prediction(left, image, log_density, xs, ys)
    left.set_title("prediction: contours hold 25/50/75 % of the mass", fontsize=9)
    im = right.imshow(log_density, cmap="inferno")
    _contours(right, log_density, MASSES, "white")
    if xs is not None and ys is not None and len(xs):
        right.scatter(xs, ys, s=10, c="#00e5ff", edgecolors="black", linewidths=0.4)
    right.set_axis_off()
    right.set_title(f"log density (nats), {width}x{height} px" + (f", drawn at 1/{k}" if k > 1 else ""), fontsize=9)
    fig.colorbar(im, ax=right, shrink=0.8)
    if title:
        fig.suptitle(printable(title), fontsize=10)
    return _png_bytes(fig)


#: Most scanpaths drawn in one picture (the rest are in the JSON): more would hide the image.
MAX_SCANPATHS_DRAWN = 10


def draw_scanpaths(ax, image: np.ndarray, scanpaths: np.ndarray, max_paths: int = MAX_SCANPATHS_DRAWN) -> int:
    """Draw ``image`` and the first ``max_paths`` scanpaths over it on a matplotlib axis: each in its own
    colour (matplotlib's ``tab10``, repeated beyond 10), its fixations numbered from 1 in order and
    joined by arrows. ``scanpaths``: ``(n, length, 2)`` float ``(x, y)`` pixels of the image, pixel ``j``
    covering ``[j, j + 1)`` (:mod:`deepgaze_jax.sampling`). Returns how many were drawn."""
    from matplotlib import colormaps

    image = np.asarray(image)
    paths = np.asarray(scanpaths, np.float64)
    if paths.ndim != 3 or paths.shape[-1] != 2:
        raise ValueError(f"scanpaths must have shape (n, length, 2), got {paths.shape}")
    height, width = image.shape[:2]
    # Drawn as matplotlib draws pixels: pixel j is centred on j, so a point at x (in [j, j + 1)) sits
    # at x - 0.5. Images with a side over DRAW_MAX_SIDE are drawn shrunk, the coordinates with them.
    k = math.ceil(max(height, width) / DRAW_MAX_SIDE)
    shrunk = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).reduce(k)) if k > 1 else image
    points = paths / k - 0.5
    ax.imshow(shrunk, interpolation="antialiased")
    colours = colormaps["tab10"].colors
    drawn = min(len(paths), max_paths)
    size = 8 if paths.shape[1] < 10 else 7
    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    for i in range(drawn):
        colour = colours[i % len(colours)]
        for a, b in zip(points[i, :-1], points[i, 1:]):
            ax.annotate("", xy=b, xytext=a, zorder=2,
                        arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.6, shrinkA=7, shrinkB=7,
                                        mutation_scale=11, path_effects=outline))
        for t, (x, y) in enumerate(points[i]):
            ax.text(x, y, str(t + 1), color="white", fontsize=size, fontweight="bold", ha="center", va="center",
                    zorder=3, bbox=dict(boxstyle="circle,pad=0.25", facecolor=colour, edgecolor="black", lw=0.6))
    ax.set_xlim(-0.5, shrunk.shape[1] - 0.5)
    ax.set_ylim(shrunk.shape[0] - 0.5, -0.5)
    ax.set_axis_off()
    return drawn


def scanpath_png(image: np.ndarray, scanpaths: np.ndarray, title: str | None = None,
                 max_paths: int = MAX_SCANPATHS_DRAWN) -> bytes:
    """PNG bytes of :func:`draw_scanpaths` (about 900 pixels wide), titled with ``title`` (a file name
    may hold undecodable bytes, drawn as ``\\xff``) and how many of the scanpaths are shown."""
    height, width = np.shape(image)[:2]
    panel = 8.0
    fig = Figure(figsize=(panel, panel * height / width + 0.6), dpi=110, layout="constrained")
    ax = fig.subplots()
    drawn = draw_scanpaths(ax, image, scanpaths, max_paths)
    n, length = np.shape(scanpaths)[:2]
    shown = f"{n} scanpath{'s' if n != 1 else ''}" if drawn == n else f"the first {drawn} of {n} scanpaths"
    ax.set_title(f"{shown} of {length} fixation{'s' if length != 1 else ''}, numbered in order", fontsize=9)
    if title:
        fig.suptitle(printable(title), fontsize=10)
    return _png_bytes(fig)


def save_training_curves(path: str | os.PathLike, history: Sequence[Mapping[str, float]],
                         x_key: str = "epoch", title: str | None = None) -> None:
    """Save a PNG of per-epoch metrics, one panel per metric.

    ``history``: one dict per epoch, e.g. ``{"epoch": 1, "train_loss": 2.1, "val_ig": 0.8}``. Keys
    missing from some epochs are plotted where present; the x axis is ``x_key`` where present, else
    the position in the list (from 1). Metrics that share a name after a ``train_``/``val_`` prefix
    (``train_loss`` and ``val_loss``) are drawn in one panel.
    """
    if not history:
        raise ValueError("no training history to plot (empty list)")
    keys = [k for k in dict.fromkeys(k for row in history for k in row) if k != x_key]
    panels: dict[str, list[str]] = {}
    for key in keys:
        base = key.split("_", 1)[1] if key.split("_", 1)[0] in ("train", "val", "test") and "_" in key else key
        panels.setdefault(base, []).append(key)
    fig = Figure(figsize=(4 * len(panels), 3.2), dpi=110, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (base, members) in zip(axes, panels.items()):
        for key in members:
            points = [(row.get(x_key, i + 1), row[key]) for i, row in enumerate(history)
                      if row.get(key) is not None]
            if points:
                x, y = zip(*points)
                ax.plot(x, y, marker="o", markersize=3, label=key)
        ax.set_xlabel(x_key)
        ax.set_title(base, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    _write(path, _png_bytes(fig))


def _write(path: str | os.PathLike, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
