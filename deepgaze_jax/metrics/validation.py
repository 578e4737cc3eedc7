"""Host-side input checks for the metric functions: shapes, finite values, fixations inside the map,
normalised log densities.

Each raises ``ValueError`` naming what is wrong (the argument, the image, the expected and actual
shape). Maps come back as float64 ``(B, H, W)`` numpy arrays with a flag saying whether the caller
passed a batch, fixations as padded ``(B, N)`` float64 arrays with a bool mask, as the kernels of
:mod:`deepgaze_jax.metrics.kernels` take them.
"""

from __future__ import annotations

import numpy as np

# How far from 0 a log density's logsumexp may be, in nats. Producers normalise in float32: each stored
# log value is rounded to 2^-24 of its size (< 2e-6 nats for |log p| < 30), and the pairwise or tree
# sums of numpy, XLA and torch over ~1e6 float32 terms err by at most ~log2(1e6) * 2^-24 = 1.2e-6
# (measured at 768x1024: 4e-8 to 5e-7 nats for this project's model, its center bias and
# jax.nn.logsumexp). 1e-3 is ~1000 times that, and an accepted map moves LL and IG by at most
# 1e-3 / ln 2 = 0.0014 bits/fixation. A naive sequential float32 running sum errs by up to
# 1e6 * 2^-24 = 0.06 (1.4e-3 measured at 768x1024) and is refused: renormalise such maps in float64.
NORMALISATION_ATOL = 1e-3


def as_maps(name: str, maps) -> tuple[np.ndarray, bool]:
    """``maps`` (H, W) or (B, H, W), finite -> float64 (B, H, W) (B = 1 for one map) and whether it was a batch."""
    arr = np.asarray(maps, dtype=np.float64)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (H, W) or (B, H, W), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise ValueError(f"{name} contains NaN or infinity (first at index {bad})")
    batched = arr.ndim == 3
    return (arr if batched else arr[None]), batched


def check_same_shape(name_1: str, a: np.ndarray, name_2: str, b: np.ndarray) -> None:
    """Raise ValueError naming both arrays (as from :func:`as_maps`) unless they have the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"{name_2} has shape {b.shape[1:]} (batch {b.shape[0]}), {name_1} has {a.shape[1:]} (batch {a.shape[0]})")


def as_fixations(xs, ys, mask, maps: np.ndarray, batched: bool, name: str = "fixations") -> tuple[np.ndarray, ...]:
    """Fixations for ``maps`` (B, H, W) from :func:`as_maps`: xs, ys, mask (N,) or (B, N) as the maps
    were batched or not, mask None for all real. Every image needs a real fixation, each inside its map
    (0 <= x < W, 0 <= y < H, pixels). Returns float64 xs, ys (B, N) (0 at padding) and the bool mask.
    """
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


def host_logsumexp(maps: np.ndarray) -> np.ndarray:
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
    lse = host_logsumexp(maps if batched else maps[None])
    bad = np.flatnonzero(~(np.abs(lse) <= NORMALISATION_ATOL))
    if bad.size:
        b = int(bad[0])
        raise normalisation_error(f"{name} of image {b}" if batched else name, float(lse[b]))


def full_sizes(maps: np.ndarray) -> np.ndarray:
    """(B, H, W) maps that fill their canvas -> the kernels' (B, 2) int32 sizes, (H, W) per image."""
    return np.tile(np.array(maps.shape[1:], np.int32), (maps.shape[0], 1))


def unbatch(values, batched: bool) -> np.ndarray:
    """A kernel's (B, ...) result as numpy, without the batch axis where the caller passed one map."""
    values = np.asarray(values)
    return values if batched else values[0]
