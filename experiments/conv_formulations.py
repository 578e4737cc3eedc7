"""Can a bfloat16 backbone run faster on XLA:CPU as matrix products than as convolutions?

    PYTHONPATH=. python experiments/conv_formulations.py

XLA:CPU converts a bfloat16 convolution to float32 (``BENCHMARKS.md``, profile item 1), but its bfloat16
matrix product runs natively. This times, for VGG layer shapes of DeepGaze II at 768x1024 (the
backbone sees 384x512), a 3x3 convolution four ways at batch 1: float32 convolution, bfloat16
convolution, bfloat16 im2col (the nine shifted copies concatenated, one product) and bfloat16 tap sum
(nine products of shifted views, accumulated in float32), plus a plain float32 and bfloat16 matrix
product. Prints medians of 3 runs after a warm-up, in ms and GFLOP/s, under the run's stamp (command,
date, machine, commit: :mod:`deepgaze_jax.provenance`).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import provenance


def _median_ms(f, *args) -> float:
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def conv(x, k):
    return jax.lax.conv_general_dilated(x, k.astype(x.dtype), (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _shifted(x, kh, kw):
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    height, width = x.shape[1:3]
    return [padded[:, i : i + height, j : j + width, :] for i in range(kh) for j in range(kw)]


def im2col(x, k):
    kh, kw, cin, cout = k.shape
    patches = jnp.concatenate(_shifted(x, kh, kw), axis=-1)
    out = jnp.dot(patches, k.reshape(kh * kw * cin, cout).astype(x.dtype), preferred_element_type=jnp.float32)
    return out.astype(x.dtype)


def tap_sum(x, k):
    kh, kw, _, _ = k.shape
    views = _shifted(x, kh, kw)
    out = sum(jnp.dot(v, k[t // kw, t % kw].astype(x.dtype), preferred_element_type=jnp.float32)
              for t, v in enumerate(views))
    return out.astype(x.dtype)


def main() -> None:
    print(provenance.markdown_line(provenance.stamp(provenance.command("experiments/conv_formulations.py"))))
    m, k_, n = 4096, 2304, 1024
    for dtype in (jnp.float32, jnp.bfloat16):
        a, b = jnp.ones((m, k_), dtype), jnp.ones((k_, n), dtype)
        ms = _median_ms(jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32)), a, b)
        print(f"matmul {m}x{k_}x{n} {jnp.dtype(dtype).name}: {ms:.1f} ms, {2 * m * k_ * n / ms / 1e6:.0f} GFLOP/s")
    for height, width, cin, cout in ((384, 512, 64, 64), (96, 128, 256, 256), (24, 32, 512, 512)):
        x = jnp.ones((1, height, width, cin), jnp.float32)
        k = jnp.full((3, 3, cin, cout), 0.01, jnp.float32)
        gflop = 2 * height * width * 9 * cin * cout / 1e9
        rows = {
            "f32 conv": (conv, x),
            "bf16 conv": (conv, x.astype(jnp.bfloat16)),
            "bf16 im2col": (im2col, x.astype(jnp.bfloat16)),
            "bf16 tap sum": (tap_sum, x.astype(jnp.bfloat16)),
        }
        cells = []
        for name, (f, xin) in rows.items():
            ms = _median_ms(jax.jit(f), xin, k)
            cells.append(f"{name} {ms:.1f} ms ({gflop / ms * 1e3:.0f} GFLOP/s)")
        print(f"conv {height}x{width}, {cin}->{cout}: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
