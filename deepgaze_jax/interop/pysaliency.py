"""pysaliency interop: our predictors as pysaliency models, and fixation datasets both ways.

pysaliency (https://github.com/matthias-k/pysaliency) is an optional extra (``pip install
deepgaze-jax[pysaliency]``); importing this module without it raises a one-line ImportError saying so.

* :class:`DeepGazeModel`: a static :class:`~deepgaze_jax.predict.Predictor` as a ``pysaliency.Model``
  (``_log_density`` is ours, float64; pysaliency's caching; :meth:`DeepGazeModel.precompute` fills the
  cache in batches of equal-size images).
* :class:`DeepGazeScanpathModel`: a :class:`~deepgaze_jax.predict.ScanpathPredictor` (DeepGaze III) as a
  ``pysaliency.ScanpathModel``.
* :func:`to_pysaliency`: a :class:`~deepgaze_jax.data.FixationDataset` -> pysaliency ``Stimuli`` and
  ``FixationTrains`` (one train per image and observer).
* :func:`write_fixation_csv` and :func:`from_pysaliency`: pysaliency stimuli and fixations -> a stimuli
  folder and fixation CSV (:func:`deepgaze_jax.data.read_fixation_csv`) -> a ``FixationDataset``
  (through :func:`deepgaze_jax.data.load_fixation_csv`), checked against the source row by row.

Conventions (the same in both libraries, so nothing is shifted): coordinates are 0-based pixels of the
stored image, x to the right, y down, and a fixation at ``(x, y)`` lies on pixel ``[int(y), int(x)]``
(pysaliency's ``x_int``/``y_int`` truncate as we do). pysaliency's ``t`` and ``duration`` are seconds,
as our ``onset`` and ``duration``. Histories: pysaliency's ``x_hist`` is oldest first, ours most recent
first and NaN-padded (:func:`history_from_pysaliency`). Note that pysaliency's own MIT1003 loader keeps
the MATLAB 1-based coordinates (its ``- 1`` is commented out), so its MIT1003 fixations lie 1 px right
and down of ours (:func:`deepgaze_jax.data.read_fixatons`); this module converts coordinates as given.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import importlib
import logging
import math
import os
import pathlib
import shutil
import sys
import types
from typing import Literal, Sequence

import numpy as np
from PIL import Image

from deepgaze_jax.data.datasets import FixationDataset, load_fixation_csv
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.data.scanpaths import scanpath_order
from deepgaze_jax.deepgaze3 import check_history
from deepgaze_jax.images import batches_by_size
from deepgaze_jax.predict import (ImageFeatures, Predictor, ScanpathPredictor, load_predictor,
                                  load_scanpath_predictor)

log = logging.getLogger(__name__)

INSTALL_HINT = "deepgaze_jax.interop.pysaliency needs pysaliency: pip install deepgaze-jax[pysaliency]"


def _unavailable(*args, **kwargs):
    raise RuntimeError("pkg_resources is not installed (only pysaliency's MATLAB models need it)")


def import_pysaliency() -> types.ModuleType:
    """pysaliency, imported with the two shims 0.2.22 needs on current installs.

    It calls ``np.trapz`` (removed in NumPy 2.4; patched to ``np.trapezoid``, the same function) in its
    ROC code and imports ``pkg_resources`` (gone from setuptools >= 81; a stub that raises where only
    its MATLAB model wrappers would use it). Raises ImportError (one line: :data:`INSTALL_HINT`) when
    pysaliency is not installed.
    """
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid
    try:
        importlib.import_module("pkg_resources")
    except ImportError:
        stub = types.ModuleType("pkg_resources")
        stub.resource_string = stub.resource_listdir = _unavailable
        sys.modules["pkg_resources"] = stub
    try:
        import pysaliency as module
    except ImportError as e:
        if e.name != "pysaliency":
            raise
        raise ImportError(INSTALL_HINT) from None
    return module


pysaliency = import_pysaliency()
from pysaliency.datasets import FixationTrains, ObjectStimuli, Stimulus, as_stimulus  # noqa: E402


class ConversionError(ValueError):
    """A dataset that cannot be converted, or a conversion whose result differs from its source."""


# --- predictors as pysaliency models ------------------------------------------------------------------


def _load(predictor, kind: str):
    if isinstance(predictor, (str, os.PathLike)):
        path = pathlib.Path(predictor)
        if path.suffix == ".safetensors" or path.is_file():
            return load_predictor(path=path, kind=kind)
        return load_predictor(str(predictor), kind=kind)
    return predictor


class DeepGazeModel(pysaliency.Model):
    """A static predictor as a ``pysaliency.Model``: the log density of a stimulus is ours.

    ``predictor``: a :class:`~deepgaze_jax.predict.Predictor`, a shipped name (``"deepgaze1"``,
    ``"deepgaze2_vgg16"``) or a heads file. ``caching``, ``cache_location``, ``memory_cache_size``:
    as ``pysaliency.Model`` (by default every density computed is kept in memory, keyed by the
    stimulus' id). ``batch_size``: images per batch in :meth:`precompute`.
    """

    def __init__(self, predictor: Predictor | str | os.PathLike = "deepgaze1", *, caching: bool = True,
                 cache_location: str | None = None, memory_cache_size: int | None = None, batch_size: int = 8):
        super().__init__(cache_location=cache_location, caching=caching, memory_cache_size=memory_cache_size)
        predictor = _load(predictor, "static")
        if not isinstance(predictor, Predictor):
            raise TypeError(f"DeepGazeModel takes a static Predictor, got {type(predictor).__name__} "
                            "(a ScanpathPredictor is a DeepGazeScanpathModel)")
        self.predictor = predictor
        self.batch_size = batch_size

    def _log_density(self, stimulus: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 or ``(H, W)`` grayscale stimulus -> ``(H, W)`` float64 log density, nats
        (our float32 map, cast; its logsumexp is 0 to ~1e-6)."""
        return np.asarray(self.predictor.predict(stimulus), np.float64)

    def precompute(self, stimuli, batch_size: int | None = None) -> int:
        """Predict the stimuli of a pysaliency ``Stimuli`` not cached yet, batching images of one size
        (:meth:`Predictor.predict_many`), into the cache that :meth:`log_density` reads; pysaliency's
        metrics then find every density there. Returns how many were computed."""
        if not self.caching:
            raise ValueError("precompute fills the cache, but this model was made with caching=False")
        todo = [n for n in range(len(stimuli)) if stimuli.stimulus_ids[n] not in self._cache]
        size = batch_size or self.batch_size
        for chunk in batches_by_size([stimuli.sizes[n] for n in todo], size):
            ns = [todo[i] for i in chunk]
            densities = self.predictor.predict_many([stimuli.stimuli[n] for n in ns], batch_size=size)
            for n, density in zip(ns, densities):
                self._cache[stimuli.stimulus_ids[n]] = np.asarray(density, np.float64)
        return len(todo)


def history_from_pysaliency(x_hist, y_hist, shape: tuple[int, int], length: int) -> np.ndarray:
    """A pysaliency history -> ours: ``(length, 2)`` float32 ``(x, y)``, most recent first, NaN-padded.

    ``x_hist``, ``y_hist``: the previous fixations oldest first (pysaliency's order, trailing NaNs
    removed), pixels of an ``(H, W) = shape`` image. Fixations outside the image are left out before
    the last ``length`` are taken, as our scanpath datasets leave them out of histories
    (:mod:`deepgaze_jax.data.scanpaths`). Raises ValueError for NaN inside the history or unequal lengths.
    """
    xs, ys = np.asarray(x_hist, np.float64).reshape(-1), np.asarray(y_hist, np.float64).reshape(-1)
    if xs.shape != ys.shape:
        raise ValueError(f"x_hist has {xs.size} entries, y_hist {ys.size}")
    xy = np.stack([xs, ys], axis=1)
    h, w = shape
    finite = np.isfinite(xy).all(axis=1)
    with np.errstate(invalid="ignore"):
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    xy = xy[~finite | inside]  # NaN rows stay, for check_history to name
    return check_history(xy[max(0, len(xy) - length):], shape, length)


class DeepGazeScanpathModel(pysaliency.ScanpathModel):
    """A DeepGaze III predictor as a ``pysaliency.ScanpathModel``: the density of the next fixation
    given the stimulus and the previous fixations (the last ``predictor.history`` inside the image).

    ``predictor``: a :class:`~deepgaze_jax.predict.ScanpathPredictor` or a heads file (None: the
    shipped one). The backbone features of the last ``feature_cache_size`` stimuli are kept, so that
    pysaliency's per-fixation loops run the backbone once per stimulus, not once per fixation.
    """

    def __init__(self, predictor: ScanpathPredictor | str | os.PathLike | None = None, *,
                 feature_cache_size: int = 2):
        predictor = load_scanpath_predictor() if predictor is None else _load(predictor, "scanpath")
        if not isinstance(predictor, ScanpathPredictor):
            raise TypeError(f"DeepGazeScanpathModel takes a ScanpathPredictor, got {type(predictor).__name__}")
        self.predictor = predictor
        self.feature_cache_size = feature_cache_size
        self._features: collections.OrderedDict[str, ImageFeatures] = collections.OrderedDict()

    def _image_features(self, stimulus: Stimulus) -> ImageFeatures:
        key = stimulus.stimulus_id
        if key in self._features:
            self._features.move_to_end(key)
        else:
            self._features[key] = self.predictor.features(stimulus.stimulus_data)
            while len(self._features) > max(1, self.feature_cache_size):
                self._features.popitem(last=False)
        return self._features[key]

    def conditional_log_density(self, stimulus, x_hist, y_hist, t_hist, attributes=None, out=None) -> np.ndarray:
        """``(H, W)`` float64 log density (nats) of the next fixation on ``stimulus`` (an array or a
        pysaliency ``Stimulus``) after the fixations ``x_hist, y_hist`` (oldest first; ``t_hist``,
        ``attributes`` and ``out`` are not used)."""
        features = self._image_features(as_stimulus(stimulus))
        history = history_from_pysaliency(x_hist, y_hist, features.shape, self.predictor.history)
        return np.asarray(self.predictor.conditional_log_density(features, history[None])[0], np.float64)


# --- our datasets -> pysaliency -----------------------------------------------------------------------


class _DatasetStimulus(Stimulus):
    """Image ``index`` of a dataset, decoded when pysaliency reads its data (never kept)."""

    def __init__(self, images, index: int, size: tuple[int, int]):
        super().__init__(None, shape=(int(size[0]), int(size[1]), 3), size=(int(size[0]), int(size[1])))
        self.images, self.index = images, index

    @property
    def stimulus_data(self) -> np.ndarray:
        return np.asarray(self.images[self.index])

    @stimulus_data.setter
    def stimulus_data(self, value):
        pass


def to_pysaliency(dataset: FixationDataset) -> tuple[ObjectStimuli, FixationTrains]:
    """A dataset as pysaliency ``Stimuli`` and ``FixationTrains``.

    Stimulus ``n`` is image ``n`` (decoded on access; ``stimuli.attributes["image_id"]`` holds the
    names). Each observer's fixations on an image form one train, ordered by their index in the
    scanpath; trains come by (image, observer), so fixation ``i`` of the result is row ``order[i]`` of
    ``dataset.fixations`` with ``order = deepgaze_jax.data.scanpaths.scanpath_order(...)``. ``t`` is the
    onset (s), ``subjects`` our subject index; the fixation attributes ``duration`` (s) and
    ``index_in_scanpath`` keep the rest (:func:`from_pysaliency` reads them back). The table is
    converted as it is: a filtered dataset's histories lack the fixations the filter dropped (load
    with ``filter_conventional=False`` for pysaliency histories that hold them).
    """
    if dataset.images is None:
        raise ConversionError("to_pysaliency needs the dataset's images (dataset.images is None)")
    f = dataset.fixations
    if len(f) == 0:
        raise ConversionError("the dataset has no fixations")
    order = scanpath_order(f, dataset.image_ids, dataset.subjects)
    img, sub = f.image_index[order], f.subject[order]
    starts = np.flatnonzero(np.r_[True, (img[1:] != img[:-1]) | (sub[1:] != sub[:-1])])
    trains = np.split(order, starts[1:])
    as64 = lambda a, rows: np.asarray(a[rows], np.float64)  # noqa: E731
    fixations = FixationTrains.from_fixation_trains(
        [as64(f.x, r) for r in trains], [as64(f.y, r) for r in trains], [as64(f.onset, r) for r in trains],
        [int(f.image_index[r[0]]) for r in trains], [int(f.subject[r[0]]) for r in trains],
        scanpath_fixation_attributes={"durations": [as64(f.duration, r) for r in trains],
                                      "index_in_scanpath": [as64(f.index, r) for r in trains]},
        scanpath_attribute_mapping={"durations": "duration"})
    stimuli = ObjectStimuli([_DatasetStimulus(dataset.images, i, s) for i, s in enumerate(dataset.sizes)],
                            attributes={"image_id": list(dataset.image_ids)})
    _check_counts("to_pysaliency", {
        "images": (len(dataset), len(stimuli)), "fixations": (len(f), len(fixations)),
        "subjects": (len(np.unique(f.subject)), len(np.unique(fixations.subjects))),
        "scanpaths": (len(trains), len(fixations.train_xs))})
    return stimuli, fixations


def _check_counts(what: str, counts: dict[str, tuple[int, int]]) -> None:
    for name, (source, result) in counts.items():
        if source != result:
            raise ConversionError(f"{what}: the source has {source} {name}, the result {result}")


# --- pysaliency -> our datasets -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CsvExport:
    """What :func:`write_fixation_csv` wrote.

    Attributes:
      root: the folder (``root/STIMULI/`` and ``root/fixations.csv``, for ``load_fixation_csv(root, ...)``).
      file_names: per written image its file name in ``STIMULI``.
      stimulus_indices: per written image the pysaliency stimulus it is.
      without_fixations: pysaliency stimuli not written, because no fixation refers to them (our
        datasets hold the images that have fixations).
      gray: written stimuli that are grayscale (their value repeated to RGB when read, as every gray
        image our loaders read).
      copied: images whose file was copied unchanged (JPEG/PNG ``FileStimuli`` in RGB or L mode); the
        others were written as PNG from pysaliency's pixels.
      subjects: the subject names, ``subjects[s]`` for pysaliency's subject ``s``.
      fixations: the fixations as written, in pysaliency's row order (``image_index`` the position in
        ``stimulus_indices``, ``subject`` pysaliency's, coordinates as float32: see
        :func:`write_fixation_csv`).
    """

    root: pathlib.Path
    file_names: tuple[str, ...]
    stimulus_indices: tuple[int, ...]
    without_fixations: tuple[int, ...]
    gray: tuple[int, ...]
    copied: int
    subjects: tuple[str, ...]
    fixations: Fixations

    def __str__(self) -> str:
        return (f"wrote {len(self.file_names)} images ({self.copied} copied, {len(self.gray)} grayscale) and "
                f"{len(self.fixations)} fixations of {len(np.unique(self.fixations.subject))} subjects to "
                f"{self.root}; {len(self.without_fixations)} stimuli without fixations left out")


def _floor32(values: np.ndarray) -> np.ndarray:
    """The largest float32 <= each value: a fixation keeps its pixel (``int(x)``) in our float32 table."""
    out = values.astype(np.float32)
    over = out.astype(np.float64) > values
    out[over] = np.nextafter(out[over], np.float32(-np.inf))
    return out


def _integers(values, what: str) -> np.ndarray:
    values = np.asarray(values)
    as_int = values.astype(np.int64)
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values) | (as_int != values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ConversionError(f"fixation {i}: {what} {values[i]!r} is not an integer")
    if (as_int < 0).any():
        i = int(np.flatnonzero(as_int < 0)[0])
        raise ConversionError(f"fixation {i}: {what} {as_int[i]} is negative")
    return as_int


def _check_stimuli(stimuli, used: np.ndarray, gray: str) -> list[int]:
    """The used stimuli that are grayscale; refuses other channel counts (and gray, with ``gray="refuse"``)."""
    grays, rgb = [], None
    for n in used:
        shape = tuple(stimuli.shapes[n])
        if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
            grays.append(int(n))
        elif len(shape) == 3 and shape[2] == 3:
            rgb = int(n) if rgb is None else rgb
        else:
            raise ConversionError(f"stimulus {n} has shape {shape}; expected (H, W) grayscale or (H, W, 3) RGB")
    if grays and gray == "refuse":
        other = f" while stimulus {rgb} is RGB" if rgb is not None else ""
        raise ConversionError(f"stimulus {grays[0]} is grayscale (shape {tuple(stimuli.shapes[grays[0]])}){other}; "
                              f"{len(grays)} grayscale stimuli in all (gray='convert' repeats them to RGB)")
    return grays


def _positions(fixations, n: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """Each fixation's position in its scanpath: ``index_in_scanpath`` where given, the train position
    for (filtered) ``FixationTrains``, else the order of each (stimulus, subject)'s fixations in the table."""
    names = getattr(fixations, "__attributes__", [])
    if "index_in_scanpath" in names:
        return _integers(fixations.index_in_scanpath, "index_in_scanpath")
    if isinstance(fixations, FixationTrains) or "scanpath_index" in names:
        return np.asarray(fixations.lengths, np.int64)
    order = np.lexsort((np.arange(len(n)), subjects, n))
    start = np.r_[True, (n[order][1:] != n[order][:-1]) | (subjects[order][1:] != subjects[order][:-1])]
    first = np.maximum.accumulate(np.where(start, np.arange(len(n)), 0))
    out = np.empty(len(n), np.int64)
    out[order] = np.arange(len(n)) - first
    return out


def _check_fixations(stimuli, fixations) -> tuple[np.ndarray, ...]:
    n = _integers(fixations.n, "stimulus index n")
    count = len(stimuli)
    if (n >= count).any():
        i = int(np.flatnonzero(n >= count)[0])
        raise ConversionError(f"fixation {i} refers to stimulus {n[i]}, but there are {count} stimuli "
                              f"(0..{count - 1})")
    x, y = np.asarray(fixations.x, np.float64), np.asarray(fixations.y, np.float64)
    sizes = np.array([stimuli.sizes[k] for k in range(count)], np.int64).reshape(-1, 2)
    h, w = sizes[n, 0], sizes[n, 1]
    with np.errstate(invalid="ignore"):
        outside = ~((x >= 0) & (x < w) & (y >= 0) & (y < h))
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ConversionError(f"fixation {i} at (x, y) = ({x[i]:g}, {y[i]:g}) lies outside stimulus {n[i]} "
                              f"({w[i]}x{h[i]}: need 0 <= x < {w[i]}, 0 <= y < {h[i]}); {int(outside.sum())} such "
                              "fixations (pysaliency.datasets.remove_out_of_stimulus_fixations drops them)")
    subjects = _integers(fixations.subjects, "subject")
    index = _positions(fixations, n, subjects)
    order = np.lexsort((index, subjects, n))
    same = ((n[order][1:] == n[order][:-1]) & (subjects[order][1:] == subjects[order][:-1])
            & (index[order][1:] == index[order][:-1]))
    if same.any():
        a, b = sorted(order[np.flatnonzero(same)[0]:][:2])
        raise ConversionError(f"fixations {a} and {b} are both fixation {index[a]} of subject {subjects[a]} on "
                              f"stimulus {n[a]}: one subject's fixations on an image must form one scanpath")
    return n, x, y, subjects, index


def _file_names(stimuli, used: np.ndarray, suffixes: list[str]) -> list[str]:
    """Image ids where they make valid, unique file names (``attributes["image_id"]``, else the
    ``FileStimuli`` file names), stems kept and suffixes those of the files written; else numbers."""
    candidates = None
    if "image_id" in getattr(stimuli, "attributes", {}):
        candidates = [str(stimuli.attributes["image_id"][n]) for n in used]
    elif isinstance(stimuli, pysaliency.FileStimuli):
        candidates = [os.path.basename(stimuli.filenames[n]) for n in used]
    if candidates is not None:
        names = [pathlib.Path(c).stem + s for c, s in zip(candidates, suffixes)]
        if len(set(names)) == len(names) and all(pathlib.Path(c).name == c and c for c in names):
            return names
    width = max(5, len(str(max(used, default=0))))
    return [f"{n:0{width}d}{s}" for n, s in zip(used, suffixes)]


def _copyable(stimuli, n: int) -> str | None:
    """The suffix of stimulus n's file if it can be copied as it is (same pixels for both readers)."""
    if not isinstance(stimuli, pysaliency.FileStimuli):
        return None
    path = pathlib.Path(stimuli.filenames[n])
    if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        return None
    with Image.open(path) as img:
        ok = img.format in ("JPEG", "PNG") and img.mode in ("RGB", "L")
    return path.suffix if ok else None


def _write_image(stimuli, n: int, target: pathlib.Path) -> None:
    data = np.asarray(stimuli.stimuli[n])
    if data.dtype != np.uint8:
        raise ConversionError(f"stimulus {n} has dtype {data.dtype}; expected uint8 pixels 0..255")
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    Image.fromarray(data).save(target, format="PNG")


def write_fixation_csv(stimuli, fixations, root: str | os.PathLike, *, gray: Literal["convert", "refuse"] = "convert",
                       subject_names: Sequence[str] | None = None) -> CsvExport:
    """Write pysaliency stimuli and fixations as ``root/STIMULI/`` + ``root/fixations.csv``, the layout
    :func:`deepgaze_jax.data.load_fixation_csv` reads (and ``deepgaze train --data ROOT``,
    ``deepgaze evaluate --csv-dataset ROOT``).

    Args:
      stimuli: a pysaliency ``Stimuli`` (``FileStimuli`` JPEG/PNG files are copied, other stimuli
        written as PNG: uint8 ``(H, W)`` or ``(H, W, 3)``).
      fixations: a pysaliency ``Fixations`` or ``FixationTrains`` on them.
      gray: ``"convert"`` (default) writes grayscale stimuli as they are, to be repeated to RGB when
        read (as every gray image our loaders and predictors read), and counts them in
        :attr:`CsvExport.gray`; ``"refuse"`` raises on the first grayscale stimulus.
      subject_names: names of pysaliency's subjects 0..S-1 (default ``"0"``, ``"1"``, ...).

    CSV columns: ``image,subject,x,y,t,t_start_s,duration_ms``. ``t`` is the position in the
    scanpath: attribute ``index_in_scanpath`` where present (as :func:`to_pysaliency` writes),
    the position in the train for ``FixationTrains`` (also filtered ones), else the order of each
    (stimulus, subject)'s fixations in the table. ``t_start_s`` is pysaliency's ``t``,
    ``duration_ms`` its ``duration`` attribute (blank where absent). ``x, y`` are written as the
    largest float32 at or below pysaliency's float64 (our table holds float32), so every fixation
    keeps its pixel; the change is at most one float32 step (2**-23 relative).

    Raises:
      ConversionError: a fixation refers to a missing stimulus, lies outside its stimulus (names the
        fixation, stimulus and coordinate), two fixations share a scanpath position, a stimulus is
        neither grayscale nor RGB (or grayscale with ``gray="refuse"``), or is not uint8.
    """
    if gray not in ("convert", "refuse"):
        raise ValueError(f"gray must be 'convert' or 'refuse', got {gray!r}")
    if len(fixations) == 0:
        raise ConversionError("no fixations to write")
    n, x, y, subjects, index = _check_fixations(stimuli, fixations)
    used = np.unique(n)
    grays = _check_stimuli(stimuli, used, gray)
    names = subject_names
    if names is None:
        names = [str(s) for s in range(int(subjects.max()) + 1)]
    elif len(names) <= subjects.max() or len(set(names)) != len(names):
        raise ConversionError(f"subject_names: {len(names)} names (unique: {len(set(names))}) for subjects "
                              f"0..{int(subjects.max())}")
    root = pathlib.Path(root)
    stimuli_dir = root / "STIMULI"
    stimuli_dir.mkdir(parents=True, exist_ok=True)
    copy_suffix = [_copyable(stimuli, int(k)) for k in used]
    files = _file_names(stimuli, used, [s or ".png" for s in copy_suffix])
    for k, name, suffix in zip(used, files, copy_suffix):
        if suffix is not None:
            shutil.copyfile(stimuli.filenames[k], stimuli_dir / name)
        else:
            _write_image(stimuli, int(k), stimuli_dir / name)

    position = np.searchsorted(used, n)
    onset = np.asarray(fixations.t, np.float64)
    duration = (np.asarray(fixations.duration, np.float64) if "duration" in getattr(fixations, "__attributes__", [])
                else np.full(len(n), np.nan))
    x32, y32 = _floor32(x), _floor32(y)
    with open(root / "fixations.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["image", "subject", "x", "y", "t", "t_start_s", "duration_ms"])
        for i in range(len(n)):
            out.writerow([files[position[i]], names[subjects[i]], repr(float(x32[i])), repr(float(y32[i])),
                          int(index[i]), repr(float(onset[i])) if math.isfinite(onset[i]) else "",
                          repr(float(duration[i]) * 1000) if math.isfinite(duration[i]) else ""])
    table = Fixations(image_index=position, x=x32, y=y32, index=index, onset=onset, duration=duration,
                      subject=subjects, inside=np.ones(len(n), bool), initial=np.zeros(len(n), bool))
    export = CsvExport(root, tuple(files), tuple(int(k) for k in used),
                       tuple(int(k) for k in np.setdiff1d(np.arange(len(stimuli)), used)), tuple(grays),
                       sum(s is not None for s in copy_suffix), tuple(names), table)
    log.info("%s", export)
    return export


def from_pysaliency(stimuli, fixations, root: str | os.PathLike, *, name: str = "pysaliency",
                    data_dir: str | os.PathLike | None = None, gray: Literal["convert", "refuse"] = "convert",
                    subject_names: Sequence[str] | None = None) -> tuple[FixationDataset, CsvExport]:
    """pysaliency stimuli and fixations as our dataset: :func:`write_fixation_csv` into ``root``, then
    :func:`deepgaze_jax.data.load_fixation_csv` (a tfds build in ``data_dir``), checked against the source.

    The dataset's image ``i`` is pysaliency's stimulus ``export.stimulus_indices[i]`` (stimuli
    without fixations are left out), its subjects are pysaliency's ``0..S-1`` (names
    ``export.subjects``), and fixation row ``i`` is pysaliency's fixation ``i``. Images, fixations,
    subjects, image sizes and every row's (image, subject, position, x, y, onset) are compared with
    the source; any difference is a :class:`ConversionError` naming it.
    """
    export = write_fixation_csv(stimuli, fixations, root, gray=gray, subject_names=subject_names)
    loaded = load_fixation_csv(root, name, data_dir=data_dir)
    position = {file: i for i, file in enumerate(loaded.image_ids)}
    if sorted(position) != sorted(export.file_names):
        raise ConversionError(f"from_pysaliency: wrote images {sorted(export.file_names)[:3]}..., read back "
                              f"{sorted(position)[:3]}...")
    dataset = loaded.subset([position[file] for file in export.file_names])
    subject_of = {s: k for k, s in enumerate(export.subjects)}
    f = dataset.fixations
    f = dataclasses.replace(f, subject=np.array([subject_of[dataset.subjects[s]] for s in f.subject], np.int32))
    want = export.fixations
    sizes = np.array([stimuli.sizes[k] for k in export.stimulus_indices], np.int64).reshape(-1, 2)
    _check_counts("from_pysaliency", {
        "images": (len(export.stimulus_indices), len(dataset)), "fixations": (len(want), len(f)),
        "subjects": (len(np.unique(want.subject)), len(np.unique(f.subject))),
        "fixations per image": (np.bincount(want.image_index, minlength=len(dataset)).tolist(),
                                np.bincount(f.image_index, minlength=len(dataset)).tolist())})
    if not np.array_equal(dataset.sizes, sizes):
        k = int(np.flatnonzero((dataset.sizes != sizes).any(axis=1))[0])
        raise ConversionError(f"from_pysaliency: stimulus {export.stimulus_indices[k]} is {tuple(sizes[k])} (H, W) "
                              f"in pysaliency, {tuple(dataset.sizes[k])} as read back")
    src = np.lexsort((want.index, want.subject, want.image_index))
    got = np.lexsort((f.index, f.subject, f.image_index))
    rows = np.empty(len(f), np.int64)
    rows[src] = got
    f = f.select(rows)
    for field in ("image_index", "subject", "index", "x", "y", "onset"):
        a, b = getattr(want, field), getattr(f, field)
        differ = (a != b) & ~(np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else a != b
        if differ.any():
            i = int(np.flatnonzero(differ)[0])
            raise ConversionError(f"from_pysaliency: fixation {i}'s {field} is {a[i]!r} in pysaliency, "
                                  f"{b[i]!r} as read back")
    dataset = dataclasses.replace(dataset, subjects=export.subjects, fixations=f)
    return dataset, export
