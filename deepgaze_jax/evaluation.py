"""Evaluate a probabilistic saliency model on a fixation dataset: every metric, per image and overall.

:func:`evaluate` takes the model's log density for every image (a sequence or a callable) and the
dataset's fixations as flat arrays, derives the metric-specific saliency map for each metric
(:mod:`deepgaze_jax.metric_maps`) and scores it (:mod:`deepgaze_jax.metrics`), keeping per-image scores.
Images are processed in batches on a padded canvas (sizes rounded up to ``canvas_multiple``), so one
compilation serves all image sizes of a dataset; the loop over batches is plain Python.

:func:`evaluate` runs these steps, each a function of its own:

1. :func:`check_options` and :func:`check_dataset` validate the arguments (-> :class:`EvaluationData`);
2. :func:`plan_batches` groups the images into :class:`CanvasBatch` es of one canvas size;
3. :func:`shuffled_average_log_density`, a first pass over the predictions, averages them for sAUC's
   shuffled baseline (:func:`load_density_sum_inputs`, :func:`batch_density_sum`);
4. a second pass loads each batch (:func:`load_batch_inputs`) and scores it (:func:`score_batch`: the
   dense metrics, :func:`batch_sauc` and, with ``sim_map="optimal"``, :func:`batch_optimal_sim`);
5. :func:`collect_scores` puts each batch's scores back in dataset order and :func:`summarise`
   averages them; :func:`evaluation_config` records the settings in the :class:`EvaluationResult`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import math
import os
import pathlib
import time
from typing import Callable, Iterable, Literal, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import metric_maps, metrics, provenance
from deepgaze_jax.metrics import kernels, validation
from deepgaze_jax.images import batches_by_size

LogDensities = Union[Sequence[np.ndarray], Callable[[int], np.ndarray]]
SimMap = Literal["blurred", "optimal"]
# evaluate's sim_map option -> the map SIM is scored on, as named in config["sim_map"] and the report.
SIM_MAPS = {"blurred": "blurred density", "optimal": "SIM-optimal map"}
_SIM_TEXT = "similarity with the empirical map (map: {})"

# Metric name -> (how the dataset value is averaged, one-line description for the report).
METRICS = {
    "LL": ("fixation", "log-likelihood, bits/fixation relative to uniform (map: log density)"),
    "IG": ("fixation", "information gain over the baseline, bits/fixation (map: log density)"),
    "AUC": ("fixation", "AUC against all pixels, ties count half (map: density)"),
    "sAUC": ("fixation", "shuffled AUC, negatives = other images' fixations (map: log p - log p_shuffled)"),
    "NSS": ("fixation", "normalised scanpath saliency (map: density)"),
    "AUC_Judd": ("image", "AUC-Judd, thresholds at fixations, negatives = unfixated pixels (map: density)"),
    "CC": ("image", "correlation with the empirical map (map: blurred density)"),
    "KLDiv": ("image", "image-based KL divergence from the empirical map, lower is better (map: blurred density)"),
    "SIM": ("image", _SIM_TEXT.format(SIM_MAPS["blurred"])),
}
PER_FIXATION = ("LL", "IG", "AUC", "sAUC", "NSS")


@dataclasses.dataclass
class EvaluationResult:
    """Dataset scores (``summary``), per-image scores (``per_image[metric]``, (n_images,)) and settings.

    Per-fixation metrics appear twice in ``summary``: averaged over all fixations (``"AUC"``) and as the
    mean of per-image means (``"AUC/image"``). Per-image arrays hold each image's mean for those.
    """

    summary: dict[str, float]
    per_image: dict[str, np.ndarray]
    image_names: list[str]
    n_fixations: np.ndarray
    config: dict
    seconds: float

    def definitions(self) -> dict[str, str]:
        """One line per metric scored; SIM's names the map it was scored on (``config["sim_map"]``)."""
        texts = {k: v[1] for k, v in METRICS.items() if k in self.per_image}
        if "SIM" in texts:
            texts["SIM"] = _SIM_TEXT.format(self.config.get("sim_map", SIM_MAPS["blurred"]))
        return texts

    def to_dict(self) -> dict:
        return {
            "summary": self.summary,
            "config": self.config,
            "seconds": self.seconds,
            "metrics": self.definitions(),
            "per_image": [
                {"image": name, "n_fixations": int(self.n_fixations[i]), **{k: float(v[i]) for k, v in self.per_image.items()}}
                for i, name in enumerate(self.image_names)
            ],
        }

    def to_markdown(self) -> str:
        lines = [f"# Evaluation: {self.config.get('model', 'model')}", ""]
        lines += [f"{len(self.image_names)} images, {int(self.n_fixations.sum())} fixations, {self.seconds:.1f} s.", ""]
        lines += ["| metric | per fixation | per image | definition |", "| --- | --- | --- | --- |"]
        for name, text in self.definitions().items():
            average = METRICS[name][0]
            per_fix = f"{self.summary[name]:.4f}" if average == "fixation" else ""
            per_img = f"{self.summary[name + '/image']:.4f}" if average == "fixation" else f"{self.summary[name]:.4f}"
            lines.append(f"| {name} | {per_fix} | {per_img} | {text} |")
        lines += ["", "Settings: " + ", ".join(f"`{k}={v}`" for k, v in self.config.items()), ""]
        return "\n".join(lines)

    def write(self, out_dir: str | pathlib.Path, stem: str = "metrics",
              stamp: dict[str, str] | None = None) -> tuple[pathlib.Path, pathlib.Path]:
        """Write ``<stem>.json`` (everything, per-image rows included) and ``<stem>.md`` (the table),
        both stamped with ``stamp`` (:func:`deepgaze_jax.provenance.stamp`) where given."""
        return provenance.write_results(pathlib.Path(out_dir) / stem, self.to_dict(), self.to_markdown(),
                                        stamp=stamp, indent=1)


