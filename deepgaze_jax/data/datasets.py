"""Loading fixation datasets into one in-memory structure for training and evaluation."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pathlib
from typing import Protocol, Sequence

import numpy as np
import tensorflow_datasets as tfds

from deepgaze_jax.data import builders
from deepgaze_jax.data.fixations import FilterReport, Fixations, RawDataset, conventional_filter
from deepgaze_jax.images import load_image

log = logging.getLogger(__name__)


class ImageSource(Protocol):
    """Random access to images: ``source[i]`` is uint8 ``(H, W, 3)``."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class FixationDataset:
    """Images (random access, decoded on demand) and their fixations.

    Attributes:
      images: ``images[i]`` is uint8 ``(H, W, 3)`` for image ``i`` (None where only fixations are
        needed, e.g. fitting baselines).
      image_ids: (I,) stimulus names.
      sizes: int32 (I, 2), ``(height, width)`` in pixels.
      subjects: (S,) observer names; ``fixations.subject`` indexes this.
      fixations: the fixation table (after the conventional filter unless it was switched off).
      filter_report: what the conventional filter dropped (None if not applied).
    """

    images: ImageSource | None
    image_ids: tuple[str, ...]
    sizes: np.ndarray
    subjects: tuple[str, ...]
    fixations: Fixations
    filter_report: FilterReport | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    def subset(self, image_indices: Sequence[int]) -> "FixationDataset":
        """The dataset restricted to ``image_indices`` (e.g. a CV split), renumbered 0..len-1."""
        idx = np.asarray(image_indices, dtype=np.int64)
        new_of_old = np.full(len(self), -1, np.int64)
        new_of_old[idx] = np.arange(len(idx))
        f = self.fixations.select(new_of_old[self.fixations.image_index] >= 0)
        f = dataclasses.replace(f, image_index=new_of_old[f.image_index].astype(np.int32))
        return FixationDataset(_Subset(self.images, idx), tuple(self.image_ids[i] for i in idx),
                               self.sizes[idx], self.subjects, f, self.filter_report)


class _Subset:
    def __init__(self, source: ImageSource, indices: np.ndarray):
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.source[int(self.indices[i])]


class _FileImages:
    def __init__(self, paths: Sequence[pathlib.Path]):
        self.paths = tuple(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        """The stimulus' stored pixel grid (the one its fixations were recorded on), as the builders store it."""
        path = self.paths[i]
        if not path.exists():
            raise FileNotFoundError(f"stimulus file missing: {path}")
        try:
            return load_image(path, max_pixels=None, as_stored=True)
        except Exception as e:  # Pillow raises several types for unreadable files
            reason = str(e).removeprefix(f"{path}: ")  # an ImageError names the file already
            raise ValueError(f"corrupt or unreadable image {path}: {reason}") from e


class _TfdsImages:
    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.source[int(i)]["image"], dtype=np.uint8)


def _maybe_filter(fixations: Fixations, apply: bool) -> tuple[Fixations, FilterReport | None]:
    if not apply:
        return fixations, None
    return conventional_filter(fixations)


def from_raw(raw: RawDataset, *, filter_conventional: bool = True) -> FixationDataset:
    """A dataset straight from the files (no tfds): images decoded from disk on access."""
    fix, report = _maybe_filter(raw.fixations, filter_conventional)
    return FixationDataset(_FileImages(raw.image_paths), raw.image_ids, raw.sizes, raw.subjects, fix, report)


