"""Transparent huge pages for XLA:CPU's buffers: a training step that page-faults half its time away.

XLA:CPU allocates each step's large temporaries (tens of MB: a DeepGaze III scanpath step's 256
fixations of 128-channel maps, their gradients) with glibc's ``malloc``, which maps every buffer above
32 MB afresh and unmaps it when freed, so the kernel zeroes and faults in 4 kB pages on every step.
glibc's tunable ``glibc.malloc.hugetlb=1`` (glibc 2.35+) asks for transparent huge pages on those
mappings instead; it changes no result. ``experiments/allocator_speed.py`` measures both ways.

A tunable is read when the process starts, so :func:`reexec` starts the process again with it set
(``GLIBC_TUNABLES``; the same interpreter and arguments, before any work is done);
``DEEPGAZE_HUGE_PAGES=off`` leaves the process as it is. On a 2-core AMD EPYC
(``experiments/results/allocator_speed_epyc_avx2.md``) it makes a DeepGaze III scanpath train step 1.72x
faster, but a DeepGaze II train step from cached features (small buffers) 0.83x as fast and inference
about the same, so only the DeepGaze III trainer (``experiments/deepgaze3_crossval.py``) calls it, not
``deepgaze train``. Python users set the variable themselves:
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python train.py``.
"""

from __future__ import annotations

import os
import pathlib
import re
import sys

ENV = "DEEPGAZE_HUGE_PAGES"
#: Values of :data:`ENV` that turn it off.
OFF = ("off", "0", "false", "no", "none")
TUNABLE = "glibc.malloc.hugetlb"
#: Set in the restarted process, so a C library that ignores the tunable is not restarted again.
_RESTARTED = "DEEPGAZE_HUGE_PAGES_RESTARTED"
_THP = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")


def glibc_version() -> tuple[int, int] | None:
    """The C library's glibc version, None where it is another (musl, macOS, Windows)."""
    try:
        name = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        return None
    match = re.fullmatch(r"glibc (\d+)\.(\d+).*", name)
    return (int(match[1]), int(match[2])) if match else None


def kernel_mode(path: pathlib.Path = _THP) -> str | None:
    """The kernel's transparent-huge-page mode (``always``, ``madvise``, ``never``), None if unknown."""
    try:
        match = re.search(r"\[(\w+)\]", path.read_text())
    except OSError:
        return None
    return match[1] if match else None


def wanted(environ: dict[str, str] | None = None, glibc: tuple[int, int] | None = None,
           mode: str | None = None) -> bool:
    """Whether the process should restart with the tunable: glibc 2.35+, a kernel that gives huge pages
    on request, the tunable not set yet, and not turned off by :data:`ENV`."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV, "").strip().lower() in OFF or environ.get(_RESTARTED):
        return False
    if TUNABLE in environ.get("GLIBC_TUNABLES", ""):
        return False
    glibc = glibc_version() if glibc is None else glibc
    mode = kernel_mode() if mode is None else mode
    return glibc is not None and glibc >= (2, 35) and mode in ("always", "madvise")


def environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``environ`` with :data:`TUNABLE` added to ``GLIBC_TUNABLES`` (other tunables kept)."""
    env = dict(os.environ if environ is None else environ)
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    env["GLIBC_TUNABLES"] = ":".join([*tunables, f"{TUNABLE}=1"])
    env[_RESTARTED] = "1"
    return env


def reexec() -> None:
    """Start this process again with huge pages where :func:`wanted` (never returns then); else return.

    Call it first thing in a program's entry point, never from library code: it replaces the process.
    """
    if not wanted():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    os.execve(sys.executable, [sys.executable, *argv[1:]], environment())
