"""DeepGaze III predictors and scanpath sampling: the model description in files, the ensemble mixture,
and samplers whose draws follow the densities they draw from."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepgaze_jax import centerbias, predict, sampling
from deepgaze_jax.baselines import CenterBias
from deepgaze_jax.deepgaze3 import DeepGazeIII, check_history, deepgaze3
from deepgaze_jax.model import deepgaze1, deepgaze2
from deepgaze_jax.pretrained import load_backbone
from deepgaze_jax.resize import nearest_indices

# Not divisible by the saliency-map factor 4: the 16x23 grid cells cover blocks of 4 or 5 rows (4 or 4..5
# columns), so a sampler that forgot how many pixels a cell covers would be seen.
HEIGHT, WIDTH = 66, 94
ATOL = 1e-5


def random_heads(model: DeepGazeIII, members: int = 2) -> list[dict]:
    """Random heads made peaky (blur sigma 1 grid cell, last selection layer x8), so that the maps, the
    members and the conditional densities differ visibly (at initialisation they are nearly flat)."""
    heads = []
    for k in range(members):
        head = model.init_head(jax.random.PRNGKey(k))
        head["finalizer"]["sigma"] = jnp.asarray(1.0, jnp.float32)
        head["selection"]["conv2"]["kernel"] = head["selection"]["conv2"]["kernel"] * 8
        heads.append(head)
    return heads


def save_scanpath_file(path, history: int = 4, members: int = 2):
    model = deepgaze3(history=history)
    predict.save_predictor_heads(path, model, random_heads(model, members), CenterBias.gaussian(),
                                 {"note": "random DeepGaze III heads for tests"})
    return path


def make_image(seed: int = 0, shape=(HEIGHT, WIDTH)) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, shape + (3,)).astype(np.uint8)


@pytest.fixture(scope="module")
def scanpath_file(tmp_path_factory):
    return save_scanpath_file(tmp_path_factory.mktemp("dg3") / "dg3.safetensors")


@pytest.fixture(scope="module")
def predictor(scanpath_file):
    return predict.load_predictor(path=scanpath_file)


@pytest.fixture(scope="module")
def features(predictor):
    return predictor.features(make_image())


# --- the model description and the file kinds ---------------------------------------------------


@pytest.mark.parametrize("model", [deepgaze3(), deepgaze3(history=0), deepgaze3("vgg16", history=2, dtype="bfloat16"),
                                   DeepGazeIII(deepgaze2("vgg16", readout="iie"), 3, (64, 8), (32, 8, 1))])
def test_a_deepgaze3_description_round_trips_through_json(model):
    text = predict.model_to_json(model)
    fields = json.loads(text)
    assert fields["kind"] == "deepgaze3" and fields["history"] == model.history
    assert fields["spatial"]["readout_kind"] == "iie"
    back = predict.model_from_json(text)
    assert isinstance(back, DeepGazeIII) and back == model and hash(back) == hash(model)


def test_a_static_description_has_no_kind_and_old_files_stay_deepgaze():
    for model in (deepgaze1(), deepgaze2("vgg16")):
        text = predict.model_to_json(model)
        assert "kind" not in json.loads(text)
        assert predict.model_from_json(text) == model
    old = ('{"backbone": "alexnet", "ceil_mode": false, "downsample": 2, "dtype": "float32", '
           '"initial_center_bias_weight": 1.0, "initial_sigma": 8.0, "layers": ["conv5"], "max_blur_radius": 96, '
           '"readout_bias": false, "readout_channels": [1], "readout_factor": 4, "saliency_map_factor": 4}')
    assert predict.model_from_json(old) == deepgaze1()
    with pytest.raises(ValueError, match="unknown model kind 'deepgaze4'"):
        predict.model_from_json('{"kind": "deepgaze4"}')


def test_files_load_as_their_kind_and_the_wrong_kind_is_named(scanpath_file, predictor_file):
    scanpath = predict.load_predictor(path=scanpath_file)
    assert isinstance(scanpath, predict.ScanpathPredictor) and scanpath.members == 2 and scanpath.history == 4
    assert isinstance(predict.load_scanpath_predictor(scanpath_file), predict.ScanpathPredictor)
    assert isinstance(predict.load_predictor(path=predictor_file, kind="static"), predict.Predictor)
    with pytest.raises(predict.ModelKindError) as e:
        predict.load_predictor(path=scanpath_file, kind="static")
    message = str(e.value)
    assert "\n" not in message and str(scanpath_file) in message and "DeepGaze III scanpath model" in message
    assert "not a static saliency model" in message
    with pytest.raises(predict.ModelKindError) as e:
        predict.load_scanpath_predictor(predictor_file)
    message = str(e.value)
    assert "\n" not in message and str(predictor_file) in message and "static saliency model" in message
    assert "not a scanpath model" in message
    with pytest.raises(ValueError, match="kind must be one of"):
        predict.load_predictor(path=scanpath_file, kind="dynamic")


# --- the ensemble --------------------------------------------------------------------------------


def some_histories(k: int = 4) -> np.ndarray:
    """Three histories in the model's form: none, one fixation, four (most recent first)."""
    hist = np.full((3, k, 2), np.nan, np.float32)
    hist[1, 0] = (10.5, 12.25)
    hist[2] = check_history(np.array([[3.0, 60.0], [90.0, 5.0], [47.5, 33.0], [20.0, 40.0]]), (HEIGHT, WIDTH), k)
    return hist


