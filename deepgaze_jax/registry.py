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
      kind: ``"static"`` (a density of fixations: DeepGaze I, II) or ``"scanpath"`` (the density of the
        next fixation given the last ones: DeepGaze III, :mod:`deepgaze_jax.deepgaze3`).
    """

    factory: Callable[[], DeepGaze]
    paper: str
    asset: str | None = None
    kind: str = "static"


def _deepgaze1() -> DeepGaze:
    from deepgaze_jax import model

    return model.deepgaze1()


def _deepgaze2(backbone: str, block4: bool = False, readout: str = "deepgaze2") -> Callable[[], DeepGaze]:
    def build() -> DeepGaze:
        from deepgaze_jax import model

        return model.deepgaze2(backbone, extra_layers=model.BLOCK4_LAYERS if block4 else (), readout=readout)

    return build


def _deepgaze3(backbone: str) -> Callable[[], DeepGaze]:
    def build():
        from deepgaze_jax import deepgaze3

        return deepgaze3.deepgaze3(backbone)

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
    # DeepGaze III on DeepGaze II's VGG-16 features (the reference's ships on DenseNet-201).
    "deepgaze3_vgg16": ModelEntry(
        _deepgaze3("vgg16"),
        "DeepGaze III on DenseNet-201 with SALICON pre-training (Kümmerer, Bethge, Wallis 2022): the state of "
        "the art on MIT300 scanpaths; on MIT1003 scene content weighs substantially more than the scanpath "
        "history (its figures are in the paper, not restated here)",
        asset="deepgaze3_vgg16.safetensors", kind="scanpath"),
}

#: Names of the static models that ``deepgaze train`` fits by cross-validation (``TrainConfig.model``
#: takes every name; the scanpath models train through :mod:`deepgaze_jax.scanpath_crossval`).
TRAINABLE: tuple[str, ...] = tuple(name for name, e in MODELS.items() if e.kind == "static")
#: Names of the scanpath models.
SCANPATH: tuple[str, ...] = tuple(name for name, e in MODELS.items() if e.kind == "scanpath")
#: Names of the models whose predictor ships in ``deepgaze_jax/assets`` (``deepgaze predict --model``).
SHIPPED: tuple[str, ...] = tuple(name for name, e in MODELS.items() if e.asset is not None and e.kind == "static")


def entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; ValueError naming the known models for another name."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name]


def build(name: str, **changes) -> DeepGaze:
    """The model description of ``name``, with ``changes`` to its fields (``dataclasses.replace``),
    e.g. ``dtype="bfloat16"`` or ``layers=...`` for a variant that reads more backbone layers. For a
    scanpath model, changes other than its own fields go to its static part (``spatial``)."""
    model = entry(name).factory()
    if not changes:
        return model
    if entry(name).kind == "scanpath":
        own = {f.name for f in dataclasses.fields(model)} - {"spatial"}
        mine = {k: v for k, v in changes.items() if k in own}
        rest = {k: v for k, v in changes.items() if k not in own}
        spatial = dataclasses.replace(model.spatial, **rest) if rest else model.spatial
        return dataclasses.replace(model, spatial=spatial, **mine)
    return dataclasses.replace(model, **changes)
