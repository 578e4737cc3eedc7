"""DeepGaze III's cross-validation (`scanpath_crossval.run`) end to end on a tiny CSV dataset, and the
scanpath summaries it shares with `deepgaze evaluate`."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from deepgaze_jax import model_card, predict, scanpath_crossval
from deepgaze_jax.config import TrainConfig
from deepgaze_jax.scanpath_evaluation import summary

from . import fake_data


def _scanpath_csv(root, images=10, observers=3, length=4, size=(48, 64)):
    """``images`` random stimuli of ``size`` (H, W), each seen by every observer in a scanpath of ``length``."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(images):
        fake_data.write_image(root / "STIMULI" / f"im{k}.png", *size, seed=k)
        for s in range(observers):
            for t in range(length):
                x, y = rng.uniform(0, size[1]), rng.uniform(0, size[0])
                rows.append(f"im{k}.png,s{s},{x:.2f},{y:.2f},{t},200")
    (root / "fixations.csv").write_text("\n".join(["image,subject,x,y,t,duration_ms"] + rows) + "\n")
    return root


def test_summary_means_gains_and_missing_baselines():
    conditional = [np.array([1.0, 2.0]), np.array([0.5])]
    per_image = {"conditional": conditional, "spatial": [np.array([0.0, 1.0]), np.array([1.5])],
                 "static": [np.array([0.5, 0.5])], "auc": [np.array([0.8, 0.6]), np.array([0.7])]}
    out = summary(per_image, baselines=("spatial", "static", "center_bias"))
    assert out["conditional_log_likelihood"] == pytest.approx(3.5 / 3)
    assert out["conditional_auc"] == pytest.approx(0.7)
    assert (out["fixations"], out["images"]) == (3, 2)
    assert out["information_gain_over_spatial"] == pytest.approx((1 + 1 - 1) / 3)  # per fixation, not per image
    lo, hi = out["information_gain_over_spatial_ci95"]
    assert -1.0 <= lo <= hi <= 1.0
    assert "information_gain_over_static" not in out  # one image lacks it: no gain over a different set
    assert "information_gain_over_center_bias" not in out and "center_bias_log_likelihood" not in out
    assert out["static_log_likelihood"] == 0.5


def test_crossval_trains_scores_and_ships_two_folds(tmp_path, monkeypatch):
    data = _scanpath_csv(tmp_path / "scan")
    small = {"model": "deepgaze3_vgg16", "batch_size": 2, "max_epochs": 1, "patience": 1}
    recipe = scanpath_crossval.Recipe(
        spatial=TrainConfig.from_dict(small),
        scanpath=TrainConfig.from_dict({**small, "max_fixations": 4, "frozen": ["saliency/conv0", "saliency/conv1"]}))
    heads = tmp_path / "dg3.safetensors"
    store = tmp_path / "store"
    results = scanpath_crossval.run(recipe, data, [0, 1], tmp_path / "cache", tmp_path / "results", heads,
                                    command="test", fold_store=store)
    folds, total = results["folds"], results["total"]
    assert [r["fold"] for r in folds] == [0, 1]
    # one test image per fold, every fixation of its 3 scanpaths a target (no forced start in a CSV)
    assert [r["images"] for r in folds] == [1, 1] and [r["fixations"] for r in folds] == [12, 12]
    assert (total["images"], total["fixations"]) == (2, 24)
    for r in [*folds, total]:
        assert r["information_gain_over_spatial"] == pytest.approx(
            r["conditional_log_likelihood"] - r["spatial_log_likelihood"], abs=1e-6)
        assert r["information_gain_over_center_bias"] == pytest.approx(
            r["conditional_log_likelihood"] - r["center_bias_log_likelihood"], abs=1e-6)
        assert r["static_log_likelihood"] is None and "information_gain_over_static" not in r
        assert 0 <= r["conditional_auc"] <= 1 and np.isfinite(r["conditional_nss"])
    assert total["conditional_log_likelihood"] == pytest.approx(
        np.mean([r["conditional_log_likelihood"] for r in folds]), abs=1e-6)  # equal fixation counts
    lo, hi = total["information_gain_over_spatial_ci95"]
    assert lo <= total["information_gain_over_spatial"] <= hi
    assert [r["index"] for r in results["by_index"]] == [0, 1, 2, 3]
    assert sum(r["fixations"] for r in results["by_index"]) == 24
    written = json.loads((tmp_path / "results" / "deepgaze3_vgg16_crossval.json").read_text())
    assert written["total"] == json.loads(json.dumps(total))
    md = (tmp_path / "results" / "deepgaze3_vgg16_crossval.md").read_text()
    assert "on SCAN scanpaths, folds 0, 1 of 10" in md and "forced start" not in md
    with pytest.raises(KeyError):  # a card needs the static comparison
        model_card.scanpath_metrics(total)
    p = predict.load_scanpath_predictor(heads)
    history = p.empty_history(1)
    history[0, 0] = (10.0, 20.0)
    image = np.asarray(Image.open(data / "STIMULI" / "im0.png").convert("RGB"))
    log_p = np.asarray(p.conditional_log_density(image, history))
    assert log_p.shape == (1, 48, 64)
    assert abs(np.logaddexp.reduce(log_p[0].astype(np.float64).ravel())) < 1e-4


    # The fold store: a later run reads the trained folds instead of training them again (no runs made).
    stored = sorted(p.name for p in store.iterdir())
    assert len(stored) == 2 and stored[0].startswith("deepgaze3_vgg16_fold0_")
    shutil.rmtree(tmp_path / "cache" / "runs")
    monkeypatch.setattr(scanpath_crossval.provenance, "git_commit", lambda: "f" * 40)  # a later commit
    again = scanpath_crossval.run(recipe, data, [1], tmp_path / "cache", tmp_path / "results", None,
                                  command="test again", fold_store=store, tag="fold1")
    assert not (tmp_path / "cache" / "runs").exists()
    assert again["folds"][0]["conditional_log_likelihood"] == folds[1]["conditional_log_likelihood"]
    assert again["folds"][0]["command"] == "test" and again["command"] == "test again"
    md = (tmp_path / "results" / "deepgaze3_vgg16_crossval_fold1.md").read_text()
    assert f"read from the fold store: fold 1 by `test` at commit {folds[1]['commit'][:7]}" in md
    with pytest.raises(ValueError, match="scored test images"):
        scanpath_crossval.load_fold(store / stored[1], [0])
