"""Center biases for prediction: shipped, uniform, files, templates, and `deepgaze baselines`."""

import math

import numpy as np
import pytest
from scipy.ndimage import zoom
from scipy.special import logsumexp

from deepgaze_jax import centerbias
from deepgaze_jax.baselines import CenterBias
from deepgaze_jax.cli import main
from deepgaze_jax.params_io import load_params
from deepgaze_jax.predict import ASSETS, load_predictor


def test_shipped_center_biases_are_normalised_and_differ():
    mit, osie = centerbias.resolve("mit1003")((600, 800)), centerbias.resolve("osie")((600, 800))
    for cb in (mit, osie):
        assert cb.shape == (600, 800) and abs(logsumexp(cb)) < 1e-4
    assert np.abs(np.exp(mit) - np.exp(osie)).sum() > 0.05  # two different priors
    np.testing.assert_allclose(centerbias.resolve("uniform")((3, 4)), np.full((3, 4), -math.log(12)))


def test_mit1003_center_bias_file_is_the_one_the_shipped_predictors_carry():
    tree, _ = load_params(ASSETS / "deepgaze1.safetensors")
    stored = centerbias.from_tree(tree["centerbias"])
    shipped = centerbias.load(ASSETS / "centerbias_mit1003.safetensors")
    np.testing.assert_allclose(np.asarray(shipped.log_density((96, 128))),
                               np.asarray(stored.log_density((96, 128))), atol=1e-5)


def test_template_is_stretched_as_the_reference_and_checked(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.random((16, 16)) + 0.1
    template = np.log(p / p.sum())
    path = tmp_path / "cb.npy"
    np.save(path, template)
    cb = centerbias.resolve(path)((24, 40))
    expected = zoom(template, (24 / 16, 40 / 16), order=0, mode="nearest")
    np.testing.assert_allclose(cb, expected - logsumexp(expected), rtol=1e-5)
    for bad, message in [(template[None], "2D"), (template + 7, "logsumexp 7"), (np.full((4, 4), np.nan), "finite"),
                         (np.zeros((4, 4), np.int64), "floating point")]:
        np.save(path, bad)
        with pytest.raises(ValueError, match=message):
            centerbias.resolve(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        centerbias.resolve(tmp_path / "missing.npy")


def test_predictor_with_another_center_bias(predictor_file):
    image = np.random.default_rng(1).integers(0, 255, (64, 96, 3)).astype(np.uint8)
    own = load_predictor(path=predictor_file).predict(image)
    uniform = load_predictor(path=predictor_file, centerbias="uniform").predict(image)
    osie = load_predictor(path=predictor_file, centerbias="osie").predict(image)
    assert abs(logsumexp(uniform)) < 1e-4 and abs(logsumexp(osie)) < 1e-4
    assert not np.allclose(own, uniform, atol=1e-3) and not np.allclose(osie, uniform, atol=1e-3)


def test_baselines_command_writes_a_file_predict_reads(tmp_path, predictor_file, capsys):
    stimuli = tmp_path / "STIMULI"
    stimuli.mkdir()
    from PIL import Image

    rows = ["image,subject,x,y,t"]
    rng = np.random.default_rng(2)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (128, 160, 3)).astype(np.uint8)).save(stimuli / f"im{i}.png")
        for s in range(2):
            for t in range(6):
                rows.append(f"im{i}.png,s{s},{rng.uniform(40, 120):.2f},{rng.uniform(32, 96):.2f},{t}")
    (tmp_path / "fix.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "mine.safetensors"
    assert main(["baselines", "--csv", str(tmp_path / "fix.csv"), "--stimuli", str(stimuli), "--out", str(out)]) == 0
    assert "48 fixations" in capsys.readouterr().out
    cb = centerbias.load(out)
    assert 0 < cb.bandwidth < 1
    image = rng.integers(0, 255, (128, 160, 3)).astype(np.uint8)
    density = load_predictor(path=predictor_file, centerbias=out).predict(image)
    assert density.shape == (128, 160) and abs(logsumexp(density)) < 1e-4
    assert main(["predict", str(stimuli / "im0.png"), "--heads", str(predictor_file), "--centerbias", str(out),
                 "--out", str(tmp_path / "pred"), "--no-png"]) == 0
    assert main(["baselines", "--csv", str(tmp_path / "fix.csv"), "--out", str(out)]) == 2
    assert "needs --stimuli" in capsys.readouterr().err
    assert main(["baselines", "--csv", str(tmp_path / "fix.csv"), "--stimuli", str(stimuli),
                 "--out", str(tmp_path / "x.npy")]) == 2


def test_center_bias_file_of_another_kind_is_refused(tmp_path, predictor_file):
    with pytest.raises(ValueError, match="not a center-bias file"):
        centerbias.resolve(predictor_file)
    bad = tmp_path / "bad.safetensors"
    centerbias.save(bad, CenterBias(np.zeros((8, 8), np.float32), 0.1, 0.1))
    with pytest.raises(ValueError, match="non-zero count map"):
        centerbias.resolve(bad)
