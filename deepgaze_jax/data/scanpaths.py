"""Scanpaths from fixation tables: the history of every fixation, for DeepGaze III.

A scanpath is the fixations of one observer on one image, ordered by their index in the scanpath
(``Fixations.index``). The history of a fixation is the ``length`` fixations before it in its scanpath
that lie inside the image, most recent first, NaN-padded where the scanpath has fewer: ``(length, 2)``
pixel coordinates ``(x, y)``. Fixations outside the image are left out of histories (as pysaliency's
MIT1003 scanpaths leave them out); the forced initial fixation of MIT1003 is history, never a target
(the targets are the conventional training set: :func:`~deepgaze_jax.data.conventional_filter`).

Onsets must not decrease along a scanpath's indices (where they are known); a table where they do,
or where two fixations share an index, is refused with an error naming the image and observer.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from deepgaze_jax.data.datasets import FixationDataset
from deepgaze_jax.data.fixations import Fixations, conventional_filter


def scanpath_order(fixations: Fixations, image_ids=None, subjects=None) -> np.ndarray:
    """Row order of ``fixations`` by (image, observer, index in the scanpath); checks each scanpath.

    Raises ValueError if two fixations of a scanpath share an index or if onsets decrease along it
    (names the image and observer, from ``image_ids`` and ``subjects`` where given).
    """
    f = fixations
    order = np.lexsort((f.index, f.subject, f.image_index))
    img, sub, idx, onset = f.image_index[order], f.subject[order], f.index[order], f.onset[order]
    same = (img[1:] == img[:-1]) & (sub[1:] == sub[:-1])
    name = lambda k: (f"image {image_ids[img[k]] if image_ids is not None else img[k]}, observer "  # noqa: E731
                      f"{subjects[sub[k]] if subjects is not None else sub[k]}")
    repeated = same & (idx[1:] == idx[:-1])
    if repeated.any():
        k = int(np.flatnonzero(repeated)[0])
        raise ValueError(f"scanpath of {name(k)}: two fixations with index {idx[k]}")
    with np.errstate(invalid="ignore"):
        backwards = same & (onset[1:] < onset[:-1])
    if backwards.any():
        k = int(np.flatnonzero(backwards)[0])
        raise ValueError(f"scanpath of {name(k)}: onsets are not sorted: fixation {idx[k + 1]} starts at "
                         f"{onset[k + 1]:.3f} s, before fixation {idx[k]} at {onset[k]:.3f} s")
    return order


def histories(fixations: Fixations, length: int, image_ids=None, subjects=None) -> np.ndarray:
    """``(F, length, 2)`` float32: for every row of ``fixations``, the inside fixations before it in
    its scanpath, most recent first, NaN where there are fewer. Checks as :func:`scanpath_order`."""
    order = scanpath_order(fixations, image_ids, subjects)
    f = fixations
    out = np.full((len(f), length, 2), np.nan, np.float32)
    img, sub = f.image_index[order], f.subject[order]
    start = np.ones(len(order), bool)
    start[1:] = (img[1:] != img[:-1]) | (sub[1:] != sub[:-1])
    path = np.cumsum(start) - 1  # scanpath number of each sorted row
    inside = f.inside[order]
    xy = np.stack([f.x[order], f.y[order]], axis=1).astype(np.float32)
    # Rank of each sorted row among its scanpath's inside fixations: the k-th previous inside
    # fixation of row r is the inside row of rank (rank_before(r) - k) in the same scanpath.
    inside_rows = np.flatnonzero(inside)
    count_before = np.cumsum(inside) - inside  # inside rows strictly before, over the whole table
    first_of_path = count_before[np.flatnonzero(start)][path]
    for k in range(1, length + 1):
        rank = count_before - k
        ok = rank >= first_of_path
        out[order[ok], k - 1] = xy[inside_rows[rank[ok]]]
    return out


@dataclasses.dataclass(frozen=True)
class ScanpathDataset:
    """A dataset's conventional fixations (the targets) with the history of each.

    Attributes:
      dataset: the filtered dataset (as :func:`~deepgaze_jax.data.load_mit1003` returns by default).
      histories: ``(F, length, 2)`` float32, row f the history of ``dataset.fixations`` row f.
    """

    dataset: FixationDataset
    histories: np.ndarray

    def history_lengths(self) -> np.ndarray:
        """``(F,)`` how many previous fixations each target has (0..length)."""
        return (~np.isnan(self.histories[..., 0])).sum(axis=1)


def with_histories(unfiltered: FixationDataset, length: int = 4) -> ScanpathDataset:
    """The targets and histories of a dataset loaded with ``filter_conventional=False``: histories
    from every inside fixation (the forced initial ones included), targets the rows the conventional
    filter keeps, in its order."""
    if unfiltered.filter_report is not None:
        raise ValueError("with_histories needs the unfiltered table (load with filter_conventional=False): "
                         "the filtered one has lost the forced initial fixations")
    hist = histories(unfiltered.fixations, length, unfiltered.image_ids, unfiltered.subjects)
    f = unfiltered.fixations
    keep = ~f.initial & f.inside
    filtered, report = conventional_filter(f)
    dataset = dataclasses.replace(unfiltered, fixations=filtered, filter_report=report)
    return ScanpathDataset(dataset, hist[keep])