def default_workers() -> int:
    """evaluate's default number of worker threads: the CPU cores, at most 4."""
    return max(1, min(os.cpu_count() or 1, 4))


def _in_order(load: Callable, compute: Callable, items: Sequence, workers: int):
    """``compute(load(item))`` for each item, yielded in order. ``load`` runs on the calling thread (so
    the user's prediction callables are never called concurrently); ``compute`` on ``workers`` threads
    (JAX releases the GIL while it computes), with at most ``2 * workers`` items loaded ahead."""
    if workers == 1:
        for item in items:
            yield compute(load(item))
        return
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(compute, load(item)))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _getter(log_densities: LogDensities) -> Callable[[int], np.ndarray]:
    if callable(log_densities):
        return log_densities
    if not hasattr(log_densities, "__getitem__"):
        log_densities = list(log_densities)  # a one-shot iterator: kept in memory for the two passes
    return lambda n: log_densities[n]


def _load(get: Callable[[int], np.ndarray], n: int, size: tuple[int, int], what: str, name: str | None = None) -> np.ndarray:
    """Image n's map from ``get``, checked: shape, finite and, when the image's ``name`` is given,
    normalised (|logsumexp| <= :data:`metrics.NORMALISATION_ATOL`; the error names the image)."""
    arr = np.asarray(get(n), dtype=np.float64)
    if arr.shape != size:
        raise ValueError(f"{what} of image {n} has shape {arr.shape}, the image is {size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} of image {n} contains NaN or infinity")
    if name is not None:
        (lse,) = validation.host_logsumexp(arr[None])
        if not abs(lse) <= metrics.NORMALISATION_ATOL:
            raise metrics.normalisation_error(f"{what} of image {n} ({name!r})", float(lse))
    return arr


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


# ----------------------------------------------------------------------------------------------------
# Kernels of the batched passes. Shapes as in deepgaze_jax.metrics.kernels: canvases (B, Hc, Wc),
# sizes (B, 2) int, fixations (B, N); the shuffled baseline lives on the compute-size canvas (Hc', Wc').
# ----------------------------------------------------------------------------------------------------


def _optimal_sim(log_density: np.ndarray, xs: np.ndarray, ys: np.ndarray, sigma: float, seed: int, epochs: int) -> float:
    """SIM of one image's SIM-optimal map (:func:`metric_maps.sim_saliency_map` of its (H, W) log density,
    nats, blur ``sigma`` px) against its empirical map: the (F,) fixations' counts blurred with ``sigma``
    px, mode 'reflect', as in the batched pass."""
    optimal = metric_maps.sim_saliency_map(log_density, sigma, seed=seed, epochs=epochs)
    empirical = metrics.fixation_map(xs, ys, None, log_density.shape, sigma)
    return float(metrics.sim(optimal, empirical))


