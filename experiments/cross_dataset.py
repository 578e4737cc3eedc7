"""A trained predictor scored on a whole dataset it never saw (the cross-dataset columns of the README).

    python experiments/cross_dataset.py --heads FILE --data ../shared/data/OSIE [--name NAME]

Every image of ``--data`` is predicted by the mixture of all of the predictor's heads (every fold, every
seed: none of them saw this dataset), with the center bias of that dataset's cross-validation fold that
tests the image (fitted on the fold's training images, as in ``crossval.py``); the same center bias is
the baseline of IG, and the dataset's leave-one-observer-out gold standard the denominator of explained
IG. Writes ``experiments/results/<name>_metrics.{json,md}`` (per-image scores and every
metric) and ``<name>_cross_dataset.json`` (the summary, stamped with command, commit, date, machine).
"""

import argparse
import pathlib
import sys
import time

import jax

from deepgaze_jax import crossval, feature_cache, provenance, winograd
from deepgaze_jax import data as data_lib
from deepgaze_jax.baselines import GoldStandard
from deepgaze_jax.input_pipeline import FixationSet
from deepgaze_jax.params_io import load_params
from deepgaze_jax.predict import model_from_json
from deepgaze_jax.pretrained import load_backbone
from deepgaze_jax.train import Evaluator

REPO = pathlib.Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=pathlib.Path, required=True, help="a predictor file (crossval.py writes them)")
    parser.add_argument("--data", type=pathlib.Path, required=True, help="the dataset to score it on")
    parser.add_argument("--name", help="stem of the result files (default: <heads stem>_unseen_<dataset>)")
    parser.add_argument("--cache", type=pathlib.Path, default=REPO / ".cache")
    parser.add_argument("--results", type=pathlib.Path, default=REPO / "experiments" / "results")
    parser.add_argument("--feature-conv-impl", choices=winograd.IMPLS, default=feature_cache.DEFAULT_CONV_IMPL,
                        help="how the backbone convolves for the feature cache (xla: as the committed results without one)")
    args = parser.parse_args()
    started, commit = time.time(), provenance.git_commit()
    tree, meta = load_params(args.heads)
    if "model_config" not in meta:
        raise SystemExit(f"{args.heads}: not a predictor file")
    model = model_from_json(meta["model_config"])
    source = crossval.Source(args.data)
    name = args.name or f"{args.heads.stem}_unseen_{source.name}"
    dataset, features = crossval.load_with_features(model, load_backbone(model.backbone), args.data, args.cache,
                                                    conv_impl=args.feature_conv_impl)
    members = [jax.tree.map(lambda x: x[k], tree["heads"]) for k in range(int(meta["members"]))]
    folds = list(range(10))
    center_biases = crossval.fold_center_biases(dataset, folds)
    evaluation = crossval.test_metrics(model, {fold: members for fold in folds}, center_biases, dataset, features,
                                       None, name)
    command = provenance.command("experiments/cross_dataset.py")
    evaluation.write(args.results, stem=f"{name}_metrics", stamp=provenance.stamp(command, commit))

    gold_nats = GoldStandard.fit(dataset).log_likelihoods(dataset)
    rows = data_lib.rows_by_image(dataset)
    fixations = FixationSet.from_dataset(dataset, features)
    evaluator = Evaluator(model)
    model_bits, cb_bits, gold_bits = [], [], []
    for fold in folds:
        test = data_lib.crossval_splits(len(dataset), fold)["test"]
        cb = crossval.centerbias_function(center_biases[fold])
        bits = crossval.fold_bits(evaluator, members, fixations, test, cb, gold_nats, rows, 8)
        model_bits, cb_bits, gold_bits = model_bits + bits[0], cb_bits + bits[1], gold_bits + bits[2]
    summary = {
        "name": name, "heads": str(args.heads), "trained_on": meta.get("trained_on", ""),
        "members": len(members), "dataset": source.describe(dataset), "feature_conv_impl": args.feature_conv_impl,
        "total": crossval.summarise(model_bits, cb_bits, gold_bits), "metrics": evaluation.summary,
        **provenance.stamp(command, commit),
        "seconds": time.time() - started,
    }
    provenance.write_results(args.results / f"{name}_cross_dataset", summary)
    t = summary["total"]
    print(f"{name}: LL {t['log_likelihood']:.3f} IG {t['information_gain']:.3f} explained "
          f"{100 * t['explained_information_gain']:.1f} %, AUC {evaluation.summary['AUC']:.3f}, "
          f"NSS {evaluation.summary['NSS']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
