"""A dataset's fixation table by image: the rows of each image, and the check that every fixation
lies inside its image.

Training and evaluation read fixations per image through these (the input pipeline,
:mod:`deepgaze_jax.input_pipeline`, builds its fixation sets with them).
"""

from __future__ import annotations

import numpy as np

from deepgaze_jax.data.datasets import FixationDataset


def rows_by_image(dataset: FixationDataset) -> list[np.ndarray]:
    """For each image, the rows of ``dataset.fixations`` on it (in table order)."""
    idx = dataset.fixations.image_index
    order = np.argsort(idx, kind="stable")
    starts = np.searchsorted(idx[order], np.arange(len(dataset) + 1))
    return [order[starts[i]:starts[i + 1]] for i in range(len(dataset))]


def check_inside(dataset: FixationDataset) -> None:
    """Raises if a fixation does not index a pixel of its image (e.g. unfiltered data)."""
    f = dataset.fixations
    h, w = dataset.sizes[f.image_index, 0], dataset.sizes[f.image_index, 1]
    bad = ~((f.x >= 0) & (f.x < w) & (f.y >= 0) & (f.y < h))
    if bad.any():
        rows = np.flatnonzero(bad)
        ids = sorted({dataset.image_ids[i] for i in f.image_index[rows[:20]]})
        raise ValueError(f"{bad.sum()} fixations lie outside their image (e.g. rows {rows[:5].tolist()} on "
                         f"{ids[:3]}); apply the conventional filter or drop them")