def test_the_mixture_is_the_logsumexp_of_the_members(predictor, features):
    hist = some_histories()
    mixed = np.asarray(predictor.conditional_log_density(features, hist), np.float64)
    assert mixed.shape == (3, HEIGHT, WIDTH)
    members = []
    for m in range(predictor.members):
        head = jax.tree.map(lambda x, m=m: x[m], predictor.heads)
        members.append(np.asarray(predictor.model.head(head, features.features, features.centerbias,
                                                       jnp.asarray(hist)[None])[0], np.float64))
    members = np.stack(members)
    expected = np.logaddexp.reduce(members, axis=0) - math.log(len(members))
    np.testing.assert_allclose(mixed, expected, atol=2e-5)  # float32 logs of densities ~1e-4
    np.testing.assert_allclose(np.logaddexp.reduce(mixed.reshape(3, -1), axis=1), 0, atol=1e-4)
    assert 0.5 * np.abs(np.exp(members[0]) - np.exp(members[1])).sum(axis=(1, 2)).min() > 0.1  # members differ
    assert 0.5 * np.abs(np.exp(mixed[0]) - np.exp(mixed[2])).sum() > 0.05  # the history matters


def test_the_static_density_is_the_empty_history_and_batches_agree(predictor, features):
    # Batches of other sizes round differently: a few float32 ulps of logs near -10 (1 ulp ~ 1e-6).
    image = make_image()
    empty = np.asarray(predictor.conditional_log_density(features, predictor.empty_history()))[0]
    np.testing.assert_allclose(np.asarray(predictor.log_density(image)), empty, atol=ATOL)
    np.testing.assert_allclose(predictor.predict(image), empty, atol=ATOL)
    hist = some_histories()
    images = np.stack([image, make_image(1)])
    batched = np.asarray(predictor.log_density(images, hist[1:]))
    np.testing.assert_allclose(batched[0], np.asarray(predictor.conditional_log_density(image, hist[1:2]))[0],
                               atol=ATOL)
    np.testing.assert_allclose(batched[1], predictor.predict(make_image(1), hist[2]), atol=ATOL)
    with pytest.raises(ValueError, match=r"histories must have shape \(N, 4, 2\).*got \(3, 3, 2\)"):
        predictor.conditional_log_density(features, hist[:, :3])
    with pytest.raises(ValueError, match=r"histories must have shape \(B, 4, 2\).*got \(1, 4, 2\)"):
        predictor.log_density(images, hist[:1])


