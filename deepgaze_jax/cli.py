"""The ``deepgaze`` command: ``predict``, ``scanpath``, ``evaluate``, ``convert``, ``serve``, ``train``,
``baselines``, ``info``, ``export-benchmark``.

Exit status: 0 success, 1 a runtime failure (an unreadable image, a missing weights file; with several
images the others are still processed), 2 a usage error (argparse). Expected errors are one line on
stderr, ``deepgaze: error: <what>: <why>``, without a traceback.

Each subcommand is one ``_add_<name>(subparsers)`` function that builds its parser and sets
``func(args) -> int``; add it to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import glob
import logging
import pathlib
import sys
from collections.abc import Callable, Iterator, Sequence

from deepgaze_jax import registry

#: Shipped predictor names (``deepgaze_jax/assets/<name>.safetensors``) and trainable models, from the registry.
MODELS = registry.SHIPPED
TRAINABLE = registry.TRAINABLE
#: The scanpath model ``deepgaze scanpath`` uses without ``--heads`` (``deepgaze_jax/assets/<name>.safetensors``).
SCANPATH_MODEL = registry.SCANPATH[0]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
#: Images, and pixels, read ahead of prediction at most (bounds memory on large folders and images).
CHUNK = 64
CHUNK_PIXELS = 128_000_000


def printable(text: object) -> str:
    """``str(text)`` safe to print and draw: the undecodable bytes of a file name (the surrogate
    escapes ``os.fsdecode`` makes of them) are shown as ``\\xff``, other lone surrogates as ``\\udxxx``."""
    text = str(text)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_line(message: object) -> str:
    """``deepgaze: error: <message>`` on one line (newlines and runs of spaces folded)."""
    return f"deepgaze: error: {' '.join(printable(message).split())}"


def error(message: object) -> None:
    print(error_line(message), file=sys.stderr)


#: Warnings of tensorflow-datasets (through absl) that tell a user of the command nothing: it decodes
#: images with Pillow where OpenCV is missing, and a CSV dataset is a "custom" configuration by design.
QUIET_WARNINGS = ("OpenCV is not installed", "Using custom data configuration")


class _QuietFilter(logging.Filter):
    """Drops log records whose message starts with one of :data:`QUIET_WARNINGS`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(QUIET_WARNINGS)


_QUIET = _QuietFilter()


def quiet_data_loading() -> None:
    """Silence tensorflow-datasets' chatter on the data-loading paths (idempotent): the absl warnings
    of :data:`QUIET_WARNINGS` and its progress bars (escape codes in logs and one-line errors). Other
    warnings and errors still print."""
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    absl_logging.get_absl_logger().addFilter(_QUIET)  # the same filter object is added once
    tfds.disable_progress_bar()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got {text}")
    return value


def _add_model_options(p: argparse.ArgumentParser, scanpath: bool = False) -> None:
    """``--model``, ``--heads``, ``--backbone``, ``--centerbias``; a scanpath command (``scanpath``) has
    no ``--model``: its one model is the shipped :data:`SCANPATH_MODEL` or ``--heads``."""
    if scanpath:
        p.add_argument("--heads", type=pathlib.Path, default=None,
                       help=f"a DeepGaze III predictor file (trained heads + center bias, from "
                            f"save_predictor_heads); default: the shipped {SCANPATH_MODEL} where it ships")
    else:
        p.add_argument("--model", choices=MODELS, default="deepgaze1", help="shipped predictor (default: deepgaze1)")
        p.add_argument("--heads", type=pathlib.Path, default=None,
                       help="a predictor file (trained heads + center bias, from save_predictor_heads) used "
                            "instead of the shipped one; a DeepGaze III (scanpath) file predicts the first "
                            "fixation, or the next one after --history where the command has it")
    p.add_argument("--backbone", type=pathlib.Path, default=None,
                   help="backbone weights (.safetensors or torchvision .pth) instead of the bundled ones")
    p.add_argument("--centerbias", default=None, metavar="mit1003|osie|uniform|FILE",
                   help="the prior over image positions: a shipped one (mit1003, osie), uniform, a center-bias "
                        "file from `deepgaze baselines` (.safetensors) or a log density (.npy, any size, "
                        "stretched to the image); default: the one stored with the heads (MIT1003's for the "
                        "shipped predictors)")
    p.add_argument("--conv-impl", default=None, choices=("xla", "winograd2", "winograd4", "auto"),
                   help="how the backbone convolves: xla (the default), auto (Winograd F(4x4,3x3) where it measured "
                        "faster on this platform, XLA elsewhere: 1.2-1.4x faster per image, but slower to "
                        "compile, so worth it from about 8 images of one size with DeepGaze II once the "
                        "compilation cache holds the model; see experiments/BENCHMARKS.md), or Winograd "
                        "F(2x2,3x3) / F(4x4,3x3) for every 3x3 layer")


