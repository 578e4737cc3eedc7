"""Data: readers, bad input, TFDS builders (dummy and real MIT1003), CV splits, the training batches of a dataset."""

import logging
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from deepgaze_jax import data
from deepgaze_jax import input_pipeline as P
from deepgaze_jax.data import builders
from tests import fake_data

# --------------------------------------------------------------------------------------------- readers


def test_read_fixatons_converts_to_zero_based_and_flags(tmp_path):
    raw = data.read_fixatons(fake_data.make_fixatons(tmp_path))
    assert raw.image_ids == ("a.jpeg", "b.jpeg", "c.jpeg")
    assert raw.sizes.tolist() == [[12, 16], [16, 12], [12, 16]]
    assert raw.subjects == ("s1", "s2")
    f = raw.fixations
    assert len(f) == fake_data.N_RAW
    first = f.select((f.image_index == 0) & (f.subject == 0))
    np.testing.assert_array_equal(first.x, [7, 2, 14])
    np.testing.assert_array_equal(first.y, [5, 3, 10])
    np.testing.assert_array_equal(first.index, [0, 1, 2])
    np.testing.assert_allclose(first.onset, [0.004, 0.3, 0.6], atol=1e-6)
    np.testing.assert_allclose(first.duration, [0.196, 0.2, 0.3], atol=1e-6)
    assert f.initial.sum() == fake_data.N_INITIAL
    kept, report = data.conventional_filter(f)
    assert (report.total, report.dropped_initial, report.dropped_outside, report.kept) == (
        fake_data.N_RAW, fake_data.N_INITIAL, fake_data.N_OUTSIDE, len(kept))
    assert len(kept) == fake_data.N_RAW - fake_data.N_INITIAL - fake_data.N_OUTSIDE


def test_read_fixation_csv(tmp_path):
    raw = data.read_fixation_csv(*_csv_paths(fake_data.make_csv_dataset(tmp_path)))
    assert raw.image_ids == ("p.png", "q.jpeg") and raw.subjects == ("u1", "u2")
    assert raw.sizes.tolist() == [[10, 8], [8, 10]]
    np.testing.assert_allclose(raw.fixations.x, [1.5, 7.9, 3, 9.5, 10.0])
    assert raw.fixations.inside.tolist() == [True, True, True, True, False]
    assert not raw.fixations.initial.any()
    one = data.read_fixation_csv(*_csv_paths(tmp_path), one_based=True)
    np.testing.assert_allclose(one.fixations.x, [0.5, 6.9, 2, 8.5, 9.0])
    assert one.fixations.inside.tolist() == [True, True, True, False, True]  # y = 0.2 - 1 < 0


def _csv_paths(root):
    return root / "STIMULI", root / "fixations.csv"


# ------------------------------------------------------------------------------------------- bad input


def test_scanpath_folder_without_stimulus_names_it(tmp_path):
    root = fake_data.make_fixatons(tmp_path)
    (root / "STIMULI" / "b.jpeg").unlink()
    with pytest.raises(FileNotFoundError, match=r"SCANPATHS/b has no stimulus"):
        data.read_fixatons(root)


def test_missing_stimulus_in_csv_names_file_and_line(tmp_path):
    root = fake_data.make_csv_dataset(tmp_path, rows=["p.png,u1,1,1,0,0,1", "gone.jpg,u1,1,1,0,0,1"])
    with pytest.raises(FileNotFoundError, match=r"fixations.csv:3: image 'gone.jpg' not found"):
        data.read_fixation_csv(*_csv_paths(root))


def test_corrupt_jpeg_names_file(tmp_path):
    root = fake_data.make_fixatons(tmp_path)
    (root / "STIMULI" / "a.jpeg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"cannot read image .*a\.jpeg"):
        data.read_fixatons(root)


def test_truncated_jpeg_fails_the_build_naming_file(tmp_path):
    root = fake_data.make_fixatons(tmp_path / "raw")
    fake_data.write_image(root / "STIMULI" / "c.jpeg", 120, 160, seed=3)
    path = root / "STIMULI" / "c.jpeg"
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])  # header intact, scan data cut
    raw = data.read_fixatons(root)  # header-only read succeeds
    with pytest.raises(ValueError, match=r"corrupt or unreadable image .*c\.jpeg"):
        list(builders.generate_examples(raw))
    with pytest.raises(ValueError, match=r"corrupt or unreadable image .*c\.jpeg"):
        data.from_raw(raw).images[2]


