"""Training: cached = uncached, exact resume, determinism, data parallelism (multi-process too), config errors."""

import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepgaze_jax import feature_cache, likelihood
from deepgaze_jax import input_pipeline as P
from deepgaze_jax import train as T
from deepgaze_jax.config import TrainConfig
from deepgaze_jax.backbones import init_backbone
from deepgaze_jax.model import deepgaze1

SHAPE = (64, 80)


def centerbias(shape):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cb = -(((yy - shape[0] / 2) / shape[0]) ** 2 + ((xx - shape[1] / 2) / shape[1]) ** 2) * 4
    return (cb - np.log(np.exp(cb).sum())).astype(np.float32)


def synthetic(n=12, seed=0):
    """Images with a bright square that attracts fixations; two image sizes."""
    rng = np.random.RandomState(seed)
    images, xs, ys = [], [], []
    for i in range(n):
        h, w = SHAPE if i % 3 else (SHAPE[1], SHAPE[0])
        image = rng.randint(0, 120, (h, w, 3)).astype(np.uint8)
        cx, cy = rng.randint(12, w - 12), rng.randint(12, h - 12)
        image[cy - 6 : cy + 6, cx - 6 : cx + 6] = 255
        k = rng.randint(3, 15)
        xs.append(np.clip(cx + 3 * rng.randn(k), 0, w - 0.01).astype(np.float32))
        ys.append(np.clip(cy + 3 * rng.randn(k), 0, h - 0.01).astype(np.float32))
        images.append(image)
    return images, xs, ys


@pytest.fixture(scope="module")
def data():
    model = deepgaze1()
    backbone = init_backbone(jax.random.PRNGKey(0), "alexnet")
    images, xs, ys = synthetic()
    features = feature_cache.compute_features(model, backbone, images, progress=False)
    fixations = P.FixationSet(features, [im.shape[:2] for im in images], xs, ys, max_fixations=16)
    return model, backbone, images, fixations


CONFIG = TrainConfig(max_epochs=4, batch_size=2, decay_epochs=(2,), learning_rate=0.01)


