"""Process-parallel map over independent jobs, in order or as they finish, with an optional progress wrapper:
on this machine's cores, or on a Dask cluster's workers (archive-scale preprocessing)."""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

from mammofuse.problems import DataError

if TYPE_CHECKING:
    from distributed import Future

J = TypeVar("J")
R = TypeVar("R")
Progress = Callable[[Iterable, int], Iterable]


def parallel_map(
    fn: Callable[[J], R],
    jobs: list[J],
    workers: int = 0,
    progress: Progress | None = None,
    chunksize: int = 1,
    cluster: str | None = None,
    ordered: bool = True,
) -> Iterator[R]:
    """Yield fn(job) for each job, in order; `workers` 0 uses every core, 1 runs in this process;
    `cluster` ('dask://HOST:PORT' or 'local:N'): on a Dask cluster's workers instead. `chunksize`: jobs
    sent to a worker at once. More saves messages on jobs of a few milliseconds, but a Ctrl-C waits for
    the chunk each worker is on and the one queued behind it (4 JPEG 2000 images of 4096 x 3328 a chunk:
    11-12 s; one: 4-6 s). `ordered` False: each result as its job finishes (chunksize 1), so that one
    job slow to finish holds back none of those after it: what a caller that records each result keeps
    when a Ctrl-C stops it."""
    if cluster and jobs:
        yield from cluster_map(fn, jobs, cluster, progress, ordered)
        return
    n = min(workers or os.cpu_count() or 1, max(1, len(jobs)))
    if n == 1:
        results: Iterable[R] = map(fn, jobs)
        yield from (progress(results, len(jobs)) if progress else results)
        return
    with ProcessPoolExecutor(max_workers=n, initializer=die_with, initargs=(os.getpid(),)) as pool:
        if ordered:
            results = pool.map(fn, jobs, chunksize=chunksize)
        else:
            results = (future.result() for future in as_completed([pool.submit(fn, job) for job in jobs]))
        try:
            yield from (progress(results, len(jobs)) if progress else results)
        except BaseException:  # Ctrl-C, an error, or the caller stopped early: the jobs not begun are not run
            # joined here, once the jobs begun are done: a pool left running to the interpreter's exit raced
            # it (Python 3.11's exit wakes the pool's thread through a pipe that thread may be closing: an
            # "OSError: Bad file descriptor" traceback after a Ctrl-C)
            pool.shutdown(wait=True, cancel_futures=True)
            raise


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with(parent: int) -> None:
    """A worker's first step: the kernel kills it when its parent dies, even by kill -9, so no orphan
    goes on writing into the cache (Linux; elsewhere the pool's own shutdown is all there is). Ctrl-C is
    the parent's to answer: a worker finishes the job it is on (no half-written file, no traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def cluster_map(
    fn: Callable[[J], R],
    jobs: list[J],
    cluster: str,
    progress: Progress | None = None,
    ordered: bool = True,
) -> Iterator[R]:
    """fn(job) for each job on a Dask distributed cluster, yielded in order (`ordered` False: as each
    finishes): a running scheduler ('dask://HOST:PORT'; its workers must have mammofuse installed and see
    the same files), or a LocalCluster of N single-threaded worker processes started here ('local:N', 0:
    every core). The jobs are submitted at once; the scheduler balances them over the workers."""
    from dask.distributed import Client, LocalCluster

    if cluster.startswith("local:"):
        n = int(cluster.removeprefix("local:") or 0) or os.cpu_count() or 1
        local = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            preload=[__name__],  # dask_setup below, in each worker
        )
        client = Client(local)
    else:
        address = "tcp://" + cluster.removeprefix("dask://")
        try:
            client = Client(address, timeout="20s")
        except OSError as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {address} ({exc})") from None
        local = None
    with _ctrl_c_deferred() as interrupted:
        try:
            futures = client.map(fn, jobs, pure=False)
            results: Iterable[R] = (
                (_result(future, interrupted) for future in futures)
                if ordered
                else _as_finished(futures, interrupted)
            )
            yield from (progress(results, len(jobs)) if progress else results)
        finally:
            client.close()
            if local is not None:
                local.close()


@contextmanager
def _ctrl_c_deferred() -> Iterator[threading.Event]:
    """Ctrl-C sets the event instead of raising wherever the main thread is: a KeyboardInterrupt inside
    Dask's client calls races its event loop's thread, which then logged a NameError traceback
    (distributed 2026.8, utils.sync) and 'Couldn't gather keys' errors. Signals are the main thread's:
    elsewhere the event is never set."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted.is_set():  # a Ctrl-C after the last result is still one
        raise KeyboardInterrupt


def _result(future: Future, interrupted: threading.Event) -> Any:
    """A future's result, waited for outside Dask's client calls: a Ctrl-C raises here, between them."""
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())  # from Dask's thread, the moment it is done
    while not (done.wait(0.1) or interrupted.is_set()):
        pass
    if interrupted.is_set():
        raise KeyboardInterrupt
    return future.result()


def _as_finished(futures: list[Future], interrupted: threading.Event) -> Iterator[Any]:
    """The futures' results as each is done, waited for outside Dask's client calls as `_result` does."""
    finished: queue.Queue[Future] = queue.Queue()
    for future in futures:
        future.add_done_callback(finished.put)  # from Dask's thread
    for _ in futures:
        done: Future | None = None
        while done is None:
            if interrupted.is_set():
                raise KeyboardInterrupt
            with suppress(queue.Empty):
                done = finished.get(timeout=0.1)
        yield done.result()


def dask_setup(worker: object) -> None:
    """What a worker of a LocalCluster started here does first: as a pool's worker, it leaves Ctrl-C to
    the command, which closes the cluster (else each worker prints a KeyboardInterrupt traceback); and it
    keeps Dask's own log to what stops it: closing races (a heartbeat to a scheduler already closed, a task
    cancelled) logged tracebacks and warnings after a Ctrl-C, while a job's error returns through its
    future to the command, which names the file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


class ClusterError(DataError):
    """The cluster named cannot be used."""
