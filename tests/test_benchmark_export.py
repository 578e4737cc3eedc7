"""``deepgaze export-benchmark``: the MIT/Tübingen Saliency Benchmark layout, checked file by file
against the predictor, :mod:`deepgaze_jax.metric_maps` and pysaliency's own readers and map models;
resuming, damaged files and bad input."""

import hashlib
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy.special import logsumexp

from deepgaze_jax import metric_maps
from deepgaze_jax.benchmark_export import ExportError, ExportSettings, export_benchmark
from deepgaze_jax.cli import main
from deepgaze_jax.images import load_image
from deepgaze_jax.predict import ASSETS, load_predictor

MAP_FOLDERS = ("AUC", "NSS", "sAUC", "CC", "KLDiv", "SIM")
FOLDERS = ("log_density",) + MAP_FOLDERS


class CountingPredictor:
    """A predictor that counts the images its backbone sees (the export must run it once per image)."""

    def __init__(self, inner):
        self.inner = inner
        self.images = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def log_density(self, images):
        self.images += len(images)
        return self.inner.log_density(images)


@pytest.fixture(scope="module")
def deepgaze1():
    return load_predictor("deepgaze1", kind="static")


@pytest.fixture(scope="module")
def mit10(mit1003_dir, tmp_path_factory) -> pathlib.Path:
    """10 MIT1003 stimuli of one stored size, 1024 wide and 768 high (one compilation), and a text file."""
    folder = tmp_path_factory.mktemp("mit10")
    chosen = []
    for path in sorted((mit1003_dir / "STIMULI").iterdir()):
        with Image.open(path) as image:
            if image.size == (1024, 768):
                chosen.append(path)
        if len(chosen) == 10:
            break
    for path in chosen:
        shutil.copy(path, folder / path.name)
    (folder / "README.txt").write_text("not a stimulus\n")
    return folder


@pytest.fixture(scope="module")
def export10(mit10, deepgaze1, tmp_path_factory):
    out = tmp_path_factory.mktemp("export10") / "submission"
    counting = CountingPredictor(deepgaze1)
    summary = export_benchmark(mit10, out, predictor=counting)
    return out, summary, counting.images


@pytest.fixture
def small(mit1003_dir, tmp_path) -> pathlib.Path:
    """Three small stimuli (two sizes) made from MIT1003 photographs, for the fast tests."""
    folder = tmp_path / "stimuli"
    folder.mkdir()
    sources = sorted((mit1003_dir / "STIMULI").iterdir())[:3]
    for k, (path, size) in enumerate(zip(sources, [(160, 120), (160, 120), (120, 160)])):
        with Image.open(path) as image:
            image.convert("RGB").resize(size).save(folder / f"s{k}.png")
    return folder


def mtimes(out: pathlib.Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("*")) if p.is_file()}


