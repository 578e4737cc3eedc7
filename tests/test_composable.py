"""DeepGaze inside other JAX models (deepgaze_jax.composable): gradients against finite differences, the
frozen backbone under jax.grad, optax, linen and NNX, parity with Predictor.log_density under jit, vmap
and sharding, the losses against scipy and hand-computed cases, and bad input."""

import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special
import scipy.stats
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from deepgaze_jax import composable
from deepgaze_jax.baselines import CenterBias
from deepgaze_jax.model import deepgaze1
from deepgaze_jax.predict import Predictor

# 96x128 is about the smallest DeepGaze I input whose conv5 map has more than one cell (2x3 here); at
# 64x64 it is 1x1, the predicted map flat and its image gradient zero.
SHAPE = (96, 128)


def random_images(batch, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, (batch, *SHAPE, 3)).astype(np.float32)


def region_mask():
    mask = np.zeros(SHAPE, np.float32)
    mask[10:50, 70:120] = 1.0
    return mask


@pytest.fixture(scope="module")
def predictor():
    """A DeepGaze I predictor with a random backbone and two random heads (readout kernels scaled up so
    that the predicted map is far from flat), and a Gaussian center bias."""
    model = deepgaze1()
    backbone = model.init(jax.random.PRNGKey(0))["backbone"]
    heads = [model.init_head(jax.random.PRNGKey(k)) for k in (1, 2)]
    for head in heads:
        head["readout"]["conv0"]["kernel"] = head["readout"]["conv0"]["kernel"] * 20.0
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *heads)
    return Predictor(model, backbone, stacked, CenterBias.gaussian().log_density, ensemble=True)


@pytest.fixture(scope="module")
def centerbias(predictor):
    return np.asarray(predictor.centerbias(SHAPE), np.float32)


def test_image_gradient_matches_central_differences(predictor, centerbias):
    """The gradient of the log attention mass w.r.t. the image, through backbone, readout, blur and
    normalisation, against central differences on the 8 pixels of largest gradient.

    The model computes in float32 (the readout casts its input to float32), so the check is in float32:
    with a step of 0.5 grey levels the rounding error of the difference is ~ulp(8 nats) / 1 ~ 1e-6
    against gradients of ~1e-3, and a step this small crosses few ReLU or max-pool kinks; the observed
    relative error is below 0.3 %, the tolerance 2 %."""
    saliency, params = composable.from_predictor(predictor)
    image = jnp.asarray(random_images(1))
    mask = region_mask()
    f = jax.jit(lambda x: composable.log_attention_mass(saliency(params, x, centerbias), mask)[0])
    grad = np.asarray(jax.grad(f)(image)).ravel()
    eps = 0.5
    for index in np.argsort(-np.abs(grad))[:8]:
        step = np.zeros(image.size, np.float32)
        step[index] = eps
        step = jnp.asarray(step.reshape(image.shape))
        central = (float(f(image + step)) - float(f(image - step))) / (2 * eps)
        np.testing.assert_allclose(central, grad[index], rtol=2e-2)
    assert np.abs(grad).max() > 1e-4  # the check above compared something


def test_backbone_gets_exactly_zero_gradient_and_readout_only_when_asked(predictor, centerbias):
    images = random_images(1)
    mask = region_mask()
    for train_readout in (False, True):
        saliency, params = composable.from_predictor(predictor, train_readout=train_readout)
        grads = jax.grad(lambda p: composable.log_attention_mass(saliency(p, images, centerbias), mask).sum())(params)
        assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads["backbone"]))
        heads = grads["heads"]
        if train_readout:
            assert float(jnp.abs(heads["readout"]["conv0"]["kernel"]).max()) > 0
            assert float(jnp.abs(heads["finalizer"]["sigma"]).max()) > 0
        else:
            assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(heads))


