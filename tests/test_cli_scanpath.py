"""``deepgaze scanpath`` and ``deepgaze predict --history``: outputs, the model kinds, one-line errors."""

import json

import numpy as np
import pytest
from PIL import Image

from deepgaze_jax import predict
from deepgaze_jax.cli import main, parse_points
from deepgaze_jax.deepgaze3 import check_history
from tests.test_cli import check_outputs, error_lines
from tests.test_scanpath_sampling import HEIGHT, WIDTH, make_image, save_scanpath_file


@pytest.fixture(scope="module")
def scanpath_file(tmp_path_factory):
    return save_scanpath_file(tmp_path_factory.mktemp("dg3") / "dg3.safetensors")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "photo.png"
    Image.fromarray(make_image()).save(path)
    return path


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = error_lines(err)
    return line


def test_scanpath_writes_json_and_png_reproducibly(tmp_path, scanpath_file, photo, capsys):
    out = tmp_path / "out"
    argv = ["scanpath", str(photo), "--heads", str(scanpath_file), "--n", "3", "--length", "4", "--seed", "5",
            "--out", str(out)]
    assert main(argv) == 0
    assert "photo_scanpaths.json" in capsys.readouterr().out
    doc = json.loads((out / "photo_scanpaths.json").read_text(encoding="utf-8"))
    assert (doc["width"], doc["height"], doc["seed"], doc["n"], doc["length"]) == (WIDTH, HEIGHT, 5, 3, 4)
    assert doc["model"] == str(scanpath_file) and doc["members"] == 2 and doc["history"] == 4
    assert doc["start"] is None and doc["image"] == str(photo)
    paths = np.asarray(doc["scanpaths"], np.float32)
    assert paths.shape == (3, 4, 2)
    assert ((paths >= 0) & (paths < np.array([WIDTH, HEIGHT], np.float32))).all()
    # The JSON holds the sampler's float32 values exactly.
    p = predict.load_scanpath_predictor(scanpath_file)
    from deepgaze_jax.sampling import sample_scanpaths

    np.testing.assert_array_equal(paths, sample_scanpaths(p, make_image(), 3, 4, seed=5))
    with Image.open(out / "photo_scanpaths.png") as picture:
        assert picture.format == "PNG" and picture.width > 400
    first = (out / "photo_scanpaths.json").read_bytes()
    assert main(argv) == 0  # the same seed: the same file
    assert (out / "photo_scanpaths.json").read_bytes() == first
    assert main(argv[:-2] + ["--start", "20,30.5", "--seed", "6", "--out", str(out)]) == 0
    doc = json.loads((out / "photo_scanpaths.json").read_text(encoding="utf-8"))
    assert doc["start"] == [20.0, 30.5] and all(path[0] == [20.0, 30.5] for path in doc["scanpaths"])


def test_scanpath_refuses_a_static_model_in_one_line(tmp_path, predictor_file, photo, capsys):
    assert main(["scanpath", str(photo), "--heads", str(predictor_file), "--out", str(tmp_path)]) == 2
    line = one_error(capsys)
    assert str(predictor_file) in line and "static saliency model" in line and "DeepGaze III" in line


def test_scanpath_without_a_shipped_model_says_to_pass_heads(tmp_path, photo, capsys, monkeypatch):
    monkeypatch.setattr(predict, "ASSETS", tmp_path / "no-assets")
    assert main(["scanpath", str(photo), "--out", str(tmp_path / "out")]) == 1
    line = one_error(capsys)
    assert "no DeepGaze III scanpath model ships yet" in line and "--heads" in line


@pytest.mark.parametrize("start, message", [
    ("1,2,3", "3 numbers; expected x,y pairs"),
    ("1,2,3,4", "expected one fixation X,Y, got 2"),
    ("nan,3", "not a finite position"),
    ("a,b", "not a comma-separated list of numbers"),
    (f"{WIDTH},3", f"lies outside the {WIDTH}x{HEIGHT} image"),
])
def test_scanpath_bad_start_is_one_line_exit_2(tmp_path, scanpath_file, photo, capsys, start, message):
    code = main(["scanpath", str(photo), "--heads", str(scanpath_file), "--n", "2", "--length", "2",
                 "--start", start, "--out", str(tmp_path)])
    assert code == 2
    line = one_error(capsys)
    assert "--start" in line and message in line


def test_scanpath_bad_seed_is_one_line_exit_2(tmp_path, scanpath_file, photo, capsys):
    assert main(["scanpath", str(photo), "--heads", str(scanpath_file), "--seed", "-1", "--out", str(tmp_path)]) == 2
    assert "--seed -1: must lie in 0..4294967295" in one_error(capsys)


def test_predict_history_gives_the_conditional_density(tmp_path, scanpath_file, photo, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(photo), "--heads", str(scanpath_file), "--history", "10,20, 30.5,40",
                 "--out", str(out)]) == 0
    density = check_outputs(out, "photo", (HEIGHT, WIDTH))
    p = predict.load_scanpath_predictor(scanpath_file)
    history = check_history(np.array([[10, 20], [30.5, 40]]), (HEIGHT, WIDTH), 4)
    np.testing.assert_allclose(density, p.predict(make_image(), history), atol=1e-5)
    # Without --history a scanpath model predicts the first fixation.
    assert main(["predict", str(photo), "--heads", str(scanpath_file), "--out", str(tmp_path / "first")]) == 0
    first = check_outputs(tmp_path / "first", "photo", (HEIGHT, WIDTH))
    np.testing.assert_allclose(first, p.predict(make_image()), atol=1e-5)
    assert np.abs(first - density).max() > 1e-3


