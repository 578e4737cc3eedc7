"""The 10-fold cross-validation of the papers, with the results committed in ``experiments/results``.

    python experiments/crossval.py --model deepgaze1 [--ship] [--seeds K] [--cache DIR --results DIR]
    python experiments/crossval.py --model deepgaze2_vgg16 --extra-data ../shared/data/OSIE [--recipe pretrain]
    python experiments/crossval.py --model deepgaze2_vgg16 --data ../shared/data/OSIE
    python experiments/crossval.py --model deepgaze2_vgg16_iie --extra-data ../shared/data/OSIE --recipe pretrain --set decay_to_init=true --tag l2sp

The same as ``deepgaze train`` (``deepgaze_jax/crossval.py``) on ``../shared/data/MIT1003`` (or the
dataset ``--data``) with the config ``experiments/configs/<model>.json`` (``--set KEY=JSON`` overrides
one of its values; ``--tag`` names such a variant's files); ``--extra-data`` trains with more datasets (``--recipe joint`` or ``pretrain``);
``--ship`` writes the fold ensemble to ``deepgaze_jax/assets/<model>.safetensors``, the default predictor
of ``deepgaze predict``.
"""

import argparse
import json
import pathlib
import shlex
import sys

from deepgaze_jax import crossval, registry
from deepgaze_jax.config import TrainConfig

REPO = pathlib.Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deepgaze1", choices=registry.TRAINABLE)
    parser.add_argument("--data", type=pathlib.Path, default=REPO.parent / "shared" / "data" / "MIT1003")
    parser.add_argument("--folds", default="0-9")
    parser.add_argument("--ship", action="store_true", help="write deepgaze_jax/assets/<model>.safetensors")
    parser.add_argument("--backbone", type=pathlib.Path, help="backbone weights (vgg19 needs them)")
    parser.add_argument("--cache", type=pathlib.Path, default=REPO / ".cache",
                        help="dataset, features and checkpoints (a fresh one times the whole run)")
    parser.add_argument("--results", type=pathlib.Path, default=REPO / "experiments" / "results")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per fold (their ensemble tests the fold)")
    parser.add_argument("--extra-data", type=pathlib.Path, action="append", default=[],
                        help="another dataset to train with (repeatable; never tested on)")
    parser.add_argument("--recipe", choices=crossval.RECIPES, default="joint")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a config value")
    parser.add_argument("--tag", default="", help="appended to the names of the result and predictor files")
    args = parser.parse_args()
    if args.tag and not args.tag.replace("_", "").isalnum():
        parser.error(f"--tag {args.tag!r}: letters, digits and _ only")
    overrides = json.loads((REPO / "experiments" / "configs" / f"{args.model}.json").read_text())
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    config = TrainConfig.from_dict({"model": args.model, **overrides})
    stem = f"{args.model}_{args.tag}" if args.tag else args.model
    out = (REPO / "deepgaze_jax" / "assets" if args.ship else args.cache) / f"{stem}.safetensors"
    results = crossval.run(config, args.data, crossval.parse_folds(args.folds), args.cache,
                           args.results, out, args.backbone,
                           command="python experiments/crossval.py " + shlex.join(sys.argv[1:]), seeds=args.seeds,
                           extra_data=args.extra_data, recipe=args.recipe, tag=args.tag)
    print(crossval.markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
