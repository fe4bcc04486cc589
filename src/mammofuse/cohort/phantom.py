"""Synthetic mammograms as pure array functions (no files): a stand-in for the private cohort.

Geometry is drawn with the chest wall at column 0 (a left breast as displayed, PS3.3 C.8.11.7
conventions); the caller mirrors right breasts. Brightness is MONOCHROME2-like in [0, 1]: air near 0,
fat ~0.35, fibroglandular tissue and muscle brighter, calcifications near 1.
A lesion has one 3D position (depth from the chest wall, medio-lateral and supero-inferior offsets),
so it appears at the same depth in both views, as a real lesion does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from mammofuse.domain import View

DENSITY_GLAND_FRACTION = {"a": 0.12, "b": 0.3, "c": 0.5, "d": 0.72}


@dataclass(frozen=True)
class Lesion:
    """A tumour in breast coordinates: depth u in (0, 1) from the chest wall, offsets in (-1, 1)."""

    depth: float
    offset_ml: float  # medio-lateral: vertical axis of the CC view
    offset_si: float  # supero-inferior: vertical axis of the MLO view
    mass_radius: float  # fraction of image height; 0 for no mass
    n_calcs: int
    calc_spread: float  # fraction of image height
    calc_offsets: np.ndarray  # (n_calcs, 3) unit-ball offsets (depth, ml, si)


@dataclass(frozen=True)
class BreastAnatomy:
    """What stays the same between the two views of one breast."""

    depth: float  # breast depth as a fraction of image width
    half_height: float  # fraction of image height
    density: str  # BI-RADS a-d
    lesion: Lesion
    seed: int


@dataclass(frozen=True)
class Placement:
    """Where the planted lesion landed in one rendered view (pixel coordinates, chest wall at x = 0), and the
    pectoral muscle an MLO shows: the triangle x / width + y / height < 1."""

    x: float
    y: float
    radius: float  # radius enclosing the mass and the calcification cluster
    muscle: tuple[float, float] | None = None  # (width, height) in pixels; None on a CC


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int, sigma: float) -> np.ndarray:
    """Low-frequency noise in [0, 1]-ish, made small and upsampled (fast)."""
    h, w = shape
    small = rng.standard_normal((max(4, h // cells), max(4, w // cells))).astype(np.float32)
    small = ndimage.gaussian_filter(small, sigma)
    small /= small.std() + 1e-6
    return ndimage.zoom(small, (h / small.shape[0], w / small.shape[1]), order=1)[:h, :w]


def render_view(
    anatomy: BreastAnatomy, view: View, shape: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, Placement]:
    """Draw one view; return brightness (H, W) float32 in [0, 1] and where the lesion is."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = anatomy.depth * w * (0.97 if view is View.MLO else 1.0)
    if view is View.CC:
        cy, b = 0.5 * h + rng.uniform(-0.03, 0.03) * h, anatomy.half_height * h
    else:
        cy, b = 0.56 * h, min(0.5, anatomy.half_height * 1.15) * h
    # Elliptical radius with a wavy outline, so no two breasts share a silhouette.
    angle = np.arctan2(yy - cy, xx)
    wobble = (
        1 + 0.03 * np.sin(3 * angle + rng.uniform(0, 6.3)) + 0.02 * np.sin(7 * angle + rng.uniform(0, 6.3))
    )
    r = np.sqrt((xx / a) ** 2 + ((yy - cy) / b) ** 2) / wobble
    breast = r < 1.0

    # Fibroglandular tissue: thresholded low-frequency noise, denser behind the nipple.
    field = _smooth_field(rng, shape, 8, 1.6) + 0.6 * _smooth_field(rng, shape, 3, 1.0)
    prior = np.exp(-(((xx / a) - 0.45) ** 2) / 0.12 - ((yy - cy) / b) ** 2 / 0.5)
    gland_fraction = DENSITY_GLAND_FRACTION[anatomy.density]
    score = field + 2.2 * prior
    thr = np.quantile(score[breast], 1 - gland_fraction) if breast.any() else 0.0
    gland = 1 / (1 + np.exp(-(score - thr) * 3.0))
    img = 0.33 + 0.3 * gland + 0.03 * _smooth_field(rng, shape, 2, 0.7)

    muscle = None
    if view is View.MLO:  # pectoral muscle: a bright triangle at the chest wall, top of the image
        pw, ph = rng.uniform(0.22, 0.36) * w, rng.uniform(0.45, 0.75) * h
        muscle = (float(pw), float(ph))
        in_muscle = (xx / pw + yy / ph) < 1.0
        img = np.where(in_muscle, 0.72 + 0.04 * _smooth_field(rng, shape, 6, 1.0), img)
        breast |= in_muscle

    # Thickness falls off toward the skin; the skin itself is a thin brighter line.
    taper = np.clip(np.sqrt(np.clip(1 - r, 0, 1)) * 3.2, 0, 1)
    img = img * (0.35 + 0.65 * taper)
    skin = (r > 0.985) & (r < 1.0)
    img = np.where(skin, img + 0.12, img)

    # The lesion: same depth in both views, the view decides which offset is vertical.
    les = anatomy.lesion
    vertical = les.offset_ml if view is View.CC else les.offset_si
    lx = les.depth * a
    ly = cy + vertical * b * np.sqrt(max(0.0, 1 - les.depth**2)) * 0.8
    extent = 0.0
    if les.mass_radius > 0:
        mr = les.mass_radius * h
        spic = 1 + 0.25 * np.sin(9 * np.arctan2(yy - ly, xx - lx) + rng.uniform(0, 6.3))
        d2 = ((xx - lx) ** 2 + (yy - ly) ** 2) / (mr * spic) ** 2
        img = img + 0.22 * np.exp(-d2 * 1.5)
        extent = mr
    spread = les.calc_spread * h
    offsets = les.calc_offsets[:, [0, 1 if view is View.CC else 2]] * spread
    dot_r = max(0.6, 0.0025 * h)
    calcs = np.zeros(shape, np.float32)
    for dx, dy in offsets:
        cx, cyy = lx + dx, ly + dy
        x0, x1 = int(max(0, cx - 3 * dot_r)), int(min(w, cx + 3 * dot_r + 2))
        y0, y1 = int(max(0, cyy - 3 * dot_r)), int(min(h, cyy + 3 * dot_r + 2))
        if x0 < x1 and y0 < y1:
            patch = np.exp(-((xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cyy) ** 2) / (2 * dot_r**2))
            calcs[y0:y1, x0:x1] = np.maximum(calcs[y0:y1, x0:x1], patch * rng.uniform(0.75, 1.0))
    if len(offsets):
        extent = max(extent, float(np.max(np.hypot(offsets[:, 0], offsets[:, 1]))) + dot_r)
    img = img + 0.45 * calcs
    img = np.where(breast, img, 0.0)

    img = img + rng.normal(0.0, 0.008, shape).astype(np.float32) + 0.02
    return np.clip(img, 0.0, 1.0).astype(np.float32), Placement(float(lx), float(ly), float(extent), muscle)


