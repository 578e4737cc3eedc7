"""An independent PyTorch forward pass of DeepGaze, written from the reference semantics
(``../shared/reference/DEEPGAZE.md``, section 2) for parity tests. NCHW throughout."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def named_features(features: torch.nn.Sequential, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run a torchvision ``features`` stack, keeping every layer's output under our layer names."""
    assert len(features) == len(names), (len(features), len(names))
    out = {}
    for name, layer in zip(names, features):
        x = layer(x)
        out[name] = x.clone()
    return out


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable blur of (B, 1, H, W): radius ceil(3 sigma), replicate padding, normalised kernel."""
    radius = int(math.ceil(3 * float(sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(x, (0, 0, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    x = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    return F.conv2d(x, kernel.view(1, 1, 1, -1))


def deepgaze_forward(
    features: torch.nn.Sequential,
    names: list[str],
    layers: list[str],
    readout: list[tuple[torch.Tensor, torch.Tensor | None]],
    sigma: torch.Tensor,
    center_bias_weight: torch.Tensor,
    image: torch.Tensor,
    centerbias: torch.Tensor,
    downsample: int,
    readout_factor: int,
    saliency_map_factor: int,
    readout_kind: str = "deepgaze2",
) -> torch.Tensor:
    """(B, 3, H, W) RGB 0..255, (B, H, W) center bias -> (B, H, W) log density.

    ``readout_kind="iie"``: ``readout`` holds ``(weight, bias, norm_weight, norm_bias)`` per layer, each
    layer ``LayerNorm`` over (C, H, W) with per-channel affine (eps 1e-12) -> conv -> bias -> softplus,
    as the reference's ``build_saliency_network``."""
    height, width = image.shape[2:]
    x = F.interpolate(image, scale_factor=1 / downsample, recompute_scale_factor=False)
    x = (x / 255.0 - MEAN) / STD
    outputs = named_features(features, names, x)
    shape = [math.ceil(height / downsample / readout_factor), math.ceil(width / downsample / readout_factor)]
    x = torch.cat([F.interpolate(outputs[name], shape) for name in layers], dim=1)
    for i, layer in enumerate(readout):
        if readout_kind == "iie":
            weight, bias, norm_weight, norm_bias = layer
            grid = x.shape[1:]
            x = F.layer_norm(x, grid, norm_weight.view(-1, 1, 1).expand(grid), norm_bias.view(-1, 1, 1).expand(grid),
                             eps=1e-12)
            x = F.softplus(F.conv2d(x, weight) + bias.view(1, -1, 1, 1))
            continue
        weight, bias = layer
        x = F.conv2d(x, weight, bias)
        if i < len(readout) - 1:
            x = F.relu(x)
    small_cb = F.interpolate(centerbias[:, None], scale_factor=1 / saliency_map_factor,
                             recompute_scale_factor=False)[:, 0]
    x = F.interpolate(x, size=list(small_cb.shape[1:]))
    x = gaussian_blur(x, sigma)[:, 0]
    x = x + center_bias_weight * small_cb
    x = F.interpolate(x[:, None], size=[height, width])[:, 0]
    return x - x.logsumexp(dim=(1, 2), keepdim=True)
