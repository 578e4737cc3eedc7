"""Ready-to-use predictors: a model, its parameters (one head or an ensemble) and a center bias.

``load_predictor("deepgaze1")`` pairs the bundled ImageNet backbone with the trained readouts that
ship in ``deepgaze_jax/assets`` (the ensemble of the 10 cross-validation fold models, as the paper's
MIT300 submission) and the center bias fitted on all of MIT1003 (a kernel density in normalised
coordinates, evaluated exactly at any image size).

Two kinds of predictor file exist, told apart by the model description stored with the heads
(:func:`model_to_json`): a static saliency model (:class:`~deepgaze_jax.model.DeepGaze`, loaded as a
:class:`Predictor`) and a scanpath model (:class:`~deepgaze_jax.deepgaze3.DeepGazeIII`, the density of
the next fixation given the last ones, loaded as a :class:`ScanpathPredictor`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import centerbias as centerbias_lib
from deepgaze_jax import deepgaze3 as deepgaze3_lib
from deepgaze_jax import model as model_lib
from deepgaze_jax import registry, winograd
from deepgaze_jax.baselines import CenterBias
from deepgaze_jax.finalizer import upsample_to_image
from deepgaze_jax.images import as_rgb_array, batches_by_size
from deepgaze_jax.params_io import load_params, save_params
from deepgaze_jax.pretrained import load_backbone

ASSETS = pathlib.Path(__file__).parent / "assets"


@dataclasses.dataclass
class Predictor:
    """A model with its parameters and center bias, ready to predict on images of any size.

    Attributes:
      model: the :class:`~deepgaze_jax.model.DeepGaze` description.
      backbone: frozen backbone params.
      heads: head params; with ``ensemble=True`` every leaf has a leading axis of the K members.
      centerbias: ``(H, W) -> (H, W)`` log density in nats.
      ensemble: whether ``heads`` is a stacked ensemble.
    """

    model: model_lib.DeepGaze
    backbone: dict
    heads: dict
    centerbias: Callable[[tuple[int, int]], np.ndarray]
    ensemble: bool = False

    def log_density(self, images: np.ndarray) -> jax.Array:
        """``(B, H, W, 3)`` images of one size (0..255) -> ``(B, H, W)`` log density in nats."""
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"expected a batch of images (B, H, W, 3), got shape {images.shape}")
        cb = np.broadcast_to(self.centerbias(images.shape[1:3]), images.shape[:3])
        if self.ensemble:
            return self.model.apply_ensemble(self.backbone, self.heads, images, cb)
        return self.model.apply({"backbone": self.backbone, "head": self.heads}, images, cb)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """One ``(H, W, 3)`` image (uint8, uint16, float 0..255 or grayscale) -> ``(H, W)`` float32 nats."""
        image = as_rgb_array(image)
        return np.asarray(self.log_density(image[None])[0])

    def predict_many(self, images: Iterable[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
        """Predict a list of images, batching those of the same size; results in input order."""
        images = [as_rgb_array(image, f"image {i}") for i, image in enumerate(images)]
        out: list[np.ndarray | None] = [None] * len(images)
        for chunk in batches_by_size([image.shape for image in images], batch_size):
            result = np.asarray(self.log_density(np.stack([images[i] for i in chunk])))
            for i, density in zip(chunk, result):
                out[i] = density
        return out


class ImageFeatures(NamedTuple):
    """One image's backbone features and center bias, computed once and reused for every history.

    Attributes:
      features: ``(1, h, w, C)`` backbone features (:meth:`DeepGazeIII.features`).
      centerbias: ``(1, H, W)`` center-bias log density of the image, nats.
    """

    features: jax.Array
    centerbias: jax.Array

    @property
    def shape(self) -> tuple[int, int]:
        """The image's ``(H, W)``."""
        return tuple(self.centerbias.shape[-2:])


