"""Stored pixel values -> brightness in [0, 1], as pure functions of an array and its PixelMeta.

Order (PS3.3 C.11, "grayscale pipeline"): Modality LUT (a Modality LUT Sequence table, else rescale
slope/intercept, C.11.1) ->
VOI LUT or window (C.11.2) -> MONOCHROME1 inversion (C.7.6.3.1.2) -> scale to [0, 1]. The range
comes from BitsStored, never from the dtype: 12-bit data in a uint16 array fills only 1/16 of it.
Padding pixels (Pixel Padding Value and Range Limit, C.7.5.1.1.2: what a unit writes where there is no
image, such as outside the collimated field) are black whatever the chain makes of their value: a
MONOCHROME1 export padded with 0 would otherwise show a white frame, which the breast crop would take
for the breast.

Because stored values are integers of at most 16 bits, the whole chain is a function of the value:
`lookup_table` evaluates it once per possible value, and decoding an image is one table lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from pydicom.dataset import Dataset


@dataclass(frozen=True)
class PixelMeta:
    """What the grayscale pipeline needs from a DICOM header."""

    bits_stored: int
    photometric: str = "MONOCHROME2"  # "" where the header has none (`photometric_from_pixels`)
    signed: bool = False
    slope: float = 1.0
    intercept: float = 0.0
    window_center: float | None = None
    window_width: float | None = None
    voi_function: str = "LINEAR"
    voi_lut: tuple[int, ...] | None = None  # VOI LUT Sequence table (C.11.2.1.1)
    voi_lut_first: int = 0
    voi_lut_bits: int = 16
    modality_lut: tuple[int, ...] | None = None  # Modality LUT Sequence table (C.11.1.1.1)
    modality_lut_first: int = 0
    spacing_mm: float | None = None  # row spacing (pixel_spacing), None when the header has none
    padding: tuple[int, int] | None = None  # stored values (lowest, highest) that mark padding pixels

    @property
    def stored_range(self) -> tuple[int, int]:
        if self.signed:
            return -(2 ** (self.bits_stored - 1)), 2 ** (self.bits_stored - 1) - 1
        return 0, 2**self.bits_stored - 1


def ds_number(value: object) -> float:
    """A DS (decimal string) value as a number. Software set to a language with a decimal comma writes
    "0,085" or "2047,5", which the standard does not allow (PS3.5 6.2) and pydicom keeps as text: a value
    with one comma and no point is read with the comma as its point (fo-dicom does the same since 5.1.6).
    Anything else that is not a number is a ValueError."""
    if isinstance(value, str) and value.count(",") == 1 and "." not in value:
        value = value.replace(",", ".")
    return float(value)  # type: ignore[arg-type]


def ds_numbers(value: object) -> list[float]:
    """The numbers of a DS element as pydicom gives them: numbers, or the text it could not read (a value
    with a decimal comma, `ds_number`; values separated by commas where backslashes belong, "0.07,0.07", each
    with its point; one value where the standard wants two). [] when empty; a ValueError when not numbers."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        parts = value.split("\\")
        if len(parts) == 1 and all("." in part for part in value.split(",")):
            parts = value.split(",")
        return [ds_number(part.strip()) for part in parts]
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [ds_number(v.strip() if isinstance(v, str) else v) for v in value]  # type: ignore[attr-defined]
    return [ds_number(value)]


def _first(ds: Dataset, keyword: str) -> float | None:
    """A number of the grayscale chain: the first of several (windows: the first is the primary one,
    C.11.2.1.2); None when absent. One that is not a number is a ValueError that names it."""
    try:
        numbers = ds_numbers(ds.get(keyword))  # pydicom converts a DS value when read; "abc" it keeps as text
        return numbers[0] if numbers else None
    except (TypeError, ValueError):
        written = ds.get_item(keyword)
        raise ValueError(f"{keyword} {written.value if written else None!r} is not a number") from None


