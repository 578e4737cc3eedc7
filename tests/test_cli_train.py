"""`deepgaze train` end to end on a few real MIT1003 images, and its errors."""

import json

import numpy as np
import pytest

from deepgaze_jax import cli
from deepgaze_jax.params_io import load_params


def test_train_then_predict_with_the_result(mit1003_dir, tmp_path, capsys):
    out = tmp_path / "trial.safetensors"
    status = cli.main(["train", "--data", str(mit1003_dir), "--max-images", "20", "--folds", "0,1",
                       "--set", "max_epochs=2", "--set", "batch_size=2", "--cache", str(tmp_path / "cache"),
                       "--results", str(tmp_path / "results"), "--out", str(out), "--seeds", "2"])
    assert status == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "results" / "deepgaze1_2seeds_crossval.json").read_text())
    assert [f["fold"] for f in results["folds"]] == [0, 1]
    assert results["seeds_per_fold"] == 2
    assert [[m["seed"] for m in f["members"]] for f in results["folds"]] == [[0, 1], [0, 1]]
    assert load_params(out)[1]["members"] == "4"  # two seeds for each of two folds
    assert results["total"]["images"] == 4  # two test chunks of ceil(20 / 10) images
    assert results["config"]["max_epochs"] == 2
    assert np.isfinite(results["total"]["information_gain"])
    [runs] = (tmp_path / "cache" / "runs").glob("deepgaze1_2seeds_first20_*")  # keyed on config and datasets
    assert (runs / "fold0" / "config.json").exists()
    [features] = (tmp_path / "cache").glob("features_*.npz")  # computed by the config's conv_impl
    assert json.loads(str(np.load(features)["key"]))["model"]["conv_impl"]["impl"] == "auto"
    assert json.loads((runs / "fold1_seed1" / "config.json").read_text())["seed"] == 1

    image = sorted((mit1003_dir / "STIMULI").iterdir())[0]
    status = cli.main(["predict", str(image), "--heads", str(out), "--out", str(tmp_path / "pred"), "--no-png"])
    assert status == 0, capsys.readouterr().err
    density = np.load(tmp_path / "pred" / f"{image.stem}.npy")
    assert abs(np.logaddexp.reduce(density.astype(np.float64).ravel())) < 1e-4


