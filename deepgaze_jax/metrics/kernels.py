"""The jitted metric kernels: pure, vectorised over images and fixations, no validation.

These are the building blocks of :mod:`deepgaze_jax.metrics` (whose public functions validate their
inputs on the host and then call one kernel each) and of :mod:`deepgaze_jax.evaluation`, which calls
them on batches of images of mixed sizes. They follow the dtype they are given (the validating
functions pass float64 under ``jax.enable_x64``) and can be used inside other jitted code.

Shapes, shared by every kernel:

* A batch of maps is ``(B, Hc, Wc)`` on a canvas that holds image b's ``(H, W) = sizes[b]`` in its
  top-left corner; the rest is ignored but must be finite. ``sizes``: ``(B, 2)`` int, (H, W) per image.
  One compilation serves every image size that fits the canvas.
* Log densities are in nats, normalised over each image (the kernels do not check this); saliency
  maps are in any units.
* Fixations are ``xs, ys`` ``(B, N)`` in 0-based pixel coordinates of the image (x right, y down),
  with a bool ``mask`` ``(B, N)`` marking real ones; a fixation reads pixel ``[int(y), int(x)]``.
  Per-fixation results are ``(B, N)`` with NaN at padded positions; per-image results ``(B,)``.

Nothing here checks shapes or values: a fixation outside its image or an empty fixation set gives a
meaningless number, not an error.
"""

from __future__ import annotations

import functools
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax.likelihood import LN2, bits_relative_to_uniform

# The MIT/Tuebingen benchmark's regularisation constant for KLDiv (MATLAB's eps, as pysaliency writes it).
KLDIV_EPS = 2.2204e-16
# A map whose range (max - min) is at most this fraction of its magnitude max(|max|, |min|) is constant
# for the metrics that divide by its spread (NSS, CC) or normalise it to a density (KLDiv, SIM), as
# pysaliency scores an exactly constant map. The FFT blur leaves a ripple of up to ~2e-15 of the value on
# a constant map (measured from 24x32 to 1024x768 at sigma 2-35 px), whose correlation and NSS are noise
# of any size (CC 1e-7 to 0.1); two different float32 values differ by at least 2^-24 = 6e-8 of their
# magnitude. 1e-12 is 500 times the ripple and far below any real map's range. In float32 kernels it is
# below the resolution, so there only exactly constant maps count.
CONSTANT_RTOL = 1e-12

# scipy.ndimage's boundary modes, as the blur kernels implement them.
BlurMode = Literal["reflect", "nearest", "constant", "mirror", "wrap"]
BLUR_MODES: tuple[str, ...] = get_args(BlurMode)


# ----------------------------------------------------------------------------------------------------
# Per-image reductions and lookups on a canvas.
# ----------------------------------------------------------------------------------------------------

# Image statistics come from :func:`reduce_image`: one variadic reduction over the two image axes of
# (B, Hc, Wc) arrays. XLA on CPU runs it as one fused pass, where separate jnp.sum / max / min calls on
# the same input materialise the input (and the validity mask) once per reduction, about ten times
# slower; and never over a flattened copy, which would recompute each pixel's row and column.
_IMAGE = (1, 2)
_COMBINE = {"sum": jax.lax.add, "max": jax.lax.max, "min": jax.lax.min}


def reduce_image(*terms: tuple[jax.Array, str]) -> tuple[jax.Array, ...]:
    """(array (B, Hc, Wc), "sum" | "max" | "min") pairs -> one (B,) result per pair, in one pass.

    XLA hands a lone reduction to its YNNPACK fusion, which materialises the fused input first, so a
    single term gets a companion (its maximum), kept alive by a comparison that is only false for NaN.
    Keep the elementwise terms of different passes distinct: a subexpression shared by two passes is
    materialised once instead of fused into both.
    """
    if len(terms) == 1:
        result, companion = reduce_image(terms[0], (terms[0][0], "max"))
        return (jnp.where(companion == companion, result, jnp.nan),)
    arrays = tuple(a for a, _ in terms)
    kinds = tuple(k for _, k in terms)
    init = tuple(jnp.asarray({"sum": 0, "max": -jnp.inf, "min": jnp.inf}[k], a.dtype) for a, k in terms)

    def combine(x, y):
        return tuple(_COMBINE[k](a, b) for k, a, b in zip(kinds, x, y))

    return tuple(jax.lax.reduce(arrays, init, combine, _IMAGE))


