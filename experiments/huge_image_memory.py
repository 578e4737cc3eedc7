"""Peak memory and time of `deepgaze predict` on one huge image (64 megapixels: the default pixel limit).

    python experiments/huge_image_memory.py [--side 8000] [--model deepgaze1] [--no-png]

Writes a smooth random ``side x side`` JPEG (it compresses like a photograph) to a temporary folder, runs
``deepgaze predict`` on it in a child process and prints the child's peak resident set size
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``, as ``/usr/bin/time -v`` reports it) and its wall time,
under the run's stamp (command, date, machine, commit: :mod:`deepgaze_jax.provenance`).
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deepgaze_jax import provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--model", default="deepgaze1")
    parser.add_argument("--no-png", action="store_true")
    args = parser.parse_args()
    commit = provenance.git_commit()  # the code this run started from
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / f"huge{args.side}.jpg"
        small = np.random.default_rng(0).integers(0, 256, (args.side // 50, args.side // 50, 3), np.uint8)
        Image.fromarray(small).resize((args.side, args.side), Image.BILINEAR).save(image, quality=85)
        command = [sys.executable, "-m", "deepgaze_jax.cli", "predict", str(image), "--model", args.model,
                   "--out", str(Path(folder) / "out")] + (["--no-png"] if args.no_png else [])
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kB on Linux
    print(provenance.markdown_line(provenance.stamp(provenance.command("experiments/huge_image_memory.py"), commit)))
    print(f"{args.side}x{args.side} {args.model}{' --no-png' if args.no_png else ''}: "
          f"peak RSS {peak_gb:.2f} GB, {seconds:.1f} s")


if __name__ == "__main__":
    main()
