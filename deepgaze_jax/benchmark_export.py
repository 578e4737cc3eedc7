"""Export a predictor's predictions for the MIT/Tübingen Saliency Benchmark (saliency.tuebingen.ai).

The benchmark (Kümmerer, Wallis & Bethge, "Saliency Benchmarking Made Easy: Separating Models, Maps
and Metrics", ECCV 2018) scores a *probabilistic* model from its log densities, and derives for each
metric the saliency map the model itself expects to score best on it. Its evaluation code,
github.com/matthias-k/saliency-benchmarking (``evaluate.py``: ``load_probabilistic_model``,
``load_saliency_map_model``; ``saliency_benchmarking/saliency_map_provider.py``;
``export_saliency_maps.py``), reads a submission with pysaliency:

* a probabilistic model as a folder of one file per stimulus, named by the stimulus file's stem
  (``pysaliency.ModelFromDirectory``: ``.npy``, ``.mat`` or image files, matched by relative path
  without extension; each must have logsumexp within 0.001 of 0), or the same files in a zip/tar
  archive (``ModelFromArchive``), or an HDF5 file (``HDF5Model``, written by
  ``pysaliency.export_model_to_hdf5``);
* a saliency map model as a folder of one map per stimulus, same naming
  (``SaliencyMapModelFromDirectory``).

Its ``export_saliency_maps.py`` writes the metric-specific maps of a probabilistic model as one
folder per metric (``AUC``, ``sAUC``, ``NSS``, ``IG``, ``CC``, ``KLDiv``, ``SIM``), one map per
stimulus stem. This module writes that layout under ``OUT``::

    OUT/manifest.json         what is where: model, settings, stimuli, sha256 of every file
    OUT/log_density/<stem>.npy  the probabilistic submission: (H, W) float32 log density, nats
    OUT/AUC/<stem>.npy ... OUT/SIM/<stem>.npy   the metric-specific maps, (H, W) float32

The layout follows that code and saliency.tuebingen.ai/evaluation.html; the site's submission page
was not available to us. Choices where they leave room: the maps are ``.npy`` float32, not the 8-bit
PNGs of ``export_saliency_maps.py`` (a PNG quantises a density to 256 levels, which changes KLDiv and
ties AUC; pysaliency reads ``.npy`` as well); the AUC and sAUC maps are not rank-equalised as there
(``EqualizedSaliencyMapModel``; AUC depends on ranks only, so the scores are the same); the log
density folder serves IG and LL (scored on the log density itself), so there is no ``IG`` folder of
densities; the SIM map is by default the blurred density (the benchmark's ``SIMSaliencyMapModel``
optimum is ``sim_map="optimal"``, slow on a CPU); no HDF5 file (h5py is not a dependency; zip
``log_density/`` for an archive submission). Stimuli are read as stored (no EXIF rotation:
pysaliency's ``FileStimuli`` reads them with imageio, which does not rotate), so every map has the
stored pixel grid's shape.

The maps are those of :mod:`deepgaze_jax.metric_maps` with the benchmark's parameters
(``saliency_map_provider.py``): sigma 24 px, and CC/KLDiv blurred with zero padding (``mode='constant'``).
``ExportSettings.maps`` selects the map folders (each costs 4 bytes per pixel per stimulus).

Two passes: the first predicts each stimulus once (the backbone runs once per image) and writes its
log density and the maps that need only it; the second reads the saved log densities back to build
sAUC's leave-one-out shuffled baseline (:class:`metric_maps.ShuffledBaseline`) and writes the sAUC maps.
Resumable: files that exist and verify (``.npy`` header, shape, dtype and size; sha256 where the
manifest has it) are kept; a missing, truncated or corrupt one is rewritten and reported. Writes are
atomic (a temporary file in the same folder, then a rename).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import shutil
import sys
from collections.abc import Sequence
from typing import Literal

import numpy as np

from deepgaze_jax import atomic_write, provenance  # metric_maps and metrics (jax) load when used: `deepgaze --help` stays quick
from deepgaze_jax.images import MAX_PIXELS, ImageError, batches_by_size, load_image

MANIFEST = "manifest.json"
FORMAT = "deepgaze-jax benchmark export 1"
LOG_DENSITY = "log_density"
#: Image file suffixes read from the stimuli folder (those of ``deepgaze predict``); other files are skipped.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"})
SimMap = Literal["blurred", "optimal"]
#: Each output folder -> (the metrics it serves, what each file holds).
FOLDERS: dict[str, tuple[tuple[str, ...], str]] = {
    LOG_DENSITY: (("IG", "LL"), "log density log p, nats, logsumexp 0 (the probabilistic submission; "
                                "pysaliency ModelFromDirectory)"),
    "AUC": (("AUC",), "density p = exp(log p) (metric_maps.density_map); AUC depends on its ranks only"),
    "NSS": (("NSS",), "density p = exp(log p) (metric_maps.density_map)"),
    "sAUC": (("sAUC",), "log p - log p_shuffled, p_shuffled the average density of the other stimuli "
                        "(metric_maps.sauc_map, metric_maps.ShuffledBaseline)"),
    "CC": (("CC",), "density blurred with a Gaussian of sigma px (metric_maps.blurred_density_map)"),
    "KLDiv": (("KLDiv",), "density blurred with a Gaussian of sigma px (metric_maps.blurred_density_map)"),
    "SIM": (("SIM",), "sim_map 'blurred': the blurred density, as CC; 'optimal': the map of highest "
                      "expected SIM (metric_maps.sim_saliency_map)"),
}
#: The metric-specific map folders, in the order written; those of the first pass need only the
#: stimulus' own log density, sAUC (second pass) the log densities of all stimuli.
MAPS = ("AUC", "NSS", "sAUC", "CC", "KLDiv", "SIM")
PER_IMAGE = ("AUC", "NSS", "CC", "KLDiv", "SIM")
DTYPE = np.dtype(np.float32)


class ExportError(ValueError):
    """Bad input to an export (stimuli folder, ``out``, an export of another model there); one line."""


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """How the metric-specific maps are made; recorded in the manifest, and a resumed export must match.

    Attributes:
      sigma: the Gaussian of the CC, KLDiv (and SIM) maps, pixels; 24 as the benchmark for MIT300.
      blur_mode: boundary rule of that blur (scipy's names); 'constant' (zero padding) as the benchmark.
      sim_map: 'blurred' (the CC map; fast) or 'optimal' (metric_maps.sim_saliency_map, as the
        benchmark's SIMSaliencyMapModel; ~2 CPU-minutes per 768x1024 image).
      sim_fixations, sim_epochs, sim_seed: the optimal SIM map's empirical maps (fixations per map;
        the benchmark uses 100 on MIT1003, 260 on MIT300), epochs of 1000 maps, and seed.
      shuffled_compute_size: the grid the shuffled baseline averages on, (H, W), as pysaliency.
      maps: the map folders to write (any of :data:`MAPS`, default all); the log densities are always
        written. ``()`` writes the probabilistic submission alone.
    """

    sigma: float = 24.0
    blur_mode: str = "constant"
    sim_map: SimMap = "blurred"
    sim_fixations: int = 100
    sim_epochs: int = 20
    sim_seed: int = 0
    shuffled_compute_size: tuple[int, int] = (500, 500)  # metric_maps.DEFAULT_COMPUTE_SIZE, pysaliency's
    maps: tuple[str, ...] = MAPS

    def __post_init__(self):
        from deepgaze_jax import metrics

        unknown = [m for m in self.maps if m not in MAPS]
        if unknown:
            raise ExportError(f"maps {', '.join(map(str, unknown))}: not among {', '.join(MAPS)}")
        object.__setattr__(self, "maps", tuple(m for m in MAPS if m in self.maps))  # one order, no repeats
        if not (0 < self.sigma < float("inf")):
            raise ExportError(f"sigma {self.sigma}: must be a positive number of pixels")
        if self.blur_mode not in metrics.BLUR_MODES:
            raise ExportError(f"blur_mode {self.blur_mode!r}: not one of {sorted(metrics.BLUR_MODES)}")
        if self.sim_map not in ("blurred", "optimal"):
            raise ExportError(f"sim_map {self.sim_map!r}: not 'blurred' or 'optimal'")
        if min(self.sim_fixations, self.sim_epochs) < 1:
            raise ExportError(f"sim_fixations {self.sim_fixations}, sim_epochs {self.sim_epochs}: must be positive")

    def to_dict(self) -> dict:
        fields = dataclasses.asdict(self)
        fields["shuffled_compute_size"] = [int(s) for s in self.shuffled_compute_size]
        fields["maps"] = list(self.maps)
        if self.sim_map == "blurred" or "SIM" not in self.maps:  # unused: a change of them changes no file
            for key in ("sim_fixations", "sim_epochs", "sim_seed"):
                fields.pop(key)
        return fields


@dataclasses.dataclass(frozen=True)
class Stimulus:
    """One stimulus file: its path, output stem, stored ``(H, W)`` and the file's sha256."""

    path: pathlib.Path
    stem: str
    shape: tuple[int, int]
    sha256: str

    def to_dict(self) -> dict:
        return {"file": self.path.name, "shape": list(self.shape), "sha256": self.sha256}


@dataclasses.dataclass
class ExportSummary:
    """What an export did. Paths are relative to ``out``.

    Attributes:
      out: the export folder.
      stimuli: the stimuli exported, in file-name order.
      written: files written by this run (new or rewritten).
      kept: files found valid and kept.
      replaced: ``(file, why)`` for each existing file that did not verify and was rewritten.
      removed: files of stimuli no longer in the folder, deleted.
      skipped: files of the stimuli folder that are not images (by suffix), not exported.
      failed: one line per stimulus that could not be read or predicted (its files are missing).
      notes: anything else the user should know (e.g. no sAUC maps for one stimulus).
    """

    out: pathlib.Path
    stimuli: list[Stimulus]
    written: list[str] = dataclasses.field(default_factory=list)
    kept: list[str] = dataclasses.field(default_factory=list)
    replaced: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failed

    def report(self) -> str:
        """A few lines for the user."""
        lines = [f"{self.out}: {len(self.stimuli)} stimuli; wrote {len(self.written)} file(s), kept "
                 f"{len(self.kept)}" + (f", rewrote {len(self.replaced)} that did not verify" if self.replaced else "")
                 + (f", removed {len(self.removed)} of stimuli no longer there" if self.removed else "")]
        lines += [f"rewrote {name}: {why}" for name, why in self.replaced]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s) that are not images: {', '.join(self.skipped)}")
        lines += self.notes
        if self.failed:
            lines.append(f"incomplete: {len(self.failed)} of the stimuli failed; run again once they are fixed")
        return "\n".join(lines)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: The size at which the center bias is fingerprinted (any fixed size tells two center biases apart).
