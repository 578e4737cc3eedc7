"""Scanpath histories (data/scanpaths.py), split fixation sets, and DeepGaze III training (the phases)."""

import csv
import dataclasses

import jax
import numpy as np
import pytest

from deepgaze_jax import data
from deepgaze_jax import input_pipeline as P
from deepgaze_jax import train as T
from deepgaze_jax.config import TrainConfig
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.data.scanpaths import histories, with_histories
from deepgaze_jax.deepgaze3 import DeepGazeIII
from deepgaze_jax.model import DeepGaze
from tests import fake_data

NAN = np.nan


def table(rows):
    """Fixations from rows (image, subject, index, x, y, onset, inside, initial)."""
    cols = list(zip(*rows))
    return Fixations(image_index=cols[0], subject=cols[1], index=cols[2], x=cols[3], y=cols[4], onset=cols[5],
                     duration=np.full(len(rows), 0.1), inside=cols[6], initial=cols[7])


def test_histories_are_the_previous_inside_fixations_most_recent_first():
    rows = [  # out of table order on purpose; image 0 observer 0 has an outside fixation at index 2
        (0, 0, 3, 40.0, 41.0, 0.9, True, False),
        (0, 0, 0, 10.0, 11.0, 0.0, True, True),
        (0, 1, 1, 50.0, 51.0, 0.3, True, False),
        (0, 0, 2, -5.0, 21.0, 0.6, False, False),
        (0, 0, 1, 20.0, 21.0, 0.3, True, False),
        (1, 0, 0, 60.0, 61.0, 0.1, True, False),
        (0, 0, 4, 30.0, 31.0, 1.2, True, False),
        (0, 1, 0, 70.0, 71.0, 0.0, True, True),
    ]
    h = histories(table(rows), 2)
    expected = {
        0: [[20, 21], [10, 11]],      # index 3: index 2 is outside, skipped
        1: [[NAN, NAN], [NAN, NAN]],  # a scanpath's first fixation
        2: [[70, 71], [NAN, NAN]],    # the other observer's scanpath
        3: [[20, 21], [10, 11]],      # an outside fixation gets a history too (it is no target)
        4: [[10, 11], [NAN, NAN]],
        5: [[NAN, NAN], [NAN, NAN]],  # another image
        6: [[40, 41], [20, 21]],
        7: [[NAN, NAN], [NAN, NAN]],
    }
    for row, want in expected.items():
        np.testing.assert_array_equal(h[row], np.array(want, np.float32), err_msg=f"row {row}")


def test_unsorted_onsets_and_repeated_indices_are_refused_naming_the_scanpath():
    rows = [(0, 0, 0, 1.0, 1.0, 0.5, True, False), (0, 0, 1, 2.0, 2.0, 0.2, True, False)]
    with pytest.raises(ValueError, match=r"image img\.jpg, observer ann: onsets are not sorted: fixation 1 starts at 0\.200"):
        histories(table(rows), 4, image_ids=["img.jpg"], subjects=["ann"])
    rows = [(0, 0, 1, 1.0, 1.0, 0.1, True, False), (0, 0, 1, 2.0, 2.0, 0.2, True, False)]
    with pytest.raises(ValueError, match="two fixations with index 1"):
        histories(table(rows), 4)
    rows = [(0, 0, 0, 1.0, 1.0, NAN, True, False), (0, 0, 1, 2.0, 2.0, NAN, True, False)]  # no onsets: fine
    assert np.isnan(histories(table(rows), 1)[0]).all()


def test_with_histories_keeps_the_conventional_targets_and_the_initial_fixation_as_history(tmp_path):
    raw = data.read_fixatons(fake_data.make_fixatons(tmp_path))
    scan = with_histories(data.from_raw(raw, filter_conventional=False), 4)
    expected = data.from_raw(raw)  # the conventional filter
    assert len(scan.dataset.fixations) == len(expected.fixations) == len(scan.histories)
    np.testing.assert_array_equal(scan.dataset.fixations.x, expected.fixations.x)
    # a/s1: (8, 6) initial (0-based (7, 5)), then (3, 4) -> its history is the initial fixation
    f = scan.dataset.fixations
    first = np.flatnonzero((f.image_index == 0) & (f.index == 1) & (f.subject == raw.subjects.index("s1")))[0]
    np.testing.assert_array_equal(scan.histories[first], [[7, 5], [NAN, NAN], [NAN, NAN], [NAN, NAN]])
    with pytest.raises(ValueError, match="unfiltered"):
        with_histories(expected, 4)


def test_mit1003_histories_match_a_direct_reading_of_the_csv(mit1003_dir):
    """Every target of the conventional MIT1003 set gets the last 4 inside fixations of its scanpath, the
    forced start included, as a plain reading of fixations.csv finds them (300 random targets)."""
    raw = data.read_fixatons(mit1003_dir)
    scan = with_histories(data.from_raw(raw, filter_conventional=False), 4)
    assert len(scan.histories) == 104_170
    lengths = np.bincount(scan.history_lengths(), minlength=5)
    assert lengths[0] < 50 and lengths[1:].sum() > 104_000  # nearly every target has the forced start
    paths: dict[tuple[str, str], list] = {}
    with open(mit1003_dir / "fixations.csv", newline="") as f:
        for row in csv.DictReader(f):
            paths.setdefault((row["image"], row["subject"]), []).append(row)
    f = scan.dataset.fixations
    rng = np.random.default_rng(0)
    for k in rng.choice(len(f), 300, replace=False):
        key = (scan.dataset.image_ids[f.image_index[k]], scan.dataset.subjects[f.subject[k]])
        before = [r for r in sorted(paths[key], key=lambda r: int(r["t"]))
                  if int(r["t"]) < f.index[k] and r["inside"] == "1"]
        want = np.full((4, 2), np.nan, np.float32)
        for j, r in enumerate(before[::-1][:4]):
            want[j] = float(r["x"]), float(r["y"])
        np.testing.assert_array_equal(scan.histories[k], want, err_msg=str(key))


