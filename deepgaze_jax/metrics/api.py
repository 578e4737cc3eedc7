"""The metric functions: validate on the host, then call one jitted kernel in float64.

See :mod:`deepgaze_jax.metrics` for the conventions (shapes, units, padding). Each function checks its
inputs with :mod:`deepgaze_jax.metrics.validation` (ValueError naming the problem) and computes with
the matching kernel of :mod:`deepgaze_jax.metrics.kernels` under ``jax.enable_x64``.
"""

from __future__ import annotations

import jax
import numpy as np

from deepgaze_jax.metrics import kernels
from deepgaze_jax.metrics.kernels import BlurMode
from deepgaze_jax.metrics.validation import as_fixations, as_maps, check_normalised, check_same_shape, full_sizes, unbatch


def log_likelihood(log_density, xs, ys, mask=None) -> np.ndarray:
    """Log-likelihood of each fixation in bits, relative to the uniform model.

    ``(log p[int(y), int(x)] + log(H*W)) / ln 2``. log_density: (H, W) or (B, H, W), nats, normalised
    (ValueError if a map's |logsumexp| exceeds :data:`NORMALISATION_ATOL`). xs, ys, mask: (N,) or (B, N).
    Returns (N,) or (B, N) bits/fixation, NaN at padded positions.
    """
    maps, batched = as_maps("log_density", log_density)
    xs, ys, mask = as_fixations(xs, ys, mask, maps, batched)
    check_normalised(maps if batched else maps[0], "log_density")
    with jax.enable_x64(True):
        return unbatch(kernels.log_likelihood(maps, full_sizes(maps), xs, ys, mask), batched)


def information_gain(log_density, baseline_log_density, xs, ys, mask=None) -> np.ndarray:
    """Information gain of each fixation over a baseline, in bits: ``(log p - log p_baseline) / ln 2``.

    Both log densities (H, W) or (B, H, W) in nats with the same shape, each normalised (ValueError if
    a map's |logsumexp| exceeds :data:`NORMALISATION_ATOL`); xs, ys, mask (N,) or (B, N).
    Returns (N,) or (B, N) bits/fixation, NaN at padded positions.
    """
    maps, batched = as_maps("log_density", log_density)
    baseline, _ = as_maps("baseline_log_density", baseline_log_density)
    check_same_shape("log_density", maps, "baseline_log_density", baseline)
    xs, ys, mask = as_fixations(xs, ys, mask, maps, batched)
    check_normalised(maps if batched else maps[0], "log_density")
    check_normalised(baseline if batched else baseline[0], "baseline_log_density")
    with jax.enable_x64(True):
        return unbatch(kernels.information_gain(maps, baseline, xs, ys, mask), batched)


def auc(saliency_map, xs, ys, mask=None) -> np.ndarray:
    """AUC of each fixation against all pixels of the map (pysaliency ``AUC``, nonfixations 'uniform').

    ``(#{pixels < s_fix} + 0.5 #{pixels == s_fix}) / (H*W)``; a constant map gives 0.5.
    saliency_map: (H, W) or (B, H, W), any units; xs, ys, mask (N,) or (B, N).
    Returns (N,) or (B, N) in [0, 1], NaN at padded positions.
    """
    maps, batched = as_maps("saliency_map", saliency_map)
    xs, ys, mask = as_fixations(xs, ys, mask, maps, batched)
    with jax.enable_x64(True):
        return unbatch(kernels.auc(maps, full_sizes(maps), xs, ys, mask), batched)


def auc_against(saliency_map, xs, ys, mask, negative_xs, negative_ys, negative_mask=None) -> np.ndarray:
    """AUC of each fixation against given negative locations (ties count half).

    saliency_map: (H, W) or (B, H, W). Fixations (N,) or (B, N); negatives (M,) or (B, M), pixel
    coordinates of the same map, truncated like fixations. Returns (N,) or (B, N), NaN at padding.
    """
    maps, batched = as_maps("saliency_map", saliency_map)
    xs, ys, mask = as_fixations(xs, ys, mask, maps, batched)
    nxs, nys, nmask = as_fixations(negative_xs, negative_ys, negative_mask, maps, batched, name="negatives")
    with jax.enable_x64(True):
        return unbatch(kernels.auc_against(maps, xs, ys, mask, nxs, nys, nmask), batched)


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
    maps, _ = as_maps("saliency_map", saliency_map)
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
    maps, batched = as_maps("saliency_map", saliency_map)
    if isinstance(jitter, (bool, np.bool_)):
        jitter = np.random.RandomState(42) if jitter else None
    if isinstance(jitter, np.random.RandomState):
        maps = maps + np.stack([jitter.randn(*maps.shape[1:]) * noise_size for _ in range(maps.shape[0])])
    elif jitter is not None:
        if isinstance(jitter, np.random.Generator) or np.ndim(jitter) not in (2, 3):
            raise ValueError(f"jitter must be None, a bool, a numpy RandomState or an array of the map's shape, got {type(jitter).__name__}")
        noise, _ = as_maps("jitter", jitter)
        check_same_shape("saliency_map", maps, "jitter", noise)
        maps = maps + noise
    xs, ys, mask = as_fixations(xs, ys, mask, maps, batched)
    with jax.enable_x64(True):
        return unbatch(kernels.auc_judd(maps, full_sizes(maps), xs, ys, mask), batched)