@functools.partial(jax.jit, static_argnums=0)
def mixture_grid(model: deepgaze3_lib.DeepGazeIII, heads: dict, features: jax.Array, centerbias: jax.Array,
                     histories: jax.Array) -> jax.Array:
    """The mixture of ``M`` stacked DeepGaze III heads on the saliency grid, before the upsampling.

    Args:
      model: the DeepGaze III description.
      heads: head params with a leading axis of the ``M`` members on every leaf.
      features: ``(B, h, w, C)`` backbone features.
      centerbias: ``(B, H, W)`` center-bias log densities, nats.
      histories: ``(B, N, K, 2)`` histories (``(x, y)`` pixels, entry 0 the most recent, NaN rows
        missing; ``K = model.history``, any ``K`` for ``history=0``, which reads none).

    Returns:
      ``(B, N, H // f, W // f)`` log values (nats) on the saliency grid: ``upsample_to_image`` of them
      is the log density of the next fixation over the ``(H, W)`` pixels, the members averaged in
      probability space (each member's grid is normalised for the image, and the nearest upsampling is
      a gather, so mixing on the grid is mixing at image size).
    """
    if model.history:
        grids = jax.vmap(model.grid, in_axes=(0, None, None, None))(heads, features, centerbias, histories)
    else:  # the spatial model reads no history: one map per image, the same for all N
        grids = jax.vmap(model.grid, in_axes=(0, None, None, None))(heads, features, centerbias, None)
        grids = jnp.broadcast_to(grids, grids.shape[:2] + histories.shape[1:2] + grids.shape[3:])
    return model_lib.mixture(grids)


