"""Scores of a scanpath model's conditional densities: each fixation on the density given its history.

Per fixation: the log-likelihood (bits relative to uniform), and the AUC and NSS of the conditional
map, computed on the saliency grid with each cell weighted by the image pixels it covers (exact,
since the map is the grid nearest-upsampled to image size). AUC takes all pixels of the map as
negatives (ties count half); NSS is of the density (not its log), population standard deviation
over the image's pixels. Summaries: overall, the information gain of the history over the same
model's static prediction (the empty history), with a bootstrap interval over images, and by the
fixation's position in its scanpath.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import likelihood, provenance
from deepgaze_jax.data import rows_by_image
from deepgaze_jax.data.scanpaths import ScanpathDataset
from deepgaze_jax.finalizer import coverage, upsample_to_image
from deepgaze_jax.resize import nearest_indices


@jax.jit
def _grid_scores(grid: jax.Array, area: jax.Array, xs: jax.Array, ys: jax.Array, rows: jax.Array,
                 cols: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    value = jax.vmap(lambda g, r, c: g[r, c])(grid, rows[ys.astype(jnp.int32)], cols[xs.astype(jnp.int32)])
    pixels = area.sum()
    below = jnp.where(grid < value[:, None, None], area[None], 0.0).sum(axis=(-2, -1))
    ties = jnp.where(grid == value[:, None, None], area[None], 0.0).sum(axis=(-2, -1))
    density = jnp.exp(grid)
    mean = (density * area[None]).sum(axis=(-2, -1)) / pixels
    var = (jnp.square(density - mean[:, None, None]) * area[None]).sum(axis=(-2, -1)) / pixels
    nss = jnp.where(var > 0, (jnp.exp(value) - mean) / jnp.sqrt(jnp.where(var > 0, var, 1.0)), 0.0)
    return value, (below + 0.5 * ties) / pixels, nss


def grid_scores(grid: jax.Array, shape: tuple[int, int], xs: jax.Array, ys: jax.Array) -> tuple[jax.Array, ...]:
    """``(N, h, w)`` log densities on the saliency grid of an ``(H, W) = shape`` image (each the map of
    its own fixation) and ``(N,)`` fixations -> ``(N,)`` log density (nats), AUC and NSS."""
    height, width = shape
    rows_cover = coverage(grid.shape[-2], height).astype(np.float32)
    cols_cover = coverage(grid.shape[-1], width).astype(np.float32)
    area = jnp.asarray(rows_cover[:, None] * cols_cover[None, :])
    rows, cols = jnp.asarray(nearest_indices(grid.shape[-2], height)), jnp.asarray(nearest_indices(grid.shape[-1], width))
    return _grid_scores(grid, area, jnp.asarray(xs), jnp.asarray(ys), rows, cols)


def bootstrap_interval(per_image_sums: np.ndarray, counts: np.ndarray, samples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap over images of a per-fixation mean (``sum of sums / sum of counts``)."""
    rng = np.random.default_rng(seed)
    n = len(per_image_sums)
    pick = rng.integers(0, n, size=(samples, n))
    means = per_image_sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def evaluate_scanpaths(predictor, scan: ScanpathDataset, chunk: int = 128, progress=None) -> dict[str, list[np.ndarray]]:
    """Per image of ``scan``, ``(n_i,)`` arrays: ``"conditional"`` and ``"static"`` bits relative to uniform
    (given the history, and given none), ``"auc"``, ``"nss"`` (of the conditional maps), ``"index"``
    (position in the scanpath) and ``"history_length"``. The backbone runs once per image;
    ``predictor`` is a :class:`~deepgaze_jax.predict.ScanpathPredictor`."""
    dataset = scan.dataset
    f = dataset.fixations
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("conditional", "static", "auc", "nss", "index",
                                                         "history_length")}
    for i, rows in enumerate(rows_by_image(dataset)):
        features = predictor.features(dataset.images[i])
        shape = tuple(int(v) for v in dataset.sizes[i])
        parts = {k: [] for k in ("conditional", "auc", "nss")}
        for s in range(0, len(rows), chunk):
            r = rows[s: s + chunk]
            grid = predictor.conditional_grid(features, scan.histories[r])
            log_p, auc, nss = (np.asarray(v) for v in grid_scores(grid, shape, f.x[r], f.y[r]))
            parts["conditional"].append(np.asarray(likelihood.bits_relative_to_uniform(log_p, *shape)))
            parts["auc"].append(auc)
            parts["nss"].append(nss)
        static = np.asarray(predictor.conditional_grid(features, predictor.empty_history(1))[0])
        out["static"].append(likelihood.bits_at(_upsampled(static, shape), f.x[rows], f.y[rows]))
        for k, v in parts.items():
            out[k].append(np.concatenate(v) if v else np.zeros(0, np.float32))
        out["index"].append(f.index[rows])
        out["history_length"].append((~np.isnan(scan.histories[rows][..., 0])).sum(axis=1))
        if progress is not None:
            progress(i)
    return out


