"""Fixation log-likelihood in bits per fixation relative to a uniform prediction: the one home of it.

Fixations are padded arrays ``xs``, ``ys`` (0-based pixel coordinates, x right, y down) with a
boolean ``mask``; a fixation scores the pixel ``[int(y), int(x)]`` as pysaliency does. A log density
``log p`` (nats) at a fixation of an ``H x W`` image is worth ``(log p + log(H * W)) / ln 2`` bits over
the uniform prediction.

* per fixation: :func:`bits_relative_to_uniform` (any array), :func:`bits_at` (one map, on the host),
  :func:`fixation_bits` (a model's head on cached features, the training path);
* per image: :func:`log_likelihood` (maps), :func:`per_image_log_likelihood` (a model's head; the
  training loss), :func:`masked_mean`, :func:`image_means`;
* ensembles: :func:`ensemble_bits` (densities averaged: logsumexp over members minus log K);
* summaries: :func:`average` (per-image scores weighted by fixations or per image) and
  :func:`average_bits` (per-fixation bits of many images).

This module imports neither :mod:`deepgaze_jax.metrics` nor :mod:`deepgaze_jax.model` at import time,
so that both can import it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

if TYPE_CHECKING:
    from deepgaze_jax.model import DeepGaze

LN2 = math.log(2.0)


def bits_relative_to_uniform(log_p: jax.Array, height, width) -> jax.Array:
    """Nats of a log density at fixations -> bits per fixation relative to uniform over ``H * W``.

    ``height``, ``width``: Python (or numpy) integers, or integer arrays that broadcast against
    ``log_p`` (e.g. ``sizes[:, 0:1]``, ``sizes[:, 1:2]`` for ``(B, N)`` values of images of several
    sizes; their product is taken in ``log_p``'s dtype).
    """
    if isinstance(height, jax.Array) or isinstance(width, jax.Array) or np.ndim(height) or np.ndim(width):
        pixels = (jnp.asarray(height) * jnp.asarray(width)).astype(jnp.result_type(log_p))
        return (log_p + jnp.log(pixels)) / LN2
    return (log_p + jnp.log(float(height * width))) / LN2


def bits_at(log_density: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bits relative to uniform of each fixation on one ``(H, W)`` log density (nats), on the host.

    numpy throughout, in ``log_density``'s dtype: ``(n,)`` pixel coordinates -> ``(n,)`` bits.
    """
    h, w = log_density.shape
    return (log_density[ys.astype(int), xs.astype(int)] + math.log(h * w)) / LN2


def masked_mean(bits: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over the last axis of the entries where ``mask`` holds (0 where none does).

    ``(..., N)`` bits and bool mask -> ``(...)``.
    """
    count = jnp.maximum(mask.sum(axis=-1), 1).astype(jnp.result_type(bits))
    return jnp.where(mask, bits, 0.0).sum(axis=-1) / count


def _per_image(log_density: jax.Array, xs: jax.Array, ys: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    height, width = log_density.shape
    values = log_density[ys.astype(jnp.int32), xs.astype(jnp.int32)]
    return masked_mean(bits_relative_to_uniform(values, height, width), mask), mask.sum()


@jax.jit
def _log_likelihood_kernel(log_density, xs, ys, mask):
    return jax.vmap(_per_image)(log_density, xs, ys, mask)


def log_likelihood(log_density: jax.Array, xs: jax.Array, ys: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-image mean log-likelihood of fixations.

    Args:
      log_density: ``(B, H, W)`` log densities in nats, each normalised: a concrete array whose
        |logsumexp| exceeds :data:`deepgaze_jax.metrics.NORMALISATION_ATOL` for some image raises
        ValueError. The check runs on the host, so under ``jax.jit`` or ``jax.grad`` tracing it is
        skipped (call :func:`deepgaze_jax.metrics.check_normalised` outside).
      xs, ys: ``(B, N)`` fixation coordinates in pixels.
      mask: ``(B, N)`` bool, True for real fixations.

    Returns:
      ``(B,)`` bits per fixation relative to uniform (0 for an image without fixations) and
      ``(B,)`` fixation counts.
    """
    if not isinstance(log_density, jax.core.Tracer):
        from deepgaze_jax import metrics  # here, not at import time: metrics imports this module

        metrics.check_normalised(log_density, "log_density")
    return _log_likelihood_kernel(log_density, xs, ys, mask)


def fixation_bits(model: DeepGaze, head: dict, features: jax.Array, centerbias: jax.Array,
                  xs: jax.Array, ys: jax.Array, history: jax.Array | None = None) -> jax.Array:
    """``(B, N)`` log-likelihood of each fixation under ``model``'s head, bits relative to uniform.

    ``features``: ``(B, h, w, C)`` cached backbone features; ``centerbias``: one ``(H, W)`` log
    density (nats) shared by the batch (all its images have that size); ``xs``, ``ys``: ``(B, N)``
    pixel coordinates; ``history``: ``(B, N, K, 2)`` each fixation's history, for a scanpath model
    (:class:`~deepgaze_jax.deepgaze3.DeepGazeIII`). The full-size density is never built
    (``model.log_density_at``).
    """
    height, width = centerbias.shape
    cb = jnp.broadcast_to(centerbias, (features.shape[0], height, width))
    extra = () if history is None else (history,)
    return bits_relative_to_uniform(model.log_density_at(head, features, cb, xs, ys, *extra), height, width)


def per_image_log_likelihood(model: DeepGaze, head: dict, features: jax.Array, centerbias: jax.Array,
                             xs: jax.Array, ys: jax.Array, mask: jax.Array,
                             history: jax.Array | None = None) -> jax.Array:
    """``(B,)`` mean log-likelihood of each image's fixations (``mask``), bits/fixation relative to
    uniform (0 for an image without fixations); arguments as :func:`fixation_bits`."""
    return masked_mean(fixation_bits(model, head, features, centerbias, xs, ys, history), mask)


def image_means(bits: Sequence[np.ndarray]) -> np.ndarray:
    """Per image the mean of its ``(n_i,)`` per-fixation bits (0.0 for an image without fixations)."""
    return np.array([b.mean() if len(b) else 0.0 for b in bits])


def ensemble_bits(members: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Per image, the log-likelihood (bits vs uniform) of each fixation under the mean density of the
    members (logsumexp over members minus log K), from each member's per-image ``(n_i,)`` bits."""
    k = math.log(len(members))
    return [(logsumexp(np.stack(per_image) * LN2, axis=0) - k) / LN2 for per_image in zip(*members)]


def average(per_image, counts, per: str = "fixation") -> float:
    """Combine per-image scores (numpy, float64 where ``counts`` are integers): weighted by the
    images' fixation ``counts`` (``per="fixation"``), or the mean over the images with fixations
    (``per="image"``)."""
    per_image, counts = np.asarray(per_image), np.asarray(counts)
    if per == "fixation":
        return float((per_image * counts).sum() / counts.sum())
    if per == "image":
        return float(per_image[counts > 0].mean())
    raise ValueError(f"per must be 'fixation' or 'image', got {per!r}")


def average_bits(bits: Sequence[np.ndarray], per: str = "fixation") -> float:
    """Average of per-fixation bits of many images (per image ``(n_i,)``): over all fixations
    (``per="fixation"``), or over the per-image means of the images with fixations (``per="image"``)."""
    if per == "fixation":
        return float(np.mean(np.concatenate(bits)))
    if per == "image":
        return float(np.mean([b.mean() for b in bits if len(b)]))
    raise ValueError(f"per must be 'fixation' or 'image', got {per!r}")
