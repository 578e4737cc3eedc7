"""The input pipeline of training and evaluation: cached features and fixations of a set of images
(:class:`FixationSet`), and their batches (:func:`batches`).

A batch holds images of one source (dataset), one image size and one feature shape, so every jitted
step sees static shapes; it is padded to the batch size with weight-0 images, and each image's
fixations are padded to ``max_fixations`` under a mask. The order of an epoch is a pure function of
``(seed, epoch)``. Batches come out as numpy arrays (nothing on an accelerator until the step puts
them there), each stacked only when read.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np


@dataclasses.dataclass
class FixationSet:
    """Cached features and fixations of a set of images.

    Attributes:
      features: per image ``(h, w, C)`` backbone features (:meth:`DeepGaze.features`).
      shapes: per image ``(H, W)``.
      xs, ys: per image fixation coordinates, pixels.
      max_fixations: padded length of the fixation arrays.
      flipped: per image the features of the horizontally mirrored image (for ``TrainConfig.flip``),
        or None.
      sources: per image the index of the dataset it comes from (None: all from source 0); each
        source has its own center bias in training and evaluation, and images of different
        sources never share a batch.
      histories: per image the ``(n_i, K, 2)`` history of each fixation (a scanpath model's input:
        :mod:`deepgaze_jax.data.scanpaths`), or None for a static model.
      images: per item the image it holds fixations of, where an image's fixations are split over
        several items (:meth:`split`); None: item i is image i.
    """

    features: list[np.ndarray]
    shapes: list[tuple[int, int]]
    xs: list[np.ndarray]
    ys: list[np.ndarray]
    max_fixations: int
    flipped: list[np.ndarray] | None = None
    sources: list[int] | None = None
    histories: list[np.ndarray] | None = None
    images: list[int] | None = None

    def __post_init__(self):
        counts = {len(self.features), len(self.shapes), len(self.xs), len(self.ys)}
        if self.sources is not None:
            counts.add(len(self.sources))
        if len(counts) != 1:
            raise ValueError(f"features, shapes, xs, ys (and sources) differ in length: {sorted(counts)}")
        if self.sources is not None and min(self.sources, default=0) < 0:
            raise ValueError(f"sources must be >= 0, got {min(self.sources)}")
        channels = {f.shape[-1] for f in self.features}
        if len(channels) > 1:
            raise ValueError(f"the images' features differ in channels: {sorted(channels)}")
        if self.flipped is not None:
            if len(self.flipped) != len(self.features):
                raise ValueError(f"{len(self.flipped)} flipped features for {len(self.features)} images")
            for i, (f, g) in enumerate(zip(self.features, self.flipped)):
                if f.shape != g.shape:
                    raise ValueError(f"image {i}: flipped features {g.shape} differ from features {f.shape}")
        if self.histories is not None:
            if self.flipped is not None:
                raise ValueError("flip augmentation is not supported with histories")
            if len(self.histories) != len(self.xs):
                raise ValueError(f"{len(self.histories)} histories for {len(self.xs)} images")
            for i, (x, hist) in enumerate(zip(self.xs, self.histories)):
                if hist.ndim != 3 or hist.shape[0] != len(x) or hist.shape[2] != 2:
                    raise ValueError(f"image {i}: histories of shape {hist.shape} for {len(x)} fixations; "
                                     "expected (n, K, 2)")
        for i, (x, y, (h, w)) in enumerate(zip(self.xs, self.ys, self.shapes)):
            if x.shape != y.shape:
                raise ValueError(f"image {i}: xs {x.shape} and ys {y.shape} differ")
            if len(x) > self.max_fixations:
                raise ValueError(f"image {i}: {len(x)} fixations exceed max_fixations={self.max_fixations}")
            if len(x) and (x.min() < 0 or y.min() < 0 or x.max() >= w or y.max() >= h):
                raise ValueError(f"image {i}: fixations outside the {h}x{w} image")

    def __len__(self) -> int:
        return len(self.features)

    @property
    def fixation_count(self) -> int:
        return int(sum(len(x) for x in self.xs))

    def source(self, i: int) -> int:
        """The source (dataset index) of image ``i``."""
        return 0 if self.sources is None else int(self.sources[i])

    @property
    def source_count(self) -> int:
        return 1 if self.sources is None else max(self.sources, default=0) + 1

    @classmethod
    def join(cls, parts: Sequence[FixationSet]) -> FixationSet:
        """The images of several fixation sets in one, part ``k``'s images from source ``k``."""
        if any(p.sources is not None and p.source_count > 1 for p in parts):
            raise ValueError("join takes single-source fixation sets")
        if len({p.flipped is None for p in parts}) > 1:
            raise ValueError("join: either every part carries flipped features or none does")
        cat = lambda name: [item for p in parts for item in getattr(p, name)]  # noqa: E731
        return cls(cat("features"), cat("shapes"), cat("xs"), cat("ys"), max(p.max_fixations for p in parts),
                   None if parts[0].flipped is None else cat("flipped"),
                   [k for k, p in enumerate(parts) for _ in range(len(p))])

    @classmethod
    def from_dataset(cls, dataset, features: Sequence[np.ndarray], max_fixations: int | None = None,
                     flipped: Sequence[np.ndarray] | None = None, histories: np.ndarray | None = None) -> FixationSet:
        """From a :class:`deepgaze_jax.data.FixationDataset` and its cached features (same order; those of
        the mirrored images too, for flip augmentation); each image's fixations in the order of the
        dataset's fixation table, with their rows of ``histories`` (``(F, K, 2)``, aligned with the
        table) where given. Raises ValueError if a fixation lies outside its image."""
        from deepgaze_jax.data import check_inside, rows_by_image

        check_inside(dataset)
        rows = rows_by_image(dataset)
        f = dataset.fixations
        if histories is not None and len(histories) != len(f):
            raise ValueError(f"{len(histories)} histories for {len(f)} fixations")
        longest = max(len(r) for r in rows)
        return cls(list(features), [tuple(int(v) for v in s) for s in dataset.sizes],
                   [f.x[r] for r in rows], [f.y[r] for r in rows], max_fixations or longest,
                   None if flipped is None else list(flipped),
                   histories=None if histories is None else [histories[r] for r in rows])

    def image_of(self, i: int) -> int:
        """The image of item ``i``."""
        return i if self.images is None else int(self.images[i])

    @property
    def image_count(self) -> int:
        return len(self) if self.images is None else max(self.images, default=-1) + 1

    def subset(self, indices: Sequence[int]) -> FixationSet:
        """The images ``indices`` (all their items, where split), renumbered 0..len-1 in that order."""
        if self.images is not None:
            items = [[j for j in range(len(self)) if self.images[j] == i] for i in indices]
            flat = [j for group in items for j in group]
            return dataclasses.replace(self.unsplit_view(flat), images=[k for k, g in enumerate(items) for _ in g])
        return self.unsplit_view(list(indices))

    def unsplit_view(self, indices: Sequence[int]) -> FixationSet:
        """The items ``indices`` as a fixation set of their own (item i of it is image i)."""
        pick = lambda items: None if items is None else [items[i] for i in indices]  # noqa: E731
        return FixationSet(pick(self.features), pick(self.shapes), pick(self.xs), pick(self.ys), self.max_fixations,
                           pick(self.flipped), pick(self.sources), pick(self.histories))

    def split(self, max_fixations: int) -> FixationSet:
        """Each image's fixations in items of at most ``max_fixations`` (as equal as possible) that
        share its features (no copy): a scanpath model computes one map per fixation, so padding every
        image to the longest one would waste the difference. Per-image results are the items' joined
        in order (:meth:`per_image`)."""
        if self.images is not None:
            raise ValueError("this fixation set is split already")
        items: dict[str, list] = {k: [] for k in ("features", "shapes", "xs", "ys", "flipped", "sources",
                                                  "histories", "images")}
        for i in range(len(self)):
            n = len(self.xs[i])
            parts = max(1, math.ceil(n / max_fixations))
            for chunk in np.array_split(np.arange(n), parts):
                items["features"].append(self.features[i])
                items["shapes"].append(self.shapes[i])
                items["xs"].append(self.xs[i][chunk])
                items["ys"].append(self.ys[i][chunk])
                items["flipped"].append(None if self.flipped is None else self.flipped[i])
                items["sources"].append(self.source(i))
                items["histories"].append(None if self.histories is None else self.histories[i][chunk])
                items["images"].append(i)
        return FixationSet(items["features"], items["shapes"], items["xs"], items["ys"], max_fixations,
                           None if self.flipped is None else items["flipped"],
                           None if self.sources is None else items["sources"],
                           None if self.histories is None else items["histories"], items["images"])

    def per_image(self, values: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per-item ``(n_item,)`` values joined into per-image ``(n_i,)`` arrays (item order)."""
        if self.images is None:
            return list(values)
        out: list[list[np.ndarray]] = [[] for _ in range(self.image_count)]
        for i, v in enumerate(values):
            out[self.images[i]].append(v)
        return [np.concatenate(parts) for parts in out]


def loss_weights(data: FixationSet, weighting: str = "image", source_weights: Sequence[float] = ()) -> np.ndarray:
    """``(len(data),)`` loss weight of each image (see :class:`~deepgaze_jax.config.TrainConfig`), mean 1
    over the images.

    ``"image"`` with a single source gives all ones (the per-image average of the log-likelihoods).
    Where images are split into items (:meth:`FixationSet.split`), an item weighs its share of its
    image's fixations, so that each image still weighs as one.
    """
    sources = np.array([data.source(i) for i in range(len(data))], np.int64)
    counts = np.array([len(x) for x in data.xs], np.float64)
    owner = np.array([data.image_of(i) for i in range(len(data))], np.int64)
    share = counts / np.bincount(owner, weights=counts, minlength=data.image_count)[owner].clip(min=1)
    if data.images is None:
        share = np.ones(len(data))
    if weighting == "image":
        w = share
    elif weighting == "fixation":
        w = counts
    elif weighting == "dataset":
        first = np.unique(owner, return_index=True)[1]
        images_per_source = np.bincount(sources[first], minlength=data.source_count)
        w = share / images_per_source[sources]
    else:
        raise ValueError(f"weighting must be 'image', 'fixation' or 'dataset', got {weighting!r}")
    if len(source_weights):
        if len(source_weights) < data.source_count:
            raise ValueError(f"source_weights names {len(source_weights)} sources, the data has {data.source_count}")
        w = w * np.asarray(source_weights, np.float64)[sources]
    if w.sum() <= 0:
        raise ValueError("every training image has loss weight 0")
    return (w * len(w) / w.sum()).astype(np.float32)


@dataclasses.dataclass
class Batch:
    features: np.ndarray  # (B, h, w, C)
    shape: tuple[int, int]  # (H, W)
    xs: np.ndarray  # (B, N)
    ys: np.ndarray  # (B, N)
    mask: np.ndarray  # (B, N) bool
    weight: np.ndarray  # (B,) 1 for real images, 0 for padding
    indices: np.ndarray  # (B,) image indices, -1 for padding
    flipped: bool = False  # mirrored images: their features, fixations at (W - 1 - int(x), y)
    source: int = 0  # the dataset all the batch's images come from
    loss_weight: np.ndarray | None = None  # (B,) each image's weight in the loss (0 for padding); None: weight
    history: np.ndarray | None = None  # (B, N, K, 2) each fixation's history (NaN: missing), scanpath models


def batches(data: FixationSet, batch_size: int, seed: int | None, epoch: int = 0,
            stream: int = 0, flip: bool = False, weights: np.ndarray | None = None) -> collections.abc.Sequence[Batch]:
    """Batches grouped by source, image size and feature shape, padded to ``batch_size`` with weight-0 images.

    With a ``seed`` the order is shuffled deterministically from ``(seed, epoch)`` (and ``stream``, when
    not 0: another sequence of orders); with ``None`` it is the sorted order. Every image appears
    exactly once per epoch. ``flip`` (with a seed) mirrors each batch with probability 1/2, drawn
    after the order (which is the same with and without it). ``weights``: per image loss weights
    (:func:`loss_weights`) for ``Batch.loss_weight``.
    """
    groups: dict[tuple, list[int]] = {}
    for i in range(len(data)):
        groups.setdefault((data.source(i), data.shapes[i], data.features[i].shape), []).append(i)
    rng = np.random.default_rng([seed, epoch] + ([stream] if stream else [])) if seed is not None else None
    chunks = []
    for key in sorted(groups):
        indices = np.array(groups[key])
        if rng is not None:
            indices = rng.permutation(indices)
        chunks += [indices[s : s + batch_size] for s in range(0, len(indices), batch_size)]
    if rng is not None:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    flips = [False] * len(chunks)
    if flip and rng is not None:
        if data.flipped is None:
            raise ValueError("flip augmentation needs the features of the mirrored images (FixationSet.flipped)")
        flips = list(rng.random(len(chunks)) < 0.5)
    return _LazyBatches(data, chunks, batch_size, flips, weights)


class _LazyBatches(collections.abc.Sequence):
    """The batches of an epoch, each stacked only when read (an epoch of VGG features is gigabytes)."""

    def __init__(self, data: FixationSet, chunks: list[np.ndarray], batch_size: int, flips: list[bool],
                 weights: np.ndarray | None):
        self._data, self._chunks, self._batch_size, self._flips = data, chunks, batch_size, flips
        self._weights = weights

    def __len__(self) -> int:
        return len(self._chunks)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return _make_batch(self._data, self._chunks[index], self._batch_size, self._flips[index], self._weights)


def _make_batch(data: FixationSet, chunk: np.ndarray, batch_size: int, flipped: bool = False,
                weights: np.ndarray | None = None) -> Batch:
    n = data.max_fixations
    pad = batch_size - len(chunk)
    padded = np.concatenate([chunk, np.full(pad, chunk[0])])
    xs = np.zeros((batch_size, n), np.float32)
    ys = np.zeros((batch_size, n), np.float32)
    mask = np.zeros((batch_size, n), bool)
    for row, i in enumerate(chunk):
        k = len(data.xs[i])
        xs[row, :k], ys[row, :k], mask[row, :k] = data.xs[i], data.ys[i], True
    if flipped:  # pixel column j -> W - 1 - j (the model reads the pixel int(x))
        xs = np.where(mask, data.shapes[chunk[0]][1] - 1 - np.floor(xs), 0).astype(np.float32)
    history = None
    if data.histories is not None:
        k = data.histories[chunk[0]].shape[1]
        history = np.full((batch_size, n, k, 2), np.nan, np.float32)
        for row, i in enumerate(chunk):
            history[row, : len(data.xs[i])] = data.histories[i]
    real = np.concatenate([np.ones(len(chunk), np.float32), np.zeros(pad, np.float32)])
    return Batch(
        features=np.stack([(data.flipped if flipped else data.features)[i] for i in padded]),
        shape=data.shapes[chunk[0]],
        xs=xs,
        ys=ys,
        mask=mask,
        weight=real,
        indices=np.concatenate([chunk, np.full(pad, -1)]).astype(np.int64),
        flipped=flipped,
        source=data.source(chunk[0]),
        loss_weight=None if weights is None else np.concatenate(
            [np.asarray(weights, np.float32)[chunk], np.zeros(pad, np.float32)]),
        history=history,
    )


CenterBiases = Callable[[tuple[int, int]], np.ndarray] | Sequence[Callable[[tuple[int, int]], np.ndarray]]
"""A center bias ``(H, W) -> (H, W)`` log density (nats) for an image size, or one such per source."""


def centerbias_of(centerbias: CenterBiases, batch: Batch) -> np.ndarray:
    """The ``(H, W)`` center bias log density of a batch's images (its source's, where there are several)."""
    if callable(centerbias):
        if batch.source != 0:
            raise ValueError(f"a batch of source {batch.source}, but one center bias for a single source")
        return centerbias(batch.shape)
    if batch.source >= len(centerbias):
        raise ValueError(f"a batch of source {batch.source}, but center biases for {len(centerbias)} sources")
    return centerbias[batch.source](batch.shape)
