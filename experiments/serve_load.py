"""Load test of the web service on loopback: the service before and after batching, side by side.

    python experiments/serve_load.py                       # MIT1003 photographs, old and new service interleaved
    python experiments/serve_load.py --url http://127.0.0.1:8000 --requests 50   # a running service, small JPEGs

Without ``--url`` it starts two services in this process, each on a free port of 127.0.0.1 with the
shipped deepgaze1 predictor (or ``--heads FILE``): the service as it was at ``--baseline-commit`` (its
``deepgaze_jax/serve.py`` read with ``git show``: one request at a time, drawing on the model's thread)
and the current one (batching window ``--batch-window-ms``, ``--max-batch``). Both are compiled for
every image size used before any timing. Rounds alternate which runs first; each configuration gets
``--requests`` requests to ``POST /predict.npy`` and ``--predict-requests`` to ``POST /predict``
(overlay drawn), ``--concurrency`` at a time, of the first ``--images`` MIT1003 photographs in name
order. Then ``--rss-requests`` more to the current service's ``/predict.npy`` sample this process's
resident memory every 100. Writes ``experiments/results/serve_load.json`` and ``.md``, stamped with the
command, date, machine and commit (:mod:`deepgaze_jax.provenance`); ``--machine`` adds words of your own
(``machine_note``: what else ran on the machine, say).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import importlib.util
import io
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

from deepgaze_jax import provenance

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / "experiments" / "results" / "serve_load.json"
IMAGE_SIZE = (96, 128)
#: The commit before batching and the slow-client limits (issue 15).
BASELINE_COMMIT = "45e279c"

Upload = tuple[str, bytes, tuple[int, int]]  # file name, JPEG bytes, (height, width)


def make_images(count: int = 8, size: tuple[int, int] = IMAGE_SIZE, seed: int = 0) -> list[Upload]:
    """``count`` small JPEGs of one size (so the service compiles once)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        small = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(small).resize(size[::-1], Image.BILINEAR).save(buffer, "JPEG", quality=90)
        out.append((f"{i}.jpg", buffer.getvalue(), size))
    return out


def mit1003_images(folder: pathlib.Path, count: int) -> list[Upload]:
    """The first ``count`` photographs of ``folder/STIMULI`` in name order, as their JPEG bytes."""
    paths = sorted((folder / "STIMULI").glob("*.jpeg"))[:count]
    if not paths:
        raise FileNotFoundError(f"no *.jpeg in {folder / 'STIMULI'}")
    out = []
    for path in paths:
        with Image.open(path) as image:
            out.append((path.name, path.read_bytes(), (image.height, image.width)))
    return out


