"""DeepGaze III (deepgaze_jax.deepgaze3): parity with a PyTorch forward pass of the reference semantics
(tests/torch_deepgaze3.py), the empty history as the spatial model, fixation lookup, batching over
histories, gradients and history validation.

The backbone is a small random VGG-16 slice (blocks 2 and 3, two resolutions) on small images, with the
reference DeepGaze III grid constants (downsample 2, readout factor 4, saliency map factor 4).
"""

import jax
import numpy as np
import pytest
import torch

from deepgaze_jax.deepgaze3 import DeepGazeIII, check_history
from deepgaze_jax.model import DeepGaze
from tests import torch_deepgaze3
from tests.test_model import random_centerbias, random_images

SPATIAL = DeepGaze(backbone="vgg16", layers=("conv2_2", "relu3_1", "conv3_2"), readout_channels=(8, 16, 1),
                   readout_bias=False, readout_kind="iie", downsample=2, readout_factor=4, saliency_map_factor=4)
MODEL = DeepGazeIII(SPATIAL, history=4)
SPATIAL_MODEL = MODEL.with_history(0)
SQUARE_GRID = (96, 128)  # a multiple of every grid factor: readout 12x16 (block 3's own grid), saliency map 24x32
ODD = (101, 141)  # readout 13x18 from block 3's 12x17 and block 2's 25x35, saliency map 25x35
N_CONVS = 6  # conv1_1 .. conv3_2


