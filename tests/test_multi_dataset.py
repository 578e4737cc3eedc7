"""Training on several datasets at once, the keyed feature cache, and config validation."""

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from deepgaze_jax import feature_cache
from deepgaze_jax import input_pipeline as P
from deepgaze_jax import train as T
from deepgaze_jax.config import TrainConfig
from deepgaze_jax.backbones import init_backbone
from deepgaze_jax.model import deepgaze1
from tests.test_train import CONFIG, centerbias, synthetic


@pytest.fixture(scope="module")
def parts():
    """Two small synthetic datasets (sources) with their AlexNet features (random weights)."""
    model = deepgaze1()
    backbone = init_backbone(jax.random.PRNGKey(0), "alexnet")
    out = []
    for seed in (0, 1):
        images, xs, ys = synthetic(n=8, seed=seed)
        features = feature_cache.compute_features(model, backbone, images, progress=False)
        out.append(P.FixationSet(features, [im.shape[:2] for im in images], xs, ys, max_fixations=16))
    return out


def flat_centerbias(shape):
    return np.full(shape, -math.log(shape[0] * shape[1]), np.float32)


def test_join_numbers_sources_and_batches_never_mix_them(parts):
    joint = P.FixationSet.join(parts)
    assert len(joint) == 16 and joint.source_count == 2
    assert [joint.source(i) for i in range(16)] == [0] * 8 + [1] * 8
    seen = []
    for batch in P.batches(joint, 3, seed=5):
        real = batch.indices[batch.weight > 0]
        assert {joint.source(i) for i in real} == {batch.source}
        seen += list(real)
    assert sorted(seen) == list(range(16))
    sub = joint.subset([9, 2])
    assert [sub.source(0), sub.source(1)] == [1, 0]


def test_each_source_gets_its_own_center_bias(parts):
    joint = P.FixationSet.join(parts)
    model = deepgaze1()
    head = model.init_head(jax.random.PRNGKey(1))
    evaluator = T.Evaluator(model)
    both = evaluator.evaluate(head, joint, [centerbias, flat_centerbias], 4)
    np.testing.assert_allclose(both[:8], evaluator.evaluate(head, parts[0], centerbias, 4), rtol=1e-6)
    np.testing.assert_allclose(both[8:], evaluator.evaluate(head, parts[1], flat_centerbias, 4), rtol=1e-6)
    assert not np.allclose(both[8:], evaluator.evaluate(head, parts[1], centerbias, 4))
    with pytest.raises(ValueError, match="one center bias for a single source"):
        evaluator.evaluate(head, joint, centerbias, 4)
    with pytest.raises(ValueError, match="center biases for 1 sources"):
        evaluator.evaluate(head, joint, [centerbias], 4)


def test_loss_weights_by_image_fixation_and_dataset():
    xs = [np.zeros(k, np.float32) for k in (1, 3, 2, 2)]
    data = P.FixationSet([np.zeros((2, 2, 1))] * 4, [(4, 4)] * 4, xs, xs, 4, sources=[0, 0, 0, 1])
    np.testing.assert_allclose(P.loss_weights(data, "image"), [1, 1, 1, 1])
    np.testing.assert_allclose(P.loss_weights(data, "fixation"), np.array([1, 3, 2, 2]) * 4 / 8)
    # each dataset the same total: 3 images share one half, the fourth has the other half
    np.testing.assert_allclose(P.loss_weights(data, "dataset"), [2 / 3, 2 / 3, 2 / 3, 2])
    np.testing.assert_allclose(P.loss_weights(data, "image", (1.0, 0.5)), np.array([1, 1, 1, 0.5]) * 4 / 3.5)
    with pytest.raises(ValueError, match="names 1 sources, the data has 2"):
        P.loss_weights(data, "image", (1.0,))


def test_weighted_loss_is_the_weighted_mean_of_image_log_likelihoods(parts):
    joint = P.FixationSet.join(parts)
    model = deepgaze1()
    head = model.init_head(jax.random.PRNGKey(2))
    weights = P.loss_weights(joint, "dataset", (1.0, 0.25))
    trainer = T.Trainer(model, T.make_optimizer(CONFIG, 1))
    per_image = T.Evaluator(model).evaluate(head, joint, [centerbias, flat_centerbias], 4)
    batch = P.batches(joint, 4, seed=1, weights=weights)[0]
    cb = P.centerbias_of([centerbias, flat_centerbias], batch)
    loss = float(trainer._loss(head, *trainer.put_batch(batch, cb)))
    real = batch.indices[batch.weight > 0]
    expected = -(per_image[real] * weights[real]).sum() / len(real)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert not np.isclose(loss, -per_image[real].mean(), rtol=1e-3)  # the weights do change it


