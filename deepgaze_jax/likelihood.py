"""Fixation log-likelihood in bits per fixation relative to a uniform prediction.

Fixations are padded arrays ``xs``, ``ys`` (0-based pixel coordinates, x right, y down) with a
boolean ``mask``; a fixation scores the pixel ``[int(y), int(x)]`` as pysaliency does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import metrics

LN2 = float(np.log(2.0))


def bits_relative_to_uniform(log_p: jax.Array, height: int, width: int) -> jax.Array:
    """Nats of a log density at fixations -> bits per fixation relative to uniform over ``H * W``."""
    return (log_p + jnp.log(float(height * width))) / LN2


def _per_image(log_density: jax.Array, xs: jax.Array, ys: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    height, width = log_density.shape
    values = log_density[ys.astype(jnp.int32), xs.astype(jnp.int32)]
    bits = jnp.where(mask, bits_relative_to_uniform(values, height, width), 0.0)
    count = mask.sum()
    return bits.sum() / jnp.maximum(count, 1), count


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
        metrics.check_normalised(log_density, "log_density")
    return _log_likelihood_kernel(log_density, xs, ys, mask)


def average(per_image: jax.Array, counts: jax.Array, per: str = "fixation") -> jax.Array:
    """Combine per-image scores: weighted by fixation count (``per="fixation"``) or per image."""
    counts = jnp.asarray(counts)
    if per == "fixation":
        return (per_image * counts).sum() / counts.sum()
    if per == "image":
        return jnp.where(counts > 0, per_image, 0.0).sum() / (counts > 0).sum()
    raise ValueError(f"per must be 'fixation' or 'image', got {per!r}")
