"""DeepGaze I and II end to end: parity with a PyTorch forward pass of the reference semantics,
normalisation, batching, gradients, ensembles and bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from jax.test_util import check_grads

from deepgaze_jax import backbones
from deepgaze_jax.model import BLOCK4_LAYERS, deepgaze1, deepgaze2, mixture, uniform_centerbias
from tests.torch_reference import deepgaze_forward
from weights_convert import convert_deepgaze1, convert_torchvision


def random_centerbias(batch, height, width, seed=0):
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[:height, :width]
    cb = -(((yy - height / 2) / height) ** 2 + ((xx - width / 2) / width) ** 2) * 8
    cb = cb[None] + 0.1 * rng.randn(batch, height, width)
    cb = cb - np.log(np.exp(cb).sum(axis=(1, 2), keepdims=True))
    return cb.astype(np.float32)


def random_images(batch, height, width, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, (batch, height, width, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def deepgaze1_state_dict():
    """A random state dict in the layout of the reference ``deepgaze1.pth``."""
    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet(weights=None)
    state = {}
    for key, value in alexnet.state_dict().items():
        state[f"features.features.1.{key}"] = value
    for index in (0, 3, 6, 8, 10):
        state[f"features.features.1.features.{index}.bias"].normal_(0.0, 0.1)
    state["readout_network.conv0.weight"] = torch.randn(1, 256, 1, 1) * 0.05
    state["finalizer.gauss.sigma"] = torch.tensor(5.3)
    state["finalizer.center_bias_weight"] = torch.tensor([0.8])
    return state


@pytest.mark.parametrize("size", [(192, 256), (131, 203)])
def test_deepgaze1_matches_reference_semantics(deepgaze1_state_dict, size):
    state = deepgaze1_state_dict
    params = convert_deepgaze1(state)
    model = deepgaze1()
    images = random_images(2, *size)
    centerbias = random_centerbias(2, *size)

    alexnet = torchvision.models.alexnet(weights=None)
    alexnet.load_state_dict({k[len("features.features.1."):]: v for k, v in state.items() if k.startswith("features.")})
    with torch.no_grad():
        expected = deepgaze_forward(
            alexnet.features.eval(), list(backbones.layer_names("alexnet")), ["conv5"],
            [(state["readout_network.conv0.weight"], None)],
            state["finalizer.gauss.sigma"], state["finalizer.center_bias_weight"],
            torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(centerbias),
            downsample=2, readout_factor=4, saliency_map_factor=4,
        ).numpy()
    ours = np.asarray(model.apply(params, images, centerbias))
    # Log densities of ~ -10 nats; float32 summation order differs between the frameworks.
    np.testing.assert_allclose(ours, expected, atol=2e-4, rtol=0)


@pytest.mark.parametrize("extra_layers", [(), BLOCK4_LAYERS], ids=["block5", "block5+block4"])
def test_deepgaze2_vgg16_matches_reference_semantics(extra_layers):
    """Block 4's maps (twice block 5's size) are resized to the readout grid, as the reference does."""
    torch.manual_seed(1)
    vgg = torchvision.models.vgg16(weights=None).eval()
    for layer in vgg.features:
        if isinstance(layer, torch.nn.MaxPool2d):
            layer.ceil_mode = True
    model = deepgaze2("vgg16", extra_layers=extra_layers)
    assert model.layers[5:] == extra_layers
    head = model.init_head(jax.random.PRNGKey(3))
    params = {"backbone": convert_torchvision(vgg.state_dict(), "vgg16"), "head": head}
    readout = [
        (torch.from_numpy(np.asarray(layer["kernel"]).transpose(3, 2, 0, 1).copy()),
         torch.from_numpy(np.array(layer["bias"])))
        for layer in (head["readout"][f"conv{i}"] for i in range(4))
    ]
    images = random_images(1, 211, 283, seed=4)
    centerbias = random_centerbias(1, 211, 283, seed=4)
    with torch.no_grad():
        expected = deepgaze_forward(
            vgg.features, list(backbones.layer_names("vgg16")), list(model.layers), readout,
            torch.tensor(8.0), torch.tensor([1.0]),
            torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(centerbias),
            downsample=2, readout_factor=16, saliency_map_factor=2,
        ).numpy()
    ours = np.asarray(model.apply(params, images, centerbias))
    np.testing.assert_allclose(ours, expected, atol=2e-4, rtol=0)


@pytest.mark.parametrize("ceil_mode", [True, False], ids=["grids-equal", "features-resized"])
def test_iie_readout_matches_reference_semantics(ceil_mode):
    """The DeepGaze IIE / III saliency network on DeepGaze II's VGG-16 features. Without ceil_mode the
    features' 6x8 grid differs from the 7x9 readout grid: the layer norm must see the resized maps."""
    torch.manual_seed(2)
    vgg = torchvision.models.vgg16(weights=None).eval()
    for layer in vgg.features:
        if isinstance(layer, torch.nn.MaxPool2d):
            layer.ceil_mode = ceil_mode
    model = dataclasses.replace(deepgaze2("vgg16", readout="iie"), ceil_mode=ceil_mode)
    assert model.readout_channels == (8, 16, 1) and model.feature_channels == 2560
    head = model.init_head(jax.random.PRNGKey(5))
    rng = np.random.default_rng(6)  # away from the identity / zero init, so every parameter matters
    for layer in head["readout"].values():
        for key in ("norm_scale", "norm_shift", "bias"):
            layer[key] = layer[key] + rng.normal(0, 0.3, layer[key].shape).astype(np.float32)
    params = {"backbone": convert_torchvision(vgg.state_dict(), "vgg16"), "head": head}
    as_torch = lambda a: torch.from_numpy(np.array(a))  # noqa: E731
    readout = [(as_torch(np.asarray(layer["kernel"]).transpose(3, 2, 0, 1)), as_torch(layer["bias"]),
                as_torch(layer["norm_scale"]), as_torch(layer["norm_shift"]))
               for layer in (head["readout"][f"conv{i}"] for i in range(3))]
    images = random_images(2, 211, 283, seed=7)
    centerbias = random_centerbias(2, 211, 283, seed=7)
    features = np.asarray(model.features(params["backbone"], images))
    assert (features.shape[1:3] == (7, 9)) == ceil_mode
    with torch.no_grad():
        expected = deepgaze_forward(
            vgg.features, list(backbones.layer_names("vgg16")), list(model.layers), readout,
            torch.tensor(8.0), torch.tensor([1.0]),
            torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(centerbias),
            downsample=2, readout_factor=16, saliency_map_factor=2, readout_kind="iie",
        ).numpy()
    ours = np.asarray(model.apply(params, images, centerbias))
    # Same float32 summation-order bound as the DeepGaze II parity test above.
    np.testing.assert_allclose(ours, expected, atol=2e-4, rtol=0)
    with pytest.raises(ValueError, match="readout_bias must be False"):
        dataclasses.replace(model, readout_bias=True)


