"""Where output goes: a disk that is full, read-only or not ours is found before the work starts and
reported as one line that says what to do; files are written whole or not at all; one process at a time
writes a folder."""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mammofuse.problems import DataError

if TYPE_CHECKING:
    import pandas as pd

DISK_ERRORS = {  # what a user can fix about the place the output goes: one line, exit 2, no traceback
    errno.ENOSPC: "the disk is full: free space, or write elsewhere (--work / --out)",
    errno.EDQUOT: "the disk quota is used up: free space, or write elsewhere",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f): raise the limit",
    errno.EROFS: "the file system is read-only: write elsewhere (--work / --out)",
    errno.EACCES: "no permission to write there: write elsewhere (--work / --out)",
    errno.EPERM: "the operation is not permitted there: write elsewhere",
    errno.EEXIST: "a file, not a folder, is there: give another path (--work / --out)",
    errno.ENOTDIR: "part of the path is a file, not a folder: give another path (--work / --out)",
    errno.ENAMETOOLONG: "the path is longer than the file system allows: give a shorter one",
}

WRITE_PROBE_BYTES = 1 << 20


def check_writable(*folders: Path) -> None:
    """Every command checks, before its work starts, that its output folders can be written: created if
    needed, and 1 MiB written and synced there. A read-only, unpermitted or full disk raises the OSError
    (naming the folder), which the CLI prints as one line, instead of failing after the work is done."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".mammofuse-write-check-", dir=folder)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(folder)) from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(bytes(WRITE_PROBE_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(folder)) from None
        finally:
            os.unlink(probe)


LEFTOVER_AGE = 3600.0  # s: a writer's temporary file this old, of a process not running here, is a leftover


def alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # none has that id (Overflow: none can, a name's digits)
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def temporary(path: Path) -> Path:
    """Where `replaced` writes `path` before the rename: `.NAME.PID-THREAD.tmp`, each writer's own."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def writer(tmp: Path) -> int | None:
    """The process id in a `temporary` name (one written before 2026-11-29: `.NAME.PID.tmp`); None if none."""
    found = re.fullmatch(r"\..+\.(\d+)(?:-\d+)?\.tmp", tmp.name)
    return int(found.group(1)) if found else None


def remove_leftovers(path: Path) -> None:
    """Delete what writers of `path` killed in the middle of `replaced` left (`temporary`, never read): those
    of a process no longer running here, written over LEFTOVER_AGE ago (a writer on another machine that
    shares the folder has a process id that means nothing here, and writes for seconds)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = writer(tmp)
        try:
            if pid is not None and not alive(pid) and time.time() - tmp.stat().st_mtime > LEFTOVER_AGE:
                tmp.unlink()
        except OSError:  # removed meanwhile by another writer, or not ours to remove: left as it is
            pass


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """A disk's error in the block (DISK_ERRORS) that names no file, as a write's does (a full disk), names
    `path`: the one line the CLI prints then says where the disk is full."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno in DISK_ERRORS:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


@contextmanager
def replaced(path: Path, tidy: bool = True) -> Iterator[Path]:
    """Write a file whole or not at all: the block writes the temporary path it is given (`temporary`),
    which is then renamed over `path` (a full disk, an error or a kill in the block leaves the previous
    version). What killed writers of `path` left is removed first (`remove_leftovers`); `tidy` False leaves
    that to the caller, a writer of many files in one folder (the cache) that removes them all at once."""
    if tidy:
        remove_leftovers(path)
    tmp = temporary(path)
    try:
        with naming(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_text(path: Path, text: str) -> None:
    """`path` holds `text`, written whole or not at all (`replaced`)."""
    with replaced(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_table(table: pd.DataFrame, path: Path) -> None:
    """A stage's CSV, written whole or not at all: a kill or a full disk while it is written leaves the
    previous version (or none), never a table cut short that the next stage would read as complete."""
    with replaced(path) as tmp:
        table.to_csv(tmp, index=False)


def disk_error(exc: OSError) -> str | None:
    """The one line for an OSError about the place output goes (None for any other OSError)."""
    if exc.errno not in DISK_ERRORS:
        return None
    return f"{exc.filename or 'the output folder'}: {exc.strerror} ({DISK_ERRORS[exc.errno]})"


LOCK_NAME = ".mammofuse.lock"


class InUse(DataError):
    """Another mammofuse process is working in the folder."""


RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")  # Lightning, torchrun, SLURM


def distributed_follower() -> bool:
    """Whether this process is one of a distributed run's processes other than its first."""
    return any(os.environ.get(name, "0") not in ("", "0") for name in RANK_VARIABLES)


def in_use(folder: Path) -> bool:
    """Whether a living process holds the folder (`locked`); False where nobody does or it has no lock."""
    lock = folder / LOCK_NAME
    if not lock.is_file():
        return False
    with lock.open("a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


@contextmanager
def locked(folder: Path, what: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the folder for one command: a second process is refused (InUse, naming who holds it) or,
    with `on_wait`, told who holds it and made to wait. The kernel releases the lock when its holder
    dies, even by kill -9: no stale lock to remove by hand. A DDP process other than the first (started
    by Lightning, torchrun or SLURM to run the same command) does not take the lock: the first holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    if distributed_follower():
        yield
        return
    with (folder / LOCK_NAME).open("a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            if on_wait is None:
                raise InUse(
                    f"{folder}: in use by {holder}; wait for it to finish, or work in another folder"
                ) from None
            on_wait(holder)
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"mammofuse {what} (process {os.getpid()})")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