_CENTERBIAS_PROBE = (97, 131)


def predictor_identity(predictor, name: str, heads_file: str | os.PathLike,
                       backbone: str | os.PathLike | None = None, centerbias: str | None = None) -> dict:
    """The manifest's ``model``: what the predictions come from. ``heads_sha256`` (the predictor file),
    ``backbone_sha256`` (its parameters, :func:`deepgaze_jax.feature_cache.params_digest`) and ``centerbias_sha256`` (its log
    density at 97x131, float32) identify it; the other fields say it in words."""
    from deepgaze_jax import winograd
    from deepgaze_jax.feature_cache import params_digest
    from deepgaze_jax.predict import describe

    cb = np.ascontiguousarray(np.asarray(predictor.centerbias(_CENTERBIAS_PROBE), np.float32))
    return {
        "name": name,
        "description": describe(predictor.model),
        "heads_file": str(heads_file),
        "heads_sha256": sha256_file(heads_file),
        "backbone": str(backbone) if backbone is not None else f"bundled {predictor.model.backbone}",
        "backbone_sha256": params_digest(predictor.backbone),  # with Winograd's transformed kernels, if any
        "conv_impl": winograd.describe(predictor.model.conv_impl, predictor.model.dtype),
        "centerbias": str(centerbias) if centerbias is not None else "stored with the heads",
        "centerbias_sha256": hashlib.sha256(cb.tobytes()).hexdigest(),
        "code_commit": provenance.git_commit(),
    }