@pytest.mark.parametrize("size", [(768, 1024), (1024, 768), (333, 517)])
def test_log_density_is_normalised(size):
    model = deepgaze1()
    params = model.init(jax.random.PRNGKey(0))
    out = model.apply(params, random_images(1, *size), random_centerbias(1, *size))
    assert out.shape == (1, *size)
    np.testing.assert_allclose(jax.nn.logsumexp(out, axis=(1, 2)), 0.0, atol=1e-5)


def test_deepgaze2_vgg19_is_normalised_on_odd_size():
    model = deepgaze2("vgg19")
    params = model.init(jax.random.PRNGKey(0))
    out = model.apply(params, random_images(1, 97, 131), random_centerbias(1, 97, 131))
    assert out.shape == (1, 97, 131)
    np.testing.assert_allclose(jax.nn.logsumexp(out, axis=(1, 2)), 0.0, atol=1e-5)


def test_batched_call_equals_single_calls_and_vmap():
    model = deepgaze1()
    params = model.init(jax.random.PRNGKey(1))
    images, centerbias = random_images(3, 160, 208), random_centerbias(3, 160, 208)
    batched = np.asarray(model.apply(params, images, centerbias))
    for i in range(3):
        single = np.asarray(model.apply(params, images[i], centerbias[i]))
        np.testing.assert_allclose(batched[i], single, atol=1e-5)
    vmapped = jax.vmap(model.apply, in_axes=(None, 0, 0))(params, images, centerbias)
    np.testing.assert_allclose(batched, np.asarray(vmapped), atol=1e-5)


