"""Maximum-likelihood training of the DeepGaze readout (the backbone stays frozen).

The backbone is run once per image (:func:`cache_features`); training then needs only the cached
features, the fixations and the center bias. The loss is the negative log-likelihood in bits per
fixation relative to uniform, averaged per image. One jitted step updates the head parameters and the
optimizer state (donated); the frozen backbone never enters it. Batches are sharded over all devices
along the batch axis (``jax.sharding``), multi-host through ``jax.distributed``
(:mod:`deepgaze_jax.distributed`: every process runs :func:`fit` on the same data). Checkpoints are
written with orbax after every epoch (the latest, for resuming) and whenever validation improves (the
best); the config and the data split are saved as JSON beside them.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import json
import math
import os
import pathlib
import tempfile
import types
import typing
import zlib
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from deepgaze_jax import distributed
from deepgaze_jax import model as model_lib
from deepgaze_jax.likelihood import bits_relative_to_uniform

MODELS: dict[str, Callable[[], model_lib.DeepGaze]] = {
    "deepgaze1": model_lib.deepgaze1,
    "deepgaze2_vgg16": lambda: model_lib.deepgaze2("vgg16"),
    "deepgaze2_vgg19": lambda: model_lib.deepgaze2("vgg19"),
    # Block 5 and block 4's conv4_3 / relu4_3: 3584 channels (this project's variant, not the paper's).
    "deepgaze2_vgg16_block4": lambda: model_lib.deepgaze2("vgg16", extra_layers=model_lib.BLOCK4_LAYERS),
    # DeepGaze II's features with the DeepGaze IIE / III readout (layer norm, 8-16-1, softplus).
    "deepgaze2_vgg16_iie": lambda: model_lib.deepgaze2("vgg16", readout="iie"),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters; saved as JSON beside every checkpoint.

    Attributes:
      model: a key of :data:`MODELS`: ``"deepgaze1"``, ``"deepgaze2_vgg16"``, ``"deepgaze2_vgg19"`` or
        ``"deepgaze2_vgg16_block4"`` (block 4's ``conv4_3, relu4_3`` read besides block 5).
      learning_rate: Adam's initial learning rate.
      schedule: ``"step"`` (multiply by ``decay_factor`` at each of ``decay_epochs``), ``"cosine"``
        (to 0 over ``max_epochs``) or ``"constant"``.
      decay_epochs: epochs at which the step schedule decays.
      decay_factor: the step schedule's factor.
      max_epochs: upper bound on epochs.
      patience: stop after this many epochs without a better validation log-likelihood.
      batch_size: images per step (global, over all devices).
      seed: seed of the head initialisation and the data order.
      feature_dtype: dtype of the cached features (``"float32"`` or ``"bfloat16"``).
      weight_decay: decoupled weight decay (AdamW, scaled by the learning rate) of the readout
        kernels; biases, sigma and the center-bias weight are not decayed.
      dropout: probability of zeroing each backbone feature in training (the rest scaled by
        ``1 / (1 - dropout)``); ``dropout_channels`` drops whole channels of an image instead.
      flip: horizontal-flip augmentation: each training batch is mirrored with probability 1/2 (the
        features of the mirrored images, which the training data must carry, and the fixations and
        center bias mirrored).
      weighting: how the loss weighs the training images of several datasets (sources of a
        :class:`FixationSet`): ``"image"`` every image alike (the loss is the per-image average
        log-likelihood), ``"fixation"`` every fixation alike (images weighted by their fixation
        count), ``"dataset"`` every dataset alike (each source's images share one equal total weight).
      source_weights: a further factor per source (source 0 first; empty: all 1), e.g. ``(1.0, 0.5)``
        to count the second dataset half.
    """

    model: str = "deepgaze1"
    learning_rate: float = 1e-2
    schedule: str = "step"
    decay_epochs: tuple[int, ...] = (30, 45)
    decay_factor: float = 0.1
    max_epochs: int = 60
    patience: int = 10
    batch_size: int = 4
    seed: int = 0
    feature_dtype: str = "float32"
    weight_decay: float = 0.0
    dropout: float = 0.0
    dropout_channels: bool = False
    flip: bool = False
    weighting: str = "image"
    source_weights: tuple[float, ...] = ()

    def __post_init__(self):
        for f in dataclasses.fields(self):
            values = getattr(self, f.name)
            for v in values if isinstance(values, tuple) else (values,):
                if isinstance(v, float) and not math.isfinite(v):
                    raise ValueError(f"config: {f.name} must be finite, got {v}")
        if self.weighting not in ("image", "fixation", "dataset"):
            raise ValueError(f"config: weighting must be 'image', 'fixation' or 'dataset', got {self.weighting!r}")
        if any(w < 0 for w in self.source_weights) or (self.source_weights and max(self.source_weights) == 0):
            raise ValueError(f"config: source_weights must be >= 0 and not all 0, got {list(self.source_weights)}")
        if not 0 < self.decay_factor <= 1:
            raise ValueError(f"config: decay_factor must be in (0, 1], got {self.decay_factor}")
        if self.patience < 1:
            raise ValueError(f"config: patience must be >= 1, got {self.patience}")
        if any(e < 1 for e in self.decay_epochs):
            raise ValueError(f"config: decay_epochs must be >= 1, got {list(self.decay_epochs)}")
        if self.model not in MODELS:
            raise ValueError(f"config: model must be one of {sorted(MODELS)}, got {self.model!r}")
        if self.schedule not in ("step", "cosine", "constant"):
            raise ValueError(f"config: schedule must be 'step', 'cosine' or 'constant', got {self.schedule!r}")
        if self.feature_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"config: feature_dtype must be 'float32' or 'bfloat16', got {self.feature_dtype!r}")
        for name in ("max_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"config: {name} must be >= 1, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ValueError(f"config: weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"config: dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.learning_rate <= 1:
            raise ValueError(f"config: learning_rate must be in (0, 1], got {self.learning_rate}")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a dict, refusing unknown keys and values of the wrong type (named in the error)."""
        if not isinstance(values, dict):
            raise ValueError(f"config: expected a JSON object of settings, got {type(values).__name__} {values!r}")
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(values) - set(hints))
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown}; known: {sorted(hints)}")
        clean = {}
        for key, value in values.items():
            clean[key] = _coerce(key, value, hints[key])
        return cls(**clean)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def build_model(self) -> model_lib.DeepGaze:
        return dataclasses.replace(MODELS[self.model](), dtype=self.feature_dtype)


def _coerce(key: str, value, hint):
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        ok = (lambda v: isinstance(v, int) and not isinstance(v, bool)) if item is int else (
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
        if not isinstance(value, (list, tuple)) or not all(ok(v) for v in value):
            raise ValueError(f"config: {key} must be a list of {'integers' if item is int else 'numbers'}, "
                             f"got {value!r}")
        return tuple(item(v) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ValueError(f"config: {key} must be of type {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


# --- data ------------------------------------------------------------------------------------


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
    """

    features: list[np.ndarray]
    shapes: list[tuple[int, int]]
    xs: list[np.ndarray]
    ys: list[np.ndarray]
    max_fixations: int
    flipped: list[np.ndarray] | None = None
    sources: list[int] | None = None

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
                     flipped: Sequence[np.ndarray] | None = None) -> FixationSet:
        """From a :class:`deepgaze_jax.data.FixationDataset` and its cached features (same order; those of
        the mirrored images too, for flip augmentation); each image's fixations in the order of the
        dataset's fixation table."""
        from deepgaze_jax.data import rows_by_image

        rows = rows_by_image(dataset)
        f = dataset.fixations
        longest = max(len(r) for r in rows)
        return cls(list(features), [tuple(int(v) for v in s) for s in dataset.sizes],
                   [f.x[r] for r in rows], [f.y[r] for r in rows], max_fixations or longest,
                   None if flipped is None else list(flipped))

    def subset(self, indices: Sequence[int]) -> FixationSet:
        pick = lambda items: None if items is None else [items[i] for i in indices]  # noqa: E731
        return FixationSet(pick(self.features), pick(self.shapes), pick(self.xs), pick(self.ys), self.max_fixations,
                           pick(self.flipped), pick(self.sources))


def loss_weights(data: FixationSet, weighting: str = "image", source_weights: Sequence[float] = ()) -> np.ndarray:
    """``(len(data),)`` loss weight of each image (see :class:`TrainConfig`), mean 1 over the images.

    ``"image"`` with a single source gives all ones (the per-image average of the log-likelihoods).
    """
    sources = np.array([data.source(i) for i in range(len(data))], np.int64)
    if weighting == "image":
        w = np.ones(len(data))
    elif weighting == "fixation":
        w = np.array([len(x) for x in data.xs], np.float64)
    elif weighting == "dataset":
        w = 1.0 / np.bincount(sources)[sources]
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


# --- the step --------------------------------------------------------------------------------


def fixation_bits(model: model_lib.DeepGaze, head: dict, features: jax.Array, centerbias: jax.Array,
                  xs: jax.Array, ys: jax.Array) -> jax.Array:
    """``(B, N)`` log-likelihood of each fixation, bits relative to uniform.

    ``centerbias`` is one ``(H, W)`` log density shared by the batch (all images have that size).
    """
    height, width = centerbias.shape
    cb = jnp.broadcast_to(centerbias, (features.shape[0], height, width))
    return bits_relative_to_uniform(model.log_density_at(head, features, cb, xs, ys), height, width)


def per_image_log_likelihood(model: model_lib.DeepGaze, head: dict, features: jax.Array, centerbias: jax.Array,
                             xs: jax.Array, ys: jax.Array, mask: jax.Array) -> jax.Array:
    """``(B,)`` mean log-likelihood of each image's fixations, bits/fixation relative to uniform."""
    bits = jnp.where(mask, fixation_bits(model, head, features, centerbias, xs, ys), 0.0)
    return bits.sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    if config.schedule == "step":
        boundaries = {e * steps_per_epoch: config.decay_factor for e in config.decay_epochs}
        lr = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
    elif config.schedule == "cosine":
        lr = optax.cosine_decay_schedule(config.learning_rate, config.max_epochs * steps_per_epoch)
    else:
        lr = config.learning_rate
    if config.weight_decay == 0:
        return optax.adam(lr)
    kernels_only = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, _: path[-1] == jax.tree_util.DictKey("kernel"), params)
    return optax.adamw(lr, weight_decay=config.weight_decay, mask=kernels_only)