def test_joint_fit_with_weights_is_recorded_and_resumes(parts, tmp_path):
    config = dataclasses.replace(CONFIG, weighting="dataset", source_weights=(1.0, 0.5))
    train = P.FixationSet.join([parts[0].subset(range(6)), parts[1]])
    val = parts[0].subset(range(6, 8))
    cbs = [centerbias, flat_centerbias]
    straight = T.fit(config, train, val, cbs, workdir=tmp_path / "a", progress=False)
    T.fit(config, train, val, cbs, workdir=tmp_path / "b", progress=False, stop_after_epochs=1)
    resumed = T.fit(config, train, val, cbs, workdir=tmp_path / "b", progress=False)
    for x, y in zip(jax.tree.leaves(straight.final_state), jax.tree.leaves(resumed.final_state)):
        np.testing.assert_array_equal(x, y)
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["weighting"] == "dataset" and saved["source_weights"] == [1.0, 0.5]
    plain = T.fit(CONFIG, train, val, cbs, progress=False)
    assert not np.allclose(plain.best_params["readout"]["conv0"]["kernel"],
                           straight.best_params["readout"]["conv0"]["kernel"])


def test_fit_continues_from_init_head(parts):
    train, val = parts[0].subset(range(6)), parts[0].subset(range(6, 8))
    first = T.fit(CONFIG, train, val, centerbias, progress=False)
    one = dataclasses.replace(CONFIG, max_epochs=1, learning_rate=1e-9)
    tuned = T.fit(one, train, val, centerbias, progress=False, init_head=first.best_params)
    for x, y in zip(jax.tree.leaves(first.best_params), jax.tree.leaves(tuned.best_params)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)  # a vanishing rate keeps the start
    with pytest.raises(ValueError, match="does not fit"):
        T.fit(one, train, val, centerbias, progress=False, init_head={"readout": {}})


