"""Orientation, breast crop and resize as pure array functions, with the geometry to undo them.

Every image leaves here with the chest wall on the left edge. The crop keeps the largest bright
connected component (the breast), so burned-in markers, text and film edges are ignored, and what lies
outside that component (dilated) inside the crop box is blanked; the resize keeps the aspect ratio and
pads, so microcalcifications are not squashed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import cv2
import numpy as np

from mammofuse.domain import Side

DETECT_MAX_SIDE = 256  # the breast is found on a subsampled copy: fast and blind to fine text
# A whole image in a figure (beside a map) has at most this many pixels a side: the case figures show each
# image at most 358 pixels tall (explain.overlays: ROW - GAP inches at 100 dpi), so 512 loses nothing there
DISPLAY_MAX_SIDE = 512


@dataclass(frozen=True)
class Geometry:
    """How an output pixel maps back to the original image (for Grad-CAM overlays on the original)."""

    original_shape: tuple[int, int]
    box: tuple[int, int, int, int]  # (y0, y1, x0, x1) in original pixels, before any flip
    flipped: bool  # mirrored left-right after the crop
    scale: float  # output pixels per original pixel
    offset: tuple[int, int]  # (top, left) padding in the output
    output_shape: tuple[int, int]
    spacing_mm: float | None = None  # output pixel spacing, when resampled by the header's spacing

    def to_dict(self) -> dict:
        """Plain JSON types (numpy scalars become Python numbers)."""
        return {k: np.asarray(v).tolist() for k, v in asdict(self).items()}

    def on_original(self, factor: int, shape: tuple[int, int]) -> Geometry:
        """This geometry, found on an image `factor` times coarser a side (`read_reduced`), in the pixels
        of its original of `shape`."""
        y0, y1, x0, x1 = (v * factor for v in self.box)
        box = (y0, min(y1, shape[0]), x0, min(x1, shape[1]))
        return replace(self, original_shape=shape, box=box, scale=self.scale / factor)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})  # type: ignore[arg-type]


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold (Otsu 1979) for values in [0, 1]: the cut maximising between-class variance."""
    hist = np.bincount(np.minimum((values.ravel() * bins).astype(np.int64), bins - 1), minlength=bins)
    centers = (np.arange(bins) + 0.5) / bins
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centers)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    return float(centers[int(np.argmax(w0 * w1 * (m0 - m1) ** 2))])


_OPENING = np.ones((3, 3), np.uint8)


