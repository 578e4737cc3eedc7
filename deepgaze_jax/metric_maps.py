"""Metric-specific saliency maps (Kümmerer, Wallis & Bethge, ECCV 2018).

A probabilistic model predicts one log density per image. Each saliency metric is then given the map
that is optimal for it under that prediction, as pysaliency does:

=========  ==========================================================================================
metric     map derived from the log density ``log p`` (nats, (H, W))
=========  ==========================================================================================
AUC        the density ``p`` (only the ranking matters; :func:`density_map`)
NSS        the density ``p`` (:func:`density_map`)
sAUC       ``log p - log p_shuffled``: p_shuffled is the model's average prediction on the *other*
           images (:class:`ShuffledBaseline`, pysaliency ``ShuffledBaselineModel``;
           :func:`sauc_map`)
CC, KLDiv  ``p`` blurred with the empirical map's kernel (sigma in pixels; :func:`blurred_density_map`):
           the expected empirical fixation map
SIM        a map optimised for expected SIM against empirical maps sampled from ``p``
           (:func:`sim_saliency_map`, pysaliency ``SIMSaliencyMapModel``)
=========  ==========================================================================================
"""

from __future__ import annotations

import functools
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import metrics
from deepgaze_jax.metrics import kernels, validation

DEFAULT_COMPUTE_SIZE = (500, 500)


def density_map(log_density) -> np.ndarray:
    """The map for AUC and NSS: ``exp(log_density)``. (H, W) or (B, H, W), nats -> probability per pixel."""
    validation.as_maps("log_density", log_density)
    return np.exp(np.asarray(log_density, dtype=np.float64))


def blurred_density_map(log_density, sigma: float = 24.0, *, mode: metrics.BlurMode = "reflect") -> np.ndarray:
    """The map for CC and KLDiv: the density blurred like the empirical map (sigma in pixels).

    The expected empirical map is the density convolved with the same kernel and boundary rule
    (scipy 'reflect', as pysaliency's ``FixationMap``), so that is the default mode.
    log_density: (H, W) or (B, H, W), nats. Returns the same shape.
    """
    validation.as_maps("log_density", log_density)
    return metrics.gaussian_blur(np.exp(np.asarray(log_density, dtype=np.float64)), sigma, mode=mode)


