"""Winograd 3x3 convolutions against XLA's direct convolution and torchvision, per layer and whole models."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from deepgaze_jax import backbones, feature_cache, winograd
from deepgaze_jax.model import deepgaze1, deepgaze2
from tests.test_backbones import random_torch_model, relative_error
from tests.torch_reference import MEAN, STD, named_features
from weights_convert import convert_torchvision

# float32: the transforms add a few roundings per output (F(4x4,3x3)'s coefficients up to 8 amplify
# them about 10x over the direct sum), measured 2e-7 (F2) and 3e-6 (F4) of the largest output.
F32_BOUND = {2: 2e-6, 4: 2e-5}
# bfloat16: the products' operands are rounded to 8 mantissa bits. Against XLA's own bfloat16 convolution's
# error on the same case, F(2x2,3x3) measured 1.0-1.8x, F(4x4,3x3) up to 20x (its transformed tiles span a
# wide range that bfloat16 rounds coarsely: why "auto" uses F(2x2,3x3) in bfloat16).
BF16_FACTOR = {2: 3.0, 4: 30.0}


def direct(x, kernel, bias):
    out = jax.lax.conv_general_dilated(x.astype(jnp.float32), kernel, (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                       precision=jax.lax.Precision.HIGHEST)
    return out + bias.reshape(1, 1, 1, -1)


@pytest.mark.parametrize("m", winograd.TILES)
@pytest.mark.parametrize("shape", [(2, 7, 9, 5, 6), (1, 8, 8, 3, 4), (1, 1, 1, 2, 3), (3, 13, 6, 4, 8), (1, 5, 2, 16, 1)])
def test_conv3x3_equals_the_direct_convolution(m, shape):
    batch, height, width, cin, cout = shape
    rng = np.random.default_rng(sum(shape) + m)
    x = jnp.asarray(rng.normal(size=(batch, height, width, cin)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, cin, cout)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(cout,)), jnp.float32)
    expected = np.asarray(direct(x, kernel, bias))
    ours = winograd.conv3x3(x, winograd.filter_transform(kernel, m), bias, m)
    assert ours.shape == expected.shape and ours.dtype == jnp.float32
    assert relative_error(np.asarray(ours), expected) < F32_BOUND[m]
    low = winograd.conv3x3(x.astype(jnp.bfloat16), winograd.filter_transform(kernel, m), bias, m)
    assert low.dtype == jnp.bfloat16
    xla_low = jax.lax.conv_general_dilated(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), (1, 1),
                                           ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    xla_error = relative_error(np.asarray(xla_low + bias.astype(jnp.bfloat16).reshape(1, 1, 1, -1), np.float32), expected)
    assert relative_error(np.asarray(low, np.float32), expected) < BF16_FACTOR[m] * max(xla_error, 2 ** -9)


def test_the_transforms_are_exact_on_a_hand_case():
    """A single 1 in a 4x4 image convolved by a kernel k gives k's flipped copy around it."""
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 1, 2, 0] = 1.0
    kernel = np.arange(1, 10, dtype=np.float32).reshape(3, 3, 1, 1)
    for m in winograd.TILES:
        out = np.asarray(winograd.conv3x3(jnp.asarray(x), winograd.filter_transform(kernel, m), None, m))[0, :, :, 0]
        expected = np.zeros((4, 4), np.float32)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if 0 <= 1 - dy < 4 and 0 <= 2 - dx < 4:
                    expected[1 - dy, 2 - dx] = kernel[dy + 1, dx + 1, 0, 0]
        np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("impl", ["winograd2", "winograd4"])  # auto mixes these with XLA per layer
@pytest.mark.parametrize("arch,size", [("alexnet", (83, 101)), ("vgg16", (70, 90)), ("vgg19", (77, 61))])
def test_every_layer_matches_torchvision_and_the_direct_backbone(arch, size, impl):
    """Every named layer of the Winograd backbone against torchvision (random weights) and against our
    XLA backbone, float32; bfloat16 against the float32 direct backbone."""
    model = random_torch_model(arch)
    names = backbones.layer_names(arch)
    images = np.random.RandomState(1).uniform(0, 255, (2, *size, 3)).astype(np.float32)
    with torch.no_grad():
        x = (torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0 - MEAN) / STD
        expected = named_features(model.features, list(names), x)
    params = convert_torchvision(model.state_dict(), arch)
    prepared = winograd.transform_params(params, arch, impl)
    direct_net = backbones.Backbone(arch, names)
    ours = backbones.Backbone(arch, names, conv_impl=impl).apply({"params": prepared}, jnp.asarray(images))
    xla = direct_net.apply({"params": params}, jnp.asarray(images))
    low = backbones.Backbone(arch, names, dtype=jnp.bfloat16, conv_impl=impl).apply(
        {"params": winograd.transform_params(params, arch, impl, "bfloat16")}, jnp.asarray(images))
    xla_low = backbones.Backbone(arch, names, dtype=jnp.bfloat16).apply({"params": params}, jnp.asarray(images))
    factor = BF16_FACTOR[4] if impl == "winograd4" else BF16_FACTOR[2]
    for name in names:
        theirs = expected[name].permute(0, 2, 3, 1).numpy()
        assert relative_error(np.asarray(ours[name]), theirs) < 1e-4, name
        assert relative_error(np.asarray(ours[name]), np.asarray(xla[name])) < 1e-4, name
        low_error = relative_error(np.asarray(low[name], np.float32), np.asarray(xla[name]))
        xla_low_error = relative_error(np.asarray(xla_low[name], np.float32), np.asarray(xla[name]))
        assert low_error < factor * max(xla_low_error, 2 ** -9), (name, low_error, xla_low_error)


