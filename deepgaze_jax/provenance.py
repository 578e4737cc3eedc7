"""Where a result came from: the command, the date, the machine and the git commit of the run.

Every script that writes into ``experiments/results/`` stamps what it writes with :func:`stamp`: JSON
files get the fields ``command``, ``date``, ``machine`` and ``commit`` (:func:`stamped`), markdown files
one line under their title (:func:`markdown_line`, :func:`add_to_markdown`); :func:`write_results`
writes the pair. The formats are those ``deepgaze_jax.crossval`` has written since its first stamped run,
so old and new stamps compare::

    commit = provenance.git_commit()              # first thing: the code the run starts from
    ...                                           # the run
    doc = provenance.stamped(results, provenance.stamp(provenance.command("experiments/x.py"), commit))
    provenance.write_results(REPO / "experiments" / "results" / "x", doc, markdown(doc))
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

from deepgaze_jax import atomic_write

FIELDS = ("command", "date", "machine", "commit")
_ROOT = pathlib.Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """The checked-out commit of this package's repository (``+dirty`` where tracked files differ from
    it; untracked files do not count), or "" outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_ROOT,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("+dirty" if dirty else "")


def cpu_info() -> dict:
    """The CPU from ``/proc/cpuinfo`` (Linux; elsewhere what :mod:`platform` knows): ``model_name``,
    ``vendor``, ``family``, ``model`` (ints or None), ``flags`` (a set) and ``mhz`` (the highest core clock
    listed, or None)."""
    info = {"model_name": platform.processor() or platform.machine() or "unknown", "flags": set(), "mhz": None,
            "vendor": None, "family": None, "model": None}
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    info["model_name"] = fields.get("model name", info["model_name"])
    info["vendor"] = fields.get("vendor_id")
    for key, name in (("family", "cpu family"), ("model", "model")):
        info[key] = int(fields[name]) if fields.get(name, "").isdigit() else None
    info["flags"] = set(fields.get("flags", "").split())
    mhz = [float(m) for m in re.findall(r"cpu MHz\s*:\s*([\d.]+)", text)]
    info["mhz"] = max(mhz) if mhz else None
    return info


def vector_isa(flags: set[str]) -> str | None:
    """The widest x86 vector instruction set among the CPU's ``flags`` (``AVX-512`` with ``+BF16`` or
    ``+AMX`` where present, ``AVX2``, ``AVX``), or None: XLA's and PyTorch's CPU speed depend on it."""
    if "avx512f" in flags:
        extras = [name for flag, name in (("avx512_bf16", "BF16"), ("amx_bf16", "AMX")) if flag in flags]
        return "AVX-512" + "".join("+" + e for e in extras)
    return "AVX2" if "avx2" in flags else "AVX" if "avx" in flags else None


def machine() -> str:
    """Architecture, CPU (model and widest vector instructions), cores, jax version and the kind of
    device jax computes on (its first device: ``cpu``, or the accelerator's name), e.g.
    ``x86_64 AMD EPYC (AVX2) 2 CPU cores, jax 0.10.2 on cpu``; a multi-process run adds how many
    processes and devices. Stamps from before the CPU was named read ``x86_64 2 CPU cores, ...``."""
    import jax

    cpu = cpu_info()
    isa = vector_isa(cpu["flags"])
    name = cpu["model_name"] + (f" ({isa})" if isa else "")
    text = f"{platform.machine()} {name} {os.cpu_count()} CPU cores, jax {jax.__version__} on {jax.devices()[0].device_kind}"
    if jax.process_count() > 1:
        text += f", {jax.process_count()} processes of this kind, {jax.device_count()} devices in all"
    return text


def utc_date() -> str:
    """The time now, to the minute, in UTC: ``2026-12-01 11:24 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def command(script: str, argv: Sequence[str] | None = None) -> str:
    """The command line that reruns a script: ``python <script> <argv>``, quoted as a shell needs it
    (``argv`` defaults to this process's arguments, ``sys.argv[1:]``)."""
    return shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)])


def stamp(command: str, commit: str | None = None) -> dict[str, str]:
    """``{"command", "date", "machine", "commit"}`` of this run; ``commit`` is best taken with
    :func:`git_commit` when the run starts (the default, now, misses edits made while it ran)."""
    return {"command": command, "date": utc_date(), "machine": machine(),
            "commit": git_commit() if commit is None else commit}


def stamped(doc: dict, stamp: dict[str, str]) -> dict:
    """``doc`` with the stamp's fields first (they replace fields of the same names)."""
    return {**stamp, **{k: v for k, v in doc.items() if k not in FIELDS}}


def markdown_line(stamp: dict[str, str]) -> str:
    """The stamp as one markdown line: ``Command: `...`; commit ...; date ...; machine ...``."""
    return (f"Command: `{stamp['command']}`; commit {stamp['commit'] or 'unknown'}; {stamp['date']}; "
            f"machine: {stamp['machine']}")


def add_to_markdown(text: str, stamp: dict[str, str]) -> str:
    """``text`` with :func:`markdown_line` under its title (its first line, a ``# `` heading), a blank
    line either side."""
    lines = text.split("\n")
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"the markdown does not start with a '# ' title line: {lines[0][:80] if lines else ''!r}")
    rest = lines[1:]
    while rest and not rest[0].strip():
        rest = rest[1:]
    return "\n".join([lines[0], "", markdown_line(stamp), "", *rest])


def write_results(stem: str | pathlib.Path, results: dict, markdown: str | None = None, *,
                  stamp: dict[str, str] | None = None, indent: int = 2) -> tuple[pathlib.Path, pathlib.Path | None]:
    """Write ``results`` to ``<stem>.json`` and ``markdown`` (where given) to ``<stem>.md``, each atomically,
    creating the folder (a ``stem`` ending in ``.json`` or ``.md`` names the same pair as without; other
    dots stay in the name). With ``stamp``, the JSON is :func:`stamped` and the markdown gets :func:`markdown_line` under
    its title; without, they are written as given. Returns the two paths (the second None without
    markdown)."""
    stem = pathlib.Path(stem)
    if stem.suffix in (".json", ".md"):
        stem = stem.with_suffix("")
    json_path, md_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")
    if stamp is not None:
        results = stamped(results, stamp)
        markdown = None if markdown is None else add_to_markdown(markdown, stamp)
    atomic_write.write_text(json_path, json.dumps(results, indent=indent) + "\n")
    if markdown is None:
        return json_path, None
    atomic_write.write_text(md_path, markdown)
    return json_path, md_path
