"""The pectoral muscle of an MLO view, as array functions on an image (its chest wall on either side).

On an MLO the pectoral muscle is a bright band along the chest wall at the top of the image, edged by a
nearly straight line from the top edge to the chest wall. It is often the brightest part of the view, so
a rule that looks for the densest tissue finds it instead of a tumour. `pectoral_muscle` fits that line:
of the lines from the top edge to the chest wall, the one across which the image steps down most from a
bright inside to a darker outside, searched on a small copy of the image, coarsely and then around the
best (Kwok et al. 2004 fit a straight line too, by iterative thresholding).
"""

from __future__ import annotations

import cv2
import numpy as np

from mammofuse.imaging.geometry import chest_wall_on_left

FIT_SIDE = 128  # the line is fitted on a copy this many pixels tall: the muscle is large
TOP = (0.08, 0.75)  # where the line may meet the top edge, as a share of the width
SIDE = (0.15, 1.0)  # where it may meet the chest wall, as a share of the height
GRID = 24  # lines tried along each edge, then as many again around the best
BAND = 0.03  # the strips either side of the line compared, as a share of the copy's height
MIN_STEP = 0.06  # the least step in brightness across the line (brightness in [0, 1]) that is a muscle


def _steps(small: np.ndarray, inside: np.ndarray, tops: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """Mean brightness just inside minus just outside each line (tops x sides, in the copy's pixels)."""
    sh, _ = small.shape
    band = BAND * sh
    reach = tops.max() + band * np.hypot(1, tops.max() / sides.min())  # no line's band lies further right
    yy, xx = np.nonzero(inside & (np.arange(small.shape[1]) < reach))
    values, yy, xx = small[yy, xx], yy.astype(np.float32), xx.astype(np.float32)
    x0, y0 = tops[:, None, None].astype(np.float32), sides[None, :, None].astype(np.float32)
    distance = (xx / x0 + yy / y0 - 1) / np.sqrt(1 / x0**2 + 1 / y0**2)  # signed pixels, < 0 inside
    below = (distance > -band) & (distance < 0)
    above = (distance >= 0) & (distance < band)
    n_in, n_out = below.sum(-1), above.sum(-1)
    step = (below @ values) / np.maximum(n_in, 1) - (above @ values) / np.maximum(n_out, 1)
    return np.where((n_in >= 4) & (n_out >= 4), step, -np.inf)


def pectoral_muscle(image: np.ndarray, breast: np.ndarray) -> np.ndarray | None:
    """The muscle's mask (image-sized, within `breast`), or None where no line steps down by MIN_STEP."""
    if not chest_wall_on_left(breast):  # an image not oriented by the preprocessing (mode "seed_parity")
        muscle = pectoral_muscle(image[:, ::-1], breast[:, ::-1])
        return None if muscle is None else muscle[:, ::-1]
    h, w = image.shape
    size = (max(8, round(w * FIT_SIDE / h)), FIT_SIDE)
    small = cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 1.0)
    inside = cv2.resize(breast.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    sw, sh = size
    tops, sides = np.linspace(*TOP, GRID) * sw, np.linspace(*SIDE, GRID) * sh
    for _ in range(2):
        step = _steps(small, inside, tops, sides)
        i, j = np.unravel_index(int(np.argmax(step)), step.shape)
        best, top, side = step[i, j], tops[i], sides[j]
        dt, ds = tops[1] - tops[0], sides[1] - sides[0]
        tops, sides = np.linspace(top - dt, top + dt, GRID), np.linspace(side - ds, side + ds, GRID)
    if best < MIN_STEP:
        return None
    fy, fx = np.mgrid[0:h, 0:w].astype(np.float32)
    return (fx / (top * w / sw) + fy / (side * h / sh) < 1) & breast
