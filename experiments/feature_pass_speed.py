"""How long the MIT1003 feature pass of DeepGaze II (VGG-16) takes with each backbone convolution.

    PYTHONPATH=. python experiments/feature_pass_speed.py [--images 96] [--impls xla,auto]

The feature cache (:func:`deepgaze_jax.feature_cache.compute_features`, batch 4, as the cache builds it)
runs the frozen VGG-16 of the shipped DeepGaze II over ``--images`` MIT1003 "twosize" images (evenly spaced
over the dataset, both orientations) once per convolution ``conv_impl`` (:mod:`deepgaze_jax.winograd`), in
the batches the cache makes (images of one size, 4 at a time), the implementations alternating batch by
batch so that load drifts hit all alike, after every batch shape has been compiled. Prints and writes the seconds per image, the speed ratio against ``xla`` and the
largest relative difference of the features from ``xla``'s, to
``experiments/results/feature_pass_speed.{json,md}``, stamped (:mod:`deepgaze_jax.provenance`). The whole
1003-image pass scales by the image count.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepgaze_jax import data as data_lib  # noqa: E402
from deepgaze_jax import provenance, registry, winograd  # noqa: E402
from deepgaze_jax.feature_cache import compute_features  # noqa: E402
from deepgaze_jax.images import batches_by_size  # noqa: E402
from deepgaze_jax.predict import with_conv_impl  # noqa: E402
from deepgaze_jax.pretrained import load_backbone  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=pathlib.Path, default=REPO.parent / "shared" / "data" / "MIT1003")
    parser.add_argument("--tfds-dir", type=pathlib.Path, default=REPO / ".cache" / "tfds")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--impls", default="xla,auto")
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "experiments" / "results" / "feature_pass_speed")
    args = parser.parse_args(argv)
    commit = provenance.git_commit()
    impls = [i for i in args.impls.split(",") if i]
    for impl in impls:
        winograd.check_impl(impl)
    if "xla" not in impls:
        impls.insert(0, "xla")
    dataset = data_lib.load_mit1003(args.data, "twosize", data_dir=args.tfds_dir)
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(args.images, len(dataset))).round().astype(int))
    images = [np.asarray(dataset.images[i]) for i in indices]
    base = registry.build("deepgaze2_vgg16")
    backbone = load_backbone(base.backbone)
    runs = {impl: with_conv_impl(base, impl, backbone) for impl in impls}
    # the batches the cache makes (images of one size, 4 at a time); warm-up: compile every batch shape
    batches = list(batches_by_size([img.shape for img in images], 4))
    shapes = {(len(b), images[b[0]].shape): b for b in batches}
    for model, params in runs.values():
        for batch in shapes.values():
            compute_features(model, params, [images[i] for i in batch], progress=False)
    seconds = {impl: 0.0 for impl in impls}
    features = {impl: [] for impl in impls}
    load = [os.getloadavg()[0]]
    for n, batch in enumerate(batches):
        for impl in (impls if n % 2 == 0 else impls[::-1]):
            model, params = runs[impl]
            t = time.perf_counter()
            features[impl] += compute_features(model, params, [images[i] for i in batch], progress=False)
            seconds[impl] += time.perf_counter() - t
        load.append(os.getloadavg()[0])
    rows = {}
    for impl in impls:
        diff = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
                   for a, b in zip(features[impl], features["xla"]))
        rows[impl] = {"seconds": seconds[impl], "seconds_per_image": seconds[impl] / len(images),
                      "speed_vs_xla": seconds["xla"] / seconds[impl], "max_relative_feature_difference": diff,
                      "plan": winograd.describe(impl, base.dtype)}
    results = {"images": len(images), "model": "deepgaze2_vgg16 (VGG-16 block 5, downsample 2)",
               "batch_size": 4, "load_average_1min": load, "rows": rows}
    results = provenance.stamped(results, provenance.stamp(provenance.command("experiments/feature_pass_speed.py", argv),
                                                           commit))
    lines = ["# MIT1003 feature pass of DeepGaze II (VGG-16) by backbone convolution", "",
             provenance.markdown_line(results), "",
             f"{len(images)} MIT1003 twosize images (evenly spaced), in the feature cache's batches (4 images of one "
             f"size); the implementations alternate batch by batch, each batch shape compiled before; 1-minute load average {min(load):.1f}-{max(load):.1f}.", "",
             "| conv_impl | s/image | speed vs xla | whole MIT1003 (1003 images) | max relative feature difference |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for impl, row in rows.items():
        lines.append(f"| {impl} | {row['seconds_per_image']:.3f} | {row['speed_vs_xla']:.2f}x "
                     f"| {row['seconds_per_image'] * 1003 / 60:.1f} min | {row['max_relative_feature_difference']:.1e} |")
    provenance.write_results(args.out, results, "\n".join(lines) + "\n", indent=1)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