def _load_predictor(args: argparse.Namespace, kind: str | None = "static"):
    """The predictor the options name. ``kind``: ``"static"``, ``"scanpath"`` or None (either); a file
    of the other kind raises :class:`~deepgaze_jax.predict.ModelKindError` (a usage error, exit 2)."""
    from deepgaze_jax.predict import load_predictor

    name = getattr(args, "model", SCANPATH_MODEL)
    try:
        return load_predictor(name, args.heads, args.backbone, args.centerbias, kind=kind,
                              conv_impl=getattr(args, "conv_impl", None))
    except FileNotFoundError as e:
        if args.heads is None and kind == "scanpath":
            raise FileNotFoundError(f"no DeepGaze III scanpath model ships yet (no {name}.safetensors in "
                                    f"deepgaze_jax/assets); pass a DeepGaze III predictor file with --heads PATH") from None
        if args.heads is None:
            raise FileNotFoundError(f"{e}; pass a predictor file with --heads PATH") from None
        raise


def _model_name(args: argparse.Namespace) -> str:
    return str(args.heads) if args.heads else getattr(args, "model", SCANPATH_MODEL)


def parse_points(text: str, option: str):
    """``"x1,y1,x2,y2,..."`` -> ``(n, 2)`` float64 pixels; ValueError naming ``option`` for anything but
    an even count of numbers (NaN and infinities pass: the caller's checks name them)."""
    import numpy as np

    parts = [part.strip() for part in text.split(",")] if text.strip() else []
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"{option} {text!r}: not a comma-separated list of numbers x1,y1,x2,y2,...") from None
    if len(values) % 2:
        raise ValueError(f"{option} {text!r}: {len(values)} numbers; expected x,y pairs (an even count)")
    return np.asarray(values, np.float64).reshape(-1, 2)


# --- predict ---------------------------------------------------------------------------------------


def _add_predict(sub) -> None:
    from deepgaze_jax.images import MAX_PIXELS

    p = sub.add_parser(
        "predict", help="predict fixation densities for images",
        description="Predict where people look: writes <name>.npy (the log density over the image's pixels, "
                    "float32 nats, logsumexp 0, shape (height, width)) and <name>.png (a picture) per image. "
                    "Without an image it predicts matplotlib's sample photograph of Grace Hopper. "
                    f"Images of more than --max-pixels pixels (default {MAX_PIXELS:,}; 8000x8000 passes) are "
                    "refused. Memory grows with the pixels of a batch: deepgaze1 peaked at 1.9 GiB resident "
                    "for one 8000x8000 image (about 30 bytes per pixel; 16-30 s on a busy 2-core CPU), "
                    "deepgaze2_vgg16's VGG-16 needs about 3.5 GiB more at that size. At most 64 images or "
                    "128 megapixels are read ahead; pictures of images with a side over 2048 pixels are "
                    "drawn shrunk.",
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files, folders (their images) or globs")
    _add_model_options(p)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("deepgaze-predictions"),
                   help="output folder (default: ./deepgaze-predictions); <name>.npy and <name>.png "
                        "there from an earlier run are replaced, an input file never is: an image whose "
                        "output would replace an input (itself or a link to it) fails with a message")
    p.add_argument("--batch-size", type=_positive_int, default=4, help="images of one size per batch (default 4)")
    p.add_argument("--no-png", action="store_true", help="write only the .npy files")
    p.add_argument("--max-pixels", type=_positive_int, default=MAX_PIXELS,
                   help=f"refuse images of more pixels than this, before decoding them (default {MAX_PIXELS})")
    p.add_argument("--history", default=None, metavar="X1,Y1,X2,Y2,...",
                   help="with a DeepGaze III scanpath model (--heads): the fixations made so far, oldest first, "
                        "in pixels of each image (0-based; at most as many as the model reads, 4 for "
                        "DeepGaze III); predicts the density of the next fixation. Without it a scanpath "
                        "model predicts the first fixation")
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
            try:
                found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            except OSError as e:
                problems.append(f"{item}: cannot list the folder ({e.strerror or e})")
                continue
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


def _inputs_and_out(args: argparse.Namespace, doing: str) -> tuple[list[pathlib.Path] | None, int]:
    """The image files ``args.images`` name (matplotlib's sample photograph without any), each problem
    reported on a line of its own and counted; ``(None, failures)`` where nothing is left to do or
    ``--out`` is a file."""
    failures = 0
    if args.images:
        paths, problems = expand_inputs(args.images)
        for problem in problems:
            error(problem)
        failures += len(problems)
    else:
        paths = [sample_image()]
        print(f"no image given: {doing} matplotlib's sample photograph {paths[0]}")
    if not paths:
        return None, failures
    if args.out.exists() and not args.out.is_dir():
        error(f"--out {args.out}: is a file, not a folder; give a folder for the outputs")
        return None, failures
    return paths, failures


