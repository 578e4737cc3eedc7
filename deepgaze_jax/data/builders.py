"""tensorflow-datasets builders for fixation datasets (no TensorFlow needed).

Build with ``file_format="array_record"`` and read with ``builder.as_data_source()`` (random access,
numpy out, images decoded by PIL); TensorFlow is never imported, so it cannot claim a GPU.

* :class:`Mit1003`: the MIT1003 eye-tracking data in the FixaTons layout (manual download).
* :class:`FixationCsv`: any dataset given as a stimuli folder and a fixation CSV, e.g. CAT2000, OSIE,
  SALICON or your own experiment; the dataset name is the config name.

One example per image: ``image`` uint8 (H, W, 3), ``image_id`` text, ``image_index`` int32 (position
in this config, also the record index), ``size`` int32 (2,) = (H, W) of the stored image,
``original_size`` (H, W) on disk, and ``fixations`` a dict of (n,) arrays: ``x``, ``y`` (float32, 0-based
pixels of the stored image), ``index`` (position in scanpath), ``onset``, ``duration`` (float32 s),
``subject`` (int32 into ``info.metadata["subjects"]``), ``inside``, ``initial`` (bool). Every recorded
fixation is stored with its flags; the conventional filter is applied when loading
(:func:`deepgaze_jax.data.load_tfds`).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image
from tensorflow_datasets.core import utils as tfds_utils

from deepgaze_jax.data.fixations import RawDataset, read_fixation_csv, read_fixatons

TWOSIZE_LANDSCAPE = (768, 1024)  # (H, W)
TWOSIZE_PORTRAIT = (1024, 768)

_CITATION_MIT1003 = """\
@inproceedings{judd2009learning,
  title={Learning to predict where humans look}, author={Judd, Tilke and Ehinger, Krista and
  Durand, Fr{\\'e}do and Torralba, Antonio}, booktitle={ICCV}, year={2009}}
@article{zanca2018fixatons, title={FixaTons: A collection of Human Fixations Datasets and Metrics for
  Scanpath Similarity}, author={Zanca, Dario and Serchi, Valeria and Piu, Pietro and Rosini, Francesca
  and Rufa, Alessandra}, journal={arXiv:1802.02534}, year={2018}}
"""


def _features() -> tfds.features.FeaturesDict:
    vector = lambda dtype: tfds.features.Tensor(shape=(None,), dtype=dtype)  # noqa: E731
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
        "image_id": tfds.features.Text(),
        "image_index": tfds.features.Scalar(dtype=np.int32),
        "size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
        "original_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
        "fixations": tfds.features.FeaturesDict({
            "x": vector(np.float32), "y": vector(np.float32), "index": vector(np.int32),
            "onset": vector(np.float32), "duration": vector(np.float32),
            "subject": vector(np.int32), "inside": vector(np.bool_), "initial": vector(np.bool_),
        }),
    })


def twosize_shape(height: int, width: int) -> tuple[int, int]:
    """The ``twosize`` target ``(H, W)``: 768x1024 for landscape (W >= H), 1024x768 for portrait."""
    return TWOSIZE_LANDSCAPE if width >= height else TWOSIZE_PORTRAIT


def generate_examples(raw: RawDataset, images: np.ndarray | None = None,
                      resize: str | None = None):
    """Yields ``(key, example)`` for the images ``images`` (indices into ``raw``; default all).

    ``resize="twosize"`` resizes every image to :func:`twosize_shape` (bicubic) and scales the
    fixations with it (``x * W_new / W``). Images are decoded fully here, so a corrupt or truncated
    file fails the build with an error naming it.
    """
    if images is None:
        images = np.arange(len(raw.image_ids))
    order = np.argsort(raw.fixations.image_index, kind="stable")
    starts = np.searchsorted(raw.fixations.image_index[order], np.arange(len(raw.image_ids) + 1))
    for new_index, i in enumerate(images):
        path = raw.image_paths[i]
        data = path.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                fmt, was_rgb = img.format, img.mode == "RGB"
                rgb = img.convert("RGB")  # a copy that outlives the file
        except Exception as e:
            raise ValueError(f"corrupt or unreadable image {path}: {e}") from e
        h, w = raw.sizes[i]
        rows = order[starts[i]:starts[i + 1]]
        f = raw.fixations.select(rows)
        x, y = f.x, f.y
        new_h, new_w = h, w
        if resize == "twosize":
            new_h, new_w = twosize_shape(h, w)
            if (new_h, new_w) != (h, w):
                rgb = rgb.resize((new_w, new_h), Image.BICUBIC)
                x = (x * (new_w / w)).astype(np.float32)
                y = (y * (new_h / h)).astype(np.float32)
        elif resize is not None:
            raise ValueError(f"unknown resize {resize!r}")
        if not was_rgb or (new_h, new_w) != (h, w) or fmt not in ("JPEG", "PNG"):
            buf = io.BytesIO()
            if fmt == "JPEG":
                rgb.save(buf, format="JPEG", quality=95)
            else:
                rgb.save(buf, format="PNG")
            data = buf.getvalue()
        yield int(new_index), {
            "image": data, "image_id": raw.image_ids[i], "image_index": int(new_index),
            "size": np.array([new_h, new_w], np.int32), "original_size": np.array([h, w], np.int32),
            "fixations": {"x": x, "y": y, "index": f.index, "onset": f.onset, "duration": f.duration,
                          "subject": f.subject, "inside": f.inside, "initial": f.initial},
        }


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    # tfds' default `code_path` imports `importlib_resources`, which tfds uses but does not declare
    # as a dependency on Python >= 3.9; the module file is all it needs here.
    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path | None:
        return epath.Path(inspect.getfile(cls))


@dataclasses.dataclass
class Mit1003Config(tfds.core.BuilderConfig):
    """``images``: "all" or "onesize" (only 1024x768); ``resize``: None or "twosize"."""

    images: str = "all"
    resize: str | None = None


class Mit1003(_Builder):
    """MIT1003 (Judd et al. 2009): 1003 images, 15 observers, 3 s free viewing."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "From the FixaTons layout; every fixation with inside/initial flags."}
    BUILDER_CONFIGS = [
        Mit1003Config(name="all", description="All 1003 images at their original size."),
        Mit1003Config(name="onesize", description="The 463 images of size 1024x768 (W x H).",
                      images="onesize"),
        Mit1003Config(name="twosize", description="All images resized to 1024x768 or 768x1024 "
                      "(landscape/portrait), fixations scaled.", resize="twosize"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Place MIT1003 in the FixaTons layout in `manual_dir` (or in `manual_dir/MIT1003`):
      STIMULI/<image_id>.jpeg          the 1003 stimuli
      SCANPATHS/<image_id>/<subject>   rows `x y t_start t_end`, 1-based pixels, seconds
    FixaTons: https://github.com/dariozanca/FixaTons (data/FixaTons/MIT1003 in its releases).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description="MIT1003 eye fixations (FixaTons layout).", features=_features(),
            homepage="https://people.csail.mit.edu/tjudd/WherePeopleLook/", citation=_CITATION_MIT1003,
            disable_shuffling=True, metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
        root = pathlib.Path(dl_manager.manual_dir)
        if not (root / "STIMULI").is_dir() and (root / "MIT1003" / "STIMULI").is_dir():
            root = root / "MIT1003"
        raw = read_fixatons(root)
        images = np.arange(len(raw.image_ids))
        if self.builder_config.images == "onesize":
            images = images[(raw.sizes[:, 0] == 768) & (raw.sizes[:, 1] == 1024)]
        _set_metadata(self.info, raw)
        return {"train": self._generate_examples(raw, images, self.builder_config.resize)}

    def _generate_examples(self, raw, images, resize):
        yield from generate_examples(raw, images, resize)


@dataclasses.dataclass
class FixationCsvConfig(tfds.core.BuilderConfig):
    """A dataset under ``manual_dir``: ``stimuli`` (folder) and ``csv`` (file) relative to it.

    ``one_based``: CSV coordinates are 1-based (MATLAB); ``resize``: None or "twosize".
    """

    stimuli: str = "STIMULI"
    csv: str = "fixations.csv"
    one_based: bool = False
    resize: str | None = None


class FixationCsv(_Builder):
    """Any fixation dataset from a stimuli folder and a CSV ``image,subject,x,y,t[,...]``.

    Example::

        cfg = FixationCsvConfig(name="cat2000", stimuli="Stimuli", csv="fixations.csv")
        b = FixationCsv(config=cfg, data_dir="~/tfds", file_format="array_record")
        b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="/data/CAT2000"))
    """

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [FixationCsvConfig(name="default")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put the stimuli in `manual_dir/<config.stimuli>` and a CSV `manual_dir/<config.csv>` with columns
    image,subject,x,y,t (image = file name in the stimuli folder, x/y pixels, 0-based unless
    config.one_based, t = index in scanpath) and optionally t_start_s,t_end_s,initial,inside.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description="Fixations from a stimuli folder and a CSV.",
                                     features=_features(), disable_shuffling=True,
                                     metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
        root = pathlib.Path(dl_manager.manual_dir)
        cfg = self.builder_config
        raw = read_fixation_csv(root / cfg.stimuli, root / cfg.csv, one_based=cfg.one_based)
        _set_metadata(self.info, raw)
        return {"train": self._generate_examples(raw, None, cfg.resize)}

    def _generate_examples(self, raw, images, resize):
        yield from generate_examples(raw, images, resize)


def _set_metadata(info: tfds.core.DatasetInfo, raw: RawDataset) -> None:
    info.metadata["subjects"] = list(raw.subjects)
    info.metadata["empty_scanpaths"] = list(raw.report.empty_scanpaths)
    info.metadata["images_without_fixations"] = list(raw.report.images_without_fixations)
    info.metadata["duplicate_rows"] = list(raw.report.duplicate_rows)
