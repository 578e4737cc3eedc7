"""Compile and run time of the Winograd convolutions against an earlier commit's ``deepgaze_jax/winograd.py``.

    PYTHONPATH=. python experiments/winograd_compile.py --baseline 8915b6e [--arch vgg19] [--rounds 5]

The baseline module is read from git (``git show COMMIT:deepgaze_jax/winograd.py``) and imported beside
the current one, so both run in one process on the same inputs. For every distinct 3x3 stride-1 layer
shape of the backbone at the image size (DeepGaze II feeds VGG the image shrunk by 2), F(2x2, 3x3) and
F(4x4, 3x3), float32, batch 1: each round compiles each version afresh (a new ``jax.jit``, lowering and
XLA compile timed) and times ``--calls`` calls (their median), versions interleaved with the order
alternating; medians over rounds. Then
the whole backbone with ``conv_impl="auto"`` (the layers ``auto`` gives to Winograd; the rest XLA's
convolution), with ``deepgaze_jax.backbones`` pointed at each version in turn. Every output is compared
with XLA's direct convolution (and the backbone's with ``conv_impl="xla"``): the largest relative
difference is in the table. Writes ``experiments/results/winograd_compile_<arch>.{json,md}`` (``--out``)
stamped with command, date, machine and commit.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepgaze_jax import backbones, model, provenance, winograd  # noqa: E402
from experiments.winograd_layers import layer_shapes  # noqa: E402


def baseline_module(commit: str):
    """``deepgaze_jax/winograd.py`` as it was at ``commit``, imported as its own module."""
    try:
        source = subprocess.run(["git", "show", f"{commit}:deepgaze_jax/winograd.py"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"--baseline {commit}: {e.stderr.strip()}") from None
    path = pathlib.Path(tempfile.mkdtemp()) / "winograd_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("winograd_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _time(fn, *args, calls: int = 1) -> tuple[float, float, jax.Array]:
    """Seconds to lower and compile ``jax.jit(fn)``, the median seconds of ``calls`` calls after a warm-up,
    the output."""
    jax.clear_caches()  # nothing traced or compiled in an earlier round is reused
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return compile_s, float(np.median(times)), out


def _relative(out, reference) -> float:
    """The largest relative max-abs difference over the leaves (arrays, or dicts of layer outputs)."""
    pairs = zip(jax.tree.leaves(out), jax.tree.leaves(reference), strict=True)
    return max(float(np.abs(np.asarray(o, np.float64) - np.asarray(r, np.float64)).max()
                     / np.abs(np.asarray(r, np.float64)).max()) for o, r in pairs)


def _compare(name: str, fns: dict, args: tuple, reference, rounds: int, calls: int) -> dict:
    """``fns``: version -> function of ``args``; medians over ``rounds`` of fresh compiles and of the
    median of ``calls`` calls each."""
    versions = list(fns)
    compile_s = {v: [] for v in versions}
    run_s = {v: [] for v in versions}
    error = {}
    for r in range(rounds):
        for v in (versions if r % 2 == 0 else versions[::-1]):
            c, t, out = _time(fns[v], *args, calls=calls)
            compile_s[v].append(c)
            run_s[v].append(t)
            error[v] = max(error.get(v, 0.0), _relative(out, reference))
    row = {"case": name}
    for v in versions:
        row[v] = {"compile_s": float(np.median(compile_s[v])), "run_ms": float(np.median(run_s[v])) * 1e3,
                  "compile_times_s": compile_s[v], "run_times_s": run_s[v], "relative_error": error[v]}
    print(markdown_row(row), flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the commit whose winograd.py to compare with")
    parser.add_argument("--arch", default="vgg19", choices=sorted(backbones.ARCHITECTURES))
    parser.add_argument("--size", default="768x1024", help="image HxW (the backbone sees it shrunk by --downsample)")
    parser.add_argument("--downsample", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per compile (their median)")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    commit = provenance.git_commit()
    versions = {"baseline": baseline_module(args.baseline), "current": winograd}
    height, width = (int(v) for v in args.size.split("x"))
    h0, w0 = height // args.downsample, width // args.downsample
    rng = np.random.default_rng(0)
    rows = []
    for names, h, w, cin, cout in layer_shapes(args.arch, h0, w0):
        kernel = jnp.asarray(rng.normal(0, (2 / (9 * cin)) ** 0.5, (3, 3, cin, cout)), jnp.float32)
        x = jnp.asarray(rng.uniform(0, 1, (1, h, w, cin)), jnp.float32)
        reference = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                 precision=jax.lax.Precision.HIGHEST)
        for m in winograd.TILES:
            fns = {v: (lambda x, mod=mod, u=mod.filter_transform(kernel, m): mod.conv3x3(x, u, None, m))
                   for v, mod in versions.items()}
            rows.append(_compare(f"{names} {h}x{w}, {cin}->{cout}, F({m}x{m})", fns, (x,), reference,
                                 args.rounds, args.calls))
    # The whole backbone under "auto", as a predictor runs it (filters transformed once, outside the jit).
    names = model.DEEPGAZE2_LAYERS[args.arch] if args.arch in model.DEEPGAZE2_LAYERS else backbones.layer_names(args.arch)
    params = backbones.init_backbone(jax.random.PRNGKey(0), args.arch)
    image = jnp.asarray(rng.uniform(0, 255, (1, h0, w0, 3)), jnp.float32)
    reference = backbones.Backbone(args.arch, tuple(names)).apply({"params": params}, image)
    net = backbones.Backbone(args.arch, tuple(names), conv_impl="auto")
    fns = {}
    for v, mod in versions.items():
        prepared = mod.transform_params(params, args.arch, "auto")

        def run(image, mod=mod, prepared=prepared):
            backbones.winograd = mod  # the module the layers call, read while tracing
            try:
                return net.apply({"params": prepared}, image)
            finally:
                backbones.winograd = winograd
        fns[v] = run
    rows.append(_compare(f"whole {args.arch} backbone, auto, {h0}x{w0}", fns, (image,), reference,
                         args.rounds, args.calls))
    results = {"arch": args.arch, "image": [height, width], "downsample": args.downsample, "rounds": args.rounds,
               "calls": args.calls, "baseline": args.baseline, "device": str(jax.devices()[0]), "rows": rows}
    results = provenance.stamped(results, provenance.stamp(provenance.command("experiments/winograd_compile.py", argv),
                                                           commit))
    out = args.out or REPO / "experiments" / "results" / f"winograd_compile_{args.arch}"
    _, md_path = provenance.write_results(out, results, markdown(results), indent=1)
    print(f"wrote {md_path}")
    return 0


HEADER = ("| case | compile s baseline | compile s current | run ms baseline | run ms current "
          "| rel. difference to direct, baseline / current |")


def markdown_row(row: dict) -> str:
    b, c = row["baseline"], row["current"]
    return (f"| {row['case']} | {b['compile_s']:.2f} | {c['compile_s']:.2f} | {b['run_ms']:.1f} | {c['run_ms']:.1f} "
            f"| {b['relative_error']:.1e} / {c['relative_error']:.1e} |")


def markdown(results: dict) -> str:
    lines = [provenance.markdown_line(results), "",
             f"{results['arch']}, image {results['image'][0]}x{results['image'][1]} (backbone input shrunk by "
             f"{results['downsample']}), batch 1, float32, on {results['device']}; medians over {results['rounds']} "
             f"rounds, each compiling afresh and timing the median of {results['calls']} calls; baseline: "
             f"deepgaze_jax/winograd.py at {results['baseline']}.", "",
             HEADER, "| --- | ---: | ---: | ---: | ---: | --- |"]
    lines += [markdown_row(row) for row in results["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