def test_transformed_params_equal_transforming_in_the_call():
    params = backbones.init_backbone(jax.random.PRNGKey(0), "vgg16")
    images = jnp.asarray(np.random.RandomState(0).uniform(0, 255, (1, 40, 56, 3)), jnp.float32)
    net = backbones.Backbone("vgg16", ("relu5_3",), conv_impl="winograd4")
    prepared = winograd.transform_params(params, "vgg16", "winograd4")
    assert set(prepared["conv3_1"]) == {"kernel", "bias", "winograd4"}
    assert prepared["conv3_1"]["winograd4"].shape == (36, 128, 256)
    np.testing.assert_array_equal(np.asarray(net.apply({"params": params}, images)["relu5_3"]),
                                  np.asarray(net.apply({"params": prepared}, images)["relu5_3"]))
    assert winograd.transform_params(params, "vgg16", "xla") == params


def test_auto_uses_the_rule_of_the_platform():
    rule = winograd.AUTO_RULES[("cpu", "float32")]
    small = (1, 24, 32, rule.min_channels)
    large = (1, 384, 512, rule.min_channels)
    assert winograd.tile_for("auto", 3, 1, 1, small, "float32", platform="cpu") == rule.tile
    assert winograd.tile_for("auto", 3, 1, 1, large, "float32", platform="cpu") == 0
    assert winograd.tile_for("auto", 3, 1, 1, (1, 24, 32, 3), "float32", platform="cpu") == 0
    assert winograd.tile_for("auto", 3, 1, 1, small, "float32", platform="gpu") == 0  # cuDNN stays
    assert winograd.tile_for("winograd2", 3, 1, 1, large, "float32") == 2
    assert winograd.tile_for("winograd4", 11, 4, 2, large, "float32") == 0  # AlexNet's conv1
    assert winograd.tile_for("winograd4", 5, 1, 2, large, "float32") == 0  # and conv2


def test_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        winograd.check_impl("fft")
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        dataclasses.replace(deepgaze1(), conv_impl="fft")
    with pytest.raises(ValueError, match="tile must be one of"):
        winograd.filter_transform(jnp.zeros((3, 3, 2, 2)), 3)
    with pytest.raises(ValueError, match=r"needs a \(3, 3, C_in, C_out\) kernel"):
        winograd.filter_transform(jnp.zeros((5, 5, 2, 2)), 2)
    with pytest.raises(ValueError, match="do not fit"):
        winograd.conv3x3(jnp.zeros((1, 4, 4, 3)), jnp.zeros((16, 2, 2)), None, 2)


def test_whole_models_agree_and_winograd_features_have_their_own_cache_key():
    """DeepGaze I and II (random weights) log densities within 1e-4 nats of the direct model; the
    feature-cache key of the XLA model is unchanged and a Winograd model's differs."""
    for model in (deepgaze1(), deepgaze2("vgg16")):
        params = model.init(jax.random.PRNGKey(1))
        images = jnp.asarray(np.random.RandomState(2).uniform(0, 255, (1, 96, 128, 3)), jnp.float32)
        cb = jnp.zeros((1, 96, 128), jnp.float32) - np.log(96 * 128)
        ref = np.asarray(model.apply(params, images, cb))
        for impl in ("winograd2", "winograd4"):
            fast = dataclasses.replace(model, conv_impl=impl)
            prepared = {**params, "backbone": winograd.transform_params(params["backbone"], model.backbone, impl)}
            assert np.abs(np.asarray(fast.apply(prepared, images, cb)) - ref).max() < 1e-4
            key = feature_cache.cache_key(fast, params["backbone"], "d", ["a"], np.array([[96, 128]]))
            assert key["model"]["conv_impl"] == {"impl": impl}
        key = feature_cache.cache_key(model, params["backbone"], "d", ["a"], np.array([[96, 128]]))
        assert "conv_impl" not in key["model"]


def test_load_predictor_transforms_the_filters_once_and_predicts_the_same(tmp_path, capsys):
    from deepgaze_jax import cli
    from deepgaze_jax.predict import load_predictor

    image = np.random.RandomState(3).randint(0, 255, (96, 128, 3)).astype(np.uint8)
    direct_predictor = load_predictor("deepgaze1")
    fast = load_predictor("deepgaze1", conv_impl="winograd4")
    assert fast.model.conv_impl == "winograd4" and direct_predictor.model.conv_impl == "xla"
    assert "winograd4" in fast.backbone["conv3"] and "winograd4" not in direct_predictor.backbone["conv3"]
    assert np.abs(fast.predict(image) - direct_predictor.predict(image)).max() < 1e-4
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "a.png")
    assert cli.main(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--conv-impl", "auto"]) == 0
    assert np.abs(np.load(tmp_path / "out" / "a.npy") - direct_predictor.predict(image)).max() < 1e-4
    with pytest.raises(SystemExit):
        cli.main(["predict", str(tmp_path / "a.png"), "--conv-impl", "fft"])
    assert "invalid choice: 'fft'" in capsys.readouterr().err