def burn_in_marker(img: np.ndarray, text: str, chest_wall_left: bool, rng: np.random.Generator) -> np.ndarray:
    """Write a bright side/view marker ("L CC") in the upper corner away from the chest wall."""
    h, w = img.shape
    font = ImageFont.load_default()
    canvas = Image.new("L", (8 * len(text) + 4, 14), 0)
    ImageDraw.Draw(canvas).text((2, 1), text, fill=255, font=font)
    scale = max(1.0, 0.045 * h / canvas.size[1])
    size = (int(canvas.size[0] * scale), int(canvas.size[1] * scale))
    mark = np.asarray(canvas.resize(size, Image.Resampling.NEAREST), np.float32) / 255
    mh, mw = mark.shape
    if mw >= 0.2 * w or mh >= 0.2 * h:
        return img
    y0 = int(rng.uniform(0.02, 0.06) * h)
    x0 = int(w * rng.uniform(0.82, 0.85)) if chest_wall_left else int(w * rng.uniform(0.02, 0.05))
    x0 = min(x0, w - mw - int(0.02 * w) - 1)
    out = img.copy()
    out[y0 : y0 + mh, x0 : x0 + mw] = np.maximum(out[y0 : y0 + mh, x0 : x0 + mw], mark * 0.97)
    return out


def add_film_edge(img: np.ndarray, chest_wall_left: bool) -> np.ndarray:
    """A bright strip along the border opposite the chest wall, as a collimator or film edge leaves."""
    out = img.copy()
    width = max(2, img.shape[1] // 100)
    if chest_wall_left:
        out[:, -width:] = 0.9
    else:
        out[:, :width] = 0.9
    return out
