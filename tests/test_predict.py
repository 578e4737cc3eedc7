"""Predictors: heads files round-trip, batching by size, and the shipped model on real data."""

import math

import jax
import numpy as np
import pytest

from deepgaze_jax import predict
from deepgaze_jax.baselines import CenterBias
from deepgaze_jax.images import load_image
from deepgaze_jax.model import deepgaze1


def toy_center_bias():
    return CenterBias.gaussian(0.15, 0.01)


@pytest.fixture(scope="module")
def heads_file(tmp_path_factory):
    model = deepgaze1()
    path = tmp_path_factory.mktemp("heads") / "toy.safetensors"
    heads = [model.init_head(jax.random.PRNGKey(k)) for k in range(2)]
    predict.save_predictor_heads(path, model, heads, toy_center_bias(), {"note": "random heads"})
    return path, heads


def test_heads_file_roundtrip_and_ensemble(heads_file):
    path, heads = heads_file
    p = predict.load_predictor(path=path)
    assert p.model == deepgaze1()
    image = np.random.RandomState(1).randint(0, 255, (120, 160, 3)).astype(np.uint8)
    out = p.predict(image)
    assert out.shape == (120, 160) and out.dtype == np.float32
    assert abs(float(jax.nn.logsumexp(out))) < 1e-5
    cb = toy_center_bias().log_density((120, 160))
    members = [np.exp(np.asarray(p.model.apply({"backbone": p.backbone, "head": h}, image[None], cb[None])[0]))
               for h in heads]
    np.testing.assert_allclose(np.exp(out), np.mean(members, axis=0), rtol=1e-4, atol=1e-12)


def test_predict_many_batches_by_size_and_keeps_order(heads_file):
    p = predict.load_predictor(path=heads_file[0])
    rng = np.random.RandomState(2)
    images = [rng.randint(0, 255, shape).astype(np.uint8) for shape in [(96, 128, 3), (128, 96, 3), (96, 128, 3)]]
    many = p.predict_many(images, batch_size=2)
    for image, out in zip(images, many):
        np.testing.assert_allclose(out, p.predict(image), atol=1e-5)


def test_missing_or_foreign_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no trained heads"):
        predict.load_predictor(path=tmp_path / "nothing.safetensors")
    from deepgaze_jax.params_io import save_params

    save_params(tmp_path / "plain.safetensors", {"a": np.zeros(2)})
    with pytest.raises(ValueError, match="not a predictor file"):
        predict.load_predictor(path=tmp_path / "plain.safetensors")


@pytest.mark.skipif(not (predict.ASSETS / "deepgaze1.safetensors").exists(), reason="no shipped DeepGaze I heads")
def test_shipped_deepgaze1_beats_its_center_bias_on_real_fixations(mit1003_dir):
    """The shipped ensemble saw every MIT1003 image in training for 9 of its 10 members, so this is a
    sanity check of the shipped file (and the bundled backbone), not a benchmark."""
    import csv

    p = predict.load_predictor("deepgaze1")
    rows = list(csv.DictReader(open(mit1003_dir / "fixations.csv")))
    names = sorted({r["image"] for r in rows})[:4]
    gain = []
    for name in names:
        image = load_image(mit1003_dir / "STIMULI" / name)
        fix = [(float(r["x"]), float(r["y"])) for r in rows
               if r["image"] == name and r["inside"] == "1" and r["initial"] == "0"]
        xs, ys = np.array(fix).T.astype(int)
        ours = p.predict(image)[ys, xs]
        cb = np.asarray(p.centerbias(image.shape[:2]))[ys, xs]
        gain.append((ours - cb).mean() / math.log(2))
    assert np.mean(gain) > 0.2, gain


def test_widened_heads_ignore_the_extra_layers_exactly():
    """A block-5 DeepGaze II head widened to the block-4 variant predicts what it did (an ensemble of
    both kinds of heads can then ship as one model); heads cannot be narrowed."""
    from deepgaze_jax.model import BLOCK4_LAYERS, deepgaze2

    narrow, wide = deepgaze2("vgg16"), deepgaze2("vgg16", extra_layers=BLOCK4_LAYERS)
    heads = [narrow.init_head(jax.random.PRNGKey(k)) for k in range(2)]
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *heads)
    widened = predict.widen_heads(stacked, wide.feature_channels)
    assert widened["readout"]["conv0"]["kernel"].shape == (2, 1, 1, 3584, 16)
    rng = np.random.default_rng(0)
    features = rng.gamma(1.0, 1.0, (1, 6, 8, 3584)).astype(np.float32)  # block 5's 2560 channels first
    centerbias = np.full((1, 96, 128), -math.log(96 * 128), np.float32)
    np.testing.assert_array_equal(np.asarray(wide.head_ensemble(widened, features, centerbias)),
                                  np.asarray(narrow.head_ensemble(stacked, features[..., :2560], centerbias)))
    # ... and the extra channels are really read by a wide head (the comparison is not vacuous)
    wide_head = wide.init_head(jax.random.PRNGKey(5))
    changed = features.copy()
    changed[..., 2560:] += 1
    assert not np.allclose(wide.head(wide_head, features, centerbias), wide.head(wide_head, changed, centerbias))
    with pytest.raises(ValueError, match="cannot widen heads of 3584 input channels to 2560"):
        predict.widen_heads(widened, 2560)


def test_a_large_image_needs_no_full_size_float_intermediate(heads_file):
    # The backbone reads the image shrunk by 2 and the finalizer works on a small grid, so besides its
    # inputs and the (B, H, W) output the compiled prediction holds less than one (H, W) float32 map.
    # (A 64-megapixel image peaked at 1.9 GB resident in `deepgaze predict`, experiments/BENCHMARKS.md.)
    from deepgaze_jax.model import DeepGaze

    p = predict.load_predictor(path=heads_file[0])
    height, width = 2000, 3000
    images = jax.ShapeDtypeStruct((1, height, width, 3), np.uint8)
    centerbias = jax.ShapeDtypeStruct((1, height, width), np.float32)
    compiled = DeepGaze.apply_ensemble.lower(p.model, p.backbone, p.heads, images, centerbias).compile()
    memory = compiled.memory_analysis()
    if memory is None:
        pytest.skip("this backend reports no memory analysis")
    full_map = height * width * 4
    assert memory.output_size_in_bytes == full_map
    assert memory.temp_size_in_bytes < full_map, memory.temp_size_in_bytes / full_map
