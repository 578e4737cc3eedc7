"""Saving and loading parameter trees as safetensors (no pickle).

Format (version 1): one safetensors file. Each leaf of the nested ``dict`` is one tensor whose name is
its path joined by ``"/"`` (``"backbone/conv1/kernel"``); leaves keep their dtype and shape (0-d for
scalars). The header metadata is a ``str -> str`` dict holding at least
``{"format": "deepgaze-jax-params", "version": "1"}`` plus whatever the writer adds (``"model"``,
``"source"``, ...). Files are written atomically: to a temporary file in the same folder, then
``os.replace``.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from deepgaze_jax import atomic_write

FORMAT = "deepgaze-jax-params"
VERSION = "1"
SEPARATOR = "/"


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict -> ``{"a/b/c": array}``. Keys must be non-empty strings without ``"/"``."""
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if not isinstance(key, str) or not key or SEPARATOR in key:
            raise ValueError(f"param key {prefix}{key!r} must be a non-empty string without {SEPARATOR!r}")
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if not value:
                raise ValueError(f"param subtree {path!r} is empty and cannot be stored")
            flat.update(flatten_params(value, path + SEPARATOR))
        else:
            array = np.asarray(value)
            if array.dtype.kind not in "fiub":
                raise ValueError(f"param {path!r} has non-numeric dtype {array.dtype}")
            flat[path] = np.asarray(array, order="C")  # ascontiguousarray would make 0-d arrays 1-d
    return flat


def unflatten_params(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``{"a/b/c": array}`` -> nested dict; a path that is both a leaf and a prefix is an error."""
    tree: dict[str, Any] = {}
    for path in sorted(flat):
        *parents, leaf = path.split(SEPARATOR)
        node = tree
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"param {path!r} lies under leaf {SEPARATOR.join(parents[: i + 1])!r}")
        if leaf in node:
            raise ValueError(f"param {path!r} is both a leaf and a subtree")
        node[leaf] = flat[path]
    return tree


def save_params(path: str | os.PathLike[str], tree: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tree`` (nested dict of arrays, numpy or jax) to ``path`` atomically.

    ``metadata`` (str -> str) is stored in the header beside ``format`` and ``version``, which it
    may not override.
    """
    from safetensors.numpy import save_file

    path = pathlib.Path(path)
    meta = {str(k): v for k, v in (metadata or {}).items()}
    for key, value in meta.items():
        if not isinstance(value, str):
            raise TypeError(f"metadata[{key!r}] must be a str, got {type(value).__name__}")
    if meta.get("format", FORMAT) != FORMAT or meta.get("version", VERSION) != VERSION:
        raise ValueError("metadata may not override 'format' or 'version'")
    meta.update(format=FORMAT, version=VERSION)
    flat = flatten_params(tree)

    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    with atomic_write.replacing(path) as tmp:
        save_file(flat, str(tmp), metadata=meta)


def load_params(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a file written by :func:`save_params` -> ``(tree of numpy arrays, metadata)``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: ``path`` is not a safetensors file, or not in this format/version.
    """
    from safetensors import SafetensorError, safe_open

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such params file: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            flat = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a safetensors file ({e})") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: metadata format is {metadata.get('format')!r}, expected {FORMAT!r}")
    if metadata.get("version") != VERSION:
        raise ValueError(f"{path}: format version {metadata.get('version')!r} is not supported (expected {VERSION!r})")
    return unflatten_params(flat), metadata
