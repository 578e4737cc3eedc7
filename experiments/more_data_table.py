"""The cross-dataset table: what each model was trained on against where it was tested.

    python experiments/more_data_table.py

Reads the committed results of ``crossval.py`` (``*_crossval.json``: test folds of the dataset it was
cross-validated on) and ``cross_dataset.py`` (``*_cross_dataset.json``: a whole dataset the model never
saw) and writes ``experiments/results/more_data.md``. Rows whose results are not committed are listed as
not run.
"""

import json
import pathlib
import sys

from deepgaze_jax import provenance

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"

# (model, trained on, MIT1003 test folds, OSIE test folds, the other dataset as a whole)
ROWS = [
    ("DeepGaze I", "MIT1003 folds", "deepgaze1_crossval", None, "deepgaze1_unseen_osie_cross_dataset"),
    ("DeepGaze I", "MIT1003 folds + all of OSIE, joint (OSIE weighted 0.3)", "deepgaze1_joint_osie_crossval",
     None, None),
    ("DeepGaze I", "all of OSIE, then MIT1003 folds", "deepgaze1_pretrain_osie_crossval", None, None),
    ("DeepGaze I, decay toward the pre-trained readout", "all of OSIE, then MIT1003 folds",
     "deepgaze1_pretrain_osie_l2sp_crossval", None, None),
    ("DeepGaze I", "OSIE folds", None, "deepgaze1_on_osie_crossval", "deepgaze1_on_osie_unseen_mit1003_cross_dataset"),
    ("DeepGaze I", "all of MIT1003, then OSIE folds", None, "deepgaze1_pretrain_mit1003_on_osie_crossval", None),
    ("DeepGaze II (VGG-16), 3 seeds", "MIT1003 folds", "deepgaze2_vgg16_3seeds_crossval", None,
     "deepgaze2_vgg16_unseen_osie_cross_dataset"),
    ("DeepGaze II (VGG-16)", "MIT1003 folds", "deepgaze2_vgg16_crossval", None, None),
    ("DeepGaze II (VGG-16)", "MIT1003 folds + all of OSIE, joint", "deepgaze2_vgg16_joint_osie_crossval", None, None),
    ("DeepGaze II (VGG-16)", "all of OSIE, then MIT1003 folds", "deepgaze2_vgg16_pretrain_osie_crossval", None, None),
    ("DeepGaze II (VGG-16)", "OSIE folds", None, "deepgaze2_vgg16_on_osie_crossval",
     "deepgaze2_vgg16_on_osie_unseen_mit1003_cross_dataset"),
    ("DeepGaze II (VGG-16)", "all of MIT1003, then OSIE folds", None, "deepgaze2_vgg16_pretrain_mit1003_on_osie_crossval",
     None),
    ("DeepGaze II features, IIE readout", "MIT1003 folds", "deepgaze2_vgg16_iie_crossval", None,
     "deepgaze2_vgg16_iie_unseen_osie_cross_dataset"),
    ("DeepGaze II features, IIE readout", "all of OSIE, then MIT1003 folds", "deepgaze2_vgg16_iie_pretrain_osie_crossval",
     None, None),
    ("DeepGaze II features, IIE readout, decay toward the pre-trained readout", "all of OSIE, then MIT1003 folds",
     "deepgaze2_vgg16_iie_pretrain_osie_l2sp_crossval", None, None),
    ("DeepGaze II features, IIE readout, 3 seeds", "all of OSIE, then MIT1003 folds",
     "deepgaze2_vgg16_iie_3seeds_pretrain_osie_crossval", None, None),
    ("DeepGaze II features, IIE readout, decay toward the pre-trained readout, 3 seeds",
     "all of OSIE, then MIT1003 folds", "deepgaze2_vgg16_iie_3seeds_pretrain_osie_l2sp_crossval", None, None),
]


def cell(stem: str | None) -> str:
    if stem is None:
        return "–"
    path = RESULTS / f"{stem}.json"
    if not path.exists():
        return "not run"
    r = json.loads(path.read_text())
    t, m = r["total"], r["metrics"]
    return (f"**{100 * t['explained_information_gain']:.1f} %** (LL {t['log_likelihood']:.3f}, "
            f"AUC {m['AUC']:.3f}, NSS {m['NSS']:.3f})")


def main() -> int:
    commit = provenance.git_commit()
    lines = [
        "# Trained on what, tested where",
        "",
        "Explained information gain (IG over the test dataset's cross-validated center bias, divided by its",
        "gold standard's), with LL in bits/fixation over uniform, AUC and NSS. *Test folds*: the 10-fold",
        "cross-validation of that dataset, each image predicted by the fold model that never saw it. *Other",
        "dataset as a whole*: every image of the dataset the model never saw, predicted by all of its fold",
        "models together, with that dataset's cross-validated center bias (`experiments/cross_dataset.py`).",
        "Each figure's file (command, commit, date, machine inside) is named in the source of this table,",
        "`python experiments/more_data_table.py`.",
        "",
        "| model | trained on | MIT1003 test folds | OSIE test folds | the other dataset as a whole |",
        "| --- | --- | --- | --- | --- |",
    ]
    for model, trained_on, mit, osie, other in ROWS:
        lines.append(f"| {model} | {trained_on} | {cell(mit)} | {cell(osie)} | {cell(other)} |")
    text = provenance.add_to_markdown("\n".join(lines) + "\n",
                                      provenance.stamp(provenance.command("experiments/more_data_table.py"), commit))
    (RESULTS / "more_data.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