def test_cached_and_uncached_steps_agree(data):
    model, backbone, images, fixations = data
    trainer = T.Trainer(model, T.make_optimizer(CONFIG, 3))
    head = model.init_head(jax.random.PRNGKey(1))
    batch = P.batches(fixations, 2, seed=0)[0]
    args = trainer.put_batch(batch, centerbias(batch.shape))
    cached_loss, cached_grads = jax.value_and_grad(trainer._loss)(head, *args)

    pixels = np.stack([images[i] for i in batch.indices])
    cb = np.broadcast_to(centerbias(batch.shape), pixels.shape[:3])

    def uncached(head):
        log_density = model.apply({"backbone": backbone, "head": head}, pixels, cb)
        ll, _ = likelihood.log_likelihood(log_density, batch.xs, batch.ys, batch.mask)
        return -(ll * batch.weight).sum() / batch.weight.sum()

    loss, grads = jax.value_and_grad(uncached)(head)
    np.testing.assert_allclose(cached_loss, loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(cached_grads), jax.tree.leaves(grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_every_image_once_per_epoch(data):
    *_, fixations = data
    for epoch in range(3):
        seen = np.concatenate([b.indices[b.weight > 0] for b in P.batches(fixations, 5, seed=3, epoch=epoch)])
        np.testing.assert_array_equal(np.sort(seen), np.arange(len(fixations)))
        masks = sum(int(b.mask.sum()) for b in P.batches(fixations, 5, seed=3, epoch=epoch))
        assert masks == fixations.fixation_count


def test_training_improves_validation_and_is_deterministic(data):
    *_, fixations = data
    train, val = fixations.subset(range(8)), fixations.subset(range(8, 12))
    a = T.fit(CONFIG, train, val, centerbias, progress=False)
    b = T.fit(CONFIG, train, val, centerbias, progress=False)
    assert a.history[-1]["val_ll"] > a.history[0]["val_ll"] + 0.01
    for x, y in zip(jax.tree.leaves(a.best_params), jax.tree.leaves(b.best_params)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("config", [CONFIG, dataclasses.replace(CONFIG, dropout=0.3, dropout_channels=True)],
                         ids=["plain", "dropout"])
def test_resume_after_interruption_gives_the_same_params(data, tmp_path, config):
    *_, fixations = data
    train, val = fixations.subset(range(8)), fixations.subset(range(8, 12))
    straight = T.fit(config, train, val, centerbias, workdir=tmp_path / "a", progress=False)
    first = T.fit(config, train, val, centerbias, workdir=tmp_path / "b", progress=False, stop_after_epochs=2)
    assert first.epochs == 2
    resumed = T.fit(config, train, val, centerbias, workdir=tmp_path / "b", progress=False)
    assert resumed.epochs == straight.epochs == 4
    for x, y in zip(jax.tree.leaves(straight.final_state), jax.tree.leaves(resumed.final_state)):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(straight.best_params), jax.tree.leaves(resumed.best_params)):
        np.testing.assert_array_equal(x, y)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["learning_rate"] == 0.01
    with pytest.raises(ValueError, match="another config"):
        T.fit(TrainConfig(max_epochs=5), train, val, centerbias, workdir=tmp_path / "b", progress=False)


def test_eight_devices_give_the_same_loss_as_one(data, tmp_path):
    *_, fixations = data
    path = tmp_path / "fixations.npz"
    np.savez(path, **{f"f{i}": f for i, f in enumerate(fixations.features)},
             **{f"x{i}": x for i, x in enumerate(fixations.xs)}, **{f"y{i}": y for i, y in enumerate(fixations.ys)},
             shapes=np.array(fixations.shapes))
    script = textwrap.dedent(f"""
        import jax, numpy as np
        from deepgaze_jax import input_pipeline as P
        from deepgaze_jax import train as T
        from deepgaze_jax.config import TrainConfig
        from tests.test_train import centerbias, CONFIG
        z = np.load({str(path)!r})
        n = len(z["shapes"])
        data = P.FixationSet([z[f"f{{i}}"] for i in range(n)], [tuple(s) for s in z["shapes"]],
                             [z[f"x{{i}}"] for i in range(n)], [z[f"y{{i}}"] for i in range(n)], 16)
        model = CONFIG.build_model()
        head = model.init_head(jax.random.PRNGKey(1))
        trainer = T.Trainer(model, T.make_optimizer(CONFIG, 1))
        batch = P.batches(data, 8, seed=0)[0]
        loss = float(trainer._loss(head, *trainer.put_batch(batch, centerbias(batch.shape))))
        result = T.fit(TrainConfig(max_epochs=2, batch_size=8), data.subset(range(8)), data.subset(range(8, 12)),
                       centerbias, progress=False)
        print(jax.device_count(), repr(loss), repr(result.best_val))
    """)
    outputs = []
    for devices in (1, 8):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.dirname(__file__)))
        assert done.returncode == 0, done.stderr[-3000:]
        count, loss, val = done.stdout.split()[-3:]
        assert int(count) == devices
        outputs.append((float(loss), float(val)))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5)


