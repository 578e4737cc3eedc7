"""Saliency metrics in JAX, matching the reference library pysaliency.

Conventions (shared across the project):

* A log density is a float array ``(H, W)`` or ``(B, H, W)`` in nats, normalised so that logsumexp over
  the pixels is 0; the functions that need a density (log-likelihood, information gain) refuse one whose
  logsumexp is further than :data:`NORMALISATION_ATOL` from 0. A saliency map is any finite float array
  of the same shapes; one whose range is within :data:`CONSTANT_RTOL` of its magnitude counts as constant.
* Fixations are padded float arrays ``xs, ys`` of shape ``(N,)`` or ``(B, N)`` in 0-based pixel
  coordinates (x to the right, y down) with a boolean ``mask`` of the same shape marking real fixations.
  A fixation reads the pixel ``[int(y), int(x)]`` (truncation), as pysaliency does.
* Per-fixation results come back with the fixations' shape and NaN at padded positions; per-image
  results have shape ``()`` or ``(B,)``. Average them with :func:`mean_per_fixation` or
  :func:`mean_per_image`.

Every public function validates its inputs (finite maps, matching shapes, non-empty fixation sets,
fixations inside the map, normalised log densities) on the host and raises ``ValueError`` naming the
problem, then calls a pure jitted kernel (the ``_*_kernel`` functions), vectorised over images and
fixations. The public functions compute in
float64 (under ``jax.enable_x64``) so that they agree with pysaliency to far better than 1e-6; the
kernels themselves follow the dtype they are given and can be used inside other jitted code.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

LN2 = math.log(2.0)
# The MIT/Tuebingen benchmark's regularisation constant for KLDiv (MATLAB's eps, as pysaliency writes it).
KLDIV_EPS = 2.2204e-16
# How far from 0 a log density's logsumexp may be, in nats. Producers normalise in float32: each stored
# log value is rounded to 2^-24 of its size (< 2e-6 nats for |log p| < 30), and the pairwise or tree
# sums of numpy, XLA and torch over ~1e6 float32 terms err by at most ~log2(1e6) * 2^-24 = 1.2e-6
# (measured at 768x1024: 4e-8 to 5e-7 nats for this project's model, its center bias and
# jax.nn.logsumexp). 1e-3 is ~1000 times that, and an accepted map moves LL and IG by at most
# 1e-3 / ln 2 = 0.0014 bits/fixation. A naive sequential float32 running sum errs by up to
# 1e6 * 2^-24 = 0.06 (1.4e-3 measured at 768x1024) and is refused: renormalise such maps in float64.
NORMALISATION_ATOL = 1e-3
# A map whose range (max - min) is at most this fraction of its magnitude max(|max|, |min|) is constant
# for the metrics that divide by its spread (NSS, CC) or normalise it to a density (KLDiv, SIM), as
# pysaliency scores an exactly constant map. The FFT blur leaves a ripple of up to ~2e-15 of the value on
# a constant map (measured from 24x32 to 1024x768 at sigma 2-35 px), whose correlation and NSS are noise
# of any size (CC 1e-7 to 0.1); two different float32 values differ by at least 2^-24 = 6e-8 of their
# magnitude. 1e-12 is 500 times the ripple and far below any real map's range. In float32 kernels it is
# below the resolution, so there only exactly constant maps count.
CONSTANT_RTOL = 1e-12

BlurMode = Literal["reflect", "nearest", "constant", "mirror", "wrap"]
# scipy.ndimage boundary modes -> numpy/jnp.pad modes with the same extension rule.
_PAD_MODES = {"reflect": "symmetric", "nearest": "edge", "constant": "constant", "mirror": "reflect", "wrap": "wrap"}


# ----------------------------------------------------------------------------------------------------
# Pure kernels. Shapes: maps (B, Hc, Wc) on a canvas holding each image's (H, W) = sizes[b] in its
# top-left corner (the rest is ignored; keep it finite), sizes (B, 2) int, fixations (B, N), masks bool.
# One compilation serves every image size that fits the canvas.
# ----------------------------------------------------------------------------------------------------


# Image statistics come from :func:`_reduce_image`: one variadic reduction over the two image axes of
# (B, Hc, Wc) arrays. XLA on CPU runs it as one fused pass, where separate jnp.sum / max / min calls on
# the same input materialise the input (and the validity mask) once per reduction, about ten times
# slower; and never over a flattened copy, which would recompute each pixel's row and column.
_IMAGE = (1, 2)
_COMBINE = {"sum": jax.lax.add, "max": jax.lax.max, "min": jax.lax.min}


def _reduce_image(*terms: tuple[jax.Array, str]) -> tuple[jax.Array, ...]:
    """(array (B, Hc, Wc), "sum" | "max" | "min") pairs -> one (B,) result per pair, in one pass.

    XLA hands a lone reduction to its YNNPACK fusion, which materialises the fused input first, so a
    single term gets a companion (its maximum), kept alive by a comparison that is only false for NaN.
    Keep the elementwise terms of different passes distinct: a subexpression shared by two passes is
    materialised once instead of fused into both.
    """
    if len(terms) == 1:
        result, companion = _reduce_image(terms[0], (terms[0][0], "max"))
        return (jnp.where(companion == companion, result, jnp.nan),)
    arrays = tuple(a for a, _ in terms)
    kinds = tuple(k for _, k in terms)
    init = tuple(jnp.asarray({"sum": 0, "max": -jnp.inf, "min": jnp.inf}[k], a.dtype) for a, k in terms)

    def combine(x, y):
        return tuple(_COMBINE[k](a, b) for k, a, b in zip(kinds, x, y))

    return tuple(jax.lax.reduce(arrays, init, combine, _IMAGE))


def _masked(maps: jax.Array, valid: jax.Array, kind: str) -> tuple[jax.Array, str]:
    """A term for :func:`_reduce_image`: the max or min of ``maps`` over the pixels where valid is 1."""
    big = jnp.finfo(maps.dtype).max
    return maps * valid + (valid - 1) * (big if kind == "max" else -big), kind


def _near_constant(top: jax.Array, low: jax.Array) -> jax.Array:
    """(B,) maxima and minima -> (B,) bool: the map's range is within :data:`CONSTANT_RTOL` of its magnitude."""
    return top - low <= CONSTANT_RTOL * jnp.maximum(jnp.abs(top), jnp.abs(low))


