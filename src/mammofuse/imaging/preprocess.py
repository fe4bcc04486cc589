"""Preprocess a cohort into the cache: decode, orient, crop, resize every image, in parallel.

Each image is decoded once per (file, settings); a re-run on an unchanged cohort decodes nothing.
Files whose pixels cannot be decoded are recorded and their breasts left out; the rest go on.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pandas as pd
from pydicom.dataset import Dataset

from mammofuse.config import PreprocessConfig
from mammofuse.domain import VIEWS, Side
from mammofuse.imaging.cache import CHECKSUMS, Cache, quantize, settings_hash, write_display, write_entry
from mammofuse.imaging.decode import (
    PixelMeta,
    apply_table,
    fill_padding,
    lookup_table,
    meta_from_dataset,
    photometric_from_pixels,
)
from mammofuse.imaging.dicomfile import read_header, read_image, read_reduced, reducible
from mammofuse.imaging.geometry import (
    DETECT_MAX_SIDE,
    DISPLAY_MAX_SIDE,
    Geometry,
    cut_to_field,
    display_shape,
    find_breast,
    keep_region,
    orient_and_fit,
    resize,
    seed_parity,
    subsample_step,
)
from mammofuse.parallel import parallel_map
from mammofuse.problems import Problems
from mammofuse.storage import locked

SAVE_EVERY_S = 5.0  # the cache index is saved at least this often while preprocessing: a kill keeps the rest
ENLARGED = 1.25  # an image resized up by more than this is reported: it has no detail the export lacks


BLANK_SPAN = 0.01  # an image whose brightest and darkest pixels are closer than this shows nothing


class BlankImage(ValueError):
    """An image that decodes but shows nothing: every pixel the same brightness."""


class Preprocessed(NamedTuple):
    image: np.ndarray  # the model's input, uint16 (H, W) = brightness x 65535
    geometry: Geometry  # how it maps back onto the original
    laterality_disagrees: bool  # the side tag says otherwise than the pixels
    display: np.ndarray  # the whole image as a figure shows it beside a map (`display_image`)
    photometric_from_pixels: str = ""  # the polarity read from the pixels, where the header says none


def preprocess_pixels(
    raw: np.ndarray, meta: PixelMeta, side: Side | None, cfg: PreprocessConfig
) -> Preprocessed:
    """Stored pixels -> the model's input, its geometry, and a display copy of the whole image.

    The breast is found on a subsampled copy; the crop is resized on its stored values and only the
    small result goes through the lookup table, which emits the cache's uint16 directly: no
    full-resolution float image is ever made. Where the header does not say the image's polarity
    (PhotometricInterpretation), the pixels do (`photometric_from_pixels`).
    """
    use_voi = cfg.voi == "window"
    step = subsample_step(raw.shape)
    guessed = "" if meta.photometric else photometric_from_pixels(raw[::step, ::step], meta, use_voi)
    meta = replace(meta, photometric=meta.photometric or guessed)
    table, offset = lookup_table(meta, use_voi)
    raw = fill_padding(raw, meta, table, offset)
    table_q = quantize(table)

    def values(small: np.ndarray) -> np.ndarray:
        return apply_table(small, table_q, offset)

    seen = apply_table(raw[::step, ::step], table, offset)
    if seen.max() - seen.min() < BLANK_SPAN:
        raise BlankImage(
            f"every pixel shows as brightness {seen.min():.2f}: a blank image, or a window (WindowCenter, "
            "WindowWidth) that maps every pixel to one value (preprocess.voi = 'none' ignores it)"
        )
    box, chest_left, mask = find_breast(seen, step, raw.shape, cfg.margin)
    display = display_image(raw, table, offset, keep_region(mask, step, (0, raw.shape[0], 0, raw.shape[1])))
    if cfg.mode == "seed_parity":
        parity = seed_parity(raw, cfg.parity_resize, cfg.parity_crop, values)
        return Preprocessed(*parity, False, display, guessed)
    spacing = (meta.spacing_mm, cfg.spacing_mm) if cfg.spacing_mm and meta.spacing_mm else None
    if spacing:
        box = cut_to_field(box, chest_left, spacing[0] / spacing[1], cfg.size)
    keep = keep_region(mask, step, box) if cfg.blank_outside_breast else None
    y0, y1, x0, x1 = box
    crop = raw[y0:y1, x0:x1]
    out, geometry, disagrees = orient_and_fit(
        crop, box, chest_left, side, raw.shape, cfg.size, values, keep, spacing
    )
    return Preprocessed(out, geometry, disagrees, display, guessed)


def display_image(raw: np.ndarray, table: np.ndarray, offset: int, keep: np.ndarray) -> np.ndarray:
    """The whole image as the figures show it beside a map, uint8 (at most DISPLAY_MAX_SIDE pixels a side):
    resized on its stored values, then through `table` (brightness), as the model's input is; black
    outside `keep` (the breast, dilated: `keep_region`), so that no burned-in text apart from the breast
    (a marker, on some exports a name or a date) reaches a figure or the report. Kept in the cache beside
    the model's input: drawing a map on the original then decodes nothing (`read_display`)."""
    shape = display_shape(raw.shape)
    shown = apply_table(resize(raw, shape), np.round(table * 255).astype(np.uint8), offset)
    shown *= cv2.resize(keep, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return shown


def display_file(path: str | Path, voi: bool) -> np.ndarray:
    """The display copy of a DICOM file, decoded for it: for a cache entry made without one."""
    ds, raw = read_image(path)
    return preprocess_pixels(
        raw, meta_from_dataset(ds), None, PreprocessConfig(voi="window" if voi else "none")
    ).display


def preprocess_file(path: str | Path, side: Side | None, cfg: PreprocessConfig) -> Preprocessed:
    """Read one DICOM file and preprocess it (the I/O edge around `preprocess_pixels`); a JPEG 2000 image
    at the resolution the output needs, with `jpeg2000 = 'reduced'` (`preprocess_reduced`)."""
    ds = read_header(path)
    reduced = cfg.jpeg2000 == "reduced" and cfg.mode == "breast" and reducible(ds)
    if reduced and (done := preprocess_reduced(ds, side, cfg)) is not None:
        return done
    ds, raw = read_image(path, ds)
    if raw.ndim != 2:
        raise ValueError(f"expected one grey frame, found pixel array of shape {raw.shape}")
    return preprocess_pixels(raw, meta_from_dataset(ds), side, cfg)


def preprocess_reduced(ds: Dataset, side: Side | None, cfg: PreprocessConfig) -> Preprocessed | None:
    """A JPEG 2000 image preprocessed from the coarsest of its wavelet levels whose breast box still has at
    least the output's pixels (found on a coarse level first); its geometry in the original's pixels.
    None where no level is coarse enough to gain anything, or the codestream has none to give."""
    shape = (int(ds.Rows), int(ds.Columns))
    meta = meta_from_dataset(ds)
    most = min(  # the whole image kept at the output's size, its display copy at its size
        _levels_within(max(s / o for s, o in zip(shape, cfg.size))),
        _levels_within(max(shape) / DISPLAY_MAX_SIDE),
    )
    if most < 1:
        return None
    try:
        probe_levels = _levels_within(max(shape) / DETECT_MAX_SIDE)
        probe = read_reduced(ds, probe_levels)
        seen = preprocess_pixels(probe, _coarser(meta, probe_levels), side, cfg).geometry
        levels = min(most, _levels_within(2**probe_levels / seen.scale))
        if levels < 1:
            return None
        raw = probe if levels == probe_levels else read_reduced(ds, levels)
    except ValueError:
        return None
    done = preprocess_pixels(raw, _coarser(meta, levels), side, cfg)
    return done._replace(geometry=done.geometry.on_original(2**levels, shape))


def _levels_within(ratio: float) -> int:
    """How many halvings of a side keep it at least 1 / `ratio` of its size (at most 5: DICOM's usual)."""
    return max(0, min(5, int(np.floor(np.log2(max(ratio, 1.0)) + 1e-9))))


def _coarser(meta: PixelMeta, levels: int) -> PixelMeta:
    """The pixel description of an image decoded 2**levels times coarser a side."""
    return replace(meta, spacing_mm=meta.spacing_mm * 2**levels if meta.spacing_mm else meta.spacing_mm)


UNDECODABLE = "undecodable pixels"  # the problem category of a breast whose image cannot be decoded
BLANK = "blank image"  # ... or shows nothing (`BlankImage`)
PARTNER_UNUSED = "; the breast's other view is not used without it: "  # then that image, in the reason


@dataclass(frozen=True)
class _Job:
    path: str
    side: str
    key: str
    out: str
    cfg: PreprocessConfig


def _run_job(job: _Job) -> dict[str, Any]:
    try:
        done = preprocess_file(job.path, Side(job.side), job.cfg)
    except BlankImage as exc:
        return {"key": job.key, "error": f"{job.path}: {exc}", "category": BLANK}
    except Exception as exc:  # any decoder failure is a per-file problem, never a crash
        return {
            "key": job.key,
            "error": f"{job.path}: pixels cannot be decoded ({type(exc).__name__}: {exc})",
            "category": UNDECODABLE,
        }
    write_display(Path(job.out), done.display)  # first: an entry that exists has its display copy
    record = write_entry(Path(job.out), done.image)
    return {
        "key": job.key,
        **record,
        "geometry": done.geometry.to_dict(),
        "laterality_disagrees": done.laterality_disagrees,
        "photometric_from_pixels": done.photometric_from_pixels,
    }


@dataclass
class PreprocessStats:
    images: int = 0
    decoded: int = 0
    reused: int = 0
    rebuilt: int = 0  # entries that existed but were damaged
    failed: int = 0
    leftovers: int = 0  # temporary files of an interrupted run, removed
    enlarged: int = 0  # images of the kept breasts resized up by more than ENLARGED
    largest_scale: float = 0.0  # output pixels per stored pixel, the largest of the kept images

    def enlarged_text(self, size: tuple[int, int]) -> str | None:
        """A line when images were enlarged to fit `size`: the model sees no finer detail than the export
        holds, so a smaller size loses nothing and costs less."""
        if not self.enlarged:
            return None
        return (
            f"{self.enlarged} images were enlarged to fit {size[0]}x{size[1]} (up to "
            f"{self.largest_scale:.1f}x their stored pixels): the model sees no finer detail than the export "
            "holds; a preprocess.size at or below the export's resolution loses nothing and trains faster"
        )


def preprocess_cohort(
    manifest: pd.DataFrame,
    cfg: PreprocessConfig,
    cache_root: Path,
    problems: Problems,
    progress=None,
    verify: bool = False,
) -> tuple[pd.DataFrame, PreprocessStats, Cache]:
    """Build every missing or damaged cache entry (`verify`: checksum every existing entry too);
    return the manifest rows that have both views cached, with columns cc_cache and mlo_cache.
    One process at a time builds a cache (two runs needing the same one: the second waits, then
    reuses what the first built)."""
    with locked(cache_root / settings_hash(cfg.settings()), "preprocess", on_wait=_say_waiting):
        cache = Cache(cache_root, cfg.settings())  # read after the wait: what the other process built
        return _build(manifest, cfg, cache, problems, progress, verify)


def _say_waiting(holder: str) -> None:
    from mammofuse.ui import console

    console.print(f"waiting for {holder}, which is building the same preprocessed cache")


def _build(
    manifest: pd.DataFrame,
    cfg: PreprocessConfig,
    cache: Cache,
    problems: Problems,
    progress,
    verify: bool,
) -> tuple[pd.DataFrame, PreprocessStats, Cache]:
    stats = PreprocessStats(leftovers=cache.remove_leftovers())
    if cache.damaged:
        problems.warn(
            "cache index damaged",
            f"{cache.index_path}: cannot be read ({cache.damaged}): every image is decoded again",
            path=str(cache.index_path),
        )
    columns = {view: view.column("path") for view in VIEWS}
    breasts = manifest[["patient_id", "side", *columns.values()]].to_dict("records")
    keys: dict[str, str] = {}
    jobs: list[_Job] = []
    for breast in breasts:
        for column in columns.values():
            path = breast[column]
            if path in keys:
                continue
            key = keys[path] = cache.key(path)
            stats.images += 1
            if cache.is_valid(key, verify):
                stats.reused += 1
                continue
            stats.rebuilt += key in cache.index
            jobs.append(_Job(path, breast["side"], key, str(cache.path(key)), cfg))

    failed: dict[str, tuple[str, str]] = {}  # key -> problem category, reason
    saved = time.monotonic()
    try:
        # as each image finishes: one slow to decode holds back none after it from the index a Ctrl-C saves
        for result in parallel_map(_run_job, jobs, cfg.workers, progress, cluster=cfg.cluster, ordered=False):
            key = result.pop("key")
            if "error" in result:
                failed[key] = result["category"], result["error"]
                cache.index.pop(key, None)
                continue
            stats.decoded += 1
            cache.record(key, result)
            if time.monotonic() - saved > SAVE_EVERY_S:
                cache.save_index()  # a killed run keeps what it built
                saved = time.monotonic()
    except BaseException:  # Ctrl-C, a full disk, an error: the rerun reuses every image finished
        with contextlib.suppress(OSError):  # the disk may be full: the error that stopped the run is raised
            cache.save_index()
        raise
    if jobs:
        cache.save_index()
    stats.failed = len(failed)

    kept = []
    for i, breast in enumerate(breasts):
        ids = {"patient_id": breast["patient_id"], "side": breast["side"]}
        paths = [breast[c] for c in columns.values()]
        if bad := [p for p in paths if keys[p] in failed]:
            unused = [
                f"{view.value} image {breast[col]}" for view, col in columns.items() if breast[col] not in bad
            ]
            for path in bad:  # each image that failed, with its own error; and the partner not used
                also = f"{PARTNER_UNUSED}{unused[0]}" if unused else ""
                category, reason = failed[keys[path]]
                problems.add(category, reason + also, path=path, **ids)
            continue
        for path in paths:
            if (
                cfg.spacing_mm
                and cfg.mode == "breast"
                and not cache.index[keys[path]]["geometry"].get("spacing_mm")
            ):
                problems.warn(
                    "no pixel spacing",
                    f"{path}: no ImagerPixelSpacing or PixelSpacing in the header: fitted to the output size "
                    f"instead of resampled to {cfg.spacing_mm:g} mm per pixel (breast kept)",
                    path=path,
                    **ids,
                )
            if guessed := cache.index[keys[path]].get("photometric_from_pixels"):
                problems.warn(
                    "polarity from the pixels",
                    f"{path}: no PhotometricInterpretation in the header: read as {guessed}, the way "
                    "round that makes the background (the air beside the breast) darker than the breast: "
                    "look at it to be sure (breast kept; preprocess --preview shows it first)",
                    path=path,
                    **ids,
                )
            if cache.index[keys[path]].get("laterality_disagrees"):
                problems.warn(
                    "laterality disagrees with pixels",
                    f"{path}: side tag {breast['side']} but the chest wall is on the other edge; "
                    "oriented by the pixels (breast kept)",
                    path=path,
                    **ids,
                )
        kept.append(i)
    out = manifest.iloc[kept].copy()
    scales = [cache.index[keys[p]]["geometry"]["scale"] for c in columns.values() for p in out[c]]
    stats.enlarged = sum(scale > ENLARGED for scale in scales)
    stats.largest_scale = max(scales, default=0.0)
    for view, column in columns.items():
        out[view.column("cache")] = [str(cache.path(keys[p])) for p in out[column]]
        out[CHECKSUMS[view]] = [cache.index[keys[p]]["crc32"] for p in out[column]]  # what the entry holds
    return out.reset_index(drop=True), stats, cache
