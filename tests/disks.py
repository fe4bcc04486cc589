"""Real disks for the failure tests: a tmpfs of a given size mounted under the test's folder (full, or
remounted read-only), so that ENOSPC and EROFS come from the kernel, not from a mock. Where mounting is
not allowed (not root, no mount binary), the tests that need it are skipped with the reason."""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(where: Path, size: str = "8m") -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command: the real full / read-only disk tests need one")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the real disk tests need root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def read_only(where: Path, on: bool = True) -> None:
    subprocess.run(["mount", "-o", f"remount,{'ro' if on else 'rw'}", str(where)], check=True)


def fill(where: Path, leave: int = 0) -> Path:
    """Fill the disk holding `where` until about `leave` bytes are free; the filler file's path."""
    filler = where / "filler.bin"
    with filler.open("wb") as fh:
        try:
            while shutil.disk_usage(where).free > leave:
                chunk = min(1 << 16, shutil.disk_usage(where).free - leave)
                fh.write(bytes(max(chunk, 1)))
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler
