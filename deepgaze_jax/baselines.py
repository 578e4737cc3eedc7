"""Center-bias and gold-standard baseline models, fitted by cross-validated likelihood in JAX.

Conventions (as pysaliency and the MIT/Tuebingen benchmark):

* Positions are normalised by image size: ``u = x / W``, ``v = y / H`` in [0, 1); a bandwidth ``bw`` is a
  fraction of the image size, i.e. a Gaussian of std ``(bw * H, bw * W)`` pixels.
* A model's log density is a map over the pixels of an ``(H, W)`` image in nats whose logsumexp is 0;
  a fixation at ``(x, y)`` scores ``log_density[int(y), int(x)]``.
* Log-likelihoods are reported in bits per fixation relative to the uniform model:
  ``(log p + log(H * W)) / ln 2``.

Center bias: a Gaussian kernel density of the training fixations (kernel centres binned on a
``bins x bins`` grid of the unit square; the bin width, 1/256 of the image size by default, adds a
std of 0.1 % of the image size, negligible against the bandwidth)
mixed with a uniform distribution. Bandwidth and uniform weight maximise the leave-one-image-out
log-likelihood.

Gold standard: for each observer, a kernel density of the *other* observers' fixations on the same
image, mixed with the (leave-one-image-out) center bias and uniform; bandwidth and the three weights
maximise the leave-one-observer-out log-likelihood. Its information gain over the center bias is the
denominator of explained information gain.

Border convention: kernels are truncated at the image border and the density renormalised over the
image. (pysaliency's ``BaselineModel`` instead blurs a fixation histogram with scipy's
``gaussian_filter`` in its default "reflect" mode and adds the uniform term before normalising; the two
differ only for fixations within about one bandwidth of the border.)

The fitting objectives evaluate densities at the fixations analytically; the grid normaliser of a
truncated Gaussian is its integral over the image (``sqrt(2 pi) bw * (Phi((1-c)/bw) - Phi(-c/bw))`` per
axis, the midpoint rule, exact to well below 1e-3 nats for kernels wider than a pixel). The maps from
``log_density`` normalise over the actual pixel grid.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import TYPE_CHECKING, Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from deepgaze_jax.likelihood import LN2

if TYPE_CHECKING:  # the data module imports tensorflow-datasets; predicting needs only the maps
    from deepgaze_jax.data.datasets import FixationDataset

log = logging.getLogger(__name__)
DEFAULT_BINS = 256


def _normal_cdf(z: jax.Array) -> jax.Array:
    return 0.5 * (1.0 + jax.scipy.special.erf(z / math.sqrt(2.0)))


def _mass(c: jax.Array, bw: jax.Array) -> jax.Array:
    """Fraction of a 1-D Gaussian (centre c, std bw) inside [0, 1]."""
    return _normal_cdf((1.0 - c) / bw) - _normal_cdf(-c / bw)


def normalised_positions(dataset: FixationDataset) -> tuple[np.ndarray, np.ndarray]:
    """``(u, v) = (x / W, y / H)`` of every fixation, float32 (F,)."""
    f = dataset.fixations
    h, w = dataset.sizes[f.image_index, 0], dataset.sizes[f.image_index, 1]
    return (f.x / w).astype(np.float32), (f.y / h).astype(np.float32)


def pixel_centres(dataset: FixationDataset) -> tuple[np.ndarray, np.ndarray]:
    """Normalised centre of the pixel each fixation indexes, ``((int(x) + .5) / W, (int(y) + .5) / H)``."""
    f = dataset.fixations
    h, w = dataset.sizes[f.image_index, 0], dataset.sizes[f.image_index, 1]
    return ((np.floor(f.x) + 0.5) / w).astype(np.float32), ((np.floor(f.y) + 0.5) / h).astype(np.float32)


def _bin(u: np.ndarray, bins: int) -> np.ndarray:
    return np.clip(np.floor(np.asarray(u) * bins), 0, bins - 1).astype(np.int32)


def _padded_by_image(image_index: np.ndarray, n_images: int, *columns: np.ndarray):
    """Rearranges (F,) columns into (I, N) arrays padded with 0, plus the (I, N) validity mask."""
    counts = np.bincount(image_index, minlength=n_images)
    n = max(1, int(counts.max(initial=0)))
    order = np.argsort(image_index, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    slot = np.arange(len(image_index)) - starts[image_index[order]]
    mask = np.zeros((n_images, n), bool)
    mask[image_index[order], slot] = True
    out = []
    for c in columns:
        a = np.zeros((n_images, n), c.dtype)
        a[image_index[order], slot] = c[order]
        out.append(a)
    return mask, out, (image_index[order], slot)


def _minimize(loss: Callable[[jax.Array], jax.Array], x0: np.ndarray, bounds) -> np.ndarray:
    value_and_grad = jax.jit(jax.value_and_grad(loss))

    def f(x):
        v, g = value_and_grad(jnp.asarray(x, jnp.float32))
        return float(v), np.asarray(g, np.float64)

    res = scipy.optimize.minimize(f, np.asarray(x0, np.float64), jac=True, method="L-BFGS-B",
                                  bounds=bounds)
    if not res.success:
        log.warning("baseline fit did not converge: %s (params %s)", res.message, res.x)
    return res.x


# ---------------------------------------------------------------------------------------------- center bias


def _gauss_matrix(a: jax.Array, b: jax.Array, bw: jax.Array) -> jax.Array:
    return jnp.exp(-jnp.square(a[:, None] - b[None, :]) / (2.0 * bw * bw))


@dataclasses.dataclass(frozen=True)
class CenterBias:
    """Kernel-density center bias in normalised coordinates, mixed with uniform.

    Attributes:
      histogram: float32 (bins, bins), counts of training fixations per normalised bin (rows: y).
      bandwidth: kernel std as a fraction of image height (y) and width (x).
      uniform_weight: mixing weight of the uniform distribution.
      train_log_likelihood: leave-one-image-out log-likelihood at the fit, bits/fixation vs uniform.
    """

    histogram: np.ndarray
    bandwidth: float
    uniform_weight: float
    train_log_likelihood: float = float("nan")

    @classmethod
    def fit(cls, dataset: FixationDataset, bins: int = DEFAULT_BINS) -> "CenterBias":
        """Fits bandwidth and uniform weight by leave-one-image-out likelihood on ``dataset``."""
        objective = _CenterBiasObjective(dataset, bins)
        x = _minimize(lambda p: -jnp.mean(objective(p)), np.array([math.log(0.05), -5.0]),
                      bounds=[(math.log(1e-3), math.log(1.0)), (-40.0, 5.0)])
        ll = float(np.mean(objective(jnp.asarray(x, jnp.float32)))) / LN2
        return cls(objective.histogram, float(np.exp(x[0])), float(jax.nn.sigmoid(x[1])), ll)

    @classmethod
    def from_fixations(cls, u: np.ndarray, v: np.ndarray, bandwidth: float, uniform_weight: float,
                       bins: int = DEFAULT_BINS) -> "CenterBias":
        """A center bias with given parameters from normalised positions u, v (F,)."""
        hist = np.zeros((bins, bins), np.float32)
        np.add.at(hist, (_bin(v, bins), _bin(u, bins)), 1.0)
        return cls(hist, bandwidth, uniform_weight)

    @classmethod
    def gaussian(cls, bandwidth: float = 0.2, uniform_weight: float = 0.05, bins: int = DEFAULT_BINS) -> "CenterBias":
        """A generic center bias: one Gaussian at the image centre (std ``bandwidth`` of the image size)
        mixed with uniform; for tests and as a stand-in where no fixations are at hand."""
        return cls.from_fixations(np.array([0.5]), np.array([0.5]), bandwidth, uniform_weight, bins)

    def without(self, u: np.ndarray, v: np.ndarray) -> "CenterBias":
        """The model with the fixations at normalised (u, v) removed (e.g. one image, for LOO)."""
        bins = self.histogram.shape[0]
        hist = self.histogram.copy()
        np.add.at(hist, (_bin(v, bins), _bin(u, bins)), -1.0)
        if (hist < -1e-3).any():
            raise ValueError("CenterBias.without: removed fixations that were not in the histogram")
        return dataclasses.replace(self, histogram=np.maximum(hist, 0.0))

    def log_density(self, shape: tuple[int, int]) -> jax.Array:
        """float32 (H, W) log density in nats over the pixels of an image of ``shape = (H, W)``."""
        return _center_bias_map(jnp.asarray(self.histogram), jnp.float32(self.bandwidth),
                                jnp.float32(self.uniform_weight), tuple(int(s) for s in shape))


@jax.jit(static_argnums=3)
def _center_bias_map(hist, bw, w, shape):
    h, wd = shape
    bins = hist.shape[0]
    c = (jnp.arange(bins, dtype=jnp.float32) + 0.5) / bins
    gy = _gauss_matrix((jnp.arange(h, dtype=jnp.float32) + 0.5) / h, c, bw)  # (H, bins)
    gx = _gauss_matrix((jnp.arange(wd, dtype=jnp.float32) + 0.5) / wd, c, bw)  # (W, bins)
    k = gy @ hist @ gx.T
    p = (1.0 - w) * k / jnp.sum(k) + w / (h * wd)
    return jnp.log(p)


class _CenterBiasObjective:
    """Leave-one-image-out log-likelihood (nats vs uniform, (F,)) of params (log bw, logit w)."""

    def __init__(self, dataset: FixationDataset, bins: int):
        self.bins = bins
        u, v = normalised_positions(dataset)
        ue, ve = pixel_centres(dataset)  # evaluate where the maps are read: pixel [int(y), int(x)]
        bx, by = _bin(u, bins), _bin(v, bins)
        self.histogram = np.zeros((bins, bins), np.float32)
        np.add.at(self.histogram, (by, bx), 1.0)
        mask, cols, (self.rows, self.slots) = _padded_by_image(
            dataset.fixations.image_index, len(dataset), bx, by, ue, ve)
        self.arrays = tuple(jnp.asarray(a) for a in (self.histogram, mask, *cols))
        self._fn = jax.jit(self._ll)

    def __call__(self, params):
        return self._fn(params, *self.arrays)[self.rows, self.slots]

    def _ll(self, params, hist, mask, bx, by, ue, ve):
        bw, w = jnp.exp(params[0]), jax.nn.sigmoid(params[1])
        c = (jnp.arange(self.bins, dtype=jnp.float32) + 0.5) / self.bins
        a = _mass(c, bw)
        z_all = a @ hist @ a

        def per_image(args):
            m, bx, by, ue, ve = args  # kernel bins (bx, by) and exact evaluation points (ue, ve)
            m = m.astype(c.dtype)
            gy, gx = _gauss_matrix(ve, c, bw), _gauss_matrix(ue, c, bw)  # (n, bins)
            k_all = jnp.sum((gy @ hist) * gx, axis=1)
            k_own = jnp.sum(gy[:, by] * gx[:, bx] * m[None, :], axis=1)
            z_own = jnp.sum(a[by] * a[bx] * m)
            q = jnp.maximum(k_all - k_own, 0.0) / (2 * jnp.pi * bw * bw * (z_all - z_own))
            return jnp.log((1.0 - w) * q + w)

        return jax.lax.map(per_image, (mask, bx, by, ue, ve), batch_size=16)


def center_bias_loo_log_likelihoods(model: CenterBias, dataset: FixationDataset) -> np.ndarray:
    """Leave-one-image-out log-likelihood of every fixation of ``dataset`` under the center bias with
    ``model``'s parameters, refitted on the other images of ``dataset``: float32 (F,), nats vs uniform."""
    objective = _CenterBiasObjective(dataset, model.histogram.shape[0])
    params = jnp.array([math.log(model.bandwidth), _logit(model.uniform_weight)], jnp.float32)
    return np.asarray(objective(params))


