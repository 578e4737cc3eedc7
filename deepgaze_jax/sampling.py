"""Scanpaths drawn from a DeepGaze III model: each fixation from the density of the next one given the
fixations before it.

The first fixation comes from the model's density with an empty history (its static prediction), or
is the given start; each next one from the conditional density given the scanpath so far (the model
reads its last ``K`` fixations). Coordinates are float pixels ``(x, y)`` of the image, pixel ``j``
covering ``[j, j + 1)`` (the convention of :mod:`deepgaze_jax.deepgaze3` histories and of the
datasets' fixations, which index pixel ``int(x)``).

How a fixation is drawn. The conditional density is the mixture of the ensemble's members, so a
draw from it is a draw from one member picked uniformly at random, anew for every fixation: a step
computes one member's map per scanpath, not all of them (the first fixation, whose density is the
same for every scanpath, is drawn from the mixture itself). A member's log density is piecewise
constant, one value per cell of the saliency grid (the image shrunk by ``saliency_map_factor``,
nearest-upsampled to the image: each cell covers a block of whole pixels). A cell is drawn with
``jax.random.categorical`` on its log density plus the log of the number of pixels it covers, then a
point uniformly inside the cell's block. That is the distribution of drawing one pixel with
``categorical`` on the full-size log density and placing the fixation uniformly inside that pixel
(its centre plus a uniform jitter of +-0.5 pixel on each axis), without building full-size maps.
Coordinates stay strictly below the image's width and height (a float32 sum that rounds up to the
block's edge is moved to the float below it).

Randomness: scanpath ``i`` draws its fixation ``t`` from ``fold_in(fold_in(PRNGKey(seed), i), t)``, so
the same seed gives the same scanpaths bit for bit (on one machine and backend), and a scanpath does
not depend on how many others are drawn with it beyond the floating-point rounding of batched maps.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax.deepgaze3 import DeepGazeIII
from deepgaze_jax.finalizer import saliency_grid
from deepgaze_jax.predict import ImageFeatures, ScanpathPredictor, mixture_grid
from deepgaze_jax.resize import nearest_indices

#: Scanpaths sampled in one call of the compiled sampler; more are drawn in chunks of this many (the
#: memory of a step grows with it: a few arrays of scanpaths x readout cells x 128 floats, and of
#: scanpaths x saliency-grid cells).
BATCH_SIZE = 128
MAX_SEED = 2**32 - 1


def cell_blocks(grid_shape: tuple[int, int], image_shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """The pixel block each saliency-grid cell covers once nearest-upsampled to the image.

    Returns ``(row_start, row_count, col_start, col_count)``, float32 arrays of ``h`` and ``w`` values:
    cell ``(i, j)`` covers rows ``row_start[i] .. row_start[i] + row_count[i] - 1`` and the columns
    alike. A count is 0 for a cell no pixel reads.
    """
    out = []
    for n_small, n_full in zip(grid_shape, image_shape):
        index = nearest_indices(n_small, n_full)  # non-decreasing, so each cell's pixels are contiguous
        out.append(np.searchsorted(index, np.arange(n_small), side="left").astype(np.float32))
        out.append(np.bincount(index, minlength=n_small).astype(np.float32))
    return tuple(out)


def sample_from_grid(key: jax.Array, grid: jax.Array, image_shape: tuple[int, int]) -> jax.Array:
    """One fixation ``(x, y)`` (float32 pixels) from the log density ``upsample_to_image(grid,
    image_shape)``, where ``grid`` is ``(h, w)`` log values per saliency-grid cell (nats, as
    :func:`~deepgaze_jax.finalizer.saliency_grid` makes them); see the module docstring."""
    row_start, row_count, col_start, col_count = cell_blocks(grid.shape, image_shape)
    with np.errstate(divide="ignore"):  # a cell no pixel reads gets probability 0
        log_area = (np.log(row_count)[:, None] + np.log(col_count)[None, :]).astype(np.float32)
    key_cell, key_point = jax.random.split(key)
    cell = jax.random.categorical(key_cell, (grid + log_area).reshape(-1))
    i, j = cell // grid.shape[1], cell % grid.shape[1]
    u = jax.random.uniform(key_point, (2,), jnp.float32)
    x = _inside(jnp.asarray(col_start)[j], jnp.asarray(col_count)[j], u[0])
    y = _inside(jnp.asarray(row_start)[i], jnp.asarray(row_count)[i], u[1])
    return jnp.stack([x, y])


def _inside(start: jax.Array, count: jax.Array, u: jax.Array) -> jax.Array:
    """``start + u * count`` for ``u`` in [0, 1), kept below ``start + count`` despite rounding."""
    end = start + count
    return jnp.minimum(start + u * count, jnp.nextafter(end, jnp.zeros_like(end)))


def _push(history: jax.Array, xy: jax.Array) -> jax.Array:
    """``(n, K, 2)`` histories (most recent first) with ``(n, 2)`` fixations made after them."""
    return jnp.concatenate([xy[:, None], history], axis=1)[:, : history.shape[1]]


def _member_grid(model: DeepGazeIII, head: dict, priority: jax.Array, centerbias: jax.Array,
                 history: jax.Array) -> jax.Array:
    """One member's ``(H // f, W // f)`` saliency grid of the next fixation given one ``(K, 2)``
    history: :meth:`DeepGazeIII.grid` from the member's ``(h, w)`` priority map (computed once per
    image) on, for one history (``centerbias`` ``(1, H, W)``)."""
    shape = centerbias.shape[-2:]
    scanpath = any_valid = None
    if model.history:
        scanpath = model.scanpath_features(head, history[None, None], shape)
        any_valid = (~jnp.isnan(history[None, None, :, 0])).any(axis=-1)
    readout = model.selection(head, priority[None], scanpath, any_valid)[:, 0]
    fin = head["finalizer"]
    return saliency_grid(readout, centerbias, fin["sigma"], fin["center_bias_weight"],
                         model.spatial.saliency_map_factor, model.spatial.max_blur_radius)[0]


@functools.partial(jax.jit, static_argnums=(0, 6))
def _sample_chunk(model: DeepGazeIII, heads: dict, features: jax.Array, centerbias: jax.Array, keys: jax.Array,
                  start: jax.Array | None, length: int) -> jax.Array:
    """``(n, length, 2)`` scanpaths of ``n = len(keys)`` per-scanpath keys on one image
    (``features`` ``(1, h, w, C)``, ``centerbias`` ``(1, H, W)``)."""
    shape = centerbias.shape[-2:]
    n = keys.shape[0]
    members = jax.tree.leaves(heads)[0].shape[0]
    draw = jax.vmap(functools.partial(sample_from_grid, image_shape=shape))
    step_keys = jax.vmap(lambda k: jax.vmap(lambda t: jax.random.fold_in(k, t))(jnp.arange(length)))(keys)
    history = jnp.full((n, model.history, 2), jnp.nan, jnp.float32)
    if start is None:
        static = mixture_grid(model, heads, features, centerbias, history[None, :1])[0, 0]
        first = draw(step_keys[:, 0], jnp.broadcast_to(static, (n,) + static.shape))
    else:
        first = jnp.broadcast_to(start, (n, 2))
    priorities = jax.vmap(model.priority, in_axes=(0, None, None))(heads, features, shape)[:, 0]  # (M, h, w)
    grids = jax.vmap(functools.partial(_member_grid, model), in_axes=(0, 0, None, 0))

    def step(history, keys_t):
        # The next fixation's density is the members' mixture; a draw from it is a draw from a member
        # picked uniformly, anew at every step: one member's map per scanpath instead of all M.
        key_member, key_draw = jnp.swapaxes(jax.vmap(jax.random.split)(keys_t), 0, 1)
        member = jax.vmap(lambda k: jax.random.randint(k, (), 0, members))(key_member)
        head = jax.tree.map(lambda x: x[member], heads)
        xy = draw(key_draw, grids(head, priorities[member], centerbias, history))
        return _push(history, xy), xy

    _, rest = jax.lax.scan(step, _push(history, first), jnp.swapaxes(step_keys[:, 1:], 0, 1))
    return jnp.concatenate([first[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)


def sample_scanpaths(predictor: ScanpathPredictor, image: np.ndarray | ImageFeatures, n: int, length: int,
                     seed: int = 0, start: tuple[float, float] | None = None,
                     batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Draw ``n`` scanpaths of ``length`` fixations each from a DeepGaze III predictor.

    Args:
      predictor: a :class:`~deepgaze_jax.predict.ScanpathPredictor` (its ensemble mixed in probability
        space at every step).
      image: an ``(H, W, 3)`` image (0..255) or its ``predictor.features(image)`` (computed once here
        otherwise; the backbone never runs per fixation).
      n, length: how many scanpaths, how many fixations each (>= 1).
      seed: 0 .. 2**32 - 1; the same seed gives the same scanpaths bit for bit.
      start: ``(x, y)`` pixels inside the image: every scanpath's first fixation (then not drawn);
        None draws it from the static density.
      batch_size: scanpaths sampled per compiled call (memory, not results: see the module docstring).

    Returns:
      ``(n, length, 2)`` float32 ``(x, y)`` pixel coordinates, ``0 <= x < W``, ``0 <= y < H``.
    """
    if not isinstance(predictor, ScanpathPredictor):
        raise ValueError(f"sampling scanpaths needs a scanpath model (a DeepGaze III ScanpathPredictor), "
                         f"got {type(predictor).__name__}")
    for name, value in (("n", n), ("length", length), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    feats = image if isinstance(image, ImageFeatures) else predictor.features(image)
    height, width = feats.shape
    if start is not None:
        x, y = (float(v) for v in start)
        if not (math.isfinite(x) and math.isfinite(y) and 0 <= x < width and 0 <= y < height):
            raise ValueError(f"start (x, y) = ({x:g}, {y:g}) lies outside the {width}x{height} image "
                             f"(0 <= x < {width}, 0 <= y < {height})")
        start = jnp.asarray([x, y], jnp.float32)
    base = jax.random.PRNGKey(int(seed))
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n, dtype=jnp.uint32))
    chunk = min(n, batch_size)
    padded = math.ceil(n / chunk) * chunk  # every call the same size: one compilation
    keys = jnp.concatenate([keys, jnp.broadcast_to(keys[:1], (padded - n,) + keys.shape[1:])])
    out = [_sample_chunk(predictor.model, predictor.heads, feats.features, feats.centerbias,
                         keys[i: i + chunk], start, int(length)) for i in range(0, padded, chunk)]
    return np.asarray(jnp.concatenate(out))[:n]