@pytest.mark.parametrize("history, message", [
    ("1,2,3", "3 numbers; expected x,y pairs"),
    ("1,nan", "not finite"),
    ("x,1", "not a comma-separated list of numbers"),
    ("1,2,3,4,5,6,7,8,9,10", "5 fixations; "),
    (f"5,5,3,{HEIGHT}", f"lies outside the {WIDTH}x{HEIGHT} image"),
])
def test_predict_bad_history_is_one_line_exit_2(tmp_path, scanpath_file, photo, capsys, history, message):
    code = main(["predict", str(photo), "--heads", str(scanpath_file), "--history", history,
                 "--out", str(tmp_path)])
    assert code == 2
    line = one_error(capsys)
    assert "--history" in line and message in line


def test_predict_history_with_a_static_model_is_one_line_exit_2(tmp_path, predictor_file, photo, capsys):
    assert main(["predict", str(photo), "--heads", str(predictor_file), "--history", "1,2",
                 "--out", str(tmp_path)]) == 2
    line = one_error(capsys)
    assert "--history needs a scanpath model" in line and str(predictor_file) in line and "static" in line


def test_serve_refuses_a_scanpath_model_in_one_line(scanpath_file, capsys):
    assert main(["serve", "--heads", str(scanpath_file), "--port", "0"]) == 2
    line = one_error(capsys)
    assert str(scanpath_file) in line and "DeepGaze III scanpath model" in line and "static" in line


def test_points_parse_as_pairs():
    np.testing.assert_array_equal(parse_points(" 1, 2.5 ,3,4", "--history"), [[1, 2.5], [3, 4]])
    assert parse_points("", "--history").shape == (0, 2)


def _scanpath_dataset(root):
    """A FixaTons folder of two 66x94 images, three scanpaths with a forced start each."""
    from tests import fake_data

    images = {"u": (HEIGHT, WIDTH), "v": (HEIGHT, WIDTH)}
    paths = {("u", "s1"): [(47, 33, 0.004, 0.2), (10, 5, 0.3, 0.5), (80, 60, 0.6, 0.9), (30, 40, 1.0, 1.2)],
             ("u", "s2"): [(47, 33, 0.004, 0.2), (90, 2, 0.3, 0.5), (94, 20, 0.6, 0.7), (5, 66, 0.8, 0.9)],
             ("v", "s1"): [(47, 33, 0.004, 0.2), (60, 20, 0.3, 0.5), (61, 22, 0.6, 0.8)]}
    return fake_data.make_fixatons(root, images, paths)


def test_evaluate_scores_a_scanpath_model_on_its_conditional_densities(tmp_path, scanpath_file, capsys):
    """`deepgaze evaluate` with a DeepGaze III file: each conventional fixation on the density given its history,
    checked against full-size maps scored by the metrics module (AUC, NSS) and read at the fixation (LL)."""
    from deepgaze_jax import data, metrics
    from deepgaze_jax.data.scanpaths import with_histories
    from deepgaze_jax.likelihood import bits_at

    root = _scanpath_dataset(tmp_path / "ds")
    out = tmp_path / "eval"
    assert main(["evaluate", "--mit1003", str(root), "--heads", str(scanpath_file), "--out", str(out),
                 "--cache", str(tmp_path / "cache")]) == 0
    result = json.loads((out / "scanpath_metrics.json").read_text())
    assert "IG of the history" in (out / "scanpath_metrics.md").read_text()
    p = predict.load_scanpath_predictor(scanpath_file)
    scan = with_histories(data.from_raw(data.read_fixatons(root), filter_conventional=False), p.history)
    f = scan.dataset.fixations
    # 6 targets: the forced starts are history only; (94, 20) and (5, 66) lie outside (x_src == W, y_src == H)
    assert result["total"]["fixations"] == len(f) == 6
    bits, aucs, nsss, static = [], [], [], []
    for i in range(len(scan.dataset)):
        rows = np.flatnonzero(f.image_index == i)
        image = scan.dataset.images[i]
        maps = np.asarray(p.conditional_log_density(image, scan.histories[rows]))
        for k, r in enumerate(rows):
            bits.append(bits_at(maps[k], f.x[r:r + 1], f.y[r:r + 1])[0])
            aucs.append(metrics.auc(maps[k], f.x[r:r + 1], f.y[r:r + 1])[0])
            nsss.append(metrics.nss(np.exp(maps[k]), f.x[r:r + 1], f.y[r:r + 1])[0])
        static.extend(bits_at(np.asarray(p.log_density(image)), f.x[rows], f.y[rows]))
    t = result["total"]
    np.testing.assert_allclose(t["conditional_log_likelihood"], np.mean(bits), atol=1e-5)
    np.testing.assert_allclose(t["static_log_likelihood"], np.mean(static), atol=1e-5)
    np.testing.assert_allclose(t["conditional_auc"], np.mean(aucs), atol=1e-6)
    np.testing.assert_allclose(t["conditional_nss"], np.mean(nsss), rtol=1e-4)
    np.testing.assert_allclose(t["information_gain_over_static"], np.mean(bits) - np.mean(static), atol=1e-5)
    assert [r["index"] for r in result["by_index"]] == [1, 2, 3]