def perturbed(tree, seed, keys=("norm_scale", "norm_shift", "bias")):
    """Layer-norm scales (1 + noise), shifts and bias layers moved away from their identity / zero init,
    so that every parameter matters; the finalizer's sigma small enough for the blur to keep detail."""
    rng = np.random.default_rng(seed)

    def move(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        leaf = np.asarray(leaf)
        if name == "sigma":
            return np.float32(2.5)
        if name == "center_bias_weight":
            return np.float32(0.7)
        if any(name.endswith(k) for k in keys):
            return (leaf + rng.normal(0.0, 0.3, leaf.shape)).astype(np.float32)
        return leaf

    return jax.tree_util.tree_map_with_path(move, tree)


@pytest.fixture(scope="module")
def setup():
    features, backbone = torch_deepgaze3.vgg_features("vgg16", seed=0)
    # jitted: op by op, the random initialisation would compile dozens of small programs
    spatial_head = perturbed(jax.jit(SPATIAL_MODEL.init_head)(jax.random.PRNGKey(1)), seed=2)
    head = jax.tree.map(np.array, jax.jit(MODEL.extend_head)(spatial_head, jax.random.PRNGKey(3)))
    # only the parts extend_head made new: the carried-over ones stay those of the spatial head
    head["scanpath"] = perturbed(head["scanpath"], seed=4)
    head["selection"]["conv0"] = perturbed(head["selection"]["conv0"], seed=5,
                                           keys=("scanpath_norm_scale", "scanpath_norm_shift"))
    return {"backbone": backbone, "head": head, "spatial_head": spatial_head,
            # the features of inputs(SQUARE_GRID)'s images, for the tests that run the head alone
            "features_sq": MODEL.features(backbone, inputs(SQUARE_GRID)[0]),
            "torch": torch_deepgaze3.build(MODEL, features, head),
            "torch_spatial": torch_deepgaze3.build(SPATIAL_MODEL, features, spatial_head)}


def histories(height, width):
    """(2, 4, 4, 2) float32: per image, histories of 1, 2, 3 and 4 fixations (image 1: 4, 3, 2, 1), most
    recent first, NaN-padded, on every border of the image and between pixels."""
    h, w = height - 1.0, width - 1.0
    rows = [[(0.0, 0.0)],
            [(w, h), (0.0, h)],
            [(w, 0.0), (37.5, 20.25), (0.0, 0.0)],
            [(12.3, 55.7), (w, 31.0), (64.0, h), (0.0, 7.9)]]
    out = np.full((4, 4, 2), np.nan, np.float32)
    for n, fixations in enumerate(rows):
        out[n, : len(fixations)] = fixations
    return np.stack([out, out[::-1]])


def inputs(size, seed=0):
    return random_images(2, *size, seed=seed), random_centerbias(2, *size, seed=seed), histories(*size)


def torch_forward(net, images, centerbias, history=None):
    """The torch model on every (image, history) pair: images repeated once per history."""
    b, n = (images.shape[0], 1) if history is None else history.shape[:2]
    image = torch.from_numpy(images).permute(0, 3, 1, 2).repeat_interleave(n, 0)
    cb = torch.from_numpy(centerbias).repeat_interleave(n, 0)
    with torch.no_grad():
        if history is None:
            return net(image, cb).numpy()
        flat = torch.from_numpy(history.reshape(b * n, *history.shape[2:]))
        return net(image, cb, flat[..., 0], flat[..., 1]).numpy().reshape(b, n, *images.shape[1:3])


@pytest.mark.parametrize("size", [SQUARE_GRID, ODD], ids=["96x128", "101x141"])
def test_matches_torch_reference_semantics(setup, size):
    images, centerbias, history = inputs(size)
    if size == ODD:  # the whole model
        ours = np.asarray(MODEL.apply({"backbone": setup["backbone"], "head": setup["head"]}, images, centerbias,
                                      history))
    else:  # the head on the backbone's features (compiled once for the tests below)
        ours = np.asarray(MODEL.head(setup["head"], setup["features_sq"], centerbias, history))
    expected = torch_forward(setup["torch"], images, centerbias, history)
    assert ours.shape == expected.shape == (2, 4, *size)
    diff = float(np.abs(ours - expected).max())
    print(f"DeepGaze III {size} ({'apply' if size == ODD else 'head'}): max |ours - torch| = {diff:.2e} nats")
    # Log densities of about -10 nats, where float32 values are 1e-6 apart; the two frameworks sum the
    # 640-channel readout, the layer-norm statistics and the blur in other orders (measured: 2e-6, two
    # such spacings). 1e-4 leaves 50x room for that and stays below the smallest semantic slip we tried
    # on the torch side (101x141): history maps at pixel centres (x + 0.5) 9e-4, missing slots keeping
    # their conv bias 1e-3, bilinear instead of nearest resizing of the maps 7e-3, slots reversed 0.2.
    assert diff < 1e-4
    np.testing.assert_allclose(jax.nn.logsumexp(ours, axis=(2, 3)), 0.0, atol=1e-5)
    # not vacuous: the histories change the prediction
    assert np.abs(ours[:, 1:] - ours[:, :1]).max() > 1e-1


def test_empty_history_is_the_spatial_model(setup):
    images, centerbias, _ = inputs(SQUARE_GRID)
    empty = np.full((2, 1, 4, 2), np.nan, np.float32)
    feats = setup["features_sq"]
    scanpath = np.asarray(MODEL.head(setup["head"], feats, centerbias, empty))[:, 0]
    spatial = np.asarray(SPATIAL_MODEL.head(setup["spatial_head"], feats, centerbias))
    np.testing.assert_allclose(scanpath, spatial, atol=1e-5, rtol=0)  # a few float32 spacings: other fusions
    expected = torch_forward(setup["torch_spatial"], images, centerbias)
    diff = float(np.abs(spatial - expected).max())
    print(f"spatial model {SQUARE_GRID}: max |ours - torch| = {diff:.2e} nats")
    assert diff < 1e-4  # the tolerance of the parity test above
    # the torch scanpath model does not define an empty history (the reference breaks on it)
    with pytest.raises(ValueError, match="without any fixation"):
        torch_forward(setup["torch"], images, centerbias, empty)


def test_log_density_at_equals_the_map_lookup(setup):
    images, centerbias, history = inputs(SQUARE_GRID)
    feats = setup["features_sq"]
    full = np.asarray(MODEL.head(setup["head"], feats, centerbias, history))
    h, w = SQUARE_GRID
    rng = np.random.default_rng(7)
    xs = rng.uniform(0, w, (2, 4)).astype(np.float32)
    ys = rng.uniform(0, h, (2, 4)).astype(np.float32)
    xs[0], ys[0] = [0.0, w - 0.01, w - 1.0, 70.5], [h - 0.5, 0.0, h - 1.0, 0.99]
    at = np.asarray(MODEL.log_density_at(setup["head"], feats, centerbias, xs, ys, history))
    expected = np.array([[full[b, n, int(ys[b, n]), int(xs[b, n])] for n in range(4)] for b in range(2)])
    np.testing.assert_allclose(at, expected, atol=1e-6, rtol=0)


def _convolutions(jaxpr, found):
    """Input shapes of every convolution in a jaxpr, nested calls included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            found.append(tuple(eqn.invars[0].aval.shape))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    _convolutions(sub, found)
    return found


def test_backbone_runs_once_per_image_and_histories_batch(setup):
    images, centerbias, history = inputs(SQUARE_GRID)
    params = {"backbone": setup["backbone"], "head": setup["head"]}
    # Every convolution sees the 2 images, not the 2 x 4 (image, history) pairs, whatever the number of
    # histories. (model.features traces the backbone once per requested layer; XLA merges the copies
    # into N_CONVS convolutions when it compiles.)
    counts = []
    for hist in (history, history[:, :1]):
        convs = _convolutions(jax.make_jaxpr(MODEL.apply)(params, images, centerbias, hist).jaxpr, [])
        assert {shape[0] for shape in convs} == {2} and len(convs) % N_CONVS == 0, convs
        counts.append(len(convs))
    assert counts[0] == counts[1]

    feats = setup["features_sq"]
    full = np.asarray(MODEL.head(setup["head"], feats, centerbias, history))
    for n in range(4):
        single = np.asarray(MODEL.head(setup["head"], feats, centerbias, history[:, n: n + 1]))
        np.testing.assert_allclose(single, full[:, n: n + 1], atol=1e-5, rtol=0)
    vmapped = jax.vmap(lambda hist: MODEL.head(setup["head"], feats, centerbias, hist), in_axes=1, out_axes=1)(
        history[:, :, None])
    np.testing.assert_allclose(np.asarray(vmapped)[:, :, 0], full, atol=1e-5, rtol=0)


def test_head_gradients_are_finite_and_reach_every_parameter(setup):
    images, centerbias, history = inputs(SQUARE_GRID)
    feats = setup["features_sq"]
    xs = np.array([[10.0, 60.0, 127.0, 0.0], [100.5, 3.0, 64.0, 30.0]], np.float32)
    ys = np.array([[5.0, 90.0, 47.0, 0.0], [20.0, 95.0, 48.5, 70.0]], np.float32)

    def loss(head, hist):
        return MODEL.log_density_at(head, feats, centerbias, xs, ys, hist).sum()

    grad = jax.jit(jax.grad(loss))  # compiled once for both histories
    grads = grad(setup["head"], history)  # 1 to 4 fixations: every slot used somewhere
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        g = np.asarray(g)
        assert np.isfinite(g).all() and np.abs(g).max() > 0, jax.tree_util.keystr(path)
    for k in range(4):
        assert np.abs(np.asarray(grads["scanpath"]["encoding"]["kernel"][k])).max() > 0, k

    # only the most recent slot filled, and one history empty: finite, and the missing slots get none
    sparse = np.full_like(history, np.nan)
    sparse[:, :3, 0] = history[:, :3, 0]
    grads = grad(setup["head"], sparse)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    encoding = grads["scanpath"]["encoding"]
    assert np.abs(np.asarray(encoding["kernel"][0])).max() > 0
    assert float(np.abs(np.asarray(encoding["kernel"][1:])).max()) == 0.0
    assert float(np.abs(np.asarray(encoding["bias"][1:])).max()) == 0.0


def test_differentiable_with_respect_to_the_image(setup):
    images, centerbias, history = inputs(SQUARE_GRID, seed=4)
    params = {"backbone": setup["backbone"], "head": setup["head"]}

    def score(img):
        return MODEL.apply(params, img, centerbias, history)[0, 2, 40, 50]

    value_and_grad = jax.jit(jax.value_and_grad(score))  # one compilation for the gradient and the values
    _, grad = value_and_grad(images)
    grad = np.asarray(grad)
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0
    # Central difference along the gradient's direction, a step of L2 norm 1 in pixel values (0..255):
    # small enough to stay linear (ratio 0.998 at 0.5 to 2), large enough for float32 scores of ~-10.
    eps = 1.0
    step = (eps * grad / np.linalg.norm(grad)).astype(np.float32)
    slope = (float(value_and_grad(images + step)[0]) - float(value_and_grad(images - step)[0])) / (2 * eps)
    print(f"image gradient: |grad| = {np.linalg.norm(grad):.4g}, central difference {slope:.4g}")
    np.testing.assert_allclose(slope, np.linalg.norm(grad), rtol=2e-2)


def test_history_arguments_are_checked(setup):
    images, centerbias, history = inputs(SQUARE_GRID)
    feats = setup["features_sq"]
    with pytest.raises(ValueError, match="pass a history"):
        MODEL.head(setup["head"], feats, centerbias)
    with pytest.raises(ValueError, match=r"history must have shape \(\.\.\., 4, 2\)"):
        MODEL.head(setup["head"], feats, centerbias, history[:, :, :3])


def test_check_history():
    shape = (96, 128)  # (H, W)
    out = check_history([[10.0, 20.0], [127.0, 95.0], [0.0, 0.0]], shape, 4)
    assert out.dtype == np.float32 and out.shape == (4, 2)
    np.testing.assert_array_equal(out[:3], [[0.0, 0.0], [127.0, 95.0], [10.0, 20.0]])  # most recent first
    assert np.isnan(out[3]).all()
    assert np.isnan(check_history(np.zeros((0, 2)), shape, 4)).all()
    np.testing.assert_array_equal(check_history([[127.75, 95.5]], shape, 1), [[127.75, 95.5]])  # last pixels

    with pytest.raises(ValueError, match=r"history fixation 1 is not finite: \(nan, 3\.0\)"):
        check_history([[1.0, 2.0], [np.nan, 3.0]], shape, 4)
    with pytest.raises(ValueError, match="history fixation 0 is not finite"):
        check_history([[np.inf, 2.0]], shape, 4)
    with pytest.raises(ValueError, match=r"fixation 1 at \(x, y\) = \(128\.0, 5\.0\) lies outside the 128x96 image"):
        check_history([[1.0, 2.0], [128.0, 5.0]], shape, 4)
    with pytest.raises(ValueError, match="outside the 128x96 image"):
        check_history([[1.0, -0.5]], shape, 4)
    with pytest.raises(ValueError, match="outside the 128x96 image"):
        check_history([[1.0, 96.0]], shape, 4)
    with pytest.raises(ValueError, match="the history has 5 fixations; this model reads at most 4"):
        check_history(np.ones((5, 2)), shape, 4)
    with pytest.raises(ValueError, match=r"a history is \(n, 2\) fixations \(x, y\); got shape \(3,\)"):
        check_history([1.0, 2.0, 3.0], shape, 4)
    with pytest.raises(ValueError, match=r"got shape \(2, 3\)"):
        check_history(np.ones((2, 3)), shape, 4)