def _valid(maps: jax.Array, sizes: jax.Array) -> jax.Array:
    """(B, Hc, Wc) in the maps' dtype: 1 for pixels inside each image, 0 outside.

    A float mask, multiplied in rather than ``jnp.where``-selected: several times faster in XLA on CPU.
    It needs finite values outside the image, which the canvas conventions guarantee.
    """
    _, height, width = maps.shape
    rows = (jnp.arange(height)[None, :, None] < sizes[:, 0, None, None]).astype(maps.dtype)
    cols = (jnp.arange(width)[None, None, :] < sizes[:, 1, None, None]).astype(maps.dtype)
    return rows * cols


def _masked_max(maps: jax.Array, valid: jax.Array, axis=None) -> jax.Array:
    return jnp.max(_masked(maps, valid, "max")[0], axis=axis)


def _masked_min(maps: jax.Array, valid: jax.Array, axis=None) -> jax.Array:
    return jnp.min(_masked(maps, valid, "min")[0], axis=axis)


def _flat_indices(xs: jax.Array, ys: jax.Array, mask: jax.Array, width: int) -> jax.Array:
    """Row-major canvas index of each fixation (truncation), 0 at padded positions."""
    ix = jnp.trunc(xs).astype(jnp.int32)
    iy = jnp.trunc(ys).astype(jnp.int32)
    return jnp.where(mask, iy * width + ix, 0)


def _gather(maps: jax.Array, xs: jax.Array, ys: jax.Array, mask: jax.Array) -> jax.Array:
    """(B, Hc, Wc) maps read at (B, N) fixations -> (B, N); padded positions read pixel [0, 0].

    Indexed in 3-D: flattening a map that XLA fuses into the gather would cost a division per element.
    """
    iy = jnp.where(mask, jnp.trunc(ys).astype(jnp.int32), 0)
    ix = jnp.where(mask, jnp.trunc(xs).astype(jnp.int32), 0)
    return jax.vmap(lambda m, y, x: m[y, x])(maps, iy, ix)


@jax.jit
def _log_likelihood_kernel(log_density, sizes, xs, ys, mask):
    pixels = (sizes[:, 0] * sizes[:, 1]).astype(log_density.dtype)
    values = (_gather(log_density, xs, ys, mask) + jnp.log(pixels)[:, None]) / LN2
    return jnp.where(mask, values, jnp.nan)


@jax.jit
def _information_gain_kernel(log_density, baseline_log_density, xs, ys, mask):
    values = _gather(log_density - baseline_log_density, xs, ys, mask) / LN2
    return jnp.where(mask, values, jnp.nan)


def _search_group(n: int) -> int:
    """Thresholds per group of :func:`_bin_values`: a power of 2 that keeps the groups at most 32."""
    group = 8
    while n > 32 * group:
        group *= 2
    return group