def test_stimuli_are_read_as_stored_where_the_fixations_were_recorded(tmp_path):
    from deepgaze_jax.images import load_image
    from tests import image_cases

    root = fake_data.make_fixatons(tmp_path / "raw")
    tagged, plain = image_cases.exif_oriented_jpeg(6, size=(12, 16))  # "show me turned": not for stimuli
    (root / "STIMULI" / "a.jpeg").write_bytes(tagged)
    raw = data.read_fixatons(root)
    image = data.from_raw(raw).images[0]
    assert image.shape == (*raw.sizes[0], 3) == (12, 16, 3)
    np.testing.assert_array_equal(image, load_image(plain))  # the same stored pixels, not turned
    b = _build(builders.Mit1003, tmp_path, root, config="all")
    np.testing.assert_array_equal(b.as_data_source(split="train")[0]["image"], image)
    (root / "STIMULI" / "a.jpeg").unlink()
    with pytest.raises(FileNotFoundError, match=r"stimulus file missing: .*a\.jpeg"):
        data.from_raw(raw).images[0]


def test_malformed_scanpath_names_file_and_line(tmp_path):
    root = fake_data.make_fixatons(tmp_path)
    (root / "SCANPATHS" / "c" / "s1").write_text("9 7 0.004 0.2\n4 ten 0.3 0.6\n")
    with pytest.raises(ValueError, match=r"SCANPATHS/c/s1:2: expected 4 numbers"):
        data.read_fixatons(root)
    (root / "SCANPATHS" / "c" / "s1").write_text("9 7 0.004\n")
    with pytest.raises(ValueError, match=r"SCANPATHS/c/s1:1: expected 4 numbers"):
        data.read_fixatons(root)


def test_empty_scanpath_is_counted_and_logged(tmp_path, caplog):
    root = fake_data.make_fixatons(tmp_path)
    (root / "SCANPATHS" / "c" / "s1").write_text("\n")
    with caplog.at_level(logging.WARNING):
        raw = data.read_fixatons(root)
    assert raw.report.empty_scanpaths == ("SCANPATHS/c/s1",)
    assert raw.report.images_without_fixations == ("c.jpeg",)
    assert "1 empty scanpath files" in caplog.text
    assert len(raw.fixations) == fake_data.N_RAW - 2


def test_csv_missing_columns_and_malformed_rows(tmp_path):
    root = fake_data.make_csv_dataset(tmp_path, header="image,subject,x,t", rows=["p.png,u1,1,0"])
    with pytest.raises(ValueError, match=r"fixations.csv: missing column\(s\) \['y'\]"):
        data.read_fixation_csv(*_csv_paths(root))
    root = fake_data.make_csv_dataset(tmp_path, rows=["p.png,u1,1,1,0,0,1", "p.png,u1,1,,1,0,1"])
    with pytest.raises(ValueError, match=r"fixations.csv:3: malformed row"):
        data.read_fixation_csv(*_csv_paths(root))
    root = fake_data.make_csv_dataset(tmp_path, rows=["p.png,u1,1,nan,0,0,1"])
    with pytest.raises(ValueError, match=r"fixations.csv:2: malformed row"):
        data.read_fixation_csv(*_csv_paths(root))


def test_outside_fixations_are_counted_or_rejected(tmp_path):
    raw = data.read_fixatons(fake_data.make_fixatons(tmp_path))
    ds = data.from_raw(raw)
    assert ds.filter_report.dropped_outside == fake_data.N_OUTSIDE
    unfiltered = data.from_raw(raw, filter_conventional=False)
    assert unfiltered.filter_report is None and len(unfiltered.fixations) == fake_data.N_RAW
    with pytest.raises(ValueError, match=r"fixations lie outside their image"):
        P.FixationSet.from_dataset(unfiltered, _no_features(unfiltered))


# ---------------------------------------------------------------------------------------- TFDS builders


def _build(builder_cls, tmp_path, manual_dir, **kwargs):
    b = builder_cls(data_dir=str(tmp_path / "tfds"), file_format="array_record", **kwargs)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return b