def random_fixations(n: int = 12, seed: int = 0) -> tuple[P.FixationSet, P.FixationSet]:
    """Train (8) and validation (4) images of two sizes: random DeepGaze I features, fixations near one
    spot per image (no backbone run, so that every process of a run builds them in no time)."""
    rng = np.random.default_rng(seed)
    shapes = [SHAPE if i % 3 else SHAPE[::-1] for i in range(n)]
    channels = deepgaze1().feature_channels
    features = [rng.standard_normal((h // 16, w // 16, channels)).astype(np.float32) for h, w in shapes]
    xs, ys = [], []
    for h, w in shapes:
        k = rng.integers(3, 15)
        cx, cy = rng.uniform(12, w - 12), rng.uniform(12, h - 12)
        xs.append(np.clip(cx + 4 * rng.standard_normal(k), 0, w - 0.01).astype(np.float32))
        ys.append(np.clip(cy + 4 * rng.standard_normal(k), 0, h - 0.01).astype(np.float32))
    data = P.FixationSet(features, shapes, xs, ys, max_fixations=16)
    return data.subset(range(8)), data.subset(range(8, n))


MULTI_CONFIG = TrainConfig(max_epochs=2, batch_size=4, decay_epochs=(1,), learning_rate=0.01)

# One process of a two-process run (argv: process id, coordinator port, output folder): a straight
# fit, a fit interrupted after one epoch and resumed, a fit whose seed differs per process (refused),
# and the per-fixation evaluation of the best params.
WORKER = textwrap.dedent("""
    import dataclasses, json, pathlib, sys
    import jax, numpy as np
    from deepgaze_jax import distributed
    process, port, out = int(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
    distributed.initialize(f"localhost:{port}", 2, process)
    from deepgaze_jax import train as T
    from tests.test_train import MULTI_CONFIG, centerbias, random_fixations
    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
    train, val = random_fixations()
    try:
        T.fit(dataclasses.replace(MULTI_CONFIG, seed=process), train, val, centerbias, progress=False)
        raise AssertionError("processes with different seeds were not refused")
    except ValueError as e:
        assert "disagree" in str(e), e
    straight = T.fit(MULTI_CONFIG, train, val, centerbias, workdir=out / "straight", progress=False)
    first = T.fit(MULTI_CONFIG, train, val, centerbias, workdir=out / "resumed", progress=False, stop_after_epochs=1)
    assert first.epochs == 1
    resumed = T.fit(MULTI_CONFIG, train, val, centerbias, workdir=out / "resumed", progress=False)
    trainer = T.Trainer(MULTI_CONFIG.build_model(), T.make_optimizer(MULTI_CONFIG, 1))
    bits = trainer.fixation_log_likelihoods(straight.best_params, val, centerbias, 4)
    leaves = lambda name, tree: {f"{name}{i}": x for i, x in enumerate(jax.tree.leaves(tree))}
    np.savez(out / f"process{process}.npz", **leaves("final", straight.final_state),
             **leaves("best", straight.best_params), **leaves("resumed_final", resumed.final_state),
             **leaves("resumed_best", resumed.best_params), **leaves("bits", bits))
    (out / f"process{process}.json").write_text(json.dumps([straight.history, resumed.history]))
""")


def test_two_processes_train_as_one(tmp_path):
    """Two processes of two CPU devices each (jax.distributed, gloo collectives) end with the params,
    optimizer state, history and evaluation of one process, resumed from a checkpoint or not."""
    if 4 % jax.device_count():
        pytest.skip(f"the single-process reference needs a global batch of 4; this process has "
                    f"{jax.device_count()} devices")
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    logs = [tmp_path / f"log{i}.txt" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), str(port), str(tmp_path)], env=env,
                              cwd=pathlib.Path(__file__).parents[1], stdout=log.open("w"), stderr=subprocess.STDOUT)
             for i, log in enumerate(logs)]
    deadline = time.monotonic() + 600  # under a minute on an idle 2-core machine; a hang fails, not blocks
    try:
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pytest.fail("the two-process run hung:\n" + "\n".join(log.read_text()[-2000:] for log in logs))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log.read_text()[-3000:]

    train, val = random_fixations()
    single = T.fit(MULTI_CONFIG, train, val, centerbias, progress=False)
    trainer = T.Trainer(MULTI_CONFIG.build_model(), T.make_optimizer(MULTI_CONFIG, 1))
    single_bits = trainer.fixation_log_likelihoods(single.best_params, val, centerbias, 4)
    outputs = [dict(np.load(tmp_path / f"process{i}.npz")) for i in range(2)]
    histories = [json.loads((tmp_path / f"process{i}.json").read_text()) for i in range(2)]
    # Both processes hold the same replicated values, and a resumed run ends where a straight one does.
    assert outputs[0].keys() == outputs[1].keys()
    for key in outputs[0]:
        np.testing.assert_array_equal(outputs[0][key], outputs[1][key], err_msg=key)
    assert histories[0] == histories[1]
    straight_history, resumed_history = histories[0]
    assert resumed_history == straight_history and len(straight_history) == MULTI_CONFIG.max_epochs
    for key in [k for k in outputs[0] if k.startswith("resumed_")]:
        np.testing.assert_array_equal(outputs[0][key], outputs[0][key.removeprefix("resumed_")], err_msg=key)
    # Against one process on one device: the same up to the order of float32 sums (over the batch's
    # rows on four devices instead of one), grown a little by two epochs of Adam (seen: at most 4e-8
    # absolute on the parameters, most of their entries ~1e-2).
    expected = {**{f"final{i}": x for i, x in enumerate(jax.tree.leaves(single.final_state))},
                **{f"best{i}": x for i, x in enumerate(jax.tree.leaves(single.best_params))},
                **{f"bits{i}": x for i, x in enumerate(single_bits)}}
    for key, value in expected.items():
        np.testing.assert_allclose(outputs[0][key], value, rtol=1e-5, atol=2e-7, err_msg=key)
    for record, reference in zip(straight_history, single.history):
        assert record.keys() == reference.keys()
        np.testing.assert_allclose([record[k] for k in record], [reference[k] for k in record], rtol=1e-5)
    assert json.loads((tmp_path / "straight" / "config.json").read_text()) == json.loads(MULTI_CONFIG.to_json())