def test_a_spatial_model_reads_no_history(tmp_path):
    p = predict.load_predictor(path=save_scanpath_file(tmp_path / "spatial.safetensors", history=0))
    assert p.history == 0 and "history 0" in predict.describe(p.model)
    image = make_image()
    hist = np.array([[[5.0, 5.0]], [[np.nan, np.nan]]], np.float32)
    dens = np.asarray(p.conditional_log_density(image, hist))
    assert dens.shape == (2, HEIGHT, WIDTH)
    np.testing.assert_allclose(dens[0], dens[1], atol=0)
    np.testing.assert_allclose(dens[0], p.predict(image), atol=ATOL)
    paths = sampling.sample_scanpaths(p, image, 3, 4, seed=1)
    assert paths.shape == (3, 4, 2) and np.isfinite(paths).all()


# --- sampling --------------------------------------------------------------------------------------


def test_the_samplers_member_map_is_the_models(predictor, features):
    # The sampler builds one member's map from the member's priority map (once per image) on; it must
    # stay what DeepGazeIII.grid computes.
    model, hist = predictor.model, jnp.asarray(some_histories())
    for m in range(predictor.members):
        head = jax.tree.map(lambda x, m=m: x[m], predictor.heads)
        priority = model.priority(head, features.features, features.shape)[0]
        ours = jax.vmap(lambda h: sampling._member_grid(model, head, priority, features.centerbias, h))(hist)
        theirs = model.grid(head, features.features, features.centerbias, hist[None])[0]
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=ATOL)


def test_cell_blocks_by_hand():
    # 5 pixels read 2 cells as 0, 0, 0, 1, 1 (PyTorch's nearest rule: floor(i * 2 / 5)); 4 read 4 as 0..3.
    row_start, row_count, col_start, col_count = sampling.cell_blocks((2, 4), (5, 4))
    np.testing.assert_array_equal(row_start, [0, 3])
    np.testing.assert_array_equal(row_count, [3, 2])
    np.testing.assert_array_equal(col_start, [0, 1, 2, 3])
    np.testing.assert_array_equal(col_count, [1, 1, 1, 1])


def test_a_coordinate_never_rounds_up_to_the_edge():
    # float32 1023 + (1 - 2**-24) rounds to 1024, the width; the sampler keeps it inside.
    u = jnp.asarray(1 - 2**-24, jnp.float32)
    x = sampling._inside(jnp.asarray(1023.0, jnp.float32), jnp.asarray(1.0, jnp.float32), u)
    assert float(x) < 1024 and int(x) == 1023


def test_sampling_is_reproducible_inside_the_image_and_honours_the_start(predictor, features):
    a = sampling.sample_scanpaths(predictor, features, 5, 6, seed=3)
    assert a.shape == (5, 6, 2) and a.dtype == np.float32
    assert np.array_equal(a, sampling.sample_scanpaths(predictor, features, 5, 6, seed=3))  # bit for bit
    assert np.array_equal(a, sampling.sample_scanpaths(predictor, make_image(), 5, 6, seed=3))  # image or features
    b = sampling.sample_scanpaths(predictor, features, 5, 6, seed=4)
    assert not np.array_equal(a, b) and (a != b).mean() > 0.9
    for paths in (a, b):
        assert ((paths >= 0) & (paths < np.array([WIDTH, HEIGHT], np.float32))).all()
    # Scanpath i draws from its own keys: the first of more scanpaths are the same, in chunks or not.
    more = sampling.sample_scanpaths(predictor, features, 7, 6, seed=3, batch_size=3)
    np.testing.assert_allclose(more[:5], a, atol=1e-4)
    started = sampling.sample_scanpaths(predictor, features, 4, 3, seed=3, start=(20.5, 7.25))
    np.testing.assert_array_equal(started[:, 0], np.broadcast_to(np.float32([20.5, 7.25]), (4, 2)))
    assert len(np.unique(started[:, 1], axis=0)) == 4  # drawn on from there
    one = sampling.sample_scanpaths(predictor, features, 2, 1, seed=3)
    assert one.shape == (2, 1, 2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "n must be a positive integer"),
    (dict(length=2.5), "length must be a positive integer"),
    (dict(seed=-1), "seed must be an integer in 0..4294967295"),
    (dict(seed=2**32), "seed must be an integer"),
    (dict(start=(94.0, 3.0)), r"start \(x, y\) = \(94, 3\) lies outside the 94x66 image"),
    (dict(start=(float("nan"), 3.0)), "start"),
])
def test_bad_sampling_arguments_are_named(predictor, features, kwargs, message):
    args = dict(n=2, length=2, seed=0) | kwargs
    with pytest.raises(ValueError, match=message):
        sampling.sample_scanpaths(predictor, features, **args)