IDENTITY_KEYS = ("heads_sha256", "backbone_sha256", "centerbias_sha256")


def list_stimuli(stimuli_dir: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> tuple[list[Stimulus], list[str], list[str]]:
    """The image files of a folder (sorted by name, not recursive; by suffix, :data:`IMAGE_SUFFIXES`),
    their stored sizes (from the file header) and hashes -> ``(stimuli, skipped, failed)``: ``skipped``
    the names of the other files, ``failed`` one line per image whose header cannot be read.

    Raises ExportError for a missing folder, a folder without images, or two images of one stem
    (``a.jpg`` and ``a.png`` would share ``a.npy``; the benchmark matches files by stem).
    """
    from PIL import Image

    folder = pathlib.Path(stimuli_dir)
    if not folder.is_dir():
        raise ExportError(f"{folder}: not a folder of stimuli" + (" (it is a file)" if folder.exists() else ""))
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError as e:
        raise ExportError(f"{folder}: cannot list the folder ({e.strerror or e})") from None
    images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    skipped = [p.name for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES]
    if not images:
        raise ExportError(f"{folder}: holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
                          + (f"; {len(skipped)} other file(s)" if skipped else ""))
    stems: dict[str, pathlib.Path] = {}
    for path in images:
        other = stems.setdefault(path.stem.casefold(), path)
        if other is not path:
            raise ExportError(f"{other.name} and {path.name}: two stimuli of one stem; the benchmark names "
                              f"predictions by stem, so rename one")
    stimuli, failed = [], []
    for path in images:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Exception as e:  # not an image after all, truncated header
            failed.append(f"{path}: not a readable image ({e})")
            continue
        if max_pixels is not None and width * height > max_pixels:
            failed.append(f"{path}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}")
            continue
        stimuli.append(Stimulus(path, path.stem, (height, width), sha256_file(path)))
    return stimuli, skipped, failed


# --- files -----------------------------------------------------------------------------------------


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, DTYPE), allow_pickle=False)
    return buffer.getvalue()


