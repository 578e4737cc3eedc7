"""Do a bfloat16 backbone or Winograd convolutions change the shipped models' predictions? Log-likelihood
on real MIT1003 images.

    PYTHONPATH=. python experiments/backbone_accuracy.py [--images 50] [--models deepgaze1,deepgaze2_vgg16] \
        [--variants bfloat16:xla,float32:winograd2,float32:winograd4,float32:auto,bfloat16:winograd2,bfloat16:auto]

For each shipped predictor (``deepgaze_jax.predict.load_predictor``: the trained fold ensembles and
the MIT1003 center bias) it predicts the same MIT1003 images ("twosize": 1024x768 / 768x1024, as
trained) with the reference backbone (float32, XLA's convolution) and with each variant ``dtype:conv_impl``
(``DeepGaze.dtype`` and ``DeepGaze.conv_impl``, :mod:`deepgaze_jax.winograd`; the readout, blur, center
bias and logsumexp stay float32), and scores each on the images' fixations (conventional filter: no
forced initial fixation, none outside). Criterion (issue 17): the mean log-likelihood differs from the
reference's by less than 0.001 bits/fixation for a float32 variant and 0.01 for a bfloat16 one.
``--images N`` takes N images evenly spaced over the dataset (all 1003 are slow on a small CPU).
Results: ``experiments/results/backbone_accuracy.{json,md}`` (``--out``). The earlier bfloat16-only
run of this script is ``experiments/results/bf16_accuracy.{json,md}``.

The ensembles were trained by cross-validation on MIT1003, so most of these images were training images
of 9 in 10 of the members: the absolute log-likelihoods are optimistic; the differences between
backbones, the quantity measured here, are not affected.
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
from deepgaze_jax import provenance, winograd  # noqa: E402
from deepgaze_jax.likelihood import log_likelihood  # noqa: E402
from deepgaze_jax.predict import load_predictor, with_conv_impl  # noqa: E402

THRESHOLD_BITS = {"float32": 0.001, "bfloat16": 0.01}
REFERENCE = "float32:xla"


def parse_variant(text: str) -> tuple[str, str]:
    dtype, _, impl = text.partition(":")
    impl = impl or "xla"
    if dtype not in THRESHOLD_BITS:
        raise SystemExit(f"variant {text!r}: dtype must be one of {sorted(THRESHOLD_BITS)}")
    winograd.check_impl(impl)
    return dtype, impl


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=pathlib.Path, default=REPO.parent / "shared" / "data" / "MIT1003")
    parser.add_argument("--tfds-dir", type=pathlib.Path, default=REPO / ".cache" / "tfds",
                        help="tensorflow-datasets folder (MIT1003 'twosize' is built there once)")
    parser.add_argument("--models", default="deepgaze1,deepgaze2_vgg16")
    parser.add_argument("--variants", default="bfloat16:xla,float32:winograd2,float32:winograd4,float32:auto,"
                                              "bfloat16:winograd2,bfloat16:auto",
                        help="comma-separated dtype:conv_impl backbones compared with float32:xla")
    parser.add_argument("--images", type=int, default=50, help="images, evenly spaced (0: all)")
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "experiments" / "results" / "backbone_accuracy")
    args = parser.parse_args(argv)
    variants = [REFERENCE] + [v for v in args.variants.split(",") if v and v != REFERENCE]
    parsed = {v: parse_variant(v) for v in variants}
    commit = provenance.git_commit()  # the code this run started from

    dataset = data_lib.load_mit1003(args.data, "twosize", data_dir=args.tfds_dir)
    count = len(dataset) if args.images <= 0 else min(args.images, len(dataset))
    indices = np.unique(np.linspace(0, len(dataset) - 1, count).round().astype(int))
    rows = data_lib.rows_by_image(dataset)
    fix = dataset.fixations
    print(f"{len(indices)} of {len(dataset)} MIT1003 images", file=sys.stderr)

    results = {"device": str(jax.devices()[0]), "images": [dataset.image_ids[i] for i in indices],
               "reference": REFERENCE, "threshold_bits": THRESHOLD_BITS, "models": {}}
    for name in [m for m in args.models.split(",") if m]:
        predictor = load_predictor(name)
        runs = {}
        for variant, (dtype, impl) in parsed.items():
            runs[variant] = with_conv_impl(dataclasses.replace(predictor.model, dtype=dtype), impl, predictor.backbone)
        bits = {v: [] for v in runs}
        max_abs_nats, seconds, counts = {v: 0.0 for v in runs}, {v: 0.0 for v in runs}, []
        started = time.time()
        for n, i in enumerate(indices):
            image = np.asarray(dataset.images[i])[None]
            cb = np.broadcast_to(predictor.centerbias(image.shape[1:3]), image.shape[:3])
            r = rows[i]
            xs, ys = fix.x[r][None].astype(np.float32), fix.y[r][None].astype(np.float32)
            mask = np.ones_like(xs, bool)
            out = {}
            for variant, (model, backbone) in runs.items():
                t = time.perf_counter()
                out[variant] = model.apply_ensemble(backbone, predictor.heads, image, cb).block_until_ready()
                seconds[variant] += time.perf_counter() - t
                ll, _ = log_likelihood(out[variant], xs, ys, mask)
                bits[variant].append(float(ll[0]))
                gap = np.abs(np.asarray(out[REFERENCE]) - np.asarray(out[variant])).max()
                max_abs_nats[variant] = max(max_abs_nats[variant], float(gap))
            counts.append(len(r))
            if n % 10 == 0:
                print(f"{name}: {n + 1}/{len(indices)} images, {time.time() - started:.0f} s", file=sys.stderr)
        counts = np.asarray(counts, float)
        per_image = {v: np.asarray(b) for v, b in bits.items()}
        per_fixation = {v: float((b * counts).sum() / counts.sum()) for v, b in per_image.items()}
        doc = {"fixations": int(counts.sum()), "ll_bits_per_fixation": per_fixation, "variants": {}}
        for variant, (dtype, _) in parsed.items():
            if variant == REFERENCE:
                continue
            diff = per_image[variant] - per_image[REFERENCE]
            difference = per_fixation[variant] - per_fixation[REFERENCE]
            doc["variants"][variant] = {
                "difference_bits_per_fixation": difference,
                "per_image_difference_bits": {"mean_abs": float(np.abs(diff).mean()),
                                              "max_abs": float(np.abs(diff).max())},
                "max_abs_log_density_difference_nats": max_abs_nats[variant],
                "threshold_bits": THRESHOLD_BITS[dtype],
                "passes": abs(difference) < THRESHOLD_BITS[dtype],
            }
        doc["seconds_including_first_compile"] = seconds
        results["models"][name] = doc
        print(json.dumps(doc, indent=1), file=sys.stderr)

    results = provenance.stamped(results, provenance.stamp(provenance.command("experiments/backbone_accuracy.py", argv),
                                                           commit))
    provenance.write_results(args.out, results, markdown(results), indent=1)
    print(markdown(results))
    return 0 if all(v["passes"] for m in results["models"].values() for v in m["variants"].values()) else 1


def markdown(results: dict) -> str:
    lines = [
        "# Backbone variants against float32 with XLA's convolution: log-likelihood on MIT1003",
        "",
        provenance.markdown_line(results),
        "",
        f"Device {results['device']}: {len(results['images'])} MIT1003 "
        "images (twosize, evenly spaced over the dataset), the shipped predictors (fold ensembles, MIT1003 "
        "center bias); the backbone as the variant says (dtype : convolution), the head in float32. Criterion: "
        "|difference| < 0.001 bits/fixation (float32 variants) or 0.01 (bfloat16).",
        "",
        "| model | variant | fixations | LL reference | LL variant | difference | per-image mean / max abs difference "
        "| max abs log-density difference (nats) | passes |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, m in results["models"].items():
        ll = m["ll_bits_per_fixation"]
        for variant, v in m["variants"].items():
            pi = v["per_image_difference_bits"]
            lines.append(
                f"| {name} | {variant} | {m['fixations']} | {ll[results['reference']]:.4f} | {ll[variant]:.4f} "
                f"| {v['difference_bits_per_fixation']:+.6f} | {pi['mean_abs']:.6f} / {pi['max_abs']:.6f} "
                f"| {v['max_abs_log_density_difference_nats']:.2e} | {'yes' if v['passes'] else 'NO'} |")
    lines += ["", "LL: bits/fixation relative to uniform, averaged over fixations (the images are mostly training "
              "images of the ensembles' members, so the absolute values are optimistic; the difference is the point)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
