"""Compare training configs on fold 0's *validation* images (never its test images).

    PYTHONPATH=. python experiments/tune_fold0.py '{"model": "deepgaze2_vgg16", "learning_rate": 0.002, ...}' ...

Each argument is a ``TrainConfig`` as JSON; all run on the training images of fold 0 of the 10-fold
split (features from the cache that ``experiments/crossval.py`` writes, computed if absent), without
checkpoints, and print the per-epoch train and validation log-likelihoods (bits/fixation, per image).
"""

import argparse
import json
import pathlib
import time

from deepgaze_jax import crossval
from deepgaze_jax import data as data_lib
from deepgaze_jax import train as T
from deepgaze_jax.baselines import CenterBias
from deepgaze_jax.pretrained import load_backbone

REPO = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="TrainConfig JSON objects (one model for all)")
    parser.add_argument("--data", type=pathlib.Path, default=REPO.parent / "shared" / "data" / "MIT1003")
    parser.add_argument("--fold", type=int, default=0)
    args = parser.parse_args()
    configs = [T.TrainConfig.from_dict(json.loads(c)) for c in args.configs]
    if len({c.model for c in configs}) != 1 or len({c.feature_dtype for c in configs}) != 1:
        raise SystemExit("all configs must share model and feature_dtype")
    dataset = data_lib.load_mit1003(args.data, "twosize", data_dir=REPO / ".cache" / "tfds")
    model = configs[0].build_model()
    features = crossval.cached_features(model, load_backbone(model.backbone), dataset,
                                        REPO / ".cache" / f"features_{configs[0].model}_{configs[0].feature_dtype}.npz")
    fixations = T.FixationSet.from_dataset(dataset, features)
    split = data_lib.crossval_splits(len(dataset), args.fold)
    centerbias = crossval.centerbias_function(CenterBias.fit(dataset.subset(split["train"])))
    for config in configs:
        start = time.time()
        result = T.fit(config, fixations.subset(split["train"]), fixations.subset(split["val"]), centerbias,
                       progress=False)
        print(config.to_json().replace("\n", ""), f"best val {result.best_val:.4f} after {result.epochs} epochs "
              f"({time.time() - start:.0f} s)", "val:", [round(h["val_ll"], 3) for h in result.history],
              "train:", [round(h["train_ll"], 3) for h in result.history], flush=True)


if __name__ == "__main__":
    main()