def test_the_export_of_ten_mit1003_stimuli_holds_the_predictor_s_densities_and_maps(mit10, export10, deepgaze1):
    out, summary, backbone_images = export10
    names = sorted(p.name for p in mit10.iterdir() if p.suffix == ".jpeg")
    stems = [pathlib.Path(n).stem for n in names]
    assert summary.complete and not summary.kept and not summary.replaced
    assert len(summary.written) == 10 * len(FOLDERS) and summary.skipped == ["README.txt"]
    assert backbone_images == 10  # the backbone ran once per stimulus, the second pass read the files
    for folder in FOLDERS:
        assert sorted(p.name for p in (out / folder).iterdir()) == [f"{s}.npy" for s in stems], folder

    lds = {}
    for name, stem in zip(names, stems):
        image = load_image(mit10 / name, as_stored=True)
        ld = np.load(out / "log_density" / f"{stem}.npy")
        assert ld.shape == image.shape[:2] == (768, 1024) and ld.dtype == np.float32
        assert np.all(np.isfinite(ld)) and abs(float(logsumexp(ld.astype(np.float64)))) < 1e-4
        # The export predicts in batches of 4, this one image alone: XLA's float32 convolutions round
        # differently for another batch size (1.9e-6 nats measured); another image or model differs by ~1.
        np.testing.assert_allclose(ld, deepgaze1.predict(image), atol=2e-5, rtol=0)
        lds[stem] = ld
    shuffled = metric_maps.ShuffledBaseline.from_log_densities([lds[s].astype(np.float64) for s in stems])
    for stem, ld in lds.items():
        ld64 = ld.astype(np.float64)
        blurred = metric_maps.blurred_density_map(ld64, 24.0, mode="constant")
        expected = {"AUC": metric_maps.density_map(ld64), "NSS": metric_maps.density_map(ld64),
                    "CC": blurred, "KLDiv": blurred, "SIM": blurred,
                    "sAUC": metric_maps.sauc_map(ld64, shuffled.log_density(ld64))}
        for folder, want in expected.items():
            got = np.load(out / folder / f"{stem}.npy")
            assert got.dtype == np.float32 and got.shape == ld.shape
            # Stored as float32: the same computation, rounded once (relative 6e-8).
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * float(np.abs(want).max()), err_msg=folder)

    manifest = json.loads((out / "manifest.json").read_text())
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == files  # no temporary or stray files, every file listed
    for rel, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((out / rel).read_bytes()).hexdigest(), rel
        assert entry["shape"] == [768, 1024] and entry["dtype"] == "float32"
    assert [s["file"] for s in manifest["stimuli"]] == names
    assert all(s["shape"] == [768, 1024] and s["sha256"] == hashlib.sha256((mit10 / s["file"]).read_bytes()).hexdigest()
               for s in manifest["stimuli"])
    assert manifest["complete"] and manifest["skipped"] == ["README.txt"]
    assert manifest["model"]["name"] == "deepgaze1"
    assert manifest["model"]["heads_sha256"] == hashlib.sha256((ASSETS / "deepgaze1.safetensors").read_bytes()).hexdigest()
    assert manifest["settings"] == {"sigma": 24.0, "blur_mode": "constant", "sim_map": "blurred",
                                    "shuffled_compute_size": [500, 500], "maps": list(MAP_FOLDERS)}
    assert set(manifest["folders"]) == set(FOLDERS) and manifest["folders"]["sAUC"]["metrics"] == ["sAUC"]


def test_pysaliency_reads_the_export_and_its_map_models_agree(mit10, export10):
    """The benchmark loads a probabilistic submission with ModelFromDirectory and derives the maps with
    pysaliency's map models (scipy blur, scipy zoom for the shuffled baseline): an independent check."""
    from tests import pysaliency_reference as ref

    ps = ref.pysaliency
    out, _, _ = export10
    stimuli = ps.FileStimuli(sorted(str(p) for p in mit10.iterdir() if p.suffix == ".jpeg"))
    model = ps.ModelFromDirectory(stimuli, str(out / "log_density"), caching=False)  # checks logsumexp too
    density = ps.saliency_map_models.DensitySaliencyMapModel(model)
    blurred = ps.saliency_map_models.BluringSaliencyMapModel(density, 24.0, mode="constant", caching=False)
    sauc = ps.models.ShuffledAUCSaliencyMapModel(model, ps.models.ShuffledBaselineModel(model, stimuli, library="numpy"))
    for folder, reference, tolerance in [("AUC", density, 1e-6), ("NSS", density, 1e-6), ("CC", blurred, 1e-6),
                                         ("KLDiv", blurred, 1e-6), ("sAUC", sauc, 1e-5)]:
        ours = ps.SaliencyMapModelFromDirectory(stimuli, str(out / folder), caching=False)
        for n in [0, 7]:
            want = reference.saliency_map(stimuli[n])
            # float32 files against pysaliency's float64 maps: relative 1e-6 of the map's largest value
            # (sAUC: 1e-5 of the log ratio, whose float32 rounding is ~1e-6 at values ~10).
            np.testing.assert_allclose(ours.saliency_map(stimuli[n]), want, rtol=0,
                                       atol=tolerance * float(np.abs(want).max()), err_msg=folder)


