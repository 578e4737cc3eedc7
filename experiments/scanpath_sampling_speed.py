"""How long sampling scanpaths from DeepGaze III takes once an image's features are computed.

    PYTHONPATH=. python experiments/scanpath_sampling_speed.py [--members 10] [--n 100] [--length 10]

Builds a DeepGaze III (VGG-16, bundled backbone) predictor with ``--members`` random heads (the shape of
a fold ensemble; random heads cost what trained ones do) or loads ``--heads FILE``, computes the
features of one 768x1024 image once (timed apart), draws one warm-up set of scanpaths (compilation),
then times ``sample_scanpaths`` ``--rounds`` times and prints the median under the run's stamp
(command, date, machine, commit: :mod:`deepgaze_jax.provenance`). The target: 100 scanpaths of 10
fixations in 10 s on a 2-core CPU.
"""

import argparse
import time

import jax
import numpy as np
from PIL import Image

from deepgaze_jax import centerbias, provenance, sampling
from deepgaze_jax.cli import sample_image
from deepgaze_jax.deepgaze3 import deepgaze3
from deepgaze_jax.predict import ScanpathPredictor, load_scanpath_predictor
from deepgaze_jax.pretrained import load_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", default=None, help="a DeepGaze III predictor file (default: random heads)")
    parser.add_argument("--members", type=int, default=10, help="random heads in the ensemble (default 10)")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    commit = provenance.git_commit()  # the code this run started from
    if args.heads:
        predictor = load_scanpath_predictor(args.heads)
        what = args.heads
    else:
        model = deepgaze3()
        heads = [model.init_head(jax.random.PRNGKey(k)) for k in range(args.members)]
        stacked = jax.tree.map(lambda *xs: jax.numpy.stack(xs), *heads)
        predictor = ScanpathPredictor(model, load_backbone("vgg16"), stacked, centerbias.resolve("mit1003"))
        what = f"{args.members} random DeepGaze III heads (VGG-16)"
    with Image.open(sample_image()) as photo:
        image = np.asarray(photo.convert("RGB").resize((1024, 768), Image.BILINEAR))

    start = time.perf_counter()
    feats = predictor.features(image)
    jax.block_until_ready(feats)
    features_s = time.perf_counter() - start
    start = time.perf_counter()
    warm = sampling.sample_scanpaths(predictor, feats, args.n, args.length, seed=0)
    warmup_s = time.perf_counter() - start
    times = []
    for r in range(args.rounds):
        start = time.perf_counter()
        paths = sampling.sample_scanpaths(predictor, feats, args.n, args.length, seed=r + 1)
        times.append(time.perf_counter() - start)
    again = sampling.sample_scanpaths(predictor, feats, args.n, args.length, seed=0)
    assert np.array_equal(warm, again), "the same seed gave other scanpaths"
    assert ((paths >= 0) & (paths < np.array([1024, 768], np.float32))).all()
    print(provenance.markdown_line(provenance.stamp(provenance.command("experiments/scanpath_sampling_speed.py"),
                                                    commit)))
    print(f"{what}, one 768x1024 image, {args.n} scanpaths of {args.length} fixations: sampling "
          f"{np.median(times):.2f} s median of {args.rounds} (min {min(times):.2f}, max {max(times):.2f}) after the "
          f"features ({features_s:.2f} s, once) and a warm-up with compilation ({warmup_s:.2f} s)")


if __name__ == "__main__":
    main()
