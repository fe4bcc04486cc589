"""A cache of preprocessed arrays, keyed by the file's identity and a hash of the settings.

Layout: CACHE_DIR/<settings hash>/<key[:2]>/<key>.npy (uint16, brightness x 65535), beside it <key>.png
(the whole image as figures show it, `preprocess.display_image`), and an index.json per settings hash
recording each entry's checksum and geometry. A changed setting gives a new settings hash (never a stale
array); a changed file gives a new key; a damaged entry fails its checksum and is rebuilt. [MONAI
PersistentDataset keys its cache the same way.]
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammofuse.domain import VIEWS
from mammofuse.problems import DataError
from mammofuse.storage import alive, replaced, writer

CACHE_VERSION = 4  # bump when the preprocessing code changes what it writes
QUANT = 65535
CHECKSUMS = {view: view.column("crc32") for view in VIEWS}  # a table's column per view


def settings_hash(settings: dict[str, Any]) -> str:
    text = json.dumps({"version": CACHE_VERSION, **settings}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def entry_key(path: str | Path, settings_id: str) -> str:
    """Key of a file's entry: its resolved path, size and modification time, and the settings."""
    resolved = os.path.realpath(path)  # str(Path(path).resolve()), without pathlib's cost per call
    st = os.stat(resolved)
    return hashlib.sha1(f"{resolved}|{st.st_size}|{st.st_mtime_ns}|{settings_id}".encode()).hexdigest()[:24]


def checksum(arr: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(arr).data)


def quantize(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * QUANT).astype(np.uint16)


def dequantize(arr: np.ndarray) -> np.ndarray:
    return arr.astype(np.float32) * (1.0 / QUANT)


def read_npy(path: str | Path) -> np.ndarray:
    """An entry's array, read straight into memory. Not `np.load`: it reads a file through `np.fromfile`,
    whose path check turns a Ctrl-C that lands inside it into "TypeError: expected str, bytes or
    os.PathLike object, not BufferedReader" (numpy's NpyPath_PathlikeToFspath ignores an error from
    isinstance), so training stopped with a traceback instead of saying how to resume."""
    with open(path, "rb") as fh:
        npy = np.lib.format
        header = npy.read_array_header_1_0 if npy.read_magic(fh) == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = header(fh)
        if dtype.hasobject:
            raise ValueError(f"{path}: an array of Python objects, not a cache entry")
        arr = np.empty(shape[::-1] if fortran else shape, dtype)
        if fh.readinto(arr.reshape(-1).view(np.uint8).data) != arr.nbytes:  # into the array itself
            raise EOFError(f"{path}: the file ends before its array does")
    return arr.T if fortran else arr