def _interpolate_at(grid, sizes, xs, ys, mask):
    """Values at pixels (int(y), int(x)) of an image of ``sizes`` (H, W) of the grid (Hg, Wg) resized to it
    linearly as scipy.ndimage.zoom(order=1) does (rows first, then columns, as ``_resize_one``)."""
    gh, gw = grid.shape
    iy, ix = jnp.trunc(ys), jnp.trunc(xs)
    scale_y, scale_x = (gh - 1) / jnp.maximum(sizes[0] - 1, 1), (gw - 1) / jnp.maximum(sizes[1] - 1, 1)
    common = np.promote_types(iy.dtype, scale_y.dtype)  # explicit, as strict dtype promotion needs
    cy, cx = iy.astype(common) * scale_y.astype(common), ix.astype(common) * scale_x.astype(common)
    y0, x0 = jnp.floor(cy), jnp.floor(cx)
    wy, wx = cy - y0, cx - x0
    y0 = jnp.where(mask, jnp.minimum(y0.astype(jnp.int32), gh - 1), 0)
    x0 = jnp.where(mask, jnp.minimum(x0.astype(jnp.int32), gw - 1), 0)
    y1, x1 = jnp.minimum(y0 + 1, gh - 1), jnp.minimum(x0 + 1, gw - 1)
    left = grid[y0, x0] * (1 - wy) + grid[y1, x0] * wy
    right = grid[y0, x1] * (1 - wy) + grid[y1, x1] * wy
    return left * (1 - wx) + right * wx


@jax.jit
def _density_sum_kernel(resized, compute_sizes, weights):
    """(B, Hc', Wc') resized log densities, (B,) weights -> (Hc', Wc') weighted sum of their renormalised densities."""
    return jnp.tensordot(weights, jnp.exp(metric_maps.renormalise(resized, compute_sizes)), axes=1)


@jax.jit
def _shuffled_kernel(resized, compute_sizes, average_log_density, count):
    """The leave-one-out shuffled prediction of each image at the compute size (pysaliency ShuffledBaselineModel).

    resized: (B, Hc', Wc') the images' own log densities resized to the compute size; average_log_density
    (Hc', Wc'): the mean over all ``count`` images. Returns (B, Hc', Wc') log densities, not renormalised.
    """
    own = jnp.exp(metric_maps.renormalise(resized, compute_sizes))
    return jnp.log(jnp.exp(average_log_density)[None] * (count / (count - 1)) - own / (count - 1))


@jax.jit
def _sauc_values_kernel(log_density, shuffled, sizes, xs, ys, mask):
    """The sAUC map ``log p - log p_shuffled`` at the given pixels -> (B, N + M).

    The shuffled prediction (from :func:`_shuffled_kernel`) is only ever read at the fixations and the
    negatives, so it is interpolated there instead of resized to the whole image. Its renormalisation
    after resizing is a constant per image, which leaves AUC (a ranking) unchanged. Fixations and
    negatives come in one (B, N + M) array and leave this kernel as one materialised output: XLA on CPU
    contracts multiply-adds into FMAs differently in different fusions, so values recomputed inside
    several consumers could round differently and break the ties between a fixation and a negative on
    the same pixel, which AUC counts half.
    """
    return kernels.gather(log_density, xs, ys, mask) - jax.vmap(_interpolate_at)(shuffled, sizes, xs, ys, mask)


@functools.partial(jax.jit, static_argnames=("n",))
def _sauc_from_values(values, mask, n: int):
    """(B, n + M) values at fixations then negatives, (B, n + M) mask -> (B, n) sAUC per fixation."""
    return kernels.auc_per_positive(values[:, :n], mask[:, :n], values[:, n:], mask[:, n:])


@jax.jit
def _density_kernel(log_density, sizes):
    """(B, Hc, Wc) log densities -> densities, 0 outside each image. Its own dispatch (see _batch_metrics)."""
    return jnp.exp(log_density) * kernels.valid_pixels(log_density, sizes)


@functools.partial(jax.jit, static_argnames=("sigma_blur",))
def _dense_metrics_kernel(log_density, density, sizes, xs, ys, mask, baseline, sigma_blur):
    out = {
        "LL": kernels.log_likelihood(log_density, sizes, xs, ys, mask),
        "NSS": kernels.nss(density, sizes, xs, ys, mask),
    }
    if baseline is not None:
        out["IG"] = kernels.information_gain(log_density, baseline, xs, ys, mask)
    sigma, mode = sigma_blur
    blurred = kernels.gaussian_blur(density, sizes, sigma, mode)
    empirical = kernels.fixation_map(xs, ys, mask, jnp.zeros_like(log_density), sizes, sigma, "reflect")
    out["CC"], out["KLDiv"], out["SIM"] = kernels.pair_metrics(blurred, empirical, sizes)
    return out