def _lut(ds: Dataset, keyword: str) -> tuple[tuple[int, ...] | None, int, int]:
    """(table, first stored value mapped, bits per entry) of a LUT sequence's first item (C.11.1.1.1,
    C.11.2.1.1); (None, 0, 16) when absent. LUT Data is US/SS values or OW bytes."""
    seq = ds.get(keyword)
    if not seq:
        return None, 0, 16
    item = seq[0]
    descriptor = [int(v) for v in item.LUTDescriptor]
    data = item.LUTData
    table = tuple(int(v) for v in (data if not isinstance(data, bytes) else np.frombuffer(data, "<u2")))
    return table, descriptor[1], descriptor[2]


def pixel_spacing(ds: Dataset) -> float:
    """Row spacing in mm: ImagerPixelSpacing (at the detector, what mammography systems write), else
    PixelSpacing; NaN when neither is present or readable."""
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        try:
            spacing = (ds_numbers(ds.get(keyword)) or [0.0])[0]
        except (TypeError, ValueError):
            continue
        if spacing > 0:
            return spacing
    return float("nan")


def padding_values(ds: Dataset) -> tuple[int, int] | None:
    """The stored values that mark padding (C.7.5.1.1.2): Pixel Padding Value alone, or the range from it
    to Pixel Padding Range Limit (either may be the lower end); None when absent or unreadable."""
    ends = []
    for keyword in ("PixelPaddingValue", "PixelPaddingRangeLimit"):
        value = ds.get(keyword)
        try:
            ends.append(int(value) if not isinstance(value, bytes) else None)
        except (TypeError, ValueError):
            ends.append(None)
    value, limit = ends
    if value is None:
        return None
    return (value, value) if limit is None else (min(value, limit), max(value, limit))


def meta_from_dataset(ds: Dataset) -> PixelMeta:
    """Read PixelMeta from a header; missing optional tags take their DICOM defaults."""
    lut, first, bits = _lut(ds, "VOILUTSequence")
    modality_lut, modality_first, _ = _lut(ds, "ModalityLUTSequence")
    return PixelMeta(
        bits_stored=int(ds.BitsStored),
        photometric=str(ds.get("PhotometricInterpretation") or "").strip().upper(),
        signed=int(ds.get("PixelRepresentation", 0)) == 1,
        slope=_first(ds, "RescaleSlope") or 1.0,
        intercept=_first(ds, "RescaleIntercept") or 0.0,
        window_center=_first(ds, "WindowCenter"),
        window_width=_first(ds, "WindowWidth"),
        voi_function=str(ds.get("VOILUTFunction", "LINEAR")).upper() or "LINEAR",
        voi_lut=lut,
        voi_lut_first=first,
        voi_lut_bits=bits,
        modality_lut=modality_lut,
        modality_lut_first=modality_first,
        spacing_mm=None if np.isnan(spacing := pixel_spacing(ds)) else spacing,
        padding=padding_values(ds),
    )


def apply_modality_lut(arr: np.ndarray, meta: PixelMeta) -> np.ndarray:
    """Stored values to modality units: through the Modality LUT Sequence table (values below its first
    entry take the first, above its last the last: C.11.1.1.1), else x * slope + intercept (C.11.1.1.2)."""
    if meta.modality_lut is not None:
        table = np.asarray(meta.modality_lut, np.float64)
        return table[np.clip(np.round(arr).astype(np.int64) - meta.modality_lut_first, 0, len(table) - 1)]
    return arr.astype(np.float64) * meta.slope + meta.intercept


def modality_range(meta: PixelMeta) -> tuple[float, float]:
    if meta.modality_lut is not None:
        return float(min(meta.modality_lut)), float(max(meta.modality_lut))
    lo, hi = apply_modality_lut(np.array(meta.stored_range), meta)
    return float(min(lo, hi)), float(max(lo, hi))