def test_fingerprint_covers_the_seed_and_the_fixations():
    train, val = random_fixations()
    base = T.fingerprint(MULTI_CONFIG, train, val)
    assert base == T.fingerprint(MULTI_CONFIG, *random_fixations())
    assert base != T.fingerprint(dataclasses.replace(MULTI_CONFIG, seed=1), train, val)
    moved = dataclasses.replace(train, xs=[train.xs[0] + 0.5, *train.xs[1:]])
    assert base != T.fingerprint(MULTI_CONFIG, moved, val)
    assert base != T.fingerprint(MULTI_CONFIG, val, train)


def test_bad_configs_and_data_are_refused_before_compute(data):
    *_, fixations = data
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['learnig_rate'\]"):
        TrainConfig.from_dict({"learnig_rate": 0.1})
    with pytest.raises(ValueError, match="batch_size must be of type int"):
        TrainConfig.from_dict({"batch_size": "4"})
    with pytest.raises(ValueError, match="model must be one of"):
        TrainConfig.from_dict({"model": "deepgaze9"})
    assert TrainConfig.from_dict({"learning_rate": 1, "decay_epochs": [3]}).learning_rate == 1.0
    empty = P.FixationSet(fixations.features[:2], fixations.shapes[:2], [np.zeros(0, np.float32)] * 2,
                          [np.zeros(0, np.float32)] * 2, 16)
    with pytest.raises(ValueError, match="validation split has no fixations"):
        T.fit(CONFIG, fixations, empty, centerbias, progress=False)
    with pytest.raises(ValueError, match="channels"):
        T.fit(TrainConfig(model="deepgaze2_vgg16"), fixations, fixations, centerbias, progress=False)
    with pytest.raises(ValueError, match="outside"):
        P.FixationSet(fixations.features[:1], [(10, 10)], [np.array([12.0], np.float32)],
                      [np.array([1.0], np.float32)], 16)