def _output_stems(paths: Sequence[pathlib.Path]) -> list[str]:
    """Output names: the file stem, made unique (``a``, ``a-2``, ...) where two inputs share one."""
    used: set[str] = set()
    stems = []
    for path in paths:
        stem, n = path.stem, 1
        while stem.casefold() in used:  # a.jpg and A.png would share a file on macOS and Windows
            n += 1
            stem = f"{path.stem}-{n}"
        used.add(stem.casefold())
        stems.append(stem)
    return stems


def _batches(images: dict[int, object], batch_size: int) -> Iterator[list[int]]:
    """Keys of ``images`` in batches of one image size, at most ``batch_size`` each."""
    from deepgaze_jax.images import batches_by_size

    keys = list(images)
    for batch in batches_by_size([images[k].shape for k in keys], batch_size):
        yield [keys[j] for j in batch]


def _predict(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from deepgaze_jax.images import load_image

    from deepgaze_jax import predict
    from deepgaze_jax.deepgaze3 import check_history

    points = None
    if args.history is not None:
        try:
            points = parse_points(args.history, "--history")
            check_history(points, (np.inf, np.inf), len(points))  # NaN and infinities, before any loading
        except ValueError as e:
            error(e if str(e).startswith("--history") else f"--history {args.history!r}: {e}")
            return 2
    bad_history = 0
    paths, failures = _inputs_and_out(args, "predicting")
    if paths is None:
        return 1
    try:
        predictor = _load_predictor(args, kind=None)
        args.out.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:
        error(e)
        return 1
    if points is not None:
        if not isinstance(predictor, predict.ScanpathPredictor):
            error(f"--history needs a scanpath model (DeepGaze III, from --heads FILE); {_model_name(args)} holds "
                  f"{predict.describe(predictor.model)}")
            return 2
        if len(points) > predictor.history:
            error(f"--history {args.history!r}: {len(points)} fixations; {_model_name(args)} reads at most "
                  f"{predictor.history}")
            return 2

    inputs = _file_ids(paths)
    stems = _output_stems(paths)
    written = 0
    with tqdm(total=len(paths), unit="image", desc="predicting", disable=None, file=sys.stderr) as bar:
        def fail(path: pathlib.Path, e: Exception) -> None:
            nonlocal failures
            text = str(e)  # an ImageError names the file already
            message = text if text.startswith(str(path)) else f"{path}: {_describe(e)}"
            tqdm.write(error_line(message), file=sys.stderr)  # above the bar, not through it
            failures += 1
            bar.update(1)

        def histories(batch: list[int]) -> tuple[list[int], np.ndarray | None]:
            """The images of ``batch`` inside which --history lies, and their ``(B, K, 2)`` histories."""
            nonlocal bad_history
            if points is None:
                return batch, None
            kept, out = [], []
            for i in batch:
                try:
                    out.append(check_history(points, images[i].shape[:2], predictor.history))
                    kept.append(i)
                except ValueError as e:
                    bad_history += 1
                    fail(paths[i], ValueError(f"--history: {e}"))
            return kept, np.stack(out) if out else None

        def predict_chunk(images: dict[int, np.ndarray]) -> None:
            nonlocal written
            for batch in _batches(images, args.batch_size):
                batch, history = histories(batch)
                if not batch:
                    continue
                try:
                    stacked = np.stack([images[i] for i in batch])
                    densities = np.asarray(predictor.log_density(stacked) if history is None
                                           else predictor.log_density(stacked, history))
                except Exception as e:  # too small for the backbone; out of memory
                    for i in batch:
                        fail(paths[i], e)
                    continue
                for i, density in zip(batch, densities):
                    try:
                        outputs = _write_outputs(args, stems[i], paths[i], images[i], density, inputs, points)
                    except Exception as e:
                        fail(paths[i], e)
                        continue
                    written += 1
                    tqdm.write(printable(f"{paths[i]} -> {', '.join(map(str, outputs))}"), file=sys.stdout)
                    bar.update(1)
                for i in batch:
                    del images[i]  # free a batch's images as soon as they are written

        # Read a bounded chunk of images at a time (a folder may hold thousands, or huge ones), then
        # batch by size. Any failure of one image (reading, predicting, drawing, writing) is reported
        # and the run goes on.
        images: dict[int, np.ndarray] = {}
        pixels = 0
        for i, path in enumerate(paths):
            try:
                images[i] = load_image(path, max_pixels=args.max_pixels)
                pixels += images[i].shape[0] * images[i].shape[1]
            except Exception as e:
                fail(path, e)
            if len(images) >= max(CHUNK, args.batch_size) or pixels >= CHUNK_PIXELS or i == len(paths) - 1:
                predict_chunk(images)
                images, pixels = {}, 0
    print(printable(f"wrote {written} prediction(s) to {args.out}/" + (f"; {failures} failed" if failures else "")))
    return 2 if bad_history else 1 if failures else 0


def _describe(e: BaseException) -> str:
    """One line for an exception: its message, with the type for errors that are not ours."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    if isinstance(e, MemoryError):
        return "out of memory"
    return str(e) if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: {e}"


def _file_ids(paths: Sequence[pathlib.Path]) -> set[tuple[int, int]]:
    """``(device, inode)`` of each existing input: the identity ``os.path.samefile`` compares, which
    sees through symlinks, hard links and case-insensitive file names."""
    ids = set()
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        ids.add((st.st_dev, st.st_ino))
    return ids


def _check_not_an_input(path: pathlib.Path, inputs: set[tuple[int, int]]) -> None:
    try:
        st = path.stat()
    except OSError:
        return  # nothing there yet (or a dangling link), so no input to lose
    if (st.st_dev, st.st_ino) in inputs:
        raise FileExistsError(f"output {path} would replace an input image; not written (choose another --out)")


def _write_outputs(args, stem: str, source: pathlib.Path, image, density,
                   inputs: set[tuple[int, int]], history=None) -> list[pathlib.Path]:
    """Write ``<stem>.npy`` (and the ``.png``, with the ``(n, 2)`` ``history`` fixations drawn where
    given): outputs of an earlier run are replaced, an input never."""
    import numpy as np

    from deepgaze_jax import plotting

    outputs = [args.out / f"{stem}.npy"] + ([] if args.no_png else [args.out / f"{stem}.png"])
    for path in outputs:
        _check_not_an_input(path, inputs)
    # The picture is drawn before anything is written, so a drawing failure leaves no half result.
    # Fixations at x in [j, j + 1) are drawn on pixel j, which matplotlib centres on j.
    xs, ys = (None, None) if history is None else (history[:, 0] - 0.5, history[:, 1] - 0.5)
    title = source.name if history is None else f"{source.name}: the next fixation after {len(history)}"
    png = None if args.no_png else plotting.prediction_png(image, density, xs, ys, title=title)
    np.save(outputs[0], density.astype(np.float32, copy=False))
    if png is not None:
        outputs[1].write_bytes(png)
    return outputs

# --- scanpath --------------------------------------------------------------------------------------


def _add_scanpath(sub) -> None:
    from deepgaze_jax.images import MAX_PIXELS

    p = sub.add_parser(
        "scanpath", help="sample scanpaths (sequences of fixations) from a DeepGaze III model",
        description="Sample scanpaths from a DeepGaze III scanpath model: the first fixation from the model's "
                    "density for the image (or --start), each next one from the density of the next fixation "
                    "given the scanpath so far (the model reads the last 4). Writes <name>_scanpaths.json "
                    "(every scanpath's (x, y) pixel coordinates, 0-based, with the seed, the model and the "
                    "image size) and <name>_scanpaths.png (the first 10 drawn over the image, fixations "
                    "numbered and joined by arrows) per image. The same --seed gives the same scanpaths. "
                    "Without an image it uses matplotlib's sample photograph of Grace Hopper.",
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files, folders (their images) or globs")
    p.add_argument("--n", type=_positive_int, default=10, help="scanpaths per image (default 10)")
    p.add_argument("--length", type=_positive_int, default=8, help="fixations per scanpath (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed, 0..4294967295 (default 0)")
    p.add_argument("--start", default=None, metavar="X,Y",
                   help="the first fixation of every scanpath, pixels of the image (default: drawn from the "
                        "model's density)")
    _add_model_options(p, scanpath=True)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("deepgaze-scanpaths"),
                   help="output folder (default: ./deepgaze-scanpaths); files there from an earlier run are "
                        "replaced, an input file never is")
    p.add_argument("--max-pixels", type=_positive_int, default=MAX_PIXELS,
                   help=f"refuse images of more pixels than this, before decoding them (default {MAX_PIXELS})")
    p.set_defaults(func=_scanpath)


def _scanpath(args: argparse.Namespace) -> int:
    import math

    from deepgaze_jax.images import load_image
    from deepgaze_jax.predict import ModelKindError
    from deepgaze_jax.sampling import MAX_SEED

    start = None
    try:
        if args.start is not None:
            start = parse_points(args.start, "--start")
            if start.shape != (1, 2):
                raise ValueError(f"--start {args.start!r}: expected one fixation X,Y, got {len(start)}")
            start = tuple(float(v) for v in start[0])
            if not all(math.isfinite(v) for v in start):
                raise ValueError(f"--start {args.start!r}: not a finite position")
        if not 0 <= args.seed <= MAX_SEED:
            raise ValueError(f"--seed {args.seed}: must lie in 0..{MAX_SEED}")
    except ValueError as e:
        error(e)
        return 2
    usage = 0
    paths, failures = _inputs_and_out(args, "sampling on")
    if paths is None:
        return 1
    try:
        predictor = _load_predictor(args, kind="scanpath")
        args.out.mkdir(parents=True, exist_ok=True)
    except ModelKindError as e:
        error(f"{e}; deepgaze scanpath needs a DeepGaze III predictor file (--heads)")
        return 2
    except (OSError, ValueError) as e:
        error(e)
        return 1
    inputs = _file_ids(paths)
    written = 0
    for path, stem in zip(paths, _output_stems(paths)):
        try:
            image = load_image(path, max_pixels=args.max_pixels)
            height, width = image.shape[:2]
            if start is not None and not (0 <= start[0] < width and 0 <= start[1] < height):
                usage += 1
                raise ValueError(f"--start {args.start!r} lies outside the {width}x{height} image "
                                 f"(0 <= x < {width}, 0 <= y < {height})")
            outputs = _write_scanpaths(args, predictor, stem, path, image, start, inputs)
        except Exception as e:
            text = str(e)  # an ImageError names the file already
            error(text if text.startswith(str(path)) else f"{path}: {_describe(e)}")
            failures += 1
            continue
        written += 1
        print(printable(f"{path} -> {', '.join(map(str, outputs))}"))
    print(printable(f"wrote {written} scanpath file(s) to {args.out}/" + (f"; {failures} failed" if failures else "")))
    return 2 if usage else 1 if failures else 0


def _write_scanpaths(args, predictor, stem: str, source: pathlib.Path, image, start,
                     inputs: set[tuple[int, int]]) -> list[pathlib.Path]:
    """Sample ``args.n`` scanpaths on ``image`` and write ``<stem>_scanpaths.json`` and ``.png``."""
    import json

    import numpy as np

    from deepgaze_jax import plotting
    from deepgaze_jax.sampling import sample_scanpaths

    outputs = [args.out / f"{stem}_scanpaths.json", args.out / f"{stem}_scanpaths.png"]
    for path in outputs:
        _check_not_an_input(path, inputs)
    paths = sample_scanpaths(predictor, predictor.features(image), args.n, args.length, args.seed, start)
    height, width = image.shape[:2]
    doc = {
        "image": printable(source), "width": width, "height": height, "model": printable(_model_name(args)),
        "members": predictor.members, "history": predictor.history,
        "centerbias": args.centerbias or "stored with the heads", "seed": args.seed, "n": args.n,
        "length": args.length, "start": list(start) if start is not None else None,
        "coordinates": "(x, y) pixels of the image, 0-based: pixel j covers [j, j + 1); scanpaths[i][t] is "
                       "fixation t of scanpath i",
        # float32 values as their shortest decimal, which reads back as the same float32
        "scanpaths": [[[float(str(v)) for v in point] for point in path] for path in paths.astype(np.float32)],
    }
    png = plotting.scanpath_png(image, paths, title=f"{source.name}, seed {args.seed}")  # before writing
    outputs[0].write_text(json.dumps(doc) + "\n", encoding="utf-8")
    outputs[1].write_bytes(png)
    return outputs


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
    p.add_argument("--body-timeout", type=_positive_seconds, default=serve.DEFAULT_BODY_TIMEOUT_S,
                   metavar="SECONDS", help=f"time a client has to send its request body; 408 after it (default "
                                           f"{serve.DEFAULT_BODY_TIMEOUT_S:g})")
    p.add_argument("--header-timeout", type=_positive_seconds, default=serve.DEFAULT_HEADER_TIMEOUT_S,
                   metavar="SECONDS", help=f"time a connection has to send its request line and headers, from "
                                           f"its start or the previous answer; 408 and closed after it "
                                           f"(default {serve.DEFAULT_HEADER_TIMEOUT_S:g})")
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
    from deepgaze_jax.predict import ModelKindError

    try:
        predictor = _load_predictor(args)
    except (OSError, ValueError) as e:
        sock.close()
        error(f"{e}; deepgaze serve serves static models" if isinstance(e, ModelKindError) else e)
        return 2 if isinstance(e, ModelKindError) else 1
    name = str(args.heads) if args.heads else args.model
    print(f"compiling {name} (warm-up) ...", flush=True)
    app = serve.create_app(predictor, name=name, max_upload_bytes=int(args.max_upload_mb * 2**20),
                           max_pixels=args.max_pixels, body_timeout_s=args.body_timeout,
                           header_timeout_s=args.header_timeout,
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
        "train", help="train the readout on MIT1003 (or any dataset, with more data) with cross-validation",
        description="Train DeepGaze readouts by maximum likelihood on MIT1003 (twosize), one model per "
                    "cross-validation fold (fold k tests, k-1 validates), evaluate each on its test images, "
                    "and write the fold models as one predictor file (an ensemble) for `deepgaze predict "
                    "--heads`. An interrupted run resumes from its checkpoints in --cache.",
    )
    p.add_argument("--model", default="deepgaze1", choices=TRAINABLE,
                   help="deepgaze2_vgg16_block4 reads block 4's conv4_3, relu4_3 besides block 5; "
                        "deepgaze2_vgg16_iie has the DeepGaze IIE / III readout (layer norm, 8-16-1, softplus)")
    p.add_argument("--config", type=pathlib.Path, help="TrainConfig as JSON (see deepgaze_jax.config.TrainConfig)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value (JSON value), e.g. --set learning_rate=0.002; repeatable")
    p.add_argument("--data", type=pathlib.Path, required=True,
                   help="the dataset whose folds are trained and tested: the MIT1003 folder (STIMULI/, "
                        "SCANPATHS/; images resized to 1024x768 / 768x1024) or a folder with STIMULI/ and "
                        "fixations.csv (images at their own sizes)")
    p.add_argument("--extra-data", type=pathlib.Path, action="append", default=[], metavar="FOLDER",
                   help="another dataset (same forms as --data) whose every image is a training image, with "
                        "its own center bias; repeatable. Its images are never tested on")
    p.add_argument("--recipe", choices=("joint", "pretrain"), default="joint",
                   help="with --extra-data: train each fold on its training images and the extra data together "
                        "(joint, default; the config's weighting and source_weights weigh them), or pre-train "
                        "one readout on the extra data and continue from it on each fold (pretrain)")
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

    from deepgaze_jax.config import TrainConfig

    values = {"model": args.model}
    if args.config is not None:
        try:
            loaded = json.loads(args.config.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{args.config}: not valid JSON ({e})") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{args.config}: not UTF-8 text, so not JSON ({e.reason} at byte {e.start})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a JSON object of TrainConfig fields, got {type(loaded).__name__}")
        values.update(loaded)
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
    quiet_data_loading()
    try:
        config = train_config(args)
        from deepgaze_jax import crossval

        folds = crossval.parse_folds(args.folds)
    except (OSError, ValueError) as e:
        error(e)
        return 1
    for folder in [args.data, *args.extra_data]:
        if not (folder / "STIMULI").is_dir() and not (folder / "MIT1003" / "STIMULI").is_dir():
            error(f"{folder}: no STIMULI/ folder (expected the MIT1003 folder or a CSV dataset)")
            return 1
    out = args.out or pathlib.Path(f"{config.model}.safetensors")
    command = "deepgaze " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("deepgaze") else ""
    try:
        results = crossval.run(config, args.data, folds, args.cache, args.results, out, args.backbone, command,
                               args.max_images, args.seeds, args.extra_data, args.recipe)
    except (OSError, ValueError, FloatingPointError) as e:
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
    p.add_argument("--cache", type=pathlib.Path, default=pathlib.Path(".cache"),
                   help="folder for the dataset as built once by tensorflow-datasets, in CACHE/tfds "
                        "(default ./.cache, as `deepgaze train`)")
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

    from deepgaze_jax.predict import ScanpathPredictor

    quiet_data_loading()
    try:
        predictor = _load_predictor(args, kind=None)
    except (OSError, ValueError) as e:
        error(e)
        return 1
    scanpath = isinstance(predictor, ScanpathPredictor)
    try:
        if args.mit1003 is not None:
            dataset = data_lib.load_mit1003(args.mit1003, args.config, data_dir=args.cache / "tfds",
                                            filter_conventional=not scanpath)
        else:
            import re

            name = re.sub(r"\W+", "_", args.csv_dataset.resolve().name.lower()) or "fixations"
            dataset = data_lib.load_fixation_csv(args.csv_dataset, name, data_dir=args.cache / "tfds",
                                                 filter_conventional=not scanpath)
        if args.max_images is not None and args.max_images < len(dataset):
            dataset = dataset.subset(range(args.max_images))
        if scanpath:
            return _evaluate_scanpaths(args, predictor, dataset)
    except (OSError, ValueError) as e:
        error(e)
        return 1
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


def _evaluate_scanpaths(args: argparse.Namespace, predictor, unfiltered) -> int:
    """``deepgaze evaluate`` for a scanpath model: every conventional fixation scored on the density given
    its history (the scanpath's previous fixations, the forced start included)."""
    from tqdm.auto import tqdm

    from deepgaze_jax import scanpath_evaluation
    from deepgaze_jax.data.scanpaths import with_histories

    scan = with_histories(unfiltered, predictor.history)
    bar = tqdm(total=len(scan.dataset), desc="scanpaths", disable=not sys.stderr.isatty())
    per_image = scanpath_evaluation.evaluate_scanpaths(predictor, scan, progress=lambda i: bar.update(1))
    bar.close()
    name = str(args.heads) if args.heads else args.model
    result = scanpath_evaluation.write(args.out, name, per_image, scan.dataset.image_ids,
                                       command="deepgaze " + " ".join(sys.argv[1:]))
    print(scanpath_evaluation.markdown(result))
    print(f"wrote {args.out / 'scanpath_metrics.json'} and {args.out / 'scanpath_metrics.md'}")
    return 0


# --- baselines -------------------------------------------------------------------------------------


def _add_baselines(sub) -> None:
    p = sub.add_parser(
        "baselines", help="fit a center bias to your own fixations (for --centerbias)",
        description="Fit the center bias (a kernel density of the fixations in image-normalised coordinates, "
                    "mixed with uniform; bandwidth and weight by leave-one-image-out likelihood) to a fixation "
                    "dataset and write it as a file that `--centerbias FILE` reads. Prints its "
                    "leave-one-image-out log-likelihood.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--mit1003", type=pathlib.Path, help="a FixaTons folder (STIMULI/, SCANPATHS/)")
    source.add_argument("--csv", type=pathlib.Path,
                        help="a fixation CSV (image,subject,x,y,t; 0-based pixels), with --stimuli")
    p.add_argument("--stimuli", type=pathlib.Path, help="the folder of the images the CSV names")
    p.add_argument("--one-based", action="store_true", help="the CSV's coordinates are 1-based (MATLAB)")
    p.add_argument("--out", type=pathlib.Path, required=True, help="the center-bias file to write (.safetensors)")
    p.add_argument("--cache", type=pathlib.Path, default=pathlib.Path(".cache"),
                   help="folder for MIT1003 as built once by tensorflow-datasets, in CACHE/tfds "
                        "(default ./.cache, as `deepgaze train`)")
    p.set_defaults(func=_baselines)


def _baselines(args: argparse.Namespace) -> int:
    from deepgaze_jax import centerbias
    from deepgaze_jax import data as data_lib
    from deepgaze_jax.baselines import CenterBias

    if args.out.suffix != ".safetensors":
        error(f"--out {args.out}: a center-bias file ends in .safetensors")
        return 2
    if args.out.is_dir():
        error(f"--out {args.out}: is a folder; name the file to write")
        return 2
    quiet_data_loading()
    try:
        if args.mit1003 is not None:
            dataset = data_lib.load_mit1003(args.mit1003, "twosize", data_dir=args.cache / "tfds")  # as training
            source = str(args.mit1003)
        else:
            if args.stimuli is None:
                error("--csv needs --stimuli, the folder of the images it names")
                return 2
            raw = data_lib.read_fixation_csv(args.stimuli, args.csv, one_based=args.one_based)
            dataset = data_lib.from_raw(raw)
            source = str(args.csv)
        if len(dataset.fixations) == 0:
            raise ValueError(f"{source}: no fixations left after filtering ({dataset.filter_report})")
        fitted = CenterBias.fit(dataset)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        centerbias.save(args.out, fitted, {"fitted_on": source, "images": str(len(dataset)),
                                           "fixations": str(len(dataset.fixations))})
    except (OSError, ValueError) as e:
        error(e)
        return 1
    print(f"center bias of {len(dataset)} images, {len(dataset.fixations)} fixations"
          + (f" ({dataset.filter_report})" if dataset.filter_report else "")
          + f": bandwidth {fitted.bandwidth:.4f} of the image size, uniform weight {fitted.uniform_weight:.3g}, "
          f"leave-one-image-out log-likelihood {fitted.train_log_likelihood:.4f} bits/fixation over uniform")
    print(f"wrote {args.out}; use it with --centerbias {args.out}")
    return 0


# --- info ----------------------------------------------------------------------------------------


def _add_info(sub) -> None:
    p = sub.add_parser(
        "info", help="what a predictor is: its model card (training data, command, commit, metrics, licence)",
        description="Print the model card stored in a predictor file: what it was trained on and how (command, "
                    "commit), its cross-validated metrics on test images, its licence and the backbone's "
                    "provenance. A file without a card shows its metadata.",
    )
    p.add_argument("model", nargs="?", default=None,
                   help=f"a shipped predictor ({', '.join(MODELS + registry.SCANPATH)}) or a predictor file; "
                        "default: every shipped one")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    p.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    import json

    from deepgaze_jax import model_card
    from deepgaze_jax.predict import ASSETS

    names = [args.model] if args.model is not None else [*MODELS, *registry.SCANPATH]
    cards = []
    for name in names:
        path = pathlib.Path(name)
        if not path.suffix and not path.exists():
            path = ASSETS / f"{name}.safetensors"
            if not path.is_file():
                error(f"{name}: neither a predictor file nor a shipped predictor "
                      f"({', '.join(MODELS + registry.SCANPATH)})")
                return 2
        try:
            card, metadata = model_card.read(path)
        except (OSError, ValueError) as e:
            error(e)
            return 1
        if args.json:
            cards.append({"file": str(path), "model_card": json.loads(card.to_json()) if card else None,
                          "members": metadata.get("members")})
        else:
            print(model_card.render(card, metadata, str(path)))
    if args.json:
        print(json.dumps(cards if args.model is None else cards[0], indent=1, ensure_ascii=False))
    return 0


# --- export-benchmark ------------------------------------------------------------------------------


def _add_export_benchmark(sub) -> None:
    from deepgaze_jax.benchmark_export import MAPS
    from deepgaze_jax.images import MAX_PIXELS

    p = sub.add_parser(
        "export-benchmark", help="write a submission for the MIT/Tuebingen Saliency Benchmark",
        description="Predict every image of STIMULI_DIR and write what the MIT/Tuebingen Saliency Benchmark "
                    "(saliency.tuebingen.ai) reads of a probabilistic model: OUT/log_density/<stem>.npy (the "
                    "log density, float32 nats, logsumexp 0, the stimulus' stored shape), one folder of "
                    "metric-specific saliency maps per metric (OUT/AUC, NSS, sAUC, CC, KLDiv, SIM; Kuemmerer et "
                    "al. 2018) and OUT/manifest.json (model, settings, stimuli, sha256 of every file). Files of "
                    "the folder that are not images (by suffix) are skipped and listed. A second run resumes: "
                    "files that verify are kept, missing or damaged ones rewritten.",
    )
    p.add_argument("stimuli", type=pathlib.Path, metavar="STIMULI_DIR", help="the folder of stimuli (not recursive)")
    _add_model_options(p)
    p.add_argument("--out", type=pathlib.Path, required=True, help="the export folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an export of another model or other settings in --out (its folders and "
                        "manifest only)")
    p.add_argument("--sigma", type=float, default=24.0,
                   help="Gaussian of the CC, KLDiv and SIM maps in pixels (default 24, the benchmark's for MIT300)")
    p.add_argument("--blur-mode", default="constant", choices=("constant", "reflect", "nearest", "mirror", "wrap"),
                   help="boundary rule of that blur (default constant: zero padding, as the benchmark)")
    p.add_argument("--sim-map", default="blurred", choices=("blurred", "optimal"),
                   help="SIM/ holds the blurred density (default, as CC) or the map of highest expected SIM "
                        "(as the benchmark computes it; about 2 CPU-minutes per 768x1024 image, meant for a GPU)")
    p.add_argument("--sim-fixations", type=_positive_int, default=100,
                   help="fixations per sampled empirical map of --sim-map optimal (default 100, as the "
                        "benchmark for MIT1003; it uses 260 for MIT300)")
    p.add_argument("--maps", type=_benchmark_maps, default=MAPS, metavar="all|none|AUC,NSS,...",
                   help=f"the map folders to write, of {','.join(MAPS)} (default all; none: the log densities "
                        "alone, the probabilistic submission; each folder costs 4 bytes per pixel per stimulus, "
                        "about 3 MB for a 1024x768 image)")
    p.add_argument("--batch-size", type=_positive_int, default=4, help="images of one size per batch (default 4)")
    p.add_argument("--max-pixels", type=_positive_int, default=MAX_PIXELS,
                   help=f"refuse images of more pixels than this (default {MAX_PIXELS})")
    p.set_defaults(func=_export_benchmark)


def _benchmark_maps(text: str) -> tuple[str, ...]:
    from deepgaze_jax.benchmark_export import MAPS

    if text in ("all", "none"):
        return MAPS if text == "all" else ()
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MAPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected all, none or a comma-separated list of {','.join(MAPS)}")
    return tuple(names)


def _export_benchmark(args: argparse.Namespace) -> int:
    from deepgaze_jax import benchmark_export

    command = "deepgaze " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("deepgaze") else None
    try:
        settings = benchmark_export.ExportSettings(args.sigma, args.blur_mode, args.sim_map, args.sim_fixations,
                                                   maps=args.maps)
        # The export loads the predictor itself (after refusing a folder of another model), unless an
        # option only the command's loader knows is given.
        predictor = _load_predictor(args) if getattr(args, "conv_impl", None) is not None else None
        summary = benchmark_export.export_benchmark(
            args.stimuli, args.out, model=args.model, heads=args.heads, backbone=args.backbone,
            centerbias=args.centerbias, settings=settings, batch_size=args.batch_size, overwrite=args.overwrite,
            max_pixels=args.max_pixels, progress=True, command=command, predictor=predictor)
    except (OSError, ValueError) as e:  # bad input (ExportError, a predictor of the other kind): 2; a missing file: 1
        error(e)
        return 1 if isinstance(e, OSError) else 2
    for line in summary.failed:
        error(line)
    print(printable(summary.report()))
    return 0 if summary.complete else 1


# --- main ------------------------------------------------------------------------------------------

COMMANDS: tuple[Callable, ...] = (_add_predict, _add_scanpath, _add_evaluate, _add_convert, _add_serve, _add_train, _add_baselines,
                                 _add_info, _add_export_benchmark)


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
    from deepgaze_jax import compile_cache

    compile_cache.enable()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
