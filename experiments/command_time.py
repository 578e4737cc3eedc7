"""How long a whole ``deepgaze predict`` takes, from process start to the last file written, by backbone
convolution and compilation cache: what a user waits for at the command line.

    PYTHONPATH=. python experiments/command_time.py [--repeats 2] [--images 8]

Runs ``deepgaze predict --no-png`` as a fresh process for each model (``deepgaze1``, ``deepgaze2_vgg16``),
convolution (``--conv-impl xla`` and ``auto``, :mod:`deepgaze_jax.winograd`) and input (the README's one
photograph, 600x512; ``--images`` MIT1003 images of 1024x768), once with an empty compilation cache
("cold": a first run on the machine) and once more with the cache that run filled ("warm": every later
run; :mod:`deepgaze_jax.compile_cache`), configurations interleaved, ``--repeats`` times. Prints and
writes the median wall seconds to ``experiments/results/command_time.{json,md}``, stamped
(:mod:`deepgaze_jax.provenance`).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepgaze_jax import compile_cache, provenance  # noqa: E402

MODELS = ("deepgaze1", "deepgaze2_vgg16")
IMPLS = ("xla", "auto")


def mit1003_images(data: pathlib.Path, count: int) -> list[str]:
    """The first ``count`` MIT1003 stimuli of 1024x768 (landscape), by name."""
    from PIL import Image

    found = []
    for path in sorted((data / "STIMULI").glob("*.jp*g")):
        with Image.open(path) as image:
            if image.size == (1024, 768):
                found.append(str(path))
        if len(found) == count:
            return found
    raise SystemExit(f"{data}: fewer than {count} stimuli of 1024x768")


def run(model: str, impl: str, inputs: list[str], cache: pathlib.Path, out: pathlib.Path) -> float:
    """Wall seconds of one ``deepgaze predict`` process."""
    env = {**os.environ, compile_cache.ENV: str(cache)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    command = [sys.executable, "-m", "deepgaze_jax.cli", "predict", *inputs, "--model", model,
               "--conv-impl", impl, "--no-png", "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=pathlib.Path, default=REPO.parent / "shared" / "data" / "MIT1003")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "experiments" / "results" / "command_time")
    args = parser.parse_args(argv)
    commit = provenance.git_commit()
    inputs = {"the photograph (600x512)": [], f"{args.images} MIT1003 images (1024x768)": mit1003_images(args.data, args.images)}
    times: dict[tuple[str, str, str, str], list[float]] = {}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for repeat in range(args.repeats):
            for model in MODELS:
                for impl in (IMPLS if repeat % 2 == 0 else IMPLS[::-1]):
                    for name, files in inputs.items():
                        cache = tmp / f"cache-{repeat}-{model}-{impl}-{len(files)}"
                        for state in ("cold", "warm"):
                            seconds = run(model, impl, files, cache, tmp / "out")
                            times.setdefault((model, impl, name, state), []).append(seconds)
                            print(f"{model} {impl} {name} {state}: {seconds:.1f} s", flush=True)
                load.append(os.getloadavg()[0])
    rows = [{"model": m, "conv_impl": i, "input": n, "cache": s, "seconds": t, "median": statistics.median(t)}
            for (m, i, n, s), t in times.items()]
    results = {"repeats": args.repeats, "load_average_1min": load, "rows": rows}
    results = provenance.stamped(results, provenance.stamp(provenance.command("experiments/command_time.py", argv), commit))
    median = {(r["model"], r["conv_impl"], r["input"], r["cache"]): r["median"] for r in rows}
    lines = ["# A whole `deepgaze predict`, by convolution and compilation cache", "",
             provenance.markdown_line(results), "",
             f"Wall seconds from process start to the last file written (`--no-png`), median of {args.repeats}; "
             f"cold: an empty compilation cache, warm: the cache the cold run filled; 1-minute load average "
             f"{min(load):.1f}-{max(load):.1f}.", "",
             "| model | input | cache | xla | auto | auto vs xla |", "| --- | --- | --- | ---: | ---: | ---: |"]
    for model in MODELS:
        for name in inputs:
            for state in ("cold", "warm"):
                xla, auto = median[model, "xla", name, state], median[model, "auto", name, state]
                lines.append(f"| {model} | {name} | {state} | {xla:.1f} s | {auto:.1f} s | {xla / auto:.2f}x |")
    provenance.write_results(args.out, results, "\n".join(lines) + "\n", indent=1)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