def rss_mib() -> float:
    """Resident memory of this process, MiB (Linux ``/proc/self/statm``)."""
    return int(pathlib.Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(url: str, uploads: list[Upload], requests: int, concurrency: int, endpoint: str = "/predict",
            rss_every: int | None = None) -> dict:
    """POST ``requests`` of ``uploads`` (cycled) to ``url + endpoint``, ``concurrency`` at a time.

    Returns ``latencies_ms`` (per request, send to full answer, in order), ``errors`` (descriptions),
    ``wall_s`` and, with ``rss_every``, ``rss_mib``: ``[requests done, MiB]`` after every that many."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    done, rss, lock = [0], [], threading.Lock()
    with httpx.Client(base_url=url, timeout=120, limits=limits) as client:
        def one(i: int) -> tuple[float, str | None]:
            name, data, shape = uploads[i % len(uploads)]
            start = time.perf_counter()
            try:
                if endpoint == "/predict.npy":
                    answer = client.post(endpoint, content=data, headers={"content-type": "image/jpeg"})
                    ok = answer.status_code == 200 and np.load(io.BytesIO(answer.content)).shape == shape
                else:
                    answer = client.post(endpoint, files={"image": (name, data, "image/jpeg")})
                    ok = answer.status_code == 200 and answer.json()["summary"]["shape"] == list(shape)
                problem = None if ok else f"{name}: {answer.status_code}: {answer.text[:200]}"
            except Exception as e:  # a load test counts every failure, whatever it is
                problem = f"{name}: {type(e).__name__}: {e}"
            elapsed = 1e3 * (time.perf_counter() - start)
            with lock:
                done[0] += 1
                if rss_every and done[0] % rss_every == 0:
                    rss.append([done[0], round(rss_mib(), 1)])
            return elapsed, problem

        wall = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - wall
    out = {"latencies_ms": [ms for ms, _ in results], "errors": [p for _, p in results if p], "wall_s": wall}
    if rss_every:
        out["rss_mib"] = rss
    return out


def figures(latencies_ms: list[float], errors: list[str], wall_s: float) -> dict:
    """Latency percentiles (ms), throughput and error count of one configuration."""
    latencies = np.asarray(latencies_ms)
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p95_ms": round(float(np.percentile(latencies, 95)), 1),
        "max_ms": round(float(latencies.max()), 1),
        "wall_s": round(wall_s, 2),
        "requests_per_s": round(len(latencies) / wall_s, 2),
    }


def run_load(url: str, requests: int = 200, concurrency: int = 8, size: tuple[int, int] = IMAGE_SIZE,
             endpoint: str = "/predict", uploads: list[Upload] | None = None) -> dict:
    """POST ``requests`` images (``uploads``, or small JPEGs of ``size``) to ``url + endpoint``,
    ``concurrency`` at a time; latency figures in milliseconds and the count of failed requests."""
    uploads = uploads or make_images(size=size)
    m = measure(url, uploads, requests, concurrency, endpoint)
    return {"concurrency": concurrency, "endpoint": endpoint, **figures(m["latencies_ms"], m["errors"], m["wall_s"])}


def baseline_module(commit: str):
    """``deepgaze_jax/serve.py`` as it was at ``commit``, imported as a module of its own."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:deepgaze_jax/serve.py"],
                            capture_output=True, text=True, check=True).stdout
    path = pathlib.Path(tempfile.mkdtemp()) / f"serve_at_{commit}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _predictor(heads: str | None):
    from deepgaze_jax.predict import load_predictor

    if heads:
        return load_predictor(path=heads), heads
    return load_predictor("deepgaze1"), "deepgaze1 (shipped: AlexNet, 10 fold readouts, MIT1003 center bias)"