@pytest.mark.parametrize("args,message", [
    (["--set", "learnig_rate=0.1"], "unknown key(s) ['learnig_rate']"),
    (["--set", "batch_size=four"], "batch_size must be of type int"),
    (["--set", "nonsense"], "expected KEY=VALUE"),
    (["--folds", "3-12"], "not in 0..9"),
    (["--set", "dropout=1.0"], "dropout must be in [0, 1)"),
    (["--num-processes", "2", "--process-id", "0"], "need --coordinator HOST:PORT or --distributed"),
    (["--coordinator", "localhost:1234"], "needs the number of processes and this process's id"),
    (["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "2"], "process id 2 is not in 0..1"),
])
def test_bad_train_arguments_fail_in_one_line_before_any_compute(tmp_path, capsys, args, message):
    status = cli.main(["train", "--data", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert status == 1 and message in err and len(err.strip().splitlines()) == 1


def test_train_without_data_folder_is_named(tmp_path, capsys):
    assert cli.main(["train", "--data", str(tmp_path / "nowhere")]) == 1
    assert "no STIMULI/ folder" in capsys.readouterr().err


def test_evaluate_writes_every_metric(mit1003_dir, predictor_file, tmp_path, capsys):
    status = cli.main(["evaluate", "--mit1003", str(mit1003_dir), "--heads", str(predictor_file),
                       "--max-images", "3", "--out", str(tmp_path / "eval"), "--cache", str(tmp_path / "cache")])
    assert status == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for name in ("LL", "IG", "AUC", "sAUC", "NSS", "AUC_Judd", "CC", "KLDiv", "SIM"):
        assert np.isfinite(result["summary"][name]), name
    assert "sAUC" in (tmp_path / "eval" / "metrics.md").read_text()


def test_evaluate_needs_a_dataset(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate"])
    assert exit_info.value.code == 2


def test_evaluate_sim_map_option_is_checked_and_its_help_warns_about_cost(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", "--csv-dataset", str(tmp_path), "--sim-map", "best"])
    assert exit_info.value.code == 2 and "invalid choice: 'best'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--sim-map {blurred,optimal}" in help_text and "slow" in help_text and "768x1024" in help_text


@pytest.mark.parametrize("sim_map", ["blurred", "optimal"])
def test_evaluate_on_a_users_csv_dataset(predictor_file, tmp_path, capsys, sim_map):
    from PIL import Image

    root = tmp_path / "my-experiment"
    (root / "STIMULI").mkdir(parents=True)
    rng = np.random.RandomState(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.randint(0, 255, (96, 128, 3)).astype(np.uint8)).save(root / "STIMULI" / name)
    (root / "fixations.csv").write_text("image,subject,x,y,t\na.png,s1,10,20,0\na.png,s1,50.5,60,1\n"
                                        "b.png,s2,100,70,0\nb.png,s1,30,30,0\n")
    status = cli.main(["evaluate", "--csv-dataset", str(root), "--heads", str(predictor_file),
                       "--out", str(tmp_path / "eval"), "--cache", str(tmp_path / "cache"), "--sim-map", sim_map])
    assert status == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert [(row["image"], row["n_fixations"]) for row in result["per_image"]] == [("a.png", 2), ("b.png", 2)]
    assert all(np.isfinite(v) for v in result["summary"].values())
    assert result["config"]["sim_map"] == {"blurred": "blurred density", "optimal": "SIM-optimal map"}[sim_map]


def test_every_trainable_model_is_offered_and_has_a_paper_figure():
    from deepgaze_jax import registry
    from deepgaze_jax.config import TrainConfig
    from deepgaze_jax.predict import ASSETS

    static = sorted(n for n, e in registry.MODELS.items() if e.kind == "static")
    assert sorted(cli.TRAINABLE) == static == sorted(registry.TRAINABLE)
    assert sorted(registry.SCANPATH) == sorted(set(registry.MODELS) - set(static)) == ["deepgaze3_vgg16"]
    for name in registry.TRAINABLE:
        assert cli.build_parser().parse_args(["train", "--data", ".", "--model", name]).model == name
    with pytest.raises(SystemExit):  # scanpath models are not trained by `deepgaze train`
        cli.build_parser().parse_args(["train", "--data", ".", "--model", "deepgaze3_vgg16"])
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--data", ".", "--model", "deepgaze9"])
    for name, entry in registry.MODELS.items():
        assert entry.paper and ("%" in entry.paper or entry.kind == "scanpath"), name
        assert TrainConfig(model=name).build_model() == registry.build(name, dtype="float32"), name
    with pytest.raises(ValueError, match="model must be one of"):
        TrainConfig(model="deepgaze9")
    assert cli.MODELS == registry.SHIPPED == ("deepgaze1", "deepgaze2_vgg16")
    for name, entry in registry.MODELS.items():
        if entry.asset is not None:
            assert (ASSETS / entry.asset).is_file(), name


def test_the_registry_is_a_cheap_import():
    import pathlib
    import subprocess
    import sys

    heavy = "{m.split('.')[0] for m in sys.modules} & {'jax', 'flax', 'optax', 'tensorflow'}"
    code = f"import sys, deepgaze_jax.registry, deepgaze_jax.config; print(sorted({heavy}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "[]"


def test_fold_heads_reads_members_fold_after_fold():
    from deepgaze_jax import crossval
    stacked = {"readout": {"conv0": {"kernel": np.arange(4.0)}}}
    index = lambda by_fold: {f: [float(h["readout"]["conv0"]["kernel"]) for h in hs] for f, hs in by_fold.items()}  # noqa: E731
    meta = {"folds": "3,5", "seeds_per_fold": "2"}
    assert index(crossval.fold_heads(stacked, meta)) == {3: [0.0, 1.0], 5: [2.0, 3.0]}
    assert index(crossval.fold_heads(stacked, meta, take=1)) == {3: [0.0], 5: [2.0]}
    with pytest.raises(ValueError, match="take 3 seeds per fold, but there are 2"):
        crossval.fold_heads(stacked, meta, take=3)


def _csv_dataset(root, observers=2, images=6, seed=0):
    """A small fixation dataset as a user brings it: STIMULI/ and fixations.csv (160x128 images)."""
    from PIL import Image

    (root / "STIMULI").mkdir(parents=True)
    rng = np.random.RandomState(seed)
    rows = ["image,subject,x,y,t"]
    for i in range(images):
        Image.fromarray(rng.randint(0, 255, (128, 160, 3)).astype(np.uint8)).save(root / "STIMULI" / f"x{i}.png")
        for s in range(observers):
            rows += [f"x{i}.png,o{s},{rng.uniform(20, 140):.2f},{rng.uniform(20, 110):.2f},{t}" for t in range(5)]
    (root / "fixations.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("recipe", ["joint", "pretrain"])
def test_train_with_extra_data(mit1003_dir, tmp_path, capsys, recipe):
    extra = _csv_dataset(tmp_path / "Extra")
    status = cli.main(["train", "--data", str(mit1003_dir), "--max-images", "20", "--folds", "0",
                       "--extra-data", str(extra), "--recipe", recipe, "--set", "max_epochs=1",
                       "--set", "batch_size=2", "--cache", str(tmp_path / "cache"),
                       "--results", str(tmp_path / "results"), "--out", str(tmp_path / "x.safetensors")])
    assert status == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "results" / f"deepgaze1_{recipe}_extra_crossval.json").read_text())
    assert results["recipe"] == recipe and results["extra_data"][0]["name"] == "extra"
    assert "6 images, 60 fixations" in results["extra_data"][0]["dataset"]
    [runs] = (tmp_path / "cache" / "runs").glob(f"deepgaze1_{recipe}_extra_first20_*")
    split = json.loads((runs / "fold0" / "split.json").read_text())
    assert not set(split["test"]) & set(split["train"] + split["val"])
    assert split["extra_datasets"] == [str(extra)]
    assert (runs / "pretrain_seed0").is_dir() == (recipe == "pretrain")
    assert "extra (" + recipe + ")" in load_params(tmp_path / "x.safetensors")[1]["trained_on"]


def test_extra_data_with_one_observer_or_the_same_folder_is_refused_before_compute(mit1003_dir, tmp_path, capsys):
    one = _csv_dataset(tmp_path / "One", observers=1)
    args = ["train", "--data", str(mit1003_dir), "--max-images", "20", "--cache", str(tmp_path / "cache")]
    assert cli.main(args + ["--extra-data", str(one)]) == 1
    err = capsys.readouterr().err
    assert "1 observer; the gold standard (leave one observer out) needs at least 2" in err
    assert len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "cache").glob("features_*"))  # nothing computed
    assert cli.main(args + ["--extra-data", str(mit1003_dir)]) == 1
    assert "the datasets must differ" in capsys.readouterr().err


@pytest.mark.parametrize("data,message", [
    (b"[1, 2]", "expected a JSON object of TrainConfig fields, got list"),
    (b'"fast"', "expected a JSON object of TrainConfig fields, got str"),
    (b"3", "expected a JSON object of TrainConfig fields, got int"),
    (b"\xff\xfe{}", "not UTF-8 text, so not JSON (invalid start byte at byte 0)"),
])
def test_a_config_that_is_not_a_json_object_fails_in_one_line(tmp_path, capsys, data, message):
    config = tmp_path / "config.json"
    config.write_bytes(data)
    status = cli.main(["train", "--data", str(tmp_path), "--config", str(config)])
    err = capsys.readouterr().err
    assert status == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"config.json: {message}" in err, err
