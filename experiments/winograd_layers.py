"""Per-layer profile of the 3x3 convolutions: XLA's direct convolution against Winograd F(2x2,3x3) and F(4x4,3x3).

    PYTHONPATH=. python experiments/winograd_layers.py [--arch vgg16] [--size 768x1024] [--rounds 7]

For every distinct 3x3 stride-1 layer shape of the backbone at the image size (DeepGaze II feeds VGG the
image shrunk by 2: 384x512 for 768x1024), times the three implementations at batch 1 in float32 and
bfloat16, interleaved round after round (medians), with the analytic multiply FLOPs of each and the
memory the Winograd transforms write (the transformed input tiles V and the products M, in MB): where
the transforms' traffic exceeds what the fewer multiplications save, the direct convolution wins. The
last column says which of the three is fastest; ``deepgaze_jax.winograd.AUTO_RULES`` is read off it.
Writes ``experiments/results/winograd_layers_<arch>_<size>.{json,md}`` stamped with command, date,
machine and commit (:mod:`deepgaze_jax.provenance`).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepgaze_jax import backbones, provenance, winograd  # noqa: E402

IMPLS = ("xla", "winograd2", "winograd4")


def layer_shapes(arch: str, height: int, width: int) -> list[tuple[str, int, int, int, int]]:
    """``(names, H, W, C_in, C_out)`` of the 3x3 stride-1 layers at an input of ``height x width`` (pools
    floor), one row per distinct shape."""
    shapes: dict[tuple[int, int, int, int], list[str]] = {}
    channels = 3
    for name, kind, args in backbones.ARCHITECTURES[arch]:
        if kind == "conv":
            features, kernel, stride, padding = args
            if (kernel, stride, padding) == (3, 1, 1):
                shapes.setdefault((height, width, channels, features), []).append(name)
            height = (height + 2 * padding - kernel) // stride + 1
            width = (width + 2 * padding - kernel) // stride + 1
            channels = features
        elif kind == "pool":
            window, stride = args
            height = backbones.pool_output_size(height, window, stride, False)
            width = backbones.pool_output_size(width, window, stride, False)
    return [(",".join(names), *shape) for shape, names in shapes.items()]


def _direct(x, kernel, bias):
    out = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return out + bias.astype(x.dtype).reshape(1, 1, 1, -1)


def _function(impl: str, kernel, bias):
    if impl == "xla":
        return jax.jit(lambda x: _direct(x, kernel, bias))
    m = int(impl[-1])
    transformed = winograd.filter_transform(kernel, m)  # once, as for a frozen backbone
    return jax.jit(lambda x: winograd.conv3x3(x, transformed, bias, m))


def traffic_mb(impl: str, height: int, width: int, cin: int, cout: int, itemsize: int) -> float:
    """What the transforms write: V ((m+2)^2, tiles, C_in) in the compute dtype, M ((m+2)^2, tiles,
    C_out) in float32; MB. For XLA: the input and output once."""
    if impl == "xla":
        return (height * width * (cin + cout) * itemsize) / 1e6
    m = int(impl[-1])
    tiles = -(-height // m) * -(-width // m)
    return (m + 2) ** 2 * tiles * (cin * itemsize + cout * 4) / 1e6


def multiply_gflop(impl: str, height: int, width: int, cin: int, cout: int) -> float:
    if impl == "xla":
        return 2 * height * width * 9 * cin * cout / 1e9
    m = int(impl[-1])
    return 2 * (m + 2) ** 2 * -(-height // m) * -(-width // m) * cin * cout / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="vgg16", choices=sorted(backbones.ARCHITECTURES))
    parser.add_argument("--size", default="768x1024", help="image HxW (the backbone sees it shrunk by --downsample)")
    parser.add_argument("--downsample", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    commit = provenance.git_commit()
    height, width = (int(v) for v in args.size.split("x"))
    rows = []
    rng = np.random.default_rng(0)
    for names, h, w, cin, cout in layer_shapes(args.arch, height // args.downsample, width // args.downsample):
        kernel = jnp.asarray(rng.normal(0, (2 / (9 * cin)) ** 0.5, (3, 3, cin, cout)), jnp.float32)
        bias = jnp.zeros((cout,), jnp.float32)
        for dtype in ("float32", "bfloat16"):
            x = jnp.asarray(rng.uniform(0, 1, (1, h, w, cin)), dtype)
            fns = {impl: _function(impl, kernel, bias) for impl in IMPLS}
            reference = np.asarray(fns["xla"](x.astype(jnp.float32)), np.float32) if dtype == "float32" else None
            for f in fns.values():
                jax.block_until_ready(f(x))
            times = {impl: [] for impl in IMPLS}
            load = os.getloadavg()[0]
            for r in range(args.rounds):
                order = IMPLS[r % 3:] + IMPLS[:r % 3]
                for impl in order:
                    start = time.perf_counter()
                    jax.block_until_ready(fns[impl](x))
                    times[impl].append(time.perf_counter() - start)
            row = {"layers": names, "shape": [h, w, cin, cout], "dtype": dtype, "load_before": load,
                   "load_after": os.getloadavg()[0]}
            for impl in IMPLS:
                median = float(np.median(times[impl]))
                row[impl] = {"median_ms": median * 1e3, "times_s": times[impl],
                             "multiply_gflop": multiply_gflop(impl, h, w, cin, cout),
                             "transform_mb": traffic_mb(impl, h, w, cin, cout, jnp.dtype(dtype).itemsize),
                             "gflop_per_s": 2 * h * w * 9 * cin * cout / 1e9 / median}
                if reference is not None and impl != "xla":
                    out = np.asarray(fns[impl](x), np.float32)
                    row[impl]["relative_error"] = float(np.abs(out - reference).max() / np.abs(reference).max())
            row["fastest"] = min(IMPLS, key=lambda i: row[i]["median_ms"])
            rows.append(row)
            print(markdown_row(row), flush=True)
    results = {"arch": args.arch, "image": [height, width], "downsample": args.downsample, "rounds": args.rounds,
               "device": str(jax.devices()[0]), "rows": rows}
    results = provenance.stamped(results, provenance.stamp(provenance.command("experiments/winograd_layers.py", argv),
                                                           commit))
    out = args.out or REPO / "experiments" / "results" / f"winograd_layers_{args.arch}_{args.size}"
    _, md_path = provenance.write_results(out, results, markdown(results), indent=1)
    print(f"wrote {md_path}")
    return 0


HEADER = ("| layers | H x W, C_in -> C_out | dtype | XLA ms | F2 ms | F4 ms | multiply GFLOP XLA / F2 / F4 "
          "| transform writes MB XLA / F2 / F4 | F2 / F4 rel. error (float32) | fastest | load |")


def markdown_row(row: dict) -> str:
    h, w, cin, cout = row["shape"]
    error = " / ".join(f"{row[i]['relative_error']:.1e}" for i in IMPLS[1:]) if "relative_error" in row["winograd2"] else ""
    return (f"| {row['layers']} | {h}x{w}, {cin}->{cout} | {row['dtype']} | "
            + " | ".join(f"{row[i]['median_ms']:.1f}" for i in IMPLS)
            + " | " + " / ".join(f"{row[i]['multiply_gflop']:.2f}" for i in IMPLS)
            + " | " + " / ".join(f"{row[i]['transform_mb']:.0f}" for i in IMPLS)
            + f" | {error} | {row['fastest']} | {row['load_before']:.1f}-{row['load_after']:.1f} |")


def markdown(results: dict) -> str:
    h, w = results["image"]
    lines = [f"# 3x3 convolutions of {results['arch']} at {h}x{w} (backbone input shrunk by {results['downsample']}): "
             "XLA against Winograd", "", provenance.markdown_line(results), "",
             f"Batch 1 on {results['device']}; medians of {results['rounds']} interleaved rounds; load = 1-minute "
             "load average before-after the row.", "", HEADER,
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    lines += [markdown_row(row) for row in results["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