def write_entry(path: Path, arr: np.ndarray) -> dict[str, Any]:
    """Write atomically (a crash or a full disk never leaves a half entry under the real name); return
    the entry's record: checksum, byte size and shape."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, arr)  # to memory: numpy's own file writes report a full disk without its errno
    with replaced(path, tidy=False) as tmp:  # the cache removes its leftovers once (remove_leftovers)
        tmp.write_bytes(buffer.getbuffer())
    return {"crc32": checksum(arr), "bytes": path.stat().st_size, "shape": list(arr.shape)}


def display_path(entry: str | Path) -> Path:
    """Where the display copy of the cache entry `entry` (its .npy) is: beside it, a PNG."""
    return Path(entry).with_suffix(".png")


def write_display(entry: Path, img: np.ndarray) -> None:
    """Write the display copy (uint8) of `entry` atomically, as a PNG: lossless, a third of an array's
    bytes (76 vs 210 kB for a 3000 x 2400 mammogram's), 1.6 ms to encode."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise ValueError(f"{entry}: its display copy cannot be encoded")
    with replaced(display_path(entry), tidy=False) as tmp:
        tmp.write_bytes(png.tobytes())


def read_display(entry: str | Path) -> np.ndarray | None:
    """The display copy of `entry` (uint8); None where there is none (an entry of a cache made before
    display copies were kept) or it cannot be read (PNG's own checksums)."""
    try:
        img = cv2.imdecode(np.frombuffer(display_path(entry).read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error):  # none; an empty file
        return None
    return img if img is not None and img.ndim == 2 and img.dtype == np.uint8 else None


class Cache:
    """The entries made with one set of preprocessing settings."""

    def __init__(self, root: Path, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.id = settings_hash(settings)
        self.dir = root / self.id
        self.index_path = self.dir / "index.json"
        self.index: dict[str, dict[str, Any]] = {}
        self.damaged: str | None = None  # why the index on disk could not be read: its entries are rebuilt
        if self.index_path.is_file():
            record, self.damaged = read_index(self.index_path)
            self.index = record["entries"]

    def key(self, path: str | Path) -> str:
        return entry_key(path, self.id)

    def remove_leftovers(self) -> int:
        """Delete the temporary files of writers that died (a kill, a full disk): their names carry the
        writer's process id; those of a process still alive (a concurrent run) are left alone."""
        removed = 0
        for tmp in [*self.dir.glob("*/.*.tmp"), *self.dir.glob(".*.tmp"), *self.dir.glob("*/*.tmp*.*")]:
            # `replaced`'s temporary names, or those of a version before 2026-11-29
            old = re.fullmatch(r"[0-9a-f]+\.tmp(\d+)\.(?:npy|png)|\.index\.json\.(\d+)\.\d+\.tmp", tmp.name)
            pid = int(old.group(1) or old.group(2)) if old else writer(tmp)
            if pid is not None and not alive(pid):
                tmp.unlink(missing_ok=True)
                removed += 1
        return removed

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def is_valid(self, key: str, verify: bool = False) -> bool:
        """Present in the index and on disk with the right byte size (a cut-short or replaced entry
        is not valid); with `verify`, also read it and compare its checksum (catches flipped bits), and
        read its display copy where it has one (a damaged one fails PNG's own checksums)."""
        record = self.index.get(key)
        if record is None:
            return False
        path = self.path(key)
        try:
            if os.stat(path).st_size != record.get("bytes"):
                return False
        except OSError:  # not there
            return False
        if not verify:
            return True
        try:
            arr = read_npy(path)
        except (OSError, ValueError, EOFError):
            return False
        if display_path(path).exists() and read_display(path) is None:
            return False
        return list(arr.shape) == list(record["shape"]) and checksum(arr) == record["crc32"]

    def record(self, key: str, info: dict[str, Any]) -> None:
        self.index[key] = info

    def save_index(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with replaced(self.index_path, tidy=False) as tmp:
            tmp.write_text(json.dumps({"settings": self.settings, "entries": self.index}), encoding="utf-8")


def read_index(path: Path) -> tuple[dict[str, Any], str | None]:
    """A settings folder's index.json ({"settings", "entries"}), and None; or, where it cannot be read (cut
    short, overwritten, edited by hand), an empty one and what is wrong with it. The index is derived: an
    entry it does not list is made again, never trusted."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict) and isinstance(record.get("entries"), dict):
            return record, None
        problem = "not a cache index"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    return {"settings": {}, "entries": {}}, problem


class DamagedEntry(DataError):
    """A cached array whose checksum differs from the one recorded when it was written."""


def load_entry(path: str | Path, raw: bool = False) -> np.ndarray:
    """A cached array as float32 brightness in [0, 1] (`raw`: as stored, uint16 of QUANT steps, half the
    bytes to move), checked against the checksum its index recorded: a bit flipped on disk since
    preprocessing stops the read instead of training on it (the crc32 costs a few per cent of the read:
    benchmarks/bench_cache_read.py). A damaged array is removed, so that the next run of any command that
    reads it (train, evaluate, explain, predict) makes it again from its DICOM file."""
    arr = read_npy(path)
    if checksum(arr) != entry_record(path)["crc32"]:
        Path(path).unlink(missing_ok=True)
        raise DamagedEntry(
            f"{path}: the cached array differs from what preprocessing wrote (checksum): the disk damaged "
            "it. It is removed: run the command again, and it is made again from its DICOM file "
            "(`mammofuse preprocess --verify` checks every entry of the work folder's cache)"
        )
    return arr if raw else dequantize(arr)


@lru_cache(maxsize=4)
def _entries(index_path: Path, modified_ns: int) -> dict[str, dict[str, Any]]:
    return read_index(index_path)[0]["entries"]


def entry_record(path: str | Path) -> dict[str, Any]:
    """What the index records of a cached array (geometry, checksum, ...), found from the array's path;
    each index is read once per process, and again when it changes. An array its index does not list (the
    index damaged, or made again without it): a DamagedEntry that says how to rebuild it."""
    path = Path(path)
    index = path.parent.parent / "index.json"
    record = _entries(index, index.stat().st_mtime_ns).get(path.stem)
    if record is None:
        raise DamagedEntry(
            f"{path}: its cache's index ({index}) does not list it (damaged, or made again since): "
            "`mammofuse preprocess` rebuilds the entries the work folder needs"
        )
    return record
