"""pysaliency interop: our models scored by pysaliency's own metrics equal our evaluation, datasets
convert both ways and train, DeepGaze III as a pysaliency ScanpathModel, and bad input is refused."""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy.special import logsumexp

from deepgaze_jax import data, evaluation, feature_cache, metrics
from deepgaze_jax import input_pipeline as P
from deepgaze_jax import train as T
from deepgaze_jax.baselines import CenterBias
from deepgaze_jax.config import TrainConfig
from deepgaze_jax.data.scanpaths import histories, scanpath_order
from deepgaze_jax.deepgaze3 import DeepGazeIII
from deepgaze_jax.interop import pysaliency as interop
from deepgaze_jax.model import DeepGaze, deepgaze1
from deepgaze_jax.predict import ScanpathPredictor, load_predictor
from deepgaze_jax.pretrained import load_backbone

ps = interop.pysaliency

# Four MIT1003 images of three sizes (two landscape 1024x768 batch together in precompute).
MIT_IMAGES = ("i05june05_static_street_boston_p1010764", "i05june05_static_street_boston_p1010785",
              "i1000274881", "i1007068829")
# pysaliency and our evaluate score the same float64 maps (our float32 prediction, cast) with the same
# float64 formulas; what is left is summation order (~1e-12).
TOL = 1e-9


@pytest.fixture(scope="module")
def mit(mit1003_dir, tmp_path_factory):
    """Our dataset of four MIT1003 images (conventional filter), read from a folder linking to them."""
    root = tmp_path_factory.mktemp("mit4")
    (root / "STIMULI").mkdir()
    (root / "SCANPATHS").mkdir()
    for stem in MIT_IMAGES:
        (root / "STIMULI" / f"{stem}.jpeg").symlink_to(mit1003_dir / "STIMULI" / f"{stem}.jpeg")
        (root / "SCANPATHS" / stem).symlink_to(mit1003_dir / "SCANPATHS" / stem)
    return data.from_raw(data.read_fixatons(root))


@pytest.fixture(scope="module")
def deepgaze1_model():
    return interop.DeepGazeModel(load_predictor("deepgaze1"))


# --- our predictors as pysaliency models ----------------------------------------------------------


def test_pysaliency_metrics_on_our_model_equal_our_evaluation(mit, deepgaze1_model):
    stimuli, fixations = interop.to_pysaliency(mit)
    model = deepgaze1_model
    assert model.precompute(stimuli) == len(MIT_IMAGES) and model.precompute(stimuli) == 0
    predictor = model.predictor
    lds = [model.log_density(stimuli[n]) for n in range(len(stimuli))]
    assert all(ld.dtype == np.float64 and ld.shape == tuple(s) for ld, s in zip(lds, mit.sizes))

    class CenterBiasModel(ps.Model):
        def _log_density(self, stimulus):
            return np.asarray(predictor.centerbias(stimulus.shape[:2]), np.float64)

    baseline = CenterBiasModel(caching=False)
    f = mit.fixations
    result = evaluation.evaluate(lds, [tuple(s) for s in mit.sizes], f.x, f.y, f.image_index,
                                 baseline_log_densities=[baseline.log_density(stimuli[n]) for n in range(len(stimuli))],
                                 batch_size=2, workers=1)
    density = ps.saliency_map_models.DensitySaliencyMapModel(model)
    theirs = {
        "LL": model.information_gains(stimuli, fixations),
        "IG": model.information_gains(stimuli, fixations, baseline),
        "AUC": density.AUCs(stimuli, fixations),
        "NSS": density.NSSs(stimuli, fixations),
    }
    for name, values in theirs.items():
        np.testing.assert_allclose(result.summary[name], values.mean(), rtol=0, atol=TOL, err_msg=name)
        per_image = [values[fixations.n == n].mean() for n in range(len(stimuli))]
        np.testing.assert_allclose(result.per_image[name], per_image, rtol=0, atol=TOL, err_msg=name)
    # AUC-Judd: ours is unjittered; pysaliency's default jitters, which metrics.auc_judd reproduces.
    np.testing.assert_allclose(result.summary["AUC_Judd"], density.AUC_Judd(stimuli, fixations, jitter=False),
                               rtol=0, atol=TOL)
    noise = np.random.RandomState(42)
    jittered = [float(metrics.auc_judd(np.exp(lds[n]), f.x[f.image_index == n], f.y[f.image_index == n], jitter=noise))
                for n in range(len(stimuli))]
    np.testing.assert_allclose(np.mean(jittered), density.AUC_Judd(stimuli, fixations), rtol=0, atol=TOL)
    assert result.summary["IG"] > 0.5  # the trained model beats its center bias on MIT1003 (~0.8 bit)