def masked_extreme(maps: jax.Array, valid: jax.Array, kind: str) -> tuple[jax.Array, str]:
    """A term for :func:`reduce_image`: the max or min of ``maps`` over the pixels where valid is 1."""
    big = jnp.finfo(maps.dtype).max
    return maps * valid + (valid - 1) * (big if kind == "max" else -big), kind


def _near_constant(top: jax.Array, low: jax.Array) -> jax.Array:
    """(B,) maxima and minima -> (B,) bool: the map's range is within :data:`CONSTANT_RTOL` of its magnitude."""
    return top - low <= CONSTANT_RTOL * jnp.maximum(jnp.abs(top), jnp.abs(low))


def valid_pixels(maps: jax.Array, sizes: jax.Array) -> jax.Array:
    """(B, Hc, Wc) in the maps' dtype: 1 for pixels inside each image, 0 outside.

    A float mask, multiplied in rather than ``jnp.where``-selected: several times faster in XLA on CPU.
    It needs finite values outside the image, which the canvas conventions guarantee.
    """
    _, height, width = maps.shape
    sizes = jnp.asarray(sizes)
    rows = (jnp.arange(height, dtype=sizes.dtype)[None, :, None] < sizes[:, 0, None, None]).astype(maps.dtype)
    cols = (jnp.arange(width, dtype=sizes.dtype)[None, None, :] < sizes[:, 1, None, None]).astype(maps.dtype)
    return rows * cols


def _pixel_count(sizes: jax.Array, dtype) -> jax.Array:
    """(B,) pixels per image."""
    return (sizes[:, 0] * sizes[:, 1]).astype(dtype)


def _flat_indices(xs: jax.Array, ys: jax.Array, mask: jax.Array, width: int) -> jax.Array:
    """Row-major canvas index of each fixation (truncation), 0 at padded positions."""
    ix = jnp.trunc(xs).astype(jnp.int32)
    iy = jnp.trunc(ys).astype(jnp.int32)
    return jnp.where(mask, iy * width + ix, 0)


def gather(maps: jax.Array, xs: jax.Array, ys: jax.Array, mask: jax.Array) -> jax.Array:
    """(B, Hc, Wc) maps read at (B, N) fixations -> (B, N); padded positions read pixel [0, 0].

    Indexed in 3-D: flattening a map that XLA fuses into the gather would cost a division per element.
    """
    iy = jnp.where(mask, jnp.trunc(ys).astype(jnp.int32), 0)
    ix = jnp.where(mask, jnp.trunc(xs).astype(jnp.int32), 0)
    return jax.vmap(lambda m, y, x: m[y, x])(maps, iy, ix)


# ----------------------------------------------------------------------------------------------------
# Log-likelihood and information gain, in bits through deepgaze_jax.likelihood.
# ----------------------------------------------------------------------------------------------------


@jax.jit
def log_likelihood(log_density, sizes, xs, ys, mask):
    """Bits per fixation relative to uniform over each image: ``(log p[fixation] + log(H*W)) / ln 2``.

    log_density (B, Hc, Wc) in nats, sizes (B, 2), xs, ys, mask (B, N) -> (B, N) bits, NaN at padding.
    """
    values = bits_relative_to_uniform(gather(log_density, xs, ys, mask), sizes[:, 0:1], sizes[:, 1:2])
    return jnp.where(mask, values, jnp.nan)


