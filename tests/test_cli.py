"""The ``deepgaze`` command end to end: real photographs, odd and bad files, exit codes, messages."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.special
from PIL import Image

from deepgaze_jax.cli import build_parser, expand_inputs, main, sample_image
from deepgaze_jax.predict import ASSETS
from tests import image_cases
from tests.conftest import REPO_ROOT


def check_outputs(out: pathlib.Path, stem: str, shape: tuple[int, int], png: bool = True) -> np.ndarray:
    density = np.load(out / f"{stem}.npy")
    assert density.shape == shape and density.dtype == np.float32
    assert abs(float(scipy.special.logsumexp(density))) < 1e-3  # a normalised log density in nats
    if png:
        with Image.open(out / f"{stem}.png") as picture:
            assert picture.format == "PNG" and picture.width > 400
    return density


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("deepgaze: error:")]


def test_help_lists_every_subcommand_and_each_has_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("predict", "convert", "serve"))
    for command, option in [("predict", "--batch-size"), ("serve", "--port"), ("convert", "torchvision")]:
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        assert option in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["predict", "--batch-size", "0"], ["serve", "--port", "x"],
                                  ["convert", "nonsense"], ["serve", "--header-timeout", "nan"],
                                  ["serve", "--body-timeout", "0"], ["serve", "--header-timeout", "-1"]])
def test_usage_errors_exit_with_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_parser_subcommands_are_one_function_each():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) >= {"predict", "convert", "serve"}


def test_predict_without_an_image_uses_the_sample_photograph(tmp_path, predictor_file, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--heads", str(predictor_file), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "grace_hopper" in stdout and str(out / "grace_hopper.npy") in stdout and str(out / "grace_hopper.png") in stdout
    with Image.open(sample_image()) as photo:
        check_outputs(out, "grace_hopper", (photo.height, photo.width))


@pytest.mark.skipif(not (ASSETS / "deepgaze1.safetensors").is_file(), reason="trained deepgaze1 heads not shipped yet")
def test_predict_with_the_shipped_model(tmp_path):
    assert main(["predict", "--out", str(tmp_path)]) == 0
    density = check_outputs(tmp_path, "grace_hopper", (600, 512))
    entropy_bits = -float((np.exp(density) * density).sum()) / np.log(2)
    assert entropy_bits < np.log2(density.size) - 0.1  # it prefers some places to others


def test_a_model_without_shipped_heads_says_how_to_give_some(tmp_path, capsys, monkeypatch):
    from deepgaze_jax import predict

    assets = tmp_path / "assets"  # an installation that ships only deepgaze1's heads
    assets.mkdir()
    (assets / "deepgaze1.safetensors").symlink_to(ASSETS / "deepgaze1.safetensors")
    monkeypatch.setattr(predict, "ASSETS", assets)
    assert main(["predict", "--model", "deepgaze2_vgg16", "--out", str(tmp_path / "out")]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "deepgaze2_vgg16" in line and "--heads" in line and "shipped: ['deepgaze1']" in line


def test_predict_a_folder_of_photographs_with_bad_files_among_them(tmp_path, mit1003_dir, predictor_file, capsys):
    stimuli = sorted((mit1003_dir / "STIMULI").glob("*.jpeg"))[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    for path in stimuli:
        shutil.copy(path, folder)
    for name, (data, _) in image_cases.bad().items():
        if name != "bomb.png":  # the bomb has its own test
            (folder / name).write_bytes(data)
    (folder / "README.txt").write_text("not picked up: not an image suffix")
    out = tmp_path / "out"
    code = main(["predict", str(folder), "--heads", str(predictor_file), "--out", str(out), "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 1  # some failed; the others were still processed
    for path in stimuli:
        with Image.open(path) as photo:
            check_outputs(out, path.stem, (photo.height, photo.width))
    errors = error_lines(captured.err)
    bad = {name: reason for name, (_, reason) in image_cases.bad().items() if name != "bomb.png"}
    assert len(errors) == len(bad) and "Traceback" not in captured.err
    for name, reason in bad.items():
        assert any(name in e and reason in e for e in errors), (name, errors)
    assert "wrote 3 prediction(s)" in captured.out and f"{len(bad)} failed" in captured.out


def test_odd_images_are_converted_and_bad_ones_named(tmp_path, predictor_file, capsys):
    for name, data in image_cases.odd_but_valid().items():
        (tmp_path / name).write_bytes(data)
    bad = image_cases.bad()
    for name, (data, _) in bad.items():
        (tmp_path / name).write_bytes(data)
    out = tmp_path / "out"
    args = [str(tmp_path / "*.png"), str(tmp_path / "*.jpg"), str(tmp_path / "missing.jpg")]
    code = main(["predict", *args, "--heads", str(predictor_file), "--out", str(out), "--no-png"])
    captured = capsys.readouterr()
    assert code == 1
    for name in image_cases.odd_but_valid():
        check_outputs(out, pathlib.Path(name).stem, image_cases.SIZE, png=False)
    errors = error_lines(captured.err)
    assert len(errors) == len(bad) + 1, captured.err
    for name, (_, reason) in bad.items():
        assert any(name in e and reason in e for e in errors), (name, errors)
    assert any("missing.jpg" in e and "no such file" in e for e in errors)


def test_an_image_smaller_than_the_receptive_field_is_an_error_not_a_crash(tmp_path, predictor_file, capsys):
    Image.fromarray(image_cases.photo((20, 20))).save(tmp_path / "tiny.png")
    assert main(["predict", str(tmp_path / "tiny.png"), "--heads", str(predictor_file), "--out", str(tmp_path)]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "tiny.png" in line and "receptive field" in line


def test_inputs_expand_folders_and_globs(tmp_path):
    for name in ("b.jpg", "a.PNG", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    paths, problems = expand_inputs([str(tmp_path), str(tmp_path / "*.jpg"), str(tmp_path / "*.gif"), str(tmp_path / "x")])
    assert [p.name for p in paths] == ["a.PNG", "b.jpg", "b.jpg", "x"]
    assert len(problems) == 1 and "*.gif: no files match" in problems[0]


def test_missing_weights_and_convert_failures_exit_1_with_one_line(tmp_path, capsys):
    assert main(["predict", "--heads", str(tmp_path / "none.safetensors"), "--out", str(tmp_path)]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "none.safetensors" in line
    assert main(["convert", "torchvision", "vgg16", str(tmp_path / "no.pth"), "--out", str(tmp_path / "o.safetensors")]) == 1
    assert "no.pth" in capsys.readouterr().err


def test_the_command_as_a_process_exits_1_without_a_traceback(tmp_path, predictor_file):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "deepgaze_jax.cli", "predict", str(tmp_path / "broken.jpg"),
                           "--heads", str(predictor_file), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = error_lines(done.stderr)
    assert "broken.jpg" in line


def test_output_names_stay_unique():
    from deepgaze_jax.cli import _output_stems

    paths = [pathlib.Path(p) for p in ("x/a.jpg", "y/a.png", "a-2.jpg", "z/a.jpeg")]
    assert _output_stems(paths) == ["a", "a-2", "a-2-2", "a-3"]


def test_out_holding_the_inputs_never_overwrites_them(tmp_path, predictor_file, capsys, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(image_cases.photo()).save(folder / "photo.png")
    Image.fromarray(image_cases.photo(seed=1)).save(folder / "other.jpg")
    (folder / "link.png").symlink_to(folder / "photo.png")  # an output named like a link to an input
    originals = {p.name: p.read_bytes() for p in folder.iterdir() if not p.is_symlink()}
    monkeypatch.chdir(folder)
    code = main(["predict", "photo.png", str(folder / "other.jpg"), str(folder / "link.png"),
                 "--heads", str(predictor_file), "--out", "."])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert {p.name: p.read_bytes() for p in folder.iterdir() if not p.is_symlink()} == {
        **originals, "other.npy": (folder / "other.npy").read_bytes(), "other.png": (folder / "other.png").read_bytes()}
    errors = error_lines(captured.err)
    assert len(errors) == 2, errors
    assert all("would replace an input image" in e for e in errors)
    assert any("photo.png" in e for e in errors) and any("link.png" in e for e in errors)
    assert not (folder / "photo.npy").exists()  # refused as a whole, no half result
    check_outputs(folder, "other", image_cases.SIZE)
    # An earlier run's outputs are replaced, as --help says.
    before = (folder / "other.npy").stat().st_mtime_ns
    assert main(["predict", "other.jpg", "--heads", str(predictor_file), "--out", "."]) == 0
    assert (folder / "other.npy").stat().st_mtime_ns > before
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "an input file never is" in " ".join(capsys.readouterr().out.split())


def test_output_names_that_differ_only_in_case_stay_apart():
    from deepgaze_jax.cli import _output_stems

    assert _output_stems([pathlib.Path("x/Photo.jpg"), pathlib.Path("y/photo.png")]) == ["Photo", "photo-2"]


def test_out_that_is_a_file_is_named_in_one_line(tmp_path, predictor_file, capsys):
    Image.fromarray(image_cases.photo()).save(tmp_path / "photo.png")
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    assert main(["predict", str(tmp_path / "photo.png"), "--heads", str(predictor_file),
                 "--out", str(tmp_path / "notes.txt")]) == 1
    captured = capsys.readouterr()
    (line,) = error_lines(captured.err)
    assert "notes.txt" in line and "is a file, not a folder" in line and "File exists" not in line
    assert (tmp_path / "notes.txt").read_text() == "a file, not a folder"


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that stores any bytes in names")
def test_a_file_name_that_is_not_utf8_is_drawn_and_the_batch_goes_on(tmp_path, predictor_file, capsys):
    folder = os.fsencode(tmp_path / "in")
    os.mkdir(folder)
    names = [b"a.png", b"bad\xffname.png", b"c.png"]
    for seed, name in enumerate(names):
        Image.fromarray(image_cases.photo(seed=seed)).save(os.path.join(folder, name))
    out = tmp_path / "out"
    code = main(["predict", os.fsdecode(folder), "--heads", str(predictor_file), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for name in names:
        check_outputs(out, os.fsdecode(name)[:-4], image_cases.SIZE)
    assert "bad\\xffname.png" in captured.out and "wrote 3 prediction(s)" in captured.out


def test_a_failure_while_drawing_or_writing_names_the_image_and_the_run_goes_on(tmp_path, predictor_file,
                                                                               capsys, monkeypatch):
    from deepgaze_jax import plotting

    for seed, name in enumerate(["a.png", "b.png", "c.png"]):
        Image.fromarray(image_cases.photo(seed=seed)).save(tmp_path / name)
    real = plotting.prediction_png

    def flaky(image, density, *args, title=None, **kwargs):
        if title == "b.png":
            raise TypeError("a drawing bug")
        return real(image, density, *args, title=title, **kwargs)

    monkeypatch.setattr(plotting, "prediction_png", flaky)
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "*.png"), "--heads", str(predictor_file), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    (line,) = error_lines(captured.err)
    assert "b.png" in line and "TypeError: a drawing bug" in line
    check_outputs(out, "a", image_cases.SIZE)
    check_outputs(out, "c", image_cases.SIZE)
    assert not (out / "b.npy").exists() and not (out / "b.png").exists()
    assert "wrote 2 prediction(s)" in captured.out and "1 failed" in captured.out


def test_a_phone_photo_is_predicted_upright_as_its_exif_orientation_says(tmp_path, predictor_file):
    from deepgaze_jax.images import load_image

    tagged, plain = image_cases.exif_oriented_jpeg(6)
    (tmp_path / "phone.jpg").write_bytes(tagged)
    Image.fromarray(np.rot90(load_image(plain), -1)).save(tmp_path / "turned.png")  # turned by hand, lossless
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "phone.jpg"), str(tmp_path / "turned.png"), "--heads", str(predictor_file),
                 "--out", str(out), "--no-png"]) == 0
    upright = image_cases.SIZE[::-1]
    np.testing.assert_array_equal(check_outputs(out, "phone", upright, png=False),
                                  check_outputs(out, "turned", upright, png=False))


def test_the_pixel_limit_and_the_read_ahead_are_bounded(tmp_path, predictor_file, capsys, monkeypatch):
    from deepgaze_jax import cli

    for seed, name in enumerate(["a.png", "c.png", "d.png"]):
        Image.fromarray(image_cases.photo(seed=seed)).save(tmp_path / name)
    Image.fromarray(image_cases.photo((100, 120))).save(tmp_path / "b.png")  # 12000 pixels
    chunks = []
    real = cli._batches
    monkeypatch.setattr(cli, "_batches", lambda images, size: chunks.append(sorted(images)) or real(images, size))
    monkeypatch.setattr(cli, "CHUNK_PIXELS", image_cases.SIZE[0] * image_cases.SIZE[1])  # one image a chunk
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "*.png"), "--heads", str(predictor_file), "--out", str(out),
                 "--max-pixels", "10000", "--no-png"])
    captured = capsys.readouterr()
    assert code == 1
    (line,) = error_lines(captured.err)
    assert "b.png" in line and "120x100 = 12000 pixels exceeds the limit of 10000" in line
    assert chunks == [[0], [2], [3]]
    for name in ("a", "c", "d"):
        check_outputs(out, name, image_cases.SIZE, png=False)
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--max-pixels" in help_text and "64,000,000" in help_text and "GiB" in help_text


def test_a_folder_that_cannot_be_listed_is_named_and_the_others_go_on(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "a.jpg").write_bytes(b"")
    real = pathlib.Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "iterdir", iterdir)  # root may list any folder, so simulate it
    paths, problems = expand_inputs([str(locked), str(tmp_path / "a.jpg")])
    assert [p.name for p in paths] == ["a.jpg"]
    assert problems == [f"{locked}: cannot list the folder (Permission denied)"]


def test_data_loading_is_quiet_about_what_means_nothing_to_the_user(tmp_path, predictor_file):
    root = tmp_path / "tiny"
    (root / "STIMULI").mkdir(parents=True)
    for seed, name in enumerate(("a.png", "b.png")):
        Image.fromarray(image_cases.photo((96, 128), seed=seed)).save(root / "STIMULI" / name)
    (root / "fixations.csv").write_text("image,subject,x,y,t\na.png,s1,10,20,0\nb.png,s2,100,70,0\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "deepgaze_jax.cli", "evaluate", "--csv-dataset", str(root),
                           "--heads", str(predictor_file), "--out", str(tmp_path / "eval"),
                           "--cache", str(tmp_path / "cache")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "eval" / "metrics.json").is_file()
    for noise in ("OpenCV is not installed", "Using custom data configuration", "\x1b["):
        assert noise not in done.stderr


def test_the_quiet_filter_lets_other_warnings_and_errors_through():
    import logging

    from absl import logging as absl_logging

    from deepgaze_jax import cli

    cli.quiet_data_loading()
    cli.quiet_data_loading()  # idempotent: one filter
    absl = absl_logging.get_absl_logger()
    assert absl.filters.count(cli._QUIET) == 1

    def passes(level, msg):
        return all(f.filter(logging.LogRecord("absl", level, __file__, 1, msg, (), None)) for f in absl.filters)

    assert not passes(logging.WARNING, "OpenCV is not installed. We recommend using OpenCV because ...")
    assert not passes(logging.WARNING, "Using custom data configuration: %s")
    assert passes(logging.WARNING, "Some other warning")
    assert passes(logging.ERROR, "a real error")


@pytest.mark.parametrize("command", ["evaluate", "baselines", "train"])
def test_help_states_the_cache_default(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "(default ./.cache" in " ".join(capsys.readouterr().out.split())