def test_log_density_is_cached_as_pysaliency_does_and_takes_gray_stimuli(deepgaze1_model, scanpath_predictor,
                                                                          monkeypatch):
    rng = np.random.RandomState(0)
    rgb = rng.randint(0, 256, (96, 128, 3)).astype(np.uint8)
    gray = rng.randint(0, 256, (96, 128)).astype(np.uint8)
    calls = []
    model = interop.DeepGazeModel(deepgaze1_model.predictor)
    real = model._log_density
    monkeypatch.setattr(model, "_log_density", lambda s: calls.append(s.shape) or real(s))
    first = model.log_density(rgb)
    assert model.log_density(rgb) is first and calls == [(96, 128, 3)]  # second call from the cache
    np.testing.assert_array_equal(first, np.asarray(model.predictor.predict(rgb), np.float64))
    np.testing.assert_array_equal(model.log_density(gray), model.log_density(np.repeat(gray[..., None], 3, -1)))
    uncached = interop.DeepGazeModel(model.predictor, caching=False)
    with pytest.raises(ValueError, match="^precompute fills the cache, but this model was made with caching=False$"):
        uncached.precompute(ps.Stimuli([rgb]))
    # precompute batches equal-size images: the batched maps equal the single ones (float32 XLA, 1e-5)
    stimuli = ps.Stimuli([rgb, gray, rgb[::-1]])
    batched = interop.DeepGazeModel(model.predictor)
    assert batched.precompute(stimuli, batch_size=2) == 3
    for n in range(3):
        np.testing.assert_allclose(batched.log_density(stimuli[n]), uncached.log_density(stimuli.stimuli[n]), atol=1e-5)
    with pytest.raises(TypeError, match="^DeepGazeModel takes a static Predictor, got ScanpathPredictor"):
        interop.DeepGazeModel(scanpath_predictor)


@pytest.fixture(scope="module")
def scanpath_predictor() -> ScanpathPredictor:
    """A small DeepGaze III on the bundled AlexNet, two random heads made peaky (as test_scanpath_sampling)."""
    spatial = DeepGaze(backbone="alexnet", layers=("conv5",), readout_channels=(8, 16, 1), readout_bias=False,
                       readout_kind="iie", downsample=2, readout_factor=4, saliency_map_factor=4, max_blur_radius=12)
    model = DeepGazeIII(spatial, history=2, scanpath_channels=(16, 8), selection_channels=(16, 8, 1))
    heads = []
    for k in range(2):
        head = model.init_head(jax.random.PRNGKey(k))
        head["finalizer"]["sigma"] = jnp.asarray(1.0, jnp.float32)
        head["selection"]["conv2"]["kernel"] = head["selection"]["conv2"]["kernel"] * 8
        heads.append(head)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *heads)
    return ScanpathPredictor(model, load_backbone("alexnet"), stacked,
                             CenterBias.gaussian().log_density)


def test_scanpath_model_gives_our_conditional_density_for_pysaliencys_history(scanpath_predictor):
    predictor = scanpath_predictor
    model = interop.DeepGazeScanpathModel(predictor)
    image = np.random.RandomState(1).randint(0, 256, (96, 128, 3)).astype(np.uint8)
    # pysaliency's history is oldest first; (130, 5) lies outside the 128x96 image, so it is left out.
    xs, ys = [10.5, 40.0, 70.2, 130.0], [20.0, 50.5, 30.0, 5.0]
    ours = np.asarray(predictor.conditional_log_density(image, np.array([[[70.2, 30.0], [40.0, 50.5]]], np.float32))[0])
    theirs = model.conditional_log_density(image, xs, ys, [0, 1, 2, 3])
    assert theirs.dtype == np.float64 and theirs.shape == (96, 128)
    np.testing.assert_array_equal(theirs, ours.astype(np.float64))
    np.testing.assert_allclose(logsumexp(theirs), 0.0, atol=1e-5)  # float32 densities
    first = model.conditional_log_density(image, [], [], [])
    np.testing.assert_allclose(first, np.asarray(predictor.log_density(image)), atol=1e-6)
    assert np.abs(theirs - first).max() > 0.1  # the history matters
    with pytest.raises(ValueError, match=r"^history fixation 0 is not finite: \(nan, 3.0\)$"):
        model.conditional_log_density(image, [np.nan, 2.0], [3.0, 2.0], [0, 1])


