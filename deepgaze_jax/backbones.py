"""Frozen ImageNet backbones (torchvision AlexNet, VGG-16, VGG-19 feature stacks) as Flax modules.

Inputs are NHWC RGB images with values in 0..255; the ImageNet normalisation happens inside. Each
module returns a dict of the requested named intermediate layers, NHWC. Conv layers are named
``conv1`` .. ``conv5`` (AlexNet) or ``convB_L`` (VGG) and give the output *before* the ReLU; the
ReLU outputs are ``reluN`` / ``reluB_L`` and the pools ``poolN`` / ``poolB``.

Parameters are ``{conv_name: {"kernel": (kh, kw, in, out), "bias": (out,)}}`` (HWIO); a 3x3 layer
may also hold its Winograd-transformed kernel, ``"winograd2"`` / ``"winograd4"``
(:func:`deepgaze_jax.winograd.transform_params`, computed once for a frozen backbone).

How each convolution is computed (``conv_impl``): ``"xla"`` (XLA's convolution), ``"winograd2"`` /
``"winograd4"`` (every 3x3 stride-1 layer as Winograd F(2x2, 3x3) / F(4x4, 3x3), the others by XLA), or
``"auto"`` (per layer, the platform's rule in :data:`deepgaze_jax.winograd.AUTO_RULES`, read off
measured per-layer times).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from deepgaze_jax import winograd

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (name, kind, arguments). conv: (out_channels, kernel, stride, padding); pool: (window, stride).
_ALEXNET = (
    ("conv1", "conv", (64, 11, 4, 2)),
    ("relu1", "relu", ()),
    ("pool1", "pool", (3, 2)),
    ("conv2", "conv", (192, 5, 1, 2)),
    ("relu2", "relu", ()),
    ("pool2", "pool", (3, 2)),
    ("conv3", "conv", (384, 3, 1, 1)),
    ("relu3", "relu", ()),
    ("conv4", "conv", (256, 3, 1, 1)),
    ("relu4", "relu", ()),
    ("conv5", "conv", (256, 3, 1, 1)),
    ("relu5", "relu", ()),
    ("pool5", "pool", (3, 2)),
)


def _vgg_layers(block_sizes: Sequence[int]) -> tuple:
    widths = (64, 128, 256, 512, 512)
    layers = []
    for block, (size, width) in enumerate(zip(block_sizes, widths), start=1):
        for conv in range(1, size + 1):
            layers.append((f"conv{block}_{conv}", "conv", (width, 3, 1, 1)))
            layers.append((f"relu{block}_{conv}", "relu", ()))
        layers.append((f"pool{block}", "pool", (2, 2)))
    return tuple(layers)


ARCHITECTURES = {
    "alexnet": _ALEXNET,
    "vgg16": _vgg_layers((2, 2, 3, 3, 3)),
    "vgg19": _vgg_layers((2, 2, 4, 4, 4)),
}


def layer_names(arch: str) -> tuple[str, ...]:
    """All layer names of a backbone, in execution order."""
    return tuple(name for name, _, _ in _architecture(arch))


def conv_names(arch: str) -> tuple[str, ...]:
    """The names of the parameterised (conv) layers of a backbone."""
    return tuple(name for name, kind, _ in _architecture(arch) if kind == "conv")


def _architecture(arch: str) -> tuple:
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown backbone {arch!r}; expected one of {sorted(ARCHITECTURES)}") from None


def check_layers(arch: str, names: Sequence[str]) -> None:
    """Raise a ``ValueError`` naming the layers of ``names`` that backbone ``arch`` does not have."""
    known = layer_names(arch)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"{arch} has no layer(s) {unknown}; available: {list(known)}")


def backbone_widths(arch: str) -> dict[str, int]:
    """Channels of every named layer of a backbone."""
    widths, channels = {}, 3
    for name, kind, args in ARCHITECTURES[arch]:
        if kind == "conv":
            channels = args[0]
        widths[name] = channels
    return widths


def init_backbone(rng: jax.Array, arch: str) -> dict:
    """Random He-normal backbone weights (zero biases), in the parameter layout of the module doc;
    for tests and benchmarks."""
    params, channels = {}, 3
    for name, kind, args in ARCHITECTURES[arch]:
        if kind != "conv":
            continue
        rng, key = jax.random.split(rng)
        out, k = args[0], args[1]
        std = math.sqrt(2.0 / (k * k * channels))
        params[name] = {
            "kernel": std * jax.random.normal(key, (k, k, channels, out), jnp.float32),
            "bias": jnp.zeros((out,), jnp.float32),
        }
        channels = out
    return params


def pool_output_size(size: int, window: int, stride: int, ceil_mode: bool) -> int:
    """Output length of PyTorch's MaxPool2d (padding 0, dilation 1)."""
    span = size - window
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size:
        out -= 1
    return out