def _logit(p: float) -> float:
    p = min(max(p, 1e-30), 1 - 1e-7)
    return math.log(p) - math.log1p(-p)


# ------------------------------------------------------------------------------------------- gold standard


@dataclasses.dataclass(frozen=True)
class GoldStandard:
    """Leave-one-observer-out kernel density mixed with center bias and uniform.

    Attributes:
      bandwidth: kernel std as a fraction of image height (y) and width (x).
      weights: (kde, center_bias, uniform) mixing weights, summing to 1.
      center_bias: the center bias in the mixture.
      train_log_likelihood: leave-one-observer-out log-likelihood at the fit, bits/fixation vs uniform
        (center bias term leave-one-image-out).
    """

    bandwidth: float
    weights: tuple[float, float, float]
    center_bias: CenterBias
    train_log_likelihood: float = float("nan")

    @classmethod
    def fit(cls, dataset: FixationDataset, center_bias: CenterBias | None = None) -> "GoldStandard":
        """Fits bandwidth and weights by leave-one-observer-out likelihood on ``dataset``.

        ``center_bias`` (default: fitted on ``dataset``) enters leave-one-image-out.
        """
        center_bias = center_bias or CenterBias.fit(dataset)
        cb_ll = center_bias_loo_log_likelihoods(center_bias, dataset)
        objective = _GoldStandardObjective(dataset, cb_ll)
        x = _minimize(lambda p: -jnp.mean(objective(p)), np.array([math.log(0.02), 2.0, 0.0, -3.0]),
                      bounds=[(math.log(1e-3), math.log(1.0))] + [(-40.0, 40.0)] * 3)
        ll = float(np.mean(objective(jnp.asarray(x, jnp.float32)))) / LN2
        weights = tuple(float(t) for t in jax.nn.softmax(jnp.asarray(x[1:])))
        return cls(float(np.exp(x[0])), weights, center_bias, ll)

    def log_likelihoods(self, dataset: FixationDataset) -> np.ndarray:
        """Leave-one-observer-out log-likelihood of every fixation: float32 (F,), nats vs uniform."""
        cb_ll = center_bias_loo_log_likelihoods(self.center_bias, dataset)
        params = jnp.asarray([math.log(self.bandwidth)] + [math.log(max(w, 1e-30)) for w in self.weights],
                             jnp.float32)
        return np.asarray(_GoldStandardObjective(dataset, cb_ll)(params))

    def log_density(self, shape: tuple[int, int], xs: np.ndarray, ys: np.ndarray,
                    center_bias_log_density: jax.Array | None = None) -> jax.Array:
        """float32 (H, W) log density (nats) for an image of ``shape`` given the other observers'
        fixations ``xs, ys`` (pixels, (n,)); center bias map defaults to ``self.center_bias``'s."""
        if center_bias_log_density is None:
            center_bias_log_density = self.center_bias.log_density(shape)
        return _gold_map(jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32),
                         jnp.float32(self.bandwidth), jnp.asarray(self.weights, jnp.float32),
                         center_bias_log_density)