def test_scanpath_model_log_likelihoods_equal_ours_from_our_histories(scanpath_predictor):
    """pysaliency's log-likelihoods (one conditional density per fixation, its own x_hist) equal ours
    from our history builder (deepgaze_jax.data.scanpaths.histories): the two order conventions agree."""
    predictor = scanpath_predictor
    rng = np.random.RandomState(2)
    images = [rng.randint(0, 256, (96, 128, 3)).astype(np.uint8) for _ in range(2)]
    trains = [(rng.uniform(0, 128, 5), rng.uniform(0, 96, 5), n, s) for n, s in [(0, 0), (1, 0), (0, 1), (1, 1)]]
    xs, ys, ns, subjects = ([t[k] for t in trains] for k in range(4))
    fixations = ps.FixationTrains.from_fixation_trains(xs, ys, [np.arange(5.0)] * 4, ns, subjects)
    stimuli = ps.Stimuli(images)
    theirs = interop.DeepGazeScanpathModel(predictor).log_likelihoods(stimuli, fixations)
    table = data.Fixations(image_index=fixations.n, x=fixations.x, y=fixations.y, index=fixations.lengths,
                           onset=fixations.t, duration=np.full(20, np.nan), subject=fixations.subjects,
                           inside=np.ones(20, bool), initial=np.zeros(20, bool))
    hist = histories(table, predictor.history)
    ours = np.empty(20)
    for n in range(2):
        rows = np.flatnonzero(table.image_index == n)
        ld = np.asarray(predictor.conditional_log_density(images[n], hist[rows]))
        ours[rows] = ld[np.arange(len(rows)), table.y[rows].astype(int), table.x[rows].astype(int)]
    np.testing.assert_allclose(theirs, ours, atol=1e-5)  # float32, N histories at once vs one at a time


# --- datasets both ways ---------------------------------------------------------------------------


def test_ours_to_pysaliency_and_back_keeps_every_fixation(mit, tmp_path):
    stimuli, fixations = interop.to_pysaliency(mit)
    f = mit.fixations
    order = scanpath_order(f)
    pairs = len(np.unique(f.image_index.astype(np.int64) * 100 + f.subject))
    assert len(stimuli) == 4 and len(fixations) == len(f) and len(fixations.train_xs) == pairs > 4 * 10
    assert stimuli.attributes["image_id"] == list(mit.image_ids)
    np.testing.assert_array_equal(fixations.x, f.x[order])
    np.testing.assert_array_equal(fixations.n, f.image_index[order])
    # pysaliency's history of a fixation is the train before it, oldest first
    k = int(np.flatnonzero(fixations.lengths == 3)[0])
    np.testing.assert_array_equal(fixations.x_hist[k, :3], f.x[order][k - 3:k])
    np.testing.assert_array_equal(stimuli.stimuli[2], mit.images[2])

    back, export = interop.from_pysaliency(stimuli, fixations, tmp_path / "csv", name="roundtrip",
                                           data_dir=tmp_path / "tfds", subject_names=mit.subjects)
    assert export.copied == 0 and export.gray == () and export.without_fixations == ()
    assert back.image_ids == tuple(i.replace(".jpeg", ".png") for i in mit.image_ids)
    assert back.subjects == mit.subjects
    np.testing.assert_array_equal(back.sizes, mit.sizes)
    for field in ("image_index", "subject", "index", "x", "y", "onset"):
        np.testing.assert_array_equal(getattr(back.fixations, field), getattr(f, field)[order], err_msg=field)
    np.testing.assert_allclose(back.fixations.duration, f.duration[order], rtol=1e-6)
    np.testing.assert_array_equal(back.images[3], mit.images[3])
    assert back.filter_report.kept == len(f)