def normalize(images: jax.Array) -> jax.Array:
    """ImageNet normalisation of ``(..., 3)`` RGB images with values 0..255."""
    mean = jnp.asarray(IMAGENET_MEAN, images.dtype).reshape((1,) * (images.ndim - 1) + (3,))
    std = jnp.asarray(IMAGENET_STD, images.dtype).reshape((1,) * (images.ndim - 1) + (3,))
    return (images / 255.0 - mean) / std


class Backbone(nn.Module):
    """A torchvision feature stack that returns named intermediate layers.

    Attributes:
      arch: ``"alexnet"``, ``"vgg16"`` or ``"vgg19"``.
      outputs: names of the layers to return (see :func:`layer_names`).
      ceil_mode: max pools round their output size up, as the DeepGaze II reference sets on VGG-19;
        torchvision's default is ``False``.
      dtype: computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32.
      conv_impl: ``"xla"``, ``"winograd2"``, ``"winograd4"`` or ``"auto"`` (module docstring).
    """

    arch: str
    outputs: tuple[str, ...]
    ceil_mode: bool = False
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        """``(B, H, W, 3)`` RGB 0..255 -> ``{name: (B, h, w, C)}`` for each requested layer."""
        layers = _architecture(self.arch)
        check_layers(self.arch, self.outputs)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected images of shape (B, H, W, 3), got {images.shape}")
        last = max(i for i, (name, _, _) in enumerate(layers) if name in self.outputs)

        winograd.check_impl(self.conv_impl)
        x = normalize(images.astype(self.dtype))
        found = {}
        for name, kind, args in layers[: last + 1]:
            if kind == "conv":
                features, kernel, stride, padding = args
                out = [(s + 2 * padding - kernel) // stride + 1 for s in x.shape[1:3]]
                _check_size(self.arch, name, images.shape, out)
                tile = winograd.tile_for(self.conv_impl, kernel, stride, padding, x.shape, jnp.dtype(self.dtype))
                if tile:
                    x = _WinogradConv(features, tile, self.dtype, name=name)(x)
                else:
                    x = nn.Conv(
                        features,
                        (kernel, kernel),
                        strides=(stride, stride),
                        padding=((padding, padding), (padding, padding)),
                        dtype=self.dtype,
                        name=name,
                    )(x)
            elif kind == "relu":
                x = nn.relu(x)
            else:
                window, stride = args
                out = [pool_output_size(s, window, stride, self.ceil_mode) for s in x.shape[1:3]]
                _check_size(self.arch, name, images.shape, out)
                pad = [(0, max(0, (o - 1) * stride + window - s)) for o, s in zip(out, x.shape[1:3])]
                x = nn.max_pool(x, (window, window), strides=(stride, stride), padding=pad)
            if name in self.outputs:
                found[name] = x
        return {name: found[name] for name in self.outputs}


class _WinogradConv(nn.Module):
    """A 3x3 stride-1 padding-1 conv layer with :class:`flax.linen.Conv`'s parameters (``kernel`` HWIO,
    ``bias``), computed by Winograd F(tile x tile, 3 x 3); reads the transformed kernel
    ``winograd<tile>`` where the params hold it, else transforms ``kernel`` in the traced function."""

    features: int
    tile: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        key = f"winograd{self.tile}"
        transformed = (self.get_variable("params", key) if self.has_variable("params", key)
                       else winograd.filter_transform(kernel, self.tile))
        return winograd.conv3x3(x.astype(self.dtype), transformed, bias, self.tile)


def _check_size(arch: str, layer: str, image_shape: tuple, out: Sequence[int]) -> None:
    if min(out) < 1:
        raise ValueError(
            f"image of shape {tuple(image_shape[1:3])} (as fed to the backbone) is smaller than the receptive "
            f"field of {arch}: layer {layer} would have output size {tuple(out)}"
        )