@jax.jit
def _gold_map(xs, ys, bw, weights, cb):
    h, w = cb.shape
    gy = _gauss_matrix((jnp.arange(h, dtype=jnp.float32) + 0.5) / h, ys / h, bw)  # (H, n)
    gx = _gauss_matrix((jnp.arange(w, dtype=jnp.float32) + 0.5) / w, xs / w, bw)  # (W, n)
    k = gy @ gx.T
    total = jnp.sum(k)
    kde_weight = jnp.where(total > 0, weights[0], 0.0)
    cb_weight = jnp.where(total > 0, weights[1], weights[0] + weights[1])
    p = kde_weight * k / jnp.where(total > 0, total, 1.0) + cb_weight * jnp.exp(cb) + weights[2] / (h * w)
    return jnp.log(p)


class _GoldStandardObjective:
    """Leave-one-observer-out log-likelihood (nats vs uniform, (F,)) of params
    (log bw, three mixing logits)."""

    def __init__(self, dataset: FixationDataset, cb_ll: np.ndarray):
        u, v = normalised_positions(dataset)
        ue, ve = pixel_centres(dataset)
        f = dataset.fixations
        mask, cols, (self.rows, self.slots) = _padded_by_image(
            f.image_index, len(dataset), u, v, ue, ve, f.subject, cb_ll.astype(np.float32))
        self.arrays = tuple(jnp.asarray(a) for a in (mask, *cols))
        self._fn = jax.jit(self._ll)

    def __call__(self, params):
        return self._fn(params, *self.arrays)[self.rows, self.slots]

    @staticmethod
    def _ll(params, mask, u, v, ue, ve, subject, cb_ll):
        bw = jnp.exp(params[0])
        log_w = jax.nn.log_softmax(params[1:])

        def per_image(args):
            m, u, v, ue, ve, s, cb = args
            others = m[None, :] & (s[:, None] != s[None, :])  # (eval, kernel)
            d2 = jnp.square(ue[:, None] - u[None, :]) + jnp.square(ve[:, None] - v[None, :])
            log_k = jax.nn.logsumexp(jnp.where(others, -d2 / (2 * bw * bw), -jnp.inf), axis=1)
            z = jnp.sum(jnp.where(others, (_mass(u, bw) * _mass(v, bw))[None, :], 0.0), axis=1)
            has = z > 0
            log_q = jnp.where(has, log_k - jnp.log(jnp.where(has, 2 * jnp.pi * bw * bw * z, 1.0)), 0.0)
            kde = jnp.where(has, log_w[0] + log_q, -jnp.inf)
            cbw = jnp.where(has, log_w[1], jnp.logaddexp(log_w[0], log_w[1]))
            return jax.nn.logsumexp(jnp.stack([kde, cbw + cb, jnp.broadcast_to(log_w[2], cb.shape)]), axis=0)

        return jax.lax.map(per_image, (mask, u, v, ue, ve, subject, cb_ll), batch_size=32)