def _synthetic_pysaliency(n_images=12, seed=0):
    """Images with a bright square that the fixations go to (two observers each); image 5 is gray."""
    rng = np.random.RandomState(seed)
    images, trains = [], []
    for i in range(n_images):
        h, w = (128, 160) if i % 3 else (160, 128)
        image = rng.randint(0, 120, (h, w, 3)).astype(np.uint8)
        cx, cy = rng.randint(24, w - 24), rng.randint(24, h - 24)
        image[cy - 12:cy + 12, cx - 12:cx + 12] = 255
        images.append(image[..., 0].copy() if i == 5 else image)
        for subject in range(2):
            k = rng.randint(3, 8)
            xs = np.clip(cx + 6 * rng.randn(k), 0, w - 1e-9)
            ys = np.clip(cy + 6 * rng.randn(k), 0, h - 1e-9)
            trains.append((xs, ys, np.cumsum(rng.uniform(0.1, 0.4, k)), i, subject))
    xs, ys, ts, ns, subjects = (list(v) for v in zip(*trains))
    xs[0][0] = images[0].shape[1] - 1e-9  # rounds up to W in float32: must be written just below
    durations = [np.full(len(t), 0.2) for t in ts]
    fixations = ps.FixationTrains.from_fixation_trains(xs, ys, ts, ns, subjects,
                                                       scanpath_fixation_attributes={"durations": durations},
                                                       scanpath_attribute_mapping={"durations": "duration"})
    return ps.Stimuli(images), fixations


def test_a_pysaliency_dataset_trains_a_readout(tmp_path):
    stimuli, fixations = _synthetic_pysaliency()
    ds, export = interop.from_pysaliency(stimuli, fixations, tmp_path / "csv", data_dir=tmp_path / "tfds")
    assert len(ds) == 12 and len(ds.fixations) == len(fixations) and ds.subjects == ("0", "1")
    assert export.gray == (5,) and ds.images[5].shape == (128, 160, 3)
    np.testing.assert_array_equal(ds.images[5], np.repeat(stimuli.stimuli[5][..., None], 3, -1))
    np.testing.assert_array_equal(ds.fixations.image_index, fixations.n)  # row i is pysaliency's fixation i
    np.testing.assert_array_equal(ds.fixations.index, fixations.lengths)
    assert ds.fixations.x[0] == np.nextafter(np.float32(128), np.float32(0)) and int(ds.fixations.x[0]) == 127
    np.testing.assert_allclose(ds.fixations.x, fixations.x, rtol=2 ** -23)
    np.testing.assert_allclose(ds.fixations.duration, 0.2, rtol=1e-6)

    model = deepgaze1()
    features = feature_cache.compute_features(model, load_backbone("alexnet"), ds.images,
                                              progress=False)
    sets = P.FixationSet.from_dataset(ds, features)
    config = TrainConfig(max_epochs=3, batch_size=2, decay_epochs=(2,), learning_rate=0.01)
    uniform = lambda shape: np.full(shape, -np.log(shape[0] * shape[1]), np.float32)  # noqa: E731
    result = T.fit(config, sets.subset(range(8)), sets.subset(range(8, 12)), uniform, progress=False)
    train_lls = [h["train_ll"] for h in result.history]
    assert np.all(np.isfinite(train_lls + [h["val_ll"] for h in result.history]))
    assert train_lls[-1] > train_lls[0] + 0.5  # the loss falls (train LL 1.6 -> 3.0 bits measured)

    # and back: pysaliency -> ours -> pysaliency keeps the fixations (to float32)
    stimuli2, fixations2 = interop.to_pysaliency(ds)
    np.testing.assert_array_equal(fixations2.n, fixations.n)
    np.testing.assert_array_equal(fixations2.subjects, fixations.subjects)
    np.testing.assert_array_equal(fixations2.x, ds.fixations.x)
    np.testing.assert_allclose(fixations2.t, fixations.t, rtol=1e-6)


def test_plain_fixations_and_file_stimuli_convert(tmp_path):
    """Fixations without trains: each (stimulus, subject)'s fixations numbered in table order; JPEG
    FileStimuli are copied as they are, under their own names."""
    rng = np.random.RandomState(3)
    paths = []
    for name in ("b.jpeg", "a.png"):
        path = tmp_path / name
        Image.fromarray(rng.randint(0, 256, (20, 30, 3)).astype(np.uint8)).save(path)
        paths.append(str(path))
    stimuli = ps.FileStimuli(paths)
    fixations = ps.Fixations.create_without_history(np.array([1.0, 2.0, 3.0, 4.5]), np.array([1.0, 2.0, 3.0, 19.5]),
                                                    np.array([1, 0, 1, 1]))
    ds, export = interop.from_pysaliency(stimuli, fixations, tmp_path / "csv", data_dir=tmp_path / "tfds")
    assert export.copied == 2 and export.file_names == ("b.jpeg", "a.png") and ds.image_ids == ("b.jpeg", "a.png")
    assert ds.subjects == ("0", "1") and ds.fixations.subject.tolist() == [1, 1, 1, 1]
    assert ds.fixations.index.tolist() == [0, 0, 1, 2] and ds.fixations.image_index.tolist() == [1, 0, 1, 1]
    np.testing.assert_array_equal(ds.images[0], stimuli.stimuli[0])