def test_a_second_run_writes_nothing_and_a_deleted_or_damaged_file_is_rewritten_alone(small, tmp_path, deepgaze1):
    out = tmp_path / "out"
    counting = CountingPredictor(deepgaze1)
    first = export_benchmark(small, out, predictor=counting)
    assert first.complete and len(first.written) == 3 * len(FOLDERS) and counting.images == 3
    before = mtimes(out)
    snapshot = {rel: (out / rel).read_bytes() for rel in before}

    again = export_benchmark(small, out, predictor=counting)
    assert again.written == [] and again.replaced == [] and len(again.kept) == 3 * len(FOLDERS)
    assert mtimes(out) == before and counting.images == 3  # not even the manifest was touched

    (out / "CC" / "s1.npy").unlink()
    (out / "log_density" / "s2.npy").unlink()
    resumed = export_benchmark(small, out, predictor=counting)
    assert sorted(resumed.written) == ["CC/s1.npy", "log_density/s2.npy"] and resumed.replaced == []
    assert counting.images == 4  # the backbone ran for s2 only
    after = mtimes(out)
    assert {k for k in after if after[k] != before[k]} == {"CC/s1.npy", "log_density/s2.npy"}
    assert (out / "CC" / "s1.npy").read_bytes() == snapshot["CC/s1.npy"]

    # Truncated, of another shape, or one byte changed: each found, rewritten, the same bytes again.
    with open(out / "sAUC" / "s0.npy", "r+b") as f:
        f.truncate(500)
    np.save(out / "AUC" / "s1.npy", np.zeros((5, 5), np.float32))
    data = bytearray((out / "NSS" / "s2.npy").read_bytes())
    data[-1] ^= 0xFF
    (out / "NSS" / "s2.npy").write_bytes(bytes(data))
    repaired = export_benchmark(small, out, predictor=counting)
    why = dict(repaired.replaced)
    assert sorted(why) == ["AUC/s1.npy", "NSS/s2.npy", "sAUC/s0.npy"] and sorted(repaired.written) == sorted(why)
    assert "truncated" in why["sAUC/s0.npy"] and "(5, 5)" in why["AUC/s1.npy"] and "sha256" in why["NSS/s2.npy"]
    assert counting.images == 4
    for rel in why:
        assert (out / rel).read_bytes() == snapshot[rel], rel
    assert "rewrote sAUC/s0.npy: truncated" in repaired.report()


def test_a_changed_set_of_stimuli_redoes_the_sauc_maps_and_drops_removed_ones(small, tmp_path, deepgaze1):
    out = tmp_path / "out"
    export_benchmark(small, out, predictor=deepgaze1)
    before = {rel: (out / rel).read_bytes() for rel in mtimes(out)}
    (small / "s2.png").unlink()
    summary = export_benchmark(small, out, predictor=deepgaze1)
    assert sorted(summary.written) == ["sAUC/s0.npy", "sAUC/s1.npy"]  # their shuffled baseline changed
    assert sorted(summary.removed) == sorted(f"{folder}/s2.npy" for folder in FOLDERS)
    assert (out / "AUC" / "s0.npy").read_bytes() == before["AUC/s0.npy"]
    assert (out / "sAUC" / "s0.npy").read_bytes() != before["sAUC/s0.npy"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["file"] for s in manifest["stimuli"]] == ["s0.png", "s1.png"] and len(manifest["files"]) == 14


def test_maps_none_writes_the_probabilistic_submission_alone(small, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export-benchmark", str(small), "--out", str(out), "--maps", "none"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["log_density", "manifest.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["folders"]) == ["log_density"] and manifest["settings"]["maps"] == []
    assert "wrote 3 file(s)" in capsys.readouterr().out
    assert main(["export-benchmark", str(small), "--out", str(out), "--maps", "sAUC,AUC"]) == 2
    assert "maps [] there, ['AUC', 'sAUC'] now" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export-benchmark", str(small), "--out", str(out), "--maps", "AUC,IG"])
    assert "expected all, none or a comma-separated list" in capsys.readouterr().err