def test_a_static_predictor_cannot_sample_scanpaths(predictor_file):
    with pytest.raises(ValueError, match="needs a scanpath model"):
        sampling.sample_scanpaths(predict.load_predictor(path=predictor_file), make_image(), 2, 2)


def assert_marginals_match(points: np.ndarray, log_density: np.ndarray) -> None:
    """The row and column histograms of the drawn pixels ``(int(y), int(x))`` against the density's.

    Each of the 66 row and 94 column counts is binomial; its z-score ``(count - n p) / sqrt(n p (1 - p))``
    is close to standard normal at these counts (35 or more expected per bin), so with a right sampler
    P(any of 160 |z| > 5) is about 160 * 5.7e-7 ~ 1e-4. A sampler that put every draw on a cell's first
    pixel would empty 3 rows in 4 (z in the tens); subtler errors are the business of
    :func:`test_a_grid_draw_is_a_draw_from_the_full_size_density`.
    """
    n = len(points)
    p = np.exp(np.asarray(log_density, np.float64))
    for axis, index in ((1, points[:, 1].astype(int)), (0, points[:, 0].astype(int))):
        expected = p.sum(axis=axis)
        counts = np.bincount(index, minlength=len(expected))
        z = (counts - n * expected) / np.sqrt(n * expected * (1 - expected))
        assert np.abs(z).max() < 5, (axis, np.abs(z).max())


@pytest.mark.parametrize("grid_shape, image_shape", [((16, 24), (16, 24)), ((3, 4), (7, 9))])
def test_a_grid_draw_is_a_draw_from_the_full_size_density(grid_shape, image_shape):
    # The sampler draws a cell of the saliency grid, then a point inside the cell's pixel block. Against
    # the full-size density (the grid nearest-upsampled, as the finalizer does): one value per cell of
    # 1x1 blocks (16x24), and blocks of 3 or 2 rows by 3 or 2 columns (3x4 cells over 7x9 pixels), where
    # a draw that forgot how many pixels a cell covers would favour the 2x2 blocks' pixels 2.25x over
    # the 3x3 block's.
    n = 20000
    values = np.random.RandomState(5).normal(0, 0.5, grid_shape)
    rows, cols = nearest_indices(grid_shape[0], image_shape[0]), nearest_indices(grid_shape[1], image_shape[1])
    full = values[rows][:, cols]
    grid = jnp.asarray(values - np.logaddexp.reduce(full.ravel()), jnp.float32)
    p = np.exp(np.asarray(grid, np.float64)[rows][:, cols])
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: sampling.sample_from_grid(k, grid, image_shape)))(keys))
    assert ((draws >= 0) & (draws < np.array(image_shape[::-1], np.float32))).all()
    counts = np.zeros(image_shape)
    np.add.at(counts, (draws[:, 1].astype(int), draws[:, 0].astype(int)), 1)
    # Per pixel a binomial z-score (9 or more expected per pixel here, 140 or more at 7x9); with a right
    # sampler P(any of <= 384 |z| > 5) is ~1e-4, while forgetting the block sizes shifts z by up to 8.7.
    z = (counts - n * p) / np.sqrt(n * p * (1 - p))
    assert np.abs(z).max() < 5, np.abs(z).max()
    assert_marginals_match(draws, np.log(p))


