"""How long one training step of each readout takes on MIT1003-shaped cached features.

    PYTHONPATH=. python experiments/readout_step_speed.py [--models deepgaze2_vgg16,deepgaze2_vgg16_iie] [--steps 10]

A batch of 8 images' VGG-16 block-5 features (24x32x2560, the 768x1024 images of MIT1003 at DeepGaze II's
downsampling 2), 128 fixations each, the 1024x768 center bias; for each model, ``Trainer.train_step``
(Adam) and the forward loss alone, each compiled first and then timed over ``--steps`` calls. Random
features: the time depends on the shapes only. Prints and writes milliseconds per step to
``experiments/results/readout_step_speed.{json,md}``, stamped (:mod:`deepgaze_jax.provenance`).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepgaze_jax import provenance, registry  # noqa: E402
from deepgaze_jax import train as T  # noqa: E402


def seconds_per_call(fn, steps: int) -> float:
    fn().block_until_ready()  # compile
    start = time.perf_counter()
    for _ in range(steps):
        out = fn()
    out.block_until_ready()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="deepgaze2_vgg16,deepgaze2_vgg16_iie")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "experiments" / "results" / "readout_step_speed")
    args = parser.parse_args(argv)
    commit = provenance.git_commit()
    rng = np.random.default_rng(0)
    batch, fixations = 8, 128
    features = jnp.asarray(np.abs(rng.normal(size=(batch, 24, 32, 2560))).astype(np.float32))
    centerbias = jnp.full((768, 1024), -np.log(768 * 1024), jnp.float32)
    xs = jnp.asarray(rng.uniform(0, 1023, (batch, fixations)).astype(np.float32))
    ys = jnp.asarray(rng.uniform(0, 767, (batch, fixations)).astype(np.float32))
    mask, weight = jnp.ones((batch, fixations), bool), jnp.ones((batch,), jnp.float32)
    rows = {}
    for name in [m for m in args.models.split(",") if m]:
        model = registry.build(name)
        trainer = T.Trainer(model, optax.adam(1e-3))
        state = {"s": trainer.init_state(model.init_head(jax.random.PRNGKey(0)))}
        data = (features, centerbias, xs, ys, mask, weight, weight)

        def step():
            state["s"], loss = trainer.train_step(state["s"], *data)
            return loss

        loss = jax.jit(trainer._loss)
        rows[name] = {"train_step_ms": 1000 * seconds_per_call(step, args.steps),
                      "forward_loss_ms": 1000 * seconds_per_call(lambda: loss(state["s"]["params"], *data), args.steps)}
        print(name, rows[name], flush=True)
    results = {"batch": batch, "features": [24, 32, 2560], "fixations_per_image": fixations, "steps": args.steps,
               "rows": rows}
    results = provenance.stamped(results, provenance.stamp(
        provenance.command("experiments/readout_step_speed.py", argv), commit))
    lines = ["# One readout training step on MIT1003-shaped features", "", provenance.markdown_line(results), "",
             f"Batch of {batch} images, features 24x32x2560 (VGG-16 block 5 of 768x1024 at downsampling 2), "
             f"{fixations} fixations each, Adam; mean of {args.steps} calls after compiling.", "",
             "| model | train step | forward loss |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {r['train_step_ms']:.1f} ms | {r['forward_loss_ms']:.1f} ms |" for name, r in rows.items()]
    provenance.write_results(args.out, results, "\n".join(lines) + "\n", indent=1)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