def sauc_map(log_density, shuffled_log_density) -> np.ndarray:
    """The map for shuffled AUC: ``log p - log p_shuffled`` (pysaliency ``ShuffledAUCSaliencyMapModel``)."""
    a, _ = validation.as_maps("log_density", log_density)
    b, _ = validation.as_maps("shuffled_log_density", shuffled_log_density)
    validation.check_same_shape("log_density", a, "shuffled_log_density", b)
    return np.asarray(log_density, dtype=np.float64) - np.asarray(shuffled_log_density, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------
# Resizing as scipy.ndimage.zoom(order=1, mode='nearest'), used by the shuffled baseline.
# ----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _linear_taps(in_size: int, out_size: int, out_canvas: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scipy zoom's sampling (grid_mode=False): output i reads input ``i * (in - 1) / (out - 1)``.

    Returns lower index, upper index and upper weight, each (out_canvas,), zero past ``out_size``.
    """
    out_canvas = out_size if out_canvas is None else out_canvas
    coords = np.zeros(out_canvas)
    if out_size > 1 and in_size > 1:
        coords[:out_size] = np.arange(out_size) * ((in_size - 1) / (out_size - 1))
    lower = np.minimum(np.floor(coords).astype(np.int32), in_size - 1)
    frac = coords - np.floor(coords)
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, frac


def resize_taps(in_sizes, out_sizes, out_canvas: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Per-image sampling taps for :func:`resize_canvas`: six (B, Hc') / (B, Wc') arrays."""
    rows = [_linear_taps(int(i[0]), int(o[0]), out_canvas[0]) for i, o in zip(in_sizes, out_sizes)]
    cols = [_linear_taps(int(i[1]), int(o[1]), out_canvas[1]) for i, o in zip(in_sizes, out_sizes)]
    return tuple(np.stack([t[k] for t in taps]) for taps in (rows, cols) for k in range(3))


def _resize_one(image, rows_lo, rows_hi, rows_w, cols_lo, cols_hi, cols_w):
    rows = image[rows_lo, :] * (1 - rows_w)[:, None] + image[rows_hi, :] * rows_w[:, None]
    # Columns through the transpose: gathering whole rows is ~20x faster than single elements on CPU.
    cols = rows.T[cols_lo, :] * (1 - cols_w)[:, None] + rows.T[cols_hi, :] * cols_w[:, None]
    return cols.T


@jax.jit
def resize_canvas(maps, rows_lo, rows_hi, rows_w, cols_lo, cols_hi, cols_w):
    """Linear resize of (B, Hc, Wc) canvases to (B, Hc', Wc') canvases with taps from :func:`resize_taps`."""
    return jax.vmap(_resize_one)(maps, rows_lo, rows_hi, rows_w, cols_lo, cols_hi, cols_w)


def renormalise(log_density, sizes):
    """(B, Hc, Wc) log densities minus their logsumexp over each image of ``sizes``, 0 outside it."""
    valid = kernels.valid_pixels(log_density, sizes)
    (peak,) = kernels.reduce_image(kernels.masked_extreme(log_density, valid, "max"))
    peak = peak[:, None, None]
    # Outside the image the canvas holds finite junk that may exceed the peak: clip before exp.
    (total,) = kernels.reduce_image((jnp.exp(jnp.minimum(log_density - peak, 0)) * valid, "sum"))
    return (log_density - peak - jnp.log(total)[:, None, None]) * valid


_renormalise_kernel = jax.jit(renormalise)


def _resize_log_density_kernel(log_density, out_sizes, *taps):
    """Resize then renormalise, as two dispatches: the resized maps are materialised in between, where
    XLA would otherwise recompute the interpolation inside every reduction (several times slower)."""
    return _renormalise_kernel(resize_canvas(log_density, *taps), out_sizes)


def resize_log_density(log_density, shape: tuple[int, int]) -> np.ndarray:
    """Resize log densities as pysaliency does (linear ``scipy.ndimage.zoom``, mode 'nearest'), renormalise.

    log_density: (H, W) or (B, H, W), nats. shape: target (H', W'). Returns (H', W') or (B, H', W');
    unchanged (not renormalised) when the shape already matches, as in pysaliency.
    """
    maps, batched = validation.as_maps("log_density", log_density)
    shape = (int(shape[0]), int(shape[1]))
    if maps.shape[1:] == shape:
        return maps if batched else maps[0]
    batch = maps.shape[0]
    taps = resize_taps([maps.shape[1:]] * batch, [shape] * batch, shape)
    out_sizes = np.tile(np.array(shape, np.int32), (batch, 1))
    with jax.enable_x64(True):
        out = _resize_log_density_kernel(maps, out_sizes, *taps)
    return validation.unbatch(out, batched)


class ShuffledBaseline:
    """The shuffled prediction for sAUC (pysaliency ``ShuffledBaselineModel``).

    Every prediction is resized to ``compute_size`` and renormalised; the baseline for image n is the
    average density over all *other* images, obtained from the running sum by leaving image n out, then
    resized to image n's size and renormalised. Build it with :meth:`from_log_densities` (one pass over
    the predictions) and query it with :meth:`log_density` (needs image n's prediction again).
    """

    def __init__(self, density_sum: np.ndarray, count: int, compute_size: tuple[int, int] = DEFAULT_COMPUTE_SIZE):
        if count < 2:
            raise ValueError(f"the shuffled baseline needs at least 2 images, got {count}")
        self.density_sum = np.asarray(density_sum, dtype=np.float64)
        self.count = int(count)
        self.compute_size = tuple(int(s) for s in compute_size)
        average = np.log(self.density_sum) - np.log(self.count)
        self.average_log_density = average - _logsumexp(average)

    @classmethod
    def from_log_densities(
        cls, log_densities: Iterable[np.ndarray], compute_size: tuple[int, int] = DEFAULT_COMPUTE_SIZE
    ) -> "ShuffledBaseline":
        """One pass over the (H_n, W_n) log densities of all images of the dataset, in nats, each
        normalised (ValueError naming the image otherwise, see :func:`metrics.check_normalised`)."""
        total = np.zeros(compute_size)
        count = 0
        for n, log_density in enumerate(log_densities):
            maps, _ = validation.as_maps(f"log density of image {n}", log_density)
            metrics.check_normalised(maps[0], f"log density of image {n}")
            total += np.exp(resize_log_density(log_density, compute_size))
            count += 1
        return cls(total, count, compute_size)

    def log_density(self, log_density) -> np.ndarray:
        """Baseline for the image whose own prediction is ``log_density`` (H, W), nats, normalised -> (H, W), nats."""
        maps, _ = validation.as_maps("log_density", log_density)
        metrics.check_normalised(maps[0], "log_density")
        own = np.exp(resize_log_density(log_density, self.compute_size))
        n = self.count
        others = np.log(np.exp(self.average_log_density) * (n / (n - 1)) - own / (n - 1))
        if not np.all(np.isfinite(others)):
            raise ValueError("shuffled baseline is not finite: this image dominates the average prediction")
        return resize_log_density(others, np.shape(log_density))


def _logsumexp(x: np.ndarray) -> float:
    m = np.max(x)
    return float(m + np.log(np.sum(np.exp(x - m))))


# ----------------------------------------------------------------------------------------------------
# The SIM-optimal map (pysaliency ``SIMSaliencyMapModel`` / ``maximize_expected_sim``).
# ----------------------------------------------------------------------------------------------------


def _cumulative(log_density):
    """Flat (H*W,) cumulative sums of the unnormalised density, for :func:`_sample_empirical_maps`."""
    return jnp.cumsum(jnp.exp(log_density - jnp.max(log_density)).reshape(-1))


def _sample_empirical_maps(key, cumulative, shape: tuple[int, int], count: int, batch: int, sigma: float, truncate: float):
    """``batch`` empirical maps (batch, H, W) of ``count`` fixations sampled from the density, blurred
    with ``sigma`` px truncated at ``truncate`` sigma, zero padding (scipy mode 'constant').

    Pixels are drawn by inverting the cumulative sums (:func:`_cumulative`), as pysaliency's sampler:
    O(log(H*W)) per fixation, where ``jax.random.categorical`` draws Gumbel noise for every pixel of
    every fixation (60 GB for 5000 fixations on a 768x1024 image). The blurred counts are
    :func:`kernels.fixation_map`'s sums of outer products of kernel profiles, one batched
    matrix product, ~3x faster on CPU than FFTs of the counts.
    """
    height, width = shape
    u = jax.random.uniform(key, (batch, count), cumulative.dtype) * cumulative[-1]
    flat = jnp.minimum(jnp.searchsorted(cumulative, u, side="right"), height * width - 1)
    template = jnp.zeros((batch, height, width), cumulative.dtype)
    sizes = jnp.broadcast_to(jnp.array([height, width], jnp.int32), (batch, 2))
    return kernels.fixation_map((flat % width).astype(cumulative.dtype), (flat // width).astype(cumulative.dtype),
                                        jnp.ones(flat.shape, bool), template, sizes, sigma, "constant", truncate)


def _expected_sim(saliency_map, empirical_maps):
    s = saliency_map / jnp.sum(saliency_map)
    e = empirical_maps / jnp.sum(empirical_maps, axis=(1, 2), keepdims=True)
    return jnp.mean(jnp.sum(jnp.minimum(s[None], e), axis=(1, 2)))


def _expected_sim_gradient(saliency_map, empirical_maps):
    """Gradient of :func:`_expected_sim` with respect to the saliency map (H, W), written out.

    With S = sum(s), c = the mean over the maps of [s/S < e/sum(e)] (1/2 at ties, as JAX and torch
    differentiate a minimum): d/ds = (c - sum(c * s) / S) / S. Same values as ``jax.grad``; c is
    accumulated map by map, where XLA on CPU reduces the (B, H, W) comparisons over B ~14x slower.
    """
    total = jnp.sum(saliency_map)
    s = saliency_map / total
    totals = jnp.sum(empirical_maps, axis=(1, 2))

    def add(b, c):
        e = empirical_maps[b] / totals[b]
        return c + jnp.where(s < e, 1.0, jnp.where(s == e, 0.5, 0.0))

    c = jax.lax.fori_loop(0, empirical_maps.shape[0], add, jnp.zeros_like(s)) / empirical_maps.shape[0]
    return (c - jnp.sum(c * s)) / total


@functools.partial(jax.jit, static_argnames=("sigma", "fixation_count", "batch_size", "steps_per_epoch", "epochs", "truncate"))
def _sim_map_kernel(log_density, initial, key, learning_rate, sigma, fixation_count, batch_size, steps_per_epoch, epochs, truncate):
    n_pixels = log_density.size
    cumulative = _cumulative(log_density)

    def step(carry, k):
        s, key = carry
        key, sub = jax.random.split(key)
        epoch = jnp.maximum(k // steps_per_epoch, 1).astype(jnp.result_type(float))
        lr = (learning_rate / epoch).astype(s.dtype)  # 1/k decay per epoch, as pysaliency
        empirical = _sample_empirical_maps(sub, cumulative, log_density.shape, fixation_count, batch_size, sigma, truncate)
        grad = -_expected_sim_gradient(s, empirical)
        # Projected SGD on the simplex (pysaliency's DistributionSGD): no step below zero, sum kept.
        grad = jnp.minimum(grad, s / lr)
        grad = grad - jnp.sum(grad) / n_pixels
        s = jnp.maximum(s - lr * grad, 0)
        return (s / jnp.sum(s), key), None

    (s, _), _ = jax.lax.scan(step, (initial, key), jnp.arange(steps_per_epoch * epochs))
    return s


def sim_saliency_map(
    log_density,
    sigma: float,
    *,
    seed: int = 0,
    fixation_count: int = 100,
    batch_size: int = 50,
    samples_per_epoch: int = 1000,
    epochs: int = 20,
    learning_rate: float | None = None,
    truncate: float = 3.0,
) -> np.ndarray:
    """The saliency map that maximises expected SIM under the model (Kümmerer et al. 2018).

    Same idea as pysaliency's ``SIMSaliencyMapModel``: start from the density blurred with ``sigma``
    (zero padding), then projected stochastic gradient ascent on the mean SIM against empirical maps of
    ``fixation_count`` fixations sampled from the density and blurred with ``sigma`` (truncated at
    ``truncate`` sigma), keeping the map nonnegative with sum 1; the step size decays as 1/epoch.
    Differences: JAX's sampler and a fixed number of epochs instead of pysaliency's validation-based
    stopping, so maps agree in expected SIM, not pixel by pixel. ``learning_rate`` defaults to
    0.1 / (H*W) (pysaliency's 1e-7 for a 1024x768 image, scaled with the pixel count).

    log_density: (H, W) in nats. Returns (H, W), nonnegative, summing to 1. Costs
    ``epochs * samples_per_epoch`` empirical maps of the image size: at the defaults on a 768x1024
    image, 117 s of CPU time (543 s wall on a busy 2-core machine, 0.3 CPU-s per step of 50 maps);
    use an accelerator for datasets.
    """
    maps, batched = validation.as_maps("log_density", log_density)
    if batched and maps.shape[0] != 1:
        raise ValueError(f"sim_saliency_map takes one (H, W) log density, got {maps.shape}")
    ld = maps[0]
    lr = 0.1 / ld.size if learning_rate is None else float(learning_rate)
    initial = metrics.gaussian_blur(np.exp(ld), sigma, mode="constant")
    initial = np.maximum(initial, 0)
    initial /= initial.sum()
    with jax.enable_x64(True):
        out = _sim_map_kernel(
            ld, initial, jax.random.PRNGKey(seed), lr, float(sigma), int(fixation_count), int(batch_size),
            max(samples_per_epoch // batch_size, 1), int(epochs), float(truncate),
        )
    return np.asarray(out)


def expected_sim(saliency_map, log_density, sigma: float, *, seed: int = 1, samples: int = 500, fixation_count: int = 100, truncate: float = 3.0) -> float:
    """Monte-Carlo expected SIM of a saliency map against empirical maps sampled from ``log_density``.

    Both (H, W). Empirical maps as in :func:`sim_saliency_map` (``fixation_count`` fixations, blur
    ``sigma`` px, zero padding). Used to compare SIM maps; the seed fixes the samples.
    """
    smap, _ = validation.as_maps("saliency_map", saliency_map)
    ld, _ = validation.as_maps("log_density", log_density)
    validation.check_same_shape("saliency_map", smap, "log_density", ld)
    with jax.enable_x64(True):
        empirical = _sample_empirical_maps(jax.random.PRNGKey(seed), _cumulative(ld[0]), ld.shape[1:], fixation_count, samples, float(sigma), float(truncate))
        return float(_expected_sim(jnp.asarray(smap[0]), empirical))
