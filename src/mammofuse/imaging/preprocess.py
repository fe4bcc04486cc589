"""Preprocess a cohort into the cache: decode, orient, crop, resize every image, in parallel.

Each image is decoded once per (file, settings); a re-run on an unchanged cohort decodes nothing.
Files whose pixels cannot be decoded are recorded and their breasts left out; the rest go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom

from mammofuse.config import PreprocessConfig
from mammofuse.domain import VIEWS, Side
from mammofuse.imaging.cache import Cache, quantize, write_entry
from mammofuse.imaging.decode import decode, meta_from_dataset
from mammofuse.imaging.geometry import find_breast, orient_and_fit, seed_parity, subsample_step
from mammofuse.parallel import parallel_map
from mammofuse.problems import Problems

PREPROCESSED = "preprocessed.csv"
PREPROCESS_PROBLEMS = "preprocess_problems.csv"


def preprocess_pixels(raw: np.ndarray, meta, side: Side | None, cfg: PreprocessConfig):
    """Stored pixels -> (output float32 (H, W), geometry, laterality_disagrees).

    Only a subsampled copy and the breast's box are decoded: the lookup-table decode of the crop is
    the one full-resolution pass.
    """
    use_voi = cfg.voi == "window"
    if cfg.mode == "seed_parity":
        out, geometry = seed_parity(decode(raw, meta, use_voi), cfg.parity_resize, cfg.parity_crop)
        return out, geometry, False
    step = subsample_step(raw.shape)
    box, chest_left = find_breast(decode(raw[::step, ::step], meta, use_voi), step, raw.shape, cfg.margin)
    y0, y1, x0, x1 = box
    return orient_and_fit(
        decode(raw[y0:y1, x0:x1], meta, use_voi), box, chest_left, side, raw.shape, cfg.size
    )


def preprocess_file(path: str | Path, side: Side | None, cfg: PreprocessConfig):
    """Read one DICOM file and preprocess it (the I/O edge around `preprocess_pixels`)."""
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array
    if raw.ndim != 2:
        raise ValueError(f"expected one grey frame, found pixel array of shape {raw.shape}")
    return preprocess_pixels(raw, meta_from_dataset(ds), side, cfg)


@dataclass(frozen=True)
class _Job:
    path: str
    side: str
    key: str
    out: str
    cfg: PreprocessConfig


def _run_job(job: _Job) -> dict[str, Any]:
    try:
        img, geometry, disagrees = preprocess_file(job.path, Side(job.side), job.cfg)
    except Exception as exc:  # any decoder failure is a per-file problem, never a crash
        return {
            "key": job.key,
            "error": f"{job.path}: pixels cannot be decoded ({type(exc).__name__}: {exc})",
        }
    arr = quantize(img)
    crc = write_entry(Path(job.out), arr)
    return {
        "key": job.key,
        "crc32": crc,
        "shape": list(arr.shape),
        "geometry": geometry.to_dict(),
        "laterality_disagrees": disagrees,
    }


@dataclass
class PreprocessStats:
    images: int = 0
    decoded: int = 0
    reused: int = 0
    rebuilt: int = 0  # entries that existed but were damaged
    failed: int = 0
    flipped_by_pixels: list[str] = field(default_factory=list)


def preprocess_cohort(
    manifest: pd.DataFrame, cfg: PreprocessConfig, cache_root: Path, problems: Problems, progress=None
) -> tuple[pd.DataFrame, PreprocessStats, Cache]:
    """Build every missing or damaged cache entry; return the manifest rows that have both views cached,
    with columns cc_cache and mlo_cache (entry paths)."""
    cache = Cache(cache_root, cfg.settings())
    stats = PreprocessStats()
    keys: dict[str, str] = {}
    jobs: list[_Job] = []
    for _, row in manifest.iterrows():
        for view in VIEWS:
            path = row[f"{view.value.lower()}_path"]
            if path in keys:
                continue
            key = keys[path] = cache.key(path)
            stats.images += 1
            if cache.is_valid(key):
                stats.reused += 1
                continue
            stats.rebuilt += key in cache.index
            jobs.append(_Job(path, row["side"], key, str(cache.path(key)), cfg))

    failed: dict[str, str] = {}
    for result in parallel_map(_run_job, jobs, cfg.workers, progress):
        if "error" in result:
            failed[result["key"]] = result["error"]
            cache.index.pop(result["key"], None)
            continue
        stats.decoded += 1
        cache.record(result.pop("key"), result)
        if stats.decoded % 256 == 0:
            cache.save_index()  # an interrupted run keeps what it built
    cache.save_index()
    stats.failed = len(failed)

    kept = []
    for i, row in manifest.iterrows():
        ids = {"patient_id": row["patient_id"], "side": row["side"]}
        bad = [
            (v, row[f"{v.value.lower()}_path"])
            for v in VIEWS
            if keys[row[f"{v.value.lower()}_path"]] in failed
        ]
        if bad:
            view, path = bad[0]
            problems.add("undecodable pixels", failed[keys[path]], path=path, **ids)
            continue
        for view in VIEWS:
            key = keys[row[f"{view.value.lower()}_path"]]
            if cache.index[key].get("laterality_disagrees"):
                stats.flipped_by_pixels.append(row[f"{view.value.lower()}_path"])
                problems.add(
                    "laterality disagrees with pixels",
                    f"{row[f'{view.value.lower()}_path']}: side tag {row['side']} but the chest wall is on "
                    "the other edge; oriented by the pixels (breast kept)",
                    path=row[f"{view.value.lower()}_path"],
                    **ids,
                )
        kept.append(i)
    out = manifest.loc[kept].copy()
    for view in VIEWS:
        col = view.value.lower()
        out[f"{col}_cache"] = [str(cache.path(keys[p])) for p in out[f"{col}_path"]]
    return out.reset_index(drop=True), stats, cache