@pytest.mark.parametrize("channels", [False, True])
def test_dropout_zeroes_features_in_train_steps_only(data, channels):
    """DeepGaze I's readout is one linear map, so a feature channel dropped from the only image of a
    batch gets no gradient, and Adam's first update of its weight is exactly 0."""
    model, *_ = data
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        TrainConfig(dropout=1.0)
    trainer = T.Trainer(model, T.make_optimizer(CONFIG, 1), dropout=0.5, dropout_channels=channels, seed=3)
    head = jax.device_get(model.init_head(jax.random.PRNGKey(0)))  # a host copy: the steps donate the state
    features = np.random.RandomState(0).randn(4, 5, 256).astype(np.float32)  # a 4x5 grid (AlexNet's on 64x80: 1x1)
    one = P.FixationSet([features], [(64, 80)], [np.array([10.0, 50.0], np.float32)],
                        [np.array([20.0, 30.0], np.float32)], 2)
    batch = P.batches(one, 1, seed=None)[0]
    args = trainer.put_batch(batch, centerbias(batch.shape))
    state, _ = trainer.train_step(trainer.init_state(head), *args)
    moved = np.asarray(state["params"]["readout"]["conv0"]["kernel"] != head["readout"]["conv0"]["kernel"]).ravel()
    if channels:
        assert 0.35 < moved.mean() < 0.65, moved.mean()  # about half of the 256 channels dropped
    else:
        assert moved.all()  # every channel keeps about half of its 20 pixels
    again, _ = trainer.train_step(trainer.init_state(head), *args)  # the masks follow seed and step
    np.testing.assert_array_equal(again["params"]["readout"]["conv0"]["kernel"],
                                  state["params"]["readout"]["conv0"]["kernel"])
    plain = T.Trainer(model, T.make_optimizer(CONFIG, 1))
    features, cb, xs, ys, *_ = args
    np.testing.assert_array_equal(trainer.fixation_step(head, features, cb, xs, ys),
                                  plain.fixation_step(head, features, cb, xs, ys))


def test_flip_augmentation_mirrors_features_fixations_and_center_bias_together(data):
    """A mirrored batch has the loss of the plain one when the mirrored images' features are the mirror
    of the features (as for a mirror-symmetric backbone) and the center bias is symmetric: fixations,
    center bias and features are mirrored consistently. Half of the batches are mirrored, the order
    is unchanged, and a config asking for flips without the mirrored features is refused."""
    model, *_, fixations = data
    rng = np.random.RandomState(1)
    features = rng.randn(8, 10, 256).astype(np.float32)  # DeepGaze I's readout grid of a 64x80 image
    base = rng.randn(16, 10)
    cb = np.kron(np.concatenate([base, base[:, ::-1]], axis=1), np.ones((4, 4)))  # mirror-symmetric, 4x4 blocks
    cb = (cb - np.logaddexp.reduce(cb.ravel())).astype(np.float32)
    xs, ys = rng.uniform(0, 80, 16).astype(np.float32), rng.uniform(0, 64, 16).astype(np.float32)
    one = P.FixationSet([features], [(64, 80)], [xs], [ys], 16, flipped=[features[:, ::-1].copy()])
    head = model.init_head(jax.random.PRNGKey(0))
    head["finalizer"]["sigma"] = jnp.asarray(1.5)  # a blur that reaches across cells
    lls, flags = {}, []
    for epoch in range(40):
        batch = P.batches(one, 1, seed=0, epoch=epoch, flip=True)[0]
        flags.append(batch.flipped)
        batch_cb = cb[:, ::-1] if batch.flipped else cb
        lls[batch.flipped] = np.asarray(likelihood.per_image_log_likelihood(
            model, head, jnp.asarray(batch.features), jnp.asarray(batch_cb), jnp.asarray(batch.xs),
            jnp.asarray(batch.ys), jnp.asarray(batch.mask)))
    assert 10 <= sum(flags) <= 30, sum(flags)
    np.testing.assert_allclose(lls[True], lls[False], rtol=1e-5)
    mirrored = P.batches(one, 1, seed=0, epoch=flags.index(True), flip=True)[0]
    np.testing.assert_array_equal(mirrored.xs[0], 79 - np.floor(xs))
    np.testing.assert_array_equal(mirrored.ys[0], ys)

    both = dataclasses.replace(fixations, flipped=[f[:, ::-1] for f in fixations.features])
    for epoch in range(3):
        plain = P.batches(both, 2, seed=5, epoch=epoch)
        assert [list(b.indices) for b in P.batches(both, 2, seed=5, epoch=epoch, flip=True)] == \
            [list(b.indices) for b in plain]
    with pytest.raises(ValueError, match="mirrored training images"):
        T.fit(dataclasses.replace(CONFIG, flip=True), fixations, fixations, centerbias, progress=False)
    with pytest.raises(ValueError, match="flipped features"):
        P.FixationSet(fixations.features[:1], fixations.shapes[:1], fixations.xs[:1], fixations.ys[:1], 16,
                      flipped=[fixations.features[0][..., :10]])


