"""Process-parallel map over independent jobs, in order, with an optional progress wrapper."""

from __future__ import annotations

import os
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
    with ProcessPoolExecutor(max_workers=n) as pool:
        results = pool.map(fn, jobs, chunksize=chunksize)
        yield from (progress(results, len(jobs)) if progress else results)