@jax.jit
def information_gain(log_density, baseline_log_density, xs, ys, mask):
    """Bits per fixation over a baseline: ``(log p - log p_baseline)[fixation] / ln 2``.

    Both log densities (B, Hc, Wc) in nats, xs, ys, mask (B, N) -> (B, N) bits, NaN at padding.
    """
    values = gather(log_density - baseline_log_density, xs, ys, mask) / LN2
    return jnp.where(mask, values, jnp.nan)


# ----------------------------------------------------------------------------------------------------
# AUC, AUC-Judd and NSS.
# ----------------------------------------------------------------------------------------------------


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


def count_below_and_equal(thresholds_sorted: jax.Array, values: jax.Array, include: jax.Array) -> tuple[jax.Array, jax.Array]:
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


def auc_per_positive(positives, positive_mask, negatives, negative_mask):
    """(B, N), (B, M) -> (B, N): ``(#{neg < pos} + 0.5 #{neg == pos}) / #neg`` for every positive.

    Values and masks (True: real) of positives (B, N) and negatives (B, M) in any units; NaN at padded
    positives.
    """
    sorted_pos, order = _sorted_positives(positives, positive_mask)
    less, equal = count_below_and_equal(sorted_pos, negatives, negative_mask)
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
def auc_and_judd(saliency_map, sizes, xs, ys, mask):
    """AUC per fixation against all pixels and AUC-Judd per image, from one pass of counts.

    saliency_map (B, Hc, Wc), sizes (B, 2), xs, ys, mask (B, N) -> (B, N) AUC in [0, 1] (NaN at
    padding) and (B,) AUC-Judd. See :func:`auc` and :func:`auc_judd`.
    """
    valid = valid_pixels(saliency_map, sizes)
    positives = gather(saliency_map, xs, ys, mask)
    sorted_pos, order = _sorted_positives(positives, mask)
    less, equal = count_below_and_equal(sorted_pos, saliency_map, valid > 0)
    n_valid = _pixel_count(sizes, saliency_map.dtype)
    per_fixation = _unsort((less + 0.5 * equal) / n_valid[:, None], order, mask)
    idx = _flat_indices(xs, ys, mask, saliency_map.shape[2])
    top, low = reduce_image(masked_extreme(saliency_map, valid, "max"), masked_extreme(saliency_map, valid, "min"))
    judd = jax.vmap(_judd_one)((low, top + 1), sorted_pos, less, n_valid, positives, idx, mask)
    return per_fixation, judd


@jax.jit
def auc(saliency_map, sizes, xs, ys, mask):
    """(B, N) AUC of each fixation against all pixels of its image: ``(#{s < s_fix} + 0.5 #{s == s_fix}) / (H*W)``."""
    return auc_and_judd(saliency_map, sizes, xs, ys, mask)[0]


@jax.jit
def auc_judd(saliency_map, sizes, xs, ys, mask):
    """(B,) AUC-Judd (pysaliency ``general_roc(..., judd=1)``): thresholds at the fixated values, negatives
    the unfixated pixels; no jitter."""
    return auc_and_judd(saliency_map, sizes, xs, ys, mask)[1]


@jax.jit
def auc_against(saliency_map, xs, ys, mask, neg_xs, neg_ys, neg_mask):
    """(B, N) AUC of each fixation against negative locations of the same maps (ties count half).

    saliency_map (B, Hc, Wc); fixations xs, ys, mask (B, N); negatives neg_xs, neg_ys, neg_mask (B, M),
    pixel coordinates read like fixations.
    """
    positives = gather(saliency_map, xs, ys, mask)
    negatives = gather(saliency_map, neg_xs, neg_ys, neg_mask)
    return auc_per_positive(positives, mask, negatives, neg_mask)