def apply_voi(arr: np.ndarray, meta: PixelMeta) -> np.ndarray | None:
    """VOI LUT table, else window (LINEAR, LINEAR_EXACT or SIGMOID), output in [0, 1]; None when absent."""
    if meta.voi_lut is not None:
        table = np.asarray(meta.voi_lut, np.float64) / (2**meta.voi_lut_bits - 1)
        index = np.clip(np.round(arr).astype(np.int64) - meta.voi_lut_first, 0, len(table) - 1)
        return table[index]
    c, w = meta.window_center, meta.window_width
    if c is None or w is None or w <= 0:
        return None
    if meta.voi_function == "SIGMOID":  # C.11.2.1.3.1
        return 1.0 / (1.0 + np.exp(-4.0 * (arr - c) / w))
    if meta.voi_function == "LINEAR_EXACT":  # C.11.2.1.3.2
        return np.clip((arr - c) / w + 0.5, 0.0, 1.0)
    if w < 1:  # LINEAR needs width >= 1 (C.11.2.1.2.1)
        return None
    return np.clip((arr - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)  # C.11.2.1.2.1


def to_unit(arr: np.ndarray, meta: PixelMeta, use_voi: bool = True) -> np.ndarray:
    """The whole grayscale pipeline: stored values -> brightness in [0, 1], bright = dense; padding black."""
    arr = np.asarray(arr)
    x = apply_modality_lut(arr, meta)
    y = apply_voi(x, meta) if use_voi else None
    if y is None:
        lo, hi = modality_range(meta)
        y = (x - lo) / max(hi - lo, 1e-12)
    if meta.photometric == "MONOCHROME1":  # minimum value is white: invert
        y = 1.0 - y
    if meta.padding is not None:
        y = np.where((arr >= meta.padding[0]) & (arr <= meta.padding[1]), 0.0, y)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def lookup_table(meta: PixelMeta, use_voi: bool = True) -> tuple[np.ndarray, int]:
    """`to_unit` evaluated on every possible stored value: (table, offset); decode = table[arr - offset]."""
    lo, hi = meta.stored_range
    return to_unit(np.arange(lo, hi + 1), meta, use_voi), lo


def apply_table(arr: np.ndarray, table: np.ndarray, offset: int) -> np.ndarray:
    """Decode stored values through a table from `lookup_table`."""
    if offset == 0 and arr.dtype.kind == "u":
        # Bits above BitsStored may carry overlays (PS3.5 8.1.1): mask them off, which also bounds the index.
        return np.take(table, arr & np.asarray(len(table) - 1, arr.dtype))
    return np.take(table, np.clip(arr.astype(np.int64) - offset, 0, len(table) - 1))


def fill_padding(raw: np.ndarray, meta: PixelMeta, table: np.ndarray, offset: int) -> np.ndarray:
    """`raw` with its padding pixels set to the darkest stored value that is not padding (`table`, `offset`:
    from `lookup_table`), so that resizing the stored values blends padding in as black background, not as
    whatever value the unit padded with. `raw` itself when it has no padding."""
    if meta.padding is None:
        return raw
    is_padding = np.zeros(len(table), bool)
    lo, hi = (end - offset for end in meta.padding)
    if hi >= 0:  # a padding value outside the stored range marks nothing
        is_padding[max(lo, 0) : hi + 1] = True
    mask = apply_table(raw, is_padding, offset)
    if is_padding.all() or not mask.any():
        return raw
    darkest = offset + int(np.argmin(np.where(is_padding, np.inf, table)))
    return np.where(mask, np.asarray(darkest, raw.dtype), raw)


def photometric_from_pixels(arr: np.ndarray, meta: PixelMeta, use_voi: bool = True) -> str:
    """The polarity of an image whose header does not say it: a mammogram's background (the air beside
    the breast, a large share of every image) is its darkest part, so decoded the right way round more of
    its pixels lie in the lowest tenth of its range (1st to 99th percentile) than in the highest; decoded
    the wrong way round, fewer. Padding pixels are not counted. `arr`: stored values (a subsampled copy
    serves)."""
    table, offset = lookup_table(replace(meta, photometric="MONOCHROME2"), use_voi)
    shown = apply_table(arr, table, offset)
    if meta.padding is not None:
        shown = shown[(arr < meta.padding[0]) | (arr > meta.padding[1])]
    lo, hi = np.percentile(shown, [1, 99]) if shown.size else (0.0, 0.0)
    tenth = (hi - lo) / 10
    bright = np.count_nonzero(shown > hi - tenth) > np.count_nonzero(shown < lo + tenth)
    return "MONOCHROME1" if bright else "MONOCHROME2"


def decode(arr: np.ndarray, meta: PixelMeta, use_voi: bool = True) -> np.ndarray:
    """Stored values (any integer dtype) -> float32 brightness in [0, 1] through the lookup table."""
    return apply_table(arr, *lookup_table(meta, use_voi))
