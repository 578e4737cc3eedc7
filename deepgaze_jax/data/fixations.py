"""Fixation tables and the readers that build them from files on disk.

Coordinates everywhere are 0-based pixels of the stored image, x to the right, y down; a fixation at
``(x, y)`` falls on pixel ``[int(y), int(x)]``. Times are seconds from stimulus onset (NaN if unknown).

Two layouts are read:

* FixaTons (MIT1003 as distributed in ``../shared/data/MIT1003``): ``STIMULI/<image>.<ext>`` and
  ``SCANPATHS/<image>/<subject>``, one fixation per row ``x y t_start t_end`` with MATLAB 1-based
  integer pixels (:func:`read_fixatons`).
* Any dataset as a stimuli folder plus a CSV with columns ``image,subject,x,y,t`` and optionally
  ``t_start_s,t_end_s,initial,inside`` (:func:`read_fixation_csv`).

Bad input never passes silently: malformed rows, missing columns, unknown images and unreadable images
raise an error naming the file (and line); empty scanpath files and images without fixations are
skipped, counted in :class:`ReadReport` and logged.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# First-sample onset of the forced central fixation in MIT1003 (ISCAN at 240 Hz: one sample = 4.2 ms).
_MIT1003_INITIAL_ONSET_S = 0.004


@dataclasses.dataclass(frozen=True)
class Fixations:
    """A flat table of F fixations; every field is a numpy array of shape (F,).

    Attributes:
      image_index: int32, index into the owning dataset's image list.
      x, y: float32, 0-based pixel coordinates in the stored image.
      index: int32, 0-based position of the fixation within its scanpath.
      onset, duration: float32 seconds (NaN where the source has no times).
      subject: int32, index into the owning dataset's subject list.
      inside: bool, the fixation lies inside the image (see the readers for the exact rule).
      initial: bool, the forced initial (central) fixation of a scanpath.
    """

    image_index: np.ndarray
    x: np.ndarray
    y: np.ndarray
    index: np.ndarray
    onset: np.ndarray
    duration: np.ndarray
    subject: np.ndarray
    inside: np.ndarray
    initial: np.ndarray

    _DTYPES = {"image_index": np.int32, "x": np.float32, "y": np.float32, "index": np.int32,
               "onset": np.float32, "duration": np.float32, "subject": np.int32,
               "inside": np.bool_, "initial": np.bool_}

    def __post_init__(self):
        n = len(self.image_index)
        for name, dtype in self._DTYPES.items():
            value = np.asarray(getattr(self, name), dtype=dtype)
            if value.shape != (n,):
                raise ValueError(f"Fixations.{name} has shape {value.shape}, expected ({n},)")
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.image_index)

    @classmethod
    def empty(cls) -> "Fixations":
        return cls(**{k: np.zeros(0, d) for k, d in cls._DTYPES.items()})

    @classmethod
    def concatenate(cls, parts: Sequence["Fixations"]) -> "Fixations":
        if not parts:
            return cls.empty()
        return cls(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in cls._DTYPES})

    def select(self, keep: np.ndarray) -> "Fixations":
        """The rows where the boolean (F,) ``keep`` is true (or the given integer rows)."""
        return Fixations(**{k: getattr(self, k)[keep] for k in self._DTYPES})


@dataclasses.dataclass(frozen=True)
class FilterReport:
    """What :func:`conventional_filter` dropped. ``dropped_initial`` counts forced initial fixations,
    ``dropped_outside`` the remaining fixations outside the image."""

    total: int
    dropped_initial: int
    dropped_outside: int
    kept: int

    def __str__(self) -> str:
        return (f"conventional filter: kept {self.kept} of {self.total} fixations, dropped "
                f"{self.dropped_initial} forced initial and {self.dropped_outside} outside the image")


def conventional_filter(fixations: Fixations) -> tuple[Fixations, FilterReport]:
    """Drops the forced initial fixation of each scanpath and fixations outside the image.

    This is the convention of Judd et al., the DeepGaze papers and pysaliency (MIT1003: 104,170
    fixations remain). Returns the kept rows and the counts, which are also logged.
    """
    drop_initial = fixations.initial
    drop_outside = ~fixations.inside & ~drop_initial
    keep = ~(drop_initial | drop_outside)
    report = FilterReport(total=len(fixations), dropped_initial=int(drop_initial.sum()),
                          dropped_outside=int(drop_outside.sum()), kept=int(keep.sum()))
    log.info("%s", report)
    return fixations.select(keep), report


@dataclasses.dataclass(frozen=True)
class ReadReport:
    """Inputs a reader skipped on purpose (never silently): empty scanpath files and images that no
    fixation refers to. Paths are strings relative to the dataset root where possible."""

    empty_scanpaths: tuple[str, ...] = ()
    images_without_fixations: tuple[str, ...] = ()
    duplicate_rows: tuple[int, ...] = ()  # line numbers of CSV rows that repeat an earlier row exactly

    def __str__(self) -> str:
        return (f"skipped {len(self.empty_scanpaths)} empty scanpath files and {len(self.duplicate_rows)} "
                f"duplicate rows; {len(self.images_without_fixations)} images have no fixations")


@dataclasses.dataclass(frozen=True)
class RawDataset:
    """Stimulus files and their fixations as read from disk (no image pixels loaded).

    Attributes:
      image_ids: (I,) names of the stimuli (file names without folder).
      image_paths: (I,) paths of the stimulus files.
      sizes: int32 (I, 2), ``(height, width)`` of each stimulus in pixels.
      subjects: (S,) observer names; ``fixations.subject`` indexes this.
      fixations: every recorded fixation, flagged but unfiltered.
      report: what the reader skipped.
    """

    image_ids: tuple[str, ...]
    image_paths: tuple[pathlib.Path, ...]
    sizes: np.ndarray
    subjects: tuple[str, ...]
    fixations: Fixations
    report: ReadReport = ReadReport()


def image_size(path: pathlib.Path) -> tuple[int, int]:
    """``(height, width)`` from the image header; errors name the file."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except FileNotFoundError:
        raise FileNotFoundError(f"stimulus file missing: {path}") from None
    except Exception as e:  # PIL raises several types for unreadable files
        raise ValueError(f"cannot read image {path}: {e}") from e
    return height, width


