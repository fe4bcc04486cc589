"""Orientation, breast crop and resize as pure array functions, with the geometry to undo them.

Every image leaves here with the chest wall on the left edge. The crop keeps the largest bright
connected component (the breast), so burned-in markers, text and film edges are ignored; the resize
keeps the aspect ratio and pads, so microcalcifications are not squashed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from mammofuse.domain import Side

DETECT_MAX_SIDE = 256  # the breast is found on a subsampled copy: fast and blind to fine text


@dataclass(frozen=True)
class Geometry:
    """How an output pixel maps back to the original image (for Grad-CAM overlays on the original)."""

    original_shape: tuple[int, int]
    box: tuple[int, int, int, int]  # (y0, y1, x0, x1) in original pixels, before any flip
    flipped: bool  # mirrored left-right after the crop
    scale: float  # output pixels per original pixel
    offset: tuple[int, int]  # (top, left) padding in the output
    output_shape: tuple[int, int]

    def to_dict(self) -> dict:
        """Plain JSON types (numpy scalars become Python numbers)."""
        return {k: np.asarray(v).tolist() for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold (Otsu 1979): the cut that maximises the between-class variance."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centers) - np.cumsum(hist * centers)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centers[int(np.argmax(between))])


def breast_mask(img: np.ndarray) -> np.ndarray:
    """Largest connected component above an Otsu threshold, after an opening that cuts thin bridges."""
    mask = img > otsu_threshold(img)
    mask = ndimage.binary_opening(mask, structure=np.ones((3, 3), bool))
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.ones_like(mask)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def chest_wall_on_left(mask: np.ndarray) -> bool:
    """The chest wall is where the breast touches the image's side edge over the most rows."""
    band = max(1, mask.shape[1] // 20)
    return bool(mask[:, :band].sum() >= mask[:, -band:].sum())


def subsample_step(shape: tuple[int, ...]) -> int:
    """Stride that brings the longer side to at most DETECT_MAX_SIDE pixels."""
    return max(1, int(np.ceil(max(shape) / DETECT_MAX_SIDE)))


def find_breast(
    small: np.ndarray, step: int, full_shape: tuple[int, int], margin: float = 0.02
) -> tuple[tuple[int, int, int, int], bool]:
    """Box (y0, y1, x0, x1) of the breast in the full image, and whether its chest wall is on the left.

    `small` is the full image subsampled by `step` (img[::step, ::step]): detection is fast and
    blind to fine burned-in text.
    """
    mask = breast_mask(small)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0] * step, (rows[-1] + 1) * step, cols[0] * step, (cols[-1] + 1) * step
    my, mx = int(margin * (y1 - y0)), int(margin * (x1 - x0))
    h, w = full_shape
    box = (max(0, y0 - my), min(h, y1 + my), max(0, x0 - mx), min(w, x1 + mx))
    return box, chest_wall_on_left(mask)


def needs_flip(side: Side | None, chest_left_by_pixels: bool) -> tuple[bool, bool]:
    """(flip, disagrees): flip so the chest wall is on the left, trusting the pixels over the tag.

    A left breast is displayed with its chest wall on the left (PS3.3 C.8.11.7.1); a right breast
    on the right. `disagrees` is True when the tag says otherwise than the pixels.
    """
    expected_left = None if side is None else side is Side.LEFT
    return (not chest_left_by_pixels), (expected_left is not None and expected_left != chest_left_by_pixels)


def resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Antialiased resize of a float32 image to (H, W)."""
    out = Image.fromarray(np.ascontiguousarray(img, np.float32), mode="F")
    return np.asarray(out.resize((shape[1], shape[0]), Image.Resampling.BILINEAR, reducing_gap=2.0))


def fit_and_pad(img: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping the aspect ratio, then pad: chest wall (left edge) kept, centred vertically."""
    h, w = img.shape
    scale = min(shape[0] / h, shape[1] / w)
    new = (max(1, min(shape[0], round(h * scale))), max(1, min(shape[1], round(w * scale))))
    out = np.zeros(shape, np.float32)
    top = (shape[0] - new[0]) // 2
    out[top : top + new[0], : new[1]] = resize(img, new)
    return out, scale, (top, 0)


def orient_and_fit(
    crop: np.ndarray,
    box: tuple[int, int, int, int],
    chest_left: bool,
    side: Side | None,
    full_shape: tuple[int, int],
    shape: tuple[int, int],
) -> tuple[np.ndarray, Geometry, bool]:
    """Flip the cropped breast so its chest wall is on the left and fit it to `shape`.

    Returns (output, geometry, laterality_disagrees).
    """
    flip, disagrees = needs_flip(side, chest_left)
    out, scale, offset = fit_and_pad(crop[:, ::-1] if flip else crop, shape)
    return out, Geometry(tuple(full_shape), box, flip, scale, offset, tuple(shape)), disagrees


def crop_orient_resize(
    img: np.ndarray, side: Side | None, shape: tuple[int, int], margin: float = 0.02
) -> tuple[np.ndarray, Geometry, bool]:
    """The 'breast' mode on a decoded image: crop to the breast, chest wall to the left, fit to `shape`."""
    step = subsample_step(img.shape)
    box, chest_left = find_breast(img[::step, ::step], step, img.shape, margin)
    y0, y1, x0, x1 = box
    return orient_and_fit(img[y0:y1, x0:x1], box, chest_left, side, img.shape, shape)


def seed_parity(img: np.ndarray, resize_to: int, crop: int) -> tuple[np.ndarray, Geometry]:
    """The study's preprocessing: shorter side to `resize_to` (aspect kept), then a centre crop.

    No orientation and no breast crop, exactly as the prototype (torchvision Resize + CenterCrop).
    """
    h, w = img.shape
    scale = resize_to / min(h, w)
    new = (max(crop, round(h * scale)), max(crop, round(w * scale)))
    small = resize(img, new)
    top, left = (new[0] - crop) // 2, (new[1] - crop) // 2
    out = small[top : top + crop, left : left + crop]
    return np.ascontiguousarray(out), Geometry(
        img.shape, (0, h, 0, w), False, scale, (-top, -left), (crop, crop)
    )


def to_original(points_yx: np.ndarray, g: Geometry) -> np.ndarray:
    """Map output pixels (N, 2) as (y, x) back to the original image: undo pad, resize, flip, crop."""
    p = np.asarray(points_yx, np.float64)
    y = (p[:, 0] - g.offset[0] + 0.5) / g.scale - 0.5
    x = (p[:, 1] - g.offset[1] + 0.5) / g.scale - 0.5
    if g.flipped:
        x = (g.box[3] - g.box[2]) - 1 - x
    return np.stack([y + g.box[0], x + g.box[2]], axis=1)


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