def test_weight_decay_shrinks_only_the_readout_kernels():
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        TrainConfig.from_dict({"weight_decay": -1.0})
    head = deepgaze1().init_head(jax.random.PRNGKey(0))
    head["readout"]["conv0"]["bias"] = jnp.ones((1,))  # a bias, to show it is left alone
    config = TrainConfig(learning_rate=0.1, schedule="constant", weight_decay=0.5)
    optimizer = T.make_optimizer(config, steps_per_epoch=1)
    zeros = jax.tree.map(jnp.zeros_like, head)
    updates, _ = optimizer.update(zeros, optimizer.init(head), head)
    new = jax.tree.map(lambda p, u: p + u, head, updates)
    kernel = head["readout"]["conv0"]["kernel"]
    np.testing.assert_allclose(new["readout"]["conv0"]["kernel"], kernel * (1 - 0.1 * 0.5), rtol=1e-6)
    for path in [("readout", "conv0", "bias"), ("finalizer", "sigma"), ("finalizer", "center_bias_weight")]:
        old, updated = head, new
        for key in path:
            old, updated = old[key], updated[key]
        np.testing.assert_array_equal(updated, old)


def test_a_readout_dead_after_its_first_epoch_is_restarted(monkeypatch, tmp_path):
    """DeepGaze II's ReLU readout can die (every unit of a layer inactive); fit starts it over."""
    from deepgaze_jax import model as model_lib

    rng = np.random.default_rng(0)
    shapes = [(32, 48)] * 6
    fixations = P.FixationSet([rng.standard_normal((2, 3, 2560)).astype(np.float32) for _ in shapes], shapes,
                              [rng.uniform(0, 48, 20).astype(np.float32) for _ in shapes],
                              [rng.uniform(0, 32, 20).astype(np.float32) for _ in shapes], 20)
    init_head = model_lib.DeepGaze.init_head
    calls = []

    def dead_first(self, rng):  # the first initialisation has a dead ReLU layer, later ones are random
        head = init_head(self, rng)
        calls.append(1)
        if len(calls) == 1:
            head["readout"]["conv1"]["bias"] = jnp.full_like(head["readout"]["conv1"]["bias"], -1e6)
        return head

    monkeypatch.setattr(model_lib.DeepGaze, "init_head", dead_first)
    config = TrainConfig(model="deepgaze2_vgg16", learning_rate=1e-3, max_epochs=3, patience=3, batch_size=2)
    cb = lambda shape: np.full(shape, -np.log(shape[0] * shape[1]), np.float32)  # noqa: E731
    model = config.build_model()
    assert T.readout_is_dead(model, init_head(model, jax.random.PRNGKey(0)), np.stack(fixations.features)) is False
    result = T.fit(config, fixations, fixations, cb, workdir=tmp_path / "run", progress=False)
    assert result.restarts == 1 and result.epochs == 3 and len(result.history) == 3
    assert not T.readout_is_dead(model, result.best_params, np.stack(fixations.features))
    # the restarted run is checkpointed as such: a second call resumes it and has nothing left to do
    again = T.fit(config, fixations, fixations, cb, workdir=tmp_path / "run", progress=False)
    assert again.restarts == 1 and again.epochs == 3
    jax.tree.map(np.testing.assert_array_equal, again.best_params, result.best_params)