def _fixation_set(n_images=6, n_fix=(5, 13), seed=0, hist=2, shape=(32, 32), channels=4):
    rng = np.random.default_rng(seed)
    counts = rng.integers(*n_fix, size=n_images)
    feats = [rng.normal(size=(4, 4, channels)).astype(np.float32) for _ in counts]
    xs = [rng.uniform(0, shape[1], n).astype(np.float32) for n in counts]
    ys = [rng.uniform(0, shape[0], n).astype(np.float32) for n in counts]
    hs = [rng.uniform(0, shape[0], (n, hist, 2)).astype(np.float32) for n in counts]
    return P.FixationSet(feats, [shape] * n_images, xs, ys, int(counts.max()), histories=hs)


def test_split_items_share_features_and_join_back_in_order():
    full = _fixation_set()
    items = full.split(4)
    assert max(len(x) for x in items.xs) <= 4 and items.max_fixations == 4
    assert items.image_count == len(full) and len(items) > len(full)
    assert all(items.features[j] is full.features[items.images[j]] for j in range(len(items)))  # no copies
    for a, b in zip(items.per_image(items.xs), full.xs):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(items.per_image(items.histories), full.histories):
        np.testing.assert_array_equal(a, b)
    # an image weighs as one in the loss however it is split: its items' weights sum to the same
    w = P.loss_weights(items, "image")
    per_image = np.bincount(items.images, weights=w)
    np.testing.assert_allclose(per_image, per_image[0], rtol=1e-6)
    sub = items.subset([4, 1])  # whole images, renumbered
    assert sub.image_count == 2
    np.testing.assert_array_equal(sub.per_image(sub.xs)[0], full.xs[4])
    batch = P.batches(items, 3, seed=None)[0]
    assert batch.history.shape == (3, 4, 2, 2)
    assert np.isnan(batch.history[~batch.mask]).all()


def _tiny_dg3(history=2):
    spatial = DeepGaze(backbone="alexnet", layers=("conv5",), readout_channels=(8, 16, 1), readout_bias=False,
                       readout_kind="iie", downsample=2, readout_factor=4, saliency_map_factor=4, max_blur_radius=12)
    return DeepGazeIII(spatial, history=history, scanpath_channels=(16, 8), selection_channels=(16, 8, 1))


def _attraction_data(n_images, seed):
    """Fixations that land near the previous one: a history tells where the next one goes, the image does not."""
    rng = np.random.default_rng(seed)
    shape, feats, xs, ys, hs = (64, 64), [], [], [], []
    for _ in range(n_images):
        path = [rng.uniform(4, 60, 2)]
        for _ in range(11):
            path.append(np.clip(path[-1] + rng.normal(0, 3, 2), 0, 63.9))
        path = np.array(path, np.float32)
        hist = np.full((11, 2, 2), np.nan, np.float32)
        for t in range(1, 12):
            prev = path[max(0, t - 2):t][::-1]
            hist[t - 1, : len(prev)] = prev
        feats.append(rng.normal(size=(8, 8, 256)).astype(np.float32))
        xs.append(path[1:, 0]), ys.append(path[1:, 1]), hs.append(hist)
    return P.FixationSet(feats, [shape] * n_images, xs, ys, 11, histories=hs)


def test_the_scanpath_phase_learns_what_the_history_tells_and_keeps_frozen_layers(tmp_path):
    model = _tiny_dg3()
    uniform = lambda shape: np.full(shape, -np.log(shape[0] * shape[1]), np.float32)  # noqa: E731
    train, val = _attraction_data(24, 0), _attraction_data(8, 1)
    spatial_config = TrainConfig(model="deepgaze3_vgg16", learning_rate=0.01, max_epochs=3, batch_size=4,
                                 decay_epochs=(10,))
    static = dataclasses.replace(train, histories=None)
    spatial = T.fit(spatial_config, static, dataclasses.replace(val, histories=None), uniform,
                    model=model.with_history(0), progress=False)
    config = dataclasses.replace(spatial_config, learning_rate=0.01, max_epochs=6, max_fixations=6,
                                 frozen=("saliency/conv0", "saliency/conv1"))
    start = model.extend_head(spatial.best_params, jax.random.PRNGKey(1))
    result = T.fit(config, train.split(6), val.split(6), uniform, workdir=tmp_path / "run", init_head=start,
                   model=model, progress=False)
    # The history is worth bits here (the next fixation lies within ~3 px of the last one); the image is noise.
    assert result.best_val > spatial.best_val + 1.0, (result.best_val, spatial.best_val)
    for layer in ("conv0", "conv1"):
        for name, value in start["saliency"][layer].items():
            np.testing.assert_array_equal(result.best_params["saliency"][layer][name], value, err_msg=layer + name)
    assert not np.array_equal(result.best_params["saliency"]["conv2"]["kernel"], start["saliency"]["conv2"]["kernel"])
    # resumes exactly: a second call finds the finished run
    again = T.fit(config, train.split(6), val.split(6), uniform, workdir=tmp_path / "run", init_head=start,
                  model=model, progress=False)
    assert again.best_val == result.best_val and again.epochs == result.epochs


def test_frozen_paths_are_validated():
    with pytest.raises(ValueError, match="frozen"):
        TrainConfig(frozen=("/saliency",))
    with pytest.raises(ValueError, match="list of strings"):
        TrainConfig.from_dict({"frozen": [1]})
    with pytest.raises(ValueError, match="max_fixations"):
        TrainConfig(max_fixations=-1)