def test_equals_predictor_log_density_under_jit_and_vmap(predictor, centerbias):
    """1e-5 nats: the same float32 computation, batched or mapped differently."""
    saliency, params = composable.from_predictor(predictor)
    images = random_images(2, seed=3)
    expected = np.asarray(predictor.log_density(images))
    np.testing.assert_allclose(np.asarray(saliency(params, images, centerbias)), expected, atol=1e-5, rtol=0)
    jitted = jax.jit(saliency)(params, jnp.asarray(images), centerbias)
    np.testing.assert_allclose(np.asarray(jitted), expected, atol=1e-5, rtol=0)
    # The function as an ordinary (leafless) argument of jit; equal descriptions hash alike (static use).
    as_argument = jax.jit(lambda fn, p, x: fn(p, x, centerbias))(saliency, params, images)
    np.testing.assert_allclose(np.asarray(as_argument), expected, atol=1e-5, rtol=0)
    assert jax.tree.leaves(saliency) == []
    again = composable.from_predictor(predictor)[0]
    assert again == saliency and hash(again) == hash(saliency)
    per_image = jax.jit(jax.vmap(saliency, in_axes=(None, 0, None)))(params, images, centerbias)
    np.testing.assert_allclose(np.asarray(per_image), expected, atol=1e-5, rtol=0)
    stacked_cb = np.broadcast_to(centerbias, (2, *SHAPE))
    per_batch = jax.vmap(saliency, in_axes=(None, 0, 0))(params, images[:, None], stacked_cb[:, None])
    np.testing.assert_allclose(np.asarray(per_batch[:, 0]), expected, atol=1e-5, rtol=0)


def test_single_head_predictor_equals_its_log_density(predictor, centerbias):
    head = jax.tree.map(lambda x: x[0], predictor.heads)
    single = Predictor(predictor.model, predictor.backbone, head, predictor.centerbias)
    saliency, params = composable.from_predictor(single)
    assert not saliency.ensemble
    images = random_images(1, seed=4)
    np.testing.assert_allclose(np.asarray(jax.jit(saliency)(params, images, centerbias)),
                               np.asarray(single.log_density(images)), atol=1e-5, rtol=0)


def test_runs_on_a_sharded_batch(predictor, centerbias):
    """The batch axis sharded over a one-device mesh, params replicated (more devices: the test below)."""
    saliency, params = composable.from_predictor(predictor)
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    images = jax.device_put(random_images(2, seed=5), NamedSharding(mesh, PartitionSpec("data")))
    cb = jax.device_put(np.broadcast_to(centerbias, (2, *SHAPE)), NamedSharding(mesh, PartitionSpec("data")))
    replicated = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
    out = jax.jit(saliency)(replicated, images, cb)
    np.testing.assert_allclose(np.asarray(out), np.asarray(predictor.log_density(np.asarray(images))),
                               atol=1e-5, rtol=0)


SHARDED = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from deepgaze_jax import composable
    from deepgaze_jax.baselines import CenterBias
    from deepgaze_jax.model import deepgaze1
    from deepgaze_jax.predict import Predictor
    model = deepgaze1()
    heads = jax.tree.map(lambda *xs: jnp.stack(xs), *[model.init_head(jax.random.PRNGKey(k)) for k in (1, 2)])
    predictor = Predictor(model, model.init(jax.random.PRNGKey(0))["backbone"], heads,
                          CenterBias.gaussian().log_density, ensemble=True)
    saliency, params = composable.from_predictor(predictor)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    images = np.random.RandomState(0).uniform(0, 255, (2, 96, 128, 3)).astype(np.float32)
    cb = np.broadcast_to(predictor.centerbias((96, 128)), (2, 96, 128)).astype(np.float32)
    batch = NamedSharding(mesh, PartitionSpec("data"))
    out = jax.jit(saliency)(jax.device_put(params, NamedSharding(mesh, PartitionSpec())),
                            jax.device_put(images, batch), jax.device_put(cb, batch))
    grad = jax.jit(jax.grad(lambda x: composable.attention_mass(saliency(params, x, cb), cb > -9).sum()))(
        jax.device_put(images, batch))
    reference = np.asarray(predictor.log_density(images))
    print(jax.device_count(), len(out.sharding.device_set), float(np.abs(np.asarray(out) - reference).max()),
          float(np.abs(np.asarray(grad)).max()))
""")


def test_runs_on_a_batch_sharded_over_two_devices():
    """Two CPU devices (XLA_FLAGS in a subprocess): the same log densities as one device, 1e-5 nats."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    devices, used, error, grad = done.stdout.split()[-4:]
    assert (int(devices), int(used)) == (2, 2)
    assert float(error) < 1e-5
    assert 0 < float(grad) < np.inf


class EditedLinen(nn.Module):
    """A trainable additive image offset in front of DeepGaze: a model around the wrapper."""

    deepgaze: composable.DeepGazeLinen

    @nn.compact
    def __call__(self, images, centerbias):
        offset = self.param("offset", nn.initializers.zeros, images.shape[1:], jnp.float32)
        return self.deepgaze(jnp.clip(images + offset[None], 0, 255), centerbias)


def adam_step(params, grads):
    tx = optax.adam(1e-2)
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam computes decay ** int32 count
        updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)