def _upsampled(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(upsample_to_image(jnp.asarray(grid), shape))


#: The summary's name for the mean of each per-image array: log-likelihoods (bits/fixation), then scores.
MEANS = {"conditional": "conditional_log_likelihood", "spatial": "spatial_log_likelihood",
         "static": "static_log_likelihood", "center_bias": "center_bias_log_likelihood",
         "gold": "gold_standard_log_likelihood", "auc": "conditional_auc", "nss": "conditional_nss",
         "spatial_auc": "spatial_auc", "spatial_nss": "spatial_nss"}


def summary(per_image: Mapping[str, Sequence[np.ndarray]], baselines: Sequence[str] = ("static",)) -> dict:
    """Per-fixation means of the per-image arrays (``(n_i,)`` each, aligned with ``"conditional"``):
    the mean of each key present under its :data:`MEANS` name (``None`` where the key has no images;
    log-likelihoods in bits/fixation), and for each of ``baselines``
    that every image has, ``information_gain_over_<baseline>`` of ``"conditional"`` (bits/fixation) with
    its 95 % bootstrap interval over images (``..._ci95``)."""
    def mean(key):
        values = list(per_image.get(key) or [])
        return float(np.concatenate(values).mean()) if values else None

    conditional = list(per_image["conditional"])
    counts = np.array([len(c) for c in conditional], np.float64)
    out: dict = {name: mean(k) for k, name in MEANS.items() if k in per_image}
    out["fixations"], out["images"] = int(counts.sum()), len(conditional)
    for b in baselines:
        base = list(per_image.get(b) or [])
        if len(base) != len(conditional) or not conditional:
            continue
        gain = np.array([(c - v).sum() for c, v in zip(conditional, base)])
        out[f"information_gain_over_{b}"] = float(gain.sum() / counts.sum())
        out[f"information_gain_over_{b}_ci95"] = bootstrap_interval(gain, counts)
    return out


def by_index(per_image: dict[str, Sequence[np.ndarray]], baselines: Sequence[str] = ("static",),
             last: int = 12) -> list[dict]:
    """Mean log-likelihoods by the fixation's position in its scanpath (0-based; for MIT1003 index 0 is
    the forced start, so the first target has index 1); positions >= ``last`` pooled."""
    cat = {k: np.concatenate(list(v)) for k, v in per_image.items() if len(v)}
    index = np.minimum(cat["index"], last)
    rows = []
    for k in np.unique(index):
        sel = index == k
        row = {"index": int(k), "pooled_from_here": bool(k == last), "fixations": int(sel.sum()),
               "conditional_log_likelihood": float(cat["conditional"][sel].mean())}
        for b in baselines:
            if b in cat:
                row[f"{b}_log_likelihood"] = float(cat[b][sel].mean())
                row[f"information_gain_over_{b}"] = float((cat["conditional"][sel] - cat[b][sel]).mean())
        rows.append(row)
    return rows


def write(out_dir: pathlib.Path, name: str, per_image: dict[str, Sequence[np.ndarray]], image_ids: Sequence[str],
          command: str = "") -> dict:
    """``scanpath_metrics.json`` (summary, by position, per-image means) and ``scanpath_metrics.md``."""
    result = {"model": name, "total": summary(per_image), "by_index": by_index(per_image),
              "per_image": {image_ids[i]: {k: float(np.mean(v[i])) if len(v[i]) else None
                                           for k, v in per_image.items() if k in ("conditional", "static", "auc", "nss")}
                            for i in range(len(image_ids))},
              **provenance.stamp(command)}
    provenance.write_results(out_dir / "scanpath_metrics", result, markdown(result))
    return result


def markdown(result: dict) -> str:
    t = result["total"]
    lo, hi = t["information_gain_over_static_ci95"]
    lines = [
        f"# Scanpath metrics of {result['model']}",
        "",
        f"{t['images']} images, {t['fixations']} fixations, each scored on the model's density given its history "
        "(bits/fixation relative to uniform).",
        "",
        "| conditional LL | static LL | IG of the history (95 % CI over images) | AUC | NSS |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {t['conditional_log_likelihood']:.4f} | {t['static_log_likelihood']:.4f} | "
        f"{t['information_gain_over_static']:.4f} [{lo:.4f}, {hi:.4f}] | {t['conditional_auc']:.4f} | "
        f"{t['conditional_nss']:.4f} |",
        "",
        "| position in scanpath | fixations | conditional LL | static LL | IG |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["by_index"]:
        label = f"{r['index']}+" if r["pooled_from_here"] else str(r["index"])
        lines.append(f"| {label} | {r['fixations']} | {r['conditional_log_likelihood']:.4f} | "
                     f"{r['static_log_likelihood']:.4f} | {r['information_gain_over_static']:.4f} |")
    return "\n".join(lines) + "\n"