def _batch_metrics(log_density, sizes, xs, ys, mask, baseline, sigma_blur):
    """All metrics but sAUC of one batch of canvases: a dict of (B, N) per-fixation and (B,) per-image values.

    The density is materialised by a dispatch of its own before AUC reads it, at the fixations and at
    every pixel: inside one XLA computation it could be recomputed per consumer and rounded differently,
    and AUC counts exact ties (see _sauc_values_kernel).
    """
    density = _density_kernel(log_density, sizes)
    out = _dense_metrics_kernel(log_density, density, sizes, xs, ys, mask, baseline, sigma_blur)
    out["AUC"], out["AUC_Judd"] = kernels.auc_and_judd(density, sizes, xs, ys, mask)
    return out


# ----------------------------------------------------------------------------------------------------
# The steps of evaluate.
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """How :func:`evaluate` scores each batch: its keyword arguments of the same names (see there)."""

    sigma: float  # pixels
    blur_mode: str
    compute_size: tuple[int, int]  # (H, W) of the shuffled baseline, pixels
    sim_map: str  # a key of SIM_MAPS
    sim_map_seed: int
    sim_map_epochs: int


@dataclasses.dataclass(frozen=True)
class EvaluationData:
    """A dataset's image sizes and fixations, checked by :func:`check_dataset`.

    sizes (n_images, 2) int64 (H, W); xs, ys (F,) float64 pixel coordinates; image_of (F,) int64, the
    image of each fixation; names (n_images,); counts (n_images,) fixations per image (all > 0);
    order (F,) the fixations sorted by image (stable) and starts (n_images + 1,) where each image's fixations begin in ``order``.
    """

    sizes: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    image_of: np.ndarray
    names: list[str]
    counts: np.ndarray
    order: np.ndarray
    starts: np.ndarray

    @property
    def n_images(self) -> int:
        return len(self.sizes)

    def rows(self, n: int) -> np.ndarray:
        """Indices into the flat (F,) arrays of image n's fixations, in dataset order."""
        return self.order[self.starts[n] : self.starts[n + 1]]

    @property
    def n_pad(self) -> int:
        """Fixation slots per image in a batch: the most fixations of any image, rounded up to 64."""
        return _round_up(int(self.counts.max()), 64)


@dataclasses.dataclass(frozen=True)
class CanvasBatch:
    """Images (indices, at most the batch size) that share one padded canvas (Hc, Wc) in pixels."""

    canvas: tuple[int, int]
    images: list[int]


class BatchInputs(NamedTuple):
    """What :func:`score_batch` needs of one batch of B = batch_size slots (short batches padded, see
    :func:`batch_slots`): log densities and the baseline's (B, Hc, Wc) nats (baseline None without one),
    sizes (B, 2) int32, then fixations (B, n_pad) followed by shuffled negatives (B, F) in xs, ys, mask."""

    images: list[int]
    log_density: np.ndarray
    sizes: np.ndarray
    baseline: np.ndarray | None
    xs: np.ndarray
    ys: np.ndarray
    mask: np.ndarray


def check_options(sim_map: str, sim_map_epochs: int, workers: int | None) -> int:
    """Validate evaluate's ``sim_map``, ``sim_map_epochs`` and ``workers``; returns the number of workers."""
    if sim_map not in SIM_MAPS:
        raise ValueError(f"sim_map must be one of {sorted(SIM_MAPS)}, got {sim_map!r}")
    if sim_map == "optimal" and not (isinstance(sim_map_epochs, (int, np.integer)) and sim_map_epochs >= 1):
        raise ValueError(f"sim_map_epochs must be a positive integer, got {sim_map_epochs!r}")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return workers


