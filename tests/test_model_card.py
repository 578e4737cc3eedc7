"""Model cards: every shipped predictor carries one that agrees with the committed results; `deepgaze info`."""

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

from deepgaze_jax import cli, model_card, registry
from deepgaze_jax.params_io import load_params, save_params

REPO = pathlib.Path(__file__).resolve().parents[1]
ASSETS = REPO / "deepgaze_jax" / "assets"
SHIPPED = (*registry.SHIPPED, *registry.SCANPATH)


def _cards_script():
    spec = importlib.util.spec_from_file_location("model_cards", REPO / "experiments" / "model_cards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built():
    return _cards_script().build_cards()


def test_every_shipped_predictor_has_a_card_that_matches_its_results(built):
    assert set(built) == set(SHIPPED)
    for stem in SHIPPED:
        card, metadata = model_card.read(ASSETS / f"{stem}.safetensors")
        assert card is not None, f"{stem}: no model card; run python experiments/model_cards.py"
        assert card.to_json() == built[stem].to_json(), f"{stem}: card is stale; run python experiments/model_cards.py"
        kind = "scanpath" if json.loads(metadata["model_config"]).get("kind") == "deepgaze3" else "static"
        assert card.kind == kind
        for result in card.results:
            assert (REPO / "experiments" / "results" / result).is_file(), result
        assert card.licence and card.backbone and card.data_licences and card.command


def test_card_figures_are_the_results_figures(built):
    """The figures come from the results files, not from the card builder: recompute two by hand."""
    summary = json.loads((REPO / "experiments/results/deepgaze1_crossval.json").read_text())["total"]
    card = built["deepgaze1"]
    assert card.metrics["explained_information_gain"]["value"] == pytest.approx(
        100 * summary["explained_information_gain"], abs=1e-4)
    dg3 = json.loads((REPO / "experiments/results/deepgaze3_vgg16_crossval.json").read_text())["total"]
    assert built["deepgaze3_vgg16"].metrics["information_gain_over_static"]["value"] == pytest.approx(
        dg3["information_gain_over_static"])


def _tiny_predictor_file(path, kind="static"):
    config = {"backbone": "alexnet"} if kind == "static" else {"kind": "deepgaze3", "history": 4}
    save_params(path, {"heads": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}},
                {"model_config": json.dumps(config), "members": "2", "command": "python x.py"})


def _card(kind="static", **changes):
    fields = dict(name="tiny", kind=kind, model="a tiny model", trained_on="nothing", command="python x.py",
                  commit="abc", results=("r.json",), backbone="none",
                  metrics={"log_likelihood": {"value": 1.5, "unit": "bits/fixation", "what": "over uniform"}})
    return model_card.ModelCard(**{**fields, **changes})


def test_write_keeps_tensors_and_metadata_and_reads_back(tmp_path):
    path = tmp_path / "p.safetensors"
    _tiny_predictor_file(path)
    before, meta_before = load_params(path)
    model_card.write(path, _card())
    after, meta_after = load_params(path)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    assert {k: meta_after[k] for k in meta_before} == meta_before
    card, _ = model_card.read(path)
    assert card == _card()
    assert list(card.metrics) == ["log_likelihood"]


def test_write_refuses_a_card_of_the_other_kind_and_non_predictors(tmp_path):
    path = tmp_path / "p.safetensors"
    _tiny_predictor_file(path, kind="scanpath")
    with pytest.raises(model_card.ModelCardError, match="holds a scanpath model.*describes a static"):
        model_card.write(path, _card())
    other = tmp_path / "cb.safetensors"
    save_params(other, {"x": np.zeros(2, np.float32)}, {"kind": "centerbias"})
    with pytest.raises(model_card.ModelCardError, match="not a predictor file"):
        model_card.write(other, _card())


@pytest.mark.parametrize("text, match", [
    ("{", "not JSON"),
    ("[1]", "JSON object"),
    (json.dumps({"schema": 99}), "schema 99"),
    (json.dumps({**json.loads(_card().to_json()), "extra": 1}), r"unknown fields \['extra'\]"),
    (json.dumps({k: v for k, v in json.loads(_card().to_json()).items() if k != "commit"}), r"lacks \['commit'\]"),
])
def test_malformed_cards_are_one_line_errors(text, match):
    with pytest.raises(model_card.ModelCardError, match=match):
        model_card.ModelCard.from_json(text, "f.safetensors")


def test_bad_fields_are_refused():
    with pytest.raises(model_card.ModelCardError, match="kind must be"):
        _card(kind="dynamic")
    with pytest.raises(model_card.ModelCardError, match=r"metric 'AUC' lacks \['unit', 'what'\]"):
        _card(metrics={"AUC": {"value": 0.8}})


def test_info_prints_every_shipped_card(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for stem in SHIPPED:
        assert f"name:       {stem}" in out
    assert "explained_information_gain  56.35 %" in out
    assert "information_gain_over_static" in out


def test_info_json_and_files(tmp_path, capsys):
    assert cli.main(["info", "deepgaze2_vgg16", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model_card"]["name"] == "deepgaze2_vgg16" and doc["members"] == "30"
    path = tmp_path / "p.safetensors"
    _tiny_predictor_file(path)
    assert cli.main(["info", str(path)]) == 0
    assert "no model card" in capsys.readouterr().out


def test_info_bad_input(tmp_path, capsys):
    assert cli.main(["info", "nosuchmodel"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deepgaze: error: nosuchmodel: neither a predictor file") and "\n" not in err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    assert cli.main(["info", str(junk)]) == 1
    err = capsys.readouterr().err.strip()
    assert "not a safetensors file" in err and "\n" not in err
