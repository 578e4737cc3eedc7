"""Where the time of the backbone goes: each convolution alone, ours (XLA) against PyTorch (oneDNN).

    PYTHONPATH=. python experiments/profile_backbone.py [--model deepgaze1] [--batch 1] [--dtype float32]

For every conv layer of the backbone at the shapes of a 1024x768 image (after DeepGaze's downsampling by
2), it times one ``jax.jit`` convolution (NHWC, HWIO, plus bias and ReLU, as our backbone runs it) and
one ``torch.nn.functional.conv2d`` (channels_last, bias, ReLU; bfloat16 under ``torch.autocast``),
interleaved, minimum and median of ``--repeats``. It also prints what XLA compiled the bfloat16
convolutions to (their operand types and the converts around them): XLA:CPU upcasts bfloat16
convolutions to float32. ``--trace DIR`` writes a ``jax.profiler`` trace of the whole backbone; ``--out``
the per-layer timings as JSON, stamped (command, date, machine, commit: :mod:`deepgaze_jax.provenance`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepgaze_jax import backbones, provenance  # noqa: E402
from deepgaze_jax.model import deepgaze1, deepgaze2  # noqa: E402


def conv_layers(model, height: int, width: int) -> list[dict]:
    """Name, input shape (h, w, cin), kernel, stride, padding and cout of each conv up to the last read layer."""
    h, w, c = height // model.downsample, width // model.downsample, 3
    arch = backbones.ARCHITECTURES[model.backbone]
    last = max(i for i, (name, _, _) in enumerate(arch) if name in model.layers)
    out = []
    for name, kind, args in arch[: last + 1]:
        if kind == "conv":
            cout, k, s, p = args
            out.append({"name": name, "in": (h, w, c), "cout": cout, "k": k, "stride": s, "pad": p})
            h, w, c = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1, cout
        elif kind == "pool":
            window, stride = args
            h = backbones.pool_output_size(h, window, stride, model.ceil_mode)
            w = backbones.pool_output_size(w, window, stride, model.ceil_mode)
    return out


def time_pair(fns: dict, repeats: int) -> dict:
    for fn in fns.values():
        fn()
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: {"min_ms": 1e3 * min(v), "median_ms": 1e3 * statistics.median(v)} for k, v in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("deepgaze1", "deepgaze2_vgg19"), default="deepgaze1")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--size", default="768x1024")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--trace", type=pathlib.Path, default=None)
    parser.add_argument("--out", type=pathlib.Path, default=None, help="JSON of the per-layer timings")
    args = parser.parse_args(argv)
    commit = provenance.git_commit()  # the code this run started from
    height, width = (int(v) for v in args.size.split("x"))
    model = deepgaze1() if args.model == "deepgaze1" else deepgaze2("vgg19")
    model = dataclasses.replace(model, dtype=args.dtype)
    jdt = jnp.dtype(args.dtype)
    rng = np.random.RandomState(0)
    rows = []
    print(f"{args.model} batch {args.batch} {args.dtype}, threads: torch {torch.get_num_threads()}")
    print(f"{'layer':8} {'input':>16} {'GFLOP':>7} {'ours min/med ms':>17} {'torch min/med ms':>17} "
          f"{'ours GFLOP/s':>12} {'torch GFLOP/s':>13}")
    for layer in conv_layers(model, height, width):
        h, w, c = layer["in"]
        k, s, p, cout = layer["k"], layer["stride"], layer["pad"], layer["cout"]
        x = rng.standard_normal((args.batch, h, w, c)).astype(np.float32)
        kernel = (rng.standard_normal((k, k, c, cout)) / np.sqrt(k * k * c)).astype(np.float32)
        bias = np.zeros(cout, np.float32)

        @jax.jit
        def ours(x, kernel, bias):
            y = jax.lax.conv_general_dilated(x.astype(jdt), kernel.astype(jdt), (s, s), ((p, p), (p, p)),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return jax.nn.relu(y + bias.astype(jdt))

        jx, jk, jb = (jax.device_put(a) for a in (x, kernel, bias))
        tx = torch.from_numpy(x).permute(0, 3, 1, 2)  # NHWC memory: channels_last
        tk = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()).contiguous(memory_format=torch.channels_last)
        tb = torch.from_numpy(bias)
        autocast = args.dtype == "bfloat16"

        def theirs():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return F.relu(F.conv2d(tx, tk, tb, stride=s, padding=p))

        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        flops = 2 * k * k * c * cout * ho * wo * args.batch
        t = time_pair({"ours": lambda: ours(jx, jk, jb).block_until_ready(), "torch": theirs}, args.repeats)
        rows.append({**layer, "gflop": flops / 1e9, **{f"{k}_{m}": v[m] for k, v in t.items() for m in v}})
        print(f"{layer['name']:8} {str(layer['in']):>16} {flops / 1e9:7.2f} "
              f"{t['ours']['min_ms']:8.1f}/{t['ours']['median_ms']:<8.1f} "
              f"{t['torch']['min_ms']:8.1f}/{t['torch']['median_ms']:<8.1f}"
              f" {flops / t['ours']['min_ms'] / 1e6:12.1f} {flops / t['torch']['min_ms'] / 1e6:13.1f}", flush=True)
    total = {k: sum(r[f"{k}_min_ms"] for r in rows) for k in ("ours", "torch")}
    print(f"sum of minima: ours {total['ours']:.1f} ms, torch {total['torch']:.1f} ms")

    params = model.init(jax.random.PRNGKey(0))["backbone"]
    images = jax.ShapeDtypeStruct((args.batch, height, width, 3), jnp.float32)
    hlo = jax.jit(model.features).lower(params, images).compile().as_text()
    convs = [line.strip() for line in hlo.splitlines() if " convolution(" in line]
    operand_types = sorted({m.group(1) for c in convs if (m := re.search(r"= (\w+)\[[^\]]*\]\S* convolution\(", c))})
    converts = sum(" convert(" in line for line in hlo.splitlines())
    print(f"compiled backbone ({args.dtype}): {len(convs)} convolutions with result types {operand_types}, "
          f"{converts} convert ops")
    if args.trace is not None:
        fn = jax.jit(model.features)
        data = np.random.RandomState(1).uniform(0, 255, (args.batch, height, width, 3)).astype(np.float32)
        fn(params, data).block_until_ready()
        with jax.profiler.trace(str(args.trace)):
            for _ in range(3):
                fn(params, data).block_until_ready()
        print(f"jax.profiler trace in {args.trace}")
    if args.out is not None:
        stamp = provenance.stamp(provenance.command("experiments/profile_backbone.py", argv), commit)
        args.out.write_text(json.dumps({**stamp, "args": {k: str(v) for k, v in vars(args).items()}, "layers": rows,
                                        "sum_min_ms": total, "hlo_conv_types": operand_types,
                                        "hlo_converts": converts}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
