"""Does a bfloat16 backbone change the shipped models' predictions? Log-likelihood on real MIT1003 images.

    PYTHONPATH=. python experiments/bf16_accuracy.py [--images 50] [--models deepgaze1,deepgaze2_vgg16]

For each shipped predictor (``deepgaze_jax.predict.load_predictor``: the trained fold ensembles and
the MIT1003 center bias) it predicts the same MIT1003 images ("twosize": 1024x768 / 768x1024, as
trained) twice, with the backbone in float32 and in bfloat16 (``DeepGaze.dtype``; the readout, blur,
center bias and logsumexp stay float32), and scores both on the images' fixations (conventional filter:
no forced initial fixation, none outside). Criterion: the mean log-likelihood differs by less than
0.01 bits/fixation. ``--images N`` takes N images evenly spaced over the dataset (all 1003 are slow on
a small CPU: DeepGaze II's VGG-16 takes seconds per image). Results:
``experiments/results/bf16_accuracy.{json,md}``.

The ensembles were trained by cross-validation on MIT1003, so most of these images were training images
of 9 in 10 of the members: the absolute log-likelihoods are optimistic; their float32/bfloat16 difference,
the quantity measured here, is not affected.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepgaze_jax import data as data_lib  # noqa: E402
from deepgaze_jax import provenance  # noqa: E402
from deepgaze_jax.likelihood import log_likelihood  # noqa: E402
from deepgaze_jax.predict import load_predictor  # noqa: E402

THRESHOLD_BITS = 0.01


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=pathlib.Path, default=REPO.parent / "shared" / "data" / "MIT1003")
    parser.add_argument("--tfds-dir", type=pathlib.Path, default=REPO / ".cache" / "tfds",
                        help="tensorflow-datasets folder (MIT1003 'twosize' is built there once)")
    parser.add_argument("--models", default="deepgaze1,deepgaze2_vgg16")
    parser.add_argument("--images", type=int, default=50, help="images, evenly spaced (0: all)")
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "experiments" / "results" / "bf16_accuracy")
    args = parser.parse_args(argv)
    commit = provenance.git_commit()  # the code this run started from

    dataset = data_lib.load_mit1003(args.data, "twosize", data_dir=args.tfds_dir)
    count = len(dataset) if args.images <= 0 else min(args.images, len(dataset))
    indices = np.unique(np.linspace(0, len(dataset) - 1, count).round().astype(int))
    rows = data_lib.rows_by_image(dataset)
    fix = dataset.fixations
    print(f"{len(indices)} of {len(dataset)} MIT1003 images", file=sys.stderr)

    results = {"device": str(jax.devices()[0]), "images": [dataset.image_ids[i] for i in indices],
               "threshold_bits": THRESHOLD_BITS, "models": {}}
    for name in [m for m in args.models.split(",") if m]:
        predictor = load_predictor(name)
        models = {"float32": dataclasses.replace(predictor.model, dtype="float32"),
                  "bfloat16": dataclasses.replace(predictor.model, dtype="bfloat16")}
        bits = {d: [] for d in models}
        max_abs_nats, seconds, counts = 0.0, {d: 0.0 for d in models}, []
        started = time.time()
        for n, i in enumerate(indices):
            image = np.asarray(dataset.images[i])[None]
            cb = np.broadcast_to(predictor.centerbias(image.shape[1:3]), image.shape[:3])
            r = rows[i]
            xs, ys = fix.x[r][None].astype(np.float32), fix.y[r][None].astype(np.float32)
            mask = np.ones_like(xs, bool)
            out = {}
            for dtype, model in models.items():
                t = time.perf_counter()
                out[dtype] = model.apply_ensemble(predictor.backbone, predictor.heads, image, cb).block_until_ready()
                seconds[dtype] += time.perf_counter() - t
                ll, _ = log_likelihood(out[dtype], xs, ys, mask)
                bits[dtype].append(float(ll[0]))
            counts.append(len(r))
            gap = np.abs(np.asarray(out["float32"]) - np.asarray(out["bfloat16"])).max()
            max_abs_nats = max(max_abs_nats, float(gap))
            if n % 10 == 0:
                print(f"{name}: {n + 1}/{len(indices)} images, {time.time() - started:.0f} s", file=sys.stderr)
        counts = np.asarray(counts, float)
        per_image = {d: np.asarray(v) for d, v in bits.items()}
        per_fixation = {d: float((v * counts).sum() / counts.sum()) for d, v in per_image.items()}
        diff = per_image["bfloat16"] - per_image["float32"]
        results["models"][name] = {
            "fixations": int(counts.sum()),
            "ll_bits_per_fixation": per_fixation,
            "difference_bits_per_fixation": per_fixation["bfloat16"] - per_fixation["float32"],
            "per_image_difference_bits": {"mean_abs": float(np.abs(diff).mean()), "max_abs": float(np.abs(diff).max())},
            "max_abs_log_density_difference_nats": max_abs_nats,
            "passes": abs(per_fixation["bfloat16"] - per_fixation["float32"]) < THRESHOLD_BITS,
            "seconds_including_first_compile": seconds,
        }
        print(json.dumps(results["models"][name], indent=1), file=sys.stderr)

    results = provenance.stamped(results, provenance.stamp(provenance.command("experiments/bf16_accuracy.py", argv), commit))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return 0 if all(m["passes"] for m in results["models"].values()) else 1


def markdown(results: dict) -> str:
    lines = [
        "# bfloat16 backbone vs float32: log-likelihood on MIT1003",
        "",
        provenance.markdown_line(results),
        "",
        f"Device {results['device']}: {len(results['images'])} MIT1003 "
        "images (twosize, evenly spaced over the dataset), the shipped predictors (fold ensembles, MIT1003 "
        "center bias); the backbone in bfloat16, the head in float32. Criterion: |difference| < "
        f"{results['threshold_bits']} bits/fixation.",
        "",
        "| model | fixations | LL float32 | LL bfloat16 | difference | per-image mean / max abs difference "
        "| max abs log-density difference (nats) | passes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, m in results["models"].items():
        ll = m["ll_bits_per_fixation"]
        pi = m["per_image_difference_bits"]
        lines.append(
            f"| {name} | {m['fixations']} | {ll['float32']:.4f} | {ll['bfloat16']:.4f} "
            f"| {m['difference_bits_per_fixation']:+.5f} | {pi['mean_abs']:.5f} / {pi['max_abs']:.5f} "
            f"| {m['max_abs_log_density_difference_nats']:.4f} | {'yes' if m['passes'] else 'NO'} |")
    lines += ["", "LL: bits/fixation relative to uniform, averaged over fixations (the images are mostly training "
              "images of the ensembles' members, so the absolute values are optimistic; the difference is the point)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