# --- bad input ------------------------------------------------------------------------------------


def _tiny(images, xs, ys, ns, subjects=None):
    return ps.Stimuli(images), ps.Fixations.create_without_history(np.asarray(xs, float), np.asarray(ys, float),
                                                                  np.asarray(ns), subjects)


RGB = np.zeros((10, 12, 3), np.uint8)
GRAY = np.zeros((10, 12), np.uint8)


@pytest.mark.parametrize("images, xs, ys, ns, kwargs, message", [
    ([RGB, GRAY], [1, 2], [1, 2], [0, 1], {"gray": "refuse"},
     r"^stimulus 1 is grayscale \(shape \(10, 12\)\) while stimulus 0 is RGB; 1 grayscale stimuli in all "
     r"\(gray='convert' repeats them to RGB\)$"),
    ([RGB, np.zeros((10, 12, 4), np.uint8)], [1, 2], [1, 2], [0, 1], {},
     r"^stimulus 1 has shape \(10, 12, 4\); expected \(H, W\) grayscale or \(H, W, 3\) RGB$"),
    ([RGB, RGB], [1, 12.0, 3], [1, 2, 3], [0, 1, 1], {},
     r"^fixation 1 at \(x, y\) = \(12, 2\) lies outside stimulus 1 \(12x10: need 0 <= x < 12, 0 <= y < 10\); 1 such"),
    ([RGB, RGB], [1, 2], [1, -0.5], [0, 0], {}, r"^fixation 1 at \(x, y\) = \(2, -0.5\) lies outside stimulus 0"),
    ([RGB, RGB], [1, 2], [1, 2], [0, 5], {}, r"^fixation 1 refers to stimulus 5, but there are 2 stimuli \(0..1\)$"),
    ([RGB], [1, 2], [1, 2], [0, 0], {"subject_names": ["a"]},
     r"^subject_names: 1 names \(unique: 1\) for subjects 0..1$"),
    ([RGB.astype(np.float64)], [1], [1], [0], {}, r"^stimulus 0 has dtype float64; expected uint8 pixels 0..255$"),
], ids=["mixed-gray-rgb", "four-channels", "outside-x", "outside-y", "missing-stimulus", "subject-names", "float"])
def test_bad_pysaliency_input_is_refused_with_one_line(tmp_path, images, xs, ys, ns, kwargs, message):
    subjects = np.arange(len(xs)) % 2 if "subject_names" in kwargs else None
    stimuli, fixations = _tiny(images, xs, ys, ns, subjects)
    with pytest.raises(interop.ConversionError, match=message):
        interop.write_fixation_csv(stimuli, fixations, tmp_path, **kwargs)


def test_two_scanpaths_of_one_subject_on_one_image_are_refused(tmp_path):
    stimuli = ps.Stimuli([RGB])
    train = [np.array([1.0, 2.0]), np.array([3.0])]
    fixations = ps.FixationTrains.from_fixation_trains(train, train, [np.arange(2.0), np.arange(1.0)], [0, 0], [0, 0])
    message = (r"^fixations 0 and 2 are both fixation 0 of subject 0 on stimulus 0: one subject's fixations on an "
               r"image must form one scanpath$")
    with pytest.raises(interop.ConversionError, match=message):
        interop.write_fixation_csv(stimuli, fixations, tmp_path)


def test_a_mismatch_after_conversion_names_what_differs(tmp_path, monkeypatch):
    stimuli, fixations = _tiny([RGB, RGB], [1, 2, 3], [1, 2, 3], [0, 1, 1])
    real = interop.load_fixation_csv

    def drop_last(*args, **kwargs):
        ds = real(*args, **kwargs)
        return dataclasses.replace(ds, fixations=ds.fixations.select(np.arange(len(ds.fixations) - 1)))

    monkeypatch.setattr(interop, "load_fixation_csv", drop_last)
    with pytest.raises(interop.ConversionError, match=r"^from_pysaliency: the source has 3 fixations, the result 2$"):
        interop.from_pysaliency(stimuli, fixations, tmp_path / "csv", data_dir=tmp_path / "tfds")


def test_missing_pysaliency_is_a_one_line_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pysaliency", None)
    with pytest.raises(ImportError, match=r"^deepgaze_jax.interop.pysaliency needs pysaliency: "
                                          r"pip install deepgaze-jax\[pysaliency\]$"):
        interop.import_pysaliency()
