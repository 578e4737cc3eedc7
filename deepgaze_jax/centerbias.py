"""Center biases for prediction: the prior over where people look on any image, before its content.

A model's prediction adds a center bias (a log density over the image's pixels) before normalising, so
the same readout predicts differently with another dataset's prior. :func:`resolve` turns what a user
names into an ``(H, W) -> (H, W)`` log density (nats, logsumexp 0):

* ``"mit1003"``, ``"osie"``: the center biases fitted on all of MIT1003 and OSIE that ship in
  ``deepgaze_jax/assets`` (:class:`~deepgaze_jax.baselines.CenterBias`, exact at any image size);
* ``"uniform"``: no prior;
* a ``.safetensors`` center-bias file (:func:`save`, e.g. from ``deepgaze baselines``);
* a ``.npy`` log density of any size, stretched to the image with nearest neighbours and renormalised
  (the reference's rule for its ``centerbias_mit1003.npy``).
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable

import numpy as np
from scipy.ndimage import zoom
from scipy.special import logsumexp

from deepgaze_jax.baselines import CenterBias
from deepgaze_jax.params_io import load_params, save_params

ASSETS = pathlib.Path(__file__).parent / "assets"
SHIPPED = ("mit1003", "osie")
KIND = "centerbias"
NORMALISATION_TOLERANCE = 1e-3  # nats: float32 sums over a megapixel stay well inside it

CenterBiasFunction = Callable[[tuple[int, int]], np.ndarray]


def to_tree(center_bias: CenterBias) -> dict:
    """The arrays of a center bias, as stored in center-bias and predictor files."""
    return {"histogram": np.asarray(center_bias.histogram, np.float32),
            "bandwidth": np.float32(center_bias.bandwidth),
            "uniform_weight": np.float32(center_bias.uniform_weight)}


def from_tree(tree: dict, where: str = "center bias") -> CenterBias:
    """The inverse of :func:`to_tree`; ``where`` names the source in errors."""
    missing = sorted({"histogram", "bandwidth", "uniform_weight"} - set(tree))
    if missing:
        raise ValueError(f"{where}: missing {missing}")
    hist = np.asarray(tree["histogram"])
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1] or not np.isfinite(hist).all() or (hist < 0).any() \
            or hist.sum() <= 0:
        raise ValueError(f"{where}: histogram must be a square, finite, non-negative, non-zero count map, "
                         f"got shape {hist.shape}")
    bandwidth, uniform = float(tree["bandwidth"]), float(tree["uniform_weight"])
    if not (0 < bandwidth <= 1 and 0 <= uniform <= 1):
        raise ValueError(f"{where}: bandwidth must be in (0, 1] and uniform_weight in [0, 1], got "
                         f"{bandwidth} and {uniform}")
    return CenterBias(hist, bandwidth, uniform)


def save(path: str | pathlib.Path, center_bias: CenterBias, metadata: dict[str, str] | None = None) -> None:
    """Write a center-bias file (safetensors, no pickle) that :func:`resolve` and ``--centerbias`` read."""
    save_params(path, to_tree(center_bias), {"kind": KIND, **(metadata or {})})


def load(path: str | pathlib.Path) -> CenterBias:
    """Read a center-bias file written by :func:`save`."""
    tree, metadata = load_params(path)
    if metadata.get("kind") != KIND:
        raise ValueError(f"{path}: not a center-bias file (its metadata kind is {metadata.get('kind')!r})")
    return from_tree(tree, str(path))


def uniform(shape: tuple[int, int]) -> np.ndarray:
    """The uniform ``(H, W)`` log density."""
    return np.full(tuple(shape), -math.log(shape[0] * shape[1]), np.float32)


def from_template(template: np.ndarray, where: str = "template") -> CenterBiasFunction:
    """A center bias from a 2D log density of any size: checked (finite, logsumexp 0 within
    :data:`NORMALISATION_TOLERANCE`), stretched to each image with nearest neighbours
    (``scipy.ndimage.zoom(order=0, mode="nearest")``) and renormalised."""
    template = np.asarray(template)
    if template.ndim != 2 or min(template.shape) < 1:
        raise ValueError(f"{where}: a center bias must be a 2D (H, W) log density, got shape {template.shape}")
    if not np.issubdtype(template.dtype, np.floating):
        raise ValueError(f"{where}: a center bias must be floating point, got {template.dtype}")
    if not np.isfinite(template).all():
        raise ValueError(f"{where}: a center bias must be finite; {int((~np.isfinite(template)).sum())} values are not")
    total = float(logsumexp(template.astype(np.float64)))
    if abs(total) > NORMALISATION_TOLERANCE:
        raise ValueError(f"{where}: not a normalised log density (logsumexp {total:.4g}, expected 0 within "
                         f"{NORMALISATION_TOLERANCE}); pass log(p / p.sum()) of a non-negative map p")
    template = template.astype(np.float64)
    cache: dict[tuple[int, int], np.ndarray] = {}

    def log_density(shape: tuple[int, int]) -> np.ndarray:
        shape = (int(shape[0]), int(shape[1]))
        if shape not in cache:
            stretched = zoom(template, (shape[0] / template.shape[0], shape[1] / template.shape[1]), order=0,
                             mode="nearest", grid_mode=False)
            if stretched.shape != shape:  # zoom rounds the output size; pin it to the image
                stretched = np.pad(stretched, [(0, max(0, s - t)) for s, t in zip(shape, stretched.shape)],
                                   mode="edge")[: shape[0], : shape[1]]
            cache[shape] = (stretched - logsumexp(stretched)).astype(np.float32)
        return cache[shape]

    return log_density


def resolve(spec: str | pathlib.Path) -> CenterBiasFunction:
    """The center bias a user names: ``"mit1003"``, ``"osie"``, ``"uniform"``, a ``.safetensors``
    center-bias file or a ``.npy`` log density (see the module docstring)."""
    text = str(spec)
    if text == "uniform":
        return uniform
    if text in SHIPPED:
        shipped = load(ASSETS / f"centerbias_{text}.safetensors")
        return lambda shape: np.asarray(shipped.log_density(shape))
    path = pathlib.Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"center bias {text!r}: not {', '.join(SHIPPED)} or uniform, and no such file")
    if path.suffix == ".npy":
        try:
            template = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path}: not a readable .npy array ({e})") from None
        return from_template(template, str(path))
    if path.suffix == ".safetensors":
        center_bias = load(path)
        return lambda shape: np.asarray(center_bias.log_density(shape))
    raise ValueError(f"{path}: a center bias is a .npy log density or a .safetensors center-bias file")
