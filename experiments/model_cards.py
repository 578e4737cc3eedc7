"""Write the model card (:mod:`deepgaze_jax.model_card`) of every shipped predictor from the committed results.

    python experiments/model_cards.py            # write the cards into deepgaze_jax/assets/*.safetensors
    python experiments/model_cards.py --check    # exit 1 where a shipped card differs from the results

Run it after shipping a predictor (``--ship``) and committing its results. Only the metadata changes: the
tensors of each file stay bit for bit. ``tests/test_model_card.py`` rebuilds the cards with
:func:`build_cards` and fails where a shipped file's card disagrees with its results files.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys

from deepgaze_jax import crossval, model_card
from deepgaze_jax.params_io import load_params

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
ASSETS = REPO / "deepgaze_jax" / "assets"
#: The gold standard of the MIT1003 10-fold runs (every static model's explained IG divides by it).
GOLD_STANDARD = "deepgaze2_vgg16_crossval.json"
MIT1003 = {"MIT1003": model_card.DATA_LICENCES["MIT1003"]}
WITH_OSIE = {**MIT1003, "OSIE": model_card.DATA_LICENCES["OSIE"]}


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _static(name: str, metrics_file: str, **fields) -> model_card.ModelCard:
    gold = _load(GOLD_STANDARD)["total"]["gold_standard_information_gain"]
    metrics = model_card.static_metrics(_load(metrics_file)["summary"], gold)
    return model_card.ModelCard(name=name, kind="static", metrics=metrics,
                                results=(metrics_file, fields.pop("summary_file"), GOLD_STANDARD), **fields)


IIE_PRETRAIN = "--model deepgaze2_vgg16_iie --extra-data ../shared/data/OSIE --recipe pretrain"


def _deepgaze2(meta: dict) -> model_card.ModelCard:
    """The shipped DeepGaze II's card: which run it is comes from the file's own command."""
    if IIE_PRETRAIN in meta["command"]:
        seeds = int(meta["seeds_per_fold"])
        args = shlex.split(meta["command"])
        tag = args[args.index("--tag") + 1] if "--tag" in args else ""
        stem = crossval.results_name("deepgaze2_vgg16_iie", seeds, extras=["osie"], recipe="pretrain",
                                     tag=tag) + "_crossval"
        l2sp = ("; the fine-tuning's weight decay pulls the readout toward the pre-trained one instead of "
                "zero (decay_to_init, L2-SP)") if "decay_to_init=true" in args else ""
        return _static(
            "deepgaze2_vgg16", f"{stem}_metrics.json", summary_file=f"{stem}.json",
            model=("DeepGaze II features (VGG-16 block 5: conv5_1, relu5_1, relu5_2, conv5_3, relu5_3; frozen "
                   "ImageNet backbone) with the DeepGaze IIE readout (layer norm, 1x1 convs 8-16-1, softplus), "
                   "blur, center bias"),
            trained_on=(f"pre-trained on all of OSIE (700 images), then fitted on each MIT1003 training fold "
                        f"(twosize, conventional filtering), 10-fold cross-validation, {seeds} seeds per fold "
                        f"(pre-training and fine-tuning){l2sp}; OSIE never tested on"),
            command=meta["command"], commit=meta["commit"],
            backbone=model_card.BACKBONE_PROVENANCE["vgg16"], data_licences=WITH_OSIE,
            notes=("The paper (Kuemmerer et al. 2017): 87 % with VGG-19 and SALICON pre-training; OSIE stands "
                   "in for SALICON here."))
    return _static(
        "deepgaze2_vgg16", "deepgaze2_vgg16_3seeds_plus_joint_osie_crossval_metrics.json",
        summary_file="deepgaze2_vgg16_3seeds_plus_joint_osie_crossval.md",
        model=("DeepGaze II: a 16-32-2-1 1x1-conv readout of VGG-16 block 5 (conv5_1, relu5_1, relu5_2, "
               "conv5_3, relu5_3; frozen ImageNet backbone), blur, center bias"),
        trained_on=("MIT1003 (twosize, conventional filtering), 10-fold cross-validation: per fold the "
                    "ensemble of 3 seeds trained on MIT1003 alone and 1 readout trained jointly on OSIE "
                    "(all 700 images) and the fold's MIT1003 training images, equal weights fixed "
                    f"beforehand ({meta.get('mixed_from', '')}); OSIE never tested on"),
        command=meta["command"], commit=meta["commit"],
        backbone=model_card.BACKBONE_PROVENANCE["vgg16"], data_licences=WITH_OSIE,
        notes=("The paper (Kuemmerer et al. 2017): 87 % with VGG-19 and SALICON pre-training, neither "
               "of which is available here."))


def build_cards() -> dict[str, model_card.ModelCard]:
    """The card of every shipped predictor (by file stem), from the committed results."""
    deepgaze1 = _load("deepgaze1_crossval.json")
    _, dg2_meta = load_params(ASSETS / "deepgaze2_vgg16.safetensors")
    deepgaze3 = _load("deepgaze3_vgg16_crossval.json")
    return {
        "deepgaze1": _static(
            "deepgaze1", "deepgaze1_crossval_metrics.json", summary_file="deepgaze1_crossval.json",
            model="DeepGaze I: a 1x1 readout of AlexNet conv5 (frozen ImageNet backbone), blur, center bias",
            trained_on=("MIT1003 (twosize 1024x768 / 768x1024, conventional filtering, 1003 images, 15 "
                        "observers), 10-fold cross-validation; the file holds the 10 fold readouts"),
            command=deepgaze1["command"],
            commit="not recorded by the run; the file was committed in d16b35e",
            backbone=model_card.BACKBONE_PROVENANCE["alexnet"], data_licences=MIT1003,
            notes="The paper (Kuemmerer et al. 2015): 56 % explained information gain."),
        "deepgaze2_vgg16": _deepgaze2(dg2_meta),
        "deepgaze3_vgg16": model_card.ModelCard(
            name="deepgaze3_vgg16", kind="scanpath",
            model=("DeepGaze III: the DeepGaze IIE saliency network (layer norm, 8-16-1, softplus) on VGG-16 "
                   "block 5, a scanpath network over the last 4 fixations (3K -> 128 -> 16), a fixation "
                   "selection network 128-16-1, blur, center bias"),
            trained_on=("MIT1003 scanpaths (twosize, every conventional fixation a target given its previous "
                        f"4, the forced start as history only), folds {','.join(str(f['fold']) for f in deepgaze3['folds'])} "
                        f"of the 10-fold split ({deepgaze3['total']['images']} test images, "
                        f"{deepgaze3['total']['fixations']} fixations); spatial phase, then scanpath phase"),
            command=deepgaze3["command"], commit=deepgaze3["commit"],
            results=("deepgaze3_vgg16_crossval.json",),
            metrics=model_card.scanpath_metrics(deepgaze3["total"]),
            backbone=model_card.BACKBONE_PROVENANCE["vgg16"], data_licences=MIT1003,
            notes=("Two of the ten folds: the others need about 6 h more on a 2-core CPU. The reference "
                   "DeepGaze III uses DenseNet-201 and SALICON pre-training.")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 where a card differs")
    args = parser.parse_args()
    stale = []
    for stem, card in build_cards().items():
        path = ASSETS / f"{stem}.safetensors"
        shipped, _ = model_card.read(path)
        if shipped is not None and shipped.to_json() == card.to_json():
            print(f"{path.name}: card up to date")
        elif args.check:
            stale.append(path.name)
            print(f"{path.name}: card {'missing' if shipped is None else 'differs from the results'}")
        else:
            model_card.write(path, card)
            print(f"{path.name}: card written")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