def check_dataset(
    image_sizes: Sequence[tuple[int, int]],
    fixation_xs: np.ndarray,
    fixation_ys: np.ndarray,
    fixation_image_index: np.ndarray,
    image_names: Sequence[str] | None = None,
) -> EvaluationData:
    """evaluate's dataset arguments, checked: flat fixation arrays of one length, image indices in range,
    one name per image (default: the index), every image with a fixation, every fixation inside its image."""
    sizes = np.asarray(image_sizes, dtype=np.int64).reshape(-1, 2)
    n_images = len(sizes)
    xs_all = np.asarray(fixation_xs, dtype=np.float64)
    ys_all = np.asarray(fixation_ys, dtype=np.float64)
    image_of = np.asarray(fixation_image_index, dtype=np.int64)
    if not (xs_all.shape == ys_all.shape == image_of.shape) or xs_all.ndim != 1:
        raise ValueError(f"fixation arrays must be flat and equally long, got {xs_all.shape}, {ys_all.shape}, {image_of.shape}")
    if image_of.size and (image_of.min() < 0 or image_of.max() >= n_images):
        raise ValueError(f"fixation_image_index must lie in [0, {n_images}), got [{image_of.min()}, {image_of.max()}]")
    names = [str(n) for n in range(n_images)] if image_names is None else list(image_names)
    if len(names) != n_images:
        raise ValueError(f"{len(names)} image names for {n_images} images")
    counts = np.bincount(image_of, minlength=n_images)
    if np.any(counts == 0):
        raise ValueError(f"images without fixations: {names[int(np.flatnonzero(counts == 0)[0])]} and {int((counts == 0).sum()) - 1} more")
    outside = (xs_all < 0) | (ys_all < 0) | (xs_all >= sizes[image_of, 1]) | (ys_all >= sizes[image_of, 0]) | ~np.isfinite(xs_all + ys_all)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise ValueError(f"{int(outside.sum())} fixation(s) outside their image, first x={xs_all[k]}, y={ys_all[k]} on {names[image_of[k]]} of size {tuple(sizes[image_of[k]])}")
    order = np.argsort(image_of, kind="stable")
    return EvaluationData(sizes, xs_all, ys_all, image_of, names, counts, order, np.concatenate([[0], np.cumsum(counts)]))


def plan_batches(sizes: np.ndarray, batch_size: int, canvas_multiple: int) -> list[CanvasBatch]:
    """(n_images, 2) sizes (H, W) -> batches of at most ``batch_size`` images whose sizes rounded up to
    ``canvas_multiple`` pixels are the same canvas; canvases in order of first appearance, images in
    index order within each."""
    canvases = [(_round_up(int(h), canvas_multiple), _round_up(int(w), canvas_multiple)) for h, w in sizes]
    return [CanvasBatch(canvases[chunk[0]], chunk) for chunk in batches_by_size(canvases, batch_size)]


def batch_slots(batch: CanvasBatch, data: EvaluationData, batch_size: int) -> tuple[list[int], np.ndarray]:
    """The image in each of the ``batch_size`` slots and the slots' (batch_size, 2) int32 sizes (H, W).

    Padded slots repeat the batch's first image, so every slot is a well-formed image."""
    full = list(batch.images) + [batch.images[0]] * (batch_size - len(batch.images))
    return full, data.sizes[full].astype(np.int32)


def load_canvas_batch(get: Callable[[int], np.ndarray], batch: CanvasBatch, data: EvaluationData, batch_size: int,
                      what: str, check: bool) -> np.ndarray:
    """The batch's maps from ``get`` (image n -> (H_n, W_n)) on its canvas -> (batch_size, Hc, Wc) float64,
    0 outside each image; padded slots repeat the first image. Each map is checked (shape, finite and,
    with ``check``, normalised; errors name ``what`` and the image)."""
    arr = np.zeros((batch_size, *batch.canvas))
    for b, n in enumerate(batch.images):
        h, w = data.sizes[n]
        arr[b, :h, :w] = _load(get, n, (int(h), int(w)), what, data.names[n] if check else None)
    arr[len(batch.images) :] = arr[0]
    return arr


