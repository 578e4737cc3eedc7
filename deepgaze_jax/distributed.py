"""Multi-process (multi-host) runs: joining one, and what only one process may do.

Every process runs the same program on the same data: each builds every batch and feeds its own
devices' rows of it (:meth:`deepgaze_jax.train.Trainer.put_batch`), and jitted results that the host
reads are replicated, so each process sees the whole of them. Process 0 alone writes files (orbax
checkpoints coordinate their own writes) and shows progress. Checkpoint and cache folders must be on
a file system every process sees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join a multi-process run through ``jax.distributed.initialize``; call before any other JAX use.

    Args:
      coordinator: ``HOST:PORT`` of process 0 (which listens there). What is left out, JAX detects
        (SLURM, Open MPI, Cloud TPU, Kubernetes; the coordinator also from ``JAX_COORDINATOR_ADDRESS``).
      num_processes: processes in the run.
      process_id: this process, ``0 .. num_processes - 1``.
    """
    if coordinator is not None and (num_processes is None or process_id is None):
        raise ValueError("a coordinator address needs the number of processes and this process's id too")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is not in 0..{num_processes - 1}")
    jax.distributed.initialize(coordinator, num_processes, process_id)


def is_main() -> bool:
    """Whether this is process 0, the one that writes files and prints (always so in one process)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process has reached the barrier of this name (at once with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def main_first(name: str) -> Iterator[None]:
    """Run the block on process 0 first, then on the others: e.g. a cache that process 0 builds and
    writes, and the others then read instead of building it at the same time into the same files.
    Process 0 reaches the barrier even when its block raises, so the others do not wait forever."""
    if not is_main():
        barrier(name)
    try:
        yield
    finally:
        if is_main():
            barrier(name)


def assert_same_everywhere(value: int, what: str) -> None:
    """Raise unless every process passes the same ``value`` (a fingerprint, e.g. a CRC32 of ``what``)."""
    if jax.process_count() > 1:
        values = multihost_utils.process_allgather(np.uint32(value))
        if len(set(values.tolist())) > 1:
            raise ValueError(f"the processes disagree on {what} (fingerprint per process: {values.tolist()})")