@dataclasses.dataclass
class ScanpathPredictor:
    """A DeepGaze III model with its parameters (a stacked ensemble) and center bias: the density of the
    next fixation given the image and the fixations made so far.

    Histories are the model's: ``(..., K, 2)`` float pixel coordinates ``(x, y)`` of the image (pixel
    ``j`` covers ``[j, j + 1)``), entry 0 the most recent fixation, NaN rows where none was made yet
    (:func:`deepgaze_jax.deepgaze3.check_history` turns a user's oldest-first list into one). The
    members are mixed in probability space, on the saliency grid (:func:`mixture_grid`).

    Attributes:
      model: the :class:`~deepgaze_jax.deepgaze3.DeepGazeIII` description.
      backbone: frozen backbone params.
      heads: head params, every leaf with a leading axis of the members.
      centerbias: ``(H, W) -> (H, W)`` log density in nats.
    """

    model: deepgaze3_lib.DeepGazeIII
    backbone: dict
    heads: dict
    centerbias: Callable[[tuple[int, int]], np.ndarray]

    @property
    def history(self) -> int:
        """How many previous fixations the model reads (K)."""
        return self.model.history

    @property
    def members(self) -> int:
        return int(jax.tree.leaves(self.heads)[0].shape[0])

    def empty_history(self, n: int = 1) -> np.ndarray:
        """``(n, K, 2)`` histories without a fixation (the first fixation of a scanpath)."""
        return np.full((n, self.history, 2), np.nan, np.float32)

    def features(self, image: np.ndarray) -> ImageFeatures:
        """One ``(H, W, 3)`` image (uint8, float 0..255 or grayscale) -> its features and center bias,
        for :meth:`conditional_log_density` and :func:`deepgaze_jax.sampling.sample_scanpaths` (the
        backbone runs once per image, whatever the number of histories)."""
        image = as_rgb_array(image)
        cb = jnp.asarray(self.centerbias(image.shape[:2]), jnp.float32)[None]
        return ImageFeatures(self.model.features(self.backbone, jnp.asarray(image)[None]), cb)

    def _as_features(self, image_or_features: np.ndarray | ImageFeatures) -> ImageFeatures:
        if isinstance(image_or_features, ImageFeatures):
            return image_or_features
        return self.features(image_or_features)

    def _check_histories(self, histories: np.ndarray, lead: tuple[int | None, ...], names: str) -> jax.Array:
        """``histories`` as float32 if their shape is ``lead + (K, 2)`` (None in ``lead``: any length;
        any K for the spatial model, which reads none); ``names`` spells ``lead`` in the error."""
        histories = jnp.asarray(histories, jnp.float32)
        k = self.history
        ok = (histories.ndim == len(lead) + 2 and histories.shape[-1] == 2 and (not k or histories.shape[-2] == k)
              and all(want is None or want == got for want, got in zip(lead, histories.shape)))
        if not ok:
            raise ValueError(f"histories must have shape ({names}, {k if k else 'K'}, 2) (x, y of the last {k} "
                             f"fixations, most recent first, NaN rows missing), got {tuple(histories.shape)}")
        return histories

    def conditional_grid(self, image_or_features: np.ndarray | ImageFeatures, histories: np.ndarray) -> jax.Array:
        """:meth:`conditional_log_density` before the upsampling: ``(N, H // f, W // f)`` on the saliency
        grid (see :func:`mixture_grid`)."""
        feats = self._as_features(image_or_features)
        histories = self._check_histories(histories, (None,), "N")
        return mixture_grid(self.model, self.heads, feats.features, feats.centerbias, histories[None])[0]

    def conditional_log_density(self, image_or_features: np.ndarray | ImageFeatures,
                                histories: np.ndarray) -> jax.Array:
        """Log density of the next fixation given each of N histories on one image.

        Args:
          image_or_features: an ``(H, W, 3)`` image (0..255) or its :meth:`features`.
          histories: ``(N, K, 2)`` histories (the model's form: most recent first, NaN rows missing).

        Returns:
          ``(N, H, W)`` log densities in nats (logsumexp over pixels 0).
        """
        feats = self._as_features(image_or_features)
        return upsample_to_image(self.conditional_grid(feats, histories), feats.shape)

    def log_density(self, images: np.ndarray, history: np.ndarray | None = None) -> jax.Array:
        """Log density of a fixation given one history per image (by default none: the density of
        the first fixation, the model's static prediction).

        Args:
          images: ``(B, H, W, 3)`` images of one size (0..255), or one ``(H, W, 3)`` image.
          history: None, or ``(B, K, 2)`` (``(K, 2)`` for one image) histories in the model's form.

        Returns:
          ``(B, H, W)`` (``(H, W)`` for one image) log densities in nats.
        """
        images = np.asarray(images)
        single = images.ndim == 3
        if single:
            images = images[None]
            history = None if history is None else np.asarray(history)[None]
        if images.ndim != 4:
            raise ValueError(f"expected a batch of images (B, H, W, 3) or one image (H, W, 3), got shape {images.shape}")
        b = images.shape[0]
        history = self.empty_history(b) if history is None else self._check_histories(history, (b,), "B")
        cb = jnp.broadcast_to(jnp.asarray(self.centerbias(images.shape[1:3]), jnp.float32), images.shape[:3])
        feats = self.model.features(self.backbone, jnp.asarray(images))
        grid = mixture_grid(self.model, self.heads, feats, cb, jnp.asarray(history)[:, None])[:, 0]
        out = upsample_to_image(grid, images.shape[1:3])
        return out[0] if single else out

    def predict(self, image: np.ndarray, history: np.ndarray | None = None) -> np.ndarray:
        """One ``(H, W, 3)`` image (uint8, uint16, float 0..255 or grayscale) and an optional ``(K, 2)``
        history -> ``(H, W)`` float32 nats."""
        image = as_rgb_array(image)
        return np.asarray(self.log_density(image[None], None if history is None else np.asarray(history)[None])[0])


AnyModel = model_lib.DeepGaze | deepgaze3_lib.DeepGazeIII
DEEPGAZE3_KIND = "deepgaze3"


