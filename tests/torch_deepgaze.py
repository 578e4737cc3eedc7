"""DeepGaze I and II in PyTorch, structured as the reference implementation (matthias-k/DeepGaze), for
``experiments/benchmark.py``.

Written here from the reference's semantics (``../shared/reference/DEEPGAZE.md``, section 2), not copied:
a torchvision feature stack whose named layers are read by forward hooks, a readout network of 1x1
convs, and a finalizer that nearest-resizes, blurs with a Gaussian conv on edge-padded maps (kernel size
``2 ceil(3 sigma) + 1``, computed from the sigma parameter at every call), adds the weighted center bias
and normalises with logsumexp. NCHW at the interface; :func:`build` can put the backbone in
``channels_last`` memory format. :func:`build` also returns our parameters for the same weights, so the
two frameworks compute the same function.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from deepgaze_jax import backbones
from deepgaze_jax.model import DeepGaze
from tests.torch_reference import gaussian_blur  # the reference's blur, as the parity tests use it
from weights_convert import convert_torchvision

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureExtractor(torch.nn.Module):
    """Runs a torchvision ``features`` stack and returns the outputs of the named layers, which forward
    hooks collect (cloned: torchvision's ReLUs work in place and would overwrite a conv's output)."""

    def __init__(self, features: torch.nn.Sequential, arch: str, layers: tuple[str, ...]):
        super().__init__()
        names = backbones.layer_names(arch)
        if len(names) != len(features):
            raise ValueError(f"{arch}: {len(features)} torchvision layers but {len(names)} names")
        self.features = features
        self.layers = tuple(layers)
        self.outputs: dict[str, torch.Tensor] = {}
        for name, module in zip(names, features):
            if name in self.layers:
                module.register_forward_hook(self._keep(name))

    def _keep(self, name: str):
        def hook(module, inputs, output):
            self.outputs[name] = output.clone()

        return hook

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.outputs.clear()
        self.features(x)
        return [self.outputs[name] for name in self.layers]


class Finalizer(torch.nn.Module):
    """Readout ``(B, 1, h, w)`` and center bias ``(B, H, W)`` (nats) -> ``(B, H, W)`` log density."""

    def __init__(self, sigma: float, center_bias_weight: float, saliency_map_factor: int):
        super().__init__()
        self.sigma = torch.nn.Parameter(torch.tensor(float(sigma)))
        self.center_bias_weight = torch.nn.Parameter(torch.tensor([float(center_bias_weight)]))
        self.saliency_map_factor = saliency_map_factor

    def forward(self, readout: torch.Tensor, centerbias: torch.Tensor) -> torch.Tensor:
        height, width = centerbias.shape[1:]
        small_cb = F.interpolate(centerbias[:, None], scale_factor=1 / self.saliency_map_factor,
                                 recompute_scale_factor=False)
        x = F.interpolate(readout, size=small_cb.shape[2:])
        x = gaussian_blur(x, self.sigma)
        x = x + self.center_bias_weight * small_cb
        x = F.interpolate(x, size=[height, width])[:, 0]
        return x - x.logsumexp(dim=(1, 2), keepdim=True)


class TorchDeepGaze(torch.nn.Module):
    """Image ``(B, 3, H, W)`` RGB 0..255 and center bias ``(B, H, W)`` -> ``(B, H, W)`` log density.

    ``backbone_dtype`` (e.g. ``torch.bfloat16``) runs the backbone under ``torch.autocast``; the readout
    and finalizer stay float32.
    """

    def __init__(self, extractor: FeatureExtractor, readout: torch.nn.Sequential, finalizer: Finalizer,
                 downsample: int, readout_factor: int, backbone_dtype: torch.dtype | None = None,
                 channels_last: bool = True):
        super().__init__()
        self.extractor = extractor
        self.readout = readout
        self.finalizer = finalizer
        self.downsample = downsample
        self.readout_factor = readout_factor
        self.backbone_dtype = backbone_dtype
        self.channels_last = channels_last
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The frozen backbone: the named layers, float32."""
        x = F.interpolate(image, scale_factor=1 / self.downsample, recompute_scale_factor=False)
        x = (x / 255.0 - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(image.device.type, dtype=self.backbone_dtype or torch.float32,
                            enabled=self.backbone_dtype is not None):
            outputs = self.extractor(x)
        return [o.float() for o in outputs]

    def head(self, features: list[torch.Tensor], centerbias: torch.Tensor) -> torch.Tensor:
        """Everything after the backbone: resize to the readout grid, readout, finalizer."""
        height, width = centerbias.shape[1:]
        shape = [math.ceil(height / self.downsample / self.readout_factor),
                 math.ceil(width / self.downsample / self.readout_factor)]
        x = torch.cat([F.interpolate(f, size=shape) for f in features], dim=1)
        return self.finalizer(self.readout(x), centerbias)

    def forward(self, image: torch.Tensor, centerbias: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image), centerbias)

    def with_backbone_dtype(self, backbone_dtype: torch.dtype | None) -> TorchDeepGaze:
        """The same modules and weights, the backbone run in another autocast dtype."""
        return TorchDeepGaze(self.extractor, self.readout, self.finalizer, self.downsample, self.readout_factor,
                             backbone_dtype, self.channels_last).to(self.mean.device).eval()


TORCHVISION = {
    "alexnet": torchvision.models.alexnet,
    "vgg16": torchvision.models.vgg16,
    "vgg19": torchvision.models.vgg19,
}


def build(model: DeepGaze, seed: int = 0, device: str = "cpu", backbone_dtype: torch.dtype | None = None,
          channels_last: bool = True) -> tuple[TorchDeepGaze, dict]:
    """A PyTorch DeepGaze with random weights (seeded) and our parameter tree holding the same weights.

    Returns ``(torch_model, params)`` with ``params = {"backbone", "head"}`` for ``model.apply``. The
    torch model is in eval mode with a frozen backbone (``requires_grad=False``).
    """
    torch.manual_seed(seed)
    net = TORCHVISION[model.backbone](weights=None)
    with torch.no_grad():
        for layer in net.features:
            if isinstance(layer, torch.nn.Conv2d):
                layer.bias.normal_(0.0, 0.01)
            if isinstance(layer, torch.nn.MaxPool2d):
                layer.ceil_mode = model.ceil_mode
    backbone_params = convert_torchvision(net.state_dict(), model.backbone)
    head = jax.tree.map(np.asarray, model.init_head(jax.random.PRNGKey(seed)))

    convs, channels = [], model.feature_channels
    for i, out in enumerate(model.readout_channels):
        conv = torch.nn.Conv2d(channels, out, 1, bias=model.readout_bias)
        layer = head["readout"][f"conv{i}"]
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(layer["kernel"].transpose(3, 2, 0, 1).copy()))
            if model.readout_bias:
                conv.bias.copy_(torch.from_numpy(layer["bias"].copy()))
        convs.append(conv)
        if i < len(model.readout_channels) - 1:
            convs.append(torch.nn.ReLU())
        channels = out
    fin = head["finalizer"]
    finalizer = Finalizer(float(fin["sigma"]), float(fin["center_bias_weight"]), model.saliency_map_factor)

    features = net.features.eval()
    for p in features.parameters():
        p.requires_grad_(False)
    if channels_last:
        features = features.to(memory_format=torch.channels_last)
    torch_model = TorchDeepGaze(FeatureExtractor(features, model.backbone, model.layers),
                                torch.nn.Sequential(*convs), finalizer, model.downsample, model.readout_factor,
                                backbone_dtype, channels_last)
    return torch_model.to(device).eval(), {"backbone": backbone_params, "head": head}