def load_density_sum_inputs(batch: CanvasBatch, *, get: Callable[[int], np.ndarray], data: EvaluationData,
                            batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass 1's inputs for one batch: log densities (batch_size, Hc, Wc) nats (normalisation checked),
    sizes (batch_size, 2) and weights (batch_size,): 1 for the batch's images, 0 for padded slots."""
    _, sizes = batch_slots(batch, data, batch_size)
    arr = load_canvas_batch(get, batch, data, batch_size, "log density", True)
    weights = np.zeros(batch_size)
    weights[: len(batch.images)] = 1
    return arr, sizes, weights


def batch_density_sum(inputs: tuple[np.ndarray, np.ndarray, np.ndarray], compute_size: tuple[int, int]) -> np.ndarray:
    """The weighted sum of a batch's densities, each resized to ``compute_size`` (H', W') and renormalised
    (pysaliency ShuffledBaselineModel) -> (H', W'), probability per pixel."""
    arr, sizes, weights = inputs
    compute_sizes = np.tile(np.array(compute_size, np.int32), (arr.shape[0], 1))
    with jax.enable_x64(True):
        resized = metric_maps.resize_canvas(arr, *metric_maps.resize_taps(sizes, compute_sizes, compute_size))
        return np.asarray(_density_sum_kernel(resized, compute_sizes, weights))


def shuffled_average_log_density(get: Callable[[int], np.ndarray], data: EvaluationData, batches: Sequence[CanvasBatch],
                                 batch_size: int, compute_size: tuple[int, int], workers: int) -> np.ndarray:
    """Pass 1: the average prediction of all images at ``compute_size`` (H', W') -> (H', W') log density,
    nats, normalised. The batches' sums are added in batch order: the same result for any ``workers``."""
    total = np.zeros(compute_size)
    load = functools.partial(load_density_sum_inputs, get=get, data=data, batch_size=batch_size)
    for partial in _in_order(load, functools.partial(batch_density_sum, compute_size=compute_size), batches, workers):
        total += partial
    return metric_maps.ShuffledBaseline(total, data.n_images, compute_size).average_log_density


class ShuffledNegatives:
    """sAUC's negatives for image n: every fixation of the dataset rescaled to n's size (computed once per
    size, as :func:`metrics.rescaled_fixations`), with a mask that drops n's own fixations."""

    def __init__(self, data: EvaluationData):
        self.data = data
        self._rescaled: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> xs, ys (F,) float pixel coordinates of image n and mask (F,) bool."""
        data = self.data
        key = (int(data.sizes[n, 0]), int(data.sizes[n, 1]))
        if key not in self._rescaled:
            self._rescaled[key] = metrics.rescaled_fixations(key, data.sizes, data.xs, data.ys, data.image_of)
        return self._rescaled[key] + (data.image_of != n,)


def load_batch_inputs(batch: CanvasBatch, *, get: Callable[[int], np.ndarray], get_baseline: Callable[[int], np.ndarray] | None,
                      data: EvaluationData, batch_size: int, negatives: ShuffledNegatives) -> BatchInputs:
    """Pass 2's inputs for one batch (see :class:`BatchInputs`); the baseline's normalisation is checked
    here, the prediction's was on the first pass."""
    full, sizes = batch_slots(batch, data, batch_size)
    arr = load_canvas_batch(get, batch, data, batch_size, "log density", False)
    base = None if get_baseline is None else load_canvas_batch(get_baseline, batch, data, batch_size, "baseline log density", True)
    # Fixations (B, n_pad), then negatives (B, F): one array, one sAUC map lookup (see _sauc_values_kernel).
    n_pad, n_all = data.n_pad, data.n_pad + data.xs.size
    all_xs, all_ys, all_mask = np.zeros((batch_size, n_all)), np.zeros((batch_size, n_all)), np.zeros((batch_size, n_all), bool)
    for b, n in enumerate(full):
        rows = data.rows(n)
        all_xs[b, : rows.size], all_ys[b, : rows.size], all_mask[b, : rows.size] = data.xs[rows], data.ys[rows], True
        all_xs[b, n_pad:], all_ys[b, n_pad:], all_mask[b, n_pad:] = negatives(n)
    return BatchInputs(list(batch.images), arr, sizes, base, all_xs, all_ys, all_mask)


def batch_sauc(inputs: BatchInputs, average_log_density: np.ndarray, n_images: int, n_pad: int) -> np.ndarray:
    """Shuffled AUC of each fixation of a batch -> (B, n_pad), NaN at padding. The map is
    ``log p - log p_shuffled`` (pysaliency ShuffledAUCSaliencyMapModel), p_shuffled the average
    prediction (H', W') of the ``n_images`` images with the image's own left out; negatives as in
    :class:`BatchInputs`."""
    compute_size = average_log_density.shape
    compute_sizes = np.tile(np.array(compute_size, np.int32), (inputs.log_density.shape[0], 1))
    taps = metric_maps.resize_taps(inputs.sizes, compute_sizes, compute_size)
    with jax.enable_x64(True):
        resized = metric_maps.resize_canvas(inputs.log_density, *taps)
        shuffled = _shuffled_kernel(resized, compute_sizes, average_log_density, float(n_images))
        values = _sauc_values_kernel(inputs.log_density, shuffled, inputs.sizes, inputs.xs, inputs.ys, inputs.mask)
        return np.asarray(_sauc_from_values(values, inputs.mask, n_pad))


def batch_optimal_sim(inputs: BatchInputs, data: EvaluationData, settings: Settings) -> np.ndarray:
    """SIM of each image's SIM-optimal map (:func:`metric_maps.sim_saliency_map`) against its empirical
    map -> (len(inputs.images),). Slow: an optimisation per image (see :func:`evaluate`)."""
    return np.array([
        _optimal_sim(inputs.log_density[b, : data.sizes[n, 0], : data.sizes[n, 1]], data.xs[data.rows(n)], data.ys[data.rows(n)],
                     float(settings.sigma), int(settings.sim_map_seed), int(settings.sim_map_epochs))
        for b, n in enumerate(inputs.images)])


def score_batch(inputs: BatchInputs, *, data: EvaluationData, settings: Settings, average_log_density: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of one batch: metric name -> (b, n_pad) per fixation (bits for LL and IG, NaN at
    padding) or (b,) per image, for the b images of the batch (padded slots dropped)."""
    n_pad = data.n_pad
    xs, ys, mask = inputs.xs[:, :n_pad], inputs.ys[:, :n_pad], inputs.mask[:, :n_pad]
    with jax.enable_x64(True):
        out = _batch_metrics(inputs.log_density, inputs.sizes, xs, ys, mask, inputs.baseline, (float(settings.sigma), settings.blur_mode))
        out["sAUC"] = batch_sauc(inputs, average_log_density, data.n_images, n_pad)
        out = {key: np.asarray(value)[: len(inputs.images)] for key, value in out.items()}
    if settings.sim_map == "optimal":  # replaces SIM of the blurred density
        out["SIM"] = batch_optimal_sim(inputs, data, settings)
    return out


def collect_scores(batches: Sequence[CanvasBatch], outputs: Iterable[dict[str, np.ndarray]],
                   data: EvaluationData) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The batches' scores (from :func:`score_batch`, in batch order) in dataset order: per-fixation
    metrics as (F,) arrays over the flat fixations, per-image metrics as (n_images,) arrays."""
    per_fix: dict[str, np.ndarray] = {}
    per_img: dict[str, np.ndarray] = {}
    for batch, out in zip(batches, outputs):
        for key, value in out.items():
            if key in PER_FIXATION:
                target = per_fix.setdefault(key, np.full(data.xs.size, np.nan))
                for b, n in enumerate(batch.images):
                    target[data.rows(n)] = value[b, : data.counts[n]]
            else:
                per_img.setdefault(key, np.full(data.n_images, np.nan))[batch.images] = value
    return per_fix, per_img


def summarise(per_fix: dict[str, np.ndarray], per_img: dict[str, np.ndarray],
              data: EvaluationData) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Dataset scores and per-image arrays (n_images,), metrics in :data:`METRICS` order. A per-fixation
    metric's summary is its mean over all fixations, ``"<metric>/image"`` the mean of the image means."""
    summary: dict[str, float] = {}
    per_image: dict[str, np.ndarray] = {}
    for key in METRICS:
        if key in per_fix:
            values = per_fix[key]
            image_means = np.bincount(data.image_of, weights=values, minlength=data.n_images) / data.counts
            per_image[key] = image_means
            summary[key] = float(values.mean())
            summary[key + "/image"] = float(image_means.mean())
        elif key in per_img:
            per_image[key] = per_img[key]
            summary[key] = float(per_img[key].mean())
    return summary, per_image


def evaluation_config(settings: Settings, model_name: str, baseline: bool) -> dict:
    """The settings recorded in :attr:`EvaluationResult.config` (and the written files)."""
    return {
        "model": model_name,
        "sigma": float(settings.sigma),
        "blur_mode": settings.blur_mode,
        "shuffled_compute_size": list(settings.compute_size),
        "auc_judd_jitter": False,
        "sim_map": SIM_MAPS[settings.sim_map],
        **({"sim_map_seed": int(settings.sim_map_seed), "sim_map_epochs": int(settings.sim_map_epochs)} if settings.sim_map == "optimal" else {}),
        "baseline": baseline,
    }


def evaluate(
    log_densities: LogDensities,
    image_sizes: Sequence[tuple[int, int]],
    fixation_xs: np.ndarray,
    fixation_ys: np.ndarray,
    fixation_image_index: np.ndarray,
    *,
    baseline_log_densities: LogDensities | None = None,
    image_names: Sequence[str] | None = None,
    sigma: float = 24.0,
    blur_mode: metrics.BlurMode = "reflect",
    shuffled_compute_size: tuple[int, int] = metric_maps.DEFAULT_COMPUTE_SIZE,
    batch_size: int = 2,
    canvas_multiple: int = 256,
    sim_map: SimMap = "blurred",
    sim_map_seed: int = 0,
    sim_map_epochs: int = 20,
    workers: int | None = None,
    model_name: str = "model",
    out_dir: str | pathlib.Path | None = None,
) -> EvaluationResult:
    """Score a probabilistic model on a dataset with all metrics, each given its metric-specific map.

    log_densities: per image n, the model's log density (H_n, W_n) in nats, logsumexp 0; a sequence or
        a callable ``n -> array``. It is read twice (the shuffled baseline for sAUC needs a first pass).
        A map whose |logsumexp| exceeds :data:`metrics.NORMALISATION_ATOL` raises ValueError naming the
        image (checked on the first read; the baseline's on its only read).
    image_sizes: (n_images,) of (H, W). fixation_xs, fixation_ys: (F,) 0-based pixel coordinates of all
        fixations of the dataset; fixation_image_index: (F,) int, the image of each fixation.
    baseline_log_densities: optional, like ``log_densities``; adds IG (bits/fixation) over it.
    sigma: the empirical map's Gaussian in pixels (and the blur of the CC/KLDiv/SIM map); MIT300 uses 24.
    blur_mode: boundary rule of the prediction's blur (the empirical map uses 'reflect' as pysaliency).
    batch_size: images per computation. Small batches are faster on CPU: XLA gives every computation
        fresh memory, and the page faults of large buffers cost a third of the time at batch size 8.
    workers: batches computed at once, each on its own thread (one computation at a time leaves CPU
        cores idle); default: the number of CPU cores, at most 4. The results do not depend on it; the
        prediction callables are always called from the calling thread, outside JAX's x64 mode.
    sim_map: the map SIM is scored on. "blurred": the blurred density, as CC and KLDiv (fast).
        "optimal": the map that maximises expected SIM (Kümmerer et al. 2018;
        :func:`metric_maps.sim_saliency_map` with blur ``sigma``, seed ``sim_map_seed``,
        ``sim_map_epochs`` epochs of 1000 sampled empirical maps), optimised image by image on the worker
        threads; the other metrics are unchanged. Slow without an accelerator: at 20 epochs, ~2 min of
        CPU time per 768x1024 image (9 min wall measured on a busy 2-core machine).
    out_dir: if given, writes ``metrics.json`` and ``metrics.md`` there.

    AUC-Judd is computed without jitter. pysaliency's ``AUC_Judd`` jitters by default: one
    ``RandomState(42)`` per call, ``randn(H, W) * 1e-7`` added to each image's map in dataset order from
    that one stream; :func:`metrics.auc_judd` reproduces it (``jitter=True`` or a shared RandomState).
    """
    workers = check_options(sim_map, sim_map_epochs, workers)
    start = time.perf_counter()
    data = check_dataset(image_sizes, fixation_xs, fixation_ys, fixation_image_index, image_names)
    settings = Settings(sigma, blur_mode, tuple(int(s) for s in shuffled_compute_size), sim_map, sim_map_seed, sim_map_epochs)
    get = _getter(log_densities)
    get_baseline = None if baseline_log_densities is None else _getter(baseline_log_densities)
    batches = plan_batches(data.sizes, batch_size, canvas_multiple)

    average_log_density = shuffled_average_log_density(get, data, batches, batch_size, settings.compute_size, workers)
    load = functools.partial(load_batch_inputs, get=get, get_baseline=get_baseline, data=data, batch_size=batch_size,
                             negatives=ShuffledNegatives(data))
    score = functools.partial(score_batch, data=data, settings=settings, average_log_density=average_log_density)
    per_fix, per_img = collect_scores(batches, _in_order(load, score, batches, workers), data)
    summary, per_image = summarise(per_fix, per_img, data)

    config = evaluation_config(settings, model_name, get_baseline is not None)
    result = EvaluationResult(summary, per_image, data.names, data.counts, config, time.perf_counter() - start)
    if out_dir is not None:
        result.write(out_dir)
    return result