def model_from_json(text: str) -> AnyModel:
    """Rebuild a :class:`~deepgaze_jax.model.DeepGaze` or (``"kind": "deepgaze3"``) a
    :class:`~deepgaze_jax.deepgaze3.DeepGazeIII` from :func:`model_to_json` output."""
    fields = json.loads(text)
    kind = fields.pop("kind", "deepgaze")
    if kind == DEEPGAZE3_KIND:
        spatial = _deepgaze_from_fields(fields.pop("spatial"))
        for key in ("scanpath_channels", "selection_channels"):
            if key in fields:
                fields[key] = tuple(fields[key])
        return deepgaze3_lib.DeepGazeIII(spatial, **fields)
    if kind != "deepgaze":
        raise ValueError(f"unknown model kind {kind!r} (expected 'deepgaze' or {DEEPGAZE3_KIND!r})")
    return _deepgaze_from_fields(fields)


def _deepgaze_from_fields(fields: dict) -> model_lib.DeepGaze:
    for key in ("layers", "readout_channels"):
        fields[key] = tuple(fields[key])
    return model_lib.DeepGaze(**fields)


def model_to_json(model: AnyModel) -> str:
    """The model description as JSON: the :class:`DeepGaze` fields, or for DeepGaze III ``{"kind":
    "deepgaze3", "spatial": {...DeepGaze fields...}, "history": K, ...}`` (a file without ``kind`` holds
    a DeepGaze, as every file written before DeepGaze III)."""
    fields = dataclasses.asdict(model)
    if isinstance(model, deepgaze3_lib.DeepGazeIII):
        fields["kind"] = DEEPGAZE3_KIND
    return json.dumps(fields, sort_keys=True)


def save_predictor_heads(path: str | pathlib.Path, model: AnyModel, heads: Sequence[dict],
                         center_bias: CenterBias, metadata: dict[str, str] | None = None) -> None:
    """Write trained heads (stacked as an ensemble) and the center bias, pickle-free (safetensors);
    ``model`` a static DeepGaze or a DeepGaze III (a scanpath predictor file)."""
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *heads)
    tree = {"heads": stacked, "centerbias": centerbias_lib.to_tree(center_bias)}
    meta = {"model_config": model_to_json(model), "members": str(len(heads)), **(metadata or {})}
    save_params(path, tree, meta)


def widen_heads(heads: dict, channels: int) -> dict:
    """Heads (stacked ``(K, ...)`` or single) for a model reading more backbone layers after their own:
    the first readout kernel ``(..., 1, 1, C, n)`` gets zero rows for channels ``C..channels-1``, so the
    heads compute what they did on the first ``C`` channels of the wider features."""
    kernel = np.asarray(heads["readout"]["conv0"]["kernel"])
    if channels < kernel.shape[-2]:
        raise ValueError(f"cannot widen heads of {kernel.shape[-2]} input channels to {channels}")
    pad = [(0, 0)] * kernel.ndim
    pad[-2] = (0, channels - kernel.shape[-2])
    conv0 = {**heads["readout"]["conv0"], "kernel": np.pad(kernel, pad)}
    return {**heads, "readout": {**heads["readout"], "conv0": conv0}}


class ModelKindError(ValueError):
    """A predictor file holds the other kind of model than the one asked for (static or scanpath)."""


KINDS = ("static", "scanpath")
#: The shipped scanpath predictor (``deepgaze_jax/assets/<name>.safetensors``), from the registry.
SCANPATH_ASSET = registry.SCANPATH[0]


def describe(model: AnyModel) -> str:
    """What a predictor file holds, in words."""
    if isinstance(model, deepgaze3_lib.DeepGazeIII):
        return (f"a DeepGaze III scanpath model (the next fixation given the last {model.history})"
                if model.history else "a DeepGaze III spatial model (history 0, a scanpath model that reads "
                                      "no fixations)")
    return f"a static saliency model ({model.backbone} DeepGaze)"


