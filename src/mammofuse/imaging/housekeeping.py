"""`mammofuse cache DIR`: what a cache of preprocessed images holds, and removing what no work folder uses.

Every preprocessing setting tried keeps a whole copy of the cohort (a 1024 x 512 image is 1 MiB: 100 GiB
for an archive of 100,000 images), and an image exported again (another modification time) leaves its old
entry behind. The cache cannot know who reads it, so the user names the work folders to keep: every entry
that their preprocessed table or any of their runs (each data.csv under runs/: folds and tune trials
included) lists stays; `prune` removes every other entry, and a settings folder left empty. A settings
folder is held while it is pruned: a preprocess writing into it waits (or is refused) meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mammofuse.config import ConfigError
from mammofuse.domain import VIEWS
from mammofuse.imaging.cache import read_index
from mammofuse.storage import locked

CACHE_COLUMNS = [view.column("cache") for view in VIEWS]


@dataclass
class Folder:
    """One settings folder of a cache: the entries made with one set of preprocessing settings."""

    path: Path
    settings: dict[str, Any]
    files: int  # entries on disk (.npy), whether or not the index lists them
    bytes: int  # theirs and their display copies'
    written: datetime  # when its index was last written
    used: int | None = None  # of its files, those the kept work folders list (None: none named)

    @property
    def summary(self) -> str:
        """'breast 1024x512' or 'breast 1024x512, 0.1 mm': the settings that tell folders apart."""
        size = "x".join(str(n) for n in self.settings.get("size", []))
        spacing = self.settings.get("spacing_mm")
        return f"{self.settings.get('mode', '?')} {size}" + (f", {spacing:g} mm" if spacing else "")


def used_entries(works: list[Path]) -> set[Path]:
    """The cache entries that the work folders `works` read: their preprocessed tables' and every run's."""
    used: set[Path] = set()
    for work in works:
        tables = [work / "preprocessed.csv", *sorted((work / "runs").rglob("data.csv"))]
        if not any(t.is_file() for t in tables):
            raise ConfigError(f"{work}: not a work folder (no preprocessed.csv, no runs/*/data.csv)")
        for table in (t for t in tables if t.is_file()):
            paths = pd.read_csv(table, usecols=lambda c: c in CACHE_COLUMNS, dtype=str)
            for column in paths:
                used |= {Path(p).resolve() for p in paths[column].dropna()}
    return used


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.npy"))


def survey(root: Path, used: set[Path] | None = None) -> list[Folder]:
    """Every settings folder under the cache `root`, with how much of it `used` lists."""
    if not root.is_dir():
        raise ConfigError(f"{root}: no such cache folder")
    found = []
    for index in sorted(root.glob("*/index.json")):
        files = _entries(index.parent)
        found.append(
            Folder(
                path=index.parent,
                settings=read_index(index)[0]["settings"],
                files=len(files),
                bytes=sum(f.stat().st_size for f in [*files, *index.parent.glob("*/*.png")]),
                written=datetime.fromtimestamp(index.stat().st_mtime, UTC),
                used=None if used is None else sum(f.resolve() in used for f in files),
            )
        )
    return found


@dataclass
class Pruned:
    files: int = 0
    bytes: int = 0
    folders: int = 0


def prune(root: Path, used: set[Path]) -> Pruned:
    """Remove every entry under the cache `root` that `used` does not list (its index record too), and
    every settings folder left without an entry. Each settings folder is held while it is pruned."""
    done = Pruned()
    for folder in survey(root):
        with locked(folder.path, "cache prune", on_wait=lambda holder: None):
            index_path = folder.path / "index.json"
            index, _ = read_index(index_path)  # a damaged one is written back empty: entries made again
            for entry in _entries(folder.path):
                if entry.resolve() in used:
                    continue
                done.files, done.bytes = done.files + 1, done.bytes + entry.stat().st_size
                entry.unlink()
                index["entries"].pop(entry.stem, None)
            for shown in folder.path.glob("*/*.png"):  # of the entries removed (or never written)
                if not shown.with_suffix(".npy").exists():
                    done.bytes += shown.stat().st_size
                    shown.unlink()
            if not _entries(folder.path):
                shutil.rmtree(folder.path)
                done.folders += 1
                continue
            for sub in folder.path.iterdir():
                if sub.is_dir() and not any(sub.iterdir()):
                    sub.rmdir()
            tmp = index_path.with_name(f".{index_path.name}.{os.getpid()}.prune.tmp")
            tmp.write_text(json.dumps(index), encoding="utf-8")
            os.replace(tmp, index_path)
    return done
