"""The training configuration: :class:`TrainConfig`, a frozen dataclass saved as JSON beside every
checkpoint, validated when built (every error names the field).

A cheap import (no jax): the model is looked up in :mod:`deepgaze_jax.registry`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import TYPE_CHECKING

from deepgaze_jax import registry

if TYPE_CHECKING:
    from deepgaze_jax.model import DeepGaze


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters; saved as JSON beside every checkpoint.

    Attributes:
      model: a name of :data:`deepgaze_jax.registry.MODELS`: ``"deepgaze1"``, ``"deepgaze2_vgg16"``,
        ``"deepgaze2_vgg19"``, ``"deepgaze2_vgg16_block4"`` (block 4's ``conv4_3, relu4_3`` read besides
        block 5) or ``"deepgaze2_vgg16_iie"`` (the DeepGaze IIE / III readout).
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
      feature_conv_impl: how the backbone convolves when the features are computed
        (:mod:`deepgaze_jax.winograd`; ``"auto"``: Winograd where it wins on the CPU, XLA's convolution
        on GPUs; ``"xla"``: the features of every committed result whose config has no
        ``feature_conv_impl``, bit for bit).
        The trained readout does not depend on it beyond the features' rounding.
      weight_decay: decoupled weight decay (AdamW, scaled by the learning rate) of the readout
        kernels; biases, sigma and the center-bias weight are not decayed.
      decay_to_init: the weight decay pulls the kernels toward the head that training starts from when
        it starts from one (``init_head``: the readout pre-trained on other data; L2-SP, a penalty toward
        the pre-trained params), toward zero otherwise. Needs ``weight_decay`` > 0.
      dropout: probability of zeroing each backbone feature in training (the rest scaled by
        ``1 / (1 - dropout)``); ``dropout_channels`` drops whole channels of an image instead.
      flip: horizontal-flip augmentation: each training batch is mirrored with probability 1/2 (the
        features of the mirrored images, which the training data must carry, and the fixations and
        center bias mirrored).
      weighting: how the loss weighs the training images of several datasets (sources of a
        :class:`~deepgaze_jax.input_pipeline.FixationSet`): ``"image"`` every image alike (the loss is
        the per-image average log-likelihood), ``"fixation"`` every fixation alike (images weighted by
        their fixation count), ``"dataset"`` every dataset alike (each source's images share one equal
        total weight).
      source_weights: a further factor per source (source 0 first; empty: all 1), e.g. ``(1.0, 0.5)``
        to count the second dataset half.
      frozen: head parameters that training leaves as they start, as ``/``-joined path prefixes of the
        head pytree (e.g. ``"saliency/conv0"``: DeepGaze III's scanpath phase keeps the first two layers
        of its saliency network).
      max_fixations: a scanpath model's fixations per batch item: an image's fixations are split into
        items of at most this many, which share its features (0: one item per image).
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
    feature_conv_impl: str = "auto"
    weight_decay: float = 0.0
    decay_to_init: bool = False
    dropout: float = 0.0
    dropout_channels: bool = False
    flip: bool = False
    weighting: str = "image"
    source_weights: tuple[float, ...] = ()
    frozen: tuple[str, ...] = ()
    max_fixations: int = 0

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
        if self.model not in registry.MODELS:
            raise ValueError(f"config: model must be one of {sorted(registry.MODELS)}, got {self.model!r}")
        if self.schedule not in ("step", "cosine", "constant"):
            raise ValueError(f"config: schedule must be 'step', 'cosine' or 'constant', got {self.schedule!r}")
        if self.feature_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"config: feature_dtype must be 'float32' or 'bfloat16', got {self.feature_dtype!r}")
        from deepgaze_jax.winograd import IMPLS  # jax: not at import time

        if self.feature_conv_impl not in IMPLS:
            raise ValueError(f"config: feature_conv_impl must be one of {list(IMPLS)}, "
                             f"got {self.feature_conv_impl!r}")
        for name in ("max_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"config: {name} must be >= 1, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ValueError(f"config: weight_decay must be >= 0, got {self.weight_decay}")
        if self.decay_to_init and self.weight_decay == 0:
            raise ValueError("config: decay_to_init needs weight_decay > 0 (the strength of the pull)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"config: dropout must be in [0, 1), got {self.dropout}")
        if self.max_fixations < 0:
            raise ValueError(f"config: max_fixations must be >= 0, got {self.max_fixations}")
        if any(not p or p.startswith("/") for p in self.frozen):
            raise ValueError(f"config: frozen must hold head parameter paths like 'saliency/conv0', got {list(self.frozen)}")
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

    def build_model(self) -> DeepGaze:
        """The model description of :attr:`model` with the backbone in :attr:`feature_dtype`."""
        return registry.build(self.model, dtype=self.feature_dtype)


def _coerce(key: str, value, hint):
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
              str: lambda v: isinstance(v, str)}.get(item, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
        if not isinstance(value, (list, tuple)) or not all(ok(v) for v in value):
            what = {int: "integers", str: "strings"}.get(item, "numbers")
            raise ValueError(f"config: {key} must be a list of {what}, got {value!r}")
        return tuple(item(v) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ValueError(f"config: {key} must be of type {hint.__name__}, got {type(value).__name__} {value!r}")
    return value
