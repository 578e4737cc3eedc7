"""Backbones against torchvision's own models (random weights pushed through our converter)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from deepgaze_jax import backbones
from deepgaze_jax.backbones import init_backbone
from tests.torch_reference import MEAN, STD, named_features
from weights_convert import convert_torchvision

TORCHVISION = {
    "alexnet": torchvision.models.alexnet,
    "vgg16": torchvision.models.vgg16,
    "vgg19": torchvision.models.vgg19,
}


def random_torch_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = TORCHVISION[arch](weights=None).eval()
    with torch.no_grad():
        for layer in model.features:
            if isinstance(layer, torch.nn.Conv2d):
                layer.bias.normal_(0.0, 0.1)  # torchvision initialises biases to 0; test them too
    return model


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))


@pytest.mark.parametrize(
    "arch,size,ceil_mode",
    [
        ("alexnet", (83, 101), False),
        ("vgg16", (70, 90), False),
        ("vgg16", (70, 90), True),
        ("vgg19", (77, 61), True),
    ],
)
def test_every_layer_matches_torchvision(arch, size, ceil_mode):
    """Every named layer within 1e-4 relative max-abs error (float32 accumulation differences)."""
    model = random_torch_model(arch)
    names = backbones.layer_names(arch)
    for layer in model.features:
        if isinstance(layer, torch.nn.MaxPool2d):
            layer.ceil_mode = ceil_mode
    images = np.random.RandomState(1).uniform(0, 255, (2, *size, 3)).astype(np.float32)
    with torch.no_grad():
        x = (torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0 - MEAN) / STD
        expected = named_features(model.features, list(names), x)

    params = convert_torchvision(model.state_dict(), arch)
    ours = backbones.Backbone(arch, names, ceil_mode=ceil_mode).apply({"params": params}, jnp.asarray(images))
    for name in names:
        theirs = expected[name].permute(0, 2, 3, 1).numpy()
        assert ours[name].shape == theirs.shape, name
        assert relative_error(np.asarray(ours[name]), theirs) < 1e-4, name


@pytest.mark.parametrize("arch", ["alexnet", "vgg16", "vgg19"])
def test_parameter_counts_equal_torchvision(arch):
    expected = sum(p.numel() for p in TORCHVISION[arch](weights=None).features.parameters())
    ours = init_backbone(jax.random.PRNGKey(0), arch)
    assert sum(x.size for x in jax.tree.leaves(ours)) == expected
    skeleton = jax.eval_shape(
        lambda: backbones.Backbone(arch, backbones.layer_names(arch)[-1:]).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))
        )["params"]
    )
    assert jax.tree.map(lambda x: x.shape, skeleton) == jax.tree.map(lambda x: x.shape, ours)


def test_unknown_layer_is_named():
    with pytest.raises(ValueError, match="relu5_4"):
        backbones.Backbone("vgg16", ("relu5_4",)).init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))


def test_image_smaller_than_receptive_field_is_refused():
    params = init_backbone(jax.random.PRNGKey(0), "alexnet")
    with pytest.raises(ValueError, match="receptive field"):
        backbones.Backbone("alexnet", ("conv5",)).apply({"params": params}, jnp.zeros((1, 20, 20, 3)))
