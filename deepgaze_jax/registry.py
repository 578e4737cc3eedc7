"""The model registry: every model this package trains, by name, in one table.

Per name: how to build its :class:`~deepgaze_jax.model.DeepGaze` description, the paper's figure that
its cross-validation results are compared with, and the file name of its shipped predictor in
``deepgaze_jax/assets`` where one ships. Everything else derives from it: the ``deepgaze train
--model`` choices and ``deepgaze predict --model`` choices (:data:`TRAINABLE`, :data:`SHIPPED`),
``TrainConfig`` validation, the paper figure in the cross-validation results.

A cheap import (no jax, no flax): the factories import :mod:`deepgaze_jax.model` only when called, so
the command line builds its parser from this table without starting JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deepgaze_jax.model import DeepGaze


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One trainable model.

    Attributes:
      factory: builds the model description (float32 backbone; imports model.py when called).
      paper: the published figure its cross-validation on MIT1003 is compared with.
      asset: file name of the shipped predictor in ``deepgaze_jax/assets``, or None where none ships.
    """

    factory: Callable[[], DeepGaze]
    paper: str
    asset: str | None = None


def _deepgaze1() -> DeepGaze:
    from deepgaze_jax import model

    return model.deepgaze1()


def _deepgaze2(backbone: str, block4: bool = False, readout: str = "deepgaze2") -> Callable[[], DeepGaze]:
    def build() -> DeepGaze:
        from deepgaze_jax import model

        return model.deepgaze2(backbone, extra_layers=model.BLOCK4_LAYERS if block4 else (), readout=readout)

    return build


_DEEPGAZE2_PAPER = "87 % explained information gain with {what}SALICON pre-training (Kümmerer et al. 2016)"

MODELS: dict[str, ModelEntry] = {
    "deepgaze1": ModelEntry(_deepgaze1, "56 % explained information gain (Kümmerer et al. 2015)",
                            asset="deepgaze1.safetensors"),
    "deepgaze2_vgg16": ModelEntry(_deepgaze2("vgg16"), _DEEPGAZE2_PAPER.format(what="VGG-19 and "),
                                  asset="deepgaze2_vgg16.safetensors"),
    "deepgaze2_vgg19": ModelEntry(_deepgaze2("vgg19"), _DEEPGAZE2_PAPER.format(what="")),
    # Block 5 and block 4's conv4_3 / relu4_3: 3584 channels (this project's variant, not the paper's).
    "deepgaze2_vgg16_block4": ModelEntry(
        _deepgaze2("vgg16", block4=True), _DEEPGAZE2_PAPER.format(what="VGG-19 (block 5 only) and ")),
    # DeepGaze II's features with the DeepGaze IIE / III readout (layer norm, 8-16-1, softplus).
    "deepgaze2_vgg16_iie": ModelEntry(
        _deepgaze2("vgg16", readout="iie"),
        "87 % explained information gain with the DeepGaze II readout, VGG-19 and SALICON pre-training "
        "(Kümmerer et al. 2016); DeepGaze IIE (its readout on other backbones) 93 % (Linardos et al. 2021)"),
}

#: Names of the trainable models (``deepgaze train --model``, ``TrainConfig.model``).
TRAINABLE: tuple[str, ...] = tuple(MODELS)
#: Names of the models whose predictor ships in ``deepgaze_jax/assets`` (``deepgaze predict --model``).
SHIPPED: tuple[str, ...] = tuple(name for name, e in MODELS.items() if e.asset is not None)


def entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; ValueError naming the known models for another name."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name]


def build(name: str, **changes) -> DeepGaze:
    """The model description of ``name``, with ``changes`` to its fields (``dataclasses.replace``),
    e.g. ``dtype="bfloat16"`` or ``layers=...`` for a variant that reads more backbone layers."""
    model = entry(name).factory()
    return dataclasses.replace(model, **changes) if changes else model