class Evaluator:
    """Jitted fixation log-likelihoods of a model's heads, sharded over the batch axis (no optimizer).

    ``devices`` (default: all of them, those of every process) form the mesh. Step outputs are
    replicated, so every process can read them whole.
    """

    def __init__(self, model: model_lib.DeepGaze, devices: Sequence[jax.Device] | None = None):
        self.model = model
        devices = list(devices) if devices is not None else jax.devices()
        self.mesh = jax.sharding.Mesh(np.array(devices), ("data",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        self.fixation_step = jax.jit(functools.partial(fixation_bits, model), out_shardings=self.replicated)

    def put_batch(self, batch: Batch, centerbias: np.ndarray) -> tuple:
        """Device arrays for a batch: the batch axis sharded over the mesh.

        Every process holds the whole batch and puts on its devices the rows the mesh gives them,
        whatever the order of the devices in the mesh.
        """
        def shard(x):
            return jax.make_array_from_callback(x.shape, self.batch_sharding, lambda index: x[index])

        cb = jax.device_put(np.asarray(centerbias, np.float32), self.replicated)
        loss_weight = batch.weight if batch.loss_weight is None else batch.loss_weight
        return (shard(batch.features), cb, shard(batch.xs), shard(batch.ys), shard(batch.mask), shard(batch.weight),
                shard(loss_weight))

    def fixation_log_likelihoods(self, head: dict, data: FixationSet,
                                 centerbias: CenterBiases, batch_size: int) -> list[np.ndarray]:
        """Per image, the ``(n_i,)`` log-likelihood of each fixation, bits relative to uniform."""
        out: list[np.ndarray | None] = [None] * len(data)
        head = jax.device_put(head, self.replicated)
        for batch in batches(data, _round_up(batch_size, self.mesh.size), seed=None):
            features, cb, xs, ys, mask, _, _ = self.put_batch(batch, centerbias_of(centerbias, batch))
            bits = np.asarray(jax.device_get(self.fixation_step(head, features, cb, xs, ys)))
            for row, i in enumerate(batch.indices):
                if i >= 0:
                    out[i] = bits[row, batch.mask[row]]
        return out

    def evaluate(self, head: dict, data: FixationSet, centerbias: CenterBiases,
                 batch_size: int) -> np.ndarray:
        """``(len(data),)`` per-image log-likelihoods, bits/fixation relative to uniform (0 without fixations)."""
        bits = self.fixation_log_likelihoods(head, data, centerbias, batch_size)
        return np.array([b.mean() if len(b) else 0.0 for b in bits])


class Trainer(Evaluator):
    """An :class:`Evaluator` with a jitted train step for one optimizer (the state donated).

    ``dropout`` (see :class:`TrainConfig`) applies to the features of train steps only, with masks
    drawn from ``seed`` and the step count.
    """

    def __init__(self, model: model_lib.DeepGaze, optimizer: optax.GradientTransformation,
                 devices: Sequence[jax.Device] | None = None, dropout: float = 0.0,
                 dropout_channels: bool = False, seed: int = 0):
        super().__init__(model, devices)
        self.optimizer = optimizer
        self.dropout, self.dropout_channels = dropout, dropout_channels
        self.dropout_key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x64726F70)  # "drop"
        self.train_step = jax.jit(self._train_step, donate_argnums=0,
                                  out_shardings=(self.replicated, self.replicated))

    def init_state(self, head: dict) -> dict:
        state = {"params": head, "opt_state": self.optimizer.init(head), "step": jnp.zeros((), jnp.int32)}
        return jax.device_put(state, self.replicated)

    def _loss(self, head, features, centerbias, xs, ys, mask, weight, loss_weight):
        # Normalised by the count of real images, so that loss weights keep their relative size across batches.
        ll = per_image_log_likelihood(self.model, head, features, centerbias, xs, ys, mask)
        return -(ll * loss_weight).sum() / jnp.maximum(weight.sum(), 1.0)

    def _drop(self, features: jax.Array, step: jax.Array) -> jax.Array:
        b, _, _, c = features.shape
        shape = (b, 1, 1, c) if self.dropout_channels else features.shape
        keep = jax.random.bernoulli(jax.random.fold_in(self.dropout_key, step), 1.0 - self.dropout, shape)
        return jnp.where(keep, features / (1.0 - self.dropout), 0.0).astype(features.dtype)

    def _train_step(self, state, features, centerbias, xs, ys, mask, weight, loss_weight):
        if self.dropout > 0:
            features = self._drop(features, state["step"])
        loss, grads = jax.value_and_grad(self._loss)(state["params"], features, centerbias, xs, ys, mask, weight,
                                                     loss_weight)
        updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, loss


MAX_RESTARTS = 3


def readout_is_dead(model: model_lib.DeepGaze, head: dict, features: np.ndarray) -> bool:
    """Whether the readout's output is one constant on ``(B, h, w, C)`` features: with a ReLU layer
    whose every unit is inactive, no gradient reaches the layers below it again."""
    out = np.asarray(model.readout(head, jnp.asarray(features)))
    return bool(out.max() == out.min())


def _step(meta: dict) -> int:
    """Checkpoint step: epochs run in all, those of restarted runs included (orbax needs it to grow)."""
    return meta["epoch"] + meta.get("epochs_lost", 0)


def _round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def fingerprint(config: TrainConfig, *parts: FixationSet) -> int:
    """CRC32 of what every process of a run must agree on: the config (seed included) and, per image,
    its size, feature shape and fixations; with them, the data order of every epoch. Feature values
    are left out (gigabytes to read, and not bit-identical across accelerators)."""
    crc = zlib.crc32(config.to_json().encode())
    for part in parts:
        crc = zlib.crc32(np.array([len(part), part.max_fixations]).tobytes(), crc)
        if part.sources is not None:
            crc = zlib.crc32(np.asarray(part.sources, np.int64).tobytes(), crc)
        for shape, features, xs, ys in zip(part.shapes, part.features, part.xs, part.ys):
            crc = zlib.crc32(np.array([*shape, *features.shape, len(xs)]).tobytes(), crc)
            crc = zlib.crc32(np.ascontiguousarray(xs, np.float32).tobytes(), crc)
            crc = zlib.crc32(np.ascontiguousarray(ys, np.float32).tobytes(), crc)
    return crc


def fixation_weighted(per_image: np.ndarray, data: FixationSet) -> float:
    counts = np.array([len(x) for x in data.xs])
    return float((per_image * counts).sum() / counts.sum())


# --- the loop --------------------------------------------------------------------------------


def _write_json_atomic(path: pathlib.Path, value) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def fit(
    config: TrainConfig,
    train: FixationSet,
    val: FixationSet,
    centerbias: CenterBiases,
    workdir: str | os.PathLike | None = None,
    split: dict | None = None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    init_head: dict | None = None,
) -> types.SimpleNamespace:
    """Train a head by maximum likelihood with early stopping on the validation log-likelihood.

    In a multi-process run (:mod:`deepgaze_jax.distributed`) every process calls this with the same
    arguments (checked: :func:`fingerprint`); ``workdir`` must be a folder they all see. Process 0
    writes the JSON files and shows progress; all return the same result.

    Args:
      config: hyper-parameters.
      train, val: cached features and fixations (see :func:`cache_features`).
      centerbias: ``(H, W) -> (H, W)`` center-bias log density (nats) for an image size, or a sequence
        of them, one per source of ``train`` and ``val`` (:attr:`FixationSet.sources`).
      workdir: checkpoint folder; an existing one is resumed (its config must match).
      split: the data split (e.g. image ids per part), saved as JSON in ``workdir``.
      stop_after_epochs: end this call after that many epochs (to simulate an interruption).
      init_head: start from these head params (e.g. pre-trained on another dataset) instead of the
        seed's initialisation; the seed still sets the data order.

    Raises:
      FloatingPointError: the training loss or the validation log-likelihood turned non-finite (the
        run's checkpoints keep the last finite epoch; no heads are returned).

    Returns:
      ``best_params`` (head), ``best_val`` (bits/fixation, per image), ``history`` (per-epoch dicts),
      ``epochs`` (run in total), ``restarts`` (how often a readout that died in its first epoch was
      started over from another initialisation and data order; at most ``MAX_RESTARTS``).
    """
    if len(train) == 0 or train.fixation_count == 0:
        raise ValueError("the training split has no fixations")
    if len(val) == 0 or val.fixation_count == 0:
        raise ValueError("the validation split has no fixations")
    if config.flip and train.flipped is None:
        raise ValueError("config.flip needs the features of the mirrored training images (FixationSet.flipped)")
    model = config.build_model()
    expected = train.features[0].shape[-1]
    if expected != model.feature_channels:
        raise ValueError(f"cached features have {expected} channels, {config.model} needs {model.feature_channels}")
    if jax.process_count() > 1:
        distributed.assert_same_everywhere(fingerprint(config, train, val), "the config or the data")
    global_batch = _round_up(config.batch_size, jax.device_count())
    steps_per_epoch = len(batches(train, global_batch, seed=config.seed, epoch=0))
    weights = None if config.weighting == "image" and not config.source_weights else loss_weights(
        train, config.weighting, config.source_weights)
    trainer = Trainer(model, make_optimizer(config, steps_per_epoch), dropout=config.dropout,
                      dropout_channels=config.dropout_channels, seed=config.seed)
    if init_head is not None:
        expected_tree = jax.tree.structure(model.init_head(jax.random.PRNGKey(0)))
        if jax.tree.structure(init_head) != expected_tree:
            raise ValueError(f"init_head does not fit {config.model}'s head")
    state = trainer.init_state(model.init_head(jax.random.PRNGKey(config.seed)) if init_head is None
                               else jax.tree.map(jnp.asarray, init_head))
    meta = {"epoch": 0, "best_val": -math.inf, "since_best": 0, "history": []}
    best_params = jax.device_get(state["params"])

    latest = best = None
    if workdir is not None:
        workdir = pathlib.Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        config_path = workdir / "config.json"
        with distributed.main_first("deepgaze_jax.train.fit: config.json"):
            if config_path.exists():
                saved = TrainConfig.from_json(config_path.read_text())
                if saved != config:
                    raise ValueError(f"{workdir} holds a run with another config; use a new folder")
            elif distributed.is_main():
                _write_json_atomic(config_path, json.loads(config.to_json()))
            if split is not None and distributed.is_main():
                _write_json_atomic(workdir / "split.json", split)
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
        latest = ocp.CheckpointManager(workdir / "latest", options=options)
        best = ocp.CheckpointManager(workdir / "best", options=options)
        if latest.latest_step() is not None:
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
            restored = latest.restore(latest.latest_step(), args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
            state = jax.device_put(restored["state"], trainer.replicated)
            meta = restored["meta"]
            if best.latest_step() is not None:
                best_params = best.restore(best.latest_step(), args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, best_params))
                ))["params"]

    probe = batches(train, global_batch, seed=None)[0].features

    def save_latest() -> None:  # the state and meta of this moment, at step _step(meta)
        if latest is not None:
            latest.save(_step(meta), args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
            latest.wait_until_finished()

    epochs_run = 0
    bar = tqdm(total=config.max_epochs, initial=meta["epoch"], desc=config.model,
               disable=not progress or not distributed.is_main())
    while meta["epoch"] < config.max_epochs and meta["since_best"] < config.patience:
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
            break
        epoch = meta["epoch"]
        restarts = meta.get("restarts", 0)
        losses, sizes = [], []
        for batch in batches(train, global_batch, seed=config.seed, epoch=epoch, stream=restarts, flip=config.flip,
                             weights=weights):
            cb = centerbias_of(centerbias, batch)
            state, loss = trainer.train_step(state, *trainer.put_batch(batch, np.ascontiguousarray(cb[:, ::-1]) if batch.flipped else cb))
            losses.append(loss)
            sizes.append(batch.weight.sum())
        train_loss = float(np.dot(jax.device_get(losses), sizes) / np.sum(sizes))
        val_ll = trainer.evaluate(state["params"], val, centerbias, global_batch)
        val_image = float(val_ll.mean())
        if not (math.isfinite(train_loss) and math.isfinite(val_image)):
            raise FloatingPointError(
                f"{config.model}: the training loss ({-train_loss}) or validation log-likelihood ({val_image}) "
                f"turned non-finite in epoch {epoch + 1}; lower the learning rate (the last finite epoch's "
                "checkpoint is kept, no heads are written)")
        record = {"epoch": epoch + 1, "train_ll": -train_loss, "val_ll": val_image,
                  "val_ll_fixation": fixation_weighted(val_ll, val)}
        meta["history"].append(record)
        meta["epoch"] = epoch + 1
        if meta["epoch"] == 1 and readout_is_dead(model, jax.device_get(state["params"]), probe):
            # Every unit of a ReLU layer went inactive: no gradient reaches the readout again. Start
            # over from another initialisation and data order (counted, saved, and resumed as such).
            restarts += 1
            if restarts > MAX_RESTARTS:
                raise RuntimeError(f"the readout died in the first epoch {restarts} times; lower the learning rate")
            if distributed.is_main():
                print(f"the readout died in the first epoch; restart {restarts} with a new initialisation", flush=True)
            state = trainer.init_state(model.init_head(jax.random.fold_in(jax.random.PRNGKey(config.seed), restarts)))
            best_params = jax.device_get(state["params"])
            meta = {"epoch": 0, "best_val": -math.inf, "since_best": 0, "history": [], "restarts": restarts,
                    "epochs_lost": meta.get("epochs_lost", 0) + 1}
            save_latest()
            epochs_run += 1
            continue
        improved = val_image > meta["best_val"]
        if improved:
            meta["best_val"], meta["since_best"] = val_image, 0
            best_params = jax.device_get(state["params"])
        else:
            meta["since_best"] += 1
        if improved and best is not None:
            best.save(_step(meta), args=ocp.args.Composite(params=ocp.args.StandardSave(best_params)))
            best.wait_until_finished()
        save_latest()
        epochs_run += 1
        bar.update(1)
        bar.set_postfix(train=f"{-train_loss:.3f}", val=f"{val_image:.3f}", best=f"{meta['best_val']:.3f}")
    bar.close()
    for manager in (latest, best):
        if manager is not None:
            manager.close()
    return types.SimpleNamespace(
        best_params=jax.device_get(best_params),
        best_val=meta["best_val"],
        history=meta["history"],
        epochs=meta["epoch"],
        restarts=meta.get("restarts", 0),
        final_state=jax.device_get(state),
    )
