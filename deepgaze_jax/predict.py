"""Ready-to-use predictors: a model, its parameters (one head or an ensemble) and a center bias.

``load_predictor("deepgaze1")`` pairs the bundled ImageNet backbone with the trained readouts that
ship in ``deepgaze_jax/assets`` (the ensemble of the 10 cross-validation fold models, as the paper's
MIT300 submission) and the center bias fitted on all of MIT1003 (a kernel density in normalised
coordinates, evaluated exactly at any image size).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import centerbias as centerbias_lib
from deepgaze_jax import model as model_lib
from deepgaze_jax.baselines import CenterBias
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


def model_from_json(text: str) -> model_lib.DeepGaze:
    """Rebuild a :class:`DeepGaze` from :func:`model_to_json` output."""
    fields = json.loads(text)
    for key in ("layers", "readout_channels"):
        fields[key] = tuple(fields[key])
    return model_lib.DeepGaze(**fields)


def model_to_json(model: model_lib.DeepGaze) -> str:
    return json.dumps(dataclasses.asdict(model), sort_keys=True)


def save_predictor_heads(path: str | pathlib.Path, model: model_lib.DeepGaze, heads: Sequence[dict],
                         center_bias: CenterBias, metadata: dict[str, str] | None = None) -> None:
    """Write trained heads (stacked as an ensemble) and the center bias, pickle-free (safetensors)."""
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


def load_predictor(name: str = "deepgaze1", path: str | pathlib.Path | None = None,
                   backbone_path: str | pathlib.Path | None = None,
                   centerbias: str | pathlib.Path | None = None) -> Predictor:
    """A trained predictor: the shipped ``name`` (``"deepgaze1"`` or ``"deepgaze2_vgg16"``) or the heads
    file at ``path``; the backbone comes from the bundled weights or ``backbone_path``; the center bias
    is the one stored with the heads, or ``centerbias`` (``"mit1003"``, ``"osie"``, ``"uniform"`` or a
    file: :func:`deepgaze_jax.centerbias.resolve`)."""
    path = pathlib.Path(path) if path is not None else ASSETS / f"{name}.safetensors"
    if not path.is_file():
        shipped = sorted(p.stem for p in ASSETS.glob("*.safetensors"))
        raise FileNotFoundError(f"no trained heads at {path}; shipped: {shipped or 'none'}")
    tree, metadata = load_params(path)
    if "model_config" not in metadata:
        raise ValueError(f"{path}: not a predictor file (no model_config in its metadata)")
    model = model_from_json(metadata["model_config"])
    backbone = load_backbone(model.backbone, backbone_path)
    prior = (centerbias_lib.from_tree(tree["centerbias"], str(path)).log_density if centerbias is None
             else centerbias_lib.resolve(centerbias))
    heads = jax.tree.map(jnp.asarray, tree["heads"])
    return Predictor(model, backbone, heads, prior, ensemble=True)