def test_linen_wrapper_keeps_the_backbone_in_its_own_collection(predictor, centerbias):
    """The frozen params sit outside "params"; even an Adam step over every collection leaves the backbone
    bit-identical (its gradient is exactly zero), while the offset and the readout move."""
    saliency, params = composable.from_predictor(predictor, train_readout=True)
    model = EditedLinen(composable.DeepGazeLinen(saliency, params))
    images, mask = random_images(1, seed=6), region_mask()
    variables = model.init(jax.random.PRNGKey(0), images, centerbias)
    assert set(variables) == {"params", composable.FROZEN_COLLECTION}
    assert set(variables["params"]["deepgaze"]) == {"heads"}
    np.testing.assert_allclose(np.asarray(model.apply(variables, images, centerbias)),
                               np.asarray(saliency(params, images, centerbias)), atol=1e-6, rtol=0)

    def loss(v):
        return -composable.log_attention_mass(model.apply(v, images, centerbias), mask).sum()

    grads = jax.jit(jax.grad(loss))(variables)
    new = adam_step(variables, grads)
    for old, now in zip(jax.tree.leaves(variables[composable.FROZEN_COLLECTION]),
                        jax.tree.leaves(new[composable.FROZEN_COLLECTION])):
        assert np.array_equal(np.asarray(old), np.asarray(now))
    assert not np.array_equal(new["params"]["offset"], variables["params"]["offset"])
    kernel = ["params", "deepgaze", "heads", "readout", "conv0", "kernel"]
    assert not np.array_equal(_get(new, kernel), _get(variables, kernel))
    assert float(loss(new)) < float(loss(variables))


def _get(tree, keys):
    for key in keys:
        tree = tree[key]
    return np.asarray(tree)


def test_linen_wrapper_needs_its_params_at_init(predictor, centerbias):
    saliency, _ = composable.from_predictor(predictor)
    with pytest.raises(composable.CompositionInputError, match="init_params"):
        composable.DeepGazeLinen(saliency).init(jax.random.PRNGKey(0), random_images(1), centerbias)


class EditedNNX(nnx.Module):
    def __init__(self, deepgaze: composable.DeepGazeNNX):
        self.offset = nnx.Param(jnp.zeros((*SHAPE, 3), jnp.float32))
        self.deepgaze = deepgaze

    def __call__(self, images, centerbias):
        return self.deepgaze(jnp.clip(images + self.offset[None], 0, 255), centerbias)


@pytest.mark.parametrize("train_readout", [False, True], ids=["frozen_readout", "trained_readout"])
def test_nnx_wrapper_optimizer_step_leaves_the_backbone_bit_identical(predictor, centerbias, train_readout):
    saliency, params = composable.from_predictor(predictor, train_readout=train_readout)
    model = EditedNNX(composable.DeepGazeNNX(saliency, params))
    images, mask = random_images(1, seed=7), region_mask()
    backbone = [np.array(x) for x in jax.tree.leaves(model.deepgaze.backbone.get_value())]
    kernel = np.array(model.deepgaze.heads.get_value()["readout"]["conv0"]["kernel"])
    offset = np.array(model.offset.get_value())
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss(m):
            return -composable.log_attention_mass(m(images, centerbias), mask).sum()
        value, grads = nnx.value_and_grad(loss)(model)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam computes decay ** int32 count
            optimizer.update(model, grads)
        return value

    before = float(step(model, optimizer))
    after = float(-composable.log_attention_mass(model(images, centerbias), mask).sum())
    assert after < before
    for old, now in zip(backbone, jax.tree.leaves(model.deepgaze.backbone.get_value())):
        assert np.array_equal(old, np.asarray(now))
    assert not np.array_equal(offset, np.asarray(model.offset.get_value()))
    moved = not np.array_equal(kernel, np.asarray(model.deepgaze.heads.get_value()["readout"]["conv0"]["kernel"]))
    assert moved == train_readout
    assert isinstance(model.deepgaze.backbone, composable.Frozen)


