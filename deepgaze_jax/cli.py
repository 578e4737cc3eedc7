"""The ``deepgaze`` command: ``predict``, ``evaluate``, ``convert``, ``serve``, ``train``.

Exit status: 0 success, 1 a runtime failure (an unreadable image, a missing weights file; with several
images the others are still processed), 2 a usage error (argparse). Expected errors are one line on
stderr, ``deepgaze: error: <what>: <why>``, without a traceback.

Each subcommand is one ``_add_<name>(subparsers)`` function that builds its parser and sets
``func(args) -> int``; add it to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import glob
import os
import pathlib
import sys
from collections.abc import Callable, Iterator, Sequence

#: Shipped predictor names (``deepgaze_jax/assets/<name>.safetensors``).
MODELS = ("deepgaze1", "deepgaze2_vgg16")
TRAINABLE = ("deepgaze1", "deepgaze2_vgg16", "deepgaze2_vgg19", "deepgaze2_vgg16_block4")  # keys of train.MODELS
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
#: Images loaded ahead of prediction at most (bounds memory on large folders).
CHUNK = 64


def error_line(message: object) -> str:
    """``deepgaze: error: <message>`` on one line (newlines and runs of spaces folded)."""
    return f"deepgaze: error: {' '.join(str(message).split())}"


def error(message: object) -> None:
    print(error_line(message), file=sys.stderr)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=MODELS, default="deepgaze1", help="shipped predictor (default: deepgaze1)")
    p.add_argument("--heads", type=pathlib.Path, default=None,
                   help="a predictor file (trained heads + center bias, from save_predictor_heads) used "
                        "instead of the shipped one")
    p.add_argument("--backbone", type=pathlib.Path, default=None,
                   help="backbone weights (.safetensors or torchvision .pth) instead of the bundled ones")


def _load_predictor(args: argparse.Namespace):
    from deepgaze_jax.predict import load_predictor

    try:
        return load_predictor(args.model, args.heads, args.backbone)
    except FileNotFoundError as e:
        if args.heads is None:
            raise FileNotFoundError(f"{e}; pass a predictor file with --heads PATH") from None
        raise


# --- predict ---------------------------------------------------------------------------------------


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict", help="predict fixation densities for images",
        description="Predict where people look: writes <name>.npy (the log density over the image's pixels, "
                    "float32 nats, logsumexp 0, shape (height, width)) and <name>.png (a picture) per image. "
                    "Without an image it predicts matplotlib's sample photograph of Grace Hopper.",
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files, folders (their images) or globs")
    _add_model_options(p)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("deepgaze-predictions"),
                   help="output folder (default: ./deepgaze-predictions)")
    p.add_argument("--batch-size", type=_positive_int, default=4, help="images of one size per batch (default 4)")
    p.add_argument("--no-png", action="store_true", help="write only the .npy files")
    p.set_defaults(func=_predict)


def sample_image() -> pathlib.Path:
    """The photograph matplotlib ships (Grace Hopper, 512x600)."""
    from matplotlib import cbook

    return pathlib.Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def expand_inputs(inputs: Sequence[str]) -> tuple[list[pathlib.Path], list[str]]:
    """Files, folders (their image files, sorted, not recursive) and globs -> (paths, error messages)."""
    paths, problems = [], []
    for item in inputs:
        path = pathlib.Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{item}: folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths.extend(found)
        elif path.exists() or not glob.has_magic(item):
            paths.append(path)  # a missing file is reported when it is read
        else:
            found = sorted(pathlib.Path(p) for p in glob.glob(item) if pathlib.Path(p).is_file())
            if not found:
                problems.append(f"{item}: no files match")
            paths.extend(found)
    return paths, problems


def _output_stems(paths: Sequence[pathlib.Path]) -> list[str]:
    """Output names: the file stem, made unique (``a``, ``a-2``, ...) where two inputs share one."""
    used: set[str] = set()
    stems = []
    for path in paths:
        stem, n = path.stem, 1
        while stem in used:
            n += 1
            stem = f"{path.stem}-{n}"
        used.add(stem)
        stems.append(stem)
    return stems


def _batches(images: dict[int, object], batch_size: int) -> Iterator[list[int]]:
    """Indices of ``images`` in batches of one image size, at most ``batch_size`` each."""
    groups: dict[tuple, list[int]] = {}
    for i, image in images.items():
        groups.setdefault(image.shape, []).append(i)
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            yield indices[start : start + batch_size]


def _predict(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from deepgaze_jax.images import ImageError, load_image

    failures = 0
    if args.images:
        paths, problems = expand_inputs(args.images)
        for problem in problems:
            error(problem)
        failures += len(problems)
    else:
        paths = [sample_image()]
        print(f"no image given: predicting matplotlib's sample photograph {paths[0]}")
    if not paths:
        return 1
    try:
        predictor = _load_predictor(args)
        args.out.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:
        error(e)
        return 1

    stems = _output_stems(paths)
    written = 0
    with tqdm(total=len(paths), unit="image", desc="predicting", disable=None, file=sys.stderr) as bar:
        def fail(message: str, count: int = 1) -> None:
            nonlocal failures
            tqdm.write(error_line(message), file=sys.stderr)  # above the bar, not through it
            failures += count
            bar.update(count)

        # Read a bounded chunk of images at a time (a folder may hold thousands), then batch by size.
        for start in range(0, len(paths), max(CHUNK, args.batch_size)):
            images: dict[int, np.ndarray] = {}
            for i in range(start, min(start + max(CHUNK, args.batch_size), len(paths))):
                try:
                    images[i] = load_image(paths[i])
                except ImageError as e:
                    fail(str(e))
            for batch in _batches(images, args.batch_size):
                try:
                    densities = np.asarray(predictor.log_density(np.stack([images[i] for i in batch])))
                except (ValueError, RuntimeError) as e:  # too small for the backbone; out of memory
                    for i in batch:
                        fail(f"{paths[i]}: {e}")
                    continue
                for i, density in zip(batch, densities):
                    try:
                        outputs = _write_outputs(args, stems[i], paths[i], images[i], density)
                    except OSError as e:
                        fail(f"{paths[i]}: cannot write the outputs ({e})")
                        continue
                    written += 1
                    tqdm.write(f"{paths[i]} -> {', '.join(map(str, outputs))}", file=sys.stdout)
                    bar.update(1)
    print(f"wrote {written} prediction(s) to {args.out}/" + (f"; {failures} failed" if failures else ""))
    return 1 if failures else 0


def _write_outputs(args, stem: str, source: pathlib.Path, image, density) -> list[pathlib.Path]:
    import numpy as np

    from deepgaze_jax import plotting

    npy = args.out / f"{stem}.npy"
    np.save(npy, density.astype(np.float32))
    if args.no_png:
        return [npy]
    png = args.out / f"{stem}.png"
    plotting.save_prediction(png, image, density, title=source.name)
    return [npy, png]


# --- convert ---------------------------------------------------------------------------------------


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", add_help=False, help="convert pretrained weights (see `deepgaze convert --help`)",
                       description="Convert pretrained weights; the arguments of `python -m weights_convert`.")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_convert)


def _convert(args: argparse.Namespace) -> int:
    from weights_convert.cli import main as convert_main

    return convert_main(args.rest, prog="deepgaze convert")


# --- serve -----------------------------------------------------------------------------------------


def _add_serve(sub) -> None:
    from deepgaze_jax import serve

    p = sub.add_parser(
        "serve", help="run the web page and JSON API",
        description="Serve a page where a person uploads an image and sees the prediction, and a JSON API "
                    "(POST /predict, POST /predict.npy, GET /health). Binds to 127.0.0.1 unless told otherwise.",
    )
    _add_model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--max-upload-mb", type=float, default=serve.DEFAULT_MAX_UPLOAD_BYTES / 2**20,
                   help=f"largest request body in MiB (default {serve.DEFAULT_MAX_UPLOAD_BYTES / 2**20:g})")
    p.add_argument("--max-pixels", type=_positive_int, default=serve.DEFAULT_MAX_PIXELS,
                   help=f"largest image in pixels (default {serve.DEFAULT_MAX_PIXELS})")
    p.add_argument("--body-timeout", type=float, default=serve.DEFAULT_BODY_TIMEOUT_S, metavar="SECONDS",
                   help=f"time a client has to send its request body; 408 after it (default "
                        f"{serve.DEFAULT_BODY_TIMEOUT_S:g})")
    p.add_argument("--max-uploads-per-client", type=_positive_int, default=serve.DEFAULT_MAX_UPLOADS_PER_CLIENT,
                   help=f"uploads one client address may send at once; 429 beyond (default "
                        f"{serve.DEFAULT_MAX_UPLOADS_PER_CLIENT})")
    p.add_argument("--max-waiting", type=_positive_int, default=serve.DEFAULT_MAX_WAITING,
                   help=f"received requests in line; 503 beyond (default {serve.DEFAULT_MAX_WAITING})")
    p.add_argument("--max-compiled", type=_positive_int, default=serve.DEFAULT_MAX_COMPILED,
                   help=f"compiled executables kept, one per (batch, height, width), least recently used "
                        f"dropped (default {serve.DEFAULT_MAX_COMPILED})")
    p.add_argument("--batch-window-ms", type=float, default=serve.DEFAULT_BATCH_WINDOW_MS,
                   help=f"how long the first request of a batch waits for others of its image size "
                        f"(default {serve.DEFAULT_BATCH_WINDOW_MS:g})")
    p.add_argument("--max-batch", type=_positive_int, default=serve.DEFAULT_MAX_BATCH,
                   help=f"most images predicted in one call (default {serve.DEFAULT_MAX_BATCH})")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from deepgaze_jax import serve

    try:
        sock = serve.bind(args.host, args.port)  # before the warm-up: a taken port fails at once
    except OSError as e:
        error(f"cannot serve on {args.host}:{args.port} ({e.strerror or e})")
        return 1
    try:
        predictor = _load_predictor(args)
    except (OSError, ValueError) as e:
        sock.close()
        error(e)
        return 1
    name = str(args.heads) if args.heads else args.model
    print(f"compiling {name} (warm-up) ...", flush=True)
    app = serve.create_app(predictor, name=name, max_upload_bytes=int(args.max_upload_mb * 2**20),
                           max_pixels=args.max_pixels, body_timeout_s=args.body_timeout,
                           max_uploads_per_client=args.max_uploads_per_client, max_waiting=args.max_waiting,
                           max_compiled=args.max_compiled, batch_window_ms=args.batch_window_ms,
                           max_batch=args.max_batch)
    port = sock.getsockname()[1]  # --port 0 picks a free one
    print(f"serving on http://{args.host}:{port}/  (Ctrl-C to stop)", flush=True)
    serve.run(app, sock)
    return 0


# --- train -----------------------------------------------------------------------------------------


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train the readout on MIT1003 with cross-validation",
        description="Train DeepGaze readouts by maximum likelihood on MIT1003 (twosize), one model per "
                    "cross-validation fold (fold k tests, k-1 validates), evaluate each on its test images, "
                    "and write the fold models as one predictor file (an ensemble) for `deepgaze predict "
                    "--heads`. An interrupted run resumes from its checkpoints in --cache.",
    )
    p.add_argument("--model", default="deepgaze1", choices=TRAINABLE,
                   help="deepgaze2_vgg16_block4 reads block 4's conv4_3, relu4_3 besides block 5")
    p.add_argument("--config", type=pathlib.Path, help="TrainConfig as JSON (see deepgaze_jax.train.TrainConfig)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value (JSON value), e.g. --set learning_rate=0.002; repeatable")
    p.add_argument("--data", type=pathlib.Path, required=True, help="the MIT1003 folder (STIMULI/, SCANPATHS/)")
    p.add_argument("--folds", default="0-9", help="folds to train: 0-9 (default), 3, or 0,4,7")
    p.add_argument("--backbone", type=pathlib.Path, default=None,
                   help="backbone weights (.safetensors or torchvision .pth); needed for vgg19")
    p.add_argument("--cache", type=pathlib.Path, default=pathlib.Path(".cache"),
                   help="features, tfds data and checkpoints (default ./.cache)")
    p.add_argument("--results", type=pathlib.Path, default=None, help="folder for <model>_crossval.json/.md")
    p.add_argument("--out", type=pathlib.Path, default=None,
                   help="predictor file to write (default <model>.safetensors)")
    p.add_argument("--max-images", type=_positive_int, default=None,
                   help="use only the first N images (a quick trial run)")
    p.add_argument("--seeds", type=_positive_int, default=1,
                   help="train every fold from this many seeds (the config's seed and the next ones) and "
                        "use their ensemble (default 1)")
    multi = p.add_argument_group(
        "multi-process (multi-host) training",
        "Run the same command once per process (e.g. per host), with --cache on a file system all of them "
        "see; the batches are split over the devices of every process.")
    multi.add_argument("--distributed", action="store_true",
                       help="join a multi-process run (jax.distributed.initialize); what the options below "
                            "leave out, JAX detects (SLURM, Open MPI, Cloud TPU, Kubernetes)")
    multi.add_argument("--coordinator", metavar="HOST:PORT",
                       help="address of process 0, which listens there (implies --distributed)")
    multi.add_argument("--num-processes", type=_positive_int, metavar="N", help="processes in the run")
    multi.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1 (0 writes the results)")
    p.set_defaults(func=_train)


def train_config(args: argparse.Namespace):
    """The TrainConfig from --model, --config and --set (each error names the key)."""
    import json

    from deepgaze_jax.train import TrainConfig

    values = {"model": args.model}
    if args.config is not None:
        try:
            values.update(json.loads(args.config.read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"{args.config}: not valid JSON ({e})") from None
    for item in args.overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return TrainConfig.from_dict(values)


def _train(args: argparse.Namespace) -> int:
    if args.distributed or args.coordinator is not None:
        from deepgaze_jax import distributed

        try:  # before anything else uses JAX
            distributed.initialize(args.coordinator, args.num_processes, args.process_id)
        except (RuntimeError, ValueError) as e:
            error(f"cannot join the multi-process run: {e}")
            return 1
    elif args.num_processes is not None or args.process_id is not None:
        error("--num-processes and --process-id need --coordinator HOST:PORT or --distributed")
        return 1
    try:
        config = train_config(args)
        from deepgaze_jax import crossval

        folds = crossval.parse_folds(args.folds)
    except (OSError, ValueError) as e:
        error(e)
        return 1
    if not (args.data / "STIMULI").is_dir() and not (args.data / "MIT1003" / "STIMULI").is_dir():
        error(f"{args.data}: no STIMULI/ folder (expected the MIT1003 folder)")
        return 1
    out = args.out or pathlib.Path(f"{config.model}.safetensors")
    command = "deepgaze " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("deepgaze") else ""
    try:
        results = crossval.run(config, args.data, folds, args.cache, args.results, out, args.backbone, command,
                               args.max_images, args.seeds)
    except (OSError, ValueError) as e:
        error(e)
        return 1
    from deepgaze_jax import distributed

    if distributed.is_main():
        print(crossval.markdown(results))
        print(f"wrote {out}")
    return 0


# --- evaluate --------------------------------------------------------------------------------------


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score a predictor on a fixation dataset with every metric",
        description="Predict every image of a dataset and score the predictions with LL, IG over the "
                    "predictor's center bias, AUC, sAUC, NSS, AUC-Judd, CC, KLDiv and SIM, each on its "
                    "metric-specific map; writes metrics.json (with per-image scores) and metrics.md.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--mit1003", type=pathlib.Path, help="the MIT1003 folder (STIMULI/, SCANPATHS/)")
    source.add_argument("--csv-dataset", type=pathlib.Path,
                        help="a folder with STIMULI/ and fixations.csv (image,subject,x,y,t; 0-based pixels)")
    p.add_argument("--config", default="all", choices=("all", "onesize", "twosize"), help="MIT1003 config")
    _add_model_options(p)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("deepgaze-evaluation"), help="output folder")
    p.add_argument("--cache", type=pathlib.Path, default=pathlib.Path(".cache"), help="tfds data folder")
    p.add_argument("--max-images", type=_positive_int, default=None, help="only the first N images")
    p.add_argument("--sim-map", default="blurred", choices=("blurred", "optimal"),
                   help="map SIM is scored on: the blurred density (default, as CC and KLDiv) or the "
                        "SIM-optimal map of Kuemmerer et al. 2018, optimised per image by 400 steps of "
                        "50 sampled empirical maps each: slow, ~2 CPU-minutes per 768x1024 image (9 min on a "
                        "busy 2-core machine); meant for a GPU")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from deepgaze_jax import data as data_lib
    from deepgaze_jax.evaluation import evaluate

    try:
        predictor = _load_predictor(args)
        if args.mit1003 is not None:
            dataset = data_lib.load_mit1003(args.mit1003, args.config, data_dir=args.cache / "tfds")
        else:
            import re

            name = re.sub(r"\W+", "_", args.csv_dataset.resolve().name.lower()) or "fixations"
            dataset = data_lib.load_fixation_csv(args.csv_dataset, name, data_dir=args.cache / "tfds")
    except (OSError, ValueError) as e:
        error(e)
        return 1
    if args.max_images is not None and args.max_images < len(dataset):
        dataset = dataset.subset(range(args.max_images))
    sizes = [tuple(int(v) for v in size) for size in dataset.sizes]
    f = dataset.fixations
    from tqdm.auto import tqdm

    bar = tqdm(total=2 * len(dataset), desc="predict", disable=not sys.stderr.isatty())

    def prediction(n):  # read twice by evaluate (the shuffled baseline of sAUC needs a first pass)
        bar.update(1)
        return np.asarray(predictor.log_density(dataset.images[n][None])[0])

    name = str(args.heads) if args.heads else args.model
    try:
        result = evaluate(prediction, sizes, f.x, f.y, f.image_index,
                          baseline_log_densities=lambda n: np.asarray(predictor.centerbias(sizes[n])),
                          image_names=list(dataset.image_ids), sim_map=args.sim_map, model_name=name,
                          out_dir=args.out)
    except ValueError as e:
        error(e)
        return 1
    finally:
        bar.close()
    print(result.to_markdown())
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'metrics.md'}")
    return 0


# --- main ------------------------------------------------------------------------------------------

COMMANDS: tuple[Callable, ...] = (_add_predict, _add_evaluate, _add_convert, _add_serve, _add_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepgaze", description="DeepGaze saliency models in JAX: predict where people look.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``deepgaze``; returns the exit status (argparse exits with 2 on usage errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:  # all of its arguments, --help included, belong to the converter
        from weights_convert.cli import main as convert_main

        return convert_main(argv[1:], prog="deepgaze convert")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