def _list_stimuli(stimuli_dir: pathlib.Path) -> list[pathlib.Path]:
    if not stimuli_dir.is_dir():
        raise FileNotFoundError(f"stimuli folder not found: {stimuli_dir}")
    return sorted(p for p in stimuli_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_fixatons(root: str | pathlib.Path) -> RawDataset:
    """Reads a dataset in the FixaTons layout (``STIMULI/``, ``SCANPATHS/<image>/<subject>``).

    Rows are ``x y t_start t_end`` with 1-based integer pixels; they become 0-based ``x - 1``.
    ``inside`` follows the published MIT1003 extraction: ``0 < x_src < width and 0 < y_src < height``
    on the 1-based values (this excludes the last pixel row and column, as the original did).
    ``initial`` marks the first row of a scanpath when it starts at the first eye-tracker sample
    (onset <= 4 ms), the forced central fixation.

    Raises:
      FileNotFoundError: ``STIMULI`` or ``SCANPATHS`` missing, or a scanpath folder without stimulus.
      ValueError: a malformed scanpath row (names file and line) or an unreadable image header.
    """
    root = pathlib.Path(root)
    stimuli = _list_stimuli(root / "STIMULI")
    scan_root = root / "SCANPATHS"
    if not scan_root.is_dir():
        raise FileNotFoundError(f"scanpath folder not found: {scan_root}")
    by_stem = {p.stem: i for i, p in enumerate(stimuli)}
    for d in sorted(scan_root.iterdir()):
        if d.is_dir() and d.name not in by_stem:
            raise FileNotFoundError(
                f"{d} has no stimulus: expected {root / 'STIMULI' / d.name}.<{'|'.join(IMAGE_SUFFIXES)}>")
    sizes = np.array([image_size(p) for p in stimuli], dtype=np.int32).reshape(-1, 2)
    subjects: dict[str, int] = {}
    parts, empty, no_fix = [], [], []
    for i, path in enumerate(stimuli):
        d = scan_root / path.stem
        files = sorted(f for f in d.iterdir() if f.is_file()) if d.is_dir() else []
        n_before = len(parts)
        for f in files:
            rows = _read_scanpath_file(f)
            if rows.shape[0] == 0:
                empty.append(str(f.relative_to(root)))
                continue
            s = subjects.setdefault(f.name, len(subjects))
            parts.append(_fixatons_rows(rows, i, s, sizes[i]))
        if len(parts) == n_before:
            no_fix.append(path.name)
    report = ReadReport(tuple(empty), tuple(no_fix))
    if empty or no_fix:
        log.warning("%s: %s", root, report)
    return RawDataset(tuple(p.name for p in stimuli), tuple(stimuli), sizes,
                      tuple(subjects), Fixations.concatenate(parts), report)


def _read_scanpath_file(path: pathlib.Path) -> np.ndarray:
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                values = [float(v) for v in fields]
            except ValueError:
                values = []
            if len(values) != 4 or not all(map(math.isfinite, values)):
                raise ValueError(f"{path}:{lineno}: expected 4 numbers 'x y t_start t_end', got {line.rstrip()!r}")
            rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def _fixatons_rows(rows: np.ndarray, image_index: int, subject: int, size: np.ndarray) -> Fixations:
    height, width = size
    x_src, y_src, t0, t1 = rows.T
    n = len(rows)
    initial = np.zeros(n, bool)
    initial[0] = t0[0] <= _MIT1003_INITIAL_ONSET_S + 1e-9
    return Fixations(
        image_index=np.full(n, image_index), x=x_src - 1, y=y_src - 1, index=np.arange(n),
        onset=t0, duration=t1 - t0, subject=np.full(n, subject),
        inside=(x_src > 0) & (x_src < width) & (y_src > 0) & (y_src < height), initial=initial)


_REQUIRED_COLUMNS = ("image", "subject", "x", "y", "t")


def read_fixation_csv(stimuli_dir: str | pathlib.Path, csv_path: str | pathlib.Path, *,
                      one_based: bool = False) -> RawDataset:
    """Reads any fixation dataset given as a stimuli folder and a CSV.

    Required columns ``image,subject,x,y,t``: ``image`` a file name in ``stimuli_dir``, ``x, y`` pixel
    coordinates (0-based unless ``one_based``), ``t`` the index of the fixation in its scanpath.
    Optional: ``t_start_s``, ``t_end_s`` (seconds), ``duration_ms`` (used where ``t_end_s`` is absent),
    ``initial`` (0/1, forced start fixation; without the column none is), ``inside`` (0/1; ANDed with
    the bounds check ``0 <= x < W and 0 <= y < H``). Coordinates may be sub-pixel. Other columns are
    ignored. Only images named in the CSV are part of the dataset. A row that repeats an earlier one
    exactly is dropped and counted (``report.duplicate_rows``).

    Raises:
      ValueError: missing columns, a malformed row, or two different rows for the same fixation
        (image, subject, t) (names file and lines).
      FileNotFoundError: an image named in the CSV is not in ``stimuli_dir`` (names the CSV line).
    """
    stimuli_dir, csv_path = pathlib.Path(stimuli_dir), pathlib.Path(csv_path)
    if not stimuli_dir.is_dir():
        raise FileNotFoundError(f"stimuli folder not found: {stimuli_dir}")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {missing}; found {columns}, "
                             f"required {list(_REQUIRED_COLUMNS)}")
        records, seen, duplicates = [], {}, []
        for row in reader:
            lineno = reader.line_num
            try:
                x, y = float(row["x"]), float(row["y"])
                t = int(row["t"])
                t0 = float(row["t_start_s"]) if row.get("t_start_s") not in (None, "") else math.nan
                t1 = float(row["t_end_s"]) if row.get("t_end_s") not in (None, "") else math.nan
                duration = (float(row["duration_ms"]) / 1000 if row.get("duration_ms") not in (None, "")
                            else t1 - t0)
                initial = bool(int(row["initial"])) if "initial" in row else False
                inside = bool(int(row["inside"])) if "inside" in row else True
                if not (math.isfinite(x) and math.isfinite(y)) or not row["image"] or not row["subject"]:
                    raise ValueError("empty or non-finite field")
            except (TypeError, ValueError) as e:
                raise ValueError(f"{csv_path}:{lineno}: malformed row {row}: {e}") from None
            fixation = (row["image"], row["subject"], t)
            values = (x, y, t0, t1, duration, initial, inside)
            if fixation in seen:
                first, first_values = seen[fixation]
                if first_values != values and not all(a == b or (a != a and b != b)
                                                      for a, b in zip(first_values, values)):
                    raise ValueError(f"{csv_path}:{lineno}: fixation t={t} of {row['subject']!r} on {row['image']!r} "
                                     f"is also line {first}, with other values")
                duplicates.append(lineno)
                continue
            seen[fixation] = (lineno, values)
            records.append((row["image"], row["subject"], x, y, t, t0, duration, initial, inside, lineno))
    names = sorted({r[0] for r in records})
    first_line = {}
    for r in records:
        first_line.setdefault(r[0], r[-1])
    paths = []
    for name in names:
        p = stimuli_dir / name
        if not p.is_file():
            raise FileNotFoundError(f"{csv_path}:{first_line[name]}: image {name!r} not found in {stimuli_dir}")
        paths.append(p)
    sizes = np.array([image_size(p) for p in paths], dtype=np.int32).reshape(-1, 2)
    image_of = {n: i for i, n in enumerate(names)}
    subjects = sorted({r[1] for r in records})
    subject_of = {n: i for i, n in enumerate(subjects)}
    if records:
        img, sub, x, y, t, t0, duration, initial, inside, _ = map(np.array, zip(*records))
    else:
        img = sub = x = y = t = t0 = duration = initial = inside = np.zeros(0)
    img = np.array([image_of[n] for n in img], dtype=np.int32)
    off = 1.0 if one_based else 0.0
    x, y = x.astype(np.float64) - off, y.astype(np.float64) - off
    h, w = sizes[img, 0], sizes[img, 1]
    inside = inside.astype(bool) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    fix = Fixations(image_index=img, x=x, y=y, index=t, onset=t0, duration=duration,
                    subject=np.array([subject_of[n] for n in sub], dtype=np.int32),
                    inside=inside, initial=initial)
    if duplicates:
        log.warning("%s: dropped %d rows that repeat an earlier row exactly (first: line %d)", csv_path,
                    len(duplicates), duplicates[0])
    return RawDataset(tuple(names), tuple(paths), sizes, tuple(subjects), fix,
                      ReadReport(duplicate_rows=tuple(duplicates)))