def load_tfds(builder: tfds.core.DatasetBuilder, *, split: str = "train",
              filter_conventional: bool = True) -> FixationDataset:
    """Reads a prepared fixation builder through ``as_data_source`` (array_record, no TensorFlow).

    The fixation table is read without decoding images; images decode on access. With
    ``filter_conventional`` (default) the forced initial fixations and fixations outside the image are
    dropped and counted in ``filter_report`` (also logged).
    """
    meta = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    parts, ids, sizes = [], [], []
    for i in range(len(meta)):
        ex = meta[i]
        if int(ex["image_index"]) != i:
            raise ValueError(f"{builder.name}: record {i} holds image_index {ex['image_index']}; "
                             "the dataset was built with shuffling")
        fx = ex["fixations"]
        parts.append(Fixations(image_index=np.full(len(fx["x"]), i), **{k: fx[k] for k in (
            "x", "y", "index", "onset", "duration", "subject", "inside", "initial")}))
        ids.append(ex["image_id"].decode() if isinstance(ex["image_id"], bytes) else str(ex["image_id"]))
        sizes.append(ex["size"])
    subjects = tuple(builder.info.metadata["subjects"])
    for key in ("empty_scanpaths", "images_without_fixations", "duplicate_rows"):
        if skipped := list(builder.info.metadata.get(key) or []):
            log.warning("%s: %d %s when building: %s", builder.name, len(skipped), key.replace("_", " "),
                        skipped[:5])
    fix, report = _maybe_filter(Fixations.concatenate(parts), filter_conventional)
    return FixationDataset(_TfdsImages(builder.as_data_source(split=split)), tuple(ids),
                           np.array(sizes, np.int32).reshape(-1, 2), subjects, fix, report)


def _prepare(builder: tfds.core.DatasetBuilder, manual_dir: str | pathlib.Path) -> None:
    tfds.disable_progress_bar()  # its bars write escape codes into logs and one-line error output
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))


def load_mit1003(manual_dir: str | pathlib.Path, config: str = "all", *,
                 data_dir: str | pathlib.Path | None = None,
                 filter_conventional: bool = True) -> FixationDataset:
    """MIT1003 from its FixaTons folder, built once into ``data_dir`` (tfds array_record) and cached.

    Args:
      manual_dir: the folder with ``STIMULI/`` and ``SCANPATHS/`` (or its parent).
      config: "all" (1003 images), "onesize" (463 images of 1024x768) or "twosize" (all images resized
        to 1024x768 / 768x1024).
      data_dir: tfds data folder (default: tfds' own, ``~/tensorflow_datasets``).
      filter_conventional: drop forced initial and outside fixations (104,170 remain on "all").
    """
    b = builders.Mit1003(config=config, data_dir=None if data_dir is None else str(data_dir),
                         file_format="array_record")
    _prepare(b, manual_dir)
    return load_tfds(b, filter_conventional=filter_conventional)


def load_fixation_csv(manual_dir: str | pathlib.Path, name: str, *, stimuli: str = "STIMULI",
                      csv: str = "fixations.csv", one_based: bool = False, resize: str | None = None,
                      data_dir: str | pathlib.Path | None = None,
                      filter_conventional: bool = True) -> FixationDataset:
    """Any dataset given as ``manual_dir/<stimuli>/`` and ``manual_dir/<csv>`` (see
    :func:`deepgaze_jax.data.fixations.read_fixation_csv`), built once as tfds config
    ``<name>_<digest>``: the digest covers the CSV's bytes, the stimuli's names and file sizes and the
    options, so an edited CSV or stimuli folder is built anew, never read from a stale build."""
    manual_dir = pathlib.Path(manual_dir)
    digest = hashlib.sha256(repr((stimuli, csv, one_based, resize)).encode())
    csv_path = manual_dir / csv
    if not csv_path.is_file():
        raise FileNotFoundError(f"fixation CSV not found: {csv_path}")
    digest.update(csv_path.read_bytes())
    stimuli_dir = manual_dir / stimuli
    if not stimuli_dir.is_dir():
        raise FileNotFoundError(f"stimuli folder not found: {stimuli_dir}")
    for entry in sorted(stimuli_dir.iterdir()):
        digest.update(f"{entry.name}|{entry.stat().st_size}\n".encode())
    safe = "".join(c if c.isalnum() else "_" for c in name.lower())
    cfg = builders.FixationCsvConfig(name=f"{safe}_{digest.hexdigest()[:12]}", stimuli=stimuli, csv=csv,
                                     one_based=one_based, resize=resize)
    b = builders.FixationCsv(config=cfg, data_dir=None if data_dir is None else str(data_dir),
                             file_format="array_record")
    _prepare(b, manual_dir)
    return load_tfds(b, filter_conventional=filter_conventional)