def _bin_values(thresholds_sorted: jax.Array, values: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(B, N) ascending thresholds, (B, ...) values -> ``a(v) = #{t <= v}`` (int32) and ``t[a(v) - 1] == v``.

    A two-level search, because gathers are slow in XLA on CPU and elementwise comparisons are not: the
    thresholds are cut into groups of ``S`` (padded with +inf), each value's group is found by comparing it
    with the last threshold of every group (elementwise), and its place inside the group by a
    branchless binary search (log2(S) + 1 gathers). The largest threshold passed on the way is
    t[a(v) - 1], so equality needs no further gather.
    """
    batch, n = thresholds_sorted.shape
    per_image = (batch,) + (1,) * (values.ndim - 1)
    group = _search_group(n)
    n_groups = -(-n // group)
    table = jnp.pad(thresholds_sorted, ((0, 0), (0, n_groups * group - n)), constant_values=jnp.inf)
    below = jnp.full(values.shape, -jnp.inf, values.dtype)  # the largest threshold <= v found so far
    pos = jnp.zeros(values.shape, jnp.int32)
    for j in range(1, n_groups):
        pivot = table[:, j * group - 1].reshape(per_image)
        passed = pivot <= values
        pos = pos + passed.astype(jnp.int32)
        below = jnp.where(passed, pivot, below)
    offset = (jnp.arange(batch, dtype=jnp.int32) * table.shape[1]).reshape(per_image)
    pos = pos * group + offset
    flat_table = table.reshape(-1)
    step = group // 2
    while step >= 1:
        candidate = flat_table.at[pos + step - 1].get(mode="promise_in_bounds")
        passed = candidate <= values
        pos = pos + step * passed.astype(jnp.int32)
        below = jnp.where(passed, candidate, below)
        step //= 2
    candidate = flat_table.at[pos].get(mode="promise_in_bounds")
    passed = candidate <= values
    pos = pos + passed.astype(jnp.int32)
    below = jnp.where(passed, candidate, below)
    return pos - offset, below == values


def _count_below_and_equal(thresholds_sorted: jax.Array, values: jax.Array, include: jax.Array) -> tuple[jax.Array, jax.Array]:
    """For each threshold t_i (ascending): counts of included values v < t_i and of those v == t_i.

    thresholds_sorted (B, N), values and include (B, ...) -> two (B, N) arrays in the values' dtype.
    One search per value (:func:`_bin_values`: v < t_i exactly when a(v) <= i) and one integer
    histogram of ``2 a(v) + [v equals a threshold]``: O(M log N), no (M, N) comparison matrix, no sort
    of the values. Excluded values go to a bin of their own.
    """
    batch, n = thresholds_sorted.shape
    bins, equal = _bin_values(thresholds_sorted, values)
    n_bins = 2 * (n + 1) + 1
    key = jnp.where(include, 2 * bins + equal.astype(jnp.int32), n_bins - 1)
    key = key + (jnp.arange(batch, dtype=jnp.int32) * n_bins).reshape((batch,) + (1,) * (values.ndim - 1))
    hist = jnp.zeros(batch * n_bins, jnp.int32).at[key].add(1, mode="promise_in_bounds")
    hist = hist.reshape(batch, n_bins)[:, :-1].reshape(batch, n + 1, 2)
    less = jnp.cumsum(hist[:, :, 0] + hist[:, :, 1], axis=1)[:, :-1]
    # Values equal to t_i land in the bin after the last copy of t_i.
    last = jax.vmap(lambda t: jnp.searchsorted(t, t, side="right"))(thresholds_sorted)
    equal_counts = jnp.take_along_axis(hist[:, :, 1], last, axis=1)
    return less.astype(values.dtype), equal_counts.astype(values.dtype)


def _sorted_positives(positives, positive_mask):
    """(B, N) -> the positives ascending with +inf at padded positions, and the sorting permutation."""
    pos = jnp.where(positive_mask, positives, jnp.inf)
    order = jnp.argsort(pos, axis=1)
    return jnp.take_along_axis(pos, order, axis=1), order


def _unsort(sorted_values, order, positive_mask):
    values = jax.vmap(lambda s, o: jnp.zeros_like(s).at[o].set(s))(sorted_values, order)
    return jnp.where(positive_mask, values, jnp.nan)


def _auc_per_positive(positives, positive_mask, negatives, negative_mask):
    """(B, N), (B, M) -> (B, N): ``(#{neg < pos} + 0.5 #{neg == pos}) / #neg`` for every positive."""
    sorted_pos, order = _sorted_positives(positives, positive_mask)
    less, equal = _count_below_and_equal(sorted_pos, negatives, negative_mask)
    count = jnp.sum(negative_mask, axis=1).astype(negatives.dtype)[:, None]
    return _unsort((less + 0.5 * equal) / count, order, positive_mask)


def _judd_one(low_top, sorted_pos, less, n_valid, positives, idx, mask):
    """AUC-Judd of one image from the counts of pixels below each sorted fixated value.

    pysaliency's ``general_roc(..., judd=1)``: thresholds at the fixated values plus one above and one at
    the bottom of everything, positives the fixated values (repeats included), negatives the unfixated
    pixels. Counts of unfixated pixels below a threshold are the counts of all pixels minus those of
    the (at most N) distinct fixated pixels.
    """
    dtype = less.dtype
    n_fix = mask.shape[0]
    # Distinct fixated pixels: a fixation counts if no earlier real fixation hit the same pixel.
    earlier = jnp.tril(jnp.ones((n_fix, n_fix), bool), k=-1)
    repeated = jnp.any(earlier & (idx[:, None] == idx[None, :]) & mask[None, :], axis=1)
    distinct = mask & ~repeated
    n_pos = jnp.sum(mask).astype(dtype)
    n_neg = n_valid - jnp.sum(distinct).astype(dtype)
    low, top = low_top
    # Thresholds ascending: low, the sorted positives (padding -> top), top.
    thresholds = jnp.concatenate([low[None], jnp.where(jnp.isfinite(sorted_pos), sorted_pos, top), top[None]])
    below_all = jnp.concatenate([jnp.zeros(1, dtype), jnp.where(jnp.isfinite(sorted_pos), less, n_valid), n_valid[None]])
    below_fixated = jnp.sum(distinct[None, :] & (positives[None, :] < thresholds[:, None]), axis=1).astype(dtype)
    fp = n_neg - (below_all - below_fixated)
    tp = n_pos - jnp.sum(mask[None, :] & (positives[None, :] < thresholds[:, None]), axis=1).astype(dtype)
    # Along the curve thresholds descend; the leading (0, 0) is pysaliency's.
    hit_rate = jnp.concatenate([jnp.zeros(1, dtype), (tp / n_pos)[::-1]])
    false_rate = jnp.concatenate([jnp.zeros(1, dtype), (fp / n_neg)[::-1]])
    return jnp.sum(jnp.diff(false_rate) * (hit_rate[1:] + hit_rate[:-1]) / 2)


@jax.jit
def _auc_and_judd_kernel(saliency_map, sizes, xs, ys, mask):
    """-> (B, N) AUC per fixation against all pixels, (B,) AUC-Judd, from one pass of counts."""
    valid = _valid(saliency_map, sizes)
    positives = _gather(saliency_map, xs, ys, mask)
    sorted_pos, order = _sorted_positives(positives, mask)
    less, equal = _count_below_and_equal(sorted_pos, saliency_map, valid > 0)
    n_valid = _count(sizes, saliency_map.dtype)
    auc = _unsort((less + 0.5 * equal) / n_valid[:, None], order, mask)
    idx = _flat_indices(xs, ys, mask, saliency_map.shape[2])
    top, low = _reduce_image(_masked(saliency_map, valid, "max"), _masked(saliency_map, valid, "min"))
    judd = jax.vmap(_judd_one)((low, top + 1), sorted_pos, less, n_valid, positives, idx, mask)
    return auc, judd


@jax.jit
def _auc_kernel(saliency_map, sizes, xs, ys, mask):
    return _auc_and_judd_kernel(saliency_map, sizes, xs, ys, mask)[0]


@jax.jit
def _auc_judd_kernel(saliency_map, sizes, xs, ys, mask):
    return _auc_and_judd_kernel(saliency_map, sizes, xs, ys, mask)[1]


@jax.jit
def _auc_negatives_kernel(saliency_map, xs, ys, mask, neg_xs, neg_ys, neg_mask):
    positives = _gather(saliency_map, xs, ys, mask)
    negatives = _gather(saliency_map, neg_xs, neg_ys, neg_mask)
    return _auc_per_positive(positives, mask, negatives, neg_mask)


def _count(sizes: jax.Array, dtype) -> jax.Array:
    """(B,) pixels per image."""
    return (sizes[:, 0] * sizes[:, 1]).astype(dtype)


@jax.jit
def _nss_kernel(saliency_map, sizes, xs, ys, mask):
    valid = _valid(saliency_map, sizes)
    count = _count(sizes, saliency_map.dtype)
    total, top = _reduce_image((saliency_map * valid, "sum"), _masked(saliency_map, valid, "max"))
    mean = (total / count)[:, None, None]
    squares, low = _reduce_image((((saliency_map - mean) * valid) ** 2, "sum"), _masked(saliency_map, valid, "min"))
    std = jnp.where(_near_constant(top, low), jnp.inf, jnp.sqrt(squares / count))  # a constant map scores 0 everywhere
    values = (_gather(saliency_map, xs, ys, mask) - mean[:, :, 0]) / std[:, None]
    return jnp.where(mask, values, jnp.nan)


def _pair_metrics(map_1, map_2, sizes):
    """CC, KLDiv and SIM of (B, Hc, Wc) map pairs in three fused passes -> three (B,) arrays.

    CC: Pearson correlation; as pysaliency, 0 when only map_1 is constant, NaN when map_2 is.
    KLDiv and SIM compare the maps converted to densities as pysaliency's
    convert_saliency_map_to_density(minimum_value=0): shifted to minimum 0 when negative, divided by
    the sum (uniform when the sum is 0 or the map is constant); map_1 is the model, map_2 the empirical
    map. "Constant" is :func:`_near_constant`: round-off ripples score as the constant map they came from.
    """
    dtype = map_1.dtype
    valid = _valid(map_1, sizes)
    count = _count(sizes, dtype)
    sum_1, sum_2, max_1, min_1, max_2, min_2 = _reduce_image(
        (map_1 * valid, "sum"), (map_2 * valid, "sum"),
        _masked(map_1, valid, "max"), _masked(map_1, valid, "min"), _masked(map_2, valid, "max"), _masked(map_2, valid, "min"),
    )
    image = lambda x: x[:, None, None]  # noqa: E731
    a = (map_1 - image(sum_1 / count)) * valid
    b = (map_2 - image(sum_2 / count)) * valid
    ab, aa, bb = _reduce_image((a * b, "sum"), (a * a, "sum"), (b * b, "sum"))
    cc = ab / jnp.sqrt(aa * bb)
    constant_1, constant_2 = _near_constant(max_1, min_1), _near_constant(max_2, min_2)
    cc = jnp.where(constant_2, jnp.nan, jnp.where(constant_1, 0.0, cc))

    def density(maps, total, minimum, constant):
        # Shifting by -minimum adds count * -minimum to the sum (0 for the nonnegative maps of the driver).
        shift = jnp.minimum(minimum, 0)
        total = total - shift * count
        scale = jnp.where(total != 0, 1 / jnp.where(total != 0, total, 1), 0)
        return jnp.where(image((total != 0) & ~constant), (maps - image(shift)) * valid * image(scale), valid / image(count))

    p_model, p_emp = density(map_1, sum_1, min_1, constant_1), density(map_2, sum_2, min_2, constant_2)
    kl, sim = _reduce_image((p_emp * jnp.log(KLDIV_EPS + p_emp / (p_model + KLDIV_EPS)), "sum"), (jnp.minimum(p_model, p_emp), "sum"))
    return cc, kl, sim


@jax.jit
def _cc_kernel(map_1, map_2, sizes):
    return _pair_metrics(map_1, map_2, sizes)[0]


@jax.jit
def _kl_div_kernel(saliency_map, empirical_map, sizes):
    return _pair_metrics(saliency_map, empirical_map, sizes)[1]


@jax.jit
def _sim_kernel(map_1, map_2, sizes):
    return _pair_metrics(map_1, map_2, sizes)[2]


@jax.jit
def _pair_metrics_kernel(map_1, map_2, sizes):
    return _pair_metrics(map_1, map_2, sizes)


# ----------------------------------------------------------------------------------------------------
# Gaussian blur (scipy.ndimage.gaussian_filter) and the empirical fixation map.
# ----------------------------------------------------------------------------------------------------


def gaussian_kernel_1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's normalised 1-D Gaussian, radius ``int(truncate * sigma + 0.5)``. -> (2r+1,)"""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / float(sigma) ** 2 * x**2)
    return phi / phi.sum()


def _extension(positions: jax.Array, lengths: jax.Array, mode: str) -> tuple[jax.Array, jax.Array]:
    """scipy.ndimage's boundary rule: source index and weight of each (possibly outside) position.

    positions (P,) may be negative or >= length; lengths (B,). Returns (B, P) indices and weights.
    """
    j = positions[None, :]
    n = lengths[:, None]
    weight = jnp.ones(j.shape, jnp.bool_) & (n > 0)
    if mode == "reflect":  # d c b a | a b c d | d c b a
        m = jnp.mod(j, 2 * n)
        idx = jnp.where(m < n, m, 2 * n - 1 - m)
    elif mode == "mirror":  # d c b | a b c d | c b a
        period = jnp.maximum(2 * n - 2, 1)
        m = jnp.mod(j, period)
        idx = jnp.where(m < n, m, period - m)
    elif mode == "wrap":
        idx = jnp.mod(j, n)
    elif mode == "nearest":
        idx = jnp.clip(j, 0, n - 1)
    elif mode == "constant":
        idx = jnp.clip(j, 0, n - 1)
        weight = (j >= 0) & (j < n)
    else:
        raise ValueError(f"unknown blur mode {mode!r}")
    return idx, weight


def _along(values: jax.Array, axis: int, ndim: int) -> jax.Array:
    """(B, P) per-image values -> broadcastable along ``axis`` of a (B, ...) array of ``ndim`` dims."""
    shape = [values.shape[0]] + [1] * (ndim - 1)
    shape[axis] = values.shape[1]
    return values.reshape(shape)


def _fft_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: XLA's FFT on CPU is up to twice as slow on lengths with large factors."""
    best = 1 << (n - 1).bit_length()
    p3 = 1
    while p3 < best:
        p35 = p3
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 5
        p3 *= 3
    return best


def _blur_axis(x: jax.Array, lengths: jax.Array, axis: int, kernel: np.ndarray, mode: str) -> jax.Array:
    """Correlate (B, ...) along ``axis`` (1 or 2) with a symmetric kernel, each image at its length.

    The signal is extended by the kernel radius with the boundary rule (a gather of whole rows or
    columns), zero-padded to a fast FFT length and convolved by FFT: the circular convolution is exact
    on the image because no output there reaches the wrap-around. Values past each image's length come
    back undefined.
    """
    radius = (kernel.shape[0] - 1) // 2
    length = x.shape[axis]
    n = _fft_length(length + 2 * radius)
    idx, weight = _extension(jnp.arange(length + 2 * radius) - radius, lengths, mode)
    padded = jax.vmap(lambda m, i: jnp.take(m, i, axis=axis - 1))(x, idx) * _along(weight.astype(x.dtype), axis, x.ndim)
    taps = np.zeros(n)
    taps[: radius + 1] = kernel[radius:]
    if radius:
        taps[-radius:] = kernel[:radius]
    response = np.fft.rfft(taps).reshape([-1 if d == axis else 1 for d in range(x.ndim)])
    full = jnp.fft.irfft(jnp.fft.rfft(padded, n=n, axis=axis) * response, n=n, axis=axis)
    return jax.lax.slice_in_dim(full, radius, radius + length, axis=axis)


@functools.partial(jax.jit, static_argnames=("sigma", "mode", "truncate"))
def _blur_kernel(maps, sizes, sigma: float, mode: str = "reflect", truncate: float = 4.0):
    kernel = gaussian_kernel_1d(sigma, truncate)
    blurred = _blur_axis(_blur_axis(maps, sizes[:, 0], 1, kernel, mode), sizes[:, 1], 2, kernel, mode)
    return blurred * _valid(maps, sizes)


@jax.jit
def _fixation_counts_kernel(xs, ys, mask, template):
    batch, _, width = template.shape
    idx = _flat_indices(xs, ys, mask, width)
    counts = jnp.zeros((batch, template.shape[1] * width), template.dtype)
    counts = jax.vmap(lambda c, i, m: c.at[i].add(m.astype(c.dtype)))(counts, idx, mask)
    return counts.reshape(template.shape)


def _delta_profiles(positions, lengths, length: int, sigma: float, truncate: float, mode: str, dtype) -> jax.Array:
    """Blurred unit impulses: (B, N) pixel positions (-1: none) on axes of ``lengths`` -> (B, N, length).

    Row n of image b is ``gaussian_filter1d`` of the impulse at positions[b, n] along an axis of
    lengths[b] (undefined past it). For 'constant' (zero padding) each row is the kernel itself,
    centred on the impulse, read from its table. For 'reflect' on axes at least one kernel radius
    long, each output sums the kernel at three offsets (the impulse and its two mirror images),
    elementwise; otherwise the impulses are blurred by FFT.
    """
    kernel = gaussian_kernel_1d(sigma, truncate)
    radius = (kernel.shape[0] - 1) // 2
    if mode == "constant":
        offset = jnp.arange(length)[None, None, :] - positions[:, :, None] + radius
        inside = (offset >= 0) & (offset <= 2 * radius) & (positions[:, :, None] >= 0)
        return jnp.where(inside, jnp.asarray(kernel, dtype)[jnp.clip(offset, 0, 2 * radius)], 0)
    deltas = (jnp.arange(length)[None, None, :] == positions[:, :, None]).astype(dtype)

    def by_fft():
        return _blur_axis(deltas, lengths, 2, kernel, mode)

    if mode != "reflect" or radius > length:
        return by_fft()

    def closed_form():
        # scipy's weights: exp(-x^2 / (2 sigma^2)), normalised by their sum over the truncated support.
        scale, norm = -0.5 / float(sigma) ** 2, float(np.exp(-0.5 / float(sigma) ** 2 * np.arange(-radius, radius + 1.0) ** 2).sum())
        y = jnp.arange(length)[None, None, :]
        i = positions[:, :, None]
        out = jnp.zeros(deltas.shape, dtype)
        for offset in (i - y, -1 - i - y, 2 * lengths[:, None, None] - 1 - i - y):  # x[i], x[-1-i], x[2L-1-i]
            out = out + jnp.where(jnp.abs(offset) <= radius, jnp.exp(scale * (offset * offset).astype(dtype)), 0)
        return out * (positions[:, :, None] >= 0) / norm

    return jax.lax.cond(jnp.all(lengths >= radius), closed_form, by_fft)


@functools.partial(jax.jit, static_argnames=("sigma", "mode", "truncate"))
def _fixation_map_kernel(xs, ys, mask, template, sizes, sigma: float, mode: str = "reflect", truncate: float = 4.0):
    """Blurred fixation counts on the canvas of ``template`` (B, Hc, Wc).

    The blur is separable and linear, so the map is a sum over fixations of outer products: each
    fixation's blurred row profile (B, N, Wc) times its blurred column profile (B, N, Hc), one batched
    matrix product. Same result as counting first and blurring the whole map, without full-size FFTs.
    """
    batch, height, width = template.shape
    dtype = template.dtype
    ix = jnp.where(mask, jnp.trunc(xs).astype(jnp.int32), -1)
    iy = jnp.where(mask, jnp.trunc(ys).astype(jnp.int32), -1)
    rows = _delta_profiles(ix, sizes[:, 1], width, sigma, truncate, mode, dtype)
    cols = _delta_profiles(iy, sizes[:, 0], height, sigma, truncate, mode, dtype)
    blurred = jnp.einsum("byn,bnx->byx", jnp.swapaxes(cols, 1, 2), rows, precision=jax.lax.Precision.HIGHEST)
    # FFT round-off leaves ~1e-17 of the peak where the exact value is 0; a count map is nonnegative.
    return jnp.maximum(blurred, 0) * _valid(template, sizes)


# ----------------------------------------------------------------------------------------------------
# Validation helpers for the public wrappers.
# ----------------------------------------------------------------------------------------------------


def _maps(name: str, maps, *, finite: bool = True) -> tuple[np.ndarray, bool]:
    arr = np.asarray(maps, dtype=np.float64)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (H, W) or (B, H, W), got {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise ValueError(f"{name} contains NaN or infinity (first at index {bad})")
    batched = arr.ndim == 3
    return (arr if batched else arr[None]), batched


def _same_shape(name_1: str, a: np.ndarray, name_2: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_2} has shape {b.shape[1:]} (batch {b.shape[0]}), {name_1} has {a.shape[1:]} (batch {a.shape[0]})")


def _fixations(xs, ys, mask, maps: np.ndarray, batched: bool, name: str = "fixations") -> tuple[np.ndarray, ...]:
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    mask = np.ones(xs.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if not (xs.shape == ys.shape == mask.shape):
        raise ValueError(f"{name}: xs {xs.shape}, ys {ys.shape} and mask {mask.shape} must have the same shape")
    expected_ndim = 2 if batched else 1
    if xs.ndim != expected_ndim:
        raise ValueError(f"{name}: expected {expected_ndim}-D coordinates for maps of shape {maps.shape if batched else maps.shape[1:]}, got {xs.shape}")
    if not batched:
        xs, ys, mask = xs[None], ys[None], mask[None]
    if xs.shape[0] != maps.shape[0]:
        raise ValueError(f"{name}: batch of {xs.shape[0]} fixation sets for {maps.shape[0]} maps")
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise ValueError(f"{name}: empty fixation set for image(s) {empty.tolist()} (mask has no True entry)")
    height, width = maps.shape[1:]
    real_xs, real_ys = xs[mask], ys[mask]
    if not (np.all(np.isfinite(real_xs)) and np.all(np.isfinite(real_ys))):
        raise ValueError(f"{name}: coordinates contain NaN or infinity")
    outside = (real_xs < 0) | (real_xs >= width) | (real_ys < 0) | (real_ys >= height)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"{name}: {int(outside.sum())} fixation(s) outside the {height}x{width} map, "
            f"first at x={real_xs[k]}, y={real_ys[k]} (need 0 <= x < {width}, 0 <= y < {height})"
        )
    return np.where(mask, xs, 0.0), np.where(mask, ys, 0.0), mask


def _logsumexp_host(maps: np.ndarray) -> np.ndarray:
    """(B, H, W) -> (B,) logsumexp over each image, on the host. The exponentials are float32 (summed
    in float64): ~1e-7 nats of error, plenty for a check at 1e-3, three times faster than float64."""
    peak = maps.max(axis=(1, 2), keepdims=True)
    terms = np.exp((maps - peak).astype(np.float32))
    return peak[:, 0, 0].astype(np.float64) + np.log(terms.sum(axis=(1, 2), dtype=np.float64))


def normalisation_error(what: str, logsumexp: float) -> ValueError:
    """The one-line error for a log density ``what`` whose logsumexp (nats) is off."""
    return ValueError(f"{what} is not normalised: logsumexp {logsumexp:.4g} nats, need |logsumexp| <= "
                      f"{NORMALISATION_ATOL:g} (subtract the logsumexp over the pixels)")


def check_normalised(log_density, name: str = "log_density") -> None:
    """Raise ValueError unless each map of ``log_density`` ((H, W) or (B, H, W), nats) has
    ``|logsumexp| <= NORMALISATION_ATOL`` over its pixels; the error names the map and its logsumexp.

    Runs on the host, once per map (a few ms for 768x1024), outside the jitted kernels.
    """
    maps = np.asarray(log_density)
    if maps.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (H, W) or (B, H, W), got {maps.shape}")
    batched = maps.ndim == 3
    lse = _logsumexp_host(maps if batched else maps[None])
    bad = np.flatnonzero(~(np.abs(lse) <= NORMALISATION_ATOL))
    if bad.size:
        b = int(bad[0])
        raise normalisation_error(f"{name} of image {b}" if batched else name, float(lse[b]))


def _full_sizes(maps: np.ndarray) -> np.ndarray:
    return np.tile(np.array(maps.shape[1:], np.int32), (maps.shape[0], 1))


def _out(values, batched: bool) -> np.ndarray:
    values = np.asarray(values)
    return values if batched else values[0]


# ----------------------------------------------------------------------------------------------------
# Public API.
# ----------------------------------------------------------------------------------------------------


def log_likelihood(log_density, xs, ys, mask=None) -> np.ndarray:
    """Log-likelihood of each fixation in bits, relative to the uniform model.

    ``(log p[int(y), int(x)] + log(H*W)) / ln 2``. log_density: (H, W) or (B, H, W), nats, normalised
    (ValueError if a map's |logsumexp| exceeds :data:`NORMALISATION_ATOL`). xs, ys, mask: (N,) or (B, N).
    Returns (N,) or (B, N) bits/fixation, NaN at padded positions.
    """
    maps, batched = _maps("log_density", log_density)
    xs, ys, mask = _fixations(xs, ys, mask, maps, batched)
    check_normalised(maps if batched else maps[0], "log_density")
    with jax.enable_x64(True):
        return _out(_log_likelihood_kernel(maps, _full_sizes(maps), xs, ys, mask), batched)


def information_gain(log_density, baseline_log_density, xs, ys, mask=None) -> np.ndarray:
    """Information gain of each fixation over a baseline, in bits: ``(log p - log p_baseline) / ln 2``.

    Both log densities (H, W) or (B, H, W) in nats with the same shape, each normalised (ValueError if
    a map's |logsumexp| exceeds :data:`NORMALISATION_ATOL`); xs, ys, mask (N,) or (B, N).
    Returns (N,) or (B, N) bits/fixation, NaN at padded positions.
    """
    maps, batched = _maps("log_density", log_density)
    baseline, _ = _maps("baseline_log_density", baseline_log_density)
    _same_shape("log_density", maps, "baseline_log_density", baseline)
    xs, ys, mask = _fixations(xs, ys, mask, maps, batched)
    check_normalised(maps if batched else maps[0], "log_density")
    check_normalised(baseline if batched else baseline[0], "baseline_log_density")
    with jax.enable_x64(True):
        return _out(_information_gain_kernel(maps, baseline, xs, ys, mask), batched)


def auc(saliency_map, xs, ys, mask=None) -> np.ndarray:
    """AUC of each fixation against all pixels of the map (pysaliency ``AUC``, nonfixations 'uniform').

    ``(#{pixels < s_fix} + 0.5 #{pixels == s_fix}) / (H*W)``; a constant map gives 0.5.
    saliency_map: (H, W) or (B, H, W), any units; xs, ys, mask (N,) or (B, N).
    Returns (N,) or (B, N) in [0, 1], NaN at padded positions.
    """
    maps, batched = _maps("saliency_map", saliency_map)
    xs, ys, mask = _fixations(xs, ys, mask, maps, batched)
    with jax.enable_x64(True):
        return _out(_auc_kernel(maps, _full_sizes(maps), xs, ys, mask), batched)


def auc_against(saliency_map, xs, ys, mask, negative_xs, negative_ys, negative_mask=None) -> np.ndarray:
    """AUC of each fixation against given negative locations (ties count half).

    saliency_map: (H, W) or (B, H, W). Fixations (N,) or (B, N); negatives (M,) or (B, M), pixel
    coordinates of the same map, truncated like fixations. Returns (N,) or (B, N), NaN at padding.
    """
    maps, batched = _maps("saliency_map", saliency_map)
    xs, ys, mask = _fixations(xs, ys, mask, maps, batched)
    nxs, nys, nmask = _fixations(negative_xs, negative_ys, negative_mask, maps, batched, name="negatives")
    with jax.enable_x64(True):
        return _out(_auc_negatives_kernel(maps, xs, ys, mask, nxs, nys, nmask), batched)


def shuffled_negatives(
    image_index: int, image_sizes, fixation_xs, fixation_ys, fixation_image_index
) -> tuple[np.ndarray, np.ndarray]:
    """Nonfixations for shuffled AUC: every fixation of every *other* image, rescaled to this image.

    As pysaliency's ``FullShuffledNonfixationProvider``: ``int(x * W_n / W_other)``, same for y.
    image_sizes: (n_images, 2) of (H, W); fixation_*: flat (F,) arrays over the dataset.
    Returns (xs, ys), each (M,) float with integer values, M = fixations on other images.
    """
    other = np.asarray(fixation_image_index) != image_index
    xs, ys = rescaled_fixations(np.asarray(image_sizes)[image_index], image_sizes, fixation_xs, fixation_ys,
                                fixation_image_index)
    return xs[other], ys[other]


def rescaled_fixations(shape: tuple[int, int], image_sizes, fixation_xs, fixation_ys,
                       fixation_image_index) -> tuple[np.ndarray, np.ndarray]:
    """Every fixation of the dataset moved to an image of ``shape`` (H, W): ``int(x * W / W_own)``, same
    for y (pysaliency's shuffled nonfixations). Returns (xs, ys), each (F,) float with integer values."""
    sizes = np.asarray(image_sizes, dtype=np.float64)
    n = np.asarray(fixation_image_index)
    height, width = float(shape[0]), float(shape[1])
    xs = np.asarray(fixation_xs, dtype=np.float64) * (width / sizes[n, 1])
    ys = np.asarray(fixation_ys, dtype=np.float64) * (height / sizes[n, 0])
    return np.trunc(xs), np.trunc(ys)


def shuffled_auc(saliency_map, xs, ys, mask, image_index, image_sizes, fixation_xs, fixation_ys, fixation_image_index) -> np.ndarray:
    """Shuffled AUC of each fixation of one image (pysaliency ``sAUC``).

    Negatives are the fixations of all other images of the dataset, rescaled to this image's size.
    saliency_map: (H, W) of image ``image_index``; xs, ys, mask: (N,) its fixations; image_sizes
    (n_images, 2) as (H, W); fixation_*: flat (F,) over the whole dataset. Returns (N,).
    """
    maps, _ = _maps("saliency_map", saliency_map)
    if tuple(np.asarray(image_sizes)[image_index]) != maps.shape[1:]:
        raise ValueError(f"saliency_map has shape {maps.shape[1:]}, image {image_index} has size {tuple(np.asarray(image_sizes)[image_index])}")
    neg_xs, neg_ys = shuffled_negatives(image_index, image_sizes, fixation_xs, fixation_ys, fixation_image_index)
    return auc_against(maps[0], xs, ys, mask, neg_xs, neg_ys, None)


def auc_judd(
    saliency_map, xs, ys, mask=None, *, jitter: bool | np.random.RandomState | np.ndarray | None = None,
    noise_size: float = 1e-7,
) -> np.ndarray:
    """AUC-Judd per image (pysaliency ``AUC_Judd``): thresholds at fixated values, negatives = unfixated pixels.

    saliency_map: (H, W) or (B, H, W); xs, ys, mask (N,) or (B, N). Returns () or (B,) in [0, 1].

    ``jitter``: noise added to the map first, to break ties. pysaliency's ``AUC_Judd`` jitters by
    default: it makes one ``numpy.random.RandomState(42)`` per call and, for each image with fixations
    in dataset order, adds ``randn(H, W) * noise_size`` (noise_size 1e-7) drawn from that one stream, so
    image n's noise depends on the sizes of the images before it.

    * None or False: no jitter (the default here, and what :func:`deepgaze_jax.evaluation.evaluate` uses).
    * True: that stream for the images of the batch in batch order: a fresh ``RandomState(42)``, then
      ``randn(H, W) * noise_size`` image after image. A batch scores as pysaliency's ``AUC_Judd`` on the
      same images in the same order.
    * a ``numpy.random.RandomState``: draw the noise from it, image after image, advancing it. Make
      ``RandomState(42)`` once and pass it to the calls for the images of a dataset in order (skipping
      images without fixations, for which pysaliency draws nothing) to reproduce pysaliency on datasets
      of mixed image sizes.
    * an array of the map's shape: added as given.
    """
    maps, batched = _maps("saliency_map", saliency_map)
    if isinstance(jitter, (bool, np.bool_)):
        jitter = np.random.RandomState(42) if jitter else None
    if isinstance(jitter, np.random.RandomState):
        maps = maps + np.stack([jitter.randn(*maps.shape[1:]) * noise_size for _ in range(maps.shape[0])])
    elif jitter is not None:
        if isinstance(jitter, np.random.Generator) or np.ndim(jitter) not in (2, 3):
            raise ValueError(f"jitter must be None, a bool, a numpy RandomState or an array of the map's shape, got {type(jitter).__name__}")
        noise, _ = _maps("jitter", jitter)
        _same_shape("saliency_map", maps, "jitter", noise)
        maps = maps + noise
    xs, ys, mask = _fixations(xs, ys, mask, maps, batched)
    with jax.enable_x64(True):
        return _out(_auc_judd_kernel(maps, _full_sizes(maps), xs, ys, mask), batched)


def nss(saliency_map, xs, ys, mask=None) -> np.ndarray:
    """Normalised scanpath saliency of each fixation: ``(s_fix - mean(s)) / std(s)``, population std.

    A constant map scores 0. saliency_map: (H, W) or (B, H, W); xs, ys, mask (N,) or (B, N).
    Returns (N,) or (B, N), NaN at padded positions.
    """
    maps, batched = _maps("saliency_map", saliency_map)
    xs, ys, mask = _fixations(xs, ys, mask, maps, batched)
    with jax.enable_x64(True):
        return _out(_nss_kernel(maps, _full_sizes(maps), xs, ys, mask), batched)


def cc(saliency_map, empirical_map) -> np.ndarray:
    """Pearson correlation between a saliency map and an empirical map, per image.

    Both (H, W) or (B, H, W) of the same shape. As pysaliency: 0 when only the saliency map is constant,
    NaN when the empirical map is constant. Returns () or (B,).
    """
    maps_1, batched = _maps("saliency_map", saliency_map)
    maps_2, _ = _maps("empirical_map", empirical_map)
    _same_shape("saliency_map", maps_1, "empirical_map", maps_2)
    with jax.enable_x64(True):
        return _out(_cc_kernel(maps_1, maps_2, _full_sizes(maps_1)), batched)


def kl_div(saliency_map, empirical_map) -> np.ndarray:
    """Image-based KL divergence of the benchmark (pysaliency ``MIT_KLDiv``), in nats, per image.

    Both maps are shifted to minimum 0 (if negative) and divided by their sum;
    ``sum p_emp * log(eps + p_emp / (p_model + eps))`` with eps = 2.2204e-16. Lower is better.
    Both (H, W) or (B, H, W) of the same shape. Returns () or (B,).
    """
    maps_1, batched = _maps("saliency_map", saliency_map)
    maps_2, _ = _maps("empirical_map", empirical_map)
    _same_shape("saliency_map", maps_1, "empirical_map", maps_2)
    with jax.enable_x64(True):
        return _out(_kl_div_kernel(maps_1, maps_2, _full_sizes(maps_1)), batched)


def sim(saliency_map, empirical_map) -> np.ndarray:
    """Similarity (histogram intersection) ``sum min(p1, p2)`` of the two maps normalised to sum 1.

    Both (H, W) or (B, H, W) of the same shape. Returns () or (B,) in [0, 1].
    """
    maps_1, batched = _maps("saliency_map", saliency_map)
    maps_2, _ = _maps("empirical_map", empirical_map)
    _same_shape("saliency_map", maps_1, "empirical_map", maps_2)
    with jax.enable_x64(True):
        return _out(_sim_kernel(maps_1, maps_2, _full_sizes(maps_1)), batched)


def gaussian_blur(maps, sigma: float, *, mode: BlurMode = "reflect", truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(map, sigma, mode=mode, truncate=truncate)`` per image.

    maps: (H, W) or (B, H, W); sigma in pixels. Returns the same shape (FFT-based, exact to ~1e-15
    of the map's maximum).
    """
    arr, batched = _maps("maps", maps)
    if mode not in _PAD_MODES:
        raise ValueError(f"mode must be one of {sorted(_PAD_MODES)}, got {mode!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    with jax.enable_x64(True):
        return _out(_blur_kernel(arr, _full_sizes(arr), float(sigma), mode, float(truncate)), batched)


def fixation_map(
    xs, ys, mask, shape: tuple[int, int], sigma: float | None = None, *, mode: BlurMode = "reflect", truncate: float = 4.0
) -> np.ndarray:
    """Empirical fixation map: fixation counts per pixel, blurred with a Gaussian of ``sigma`` pixels.

    As pysaliency's ``FixationMap(..., kernel_size=sigma)`` (scipy gaussian_filter, 'reflect' mode).
    xs, ys, mask: (N,) or (B, N); shape: (H, W). sigma None or 0: raw counts.
    Returns (H, W) or (B, H, W) in fixations per pixel.
    """
    xs_arr = np.asarray(xs)
    batched = xs_arr.ndim == 2
    height, width = (int(s) for s in shape)
    template = np.zeros((xs_arr.shape[0] if batched else 1, height, width))
    xs, ys, mask = _fixations(xs, ys, mask, template, batched)
    with jax.enable_x64(True):
        if not sigma:
            return _out(_fixation_counts_kernel(xs, ys, mask, template), batched)
        return _out(_fixation_map_kernel(xs, ys, mask, template, _full_sizes(template), float(sigma), mode, float(truncate)), batched)


def mean_per_fixation(values, mask=None) -> float:
    """Average of per-fixation values over all real fixations (all images pooled)."""
    values = np.asarray(values, dtype=np.float64)
    mask = np.isfinite(values) if mask is None else np.asarray(mask, bool)
    return float(values[mask].mean())


def mean_per_image(values, mask=None) -> float:
    """Average over images of each image's mean per-fixation value. values, mask: (B, N)."""
    values = np.asarray(values, dtype=np.float64)
    mask = np.isfinite(values) if mask is None else np.asarray(mask, bool)
    per_image = np.where(mask, values, 0).sum(axis=1) / mask.sum(axis=1)
    return float(per_image.mean())