def compare(args: argparse.Namespace) -> dict:
    """Old and new service, interleaved rounds; returns the results document."""
    from deepgaze_jax import serve

    uploads = mit1003_images(args.data, args.images)
    shapes = sorted({shape for _, _, shape in uploads})
    predictor, model = _predictor(args.heads)
    old = baseline_module(args.baseline_commit)
    print(f"{len(uploads)} images, {len(shapes)} sizes; compiling both services ...", flush=True)
    t0 = time.perf_counter()
    old_app = old.create_app(predictor, warmup_shapes=shapes)
    new_app = serve.create_app(predictor, warmup_shapes=shapes, batch_window_ms=args.batch_window_ms,
                               max_batch=args.max_batch)
    compile_s = time.perf_counter() - t0
    runs = [(service, endpoint, count) for endpoint, count in
            (("/predict.npy", args.requests), ("/predict", args.predict_requests)) if count
            for service in ("old", "new")]
    collected = {(s, e): {"latencies_ms": [], "errors": [], "wall_s": 0.0} for s, e, _ in runs}
    busy = {e: 0.0 for _, e, _ in runs}  # the new service's model thread, seconds predicting
    load_before = os.getloadavg()
    with serve.BackgroundServer(old_app) as old_server, serve.BackgroundServer(new_app) as new_server:
        import httpx

        urls = {"old": old_server.url, "new": new_server.url}

        def model_busy_s() -> float:
            return httpx.get(urls["new"] + "/health", timeout=60).json()["model_busy_s"]

        for service, endpoint, _ in runs:  # untimed: connections, threads, first calls
            measure(urls[service], uploads, 2 * args.concurrency, args.concurrency, endpoint)
        for r in range(args.rounds):
            for service, endpoint, count in (runs if r % 2 == 0 else runs[::-1]):
                share = count // args.rounds + (1 if r < count % args.rounds else 0)
                before = model_busy_s()
                m = measure(urls[service], uploads, share, args.concurrency, endpoint)
                if service == "new":
                    busy[endpoint] += model_busy_s() - before
                c = collected[(service, endpoint)]
                c["latencies_ms"] += m["latencies_ms"]
                c["errors"] += m["errors"]
                c["wall_s"] += m["wall_s"]
                print(f"round {r}: {service} {endpoint}: {share} requests in {m['wall_s']:.1f} s, "
                      f"{len(m['errors'])} errors", flush=True)
        batches = httpx.get(urls["new"] + "/health", timeout=60).json()["batches"]  # the last 100
        rss = None
        if args.rss_requests:
            before = round(rss_mib(), 1)
            m = measure(urls["new"], uploads, args.rss_requests, args.concurrency, "/predict.npy", rss_every=100)
            rss = {"requests": args.rss_requests, "endpoint": "/predict.npy", "service": "new",
                   "rss_mib_before": before, "rss_mib_every_100": m["rss_mib"],
                   **{k: v for k, v in figures(m["latencies_ms"], m["errors"], m["wall_s"]).items()
                      if k in ("errors", "first_errors", "p50_ms", "p95_ms", "requests_per_s")}}
    results = {f"{s} {e}": figures(**collected[(s, e)]) for s, e, _ in runs}
    for _, e, _ in runs:
        results[f"new {e}"]["model_busy_fraction"] = round(busy[e] / collected[("new", e)]["wall_s"], 2)
    ratios = {}
    for _, endpoint, _ in runs[::2]:
        o, n = results[f"old {endpoint}"], results[f"new {endpoint}"]
        ratios[endpoint] = {"throughput_new_over_old": round(n["requests_per_s"] / o["requests_per_s"], 2),
                            "p95_old_over_new": round(o["p95_ms"] / n["p95_ms"], 2)}
    sizes = {}
    for _, _, shape in uploads:
        sizes[f"{shape[1]}x{shape[0]}"] = sizes.get(f"{shape[1]}x{shape[0]}", 0) + 1
    return {
        "model": model,
        "images": f"the first {len(uploads)} MIT1003 photographs in name order, cycled, sent as their JPEG "
                  f"bytes (raw body to /predict.npy, multipart to /predict); sizes (width x height: count): {sizes}",
        "concurrency": args.concurrency, "rounds": args.rounds,
        "old": f"deepgaze_jax/serve.py at {args.baseline_commit} (one request at a time; decoding, model, "
               "summary and drawing on one worker thread)",
        "new": f"this commit: batch window {args.batch_window_ms:g} ms, max batch {args.max_batch}; decoding "
               "and encoding on 2 threads, drawing on 1, the model on its own",
        "compile_both_s": round(compile_s, 1),
        "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "results": results, "ratios": ratios,
        "new_last_100_batch_sizes": {str(k): v for k, v in sorted(
            collections.Counter(b["size"] for b in batches).items())},
        "rss": rss,
    }


