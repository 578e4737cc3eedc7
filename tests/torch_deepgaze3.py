"""DeepGaze III in PyTorch, written from the reference semantics (matthias-k/DeepGaze; see
``../shared/reference/DEEPGAZE.md``, sections 1-2), for the parity tests of ``deepgaze_jax.deepgaze3``.

Not the reference's code: a forward pass built from its description, NCHW throughout.

- The backbone is a torchvision VGG feature stack (standing in for the reference's DenseNet-201) read by
  :class:`tests.torch_deepgaze.FeatureExtractor`; the image is nearest-downsampled and ImageNet
  normalised by :meth:`tests.torch_deepgaze.TorchDeepGaze.features`, every feature map is
  nearest-resized to the readout grid ``ceil(H / downsample / readout_factor)`` and concatenated.
- Saliency (spatial priority) network: [layer norm, 1x1 conv without bias, bias layer, softplus] x 3,
  channels C -> 8 -> 16 -> 1.
- Scanpath network: the history is encoded at image size as ``[x offsets of the K fixations, y offsets,
  distances]`` (channel ``kind * K + k``), nearest-resized to the readout grid; one 1x1 conv (3 -> 128,
  with bias) per history slot ``k`` on channels ``k::K``, skipped (bias included) where the slot's x is
  NaN; summed; softplus, layer norm, conv 128 -> 16, bias, softplus.
- Fixation selection network: separate layer norms of the priority map (1 channel) and the scanpath
  features (16), the sum of a 1 -> 128 and a 16 -> 128 conv of them (no bias), bias, softplus, layer norm,
  conv 128 -> 16, bias, softplus, conv 16 -> 1. Without a scanpath network (the spatial model) its
  scanpath inputs are ``None`` and left out.
- Finalizer: :class:`tests.torch_deepgaze.Finalizer` (as DeepGaze II).

Every layer norm normalises each sample over ``(C, H, W)`` jointly, eps 1e-12, with per-channel weight
and bias. :func:`build` makes the torch model from *our* parameter tree (kernels ``(in, out)`` / HWIO
transposed to OIHW), so both compute the same function.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from deepgaze_jax.deepgaze3 import DeepGazeIII
from tests.torch_deepgaze import Finalizer, FeatureExtractor, TorchDeepGaze
from weights_convert import convert_torchvision

EPS = 1e-12
VGG_CONFIGS = {"vgg16": "D", "vgg19": "E"}


class LayerNorm(torch.nn.Module):
    """Statistics over (C, H, W) of each sample, per-channel weight and bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(channels))
        self.bias = torch.nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[1:]
        return F.layer_norm(x, shape, self.weight.view(-1, 1, 1).expand(shape), self.bias.view(-1, 1, 1).expand(shape),
                            eps=EPS)


