"""The ``deepgaze`` command's persistent XLA compilation cache: compiled programs kept on disk, so a
second run with the same model, image size and batch skips most of the compile (JAX's own cache,
:func:`jax.config.update` of ``jax_compilation_cache_dir``).

The directory is ``$DEEPGAZE_COMPILATION_CACHE`` if set (``off`` turns the cache off), else
``$XDG_CACHE_HOME/deepgaze-jax/xla`` (``~/.cache/deepgaze-jax/xla``). A cache directory the user gave
JAX itself (``JAX_COMPILATION_CACHE_DIR``) is left as it is. JAX keys every entry on the program, the
jax/jaxlib versions, the backend and its flags, and XLA:CPU checks the machine's features on loading,
so a stale or foreign entry is recompiled, never run. Python users enable the same with
:func:`enable`, or with JAX's own config.
"""

from __future__ import annotations

import logging
import os
import pathlib

import jax

ENV = "DEEPGAZE_COMPILATION_CACHE"
#: Values of :data:`ENV` that turn the cache off.
OFF = ("off", "0", "false", "no", "none")
#: The cache's size bound; JAX evicts the least recently used entries beyond it, and with a bound it
#: reads and writes under a file lock (``filelock``), so concurrent commands share the folder safely.
MAX_BYTES = 2 << 30
#: Every program is kept, however fast it compiles: a predictor's start runs dozens of small ones.
MIN_COMPILE_SECONDS = 0.0

log = logging.getLogger(__name__)


def default_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/deepgaze-jax/xla``, or ``~/.cache/deepgaze-jax/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "deepgaze-jax" / "xla"


def enable(directory: str | os.PathLike | None = None) -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache in ``directory`` (default: :data:`ENV`, else
    :func:`default_dir`); returns the directory in use, or None where the cache is off or the
    directory cannot be written (logged as a warning; everything still runs, compiling as before).
    Call it before the first compile."""
    current = jax.config.jax_compilation_cache_dir
    if current:
        return pathlib.Path(current)
    if directory is None:
        value = os.environ.get(ENV)
        if value is not None and value.strip().lower() in OFF:
            return None
        directory = value or default_dir()
    path = pathlib.Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"{path} is not writable")
    except OSError as e:
        log.warning("compilation cache off: cannot use %s (%s); set %s to another folder or to off",
                    path, e.strerror or e, ENV)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path