def check_npy(path: pathlib.Path, shape: tuple[int, int], sha256: str | None = None) -> tuple[str | None, str]:
    """``(sha256, "")`` if ``path`` is a float32 ``.npy`` of ``shape`` whose size matches its header
    (and whose sha256 is ``sha256`` where given), else ``(None, why)``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "missing"
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        got_shape, fortran, dtype = read_header(stream)
    except Exception as e:
        return None, f"not a .npy file ({e})"
    if dtype != DTYPE or fortran or tuple(got_shape) != tuple(shape):
        return None, f"holds {dtype} {tuple(got_shape)}, expected float32 {tuple(shape)}"
    expected = stream.tell() + int(np.prod(shape)) * DTYPE.itemsize
    if len(data) != expected:
        return None, f"truncated or padded: {len(data)} bytes, expected {expected}"
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        return None, "content differs from the sha256 in the manifest"
    return digest, ""


def _read_manifest(out: pathlib.Path) -> dict | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: not a readable manifest ({e}); pass overwrite (--overwrite) to start "
                          f"the export afresh") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportError(f"{path}: not a manifest of a deepgaze-jax benchmark export; pass overwrite "
                          f"(--overwrite) to replace it, or give another out folder")
    return manifest


def _check_same_export(out: pathlib.Path, manifest: dict, model: dict, settings: dict) -> None:
    old = manifest.get("model", {})
    if any(old.get(k) != model[k] for k in IDENTITY_KEYS):
        differ = [k.removesuffix("_sha256") for k in IDENTITY_KEYS if old.get(k) != model[k]]
        raise ExportError(f"{out}: holds an export of {old.get('name', 'another model')}, not of {model['name']} "
                          f"(the {' and '.join(differ)} differ); pass --overwrite to replace it, or another --out")
    old_settings = manifest.get("settings", {})
    if old_settings != settings:
        differ = sorted(k for k in set(old_settings) | set(settings) if old_settings.get(k) != settings.get(k))
        described = ", ".join(f"{k} {old_settings.get(k)!r} there, {settings.get(k)!r} now" for k in differ)
        raise ExportError(f"{out}: holds an export of {model['name']} with other settings ({described}); pass "
                          f"--overwrite to replace it, or another --out")


def _remove_export(out: pathlib.Path) -> None:
    """Delete what an export writes under ``out`` (its folders and manifest), nothing else."""
    for folder in FOLDERS:
        if (out / folder).is_dir():
            shutil.rmtree(out / folder)
    (out / MANIFEST).unlink(missing_ok=True)


def _manifest(model: dict, settings: dict, stimuli: Sequence[Stimulus], files: dict, complete: bool,
              stimuli_dir: pathlib.Path, skipped: Sequence[str], created: str | None, command: str | None) -> dict:
    folders = {name: {"metrics": list(metrics_), "holds": text, "files": f"{name}/<stimulus stem>.npy, (H, W) float32"}
               for name, (metrics_, text) in FOLDERS.items() if name == LOG_DENSITY or name in settings["maps"]}
    return {
        "format": FORMAT,
        "layout": "one folder per metric, one .npy per stimulus named by its stem, as the benchmark's "
                  "export_saliency_maps.py (github.com/matthias-k/saliency-benchmarking); log_density/ is the "
                  "probabilistic submission pysaliency's ModelFromDirectory reads",
        "complete": complete,
        "created": created or provenance.utc_date(),
        "updated": provenance.utc_date(),
        "command": command,
        "machine": provenance.machine(),
        "model": model,
        "settings": settings,
        "folders": folders,
        "stimuli_dir": str(stimuli_dir),
        "stimuli": [s.to_dict() for s in stimuli],
        "skipped": list(skipped),
        "files": dict(sorted(files.items())),
    }


# --- the export ------------------------------------------------------------------------------------


def _per_image_maps(log_density: np.ndarray, settings: ExportSettings, folders: Sequence[str]) -> dict[str, np.ndarray]:
    """The first pass's maps of one ``(H, W)`` log density (nats) for ``folders``, each computed once."""
    from deepgaze_jax import metric_maps

    ld = np.asarray(log_density, np.float64)
    cache: dict[str, np.ndarray] = {}

    def density():
        if "density" not in cache:
            cache["density"] = metric_maps.density_map(ld)
        return cache["density"]

    def blurred():
        if "blurred" not in cache:
            cache["blurred"] = metric_maps.blurred_density_map(ld, settings.sigma, mode=settings.blur_mode)
        return cache["blurred"]

    maps = {}
    for folder in folders:
        if folder in ("AUC", "NSS"):
            maps[folder] = density()
        elif folder in ("CC", "KLDiv") or (folder == "SIM" and settings.sim_map == "blurred"):
            maps[folder] = blurred()
        elif folder == "SIM":
            maps[folder] = metric_maps.sim_saliency_map(ld, settings.sigma, seed=settings.sim_seed,
                                                        fixation_count=settings.sim_fixations,
                                                        epochs=settings.sim_epochs)
        else:
            raise AssertionError(folder)
    return maps


