"""Every metric for a finished cross-validation run, from its predictor file.

    python experiments/crossval_metrics.py --model deepgaze1 [--heads deepgaze_jax/assets/deepgaze1.safetensors]

The predictor file holds the fold models in fold order (its ``folds`` metadata; ``seeds_per_fold``
members each); each test image is predicted by the model (or seed ensemble) of its fold, with that
fold's center bias (refitted on the fold's training images, as during training). Adds ``metrics`` to ``experiments/results/<model>_crossval.json`` and
rewrites the ``.md``; writes ``<model>_crossval_metrics.json/.md`` with the per-image scores. Both are
stamped with this run's command, date, machine and commit (:mod:`deepgaze_jax.provenance`): the
metrics files at their top, the cross-validation JSON under ``metrics_provenance`` (its own stamp
stays that of the training run).
"""

import argparse
import json
import pathlib
import sys

from deepgaze_jax import crossval, provenance
from deepgaze_jax.params_io import load_params
from deepgaze_jax.pretrained import load_backbone
from deepgaze_jax.predict import ASSETS, model_from_json

REPO = pathlib.Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deepgaze1")
    parser.add_argument("--heads", type=pathlib.Path)
    parser.add_argument("--data", type=pathlib.Path, default=REPO.parent / "shared" / "data" / "MIT1003")
    args = parser.parse_args()
    commit = provenance.git_commit()  # the code this run started from
    cache, results_dir = REPO / ".cache", REPO / "experiments" / "results"
    tree, meta = load_params(args.heads or ASSETS / f"{args.model}.safetensors")
    model = model_from_json(meta["model_config"])
    heads = crossval.fold_heads(tree["heads"], meta)
    seeds = int(meta.get("seeds_per_fold", "1"))
    dataset, features = crossval.load_with_features(model, load_backbone(model.backbone), args.data, cache)
    center_biases = crossval.fold_center_biases(dataset, list(heads))
    evaluation = crossval.test_metrics(model, heads, center_biases, dataset, features, None, args.model)
    name = crossval.results_name(args.model, seeds)
    stamp = provenance.stamp(provenance.command("experiments/crossval_metrics.py"), commit)
    evaluation.write(results_dir, stem=f"{name}_crossval_metrics", stamp=stamp)
    path = results_dir / f"{name}_crossval.json"
    results = json.loads(path.read_text())
    results["metrics"] = evaluation.summary
    results["metrics_command"] = stamp["command"]
    results["metrics_provenance"] = stamp
    path.write_text(json.dumps(results, indent=2) + "\n")
    path.with_suffix(".md").write_text(crossval.markdown(results))
    crossval.plot_training_curves(results_dir / f"{name}_training_curves.png", results)
    print(crossval.markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
