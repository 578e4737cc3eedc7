"""DeepGaze III: the density of the next fixation given the image and the last fixations, as pure functions.

Kümmerer, Bethge and Wallis, Journal of Vision 22(5):7, 2022. The frozen backbone's features feed a
spatial priority network (the DeepGaze IIE saliency network: layer norm, 1x1 convs 8-16-1, softplus);
a scanpath network encodes the last ``history`` fixations; a fixation selection network combines
both; the DeepGaze finalizer (blur, center bias, normalisation) makes a log density of it.

A history is ``(..., K, 2)`` float pixel coordinates ``(x, y)`` of the stored image, entry 0 the most
recent fixation, NaN rows for fixations that do not exist (the start of a scanpath). Per history
entry the scanpath network reads three maps on the readout grid: the signed x offset, the signed y
offset and the Euclidean distance (image pixels) of the image pixel that each readout cell reads
under nearest-neighbour resizing (PyTorch's rule). Each entry has its own 1x1 conv (3 -> 128, with
bias); a missing entry contributes nothing, bias included, as in the reference. A history with no
fixation at all (the first fixation of a scanpath without a forced start; the reference does not
support it) skips the scanpath branch of the selection network, as the reference's spatial model
does: the prediction is the static one of the same parameters.

Head parameters (all trainable; the backbone's stay frozen as in :mod:`deepgaze_jax.model`)::

    {"saliency":  {"conv0": {"norm_scale", "norm_shift", "kernel" (1,1,C,8), "bias"}, "conv1", "conv2"},
     "scanpath":  {"encoding": {"kernel" (K, 3, 128), "bias" (K, 128)},
                   "conv1": {"norm_scale" (128,), "norm_shift", "kernel" (128, 16), "bias" (16,)}},
     "selection": {"conv0": {"priority_norm_scale" (1,), "priority_norm_shift", "priority_kernel" (1, 128),
                             ["scanpath_norm_scale" (16,), "scanpath_norm_shift", "scanpath_kernel" (16, 128)],
                             "bias" (128,)},
                   "conv1": {"norm_scale" (128,), "norm_shift", "kernel" (128, 16), "bias" (16,)},
                   "conv2": {"kernel" (16, 1)}},
     "finalizer": {"sigma", "center_bias_weight"}}

``history=0`` is the spatial model of the reference's first training phase (no scanpath network; the
selection network sees the priority map alone); it has the interface of a static
:class:`~deepgaze_jax.model.DeepGaze` (``log_density_at(head, features, centerbias, xs, ys)``), so
:func:`deepgaze_jax.train.fit` trains it as it trains DeepGaze II.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import model as model_lib
from deepgaze_jax.finalizer import saliency_grid, upsample_to_image, values_at
from deepgaze_jax.resize import nearest_indices, resize_nearest

Params = dict
HIGHEST = jax.lax.Precision.HIGHEST
LAYER_NORM_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class DeepGazeIII:
    """A DeepGaze III model description (hashable; all fields static).

    Attributes:
      spatial: the static part: backbone, layers, grid factors, finalizer constants and the saliency
        network (a :class:`~deepgaze_jax.model.DeepGaze` with ``readout_kind="iie"``).
      history: how many previous fixations are read (the reference: 4); 0 for the spatial phase.
      scanpath_channels: output channels of the scanpath network's two layers.
      selection_channels: output channels of the fixation selection network's layers (ends in 1).
    """

    spatial: model_lib.DeepGaze
    history: int = 4
    scanpath_channels: tuple[int, int] = (128, 16)
    selection_channels: tuple[int, int, int] = (128, 16, 1)

    def __post_init__(self):
        if self.spatial.readout_kind != "iie":
            raise ValueError("DeepGaze III's saliency network is the iie readout; got "
                             f"readout_kind={self.spatial.readout_kind!r}")
        if self.history < 0:
            raise ValueError(f"history must be >= 0, got {self.history}")
        if len(self.selection_channels) != 3 or self.selection_channels[-1] != 1:
            raise ValueError(f"selection_channels must be 3 layers ending in 1, got {self.selection_channels}")

    # --- what it shares with the static model ---------------------------------------------------

    @property
    def dtype(self) -> str:
        return self.spatial.dtype

    @property
    def backbone(self) -> str:
        return self.spatial.backbone

    @property
    def feature_channels(self) -> int:
        return self.spatial.feature_channels

    def readout_shape(self, height: int, width: int) -> tuple[int, int]:
        return self.spatial.readout_shape(height, width)

    def features(self, backbone_params: Params, images: jax.Array) -> jax.Array:
        """The backbone features, ``(B, h, w, C)``: those of :attr:`spatial` (the same cache)."""
        return self.spatial.features(backbone_params, images)

    def with_history(self, history: int) -> DeepGazeIII:
        return dataclasses.replace(self, history=history)

    # --- parameters -----------------------------------------------------------------------------

    def init_head(self, rng: jax.Array) -> Params:
        """Random head: convs uniform +-1/sqrt(fan_in) (PyTorch's default), layer norms identity,
        bias layers zero, finalizer at its initial values (the reference's initialisation)."""
        rng_spatial, rng = jax.random.split(rng)
        spatial = self.spatial.init_head(rng_spatial)
        keys = iter(jax.random.split(rng, 8))
        c_scan, c_scan_out = self.scanpath_channels
        c0, c1, _ = self.selection_channels

        def uniform(shape, fan_in):
            bound = 1.0 / math.sqrt(fan_in)
            return jax.random.uniform(next(keys), shape, jnp.float32, -bound, bound)

        def normed(fan_in, out):
            return {"norm_scale": jnp.ones((fan_in,), jnp.float32), "norm_shift": jnp.zeros((fan_in,), jnp.float32),
                    "kernel": uniform((fan_in, out), fan_in), "bias": jnp.zeros((out,), jnp.float32)}

        selection0 = {"priority_norm_scale": jnp.ones((1,), jnp.float32),
                      "priority_norm_shift": jnp.zeros((1,), jnp.float32),
                      "priority_kernel": uniform((1, c0), 1),  # its own conv in the reference: fan-in 1
                      "bias": jnp.zeros((c0,), jnp.float32)}
        head = {"saliency": spatial["readout"], "finalizer": spatial["finalizer"],
                "selection": {"conv0": selection0, "conv1": normed(c0, c1), "conv2": {"kernel": uniform((c1, 1), c1)}}}
        if self.history:
            selection0.update(scanpath_norm_scale=jnp.ones((c_scan_out,), jnp.float32),
                              scanpath_norm_shift=jnp.zeros((c_scan_out,), jnp.float32),
                              scanpath_kernel=uniform((c_scan_out, c0), c_scan_out))
            head["scanpath"] = {
                "encoding": {"kernel": uniform((self.history, 3, c_scan), 3),
                             "bias": uniform((self.history, c_scan), 3)},
                "conv1": normed(c_scan, c_scan_out),
            }
        return head

    def extend_head(self, spatial_head: Params, rng: jax.Array) -> Params:
        """A head of this (scanpath) model that starts from a trained spatial head (``history=0``):
        its saliency, selection and finalizer parameters kept, the scanpath parts new from ``rng``."""
        if not self.history:
            raise ValueError("extend_head needs a model with history > 0")
        out = self.init_head(rng)
        out["saliency"], out["finalizer"] = spatial_head["saliency"], spatial_head["finalizer"]
        out["selection"]["conv1"], out["selection"]["conv2"] = (spatial_head["selection"]["conv1"],
                                                                spatial_head["selection"]["conv2"])
        for key in ("priority_norm_scale", "priority_norm_shift", "priority_kernel", "bias"):
            out["selection"]["conv0"][key] = spatial_head["selection"]["conv0"][key]
        return out

    # --- forward --------------------------------------------------------------------------------

    def _readout_features(self, features: jax.Array, shape: tuple[int, int]) -> jax.Array:
        grid = self.readout_shape(*shape)
        return features if features.shape[1:3] == grid else resize_nearest(features, grid)

    def priority(self, head: Params, features: jax.Array, shape: tuple[int, int]) -> jax.Array:
        """The spatial priority network: ``(B, h', w', C)`` features -> ``(B, h, w)`` on the readout
        grid of ``(H, W) = shape`` images."""
        return self.spatial.readout({"readout": head["saliency"]}, self._readout_features(features, shape))

    def encode_history(self, history: jax.Array, shape: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
        """``(..., K, 2)`` fixations -> ``(..., K, h, w, 3)`` offset maps on the readout grid (x offset, y
        offset, distance; image pixels; zero for missing entries) and the ``(..., K)`` validity mask."""
        h, w = self.readout_shape(*shape)
        rows = jnp.asarray(nearest_indices(shape[0], h), jnp.float32)
        cols = jnp.asarray(nearest_indices(shape[1], w), jnp.float32)
        valid = ~jnp.isnan(history[..., 0])
        hist = jnp.where(valid[..., None], history, 0.0)
        lead = hist.shape[:-1]
        ones = (1,) * len(lead)
        dx = cols.reshape(ones + (1, w)) - hist[..., 0].reshape(lead + (1, 1))
        dy = rows.reshape(ones + (h, 1)) - hist[..., 1].reshape(lead + (1, 1))
        dx, dy = jnp.broadcast_to(dx, lead + (h, w)), jnp.broadcast_to(dy, lead + (h, w))
        maps = jnp.stack([dx, dy, jnp.sqrt(dx * dx + dy * dy)], axis=-1)
        return maps, valid

    def scanpath_features(self, head: Params, history: jax.Array, shape: tuple[int, int]) -> jax.Array:
        """The scanpath network: ``(..., K, 2)`` histories -> ``(..., h, w, 16)``."""
        params = head["scanpath"]
        maps, valid = self.encode_history(history, shape)  # (..., K, h, w, 3), (..., K)
        enc = params["encoding"]
        k = self.history
        # The K per-entry convs summed over the valid entries are one conv of the 3K masked maps with the
        # stacked kernels, plus the valid entries' biases: no (..., K, h, w, 128) intermediate.
        masked = jnp.where(valid[..., None, None, None], maps, 0.0)
        masked = jnp.moveaxis(masked, -4, -2)  # (..., h, w, K, 3)
        masked = masked.reshape(masked.shape[:-2] + (3 * k,))
        x = jnp.einsum("...c,cd->...d", masked, enc["kernel"].reshape(3 * k, -1), precision=HIGHEST)
        bias = jnp.einsum("...k,kd->...d", valid.astype(x.dtype), enc["bias"], precision=HIGHEST)
        x = jax.nn.softplus(x + bias[..., None, None, :])
        return _norm_conv_softplus(x, params["conv1"])

    def selection(self, head: Params, priority: jax.Array, scanpath: jax.Array | None,
                  any_valid: jax.Array | None = None) -> jax.Array:
        """The fixation selection network: ``(B, h, w)`` priority and ``(B, N, h, w, 16)`` scanpath
        features (None for the spatial model) -> ``(B, N, h, w)`` (``(B, 1, h, w)`` without).
        ``any_valid``: ``(B, N)`` whether the history has a fixation (where not, the scanpath branch
        is left out)."""
        p = head["selection"]
        conv0 = p["conv0"]
        prio = _layer_norm(priority[..., None], conv0["priority_norm_scale"], conv0["priority_norm_shift"])
        x = jnp.einsum("bhwc,cd->bhwd", prio, conv0["priority_kernel"], precision=HIGHEST)[:, None]
        if scanpath is not None:
            scan = _layer_norm(scanpath, conv0["scanpath_norm_scale"], conv0["scanpath_norm_shift"])
            scan = jnp.einsum("bnhwc,cd->bnhwd", scan, conv0["scanpath_kernel"], precision=HIGHEST)
            # An empty history gives constant scanpath maps, whose layer norm has a 1e6-scaled gradient.
            x = x + jnp.where(any_valid[..., None, None, None], scan, 0.0)
        x = jax.nn.softplus(x + _last(conv0["bias"], x.ndim))
        x = _norm_conv_softplus(x, p["conv1"])
        return jnp.einsum("bnhwc,cd->bnhwd", x, p["conv2"]["kernel"], precision=HIGHEST)[..., 0]

    def readout(self, head: Params, features: jax.Array) -> jax.Array:
        """The spatial model's map before the finalizer, ``(B, h, w)`` (for the dead-readout check of
        :func:`deepgaze_jax.train.fit`; features at the readout grid)."""
        shape = tuple(d * self.spatial.downsample * self.spatial.readout_factor for d in features.shape[1:3])
        return self.selection(head, self.priority(head, features, shape), None)[:, 0]

    def grid(self, head: Params, features: jax.Array, centerbias: jax.Array,
             history: jax.Array | None) -> jax.Array:
        """``(B, N, H/f, W/f)`` log densities on the saliency grid for ``(B, N, K, 2)`` histories
        (N = 1 without): :meth:`head` before its nearest upsampling to ``(H, W)`` (the cheap form to mix
        ensembles, score fixations and sample on)."""
        shape = centerbias.shape[-2:]
        priority = self.priority(head, features, shape)
        scanpath = None
        if self.history:
            if history is None:
                raise ValueError(f"this DeepGaze III reads the last {self.history} fixations; pass a history")
            if history.shape[-2] != self.history or history.shape[-1] != 2:
                raise ValueError(f"history must have shape (..., {self.history}, 2), got {tuple(history.shape)}")
            scanpath = self.scanpath_features(head, history, shape)
        any_valid = None if history is None else (~jnp.isnan(history[..., 0])).any(axis=-1)
        readout = self.selection(head, priority, scanpath, any_valid)
        b, n = readout.shape[:2]
        cb = jnp.broadcast_to(centerbias[:, None], (b, n) + shape).reshape((b * n,) + shape)
        fin = head["finalizer"]
        grid = saliency_grid(readout.reshape((b * n,) + readout.shape[2:]), cb.astype(jnp.float32), fin["sigma"],
                             fin["center_bias_weight"], self.spatial.saliency_map_factor,
                             self.spatial.max_blur_radius)
        return grid.reshape((b, n) + grid.shape[1:])

    @functools.partial(jax.jit, static_argnums=0)
    def head(self, head_params: Params, features: jax.Array, centerbias: jax.Array,
             history: jax.Array | None = None) -> jax.Array:
        """Log density of the next fixation, nats.

        Args:
          features: ``(B, h, w, C)`` backbone features of B images (:meth:`features`), once per image.
          centerbias: ``(B, H, W)`` center-bias log densities, nats.
          history: ``(B, N, K, 2)`` N histories per image (NaN rows: missing); None for ``history=0``.

        Returns:
          ``(B, N, H, W)`` log densities (``(B, H, W)`` for the spatial model), logsumexp over pixels 0.
        """
        grid = self.grid(head_params, features, centerbias, history)
        out = upsample_to_image(grid, centerbias.shape[-2:])
        return out[:, 0] if history is None else out

    @functools.partial(jax.jit, static_argnums=0)
    def log_density_at(self, head_params: Params, features: jax.Array, centerbias: jax.Array,
                       xs: jax.Array, ys: jax.Array, history: jax.Array | None = None) -> jax.Array:
        """``(B, N)`` log density (nats) of fixation ``(xs[b, n], ys[b, n])`` given ``history[b, n]``
        (``(B, N, K, 2)``), without building full-size maps (the training path). Without a history
        (the spatial model) every fixation of an image is scored on its one static map."""
        grid = self.grid(head_params, features, centerbias, history)
        shape = centerbias.shape[-2:]
        if history is None:
            return values_at(grid[:, 0], shape, xs, ys)
        b, n = xs.shape
        flat = grid.reshape((b * n,) + grid.shape[2:])
        return values_at(flat, shape, xs.reshape(b * n, 1), ys.reshape(b * n, 1)).reshape(b, n)

    @functools.partial(jax.jit, static_argnums=0)
    def apply(self, params: Params, images: jax.Array, centerbias: jax.Array,
              history: jax.Array | None = None) -> jax.Array:
        """Images to log densities: ``(B, H, W, 3)`` RGB 0..255, ``(B, H, W)`` center bias and
        ``(B, N, K, 2)`` histories -> ``(B, N, H, W)`` nats (see :meth:`head`); the backbone runs once
        per image, whatever N."""
        return self.head(params["head"], self.features(params["backbone"], images), centerbias, history)


def _layer_norm(x: jax.Array, scale: jax.Array, shift: jax.Array) -> jax.Array:
    """The reference's layer norm: statistics over ``(h, w, C)`` of each map (the last three axes),
    eps 1e-12, per-channel scale and shift."""
    mean = x.mean(axis=(-3, -2, -1), keepdims=True)
    var = jnp.square(x - mean).mean(axis=(-3, -2, -1), keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS) * _last(scale, x.ndim) + _last(shift, x.ndim)


def _last(v: jax.Array, ndim: int) -> jax.Array:
    """``v`` with leading unit axes up to ``ndim`` (explicit broadcasting against ``(..., C)`` maps)."""
    return v.reshape((1,) * (ndim - v.ndim) + v.shape)


def _norm_conv_softplus(x: jax.Array, p: Params) -> jax.Array:
    """Layer norm, 1x1 conv (no bias), bias layer, softplus on ``(..., h, w, C)`` maps."""
    x = _layer_norm(x, p["norm_scale"], p["norm_shift"])
    x = jnp.einsum("...c,cd->...d", x, p["kernel"], precision=HIGHEST)
    return jax.nn.softplus(x + _last(p["bias"], x.ndim))


def deepgaze3(backbone: str = "vgg16", history: int = 4, dtype: str = "float32") -> DeepGazeIII:
    """DeepGaze III on this project's backbones: the features of DeepGaze II (VGG block 5, 2560
    channels), its grid (readout on ``H / 32``, the feature cache of DeepGaze II) and the
    reference DeepGaze III's finalizer grid (``saliency_map_factor`` 4)."""
    spatial = dataclasses.replace(model_lib.deepgaze2(backbone, dtype=dtype, readout="iie"), saliency_map_factor=4)
    return DeepGazeIII(spatial, history=history)


def check_history(history: np.ndarray, shape: tuple[int, int], max_fixations: int) -> np.ndarray:
    """A user's history as ``(K, 2)`` float32 (K = ``max_fixations``; most recent first, NaN-padded).

    ``history``: ``(n, 2)`` fixations in the order they were made (oldest first), pixels of an
    ``(H, W) = shape`` image. Raises ValueError naming the problem: NaN or infinite values, a
    fixation outside the image, more than ``max_fixations`` fixations, a wrong shape.
    """
    history = np.asarray(history, np.float64)
    if history.ndim != 2 or history.shape[1] != 2:
        raise ValueError(f"a history is (n, 2) fixations (x, y); got shape {history.shape}")
    if len(history) > max_fixations:
        raise ValueError(f"the history has {len(history)} fixations; this model reads at most {max_fixations}")
    if not np.isfinite(history).all():
        bad = int(np.flatnonzero(~np.isfinite(history).all(axis=1))[0])
        raise ValueError(f"history fixation {bad} is not finite: {tuple(history[bad].tolist())}")
    h, w = shape
    outside = (history[:, 0] < 0) | (history[:, 0] >= w) | (history[:, 1] < 0) | (history[:, 1] >= h)
    if outside.any():
        bad = int(np.flatnonzero(outside)[0])
        raise ValueError(f"history fixation {bad} at (x, y) = {tuple(history[bad].tolist())} lies outside the "
                         f"{w}x{h} image")
    out = np.full((max_fixations, 2), np.nan, np.float32)
    out[: len(history)] = history[::-1]
    return out