class _Run:
    """The files of one export run under ``out``: which verify, which are written, which stimuli fail;
    it fills the summary and ``files`` (the manifest's entries, relative path -> sha256, shape, dtype)."""

    def __init__(self, out: pathlib.Path, summary: ExportSummary, old_files: dict, changed: set[str]):
        self.out, self.summary, self.old_files, self.changed = out, summary, old_files, changed
        self.files: dict[str, dict] = {}

    def _record(self, rel: str, digest: str, stimulus: Stimulus) -> None:
        self.files[rel] = {"sha256": digest, "shape": list(stimulus.shape), "dtype": DTYPE.name}

    def verify(self, folder: str, stimulus: Stimulus) -> bool:
        """Whether the file of ``stimulus`` in ``folder`` is there and valid; one that is there but
        not valid is listed in ``summary.replaced`` with the reason."""
        rel = f"{folder}/{stimulus.stem}.npy"
        if stimulus.stem in self.changed:
            if (self.out / rel).exists():
                self.summary.replaced.append((rel, f"the stimulus {stimulus.path.name} changed since it was written"))
            return False
        entry = self.old_files.get(rel)
        digest, why = check_npy(self.out / rel, stimulus.shape, entry.get("sha256") if isinstance(entry, dict) else None)
        if digest is None:
            if why != "missing":
                self.summary.replaced.append((rel, why))
            return False
        self._record(rel, digest, stimulus)
        self.summary.kept.append(rel)
        return True

    def write(self, folder: str, stimulus: Stimulus, array: np.ndarray) -> None:
        """Write one ``(H, W)`` map as float32 ``.npy``, atomically; ValueError for another shape or
        non-finite values."""
        rel = f"{folder}/{stimulus.stem}.npy"
        array = np.asarray(array)
        if array.shape != stimulus.shape or not np.all(np.isfinite(array)):
            raise ValueError(f"{rel}: the map is {array.shape} with non-finite values or of another shape than "
                             f"the stimulus {stimulus.shape}; not written")
        data = _npy_bytes(array)
        atomic_write.write_bytes(self.out / rel, data)
        self._record(rel, hashlib.sha256(data).hexdigest(), stimulus)
        self.summary.written.append(rel)

    def fail(self, stimulus: Stimulus, e: Exception) -> None:
        text = str(e)  # an ImageError names the file already
        self.summary.failed.append(text if text.startswith(str(stimulus.path))
                                   else f"{stimulus.path}: {text or type(e).__name__}")


