"""Writing a file so that readers see the old file or the whole new one, never a half-written one.

Everything is first written to a temporary file in the target's folder (``.<name>.<random><suffix>``),
flushed to disk, given the permissions a plain ``open`` would give, and renamed onto the target with
``os.replace`` (atomic within one file system). If writing fails or is interrupted, the temporary file is
removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(path: str | pathlib.Path, suffix: str = ".tmp") -> Iterator[pathlib.Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (``np.savez``, safetensors'
    ``save_file``); when the block ends without an error it is renamed onto ``path``, otherwise removed.
    ``suffix`` ends the temporary name (``.npz`` for writers that would add one). The folder must exist."""
    path = pathlib.Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = pathlib.Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | pathlib.Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating its folders."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | pathlib.Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folders."""
    write_bytes(path, text.encode("utf-8"))