def breast_mask(img: np.ndarray) -> np.ndarray:
    """Largest connected component above an Otsu threshold, after an opening that cuts thin bridges."""
    mask = cv2.morphologyEx((img > otsu_threshold(img)).astype(np.uint8), cv2.MORPH_OPEN, _OPENING)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return np.ones(img.shape, bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def chest_wall_on_left(mask: np.ndarray) -> bool:
    """The chest wall is where the breast touches the image's side edge over the most rows."""
    band = max(1, mask.shape[1] // 20)
    return bool(mask[:, :band].sum() >= mask[:, -band:].sum())


def subsample_step(shape: tuple[int, ...]) -> int:
    """Stride that brings the longer side to at most DETECT_MAX_SIDE pixels."""
    return max(1, int(np.ceil(max(shape) / DETECT_MAX_SIDE)))


def find_breast(
    small: np.ndarray, step: int, full_shape: tuple[int, int], margin: float = 0.02
) -> tuple[tuple[int, int, int, int], bool, np.ndarray]:
    """Box (y0, y1, x0, x1) of the breast in the full image, whether its chest wall is on the left, and
    the breast mask on the subsampled grid.

    `small` is the full image subsampled by `step` (img[::step, ::step]): detection is fast and
    blind to fine burned-in text.
    """
    mask = breast_mask(small)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0] * step, (rows[-1] + 1) * step, cols[0] * step, (cols[-1] + 1) * step
    my, mx = int(margin * (y1 - y0)), int(margin * (x1 - x0))
    h, w = full_shape
    box = (max(0, y0 - my), min(h, y1 + my), max(0, x0 - mx), min(w, x1 + mx))
    return box, chest_wall_on_left(mask), mask


DILATE = 0.03  # the kept region: the breast mask grown by this fraction of the crop's longer side


def keep_region(mask: np.ndarray, step: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """The part of the subsampled breast mask inside `box` (full-image pixels), dilated: the skin line
    and the few pixels lost to subsampling stay, a marker apart from the breast does not."""
    y0, y1, x0, x1 = box
    region = mask[y0 // step : -(-y1 // step), x0 // step : -(-x1 // step)].astype(np.uint8)
    radius = max(1, round(DILATE * max(region.shape)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(region, kernel)


def display_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(H, W) of an image of `shape` as a figure shows it: at most DISPLAY_MAX_SIDE pixels a side."""
    scale = min(1.0, DISPLAY_MAX_SIDE / max(shape[0], shape[1]))
    return round(shape[0] * scale), round(shape[1] * scale)


def needs_flip(side: Side | None, chest_left_by_pixels: bool) -> tuple[bool, bool]:
    """(flip, disagrees): flip so the chest wall is on the left, trusting the pixels over the tag.

    A left breast is displayed with its chest wall on the left (PS3.3 C.8.11.7.1); a right breast
    on the right. `disagrees` is True when the tag says otherwise than the pixels.
    """
    expected_left = None if side is None else side is Side.LEFT
    return (not chest_left_by_pixels), (expected_left is not None and expected_left != chest_left_by_pixels)


def resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize to (H, W), keeping the dtype (stored integer values or floats).

    Shrinking averages whole k x k blocks first (OpenCV's fast exact-integer area path; the last
    k - 1 rows and columns, inside the crop's background margin, are dropped), then finishes the
    remaining < 2x with bilinear interpolation: no aliasing of fine detail, ten times faster than a
    fractional area resize on a 3000 x 2400 mammogram.
    """
    h, w = img.shape
    k = min(h // shape[0], w // shape[1])
    if k >= 2:
        img = cv2.resize(img[: h - h % k, : w - w % k], (w // k, h // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def fit_shape(
    shape_in: tuple[int, int], shape: tuple[int, int], scale: float | None = None
) -> tuple[tuple[int, int], float, tuple[int, int]]:
    """Size that fits `shape_in` into `shape` keeping the aspect ratio, the scale, and the (top, left)
    offset that pads it: the chest wall stays on the left edge, the breast centred vertically. `scale`:
    a given one (a physical pixel size) instead of the largest that fits (the input must fit at it)."""
    h, w = shape_in
    scale = scale or min(shape[0] / h, shape[1] / w)
    new = (max(1, min(shape[0], round(h * scale))), max(1, min(shape[1], round(w * scale))))
    return new, scale, ((shape[0] - new[0]) // 2, 0)


def cut_to_field(
    box: tuple[int, int, int, int], chest_left: bool, scale: float, shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The part of a breast box that fits `shape` at `scale` (output pixels per original pixel): kept
    from the chest wall outwards, centred vertically; what lies beyond the field of view is cut."""
    y0, y1, x0, x1 = box
    max_h, max_w = int(shape[0] / scale), int(shape[1] / scale)
    if y1 - y0 > max_h:
        y0 += (y1 - y0 - max_h) // 2
        y1 = y0 + max_h
    if x1 - x0 > max_w:
        x0, x1 = (x0, x0 + max_w) if chest_left else (x1 - max_w, x1)
    return y0, y1, x0, x1


def pad(img: np.ndarray, shape: tuple[int, int], offset: tuple[int, int]) -> np.ndarray:
    """Place `img` at `offset` on a black canvas of `shape` (same dtype)."""
    out = np.zeros(shape, img.dtype)
    out[offset[0] : offset[0] + img.shape[0], offset[1] : offset[1] + img.shape[1]] = img
    return out


def identity(img: np.ndarray) -> np.ndarray:
    return img


def orient_and_fit(
    crop: np.ndarray,
    box: tuple[int, int, int, int],
    chest_left: bool,
    side: Side | None,
    full_shape: tuple[int, int],
    shape: tuple[int, int],
    values: Callable[[np.ndarray], np.ndarray] = identity,
    keep: np.ndarray | None = None,
    spacing: tuple[float, float] | None = None,
) -> tuple[np.ndarray, Geometry, bool]:
    """Fit the cropped breast to `shape` and flip it so its chest wall is on the left.

    `values` maps the resized crop to brightness: the preprocessing resizes stored values and decodes
    only the small result (exact for the linear steps of the grayscale pipeline, a close approximation
    for a window). `keep`: a mask over the crop (any resolution); outside it the output is black.
    `spacing`: (input, output) pixel spacing in mm, to resample at a physical scale instead of filling
    `shape` (the crop must fit: `cut_to_field`). Returns (output, geometry, laterality_disagrees).
    """
    flip, disagrees = needs_flip(side, chest_left)
    new, scale, offset = fit_shape(crop.shape, shape, spacing[0] / spacing[1] if spacing else None)
    small = values(resize(crop, new))
    if keep is not None:
        small = small * cv2.resize(keep, (new[1], new[0]), interpolation=cv2.INTER_NEAREST).astype(
            small.dtype
        )
    out = pad(small[:, ::-1] if flip else small, shape, offset)
    return (
        out,
        Geometry(
            (full_shape[0], full_shape[1]),
            box,
            flip,
            scale,
            offset,
            (shape[0], shape[1]),
            spacing[1] if spacing else None,
        ),
        disagrees,
    )


def seed_parity(
    img: np.ndarray, resize_to: int, crop: int, values: Callable[[np.ndarray], np.ndarray] = identity
) -> tuple[np.ndarray, Geometry]:
    """The study's preprocessing: shorter side to `resize_to` (aspect kept), then a centre crop.

    No orientation and no breast crop, exactly as the prototype (torchvision Resize + CenterCrop).
    """
    h, w = img.shape
    scale = resize_to / min(h, w)
    new = (max(crop, round(h * scale)), max(crop, round(w * scale)))
    small = values(resize(img, new))
    top, left = (new[0] - crop) // 2, (new[1] - crop) // 2
    out = np.ascontiguousarray(small[top : top + crop, left : left + crop])
    return out, Geometry(img.shape, (0, h, 0, w), False, scale, (-top, -left), (crop, crop))


def as_is(shape: tuple[int, ...]) -> Geometry:
    """The geometry of an image left as it is (no crop, scale or flip): `shape` onto itself."""
    h, w = shape[0], shape[1]
    return Geometry((h, w), (0, h, 0, w), False, 1.0, (0, 0), (h, w))


def to_output(y: float, x: float, g: Geometry) -> tuple[float, float]:
    """Where the original image's pixel (row y, column x) lands in the output: the way
    `map_to_original` goes, reversed, for a point marked on the original (a tumour's annotation)."""
    y0, y1, x0, x1 = g.box
    col = (x1 - x0 - 1) - (x - x0) if g.flipped else x - x0
    return (y - y0 + 0.5) * g.scale - 0.5 + g.offset[0], (col + 0.5) * g.scale - 0.5 + g.offset[1]


def map_to_original(heat: np.ndarray, g: Geometry) -> np.ndarray:
    """Paint an output-space map (e.g. Grad-CAM) back onto the original image grid (zeros elsewhere)."""
    top, left = g.offset
    y0, y1, x0, x1 = g.box
    crop_h, crop_w = y1 - y0, x1 - x0
    inner_h, inner_w = round(crop_h * g.scale), round(crop_w * g.scale)
    if top >= 0 and left >= 0:
        inner = heat[top : top + inner_h, left : left + inner_w]
    else:  # seed parity: the output is a window into the resized image
        full = np.zeros((inner_h, inner_w), np.float32)
        full[-top : -top + heat.shape[0], -left : -left + heat.shape[1]] = heat
        inner = full
    back = resize(inner, (crop_h, crop_w))
    if g.flipped:
        back = back[:, ::-1]
    out = np.zeros(g.original_shape, np.float32)
    out[y0:y1, x0:x1] = back
    return out