def _bar(progress: bool, **kwargs):
    from tqdm import tqdm

    return tqdm(unit="image", disable=None if progress else True, file=sys.stderr, **kwargs)


def _first_pass(run: _Run, stimuli: Sequence[Stimulus], predictor, settings: ExportSettings, batch_size: int,
                max_pixels: int | None, progress: bool) -> None:
    """Each stimulus' log density and the maps that need only it. The backbone runs only for stimuli
    whose log density is missing or invalid, in batches of one size; the others' maps come from the file."""
    from deepgaze_jax import metrics

    todo: dict[int, list[str]] = {}
    predict: list[int] = []
    for i, stimulus in enumerate(stimuli):
        if not run.verify(LOG_DENSITY, stimulus):
            predict.append(i)
        todo[i] = [folder for folder in PER_IMAGE if folder in settings.maps and not run.verify(folder, stimulus)]

    def maps(stimulus: Stimulus, ld: np.ndarray, folders: Sequence[str]) -> None:
        for folder, array in _per_image_maps(ld, settings, folders).items():
            run.write(folder, stimulus, array)

    with _bar(progress, total=len(stimuli), desc="log densities and maps") as bar:
        for i in sorted(set(todo) - set(predict)):
            if todo[i]:
                try:
                    maps(stimuli[i], np.load(run.out / LOG_DENSITY / f"{stimuli[i].stem}.npy", allow_pickle=False), todo[i])
                except Exception as e:
                    run.fail(stimuli[i], e)
            bar.update(1)
        for batch in batches_by_size([stimuli[i].shape for i in predict], batch_size):
            images, kept = [], []
            for i in (predict[j] for j in batch):
                try:
                    image = load_image(stimuli[i].path, max_pixels, as_stored=True)
                    if image.shape[:2] != stimuli[i].shape:
                        raise ImageError(f"{stimuli[i].path}: decodes to {image.shape[:2]}, its header says "
                                         f"{stimuli[i].shape}")
                    images.append(image)
                    kept.append(i)
                except Exception as e:
                    run.fail(stimuli[i], e)
                    bar.update(1)
            try:
                densities = np.asarray(predictor.log_density(np.stack(images))) if kept else []
            except Exception as e:  # too small for the backbone; out of memory
                for i in kept:
                    run.fail(stimuli[i], e)
                bar.update(len(kept))
                continue
            for i, ld in zip(kept, densities):
                try:
                    metrics.check_normalised(np.asarray(ld, np.float64), f"log density of {stimuli[i].path.name}")
                    run.write(LOG_DENSITY, stimuli[i], ld)
                    maps(stimuli[i], ld, todo[i])
                except Exception as e:
                    run.fail(stimuli[i], e)
                bar.update(1)