def test_the_optimal_sim_map_is_metric_maps(small, tmp_path, deepgaze1):
    settings = ExportSettings(sim_map="optimal", sim_epochs=1, sim_fixations=50)
    out = tmp_path / "out"
    export_benchmark(small, out, predictor=deepgaze1, settings=settings)
    ld = np.load(out / "log_density" / "s2.npy").astype(np.float64)
    want = metric_maps.sim_saliency_map(ld, 24.0, seed=0, fixation_count=50, epochs=1)
    np.testing.assert_allclose(np.load(out / "SIM" / "s2.npy"), want, rtol=1e-6, atol=1e-6 * want.max())
    assert not np.allclose(want, metric_maps.blurred_density_map(ld, 24.0, mode="constant"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["sim_map"] == "optimal" and manifest["settings"]["sim_epochs"] == 1


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("deepgaze: error:")]


def test_an_export_of_another_model_or_other_settings_is_refused_unless_overwritten(small, tmp_path, predictor_file,
                                                                                   deepgaze1, capsys):
    out = tmp_path / "out"
    export_benchmark(small, out, predictor=deepgaze1)
    before = mtimes(out)
    assert main(["export-benchmark", str(small), "--out", str(out), "--heads", str(predictor_file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and error_lines(err) == [err.strip()]
    assert str(out) in err and "deepgaze1" in err and str(predictor_file) in err and "--overwrite" in err
    assert main(["export-benchmark", str(small), "--out", str(out), "--sigma", "30"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sigma 24.0 there, 30.0 now" in err
    assert mtimes(out) == before

    (out / "keep.txt").write_text("a file of the user's")
    assert main(["export-benchmark", str(small), "--out", str(out), "--heads", str(predictor_file), "--overwrite"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["name"] == str(predictor_file) and (out / "keep.txt").is_file()
    assert "3 stimuli; wrote 21 file(s)" in capsys.readouterr().out


def test_bad_stimuli_folders_and_out_paths_are_one_line_errors(small, tmp_path, capsys):
    def run(*argv) -> tuple[int, str]:
        code = main(["export-benchmark", *map(str, argv)])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and error_lines(err) == [err.strip()], err
        return code, err

    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run(empty, "--out", tmp_path / "o1")
    assert code == 2 and f"{empty}: holds no image files" in err
    (empty / "notes.txt").write_text("x")
    code, err = run(empty, "--out", tmp_path / "o1")
    assert code == 2 and "1 other file(s)" in err
    code, err = run(tmp_path / "missing", "--out", tmp_path / "o1")
    assert code == 2 and "not a folder of stimuli" in err
    (tmp_path / "file").write_text("x")
    code, err = run(small, "--out", tmp_path / "file")
    assert code == 2 and f"{tmp_path / 'file'}: is a file, not a folder" in err
    shutil.copy(small / "s0.png", small / "s0.jpg")
    code, err = run(small, "--out", tmp_path / "o1")
    assert code == 2 and "s0.jpg and s0.png: two stimuli of one stem" in err
    (small / "s0.jpg").unlink()
    (tmp_path / "o2" / "log_density").mkdir(parents=True)
    (tmp_path / "o2" / "log_density" / "s0.npy").write_bytes(b"x")
    code, err = run(small, "--out", tmp_path / "o2")
    assert code == 2 and "no manifest.json" in err
    (tmp_path / "o3").mkdir()
    (tmp_path / "o3" / "manifest.json").write_text("{not json")
    code, err = run(small, "--out", tmp_path / "o3")
    assert code == 2 and "manifest.json: not a readable manifest" in err
    code, err = run(small, "--out", tmp_path / "o4", "--heads", ASSETS / "deepgaze3_vgg16.safetensors")
    assert code == 2 and "not a static saliency model" in err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o4").exists()


def test_non_images_are_skipped_and_an_unreadable_image_fails_alone(small, tmp_path, capsys):
    (small / "notes.txt").write_text("not a stimulus")
    (small / "broken.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "out"
    assert main(["export-benchmark", str(small), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert error_lines(captured.err) == [line for line in captured.err.splitlines() if line.startswith("deepgaze")]
    assert len(error_lines(captured.err)) == 1 and str(small / "broken.jpg") in captured.err
    assert "skipped 1 file(s) that are not images: notes.txt" in captured.out
    assert "sAUC maps not written" in captured.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and manifest["skipped"] == ["notes.txt"]
    assert sorted(p.name for p in (out / "log_density").iterdir()) == ["s0.npy", "s1.npy", "s2.npy"]
    assert not (out / "sAUC").exists()

    (small / "broken.jpg").unlink()
    assert main(["export-benchmark", str(small), "--out", str(out)]) == 0
    assert "wrote 3 file(s), kept 18" in capsys.readouterr().out  # only the sAUC maps were missing
    assert json.loads((out / "manifest.json").read_text())["complete"]


def test_the_command_is_listed_with_its_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export-benchmark", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert all(option in text for option in ("--out", "--overwrite", "--sim-map", "--heads", "--centerbias"))
    assert os.fspath("STIMULI_DIR") in text
    with pytest.raises(ExportError, match="sigma"):
        ExportSettings(sigma=0)