@jax.jit
def nss(saliency_map, sizes, xs, ys, mask):
    """(B, N) normalised scanpath saliency ``(s_fix - mean(s)) / std(s)`` (population std over the image).

    A map whose range is within :data:`CONSTANT_RTOL` of its magnitude scores 0. NaN at padding.
    """
    valid = valid_pixels(saliency_map, sizes)
    count = _pixel_count(sizes, saliency_map.dtype)
    total, top = reduce_image((saliency_map * valid, "sum"), masked_extreme(saliency_map, valid, "max"))
    mean = (total / count)[:, None, None]
    squares, low = reduce_image((((saliency_map - mean) * valid) ** 2, "sum"), masked_extreme(saliency_map, valid, "min"))
    std = jnp.where(_near_constant(top, low), jnp.inf, jnp.sqrt(squares / count))  # a constant map scores 0 everywhere
    values = (gather(saliency_map, xs, ys, mask) - mean[:, :, 0]) / std[:, None]
    return jnp.where(mask, values, jnp.nan)


# ----------------------------------------------------------------------------------------------------
# CC, KLDiv and SIM: comparisons of a saliency map with an empirical map.
# ----------------------------------------------------------------------------------------------------


def pair_metrics(map_1, map_2, sizes):
    """CC, KLDiv (nats) and SIM of (B, Hc, Wc) map pairs, sizes (B, 2), in three fused passes -> three (B,) arrays.

    CC: Pearson correlation; as pysaliency, 0 when only map_1 is constant, NaN when map_2 is.
    KLDiv and SIM compare the maps converted to densities as pysaliency's
    convert_saliency_map_to_density(minimum_value=0): shifted to minimum 0 when negative, divided by
    the sum (uniform when the sum is 0 or the map is constant); map_1 is the model, map_2 the empirical
    map. "Constant" is :func:`_near_constant`: round-off ripples score as the constant map they came from.
    """
    dtype = map_1.dtype
    valid = valid_pixels(map_1, sizes)
    count = _pixel_count(sizes, dtype)
    sum_1, sum_2, max_1, min_1, max_2, min_2 = reduce_image(
        (map_1 * valid, "sum"), (map_2 * valid, "sum"),
        masked_extreme(map_1, valid, "max"), masked_extreme(map_1, valid, "min"), masked_extreme(map_2, valid, "max"), masked_extreme(map_2, valid, "min"),
    )
    image = lambda x: x[:, None, None]  # noqa: E731
    a = (map_1 - image(sum_1 / count)) * valid
    b = (map_2 - image(sum_2 / count)) * valid
    ab, aa, bb = reduce_image((a * b, "sum"), (a * a, "sum"), (b * b, "sum"))
    correlation = ab / jnp.sqrt(aa * bb)
    constant_1, constant_2 = _near_constant(max_1, min_1), _near_constant(max_2, min_2)
    correlation = jnp.where(constant_2, jnp.nan, jnp.where(constant_1, 0.0, correlation))

    def density(maps, total, minimum, constant):
        # Shifting by -minimum adds count * -minimum to the sum (0 for the nonnegative maps of the driver).
        shift = jnp.minimum(minimum, 0)
        total = total - shift * count
        scale = jnp.where(total != 0, 1 / jnp.where(total != 0, total, 1), 0)
        return jnp.where(image((total != 0) & ~constant), (maps - image(shift)) * valid * image(scale), valid / image(count))

    p_model, p_emp = density(map_1, sum_1, min_1, constant_1), density(map_2, sum_2, min_2, constant_2)
    kl, similarity = reduce_image((p_emp * jnp.log(KLDIV_EPS + p_emp / (p_model + KLDIV_EPS)), "sum"), (jnp.minimum(p_model, p_emp), "sum"))
    return correlation, kl, similarity


@jax.jit
def cc(map_1, map_2, sizes):
    """(B,) Pearson correlation of saliency maps map_1 with empirical maps map_2 (see :func:`pair_metrics`)."""
    return pair_metrics(map_1, map_2, sizes)[0]


@jax.jit
def kl_div(saliency_map, empirical_map, sizes):
    """(B,) image-based KL divergence (nats) of the empirical maps from the saliency maps (see :func:`pair_metrics`)."""
    return pair_metrics(saliency_map, empirical_map, sizes)[1]