class Bias(torch.nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view(1, -1, 1, 1)


def conv1x1(c_in: int, c_out: int, bias: bool = False) -> torch.nn.Conv2d:
    return torch.nn.Conv2d(c_in, c_out, 1, bias=bias)


def normed_block(c_in: int, c_out: int) -> list[torch.nn.Module]:
    """Layer norm, 1x1 conv without bias, bias layer, softplus."""
    return [LayerNorm(c_in), conv1x1(c_in, c_out), Bias(c_out), torch.nn.Softplus()]


def encode_history(x_hist: torch.Tensor, y_hist: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, K)`` fixation coordinates (image pixels, NaN: missing) -> ``(B, 3K, H, W)`` maps at image size:
    ``[XS - x_k for all k, YS - y_k for all k, distances for all k]``."""
    height, width = size
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    dx = xs[None, None] - x_hist[:, :, None, None]
    dy = ys[None, None] - y_hist[:, :, None, None]
    return torch.cat([dx, dy, torch.sqrt(dx ** 2 + dy ** 2)], dim=1)


class HistoryEncoding(torch.nn.Module):
    """One 1x1 conv (3 -> out, with bias) per history slot on channels ``k::K``; a slot whose x offset is
    NaN contributes nothing. A sample without any fixation is not defined (the reference breaks there)."""

    def __init__(self, fixations: int, out_channels: int):
        super().__init__()
        self.fixations = fixations
        self.out_channels = out_channels
        self.convs = torch.nn.ModuleList(conv1x1(3, out_channels, bias=True) for _ in range(fixations))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        valid = ~torch.isnan(x[:, : self.fixations, 0, 0])
        if not bool(valid.any(dim=1).all()):
            raise ValueError("a history without any fixation is not defined for the scanpath network")
        out = torch.zeros((x.shape[0], self.out_channels) + x.shape[2:], dtype=x.dtype)
        for k, conv in enumerate(self.convs):
            rows = valid[:, k]
            if rows.any():
                out[rows] = out[rows] + conv(x[rows][:, k:: self.fixations])
        return out


class SelectionInput(torch.nn.Module):
    """The selection network's first layer: per-input layer norms and 1x1 convs (no bias), summed;
    ``None`` inputs (the scanpath features of the spatial model) are left out."""

    def __init__(self, channels: tuple[int, ...], out_channels: int):
        super().__init__()
        self.norms = torch.nn.ModuleList(LayerNorm(c) for c in channels)
        self.convs = torch.nn.ModuleList(conv1x1(c, out_channels) for c in channels)

    def forward(self, inputs: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        parts = [conv(norm(x)) for x, norm, conv in zip(inputs, self.norms, self.convs) if x is not None]
        return sum(parts[1:], parts[0])


class TorchDeepGazeIII(TorchDeepGaze):
    """Image ``(B, 3, H, W)`` RGB 0..255, center bias ``(B, H, W)`` and histories ``x_hist``, ``y_hist``
    ``(B, K)`` (most recent first; NaN: missing) -> ``(B, H, W)`` log density of the next fixation."""

    def __init__(self, extractor, saliency, scanpath, selection_input, selection_rest, finalizer, downsample,
                 readout_factor):
        super().__init__(extractor, saliency, finalizer, downsample, readout_factor, channels_last=False)
        self.scanpath = scanpath
        self.selection_input = selection_input
        self.selection_rest = selection_rest

    def forward(self, image: torch.Tensor, centerbias: torch.Tensor, x_hist: torch.Tensor | None = None,
                y_hist: torch.Tensor | None = None) -> torch.Tensor:
        height, width = image.shape[2:]
        shape = [math.ceil(height / self.downsample / self.readout_factor),
                 math.ceil(width / self.downsample / self.readout_factor)]
        x = torch.cat([F.interpolate(f, size=shape) for f in self.features(image)], dim=1)
        priority = self.readout(x)
        scanpath = None
        if self.scanpath is not None:
            maps = F.interpolate(encode_history(x_hist, y_hist, (height, width)), size=shape)
            scanpath = self.scanpath(maps)
        x = self.selection_rest(self.selection_input((priority, scanpath)))
        return self.finalizer(x, centerbias)


def vgg_features(arch: str, seed: int) -> tuple[torch.nn.Sequential, dict]:
    """A random torchvision VGG feature stack (He-normal kernels, small random biases, pools without
    ceil_mode) and our backbone tree of the same weights."""
    torch.manual_seed(seed)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs[VGG_CONFIGS[arch]])
    with torch.no_grad():
        for layer in features:
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                layer.bias.normal_(0.0, 0.1)
    state = {f"features.{key}": value for key, value in features.state_dict().items()}
    features = features.eval()
    for p in features.parameters():
        p.requires_grad_(False)
    return features, convert_torchvision(state, arch)


def _t(a, transpose: tuple[int, ...] | None = None) -> torch.Tensor:
    a = np.asarray(a, np.float32)
    return torch.from_numpy(np.array(a if transpose is None else a.transpose(transpose)))


def _dense(kernel) -> torch.Tensor:
    """An ``(in, out)`` kernel as an OIHW 1x1 conv weight."""
    return _t(kernel, (1, 0))[:, :, None, None]


def _load_normed(modules: list[torch.nn.Module], layer: dict) -> None:
    norm, conv, bias, _ = modules
    norm.weight.copy_(_t(layer["norm_scale"]))
    norm.bias.copy_(_t(layer["norm_shift"]))
    kernel = np.asarray(layer["kernel"])
    conv.weight.copy_(_dense(kernel.reshape(kernel.shape[-2:])))  # (1, 1, in, out) or (in, out)
    bias.bias.copy_(_t(layer["bias"]))


def build(model: DeepGazeIII, features: torch.nn.Sequential, head: dict) -> TorchDeepGazeIII:
    """The torch DeepGaze III of ``model`` with the backbone ``features`` and *our* head parameters
    ``head`` (see :mod:`deepgaze_jax.deepgaze3`) copied in. ``model.history == 0``: the spatial model."""
    head = jax.tree.map(np.asarray, head)
    spatial = model.spatial
    c_scan, c_scan_out = model.scanpath_channels
    c0, c1, _ = model.selection_channels
    with torch.no_grad():
        saliency, channels = [], model.feature_channels
        for i, out in enumerate(spatial.readout_channels):
            block = normed_block(channels, out)
            _load_normed(block, head["saliency"][f"conv{i}"])
            saliency += block
            channels = out

        scanpath = None
        if model.history:
            p = head["scanpath"]
            encoding = HistoryEncoding(model.history, c_scan)
            for k, conv in enumerate(encoding.convs):
                conv.weight.copy_(_dense(p["encoding"]["kernel"][k]))
                conv.bias.copy_(_t(p["encoding"]["bias"][k]))
            rest = normed_block(c_scan, c_scan_out)
            _load_normed(rest, p["conv1"])
            scanpath = torch.nn.Sequential(encoding, torch.nn.Softplus(), *rest)

        p = head["selection"]
        selection_input = SelectionInput((1, c_scan_out) if model.history else (1,), c0)
        selection_input.norms[0].weight.copy_(_t(p["conv0"]["priority_norm_scale"]))
        selection_input.norms[0].bias.copy_(_t(p["conv0"]["priority_norm_shift"]))
        selection_input.convs[0].weight.copy_(_dense(p["conv0"]["priority_kernel"]))
        if model.history:
            selection_input.norms[1].weight.copy_(_t(p["conv0"]["scanpath_norm_scale"]))
            selection_input.norms[1].bias.copy_(_t(p["conv0"]["scanpath_norm_shift"]))
            selection_input.convs[1].weight.copy_(_dense(p["conv0"]["scanpath_kernel"]))
        bias0 = Bias(c0)
        bias0.bias.copy_(_t(p["conv0"]["bias"]))
        block1 = normed_block(c0, c1)
        _load_normed(block1, p["conv1"])
        conv2 = conv1x1(c1, 1)
        conv2.weight.copy_(_dense(p["conv2"]["kernel"]))
        selection_rest = torch.nn.Sequential(bias0, torch.nn.Softplus(), *block1, conv2)

    fin = head["finalizer"]
    finalizer = Finalizer(float(fin["sigma"]), float(fin["center_bias_weight"]), spatial.saliency_map_factor)
    net = TorchDeepGazeIII(FeatureExtractor(features, spatial.backbone, spatial.layers), torch.nn.Sequential(*saliency),
                           scanpath, selection_input, selection_rest, finalizer, spatial.downsample,
                           spatial.readout_factor)
    return net.eval()
