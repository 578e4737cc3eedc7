"""Can AlexNet's first layer (11x11, stride 4, padding 2, 3->64) run faster on XLA:CPU in another form?

    PYTHONPATH=. python experiments/alexnet_conv1_formulations.py [--batch 1] [--height 384 --width 512]

DeepGaze I at batch 1 spends most of its backbone time in conv1 and conv2, which Winograd does not touch
(``BENCHMARKS.md``). This times conv1 three ways on one input (by default the backbone's input for a
768x1024 image, which DeepGaze shrinks by 2) and checks each against the first:

- ``direct``: XLA's strided convolution (what the backbone runs);
- ``space-to-depth``: the padded input regrouped into 4x4 blocks (48 channels at a quarter of the size),
  the kernel zero-padded to 12x12 and regrouped alike, one stride-1 3x3 convolution;
- ``patches + matmul``: ``conv_general_dilated_patches`` (363 values per output pixel) and one matrix
  product.

Prints medians of interleaved runs after a warm-up, in ms, with the largest absolute difference from
``direct`` relative to its largest output, under the run's stamp (:mod:`deepgaze_jax.provenance`).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import provenance

KERNEL, STRIDE, PADDING, CIN, COUT = 11, 4, 2, 3, 64
DIMS = ("NHWC", "HWIO", "NHWC")


def direct(x: jax.Array, k: jax.Array) -> jax.Array:
    """``(B, H, W, 3)`` -> ``(B, H', W', 64)`` by XLA's strided convolution."""
    return jax.lax.conv_general_dilated(x, k, (STRIDE, STRIDE), ((PADDING, PADDING), (PADDING, PADDING)),
                                        dimension_numbers=DIMS)


def _output_size(size: int) -> int:
    return (size + 2 * PADDING - KERNEL) // STRIDE + 1


def space_to_depth(x: jax.Array, k: jax.Array) -> jax.Array:
    """The same convolution as a stride-1 convolution over 4x4 blocks of the padded input."""
    batch, height, width, _ = x.shape
    blocks = -(-KERNEL // STRIDE)  # 3: the 12x12 kernel spans 3x3 blocks
    out_h, out_w = _output_size(height), _output_size(width)
    rows, cols = (out_h + blocks - 1) * STRIDE, (out_w + blocks - 1) * STRIDE
    # The leading padding is the convolution's; the trailing one fills whole blocks (cropped if too much).
    xp = jnp.pad(x, ((0, 0), (PADDING, max(0, rows - height - PADDING)), (PADDING, max(0, cols - width - PADDING)),
                     (0, 0)))[:, :rows, :cols]
    xs = xp.reshape(batch, rows // STRIDE, STRIDE, cols // STRIDE, STRIDE, CIN)
    xs = xs.transpose(0, 1, 3, 2, 4, 5).reshape(batch, rows // STRIDE, cols // STRIDE, STRIDE * STRIDE * CIN)
    size = blocks * STRIDE
    kp = jnp.pad(k, ((0, size - KERNEL), (0, size - KERNEL), (0, 0), (0, 0)))
    ks = kp.reshape(blocks, STRIDE, blocks, STRIDE, CIN, COUT).transpose(0, 2, 1, 3, 4, 5)
    ks = ks.reshape(blocks, blocks, STRIDE * STRIDE * CIN, COUT)
    return jax.lax.conv_general_dilated(xs, ks, (1, 1), "VALID", dimension_numbers=DIMS)


def patches_matmul(x: jax.Array, k: jax.Array) -> jax.Array:
    """The same convolution as extracted patches times the flattened kernel."""
    patches = jax.lax.conv_general_dilated_patches(
        x, (KERNEL, KERNEL), (STRIDE, STRIDE), ((PADDING, PADDING), (PADDING, PADDING)), dimension_numbers=DIMS)
    # Patches come out channel-major: (c, kh, kw) flattened.
    flat = k.transpose(2, 0, 1, 3).reshape(CIN * KERNEL * KERNEL, COUT)
    return patches @ flat


FORMS = {"direct": direct, "space-to-depth": space_to_depth, "patches + matmul": patches_matmul}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(provenance.markdown_line(provenance.stamp(provenance.command("experiments/alexnet_conv1_formulations.py"))))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((args.batch, args.height, args.width, CIN), np.float32))
    k = jnp.asarray(rng.standard_normal((KERNEL, KERNEL, CIN, COUT), np.float32) * 0.05)
    jitted = {name: jax.jit(f) for name, f in FORMS.items()}
    reference = np.asarray(jitted["direct"](x, k))
    times: dict[str, list[float]] = {name: [] for name in FORMS}
    for name, f in jitted.items():
        out = np.asarray(f(x, k))
        if out.shape != reference.shape:
            raise SystemExit(f"{name}: output shape {out.shape}, direct gives {reference.shape}")
        err = np.abs(out - reference).max() / np.abs(reference).max()
        print(f"{name}: output {out.shape}, max |diff| / max |direct| = {err:.1e}")
    for _ in range(args.repeats):
        for name, f in jitted.items():
            start = time.perf_counter()
            jax.block_until_ready(f(x, k))
            times[name].append(time.perf_counter() - start)
    base = np.median(times["direct"])
    print(f"| conv1, {args.batch}x{args.height}x{args.width} | median ms | vs direct |")
    print("| --- | ---: | ---: |")
    for name, values in times.items():
        med = np.median(values)
        print(f"| {name} | {med * 1e3:.1f} | {base / med:.2f}x |")


if __name__ == "__main__":
    main()
