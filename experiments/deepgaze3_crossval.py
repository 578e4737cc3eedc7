"""DeepGaze III cross-validated on MIT1003 scanpaths (``deepgaze_jax/scanpath_crossval.py``).

    python experiments/deepgaze3_crossval.py [--folds 0-9] [--ship] [--set scanpath.max_epochs=4]

The phases' configs come from ``experiments/configs/deepgaze3_vgg16.json`` (``spatial``, ``scanpath``,
``joint`` or null); ``--set PHASE.KEY=JSON`` overrides one value. The conditional model is compared
with its own spatial phase and with the shipped DeepGaze II's fold heads
(``deepgaze_jax/assets/deepgaze2_vgg16.safetensors``, trained on the same folds). ``--ship`` writes the
fold ensemble to ``deepgaze_jax/assets/deepgaze3_vgg16.safetensors``.

Each trained fold is kept in ``experiments/results/deepgaze3_vgg16_folds/`` (its head, its test
images' scores, its stamp; a few hundred kB) and read from there by later runs of the same recipe, so
the 10 folds can be trained a few at a time, e.g. ``--folds 2-4 --tag folds2-4`` in one session, and
joined by ``--folds 0-9 --ship`` once all are there.
"""

import argparse
import json
import pathlib
import shlex
import sys

from deepgaze_jax import crossval, huge_pages, scanpath_crossval
from deepgaze_jax.config import TrainConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
MODEL = "deepgaze3_vgg16"


def main() -> int:
    huge_pages.reexec()  # a scanpath step 1.7x faster on the CPU (experiments/results/allocator_speed_*.md)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=pathlib.Path, default=REPO.parent / "shared" / "data" / "MIT1003")
    parser.add_argument("--folds", default="0-9")
    parser.add_argument("--ship", action="store_true", help=f"write deepgaze_jax/assets/{MODEL}.safetensors")
    parser.add_argument("--cache", type=pathlib.Path, default=REPO / ".cache")
    parser.add_argument("--results", type=pathlib.Path, default=REPO / "experiments" / "results")
    parser.add_argument("--static", type=pathlib.Path, default=REPO / "deepgaze_jax" / "assets" / "deepgaze2_vgg16.safetensors",
                        help="the static predictor (fold heads) to compare with")
    parser.add_argument("--no-static", action="store_true", help="compare with the spatial phase only")
    parser.add_argument("--fold-store", type=pathlib.Path,
                        help=f"where trained folds are kept (default experiments/results/{MODEL}_folds; "
                             "with --max-images, the cache)")
    parser.add_argument("--tag", default="", help="results file suffix: <results>/deepgaze3_vgg16_crossval_TAG.*")
    parser.add_argument("--max-images", type=int, help="only the first images (a quick trial)")
    parser.add_argument("--set", action="append", default=[], metavar="PHASE.KEY=JSON", help="override a config value")
    args = parser.parse_args()
    phases = json.loads((REPO / "experiments" / "configs" / f"{MODEL}.json").read_text())
    for item in args.set:
        key, _, value = item.partition("=")
        phase, _, name = key.partition(".")
        if phase not in phases or not name:
            parser.error(f"--set {item!r}: expected PHASE.KEY=JSON with PHASE one of {sorted(phases)}")
        phases[phase] = {**(phases[phase] or {}), name: json.loads(value)}
    configs = {k: None if v is None else TrainConfig.from_dict({"model": MODEL, **v}) for k, v in phases.items()}
    recipe = scanpath_crossval.Recipe(**configs)
    store = args.fold_store or (args.cache / "folds" if args.max_images else args.results / f"{MODEL}_folds")
    out = (REPO / "deepgaze_jax" / "assets" if args.ship else args.cache) / f"{MODEL}.safetensors"
    results = scanpath_crossval.run(recipe, args.data, crossval.parse_folds(args.folds), args.cache, args.results, out,
                                    None if args.no_static else args.static, command="python experiments/deepgaze3_crossval.py " + shlex.join(sys.argv[1:]),
                                    max_images=args.max_images, fold_store=store, tag=args.tag)
    print(scanpath_crossval.markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