def test_mit1003_builder_on_dummy_data(tmp_path):
    root = fake_data.make_fixatons(tmp_path / "raw")
    fake_data.write_image(root / "STIMULI" / "big.jpeg", 768, 1024, seed=9)  # the one "onesize" image
    (root / "SCANPATHS" / "big").mkdir()
    (root / "SCANPATHS" / "big" / "s1").write_text("512 384 0.004 0.3\n1000 700 0.4 0.6\n")
    raw = data.read_fixatons(root)
    b = _build(builders.Mit1003, tmp_path, tmp_path / "raw", config="all")
    assert b.info.splits["train"].num_examples == 4
    assert list(b.info.metadata["subjects"]) == ["s1", "s2"]
    src = b.as_data_source(split="train")
    ex = src[1]
    assert ex["image_id"] in (b"b.jpeg", "b.jpeg") and ex["image_index"] == 1
    assert ex["image"].shape == (16, 12, 3) and ex["image"].dtype == np.uint8
    np.testing.assert_array_equal(ex["image"], data.from_raw(raw).images[1])  # stored bytes unchanged
    ds = data.load_tfds(b)
    kept, _ = data.conventional_filter(raw.fixations)
    for name in ("image_index", "x", "y", "index", "onset", "duration", "subject"):
        np.testing.assert_array_equal(getattr(ds.fixations, name), getattr(kept, name), err_msg=name)
    assert ds.filter_report.dropped_initial == fake_data.N_INITIAL + 1

    one = data.load_tfds(_build(builders.Mit1003, tmp_path, tmp_path / "raw", config="onesize"))
    assert one.image_ids == ("big.jpeg",) and len(one.fixations) == 1
    two = data.load_tfds(_build(builders.Mit1003, tmp_path, tmp_path / "raw", config="twosize"))
    assert two.sizes.tolist() == [[768, 1024], [1024, 768], [768, 1024], [768, 1024]]
    assert two.images[1].shape == (1024, 768, 3)
    b_rows = ds.fixations.image_index == 1
    np.testing.assert_allclose(two.fixations.x[b_rows], ds.fixations.x[b_rows] * 768 / 12, rtol=1e-6)
    np.testing.assert_allclose(two.fixations.y[b_rows], ds.fixations.y[b_rows] * 1024 / 16, rtol=1e-6)


def test_csv_builder_on_dummy_data(tmp_path):
    fake_data.make_csv_dataset(tmp_path / "raw")
    ds = data.load_fixation_csv(tmp_path / "raw", "mine", data_dir=tmp_path / "tfds")
    assert ds.image_ids == ("p.png", "q.jpeg") and ds.subjects == ("u1", "u2")
    assert ds.filter_report.dropped_outside == 1 and len(ds.fixations) == 4
    assert ds.images[0].shape == (10, 8, 3) and ds.images[1].shape == (8, 10, 3)
    np.testing.assert_allclose(ds.fixations.x, [1.5, 7.9, 3, 9.5])


# ---------------------------------------------------------------------------------------------- splits


@pytest.mark.parametrize("n", [1003, 463, 25])
def test_crossval_splits_convention(n):
    order = np.random.RandomState(42).permutation(n)
    size = -(-n // 10)
    tests = []
    for fold in range(10):
        s = data.crossval_splits(n, fold)
        np.testing.assert_array_equal(s["test"], np.sort(order[fold * size:(fold + 1) * size]))
        np.testing.assert_array_equal(s["val"], data.crossval_splits(n, (fold - 1) % 10)["test"])
        everything = np.concatenate([s["train"], s["val"], s["test"]])
        np.testing.assert_array_equal(np.sort(everything), np.arange(n))
        tests.append(s["test"])
    np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.arange(n))
    if n == 1003:  # chunks of 101, the last of 94
        assert [len(data.crossval_splits(n, 0)[k]) for k in ("train", "val", "test")] == [808, 94, 101]


# -------------------------------------------------------------------------------------------- pipeline


def _no_features(dataset, value=None):
    """Stand-in backbone features, one (1, 1, 1) map per image (its index where ``value`` is "index")."""
    return [np.full((1, 1, 1), i if value == "index" else 0, np.float32) for i in range(len(dataset))]


def _epoch_images(batches):
    """The real images of an epoch's batches, in order, after the checks every batch must pass."""
    images = []
    for b in batches:
        assert b.features.dtype == np.float32 and b.xs.dtype == np.float32 and b.mask.dtype == bool
        B, N = b.xs.shape
        assert b.features.shape[0] == B == b.indices.shape[0] and b.ys.shape == (B, N)
        assert (b.indices >= 0).any()
        assert not b.mask[b.indices < 0].any()
        images.append(b.indices[b.indices >= 0])
    return np.concatenate(images)


def _epoch_rows(batches, rows):
    """The fixation-table rows of an epoch's batches (``rows``: per image its rows), each entry checked
    to hold all of its image's fixations."""
    out = []
    for b in batches:
        for k in np.flatnonzero(b.indices >= 0):
            r = rows[b.indices[k]]
            assert b.mask[k].sum() == len(r)
            out.append(r)
    return np.concatenate(out)