def test_first_fixations_follow_the_static_density(predictor, features):
    n = 20000
    first = sampling.sample_scanpaths(predictor, features, n, 1, seed=11, batch_size=n)[:, 0]
    density = np.asarray(predictor.log_density(make_image()), np.float64)
    assert_marginals_match(first, density)
    # The 16x23 grid's cells (the units the sampler draws) against the density summed over each cell's
    # pixels, with the finalizer's own upsampling map: total variation within its sampling noise.
    rows = nearest_indices(density.shape[0] // 4, HEIGHT)[first[:, 1].astype(int)]
    cols = nearest_indices(density.shape[1] // 4, WIDTH)[first[:, 0].astype(int)]
    cells = np.zeros((HEIGHT // 4, WIDTH // 4))
    np.add.at(cells, (rows, cols), 1.0)
    expected = np.zeros_like(cells)
    np.add.at(expected, (nearest_indices(HEIGHT // 4, HEIGHT)[:, None], nearest_indices(WIDTH // 4, WIDTH)[None, :]),
              np.exp(density))
    tv = 0.5 * np.abs(cells / n - expected).sum()
    # E[TV] of n multinomial draws ~ 0.5 * sum_c sqrt(2 p_c (1 - p_c) / (pi n)) (half-normal means), 0.048
    # here; over 2000 simulated multinomials TV / E[TV] was 1.00 +- 0.045 (max 1.19), so 1.25x is 5.6
    # standard deviations: a draw from another distribution shows, sampling noise does not.
    noise = 0.5 * np.sqrt(2 * expected * (1 - expected) / (np.pi * n)).sum()
    assert tv < 1.25 * noise, (tv, noise)
    # Inside its pixel a fixation is uniform (the jitter): 10 bins of the fractional parts, z < 5.
    for frac in (first[:, 0] % 1, first[:, 1] % 1):
        counts = np.bincount((frac * 10).astype(int), minlength=10)
        assert np.abs((counts - n / 10) / np.sqrt(n * 0.1 * 0.9)).max() < 5


def test_later_fixations_follow_the_conditional_mixture_not_one_member(predictor, features):
    # Each step draws a member at random and then from its map: in distribution the mixture.
    n, start = 20000, (12.5, 50.5)
    second = sampling.sample_scanpaths(predictor, features, n, 2, seed=12, start=start, batch_size=5000)[:, 1]
    hist = np.full((1, 4, 2), np.nan, np.float32)
    hist[0, 0] = start
    assert_marginals_match(second, np.asarray(predictor.conditional_log_density(features, hist))[0])
    member = predict.ScanpathPredictor(predictor.model, predictor.backbone,
                                       jax.tree.map(lambda x: x[:1], predictor.heads), predictor.centerbias)
    with pytest.raises(AssertionError):  # the test has the power to tell the mixture from a member
        assert_marginals_match(second, np.asarray(member.conditional_log_density(features, hist))[0])


def test_a_bigger_image_samples_on_its_own_grid():
    # The shipped center bias and a 2:3 image of another size than the module's (a second compilation).
    model = deepgaze3()
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *random_heads(model, 1))
    p = predict.ScanpathPredictor(model, load_backbone("vgg16"), stacked, centerbias.resolve("mit1003"))
    paths = sampling.sample_scanpaths(p, make_image(2, (96, 64)), 3, 3, seed=0)
    assert ((paths >= 0) & (paths < np.array([64, 96], np.float32))).all()