@jax.jit
def sim(map_1, map_2, sizes):
    """(B,) similarity ``sum min(p_1, p_2)`` of the two maps as densities (see :func:`pair_metrics`)."""
    return pair_metrics(map_1, map_2, sizes)[2]


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
    j, n = jnp.asarray(positions), jnp.asarray(lengths)
    common = np.promote_types(j.dtype, n.dtype)  # explicit (strict dtype promotion)
    j, n = j.astype(common)[None, :], n.astype(common)[:, None]
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
def gaussian_blur(maps, sizes, sigma: float, mode: str = "reflect", truncate: float = 4.0):
    """``scipy.ndimage.gaussian_filter(map, sigma, mode=mode, truncate=truncate)`` of each image on the canvas.

    maps (B, Hc, Wc), sizes (B, 2); sigma in pixels; mode one of :data:`BLUR_MODES`. Returns
    (B, Hc, Wc), 0 outside each image. sigma, mode and truncate are static: one compilation each.
    """
    kernel = gaussian_kernel_1d(sigma, truncate)
    blurred = _blur_axis(_blur_axis(maps, sizes[:, 0], 1, kernel, mode), sizes[:, 1], 2, kernel, mode)
    return blurred * valid_pixels(maps, sizes)


@jax.jit
def fixation_counts(xs, ys, mask, template):
    """Fixations per pixel: xs, ys, mask (B, N) on the canvas of ``template`` (B, Hc, Wc) -> (B, Hc, Wc)
    in the template's dtype."""
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
    positions = jnp.asarray(positions)
    grid = jnp.arange(length, dtype=positions.dtype)
    if mode == "constant":
        offset = grid[None, None, :] - positions[:, :, None] + radius
        inside = (offset >= 0) & (offset <= 2 * radius) & (positions[:, :, None] >= 0)
        return jnp.where(inside, jnp.asarray(kernel, dtype)[jnp.clip(offset, 0, 2 * radius)], 0)
    deltas = (grid[None, None, :] == positions[:, :, None]).astype(dtype)

    def by_fft():
        return _blur_axis(deltas, lengths, 2, kernel, mode)

    if mode != "reflect" or radius > length:
        return by_fft()

    def closed_form():
        # scipy's weights: exp(-x^2 / (2 sigma^2)), normalised by their sum over the truncated support.
        scale, norm = -0.5 / float(sigma) ** 2, float(np.exp(-0.5 / float(sigma) ** 2 * np.arange(-radius, radius + 1.0) ** 2).sum())
        y = grid[None, None, :]
        i = positions[:, :, None]
        n = jnp.asarray(lengths).astype(positions.dtype)[:, None, None]
        out = jnp.zeros(deltas.shape, dtype)
        for offset in (i - y, -1 - i - y, 2 * n - 1 - i - y):  # x[i], x[-1-i], x[2L-1-i]
            out = out + jnp.where(jnp.abs(offset) <= radius, jnp.exp(scale * (offset * offset).astype(dtype)), 0)
        return out * (positions[:, :, None] >= 0).astype(dtype) / norm

    return jax.lax.cond(jnp.all(lengths >= radius), closed_form, by_fft)


@functools.partial(jax.jit, static_argnames=("sigma", "mode", "truncate"))
def fixation_map(xs, ys, mask, template, sizes, sigma: float, mode: str = "reflect", truncate: float = 4.0):
    """Blurred fixation counts on the canvas of ``template`` (B, Hc, Wc): fixations per pixel.

    xs, ys, mask (B, N); sizes (B, 2); sigma in pixels, mode as :func:`gaussian_blur` (static). Equals
    :func:`gaussian_blur` of :func:`fixation_counts`, 0 outside each image. The blur is separable and linear, so the map is a sum over fixations of outer products: each
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
    return jnp.maximum(blurred, 0) * valid_pixels(template, sizes)