def test_batches_every_fixation_once_and_determinism(tmp_path):
    ds = data.from_raw(data.read_fixatons(fake_data.make_fixatons(tmp_path)))
    fixations = P.FixationSet.from_dataset(ds, _no_features(ds, "index"))
    bt = P.batches(fixations, 2, seed=3)
    images = _epoch_images(bt)
    rows = data.rows_by_image(ds)
    np.testing.assert_array_equal(np.sort(_epoch_rows(bt, rows)), np.arange(len(ds.fixations)))
    for b in bt:
        for k in np.flatnonzero(b.indices >= 0):
            i, m = b.indices[k], b.mask[k]
            r = rows[i]
            assert (ds.fixations.image_index[r] == i).all()
            np.testing.assert_array_equal(b.xs[k][m], ds.fixations.x[r])
            np.testing.assert_array_equal(b.ys[k][m], ds.fixations.y[r])
            np.testing.assert_array_equal(b.features[k], np.full((1, 1, 1), i))
            assert b.shape == tuple(ds.sizes[i])
    again = _epoch_images(P.batches(fixations, 2, seed=3))
    np.testing.assert_array_equal(images, again)
    # an image with more fixations than a batch entry holds is refused, never cut short
    with pytest.raises(ValueError, match=r"image 0: \d+ fixations exceed max_fixations=2"):
        P.FixationSet.from_dataset(ds, _no_features(ds), max_fixations=2)


def test_crossval_subset_keeps_fixations(tmp_path):
    ds = data.from_raw(data.read_fixatons(fake_data.make_fixatons(tmp_path)))
    sub = ds.subset([2, 0])
    assert sub.image_ids == ("c.jpeg", "a.jpeg")
    assert len(sub.fixations) == int(np.isin(ds.fixations.image_index, [0, 2]).sum())
    np.testing.assert_array_equal(sub.images[0], ds.images[2])


# ------------------------------------------------------------------------------------ real MIT1003 data


@pytest.fixture(scope="module")
def mit1003_tfds(mit1003_dir, tmp_path_factory):
    return data.load_mit1003(mit1003_dir, "all", data_dir=tmp_path_factory.mktemp("tfds"))


def test_mit1003_reader_counts(mit1003_dir):
    raw = data.read_fixatons(mit1003_dir)
    assert len(raw.image_ids) == 1003 and len(raw.subjects) == 15 and len(raw.fixations) == 119_432
    kept, report = data.conventional_filter(raw.fixations)
    assert report.kept == 104_170 and report.dropped_initial == 15_021 and report.dropped_outside == 241
    onesize = np.flatnonzero((raw.sizes == [768, 1024]).all(axis=1))
    assert len(onesize) == 463 and np.isin(kept.image_index, onesize).sum() == 48_771
    # fixations.csv is the same data flattened (a cross-check, not used by the builder)
    csv = data.read_fixation_csv(mit1003_dir / "STIMULI", mit1003_dir / "fixations.csv")
    assert csv.image_ids == raw.image_ids and csv.subjects == raw.subjects
    for name in ("image_index", "x", "y", "index", "subject", "inside", "initial"):
        np.testing.assert_array_equal(getattr(csv.fixations, name), getattr(raw.fixations, name), err_msg=name)


def test_mit1003_tfds_all(mit1003_tfds):
    ds = mit1003_tfds
    assert len(ds) == 1003 and len(ds.subjects) == 15 and len(ds.fixations) == 104_170
    assert ds.filter_report.dropped_initial == 15_021 and ds.filter_report.dropped_outside == 241
    assert len(np.unique(ds.fixations.subject)) == 15
    for i in (0, 500, 1002):
        assert ds.images[i].shape == (*ds.sizes[i], 3)


def test_mit1003_tfds_onesize(mit1003_dir, tmp_path):
    ds = data.load_mit1003(mit1003_dir, "onesize", data_dir=tmp_path)
    assert len(ds) == 463 and len(ds.fixations) == 48_771
    assert (ds.sizes == [768, 1024]).all()
    # every fixation exactly once per epoch, batches of one static shape (160 fixations padded)
    fixations = P.FixationSet.from_dataset(ds, _no_features(ds), max_fixations=160)
    bt = P.batches(fixations, 4, seed=0, epoch=1)
    shapes = {((len(b.indices), *b.shape, 3), b.xs.shape) for b in bt}
    np.testing.assert_array_equal(np.sort(_epoch_rows(bt, data.rows_by_image(ds))), np.arange(48_771))
    assert shapes == {((4, 768, 1024, 3), (4, 160))}


