"""The backbone feature cache: the frozen backbone runs once per image, its features are kept on disk.

A cache file is keyed on everything its features depend on: the model's feature fields
(:data:`FEATURE_FIELDS`: backbone architecture, layers, downsampling, pooling, dtype; not the readout;
the convolution plan where it is not XLA's, :func:`deepgaze_jax.winograd.describe`), a SHA-256 digest of the backbone weights, the dataset's
name, its image ids and sizes, and whether the images were mirrored. The key's digest is part of the
file name, and the key itself is stored in the file and compared on every read, so features of another
backbone, model or dataset are never returned: a different key is a different file. Files are ``.npz``
(read with ``allow_pickle=False``) and written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import time
import zipfile
from collections.abc import Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from deepgaze_jax import atomic_write, distributed, winograd
from deepgaze_jax import model as model_lib
from deepgaze_jax.images import batches_by_size

FORMAT = 1
#: How the backbone convolves when a cache file is computed: ``"auto"`` is Winograd where it wins on the
#: CPU and XLA's convolution on GPUs (:func:`deepgaze_jax.winograd.auto_rule`), within 1.1e-5 relative of
#: XLA's features and 1.42x faster on the 2-core CPU (``experiments/BENCHMARKS.md``). ``"xla"`` gives the
#: files of every committed result whose config has no ``feature_conv_impl``, bit for bit.
DEFAULT_CONV_IMPL = "auto"
# The fields of a model description that its features depend on (the readout and finalizer do not).
FEATURE_FIELDS = ("backbone", "layers", "downsample", "readout_factor", "ceil_mode", "dtype")


def compute_features(model: model_lib.DeepGaze, backbone: dict, images: Sequence[np.ndarray],
                     batch_size: int = 4, progress: bool = True, flip: bool = False) -> list[np.ndarray]:
    """Run the frozen backbone once per image -> per image ``(h, w, C)`` features (numpy, model dtype).

    ``images`` is any sequence of ``(H, W, 3)`` arrays (a lazy loader with ``__getitem__`` and
    ``__len__`` works); images of the same size are batched. ``flip``: the features of the
    horizontally mirrored images.
    """
    shapes = [np.shape(images[i]) for i in range(len(images))]
    out: list[np.ndarray | None] = [None] * len(images)
    with tqdm(total=len(images), desc="features", disable=not progress) as bar:
        for chunk in batches_by_size(shapes, batch_size):
            stack = np.stack([images[i] for i in chunk])
            feats = np.asarray(model.features(backbone, stack[:, :, ::-1] if flip else stack))
            for i, f in zip(chunk, feats):
                out[i] = f
            bar.update(len(chunk))
    return out


def params_digest(params: dict) -> str:
    """SHA-256 (hex) of a parameter tree: every leaf's path, dtype, shape and bytes."""
    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0],
                             key=lambda item: jax.tree_util.keystr(item[0])):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def cache_key(model: model_lib.DeepGaze, backbone: dict, dataset_name: str, image_ids: Sequence[str],
              sizes: np.ndarray, flip: bool = False) -> dict:
    """What a cache file's features depend on, as a JSON-able dict."""
    images = hashlib.sha256()
    for image_id, size in zip(image_ids, np.asarray(sizes).reshape(-1, 2)):
        images.update(f"{image_id}|{int(size[0])}x{int(size[1])}\n".encode())
    fields = dataclasses.asdict(model)
    described = {k: fields[k] for k in FEATURE_FIELDS}
    if model.conv_impl != "xla":  # Winograd features differ by rounding; keys of XLA's stay as they were
        described["conv_impl"] = winograd.describe(model.conv_impl, model.dtype)
    return {"format": FORMAT, "model": described,
            "backbone_sha256": params_digest(backbone),
            "dataset": dataset_name, "images": len(image_ids), "images_sha256": images.hexdigest(),
            "flip": bool(flip)}


def cache_path(cache: pathlib.Path, key: dict) -> pathlib.Path:
    """The file of ``key`` in the folder ``cache``: readable name, then the key's digest."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    model = key["model"]
    flip = "_flipped" if key["flip"] else ""
    return pathlib.Path(cache) / f"features_{key['dataset']}_{model['backbone']}_{model['dtype']}{flip}_{digest}.npz"


def read(path: pathlib.Path, key: dict) -> list[np.ndarray] | None:
    """The features stored at ``path`` if its key equals ``key``; None if absent, unreadable or of another key."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["key"])) != json.loads(json.dumps(key)):
                return None
            return [z[f"f{i}"] for i in range(key["images"])]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # truncated or foreign file: recompute
        print(f"feature cache {path}: unreadable ({e}); recomputing", flush=True)
        return None


def write(path: pathlib.Path, key: dict, features: Sequence[np.ndarray]) -> None:
    """Store ``features`` under ``key`` at ``path`` atomically (a temporary file, then a rename)."""
    if len(features) != key["images"]:
        raise ValueError(f"{len(features)} feature maps for a key of {key['images']} images")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write.replacing(path, suffix=".npz") as tmp:  # np.savez would add .npz to any other name
        np.savez(tmp, key=json.dumps(key, sort_keys=True), **{f"f{i}": f for i, f in enumerate(features)})


def cached_features(model: model_lib.DeepGaze, backbone: dict, dataset, cache: pathlib.Path, dataset_name: str,
                    flip: bool = False, conv_impl: str = DEFAULT_CONV_IMPL) -> list[np.ndarray]:
    """Backbone features of every image of a :class:`~deepgaze_jax.data.FixationDataset` (``flip``: of
    the mirrored images), read from the folder ``cache`` if computed before under the same key, else
    computed and stored there, the backbone convolving by ``conv_impl`` (:data:`DEFAULT_CONV_IMPL`;
    it replaces the model's own, and is part of the key)."""
    model = dataclasses.replace(model, conv_impl=conv_impl)
    key = cache_key(model, backbone, dataset_name, dataset.image_ids, dataset.sizes, flip)
    path = cache_path(cache, key)
    features = read(path, key)
    if features is not None:
        return features
    start = time.time()
    backbone = winograd.transform_params(backbone, model.backbone, conv_impl, model.dtype)
    features = compute_features(model, backbone, dataset.images, batch_size=4, progress=distributed.is_main(),
                                flip=flip)
    if distributed.is_main():
        print(f"features of {len(dataset)} {dataset_name} images in {time.time() - start:.0f} s", flush=True)
    write(path, key, features)
    return features
