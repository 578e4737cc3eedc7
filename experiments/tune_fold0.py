"""Compare training configs on fold 0's *validation* images (never its test images).

    PYTHONPATH=. python experiments/tune_fold0.py '{"model": "deepgaze2_vgg16", "learning_rate": 0.002, ...}' ...
    PYTHONPATH=. python experiments/tune_fold0.py --seeds 3 "$(cat experiments/configs/deepgaze2_vgg16.json)" --model deepgaze2_vgg16

Each argument is a ``TrainConfig`` as JSON (``--model`` fills in the model where a config names none);
all run on the training images of fold 0 of the 10-fold split (features from the cache that
``experiments/crossval.py`` writes, computed if absent), without checkpoints, and print the per-epoch
train and validation log-likelihoods (bits/fixation, per image). ``--seeds K`` trains each config from
K seeds (the config's seed and the K-1 after it) and also prints the validation log-likelihood of their
ensemble (densities averaged, as the shipped fold ensemble). ``--extra-layers`` tries more backbone
layers (layers of another resolution are resized to the readout grid, as the model does): the config's
model with those layers read after its own, passed to ``fit`` as the model to train (its features are
cached apart, keyed on the layers).
"""

import argparse
import dataclasses
import json
import pathlib
import time

import numpy as np

from deepgaze_jax import crossval, likelihood
from deepgaze_jax import data as data_lib
from deepgaze_jax.baselines import CenterBias
from deepgaze_jax.config import TrainConfig
from deepgaze_jax.input_pipeline import FixationSet
from deepgaze_jax.pretrained import load_backbone
from deepgaze_jax.train import Evaluator, fit

REPO = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="TrainConfig JSON objects (one model for all)")
    parser.add_argument("--model", help="the model of configs that name none")
    parser.add_argument("--data", type=pathlib.Path, default=REPO.parent / "shared" / "data" / "MIT1003")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="train each config from this many seeds")
    parser.add_argument("--extra-layers", help="backbone layers to read besides the model's, e.g. conv4_3,relu4_3 "
                        "(a variant of the configs' model, features cached apart)")
    args = parser.parse_args()
    model_default = {} if args.model is None else {"model": args.model}
    configs = [TrainConfig.from_dict({**model_default, **json.loads(c)}) for c in args.configs]
    if len({c.model for c in configs}) != 1 or len({c.feature_dtype for c in configs}) != 1:
        raise SystemExit("all configs must share model and feature_dtype")
    model = configs[0].build_model()
    extra = tuple(args.extra_layers.split(",")) if args.extra_layers else ()
    if extra:
        model = dataclasses.replace(model, layers=model.layers + extra)
    backbone = load_backbone(model.backbone)
    dataset, features = crossval.load_with_features(model, backbone, args.data, REPO / ".cache")
    flipped = None
    if any(c.flip for c in configs):
        flipped = crossval.load_with_features(model, backbone, args.data, REPO / ".cache", flip=True)[1]
    fixations = FixationSet.from_dataset(dataset, features, flipped=flipped)
    split = data_lib.crossval_splits(len(dataset), args.fold)
    centerbias = crossval.centerbias_function(CenterBias.fit(dataset.subset(split["train"])))
    val = fixations.subset(split["val"])
    for config in configs:
        members = []
        for seed in range(config.seed, config.seed + args.seeds):
            seeded = dataclasses.replace(config, seed=seed)
            start = time.time()
            result = fit(seeded, fixations.subset(split["train"]), val, centerbias, progress=False, model=model)
            print(seeded.to_json().replace("\n", ""), *([f"extra layers {list(extra)}"] if extra else []),
                  f"best val {result.best_val:.4f} after {result.epochs} epochs "
                  f"({time.time() - start:.0f} s, {result.restarts} restarts)", "val:",
                  [round(h["val_ll"], 3) for h in result.history],
                  "train:", [round(h["train_ll"], 3) for h in result.history], flush=True)
            members.append(Evaluator(model).fixation_log_likelihoods(result.best_params, val, centerbias, config.batch_size))
        if args.seeds > 1:
            singles = [likelihood.average_bits(m, "image") for m in members]
            ensemble = likelihood.average_bits(likelihood.ensemble_bits(members), "image")
            print(f"ensemble of {args.seeds} seeds: val {ensemble:.4f} bits/fixation "
                  f"(per image; members {', '.join(f'{s:.4f}' for s in singles)}, mean {np.mean(singles):.4f})",
                  flush=True)


if __name__ == "__main__":
    main()
