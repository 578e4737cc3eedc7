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

Every public function here (:mod:`deepgaze_jax.metrics.api`) validates its inputs (finite maps, matching
shapes, non-empty fixation sets, fixations inside the map, normalised log densities; the checks are in
:mod:`deepgaze_jax.metrics.validation`) on the host and raises ``ValueError`` naming the problem, then
calls a pure jitted kernel of :mod:`deepgaze_jax.metrics.kernels`, vectorised over images and
fixations. The public functions compute in float64 (under ``jax.enable_x64``) so that they agree with
pysaliency to far better than 1e-6; the kernels themselves follow the dtype they are given, take
batches of images of mixed sizes on one canvas, and can be used inside other jitted code.
"""

from deepgaze_jax.metrics import api, kernels, validation
from deepgaze_jax.metrics.api import (
    auc,
    auc_against,
    auc_judd,
    cc,
    fixation_map,
    gaussian_blur,
    information_gain,
    kl_div,
    log_likelihood,
    mean_per_fixation,
    mean_per_image,
    nss,
    rescaled_fixations,
    shuffled_auc,
    shuffled_negatives,
    sim,
)
from deepgaze_jax.metrics.kernels import BLUR_MODES, CONSTANT_RTOL, KLDIV_EPS, BlurMode, gaussian_kernel_1d
from deepgaze_jax.metrics.validation import NORMALISATION_ATOL, check_normalised, normalisation_error

__all__ = [
    "BLUR_MODES", "CONSTANT_RTOL", "KLDIV_EPS", "NORMALISATION_ATOL", "BlurMode",
    "api", "kernels", "validation",
    "auc", "auc_against", "auc_judd", "cc", "check_normalised", "fixation_map", "gaussian_blur", "gaussian_kernel_1d",
    "information_gain", "kl_div", "log_likelihood", "mean_per_fixation", "mean_per_image", "normalisation_error", "nss",
    "rescaled_fixations", "shuffled_auc", "shuffled_negatives", "sim",
]
