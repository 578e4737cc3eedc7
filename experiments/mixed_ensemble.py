"""Cross-validated fold ensembles of several predictor files mixed into one.

    PYTHONPATH=. python experiments/mixed_ensemble.py .cache/deepgaze2_vgg16_block4.safetensors \
        deepgaze_jax/assets/deepgaze2_vgg16.safetensors --model deepgaze2_vgg16_block4 \
        --name deepgaze2_vgg16_mixed [--out FILE]

Each test image of MIT1003 is predicted by every member of its fold from all the files (densities
averaged, every member weighted the same, fixed beforehand: no weight is fitted on test images), with
the fold's center bias, as ``experiments/crossval_metrics.py`` does for one file. The files must hold
the same folds (``crossval.run``'s predictor files). Models may differ in their backbone layers when the
layers of one are a prefix of another's (DeepGaze II's block 5 and the ``deepgaze2_vgg16_block4``
variant): the narrower heads then read the wider model's features with zero kernel rows for the extra
channels, which changes nothing. Writes ``experiments/results/<name>_crossval_metrics.json/.md`` (every
metric, per image), ``<name>_crossval.json`` (the summary: members, gold standard, explained information
gain) and ``<name>_crossval.md`` (that JSON as a table), each stamped with the command, date, machine
and commit (:mod:`deepgaze_jax.provenance`); ``--out`` writes the mixed predictor file.
"""

import argparse
import dataclasses
import json
import pathlib
import sys

from deepgaze_jax import crossval, provenance, registry
from deepgaze_jax.baselines import CenterBias
from deepgaze_jax.params_io import load_params
from deepgaze_jax.pretrained import load_backbone
from deepgaze_jax.predict import model_from_json, save_predictor_heads, widen_heads

REPO = pathlib.Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=pathlib.Path, help="predictor files of cross-validation runs")
    parser.add_argument("--name", required=True, help="stem of the result files")
    parser.add_argument("--model", required=True,
                        help="the model (deepgaze_jax.registry.MODELS) whose feature cache is read; every file's model must be "
                             "it or it with trailing layers dropped")
    parser.add_argument("--out", type=pathlib.Path, help="write the mixed predictor file here")
    parser.add_argument("--take", type=int, help="only the first TAKE seeds of each fold of each file (comparisons "
                        "at equal ensemble size)")
    parser.add_argument("--data", type=pathlib.Path, default=REPO.parent / "shared" / "data" / "MIT1003")
    parser.add_argument("--gold-from", type=pathlib.Path,
                        default=REPO / "experiments" / "results" / "deepgaze2_vgg16_crossval.json",
                        help="a results file of the same data and folds: its gold standard's information "
                             "gain over the cross-validated center bias divides the mixture's")
    args = parser.parse_args()

    commit = provenance.git_commit()  # the code this run started from
    loaded = [(path, *load_params(path)) for path in args.files]
    models = [model_from_json(meta["model_config"]) for _, _, meta in loaded]
    wide = registry.build(args.model, dtype=models[0].dtype)
    for (path, _, meta), model in zip(loaded, models):
        if (model.backbone != wide.backbone or wide.layers[: len(model.layers)] != model.layers
                or dataclasses.replace(model, layers=wide.layers) != wide):
            raise SystemExit(f"{path}: its model is not {args.model} ({wide}) with trailing layers dropped")
        if meta["folds"] != loaded[0][2]["folds"]:
            raise SystemExit(f"{path}: folds {meta['folds']}, but {loaded[0][0]} has {loaded[0][2]['folds']}")
    folds = [int(f) for f in loaded[0][2]["folds"].split(",")]
    heads: dict[int, list[dict]] = {fold: [] for fold in folds}
    for path, tree, meta in loaded:
        try:
            by_fold = crossval.fold_heads(widen_heads(tree["heads"], wide.feature_channels), meta, args.take)
        except ValueError as e:
            raise SystemExit(f"{path}: {e}") from None
        for fold in folds:
            heads[fold] += by_fold[fold]
    per_fold = len(heads[folds[0]])
    sources = ", ".join(f"{path.name}: {args.take or meta.get('seeds_per_fold', '1')}" for path, _, meta in loaded)

    cache = REPO / ".cache"
    dataset, features = crossval.load_with_features(wide, load_backbone(wide.backbone), args.data, cache)
    center_biases = crossval.fold_center_biases(dataset, folds)
    results_dir = REPO / "experiments" / "results"
    evaluation = crossval.test_metrics(wide, heads, center_biases, dataset, features, None, args.name)
    command = provenance.command("experiments/mixed_ensemble.py")
    stamp = provenance.stamp(command, commit)
    evaluation.write(results_dir, stem=f"{args.name}_crossval_metrics", stamp=stamp)
    gold = json.loads(args.gold_from.read_text())["total"]["gold_standard_information_gain"]
    summary = {**stamp, "name": args.name, "model": args.model, "files": [str(path) for path in args.files],
               "members_per_fold": per_fold, "members": sources, "weights": "equal",
               "gold_standard_information_gain": gold, "gold_from": args.gold_from.name,
               "explained_information_gain": evaluation.summary["IG"] / gold,
               "metrics": evaluation.summary, "metrics_file": f"{args.name}_crossval_metrics.json"}
    provenance.write_results(results_dir / f"{args.name}_crossval", summary, markdown(summary))
    print(markdown(summary))
    if args.out is not None:
        save_predictor_heads(args.out, wide, [h for fold in folds for h in heads[fold]], CenterBias.fit(dataset),
                             {"trained_on": "; ".join(dict.fromkeys(meta.get("trained_on", "?") for _, _, meta in loaded)),
                              "folds": ",".join(map(str, folds)), "command": command, "commit": commit,
                              "seeds_per_fold": str(per_fold),
                              "mixed_from": sources})
    return 0


def markdown(summary: dict) -> str:
    """The table of a ``<name>_crossval.json`` that :func:`main` wrote."""
    m, gold = summary["metrics"], summary["gold_standard_information_gain"]
    return "\n".join([
        f"# {summary['name']}: mixed fold ensembles, 10-fold cross-validation on MIT1003",
        "",
        provenance.markdown_line(summary),
        "",
        f"Members per fold: {summary['members_per_fold']} ({summary['members']}), "
        "densities averaged with equal weights  ",
        f"Gold standard IG over the cross-validated center bias: {gold:.4f} bits/fixation (from `{summary['gold_from']}`)",
        "",
        "| LL (bits/fix) | IG | explained IG | AUC | sAUC | NSS | CC | KLDiv | SIM |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {m['LL']:.3f} | {m['IG']:.3f} | **{100 * summary['explained_information_gain']:.1f} %** | {m['AUC']:.3f} | "
        f"{m['sAUC']:.3f} | {m['NSS']:.3f} | {m['CC']:.3f} | {m['KLDiv']:.3f} | {m['SIM']:.3f} |",
        "",
        f"Every metric, per image: `{summary['metrics_file']}`.",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