def test_losses_against_hand_computed_and_scipy_values():
    p = np.array([[0.1, 0.2], [0.3, 0.4]], np.float64)
    q = np.array([[0.4, 0.0], [0.25, 0.35]], np.float64)
    log_p = jnp.asarray(np.log(p)[None], jnp.float32)
    mask = np.array([[1.0, 0.0], [1.0, 0.5]], np.float32)
    np.testing.assert_allclose(composable.attention_mass(log_p, mask), [0.1 + 0.3 + 0.2], rtol=1e-6)
    np.testing.assert_allclose(composable.log_attention_mass(log_p, mask), [np.log(0.6)], rtol=1e-6)
    expected = (np.log(0.1) + np.log(0.3) + 0.5 * np.log(0.4)) / 2.5
    np.testing.assert_allclose(composable.expected_log_density(log_p, mask), [expected], rtol=1e-6)
    with np.errstate(divide="ignore"):
        log_q = jnp.asarray(np.log(q), jnp.float32)  # -inf where the target has no mass
    kl = composable.kl_divergence(log_q, log_p)
    np.testing.assert_allclose(kl, [scipy.stats.entropy(q.ravel(), p.ravel())], rtol=1e-5)
    np.testing.assert_allclose(composable.kl_divergence(log_p, log_p), [0.0], atol=1e-7)
    # An unnormalised target is normalised first; the gradient is finite where the target is zero.
    np.testing.assert_allclose(composable.kl_divergence(log_q + 3.0, log_p), kl, rtol=1e-5)
    grad = jax.grad(lambda lp: composable.kl_divergence(log_q, lp).sum())(log_p)
    np.testing.assert_allclose(grad[0], -q, atol=1e-6)
    logits = jnp.asarray(np.random.RandomState(0).randn(3, 4, 5), jnp.float32)
    normalised = jax.nn.log_softmax(logits.reshape(3, -1)).reshape(3, 4, 5)
    np.testing.assert_allclose(composable.attention_mass(normalised, np.ones((4, 5), np.float32)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(composable.log_attention_mass(logits, np.ones((3, 4, 5), np.float32)),
                               scipy.special.logsumexp(np.asarray(logits), axis=(1, 2)), rtol=1e-6)


@pytest.mark.parametrize("images, message", [
    (np.zeros((1, *SHAPE, 3), np.uint8), "must be float"),
    (np.zeros((1, *SHAPE, 3), np.int32), "must be float"),
    (np.zeros((1, *SHAPE), np.float32), r"shape \(B, H, W, 3\)"),
    (np.zeros((1, *SHAPE, 4), np.float32), r"shape \(B, H, W, 3\)"),
    (np.full((1, *SHAPE, 3), 0.5, np.float32), "not 0..1"),
    (np.full((1, *SHAPE, 3), 300.0, np.float32), "0..255"),
    (np.full((1, *SHAPE, 3), -1.0, np.float32), "0..255"),
    (np.full((1, *SHAPE, 3), np.nan, np.float32), "NaN"),
], ids=["uint8", "int32", "no_channels", "four_channels", "0..1", "above_255", "negative", "nan"])
def test_bad_images_are_refused_before_compute(predictor, centerbias, images, message):
    saliency, params = composable.from_predictor(predictor)
    with pytest.raises(composable.CompositionInputError, match=message):
        saliency(params, images, centerbias)


def test_bad_input_inside_jit(predictor, centerbias):
    """Dtype and shape are static, so jit refuses them too; the range of a tracer cannot be checked."""
    saliency, params = composable.from_predictor(predictor)
    jitted = jax.jit(saliency)
    with pytest.raises(composable.CompositionInputError, match="must be float"):
        jitted(params, np.zeros((1, *SHAPE, 3), np.uint8), centerbias)
    with pytest.raises(composable.CompositionInputError, match="center bias of shape"):
        jitted(params, random_images(1), centerbias[:, :-1])
    assert jitted(params, np.full((1, *SHAPE, 3), 300.0, np.float32), centerbias).shape == (1, *SHAPE)


def test_bad_centerbias_and_maps_are_refused(predictor, centerbias):
    saliency, params = composable.from_predictor(predictor)
    images = random_images(2)
    with pytest.raises(composable.CompositionInputError, match=r"center bias of shape \(3, 96, 128\)"):
        saliency(params, images, np.zeros((3, *SHAPE), np.float32))
    with pytest.raises(composable.CompositionInputError, match=r"center bias of shape \(96, 127\)"):
        saliency(params, images, centerbias[:, :-1])
    with pytest.raises(composable.CompositionInputError, match="float log density"):
        saliency(params, images, np.zeros(SHAPE, np.int32))
    log_p = jnp.zeros((2, 4, 5), jnp.float32)
    with pytest.raises(composable.CompositionInputError, match=r"mask of shape \(4, 4\)"):
        composable.attention_mass(log_p, np.ones((4, 4), np.float32))
    with pytest.raises(composable.CompositionInputError, match="target log density"):
        composable.kl_divergence(jnp.zeros((3, 4, 5), jnp.float32), log_p)
    with pytest.raises(composable.CompositionInputError, match=r"log density must have shape \(B, H, W\)"):
        composable.expected_log_density(log_p[0], np.ones((4, 5), np.float32))
    with pytest.raises(TypeError, match="static DeepGaze Predictor"):
        composable.from_predictor(object())
