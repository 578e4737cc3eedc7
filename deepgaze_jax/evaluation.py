"""Evaluate a probabilistic saliency model on a fixation dataset: every metric, per image and overall.

:func:`evaluate` takes the model's log density for every image (a sequence or a callable) and the
dataset's fixations as flat arrays, derives the metric-specific saliency map for each metric
(:mod:`deepgaze_jax.metric_maps`) and scores it (:mod:`deepgaze_jax.metrics`), keeping per-image scores.
Images are processed in batches on a padded canvas (sizes rounded up to ``canvas_multiple``), so one
compilation serves all image sizes of a dataset; the loop over batches is plain Python.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import json
import math
import os
import pathlib
import time
from typing import Callable, Literal, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import metric_maps, metrics

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

    def write(self, out_dir: str | pathlib.Path, stem: str = "metrics") -> tuple[pathlib.Path, pathlib.Path]:
        """Write ``<stem>.json`` (everything, per-image rows included) and ``<stem>.md`` (the table)."""
        out_dir = pathlib.Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
        json_path.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=True) + "\n")
        md_path.write_text(self.to_markdown())
        return json_path, md_path


def _default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def _in_order(load: Callable, compute: Callable, items: Sequence, workers: int):
    """``compute(*load(item))`` for each item, yielded in order. ``load`` runs on the calling thread (so
    the user's prediction callables are never called concurrently); ``compute`` on ``workers`` threads
    (JAX releases the GIL while it computes), with at most ``2 * workers`` items loaded ahead."""
    if workers == 1:
        for item in items:
            yield compute(*load(item))
        return
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(compute, *load(item)))
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
        (lse,) = metrics._logsumexp_host(arr[None])
        if not abs(lse) <= metrics.NORMALISATION_ATOL:
            raise metrics.normalisation_error(f"{what} of image {n} ({name!r})", float(lse))
    return arr


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


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
    cy = iy * ((gh - 1) / jnp.maximum(sizes[0] - 1, 1))
    cx = ix * ((gw - 1) / jnp.maximum(sizes[1] - 1, 1))
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
    return jnp.tensordot(weights, jnp.exp(metric_maps._renormalise(resized, compute_sizes)), axes=1)


@jax.jit
def _shuffled_kernel(resized, compute_sizes, average_log_density, count):
    """The leave-one-out shuffled prediction of each image at the compute size (pysaliency ShuffledBaselineModel).

    resized: (B, Hc', Wc') the images' own log densities resized to the compute size; average_log_density
    (Hc', Wc'): the mean over all ``count`` images. Returns (B, Hc', Wc') log densities, not renormalised.
    """
    own = jnp.exp(metric_maps._renormalise(resized, compute_sizes))
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
    return metrics._gather(log_density, xs, ys, mask) - jax.vmap(_interpolate_at)(shuffled, sizes, xs, ys, mask)


@functools.partial(jax.jit, static_argnames=("n",))
def _sauc_from_values(values, mask, n: int):
    """(B, n + M) values at fixations then negatives, (B, n + M) mask -> (B, n) sAUC per fixation."""
    return metrics._auc_per_positive(values[:, :n], mask[:, :n], values[:, n:], mask[:, n:])


@jax.jit
def _density_kernel(log_density, sizes):
    """(B, Hc, Wc) log densities -> densities, 0 outside each image. Its own dispatch (see _batch_metrics)."""
    return jnp.exp(log_density) * metrics._valid(log_density, sizes)


@functools.partial(jax.jit, static_argnames=("sigma_blur",))
def _dense_metrics_kernel(log_density, density, sizes, xs, ys, mask, baseline, sigma_blur):
    out = {
        "LL": metrics._log_likelihood_kernel(log_density, sizes, xs, ys, mask),
        "NSS": metrics._nss_kernel(density, sizes, xs, ys, mask),
    }
    if baseline is not None:
        out["IG"] = metrics._information_gain_kernel(log_density, baseline, xs, ys, mask)
    sigma, mode = sigma_blur
    blurred = metrics._blur_kernel(density, sizes, sigma, mode)
    empirical = metrics._fixation_map_kernel(xs, ys, mask, jnp.zeros_like(log_density), sizes, sigma, "reflect")
    out["CC"], out["KLDiv"], out["SIM"] = metrics._pair_metrics(blurred, empirical, sizes)
    return out


def _batch_metrics(log_density, sizes, xs, ys, mask, baseline, sigma_blur):
    """All metrics but sAUC of one batch of canvases: a dict of (B, N) per-fixation and (B,) per-image values.

    The density is materialised by a dispatch of its own before AUC reads it, at the fixations and at
    every pixel: inside one XLA computation it could be recomputed per consumer and rounded differently,
    and AUC counts exact ties (see _sauc_values_kernel).
    """
    density = _density_kernel(log_density, sizes)
    out = _dense_metrics_kernel(log_density, density, sizes, xs, ys, mask, baseline, sigma_blur)
    out["AUC"], out["AUC_Judd"] = metrics._auc_and_judd_kernel(density, sizes, xs, ys, mask)
    return out


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
    if sim_map not in SIM_MAPS:
        raise ValueError(f"sim_map must be one of {sorted(SIM_MAPS)}, got {sim_map!r}")
    if sim_map == "optimal" and not (isinstance(sim_map_epochs, (int, np.integer)) and sim_map_epochs >= 1):
        raise ValueError(f"sim_map_epochs must be a positive integer, got {sim_map_epochs!r}")
    workers = _default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    start = time.perf_counter()
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

    get = _getter(log_densities)
    get_baseline = None if baseline_log_densities is None else _getter(baseline_log_densities)
    order = np.argsort(image_of, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    n_pad = _round_up(int(counts.max()), 64)
    canvases = [(_round_up(int(h), canvas_multiple), _round_up(int(w), canvas_multiple)) for h, w in sizes]
    compute_size = tuple(int(s) for s in shuffled_compute_size)
    # Batches of images sharing a canvas, in image order within each canvas.
    groups: dict[tuple[int, int], list[int]] = {}
    for n, canvas in enumerate(canvases):
        groups.setdefault(canvas, []).append(n)
    batches = [(canvas, idx[i : i + batch_size]) for canvas, idx in groups.items() for i in range(0, len(idx), batch_size)]

    def canvas_batch(canvas, idx, getter, what, check):
        # Padded batch slots repeat the first image (see batch_sizes). check: test the normalisation.
        arr = np.zeros((batch_size, *canvas))
        for b, n in enumerate(idx):
            h, w = sizes[n]
            arr[b, :h, :w] = _load(getter, n, (int(h), int(w)), what, names[n] if check else None)
        arr[len(idx) :] = arr[0]
        return arr

    def own(n):
        # Rows of image n's fixations in the flat arrays.
        return order[starts[n] : starts[n + 1]]

    def batch_sizes(idx):
        # Padded batch slots repeat the first image, so every slot is a well-formed image.
        full = list(idx) + [idx[0]] * (batch_size - len(idx))
        return full, sizes[full].astype(np.int32)

    compute_sizes = np.tile(np.array(compute_size, np.int32), (batch_size, 1))

    def load1(item):
        canvas, idx = item
        _, bsizes = batch_sizes(idx)
        arr = canvas_batch(canvas, idx, get, "log density", True)
        weights = np.zeros(batch_size)
        weights[: len(idx)] = 1
        return arr, bsizes, weights

    def compute1(arr, bsizes, weights):
        # The sum of the batch's predictions at the compute size (pysaliency ShuffledBaselineModel).
        with jax.enable_x64(True):
            resized = metric_maps._resize_kernel(arr, *metric_maps.resize_taps(bsizes, compute_sizes, compute_size))
            return np.asarray(_density_sum_kernel(resized, compute_sizes, weights))

    rescaled: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def negatives(n):
        # All fixations rescaled to image n's size (once per size), as metrics.shuffled_negatives; the mask drops n's own.
        key = (int(sizes[n, 0]), int(sizes[n, 1]))
        if key not in rescaled:
            rescaled[key] = metrics.rescaled_fixations(key, sizes, xs_all, ys_all, image_of)
        return rescaled[key] + (image_of != n,)

    def load2(item):
        canvas, idx = item
        full, bsizes = batch_sizes(idx)
        arr = canvas_batch(canvas, idx, get, "log density", False)  # checked on the first pass
        base = None if get_baseline is None else canvas_batch(canvas, idx, get_baseline, "baseline log density", True)
        # Fixations (B, n_pad), then negatives (B, F): one array, one sAUC map lookup (see _sauc_values_kernel).
        all_xs = np.zeros((batch_size, n_pad + xs_all.size))
        all_ys = np.zeros((batch_size, n_pad + xs_all.size))
        all_mask = np.zeros((batch_size, n_pad + xs_all.size), bool)
        for b, n in enumerate(full):
            rows = own(n)
            all_xs[b, : rows.size], all_ys[b, : rows.size], all_mask[b, : rows.size] = xs_all[rows], ys_all[rows], True
            all_xs[b, n_pad:], all_ys[b, n_pad:], all_mask[b, n_pad:] = negatives(n)
        return idx, arr, bsizes, base, all_xs, all_ys, all_mask

    def compute2(idx, arr, bsizes, base, all_xs, all_ys, all_mask):
        # Every metric of one batch.
        xs, ys, mask = all_xs[:, :n_pad], all_ys[:, :n_pad], all_mask[:, :n_pad]
        taps_in = metric_maps.resize_taps(bsizes, compute_sizes, compute_size)
        with jax.enable_x64(True):
            out = _batch_metrics(arr, bsizes, xs, ys, mask, base, (float(sigma), blur_mode))
            shuffled = _shuffled_kernel(metric_maps._resize_kernel(arr, *taps_in), compute_sizes, average_log_density, float(n_images))
            values = _sauc_values_kernel(arr, shuffled, bsizes, all_xs, all_ys, all_mask)
            out["sAUC"] = _sauc_from_values(values, all_mask, n_pad)
            out = {key: np.asarray(value)[: len(idx)] for key, value in out.items()}
        if sim_map == "optimal":  # replaces SIM of the blurred density
            out["SIM"] = np.array([
                _optimal_sim(arr[b, : sizes[n, 0], : sizes[n, 1]], xs_all[own(n)], ys_all[own(n)], float(sigma),
                             int(sim_map_seed), int(sim_map_epochs))
                for b, n in enumerate(idx)])
        return out

    # Pass 1: the sum of all predictions, added in batch order (the same sum for any number of workers).
    total = np.zeros(compute_size)
    for partial in _in_order(load1, compute1, batches, workers):
        total += partial
    average_log_density = metric_maps.ShuffledBaseline(total, n_images, compute_size).average_log_density

    # Pass 2: every metric, batch by batch.
    per_fix: dict[str, np.ndarray] = {}
    per_img: dict[str, np.ndarray] = {}
    for (canvas, idx), out in zip(batches, _in_order(load2, compute2, batches, workers)):
        for key, value in out.items():
            if key in PER_FIXATION:
                target = per_fix.setdefault(key, np.full(xs_all.size, np.nan))
                for b, n in enumerate(idx):
                    target[own(n)] = value[b, : counts[n]]
            else:
                per_img.setdefault(key, np.full(n_images, np.nan))[idx] = value

    summary: dict[str, float] = {}
    per_image: dict[str, np.ndarray] = {}
    for key in METRICS:
        if key in per_fix:
            values = per_fix[key]
            image_means = np.bincount(image_of, weights=values, minlength=n_images) / counts
            per_image[key] = image_means
            summary[key] = float(values.mean())
            summary[key + "/image"] = float(image_means.mean())
        elif key in per_img:
            per_image[key] = per_img[key]
            summary[key] = float(per_img[key].mean())
    config = {
        "model": model_name,
        "sigma": float(sigma),
        "blur_mode": blur_mode,
        "shuffled_compute_size": list(compute_size),
        "auc_judd_jitter": False,
        "sim_map": SIM_MAPS[sim_map],
        **({"sim_map_seed": int(sim_map_seed), "sim_map_epochs": int(sim_map_epochs)} if sim_map == "optimal" else {}),
        "baseline": get_baseline is not None,
    }
    result = EvaluationResult(summary, per_image, names, counts, config, time.perf_counter() - start)
    if out_dir is not None:
        result.write(out_dir)
    return result
