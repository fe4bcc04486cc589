"""Process-parallel map over independent jobs, in order, with an optional progress wrapper."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

J = TypeVar("J")
R = TypeVar("R")
Progress = Callable[[Iterable, int], Iterable]


def parallel_map(
    fn: Callable[[J], R],
    jobs: list[J],
    workers: int = 0,
    progress: Progress | None = None,
    chunksize: int = 4,
) -> Iterator[R]:
    """Yield fn(job) for each job, in order; `workers` 0 uses every core, 1 runs in this process."""
    n = min(workers or os.cpu_count() or 1, max(1, len(jobs)))
    if n == 1:
        results: Iterable[R] = map(fn, jobs)
        yield from (progress(results, len(jobs)) if progress else results)
        return
    with ProcessPoolExecutor(max_workers=n, initializer=die_with, initargs=(os.getpid(),)) as pool:
        results = pool.map(fn, jobs, chunksize=chunksize)
        yield from (progress(results, len(jobs)) if progress else results)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with(parent: int) -> None:
    """A worker's first step: the kernel kills it when its parent dies, even by kill -9, so no orphan
    goes on writing into the cache (Linux; elsewhere the pool's own shutdown is all there is)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