def load_predictor(name: str = "deepgaze1", path: str | pathlib.Path | None = None,
                   backbone_path: str | pathlib.Path | None = None,
                   centerbias: str | pathlib.Path | None = None,
                   kind: str | None = None, conv_impl: str | None = None) -> Predictor | ScanpathPredictor:
    """A trained predictor: the shipped ``name`` (``"deepgaze1"`` or ``"deepgaze2_vgg16"``) or the heads
    file at ``path``; the backbone comes from the bundled weights or ``backbone_path``; the center bias
    is the one stored with the heads, or ``centerbias`` (``"mit1003"``, ``"osie"``, ``"uniform"`` or a
    file: :func:`deepgaze_jax.centerbias.resolve`).

    A file holding a DeepGaze model loads as a :class:`Predictor`, one holding a DeepGaze III as a
    :class:`ScanpathPredictor`. ``kind``: ``"static"`` or ``"scanpath"`` to require one of the two
    (a :class:`ModelKindError`, one line naming the file and what it holds, for the other); None
    takes either. ``conv_impl``: how the backbone convolves (:mod:`deepgaze_jax.winograd`; None: as
    the file says, XLA's convolution); the Winograd filters are transformed here, once."""
    if kind not in (None, *KINDS):
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    path = pathlib.Path(path) if path is not None else ASSETS / f"{name}.safetensors"
    if not path.is_file():
        shipped = sorted(p.stem for p in ASSETS.glob("*.safetensors"))
        raise FileNotFoundError(f"no trained heads at {path}; shipped: {shipped or 'none'}")
    tree, metadata = load_params(path)
    if "model_config" not in metadata:
        raise ValueError(f"{path}: not a predictor file (no model_config in its metadata)")
    model = model_from_json(metadata["model_config"])
    scanpath = isinstance(model, deepgaze3_lib.DeepGazeIII)
    if kind is not None and (kind == "scanpath") != scanpath:
        wanted = "a scanpath model (DeepGaze III)" if kind == "scanpath" else "a static saliency model"
        raise ModelKindError(f"{path}: holds {describe(model)}, not {wanted}")
    backbone = load_backbone(model.backbone, backbone_path)
    model, backbone = with_conv_impl(model, conv_impl, backbone)
    prior = (centerbias_lib.from_tree(tree["centerbias"], str(path)).log_density if centerbias is None
             else centerbias_lib.resolve(centerbias))
    heads = jax.tree.map(jnp.asarray, tree["heads"])
    if scanpath:
        return ScanpathPredictor(model, backbone, heads, prior)
    return Predictor(model, backbone, heads, prior, ensemble=True)


def with_conv_impl(model: AnyModel, conv_impl: str | None, backbone: dict) -> tuple[AnyModel, dict]:
    """``model`` with its backbone (a DeepGaze III's spatial model's) convolving by ``conv_impl`` (None:
    as it is), and ``backbone`` with the Winograd filters that needs, transformed once here."""
    scanpath = isinstance(model, deepgaze3_lib.DeepGazeIII)
    spatial = model.spatial if scanpath else model
    if conv_impl is not None:
        spatial = dataclasses.replace(spatial, conv_impl=conv_impl)
        model = dataclasses.replace(model, spatial=spatial) if scanpath else spatial
    return model, winograd.transform_params(backbone, spatial.backbone, spatial.conv_impl, spatial.dtype)


def load_scanpath_predictor(path: str | pathlib.Path | None = None,
                            backbone_path: str | pathlib.Path | None = None,
                            centerbias: str | pathlib.Path | None = None,
                            name: str = SCANPATH_ASSET, conv_impl: str | None = None) -> ScanpathPredictor:
    """A DeepGaze III predictor: the heads file at ``path`` or the shipped ``name`` (see
    :func:`load_predictor`; a file holding a static model is a :class:`ModelKindError`)."""
    return load_predictor(name, path, backbone_path, centerbias, kind="scanpath", conv_impl=conv_impl)