def test_gradients_wrt_image_and_head_are_finite_and_correct():
    model = deepgaze1()
    params = model.init(jax.random.PRNGKey(2))
    images, centerbias = random_images(1, 72, 88), random_centerbias(1, 72, 88)

    def score(img):
        return model.apply(params, img, centerbias)[0, 30, 40]

    check_grads(score, (jnp.asarray(images),), order=1, modes=("rev",), eps=1e-1, atol=5e-2, rtol=5e-2)
    grads = jax.grad(lambda head: model.head(head, model.features(params["backbone"], images), centerbias)
                     [0, 30, 40])(params["head"])
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["finalizer"]["sigma"])) > 0


def test_backbone_receives_no_gradient():
    model = deepgaze1()
    params = model.init(jax.random.PRNGKey(2))
    images, centerbias = random_images(1, 72, 88), random_centerbias(1, 72, 88)
    grads = jax.grad(lambda p: model.apply(p, images, centerbias)[0, 3, 4])(params)
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["backbone"]))


def test_ensemble_averages_in_probability_space():
    model = deepgaze1()
    params = model.init(jax.random.PRNGKey(0))
    heads = [model.init_head(jax.random.PRNGKey(k)) for k in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *heads)
    images, centerbias = random_images(2, 96, 128), random_centerbias(2, 96, 128)
    ours = np.asarray(model.apply_ensemble(params["backbone"], stacked, images, centerbias))
    members = [np.exp(np.asarray(model.apply({"backbone": params["backbone"], "head": h}, images, centerbias)))
               for h in heads]
    np.testing.assert_allclose(np.exp(ours), np.mean(members, axis=0), rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(jax.nn.logsumexp(ours, axis=(1, 2)), 0.0, atol=1e-5)
    assert mixture(jnp.zeros((4, 2, 2))).shape == (2, 2)


def test_bad_inputs_are_named():
    model = deepgaze1()
    params = model.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        model.apply(params, np.zeros((1, 96, 128, 4), np.float32), np.zeros((1, 96, 128), np.float32))
    with pytest.raises(ValueError, match="center bias of shape"):
        model.apply(params, np.zeros((1, 96, 128, 3), np.float32), np.zeros((1, 96, 127), np.float32))
    with pytest.raises(ValueError, match="receptive field"):
        model.apply(params, np.zeros((1, 30, 30, 3), np.float32), uniform_centerbias(30, 30)[None])
    with pytest.raises(ValueError, match="no layer"):
        deepgaze2("vgg16").__class__(backbone="vgg16", layers=("relu5_4",), readout_channels=(1,), readout_bias=False)


def test_log_density_at_fixations_equals_full_map_lookup():
    model = deepgaze1()
    params = model.init(jax.random.PRNGKey(5))
    images, centerbias = random_images(2, 150, 211), random_centerbias(2, 150, 211)
    full = np.asarray(model.apply(params, images, centerbias))
    rng = np.random.RandomState(0)
    xs = rng.uniform(0, 211, (2, 40)).astype(np.float32)
    ys = rng.uniform(0, 150, (2, 40)).astype(np.float32)
    xs[0, :3], ys[0, :3] = [0.0, 210.99, 105.5], [149.7, 0.0, 74.2]
    feats = model.features(params["backbone"], images)
    at = np.asarray(model.log_density_at(params["head"], feats, centerbias, xs, ys))
    expected = np.stack([full[b][ys[b].astype(int), xs[b].astype(int)] for b in range(2)])
    np.testing.assert_allclose(at, expected, atol=1e-6)


def test_unknown_layers_are_named_alike_by_the_model_and_the_backbone():
    with pytest.raises(ValueError) as from_model:
        deepgaze1().__class__(backbone="alexnet", layers=("conv5", "conv9"), readout_channels=(1,), readout_bias=False)
    with pytest.raises(ValueError) as from_backbone:
        backbones.Backbone("alexnet", ("conv5", "conv9")).init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    assert str(from_model.value) == str(from_backbone.value)
    assert str(from_model.value).startswith("alexnet has no layer(s) ['conv9']; available: ['conv1', 'relu1'")


def test_backbone_widths_count_the_channels_of_every_layer():
    widths = backbones.backbone_widths("alexnet")
    assert list(widths) == list(backbones.layer_names("alexnet"))
    assert (widths["conv1"], widths["pool2"], widths["conv5"], widths["pool5"]) == (64, 192, 256, 256)
    assert deepgaze2("vgg16").feature_channels == 5 * 512
