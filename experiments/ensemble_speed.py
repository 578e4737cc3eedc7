"""What an ensemble costs at prediction time: the shipped DeepGaze II predictor on one 768x1024 image.

    PYTHONPATH=. python experiments/ensemble_speed.py [--members 1 10 30] [--rounds 6]

Times ``Predictor.log_density`` (backbone once, the heads, the mixture) with the first K members of the
shipped file, the members mixed on the saliency grid and upsampled once (``DeepGaze.apply_ensemble``)
and, for comparison, each member upsampled to the image before the mixture (how it was done before).
Rounds interleave the configurations; medians are printed, under the run's stamp (command, date,
machine, commit: :mod:`deepgaze_jax.provenance`). Both forms are checked to agree.
"""

import argparse
import time

import jax
import numpy as np

from deepgaze_jax import provenance
from deepgaze_jax.model import mixture
from deepgaze_jax.predict import load_predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deepgaze2_vgg16")
    parser.add_argument("--members", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    commit = provenance.git_commit()  # the code this run started from
    p = load_predictor(args.model)
    total = jax.tree.leaves(p.heads)[0].shape[0]
    image = np.random.RandomState(0).randint(0, 256, (1, 768, 1024, 3)).astype(np.uint8)
    cb = np.asarray(p.centerbias((768, 1024)))[None]
    model = p.model

    @jax.jit
    def full_size(backbone, heads, images, centerbias):
        feats = model.features(backbone, images)
        return mixture(jax.vmap(model.head, in_axes=(0, None, None))(heads, feats, centerbias))

    configs = {}
    for k in args.members:
        if k > total:
            raise SystemExit(f"the predictor has {total} members, asked for {k}")
        heads = jax.tree.map(lambda x, k=k: x[:k], p.heads)
        configs[f"{k} members, mixed on the grid"] = (model.apply_ensemble, heads)
        configs[f"{k} members, mixed at image size"] = (full_size, heads)
    for name, (fn, heads) in configs.items():
        fn(p.backbone, heads, image, cb).block_until_ready()
    for k in args.members:
        heads = jax.tree.map(lambda x, k=k: x[:k], p.heads)
        diff = np.abs(np.asarray(model.apply_ensemble(p.backbone, heads, image, cb))
                      - np.asarray(full_size(p.backbone, heads, image, cb))).max()
        print(f"{k} members: max |grid - image size| {diff:.2e} nats")
    times = {name: [] for name in configs}
    for r in range(args.rounds):
        names = list(configs)
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn, heads = configs[name]
            start = time.perf_counter()
            fn(p.backbone, heads, image, cb).block_until_ready()
            times[name].append(time.perf_counter() - start)
    print(provenance.markdown_line(provenance.stamp(provenance.command("experiments/ensemble_speed.py"), commit)))
    print(f"{args.model}, one 768x1024 image, {jax.devices()[0].device_kind}, median of {args.rounds} rounds:")
    for name, t in times.items():
        print(f"  {name}: {np.median(t) * 1000:.0f} ms (min {min(t) * 1000:.0f}, max {max(t) * 1000:.0f})")


if __name__ == "__main__":
    main()