def test_mit1003_tfds_twosize(mit1003_dir, tmp_path):
    ds = data.load_mit1003(mit1003_dir, "twosize", data_dir=tmp_path)
    assert len(ds) == 1003 and len(ds.fixations) == 104_170
    assert {tuple(s) for s in ds.sizes} == {(768, 1024), (1024, 768)}
    assert ds.images[0].shape == (*ds.sizes[0], 3)
    data.check_inside(ds)  # scaled fixations stay inside the resized images


def test_no_tensorflow_imported():
    assert "tensorflow" not in sys.modules  # so it can never claim an accelerator


def test_mit1003_batches_cover_train_split_once(mit1003_tfds):
    ds = mit1003_tfds
    split = data.crossval_splits(len(ds), fold=3)
    bt = P.batches(P.FixationSet.from_dataset(ds, _no_features(ds)).subset(split["train"]), 4, seed=1)
    rows = data.rows_by_image(ds)
    rows = _epoch_rows(bt, [rows[i] for i in split["train"]])  # batch indices count within the split
    expected = np.flatnonzero(np.isin(ds.fixations.image_index, split["train"]))
    np.testing.assert_array_equal(np.sort(rows), expected)


def test_csv_reader_drops_exact_duplicates_and_refuses_conflicting_ones(tmp_path):
    rows = ["p.png,u1,1.5,2.5,0,0.1,0.3", "p.png,u1,1.5,2.5,0,0.1,0.3", "p.png,u2,3,3,0,0.1,0.2",
            "p.png,u2,3,3,0,0.1,0.2", "q.jpeg,u2,9.5,0.2,0,0.1,0.2"]
    root = fake_data.make_csv_dataset(tmp_path / "dup", rows=rows)
    raw = data.read_fixation_csv(root / "STIMULI", root / "fixations.csv")
    assert len(raw.fixations) == 3 and raw.report.duplicate_rows == (3, 5)
    assert "2 duplicate rows" in str(raw.report)
    rows[1] = "p.png,u1,1.6,2.5,0,0.1,0.3"
    root = fake_data.make_csv_dataset(tmp_path / "conflict", rows=rows)
    with pytest.raises(ValueError, match=r"fixations.csv:3: fixation t=0 of 'u1' on 'p.png' is also line 2"):
        data.read_fixation_csv(root / "STIMULI", root / "fixations.csv")


def test_csv_reader_takes_sub_pixel_coordinates_and_durations_in_ms(tmp_path):
    root = fake_data.make_csv_dataset(tmp_path / "ms", header="image,subject,x,y,t,duration_ms,x_src",
                                      rows=["p.png,u1,1.25,2.75,0,250,2.25", "q.jpeg,u1,0.5,0.5,0,125.5,1.5"])
    raw = data.read_fixation_csv(root / "STIMULI", root / "fixations.csv")
    np.testing.assert_allclose(raw.fixations.x, [1.25, 0.5])
    np.testing.assert_allclose(raw.fixations.duration, [0.25, 0.1255])


def test_csv_build_is_keyed_on_the_files(tmp_path):
    root = fake_data.make_csv_dataset(tmp_path / "raw")
    first = data.load_fixation_csv(root, "mine", data_dir=tmp_path / "tfds")
    assert len(first.fixations) == 4
    csv = root / "fixations.csv"
    csv.write_text(csv.read_text().replace("p.png,u2,3,3,0", "p.png,u2,4,4,0"))
    edited = data.load_fixation_csv(root, "mine", data_dir=tmp_path / "tfds")
    assert 4.0 in edited.fixations.x and 3.0 not in edited.fixations.x  # not the stale build
    assert len(list((tmp_path / "tfds" / "fixation_csv").glob("mine_*"))) == 2


def test_osie_through_the_generic_csv_builder(osie_dir, tmp_path):
    ds = data.load_fixation_csv(osie_dir, "osie", data_dir=tmp_path / "tfds")
    assert len(ds) == 700 and len(ds.subjects) == 15 and len(ds.fixations) == 98321
    assert ds.filter_report.kept == 98321  # all inside, no forced initial fixation marked: nothing dropped
    assert ds.fixations.inside.all() and not ds.fixations.initial.any()
    assert {tuple(s) for s in ds.sizes} == {(600, 800)}
    assert ds.images[0].shape == (600, 800, 3)
    assert np.all(np.isfinite(ds.fixations.duration)) and ds.fixations.x.max() < 800
