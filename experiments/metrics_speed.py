"""Speed and agreement of deepgaze_jax's metrics against pysaliency on MIT1003.

All metrics (LL, AUC, sAUC, NSS, AUC-Judd, CC, KLDiv, SIM with their metric-specific maps) for one
model's predictions on the real MIT1003 fixations (rows inside == 1 and initial == 0), ours and
pysaliency's on the same inputs in one run. Results go to ``experiments/results/metrics_speed.{json,md}``.

The predictions are a stand-in until a DeepGaze model is ready: per image, at its true size, a mixture of
a centre-bias Gaussian and a smooth random map (bilinearly upsampled noise), cached as float32 ``.npy``
under ``--cache``. ``--predictions DIR`` uses ``DIR/<image stem>.npy`` log densities instead.

    PYTHONPATH=. python experiments/metrics_speed.py --pysaliency-every 10

pysaliency on all 1003 images takes long on a small CPU: ``--pysaliency-every K`` times both libraries on
every K-th image (taken as a dataset of its own, so sAUC's negatives and the shuffled baseline come from
that subset for both), and ours also on all images.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np
from PIL import Image
from scipy.ndimage import zoom

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402

from deepgaze_jax import evaluation  # noqa: E402
from deepgaze_jax.metrics import KLDIV_EPS  # noqa: E402

NOTES_COMMON = """Both sides read the same float32 `.npy` predictions (as float64) and time that loading separately; both
compute in float64. Ours makes every map once per image in one pass over the dataset (plus a first pass for
the shuffled baseline, as pysaliency's), and computes several batches of images at once on worker threads
(`evaluate(workers=...)`, default: one per core, at most 4), so it uses both cores; numpy and scipy in
pysaliency mostly use one. Our loading runs on the main thread while the workers compute. The runs are
sequential, not interleaved: other jobs on the machine (see the load averages) slow both sides, not
necessarily equally.
"""
NOTES_CACHE_OFF = """
Notes on fairness: pysaliency runs with `caching=False` on the blurred prediction, the empirical
`FixationMap` and the shuffled baseline (cached, they need about 6 MB per image and map, over 12 GB for
MIT1003), so it computes the blurred prediction and the empirical map once per metric (CC, KLDiv, SIM);
`--pysaliency-caching` keeps them in memory, as its default does (a separate results file).
""" + NOTES_COMMON
NOTES_CACHE_ON = """
Notes on fairness: pysaliency keeps its blurred predictions, empirical maps and shuffled baselines in memory
(its default), so CC, KLDiv and SIM share them as our single pass does.
""" + NOTES_COMMON


def load_mit1003(root: pathlib.Path):
    """Image names, sizes (H, W) and flat fixations (x, y, image index) of the conventional set."""
    names = sorted(p.name for p in (root / "STIMULI").iterdir())
    index = {name: n for n, name in enumerate(names)}
    sizes = []
    for name in names:
        with Image.open(root / "STIMULI" / name) as img:
            sizes.append((img.size[1], img.size[0]))
    xs, ys, ns = [], [], []
    with open(root / "fixations.csv") as f:
        for row in csv.DictReader(f):
            if row["inside"] == "1" and row["initial"] == "0":
                xs.append(float(row["x"]))
                ys.append(float(row["y"]))
                ns.append(index[row["image"]])
    return names, sizes, np.array(xs), np.array(ys), np.array(ns)


def stand_in_prediction(n: int, size: tuple[int, int]) -> np.ndarray:
    """Centre-bias Gaussian mixed with a smooth random map, as a float64 log density of ``size``."""
    height, width = size
    rng = np.random.default_rng(n)
    yy, xx = np.mgrid[:height, :width]
    centre = np.exp(-0.5 * (((xx - width / 2) / (0.25 * width)) ** 2 + ((yy - height / 2) / (0.25 * height)) ** 2))
    noise = rng.random((12, 16)) ** 3
    smooth = zoom(noise, (height / 12, width / 16), order=1)[:height, :width]
    smooth = np.pad(smooth, [(0, height - smooth.shape[0]), (0, width - smooth.shape[1])], mode="edge")
    density = 0.5 * centre / centre.sum() + 0.5 * smooth / smooth.sum()
    return np.log(density)


class Loader:
    """Reads the cached predictions as float64 and times itself, so loading can be told apart."""

    def __init__(self, folder: pathlib.Path, names, index_map=None):
        self.folder, self.names, self.index_map = folder, names, index_map
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, n: int) -> np.ndarray:
        start = time.perf_counter()
        k = n if self.index_map is None else self.index_map[n]
        arr = np.load(self.folder / (pathlib.Path(self.names[k]).stem + ".npy")).astype(np.float64)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return arr


def run_pysaliency(get, sizes, xs, ys, ns, sigma, caching=False):
    from tests import pysaliency_reference as ref

    ps = ref.pysaliency
    stimuli = ref.make_stimuli(sizes)
    fixations = ref.make_fixations(xs, ys, ns)
    model = ref.ArrayModel(get)
    density = ps.saliency_map_models.DensitySaliencyMapModel(model)
    blurred = ps.saliency_map_models.BluringSaliencyMapModel(density, sigma, mode="reflect", caching=caching)
    empirical = ps.FixationMap(stimuli, fixations, kernel_size=sigma, caching=caching)
    shuffled = ps.models.ShuffledBaselineModel(model, stimuli, library="numpy", caching=caching)
    sauc_map = ps.models.ShuffledAUCSaliencyMapModel(model, shuffled)
    times, values = {}, {}

    def timed(name, fn):
        start = time.perf_counter()
        values[name] = float(fn())
        times[name] = time.perf_counter() - start

    timed("LL", lambda: model.information_gain(stimuli, fixations))
    timed("AUC", lambda: density.AUC(stimuli, fixations))
    timed("sAUC", lambda: sauc_map.sAUC(stimuli, fixations))
    timed("NSS", lambda: density.NSS(stimuli, fixations))
    timed("AUC_Judd", lambda: density.AUC_Judd(stimuli, fixations, jitter=False))
    timed("CC", lambda: blurred.CC(stimuli, empirical))
    timed(
        "KLDiv",
        lambda: blurred.KLDiv(stimuli, empirical, minimum_value=0, log_regularization=KLDIV_EPS, quotient_regularization=KLDIV_EPS),
    )
    timed("SIM", lambda: blurred.SIM(stimuli, empirical))
    return values, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=REPO.parent / "shared" / "data" / "MIT1003")
    parser.add_argument("--predictions", type=pathlib.Path, default=None, help="folder of <image stem>.npy log densities")
    parser.add_argument("--cache", type=pathlib.Path, default=pathlib.Path("/tmp/deepgaze_jax_metrics_speed"))
    parser.add_argument("--pysaliency-every", type=int, default=1, help="time pysaliency on every K-th image")
    parser.add_argument("--sigma", type=float, default=24.0)
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "experiments" / "results")
    parser.add_argument("--pysaliency-caching", action="store_true", help="let pysaliency cache its maps in memory (~12 MB per image)")
    parser.add_argument("--stem", default="metrics_speed", help="results file name without extension")
    parser.add_argument("--ours-all", action="store_true", help="with --pysaliency-every > 1, also time ours on all images")
    parser.add_argument("--machine", default="2-core CPU dev machine (shared)", help="words naming the machine (machine_note)")
    parser.add_argument("--workers", type=int, default=None, help="our evaluate's worker threads (default: its own)")
    args = parser.parse_args()
    from deepgaze_jax import provenance  # here, not at the top: the results-writing code's own import

    commit = provenance.git_commit()  # the code this run started from

    names, sizes, xs, ys, ns = load_mit1003(args.data)
    folder = args.predictions
    if folder is None:
        folder = args.cache
        folder.mkdir(parents=True, exist_ok=True)
        for n, name in enumerate(names):
            path = folder / (pathlib.Path(name).stem + ".npy")
            if not path.exists():
                np.save(path, stand_in_prediction(n, sizes[n]).astype(np.float32))
    print(f"{len(names)} images, {xs.size} fixations, predictions from {folder}", flush=True)

    workers = evaluation.default_workers() if args.workers is None else args.workers
    report = {"workers": workers, "machine_note": args.machine, "platform": platform.platform(), "cpus": os.cpu_count(), "load_average_start": os.getloadavg(), "sigma": args.sigma, "predictions": str(folder) if args.predictions else "stand-in (centre bias + smooth random map)"}

    subset = np.arange(0, len(names), args.pysaliency_every)
    keep = np.isin(ns, subset)
    remap = np.full(len(names), -1)
    remap[subset] = np.arange(subset.size)
    sub_sizes = [sizes[k] for k in subset]
    sub_xs, sub_ys, sub_ns = xs[keep], ys[keep], remap[ns[keep]]
    sub_names = [names[k] for k in subset]

    # First run: JIT compilation included. Second run: what every further evaluation costs.
    cold_loader = Loader(folder, names, index_map=subset)
    start = time.perf_counter()
    evaluation.evaluate(cold_loader, sub_sizes, sub_xs, sub_ys, sub_ns, sigma=args.sigma, workers=args.workers)
    cold_seconds = time.perf_counter() - start
    print(f"ours, first run (with compilation): {cold_seconds:.1f} s", flush=True)
    ours_loader = Loader(folder, names, index_map=subset)
    start = time.perf_counter()
    ours = evaluation.evaluate(ours_loader, sub_sizes, sub_xs, sub_ys, sub_ns, image_names=sub_names, sigma=args.sigma, model_name="stand-in", workers=args.workers)
    ours_seconds = time.perf_counter() - start
    print(f"ours, second run: {ours_seconds:.1f} s", json.dumps(ours.summary), flush=True)
    if args.pysaliency_every > 1 and args.ours_all:
        loader = Loader(folder, names)
        start = time.perf_counter()
        full = evaluation.evaluate(loader, sizes, xs, ys, ns, image_names=names, sigma=args.sigma, model_name="stand-in", workers=args.workers)
        report["ours_all"] = {"images": len(names), "fixations": int(xs.size), "seconds": time.perf_counter() - start, "loading_seconds": loader.seconds, "summary": full.summary}
        print("ours, all images:", json.dumps(report["ours_all"]), flush=True)

    ps_loader = Loader(folder, names, index_map=subset)
    start = time.perf_counter()
    ps_values, ps_times = run_pysaliency(ps_loader, sub_sizes, sub_xs, sub_ys, sub_ns, args.sigma, caching=args.pysaliency_caching)
    ps_seconds = time.perf_counter() - start
    diffs = {k: abs(ps_values[k] - ours.summary[k]) for k in ps_values}
    report["subset"] = {
        "every": args.pysaliency_every,
        "pysaliency_caching": args.pysaliency_caching,
        "images": int(subset.size),
        "fixations": int(sub_xs.size),
        "ours_first_run_seconds": cold_seconds,
        "ours_seconds": ours_seconds,
        "ours_loading_seconds": ours_loader.seconds,
        "pysaliency_seconds": ps_seconds,
        "pysaliency_loading_seconds": ps_loader.seconds,
        "pysaliency_seconds_per_metric": ps_times,
        "speedup": ps_seconds / ours_seconds,
        "speedup_excluding_loading": (ps_seconds - ps_loader.seconds) / (ours_seconds - ours_loader.seconds),
        "ours": {k: ours.summary[k] for k in ps_values},
        "pysaliency": ps_values,
        "max_abs_difference": max(diffs.values()),
        "abs_difference": diffs,
    }
    print("subset:", json.dumps(report["subset"], indent=1), flush=True)

    report["load_average_end"] = os.getloadavg()
    report = provenance.stamped(report, provenance.stamp(provenance.command("experiments/metrics_speed.py"), commit))
    s = report["subset"]
    subset_label = "all of MIT1003" if s["every"] == 1 else f"every {s['every']}th image of MIT1003"
    lines = [
        "# Metrics speed: deepgaze_jax against pysaliency on MIT1003",
        "",
        provenance.markdown_line(report),
        "",
        f"Machine: {args.machine} ({report['platform']}, {report['cpus']} CPUs; load average {report['load_average_start'][0]:.1f} at the start, "
        f"{report['load_average_end'][0]:.1f} at the end); JAX {jax.__version__} on CPU, float64, {workers} worker thread(s). Predictions: {report['predictions']}.",
        "Metrics: LL, AUC, sAUC, NSS, AUC-Judd (no jitter), CC, KLDiv, SIM (blurred density), each with its metric-specific map,",
        f"empirical maps with sigma {args.sigma:g} px; pysaliency 0.2.22 via its model classes (shuffled baseline with library='numpy'), "
        f"its in-memory caches {'on' if args.pysaliency_caching else 'off'}.",
        "",
        "| run | images | fixations | seconds | of which loading predictions |",
        "| --- | --- | --- | --- | --- |",
        f"| ours, first run (JIT compilation included) | {s['images']} | {s['fixations']} | {s['ours_first_run_seconds']:.1f} | |",
        f"| ours, second run | {s['images']} | {s['fixations']} | {s['ours_seconds']:.1f} | {s['ours_loading_seconds']:.1f} |",
        f"| pysaliency | {s['images']} | {s['fixations']} | {s['pysaliency_seconds']:.1f} | {s['pysaliency_loading_seconds']:.1f} |",
    ]
    if "ours_all" in report:
        a = report["ours_all"]
        lines.append(f"| ours, all images (after the runs above) | {a['images']} | {a['fixations']} | {a['seconds']:.1f} | {a['loading_seconds']:.1f} |")
    lines += [
        "",
        f"**Speed-up: {s['speedup']:.1f}x** against our second run, {s['pysaliency_seconds'] / s['ours_first_run_seconds']:.1f}x against our first run with compilation; "
        f"{s['speedup_excluding_loading']:.1f}x excluding the time both spend loading predictions (images: {subset_label}).",
        f"Largest absolute difference between the two libraries' dataset scores: {s['max_abs_difference']:.2e}.",
        "",
        "| metric | ours | pysaliency | pysaliency seconds |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {k} | {s['ours'][k]:.8f} | {s['pysaliency'][k]:.8f} | {s['pysaliency_seconds_per_metric'][k]:.1f} |" for k in s["ours"]]
    provenance.write_results(args.out / args.stem, report,
                             "\n".join(lines) + "\n" + (NOTES_CACHE_ON if args.pysaliency_caching else NOTES_CACHE_OFF),
                             indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