def nss(saliency_map, xs, ys, mask=None) -> np.ndarray:
    """Normalised scanpath saliency of each fixation: ``(s_fix - mean(s)) / std(s)``, population std.

    A constant map scores 0. saliency_map: (H, W) or (B, H, W); xs, ys, mask (N,) or (B, N).
    Returns (N,) or (B, N), NaN at padded positions.
    """
    maps, batched = as_maps("saliency_map", saliency_map)
    xs, ys, mask = as_fixations(xs, ys, mask, maps, batched)
    with jax.enable_x64(True):
        return unbatch(kernels.nss(maps, full_sizes(maps), xs, ys, mask), batched)


def _map_pair(kernel, saliency_map, empirical_map) -> np.ndarray:
    """A two-map kernel on validated maps of the same shape, in float64; () or (B,)."""
    maps_1, batched = as_maps("saliency_map", saliency_map)
    maps_2, _ = as_maps("empirical_map", empirical_map)
    check_same_shape("saliency_map", maps_1, "empirical_map", maps_2)
    with jax.enable_x64(True):
        return unbatch(kernel(maps_1, maps_2, full_sizes(maps_1)), batched)


def cc(saliency_map, empirical_map) -> np.ndarray:
    """Pearson correlation between a saliency map and an empirical map, per image.

    Both (H, W) or (B, H, W) of the same shape. As pysaliency: 0 when only the saliency map is constant,
    NaN when the empirical map is constant. Returns () or (B,).
    """
    return _map_pair(kernels.cc, saliency_map, empirical_map)


def kl_div(saliency_map, empirical_map) -> np.ndarray:
    """Image-based KL divergence of the benchmark (pysaliency ``MIT_KLDiv``), in nats, per image.

    Both maps are shifted to minimum 0 (if negative) and divided by their sum;
    ``sum p_emp * log(eps + p_emp / (p_model + eps))`` with eps = 2.2204e-16. Lower is better.
    Both (H, W) or (B, H, W) of the same shape. Returns () or (B,).
    """
    return _map_pair(kernels.kl_div, saliency_map, empirical_map)


def sim(saliency_map, empirical_map) -> np.ndarray:
    """Similarity (histogram intersection) ``sum min(p1, p2)`` of the two maps normalised to sum 1.

    Both (H, W) or (B, H, W) of the same shape. Returns () or (B,) in [0, 1].
    """
    return _map_pair(kernels.sim, saliency_map, empirical_map)


def gaussian_blur(maps, sigma: float, *, mode: BlurMode = "reflect", truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(map, sigma, mode=mode, truncate=truncate)`` per image.

    maps: (H, W) or (B, H, W); sigma in pixels. Returns the same shape (FFT-based, exact to ~1e-15
    of the map's maximum).
    """
    arr, batched = as_maps("maps", maps)
    if mode not in kernels.BLUR_MODES:
        raise ValueError(f"mode must be one of {sorted(kernels.BLUR_MODES)}, got {mode!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    with jax.enable_x64(True):
        return unbatch(kernels.gaussian_blur(arr, full_sizes(arr), float(sigma), mode, float(truncate)), batched)


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
    xs, ys, mask = as_fixations(xs, ys, mask, template, batched)
    with jax.enable_x64(True):
        if not sigma:
            return unbatch(kernels.fixation_counts(xs, ys, mask, template), batched)
        return unbatch(kernels.fixation_map(xs, ys, mask, template, full_sizes(template), float(sigma), mode, float(truncate)), batched)


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
