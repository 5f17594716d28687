"""Independent CPU jobs in worker processes, so that every core of a small server works.

The final comparison meta-tests each candidate at each shot: thousands of 10-step
fine-tunings of a small network on a handful of images, independent of one another. On a
CPU server the jobs run side by side in ``spawn``-ed worker processes, one or more threads
each, instead of one after the other with every thread on one small batch. The fine-tuning
is compute-bound, so the gain over one process using every core is modest (about 10% on
the 2-core development machine: server/README.md, "Measured"). On CUDA, or with one
worker, the jobs run in this process, one after the other. Every job is seeded, so its
result does not depend on which worker ran it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

import torch

__all__ = ["auto_workers", "run_jobs", "usable_cpus"]

logger = logging.getLogger(__name__)

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

_shared: Any = None
"""What every job of a worker process shares (set once per worker by :func:`_start`)."""


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not every OS has affinity masks
        return max(1, os.cpu_count() or 1)


def auto_workers(requested: int, jobs: int, device: torch.device) -> int:
    """How many worker processes to run ``jobs`` jobs with.

    Args:
        requested: the setting: 0 = one per usable core, else at most this many.
        jobs: independent jobs to run.
        device: where the jobs compute; CUDA work stays in this process.

    Returns:
        1 (run here, in order) or the number of worker processes, never more than ``jobs``.
    """
    if requested < 0:
        raise ValueError(f"workers must be >= 0 (0 = one per core), got {requested}")
    if device.type != "cpu" or jobs <= 1:
        return 1
    return max(1, min(jobs, requested or usable_cpus()))


def _start(threads: int, level: int, shared: Any) -> None:
    global _shared
    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    _shared = shared


def _call(fn: Callable[[Any, Any], Any], item: Any) -> Any:
    return fn(_shared, item)


def run_jobs(
    fn: Callable[[S, T], R],
    items: Sequence[T],
    shared: S,
    *,
    workers: int,
    name: Callable[[T], str] = str,
) -> list[R]:
    """``[fn(shared, item) for item in items]``, in ``workers`` processes when above 1.

    Args:
        fn: a module-level function (worker processes import it by name).
        items: one job each; sent to a worker when it is free, in this order.
        shared: what every job needs (the splits, say): sent once to each worker.
        workers: processes; 1 runs every job here, in order.
        name: how the log names a job.

    Returns:
        The results, in the order of ``items``. A job's exception is raised here.
    """
    if workers <= 1 or len(items) <= 1:
        return [fn(shared, item) for item in items]
    threads = max(1, usable_cpus() // workers)
    logger.info("%d jobs in %d worker processes, %d thread(s) each", len(items), workers, threads)
    level = logging.getLogger().getEffectiveLevel()
    results: list[Any] = [None] * len(items)
    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start,
        initargs=(threads, level, shared),
    ) as pool:
        futures = {pool.submit(_call, fn, item): i for i, item in enumerate(items)}
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                i = futures[future]
                results[i] = future.result()
                logger.info("job %d/%d done: %s", done, len(items), name(items[i]))
        except BaseException:
            for future in futures:
                future.cancel()  # jobs not started yet never start
            raise
    return results
