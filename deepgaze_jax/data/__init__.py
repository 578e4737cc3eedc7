"""Fixation datasets (MIT1003 and any CSV) through tensorflow-datasets.

Typical use::

    from deepgaze_jax import data
    ds = data.load_mit1003("/path/to/MIT1003", "twosize")          # 104,170 fixations on "all"
    split = data.crossval_splits(len(ds), fold=0)                   # {"train", "val", "test"}
    rows = data.rows_by_image(ds)                                   # per image its rows of ds.fixations

Batches for training and evaluation come from :mod:`deepgaze_jax.input_pipeline` (a
``FixationSet.from_dataset(ds, features)`` of cached backbone features, then ``batches(...)``).
"""

from deepgaze_jax.data.datasets import (FixationDataset, from_raw, load_fixation_csv, load_mit1003,
                                        load_tfds)
from deepgaze_jax.data.fixations import (FilterReport, Fixations, RawDataset, ReadReport,
                                         conventional_filter, read_fixation_csv, read_fixatons)
from deepgaze_jax.data.rows import check_inside, rows_by_image
from deepgaze_jax.data.splits import crossval_splits

__all__ = [
    "FilterReport", "FixationDataset", "Fixations", "RawDataset", "ReadReport", "check_inside",
    "conventional_filter", "crossval_splits", "from_raw", "load_fixation_csv", "load_mit1003",
    "load_tfds", "read_fixation_csv", "read_fixatons", "rows_by_image",
]
