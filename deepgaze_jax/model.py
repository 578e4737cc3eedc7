"""DeepGaze I and II: frozen backbone -> 1x1 readout -> finalizer, as pure functions.

A model is a frozen, hashable :class:`DeepGaze` description; its parameters are a plain dict

    {"backbone": {conv_name: {"kernel", "bias"}},          # frozen, never differentiated
     "head": {"readout": {"conv0": {"kernel": (1, 1, C, c0), ["bias": (c0,)]}, ...},
              "finalizer": {"sigma": (), "center_bias_weight": ()}}}

``apply(params, images, centerbias)`` maps ``(B, H, W, 3)`` RGB images (0..255) and ``(B, H, W)``
center-bias log densities to ``(B, H, W)`` log densities in nats. It is split into
``features(backbone_params, images)`` (the expensive, cacheable part) and
``head(head_params, features, centerbias)`` (the trainable part).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import backbones, winograd
from deepgaze_jax.finalizer import saliency_grid, upsample_to_image, values_at
from deepgaze_jax.resize import downscale_nearest, resize_nearest

Params = dict
READOUT_KINDS = ("deepgaze2", "iie")


@dataclasses.dataclass(frozen=True)
class DeepGaze:
    """A DeepGaze model description (hashable; all fields static).

    Attributes:
      backbone: ``"alexnet"``, ``"vgg16"`` or ``"vgg19"``.
      layers: backbone layers fed to the readout, concatenated on channels in this order.
      readout_channels: output channels of the 1x1 conv layers.
      readout_bias: whether the readout convs have a bias.
      readout_kind: ``"deepgaze2"``: 1x1 convs with ReLU between them, not after the last (DeepGaze I
        and II); ``"iie"``: the saliency network of DeepGaze IIE / III, every layer a layer norm over
        ``(h, w, C)`` of each image (per-channel scale and shift, eps 1e-12), a 1x1 conv, a bias and a
        softplus (the convs' own ``readout_bias`` must be False: the bias is a layer of its own).
      downsample: the image is shrunk by this factor (nearest) before the backbone.
      readout_factor: features are resized to ``ceil(H / downsample / readout_factor)`` (and W).
      saliency_map_factor: blur and center bias act on the image grid shrunk by this factor.
      initial_sigma: initial blur sigma, pixels of the saliency-map grid.
      initial_center_bias_weight: initial weight of the center bias.
      max_blur_radius: static bound of the blur kernel radius (sigma is clipped to a third of it).
      ceil_mode: max pools round up (the reference's VGG-19 setting).
      dtype: backbone computation dtype (``"float32"`` or ``"bfloat16"``).
      conv_impl: how the backbone convolves (:mod:`deepgaze_jax.winograd`): ``"xla"``, ``"winograd2"``,
        ``"winograd4"`` or ``"auto"``; the same function up to float rounding.
    """

    backbone: str
    layers: tuple[str, ...]
    readout_channels: tuple[int, ...]
    readout_bias: bool
    downsample: int = 2
    readout_factor: int = 16
    saliency_map_factor: int = 2
    initial_sigma: float = 8.0
    initial_center_bias_weight: float = 1.0
    max_blur_radius: int = 96
    ceil_mode: bool = False
    dtype: str = "float32"
    readout_kind: str = "deepgaze2"
    conv_impl: str = "xla"

    def __post_init__(self):
        winograd.check_impl(self.conv_impl)
        if self.readout_kind not in READOUT_KINDS:
            raise ValueError(f"readout_kind must be one of {READOUT_KINDS}, got {self.readout_kind!r}")
        if self.readout_kind == "iie" and self.readout_bias:
            raise ValueError("the iie readout has a bias layer of its own; readout_bias must be False")
        backbones.check_layers(self.backbone, self.layers)
        if not self.readout_channels or self.readout_channels[-1] != 1:
            raise ValueError(f"the readout must end in 1 channel, got {self.readout_channels}")

    # --- parameters -------------------------------------------------------------------------

    @property
    def feature_channels(self) -> int:
        """Channels of the concatenated feature stack fed to the readout."""
        widths = backbones.backbone_widths(self.backbone)
        return sum(widths[layer] for layer in self.layers)

    def init_head(self, rng: jax.Array) -> Params:
        """Random readout (uniform +-1/sqrt(fan_in), as PyTorch's conv default) and initial finalizer."""
        readout = {}
        fan_in = self.feature_channels
        for i, out in enumerate(self.readout_channels):
            rng, key_w, key_b = jax.random.split(rng, 3)
            bound = 1.0 / math.sqrt(fan_in)
            layer = {"kernel": jax.random.uniform(key_w, (1, 1, fan_in, out), jnp.float32, -bound, bound)}
            if self.readout_bias:
                layer["bias"] = jax.random.uniform(key_b, (out,), jnp.float32, -bound, bound)
            if self.readout_kind == "iie":  # layer norm to identity, bias layer zero (the reference's init)
                layer["norm_scale"] = jnp.ones((fan_in,), jnp.float32)
                layer["norm_shift"] = jnp.zeros((fan_in,), jnp.float32)
                layer["bias"] = jnp.zeros((out,), jnp.float32)
            readout[f"conv{i}"] = layer
            fan_in = out
        finalizer = {
            "sigma": jnp.asarray(self.initial_sigma, jnp.float32),
            "center_bias_weight": jnp.asarray(self.initial_center_bias_weight, jnp.float32),
        }
        return {"readout": readout, "finalizer": finalizer}

    def init(self, rng: jax.Array, backbone_params: Params | None = None) -> Params:
        """Full parameters; random (He-normal) backbone weights unless ``backbone_params`` is given."""
        rng_backbone, rng_head = jax.random.split(rng)
        if backbone_params is None:
            backbone_params = backbones.init_backbone(rng_backbone, self.backbone)
        return {"backbone": backbone_params, "head": self.init_head(rng_head)}

    # --- forward ----------------------------------------------------------------------------

    def readout_shape(self, height: int, width: int) -> tuple[int, int]:
        """The readout grid of an ``(height, width)`` image."""
        return (
            math.ceil(height / self.downsample / self.readout_factor),
            math.ceil(width / self.downsample / self.readout_factor),
        )

    @functools.partial(jax.jit, static_argnums=0)
    def features(self, backbone_params: Params, images: jax.Array) -> jax.Array:
        """``(B, H, W, 3)`` RGB 0..255 -> ``(B, h, w, C)`` backbone features (``dtype``), the cacheable part.

        The requested layers are concatenated on channels at their own resolution when they share
        one (DeepGaze I and II: conv5); the readout grid comes later, in :meth:`head`, since the 1x1
        readout commutes with nearest-neighbour resizing. Layers of different resolutions are resized
        to the readout grid here. The backbone parameters are wrapped in ``stop_gradient``.
        """
        images = _check_images(images)
        net = backbones.Backbone(self.backbone, self.layers, self.ceil_mode, jnp.dtype(self.dtype), self.conv_impl)
        x = downscale_nearest(images, self.downsample)
        named = net.apply({"params": jax.lax.stop_gradient(backbone_params)}, x)  # the backbone once
        outputs = [named[name] for name in self.layers]
        if len({o.shape[1:3] for o in outputs}) > 1:
            shape = self.readout_shape(*images.shape[1:3])
            outputs = [resize_nearest(o, shape) for o in outputs]
        return jnp.concatenate(outputs, axis=-1)

    def readout(self, head_params: Params, features: jax.Array) -> jax.Array:
        """The readout network: ``(B, h, w, C)`` features -> ``(B, h, w)`` float32 map on their grid."""
        x = features.astype(jnp.float32)
        readout = head_params["readout"]
        highest = jax.lax.Precision.HIGHEST
        for i in range(len(self.readout_channels)):
            layer = readout[f"conv{i}"]
            kernel = layer["kernel"][0, 0]  # (in, out)
            if self.readout_kind == "iie":
                # A layer norm over (h, w, C) per image, then the 1x1 conv, folded into one product of the
                # raw input: ((x - m) r s + t) K = r (x (s K)) + (t K - m r (s K)), with m, r the image's
                # mean and 1/std. The normalised copy of the wide first layer's input is never made (2.7x
                # faster train steps on VGG-16's 2560 channels: experiments/readout_step_speed.py).
                mean = x.mean(axis=(1, 2, 3), keepdims=True)
                inv = jax.lax.rsqrt(jnp.square(x - mean).mean(axis=(1, 2, 3), keepdims=True) + 1e-12)
                scaled = layer["norm_scale"][:, None] * kernel
                offset = (_channels(jnp.einsum("c,cd->d", layer["norm_shift"], kernel, precision=highest))
                          - mean * inv * _channels(scaled.sum(axis=0)))
            else:
                scaled, inv, offset = kernel, None, None
            # The kernel enters as its (out, in) transpose behind a barrier: the gradient of the wide
            # first layer is then the dot (out, in) = g^T x, which XLA:CPU computes ~5x faster than
            # the (in, out) form it would otherwise fold the transpose into.
            kernel_t = jax.lax.optimization_barrier(scaled.T)
            x = jnp.einsum("bhwc,dc->bhwd", x, kernel_t, precision=highest)
            if inv is not None:
                x = x * inv + offset
            if "bias" in layer:
                x = x + _channels(layer["bias"])
            if self.readout_kind == "iie":
                x = jax.nn.softplus(x)
            elif i < len(self.readout_channels) - 1:
                x = jax.nn.relu(x)
        return x[..., 0]

    def _grid(self, head_params: Params, features: jax.Array, centerbias: jax.Array) -> jax.Array:
        fin = head_params["finalizer"]
        shape = self.readout_shape(*centerbias.shape[-2:])
        if self.readout_kind == "iie" and features.shape[1:3] != shape:
            # Its layer norm takes statistics over the grid, so it does not commute with the resize.
            features = resize_nearest(features, shape)
        return saliency_grid(
            self.readout(head_params, features),
            centerbias.astype(jnp.float32),
            fin["sigma"],
            fin["center_bias_weight"],
            self.saliency_map_factor,
            self.max_blur_radius,
            readout_shape=self.readout_shape(*centerbias.shape[-2:]),
        )

    @functools.partial(jax.jit, static_argnums=0)
    def head(self, head_params: Params, features: jax.Array, centerbias: jax.Array) -> jax.Array:
        """Readout and finalizer: ``(B, h, w, C)`` features from :meth:`features` and a ``(B, H, W)``
        center bias (nats) -> ``(B, H, W)`` log density (nats)."""
        return upsample_to_image(self._grid(head_params, features, centerbias), centerbias.shape[-2:])

    @functools.partial(jax.jit, static_argnums=0)
    def log_density_at(self, head_params: Params, features: jax.Array, centerbias: jax.Array,
                       xs: jax.Array, ys: jax.Array) -> jax.Array:
        """``head(...)[b, int(ys[b, n]), int(xs[b, n])]`` as ``(B, N)`` nats, without building the
        full-size map (the training path). ``xs``, ``ys``: ``(B, N)`` pixel coordinates."""
        grid = self._grid(head_params, features, centerbias)
        return values_at(grid, centerbias.shape[-2:], xs, ys)

    @functools.partial(jax.jit, static_argnums=0)
    def apply(self, params: Params, images: jax.Array, centerbias: jax.Array) -> jax.Array:
        """Log density of fixations.

        Args:
          params: ``{"backbone": ..., "head": ...}``.
          images: ``(B, H, W, 3)`` or ``(H, W, 3)`` RGB, values 0..255 (uint8 or float).
          centerbias: ``(B, H, W)`` or ``(H, W)`` center-bias log density, nats.

        Returns:
          ``(B, H, W)`` (or ``(H, W)``) log density in nats, logsumexp over pixels 0.
        """
        single = images.ndim == 3
        if single:
            images, centerbias = images[None], centerbias[None]
        _check_centerbias(images, centerbias)
        out = self.head(params["head"], self.features(params["backbone"], images), centerbias)
        return out[0] if single else out

    @functools.partial(jax.jit, static_argnums=0)
    def apply_ensemble(self, backbone_params: Params, heads: Params, images: jax.Array,
                       centerbias: jax.Array) -> jax.Array:
        """Mixture of ``K`` heads on one backbone, averaged in probability space.

        ``heads`` is a head pytree whose leaves carry a leading axis of size ``K``; the features are
        computed once. Shapes as :meth:`apply` (batched only).
        """
        _check_centerbias(images, centerbias)
        return self.head_ensemble(heads, self.features(backbone_params, images), centerbias)

    @functools.partial(jax.jit, static_argnums=0)
    def head_ensemble(self, heads: Params, features: jax.Array, centerbias: jax.Array) -> jax.Array:
        """:meth:`head` of ``K`` stacked heads (leading axis ``K`` on every leaf), averaged in probability
        space: ``(B, h, w, C)`` features and ``(B, H, W)`` center bias -> ``(B, H, W)`` log density (nats)."""
        # Mixed on the saliency grid, then upsampled once: the nearest-neighbour upsampling is a gather,
        # so it commutes with the mixture (each member's grid is already normalised for the image).
        grids = jax.vmap(self._grid, in_axes=(0, None, None))(heads, features, centerbias)
        return upsample_to_image(mixture(grids), centerbias.shape[-2:])


def _channels(vector: jax.Array) -> jax.Array:
    """A ``(C,)`` per-channel vector as ``(1, 1, 1, C)``, to broadcast against NHWC maps explicitly."""
    return vector.reshape(1, 1, 1, -1)


def mixture(log_densities: jax.Array) -> jax.Array:
    """Average ``(K, ...)`` log densities in probability space: ``logsumexp_k - log K``."""
    return jax.nn.logsumexp(log_densities, axis=0) - jnp.log(log_densities.shape[0])


def deepgaze1(dtype: str = "float32") -> DeepGaze:
    """DeepGaze I: AlexNet ``conv5`` (before its ReLU), linear readout without bias.

    Constants as the reference: downsample 2, readout_factor 4, saliency_map_factor 4.
    """
    return DeepGaze(
        backbone="alexnet",
        layers=("conv5",),
        readout_channels=(1,),
        readout_bias=False,
        downsample=2,
        readout_factor=4,
        saliency_map_factor=4,
        dtype=dtype,
    )


DEEPGAZE2_LAYERS = {
    "vgg19": ("conv5_1", "relu5_1", "relu5_2", "conv5_3", "relu5_4"),
    # VGG-16 has no conv5_4: the last ReLU of block 5 (relu5_3) takes the place of relu5_4.
    "vgg16": ("conv5_1", "relu5_1", "relu5_2", "conv5_3", "relu5_3"),
}


# Block 4's last convolution and its ReLU (48x64 maps for a 768x1024 image, resized to block 5's grid):
# an addition of this project, not the paper's (see experiments/results/deepgaze2_vgg16_training_trials.md).
BLOCK4_LAYERS = ("conv4_3", "relu4_3")


def deepgaze2(backbone: str = "vgg19", dtype: str = "float32", extra_layers: tuple[str, ...] = (),
              readout: str = "deepgaze2") -> DeepGaze:
    """DeepGaze II: VGG ``conv5_1, relu5_1, relu5_2, conv5_3, relu5_4`` (2560 channels) -> 1x1 convs
    16-32-2-1 with ReLU between -> finalizer. ``readout="iie"``: the DeepGaze IIE / III saliency network
    (layer norm, 1x1 convs 8-16-1, softplus) on the same features instead.

    ``backbone="vgg16"`` uses ``relu5_3`` (the last ReLU of block 5) in place of ``relu5_4``.
    ``extra_layers`` are read after those (e.g. :data:`BLOCK4_LAYERS`; 512 more channels each). Pools use
    ``ceil_mode`` as the reference's VGG-19 wrapper; constants are the reference's DeepGaze II
    defaults (downsample 2, readout_factor 16, saliency_map_factor 2).
    """
    if backbone not in DEEPGAZE2_LAYERS:
        raise ValueError(f"DeepGaze II needs a VGG backbone, one of {sorted(DEEPGAZE2_LAYERS)}; got {backbone!r}")
    return DeepGaze(
        backbone=backbone,
        layers=DEEPGAZE2_LAYERS[backbone] + tuple(extra_layers),
        readout_channels=(16, 32, 2, 1) if readout == "deepgaze2" else (8, 16, 1),
        readout_bias=readout == "deepgaze2",
        readout_kind=readout,
        downsample=2,
        readout_factor=16,
        saliency_map_factor=2,
        ceil_mode=True,
        dtype=dtype,
    )


def _check_images(images: jax.Array) -> jax.Array:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected RGB images of shape (B, H, W, 3), got shape {tuple(images.shape)}")
    if not (jnp.issubdtype(images.dtype, jnp.floating) or images.dtype == jnp.uint8):
        raise ValueError(f"expected uint8 or float images with values 0..255, got dtype {images.dtype}")
    return images.astype(jnp.float32) if images.dtype == jnp.uint8 else images


def _check_centerbias(images: jax.Array, centerbias: jax.Array) -> None:
    if centerbias.shape != images.shape[:3]:
        raise ValueError(
            f"center bias of shape {tuple(centerbias.shape)} does not match images of shape "
            f"{tuple(images.shape)}; expected {tuple(images.shape[:3])}"
        )


def uniform_centerbias(height: int, width: int) -> np.ndarray:
    """A flat ``(height, width)`` log density (nats): no center bias."""
    return np.full((height, width), -np.log(height * width), np.float32)
