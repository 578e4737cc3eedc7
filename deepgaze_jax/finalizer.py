"""The DeepGaze finalizer: resize, Gaussian blur, center bias, log-sum-exp normalisation.

Follows the reference ``Finalizer``: the center bias (a full-size log density) is shrunk by
``saliency_map_factor`` with nearest neighbour; the readout is nearest-upsampled to that grid, blurred
with a separable Gaussian of learned ``sigma`` (pixels of that grid; kernel radius ``ceil(3 sigma)``,
edge padding, kernel normalised to sum 1), the center bias is added with a learned weight, the result
is nearest-upsampled to the image size and normalised to a log density.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax.resize import downscale_nearest, nearest_indices, resize_nearest


def blur_matrix(n: int, sigma: jax.Array, max_radius: int, source_index: np.ndarray | None = None,
                source_length: int | None = None) -> jax.Array:
    """Matrix ``M`` with ``M @ x`` the 1-D Gaussian blur, with edge padding, of a length-``n`` signal.

    The kernel has taps ``t = -r..r`` with ``r = ceil(3 sigma)``, weights ``exp(-t^2 / (2 sigma^2))``
    normalised to sum 1; a tap that falls outside ``0..n-1`` reads the nearest edge pixel
    (replicate padding), which the matrix folds in exactly for any radius. ``max_radius`` is the
    static bound on ``r`` that keeps shapes static under ``jit``: taps beyond it are dropped (so
    ``sigma`` is clipped to ``max_radius / 3``).

    With ``source_index`` (``(n,)`` ints into a signal ``y`` of length ``m = source_length``, by default
    ``max(source_index) + 1``), the signal blurred is ``y[source_index]`` (a nearest-neighbour
    upsampling), and the returned ``(n, m)`` matrix applies upsampling and blur at once: ``M @ y``.
    Otherwise ``M`` is ``(n, n)``.
    """
    sigma = jnp.clip(sigma, 1e-3, max_radius / 3.0)
    taps = np.arange(-max_radius, max_radius + 1)
    taps_f = taps.astype(np.float32)  # explicit: no int/float promotion (strict dtype promotion)
    radius = jnp.ceil(3.0 * sigma)
    weights = jnp.where(np.abs(taps_f) <= radius, jnp.exp(-0.5 * (taps_f / sigma) ** 2), 0.0)
    weights = weights / weights.sum()
    source_index = np.arange(n) if source_index is None else np.asarray(source_index)
    if source_index.shape != (n,):
        raise ValueError(f"source_index must have shape ({n},), got {source_index.shape}")
    m = int(source_index.max()) + 1 if source_length is None else source_length
    if source_index.min() < 0 or source_index.max() >= m:
        raise ValueError(f"source_index must lie in 0..{m - 1}")
    rows = np.repeat(np.arange(n), taps.size)
    cols = source_index[np.clip(rows + np.tile(taps, n), 0, n - 1)]
    values = jnp.tile(weights, n)
    return jnp.zeros((n, m), weights.dtype).at[rows, cols].add(values)


def gaussian_blur(x: jax.Array, sigma: jax.Array, max_radius: int,
                  size: tuple[int, int] | None = None) -> jax.Array:
    """Separable Gaussian blur of ``(..., h, w)`` maps with edge padding (see :func:`blur_matrix`).

    With ``size = (H, W)`` the maps are first nearest-upsampled to ``(H, W)`` (PyTorch's rule, see
    :mod:`deepgaze_jax.resize`) and the result is ``(..., H, W)``.
    """
    h, w = x.shape[-2:]
    height, width = (h, w) if size is None else size
    return upsample_blur(x, sigma, max_radius, nearest_indices(h, height), nearest_indices(w, width))


def upsample_blur(x: jax.Array, sigma: jax.Array, max_radius: int, row_index: np.ndarray,
                  col_index: np.ndarray) -> jax.Array:
    """Blur of the ``(..., H, W)`` maps ``x[..., row_index[:, None], col_index[None, :]]``.

    The gather (any nearest-neighbour upsampling, ``(H,)`` and ``(W,)`` static indices into the ``h``
    and ``w`` axes of ``x``) is folded into the two blur matrices, so the cost is that of ``(H, h)``
    and ``(W, w)`` matrix products rather than of a blur at full size.
    """
    blur_h = blur_matrix(len(row_index), sigma, max_radius, row_index, x.shape[-2]).astype(x.dtype)
    blur_w = blur_matrix(len(col_index), sigma, max_radius, col_index, x.shape[-1]).astype(x.dtype)
    precision = jax.lax.Precision.HIGHEST
    height, width = blur_h.shape[0], blur_w.shape[0]
    if height * x.shape[-1] <= x.shape[-2] * width:  # the cheaper order of the two products
        x = jnp.einsum("ij,...jw->...iw", blur_h, x, precision=precision)
        return jnp.einsum("...hj,wj->...hw", x, blur_w, precision=precision)
    x = jnp.einsum("...hj,wj->...hw", x, blur_w, precision=precision)
    return jnp.einsum("ij,...jw->...iw", blur_h, x, precision=precision)


def saliency_grid(
    readout: jax.Array,
    centerbias: jax.Array,
    sigma: jax.Array,
    center_bias_weight: jax.Array,
    saliency_map_factor: int,
    max_blur_radius: int,
    readout_shape: tuple[int, int] | None = None,
) -> jax.Array:
    """The normalised log density on the saliency-map grid, before the final upsampling.

    Args:
      readout: ``(B, h, w)`` readout map (any small grid), nearest-upsampled to the grid before the
        blur (first to ``readout_shape`` when given, as the reference resizes it twice).
      centerbias: ``(B, H, W)`` center-bias log density at image size, nats.
      sigma: scalar blur sigma in pixels of the ``H // saliency_map_factor`` grid.
      center_bias_weight: scalar weight of the center bias.
      saliency_map_factor: integer shrink factor of the grid on which blur and center bias act.
      max_blur_radius: static bound of the blur kernel radius (see :func:`blur_matrix`).
      readout_shape: optional intermediate ``(h', w')`` of the readout's nearest upsampling.

    Returns:
      ``(B, H // f, W // f)`` log values such that :func:`upsample_to_image` of them is the
      ``(B, H, W)`` log density: the normaliser counts how many image pixels each grid cell
      covers, so it equals the full-size ``logsumexp`` without computing it at full size.
    """
    height, width = centerbias.shape[-2:]
    small_cb = downscale_nearest(centerbias, saliency_map_factor, axes=(-2, -1))
    # nearest upsampling of the readout (to ``readout_shape``, then to the grid) folded into the blur
    index = []
    for n_in, n_mid, n_out in zip(readout.shape[-2:], readout_shape or readout.shape[-2:], small_cb.shape[-2:]):
        index.append(nearest_indices(n_in, n_mid)[nearest_indices(n_mid, n_out)])
    out = upsample_blur(readout, sigma, max_blur_radius, *index)
    out = out + center_bias_weight * small_cb
    rows, cols = coverage(out.shape[-2], height), coverage(out.shape[-1], width)
    with np.errstate(divide="ignore"):  # a cell no output pixel reads weighs 0 (log 0 = -inf)
        log_area = (np.log(rows)[:, None] + np.log(cols)[None, :]).astype(np.float32)
    log_area = log_area.reshape((1,) * (out.ndim - 2) + log_area.shape)
    return out - jax.nn.logsumexp(out + log_area, axis=(-2, -1), keepdims=True)


def coverage(n_small: int, n_full: int) -> np.ndarray:
    """How many of the ``n_full`` output pixels read each of the ``n_small`` grid cells."""
    return np.bincount(nearest_indices(n_small, n_full), minlength=n_small).astype(np.float64)


def upsample_to_image(grid: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Nearest-upsample a ``(..., h, w)`` saliency grid to the image ``shape = (H, W)``."""
    return resize_nearest(grid, shape, axes=(-2, -1))


def values_at(grid: jax.Array, shape: tuple[int, int], xs: jax.Array, ys: jax.Array) -> jax.Array:
    """Values of ``upsample_to_image(grid, shape)`` at pixels ``[int(ys), int(xs)]`` without building it.

    ``grid`` is ``(B, h, w)``; ``xs``, ``ys`` are ``(B, N)`` pixel coordinates; returns ``(B, N)``.
    """
    rows = jnp.asarray(nearest_indices(grid.shape[-2], shape[0]))[ys.astype(jnp.int32)]
    cols = jnp.asarray(nearest_indices(grid.shape[-1], shape[1]))[xs.astype(jnp.int32)]
    return jax.vmap(lambda g, r, c: g[r, c])(grid, rows, cols)