def _sauc_pass(run: _Run, stimuli: Sequence[Stimulus], todo: Sequence[Stimulus], settings: ExportSettings,
               progress: bool) -> None:
    """The second pass: the shuffled baseline over the saved log densities of all ``stimuli``, then the
    sAUC maps of ``todo``."""
    from deepgaze_jax import metric_maps

    def load(stimulus: Stimulus) -> np.ndarray:
        return np.asarray(np.load(run.out / LOG_DENSITY / f"{stimulus.stem}.npy", allow_pickle=False), np.float64)

    with _bar(progress, total=len(stimuli), desc="shuffled baseline") as bar:
        def all_log_densities():
            for stimulus in stimuli:
                yield load(stimulus)
                bar.update(1)

        baseline = metric_maps.ShuffledBaseline.from_log_densities(all_log_densities(), settings.shuffled_compute_size)
    with _bar(progress, total=len(todo), desc="sAUC maps") as bar:
        for stimulus in todo:
            ld = load(stimulus)
            try:
                run.write("sAUC", stimulus, metric_maps.sauc_map(ld, baseline.log_density(ld)))
            except Exception as e:
                run.fail(stimulus, e)
            bar.update(1)


def _remove_stale(run: _Run, stimuli_dir: pathlib.Path, folders: Sequence[str]) -> None:
    """Delete the files of stimuli no longer in the folder, and temporary files of an interrupted run."""
    stems = {p.stem for p in stimuli_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    for folder in folders:
        if not (run.out / folder).is_dir():
            continue
        for path in sorted((run.out / folder).iterdir()):
            if path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink()
            elif path.is_file() and path.suffix == ".npy" and path.stem not in stems:
                path.unlink()
                run.summary.removed.append(f"{folder}/{path.name}")


def _open_export(out: pathlib.Path, overwrite: bool, name: str, heads_file: pathlib.Path) -> dict | None:
    """The manifest of an export already in ``out`` (None for none, or with ``overwrite``); refuses a
    folder holding export files without a manifest, or an export of other heads, before any loading."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: is a file, not a folder; give a folder for the export")
    if overwrite:
        return None
    manifest = _read_manifest(out)
    if manifest is None:
        present = [folder for folder in FOLDERS if (out / folder).is_dir() and any((out / folder).iterdir())]
        if present:
            raise ExportError(f"{out}: holds {', '.join(present)} but no {MANIFEST}, so not known to be an export of "
                              f"this model; pass --overwrite to replace them, or another --out")
    elif heads_file.is_file() and manifest.get("model", {}).get("heads_sha256") != sha256_file(heads_file):
        raise ExportError(f"{out}: holds an export of {manifest.get('model', {}).get('name', 'another model')}, not "
                          f"of {name} (the heads differ); pass --overwrite to replace it, or another --out")
    return manifest


def _write_manifest(out: pathlib.Path, manifest: dict) -> None:
    atomic_write.write_bytes(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


def export_benchmark(
    stimuli_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: str = "deepgaze1",
    heads: str | os.PathLike | None = None,
    backbone: str | os.PathLike | None = None,
    centerbias: str | None = None,
    settings: ExportSettings | None = None,
    batch_size: int = 4,
    overwrite: bool = False,
    max_pixels: int | None = MAX_PIXELS,
    progress: bool = False,
    command: str | None = None,
    predictor=None,
) -> ExportSummary:
    """Write the benchmark submission of a static predictor for the images of ``stimuli_dir``.

    Args:
      stimuli_dir: a folder of stimuli (e.g. MIT300's 300 images): its image files, by suffix, not
        recursive; other files are skipped and listed in the summary and manifest.
      out: the export folder (the layout in the module docstring). An export there of the same model
        and settings is resumed; one of another model or other settings raises :class:`ExportError`
        unless ``overwrite`` (which deletes the export's folders and manifest, nothing else there).
      model, heads, backbone, centerbias: the predictor, as :func:`deepgaze_jax.predict.load_predictor`
        (a shipped name, or a predictor file ``heads``; a scanpath model is refused).
      settings: how the maps are made (:class:`ExportSettings`; default ``ExportSettings()``).
      batch_size: stimuli of one size predicted together.
      max_pixels: stimuli larger than this fail (see :func:`deepgaze_jax.images.load_image`).
      progress: tqdm bars on stderr.
      command: the command line, recorded in the manifest.
      predictor: an already loaded predictor for ``model``/``heads`` (saves loading it again).

    Returns:
      an :class:`ExportSummary`. A stimulus that cannot be read or predicted is listed in ``failed``
      (the others are exported; the sAUC maps, which need all log densities, wait for a complete first
      pass); the manifest then says ``"complete": false``.

    Raises:
      ExportError: ``out`` is a file, the stimuli folder is missing or holds no images, two stimuli
        share a stem, or ``out`` holds an export of another model or settings (without ``overwrite``).
    """
    from deepgaze_jax.predict import ASSETS, load_predictor

    out, stimuli_dir = pathlib.Path(out), pathlib.Path(stimuli_dir)
    settings = ExportSettings() if settings is None else settings
    if batch_size < 1:
        raise ExportError(f"batch_size {batch_size}: must be a positive integer")
    name = str(heads) if heads is not None else model
    heads_file = pathlib.Path(heads) if heads is not None else ASSETS / f"{model}.safetensors"
    manifest = _open_export(out, overwrite, name, heads_file)
    stimuli, skipped, failed = list_stimuli(stimuli_dir, max_pixels)
    if predictor is None:
        predictor = load_predictor(model, heads, backbone, centerbias, kind="static")
    identity = predictor_identity(predictor, name, heads_file, backbone, centerbias)
    wanted = settings.to_dict()
    if manifest is not None:
        _check_same_export(out, manifest, identity, wanted)
    if overwrite:
        _remove_export(out)
    old_stimuli = {} if manifest is None else {s.get("file"): s.get("sha256") for s in manifest.get("stimuli", [])}
    changed = {s.stem for s in stimuli if s.path.name in old_stimuli and old_stimuli[s.path.name] != s.sha256}
    summary = ExportSummary(out, stimuli, skipped=skipped, failed=failed)
    run = _Run(out, summary, {} if manifest is None else manifest.get("files", {}), changed)
    created = None if manifest is None else manifest.get("created")
    out.mkdir(parents=True, exist_ok=True)
    if manifest is None:  # an interrupted first run is still known to be of this model and these settings
        _write_manifest(out, _manifest(identity, wanted, stimuli, {}, False, stimuli_dir, skipped, created, command))

    _first_pass(run, stimuli, predictor, settings, batch_size, max_pixels, progress)
    if "sAUC" in settings.maps:
        if summary.failed:
            summary.notes.append("sAUC maps not written: they need the log densities of all stimuli")
        elif len(stimuli) < 2:
            summary.notes.append("sAUC maps not written: the shuffled baseline needs at least 2 stimuli")
        else:
            # Another set of stimuli than the manifest's changes every stimulus' shuffled baseline.
            same_set = manifest is not None and not changed and set(old_stimuli) == {s.path.name for s in stimuli}
            if not same_set:
                summary.replaced += [(f"sAUC/{s.stem}.npy", "the set of stimuli changed, and with it the shuffled "
                                                            "baseline")
                                     for s in stimuli if (out / "sAUC" / f"{s.stem}.npy").exists()]
            todo = [s for s in stimuli if not (same_set and run.verify("sAUC", s))]
            if todo:
                _sauc_pass(run, stimuli, todo, settings, progress)
    _remove_stale(run, stimuli_dir, (LOG_DENSITY, *settings.maps))

    new = _manifest(identity, wanted, stimuli, run.files, summary.complete, stimuli_dir, skipped, created, command)
    if manifest is None or any(manifest.get(k) != new[k] for k in ("complete", "stimuli", "files", "skipped", "model")):
        _write_manifest(out, new)
    return summary