def test_decay_to_init_pulls_kernels_toward_the_start_and_is_adamw_at_zero():
    """L2-SP: the decoupled weight decay pulls kernels toward the anchor (biases never decay)."""
    config = dataclasses.replace(CONFIG, weight_decay=0.5, schedule="constant", learning_rate=0.1,
                                 decay_to_init=True)
    rng = np.random.default_rng(0)
    params = {"conv": {"kernel": rng.normal(size=(3, 4)).astype(np.float32),
                       "bias": rng.normal(size=(4,)).astype(np.float32)}}
    grads = [jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params) for _ in range(5)]

    def run(tx, steps, grads_of):
        p, state = params, tx.init(params)
        for k in range(steps):
            updates, state = tx.update(grads_of(k), state, p)
            p = jax.tree.map(lambda a, u: np.asarray(a + u), p, updates)
        return p

    zero = jax.tree.map(np.zeros_like, params)
    toward_zero = run(T.make_optimizer(config, 1, anchor=zero), 5, lambda k: grads[k])
    adamw = run(T.make_optimizer(dataclasses.replace(config, decay_to_init=False), 1), 5, lambda k: grads[k])
    for x, y in zip(jax.tree.leaves(toward_zero), jax.tree.leaves(adamw)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    no_grad = lambda k: zero  # noqa: E731  (Adam's step is 0: only the decay moves the params)
    kept = run(T.make_optimizer(config, 1, anchor=params), 10, no_grad)
    np.testing.assert_array_equal(kept["conv"]["kernel"], params["conv"]["kernel"])
    shrunk = run(T.make_optimizer(config, 1, anchor=zero), 10, no_grad)
    np.testing.assert_allclose(shrunk["conv"]["kernel"], params["conv"]["kernel"] * (1 - 0.1 * 0.5) ** 10, rtol=1e-5)
    np.testing.assert_array_equal(shrunk["conv"]["bias"], params["conv"]["bias"])
    with pytest.raises(ValueError, match="decay_to_init needs weight_decay > 0"):
        TrainConfig(decay_to_init=True)


def test_a_loss_that_turns_non_finite_stops_the_run(parts, tmp_path):
    bad = parts[0].subset(range(6))
    bad.features[0] = np.full_like(bad.features[0], np.nan)
    with pytest.raises(FloatingPointError, match="non-finite in epoch 1"):
        T.fit(CONFIG, bad, parts[0].subset(range(6, 8)), centerbias, workdir=tmp_path, progress=False)
    assert not (tmp_path / "best").exists() or not any((tmp_path / "best").iterdir())


@pytest.mark.parametrize("values, message", [
    ({"learning_rate": float("nan")}, "learning_rate must be finite"),
    ({"learning_rate": float("inf")}, "learning_rate must be finite"),
    ({"weight_decay": float("nan")}, "weight_decay must be finite"),
    ({"source_weights": [1.0, float("nan")]}, "source_weights must be finite"),
    ({"learning_rate": 5.0}, r"learning_rate must be in \(0, 1\]"),
    ({"decay_factor": 0.0}, "decay_factor"),
    ({"patience": 0}, "patience must be >= 1"),
    ({"weighting": "fixations"}, "weighting must be"),
    ({"source_weights": [0, 0]}, "not all 0"),
    ({"source_weights": ["a"]}, "list of numbers"),
])
def test_config_rejects_bad_values(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


def test_config_from_json_rejects_nan_and_non_objects():
    with pytest.raises(ValueError, match="learning_rate must be finite"):
        TrainConfig.from_json('{"learning_rate": NaN}')
    with pytest.raises(ValueError, match="expected a JSON object"):
        TrainConfig.from_json("[1, 2]")
    assert TrainConfig.from_json('{"source_weights": [1, 2]}').source_weights == (1.0, 2.0)


class _Images:
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


@dataclasses.dataclass
class _Dataset:
    images: _Images
    image_ids: tuple
    sizes: np.ndarray

    def __len__(self):
        return len(self.image_ids)


def test_feature_cache_is_keyed_on_backbone_dataset_and_images(tmp_path):
    model = deepgaze1()
    images, _, _ = synthetic(n=3)
    ds = _Dataset(_Images(images), ("a", "b", "c"), np.array([im.shape[:2] for im in images]))
    real = init_backbone(jax.random.PRNGKey(0), "alexnet")
    zero = jax.tree.map(np.zeros_like, real)
    first = feature_cache.cached_features(model, real, ds, tmp_path, "toy")
    # another backbone (all-zero weights) must not read the real one's features
    other = feature_cache.cached_features(model, zero, ds, tmp_path, "toy")
    assert not np.allclose(first[0], other[0])
    assert len(list(tmp_path.glob("features_*.npz"))) == 2
    # another dataset name, other image ids or sizes, mirrored images: other keys, other files
    keys = {json.dumps(feature_cache.cache_key(model, real, *args), sort_keys=True) for args in [
        ("toy", ds.image_ids, ds.sizes), ("toy2", ds.image_ids, ds.sizes), ("toy", ("a", "b", "d"), ds.sizes),
        ("toy", ds.image_ids, ds.sizes + 1), ("toy", ds.image_ids, ds.sizes, True)]}
    assert len(keys) == 5
    key = feature_cache.cache_key(model, real, "toy", ds.image_ids, ds.sizes)
    for other_model in (dataclasses.replace(model, dtype="bfloat16"), dataclasses.replace(model, downsample=1),
                        dataclasses.replace(model, layers=("relu5",))):
        assert feature_cache.cache_key(other_model, real, "toy", ds.image_ids, ds.sizes) != key
    # the readout and finalizer do not change the features: their caches are shared
    same = dataclasses.replace(model, readout_channels=(4, 1), readout_bias=True, initial_sigma=3.0)
    assert feature_cache.cache_key(same, real, "toy", ds.image_ids, ds.sizes) == key
    # a hit returns the stored features without running the backbone
    ds.images.images = None
    again = feature_cache.cached_features(model, real, ds, tmp_path, "toy")
    np.testing.assert_array_equal(again[2], first[2])


def test_feature_cache_convolves_by_the_asked_impl_and_keys_it(tmp_path):
    """Caches default to `auto`; `xla` and `winograd4` features are other files, equal up to rounding."""
    model = deepgaze1()
    images, _, _ = synthetic(n=2)
    ds = _Dataset(_Images(images), ("a", "b"), np.array([im.shape[:2] for im in images]))
    real = init_backbone(jax.random.PRNGKey(0), "alexnet")
    auto = feature_cache.cached_features(model, real, ds, tmp_path, "toy")
    xla = feature_cache.cached_features(model, real, ds, tmp_path, "toy", conv_impl="xla")
    four = feature_cache.cached_features(model, real, ds, tmp_path, "toy", conv_impl="winograd4")
    impls = sorted(json.loads(str(np.load(f)["key"]))["model"].get("conv_impl", {"impl": "xla"})["impl"]
                   for f in tmp_path.glob("features_*.npz"))
    assert impls == ["auto", "winograd4", "xla"]
    for other in (auto, four):  # AlexNet's 3x3 layers; float32 rounding of the transforms
        for a, b in zip(other, xla):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())
    assert not all(np.array_equal(a, b) for a, b in zip(four, xla))  # Winograd did run
    assert TrainConfig().feature_conv_impl == "auto"
    with pytest.raises(ValueError, match=r"feature_conv_impl must be one of \['xla', 'winograd2', 'winograd4', 'auto'\], got 'fft'"):
        TrainConfig(feature_conv_impl="fft")


def test_feature_cache_file_of_another_key_or_truncated_is_not_read(tmp_path):
    model = deepgaze1()
    backbone = init_backbone(jax.random.PRNGKey(0), "alexnet")
    key = feature_cache.cache_key(model, backbone, "toy", ("a",), np.array([[8, 8]]))
    path = feature_cache.cache_path(tmp_path, key)
    feature_cache.write(path, key, [np.ones((1, 1, 256), np.float32)])
    assert feature_cache.read(path, key) is not None
    assert feature_cache.read(path, {**key, "dataset": "other"}) is None
    path.write_bytes(path.read_bytes()[:100])
    assert feature_cache.read(path, key) is None
    with pytest.raises(ValueError, match="2 feature maps for a key of 1 images"):
        feature_cache.write(path, key, [np.ones(1)] * 2)