def markdown(doc: dict) -> str:
    """A short report of :func:`compare`'s document."""
    lines = ["# Web service under load: before and after batching", "", provenance.markdown_line(doc), "",
             f"Machine note: {doc['machine_note']}  ",
             f"Model: {doc['model']}; {doc['concurrency']} concurrent clients on 127.0.0.1, {doc['rounds']} "
             f"interleaved rounds; 1-min load average before/after: {doc['load_average_1min_before_after']}.", "",
             f"- old: {doc['old']}", f"- new: {doc['new']}", f"- images: {doc['images']}", "",
             "| service | endpoint | requests | errors | requests/s | p50 ms | p95 ms | max ms |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, r in doc["results"].items():
        service, endpoint = key.split(" ", 1)
        lines.append(f"| {service} | `{endpoint}` | {r['requests']} | {r['errors']} | {r['requests_per_s']} | "
                     f"{r['p50_ms']} | {r['p95_ms']} | {r['max_ms']} |")
    lines.append("")
    busy = {k.split(" ", 1)[1]: r["model_busy_fraction"] for k, r in doc["results"].items() if "model_busy_fraction" in r}
    lines.append(f"- Share of the new service's wall time its model thread spent predicting: {busy} (near 1: the "
                 "model's compute bounds the throughput).")
    for endpoint, ratio in doc["ratios"].items():
        lines.append(f"- `{endpoint}`: new/old throughput {ratio['throughput_new_over_old']}x, old/new p95 "
                     f"{ratio['p95_old_over_new']}x (above 1: the new service is better).")
    lines.append(f"- Batch sizes of the new service's last 100 batches (size: count): "
                 f"{doc['new_last_100_batch_sizes']}.")
    if doc.get("rss"):
        rss = doc["rss"]
        values = [v for _, v in rss["rss_mib_every_100"]]
        lines.append(f"- Memory: {rss['requests']} more requests to the new `{rss['endpoint']}` ({rss['errors']} "
                     f"errors, {rss['requests_per_s']} requests/s): resident memory of the process (server and "
                     f"client) {rss['rss_mib_before']} MiB before, {min(values)}-{max(values)} MiB at every "
                     f"100th request, {values[-1]} MiB at the end.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running service: a plain load test of it (small JPEGs)")
    parser.add_argument("--endpoint", default="/predict", help="with --url: /predict or /predict.npy")
    parser.add_argument("--heads", help="predictor file for the in-process services")
    data = pathlib.Path(os.environ.get("DEEPGAZE_DATA_DIR", REPO.parent / "shared" / "data")) / "MIT1003"
    parser.add_argument("--data", type=pathlib.Path, default=data, help=f"the MIT1003 folder (default {data})")
    parser.add_argument("--images", type=int, default=48, help="how many MIT1003 photographs to cycle")
    parser.add_argument("--requests", type=int, default=200, help="per service to /predict.npy")
    parser.add_argument("--predict-requests", type=int, default=64, help="per service to /predict (0: none)")
    parser.add_argument("--rss-requests", type=int, default=1000, help="to the new /predict.npy afterwards")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch-window-ms", type=float, default=None, help="default: the service's")
    parser.add_argument("--max-batch", type=int, default=None, help="default: the service's")
    parser.add_argument("--baseline-commit", default=BASELINE_COMMIT)
    parser.add_argument("--machine", default=f"{os.cpu_count()}-core {provenance.cpu_info()['model_name']}",
                        help="words naming the machine, stored with the numbers as machine_note")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args(argv)

    stamp = {**provenance.stamp(provenance.command("experiments/serve_load.py", argv)), "machine_note": args.machine}
    if args.url:
        doc = {**stamp, "url": args.url,
               **run_load(args.url, args.requests, args.concurrency, endpoint=args.endpoint)}
        print(json.dumps(doc, indent=2))
        return 1 if doc["errors"] else 0
    from deepgaze_jax import serve

    args.batch_window_ms = serve.DEFAULT_BATCH_WINDOW_MS if args.batch_window_ms is None else args.batch_window_ms
    args.max_batch = serve.DEFAULT_MAX_BATCH if args.max_batch is None else args.max_batch
    doc = {**stamp, **compare(args)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    errors = sum(r["errors"] for r in doc["results"].values()) + (doc["rss"]["errors"] if doc["rss"] else 0)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
