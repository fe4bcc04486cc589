"""Heat-map overlays and the per-case figure (CC and MLO side by side, preprocessed and original)."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mammofuse.domain import VIEWS, View
from mammofuse.imaging.geometry import display_shape, resize


def overlay(img: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB (H, W, 3) in [0, 1]: the grey image with the map in 'jet' on top, weighted by the map."""
    grey = np.repeat(np.clip(img, 0, 1)[..., None], 3, axis=2)
    heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    weight = alpha * np.clip(cam, 0, 1)[..., None]
    return (1 - weight) * grey + weight * heat


def for_display(img: np.ndarray) -> np.ndarray:
    """Shrink a full-size image for a figure (`display_shape`: at most DISPLAY_MAX_SIDE pixels a side)."""
    shape = display_shape(img.shape)
    return img if shape == img.shape else resize(img.astype(np.float32), shape)


SCALING = "each view's map scaled to its own maximum (Grad-CAM's min-max): compare where, not how much"


TOP_TILES = 3


def top_tiles(attention: np.ndarray, tile: int, k: int = TOP_TILES) -> list[tuple[int, int]]:
    """(row, column) of the top-left corners of the k tiles with the most attention (H, W map, each
    pixel its tile's weight), highest first."""
    corners = [(r, c) for r in range(0, attention.shape[0], tile) for c in range(0, attention.shape[1], tile)]
    weights = np.array([attention[r, c] for r, c in corners])
    return [corners[i] for i in np.argsort(-weights, kind="stable")[:k] if weights[i] > 0]


def case_figure(
    pre: dict[View, np.ndarray],
    cam_pre: dict[View, np.ndarray],
    original: dict[View, np.ndarray] | None,
    cam_original: dict[View, np.ndarray] | None,
    title: str,
    attention: dict[View, np.ndarray] | None = None,
    tile: int = 0,
    marked: tuple[dict[View, np.ndarray], dict[View, np.ndarray]] | None = None,
) -> Figure:
    """The clean model input (top, so nothing hides the calcifications), the map on it (middle) and on
    the original image (bottom), CC and MLO side by side, one colour bar, the title in large type. A
    patch model adds its tile attention, each view's top tiles outlined. `marked`: the tumours marked on
    the images (masks over the model input and over the original), outlined dashed on every map."""
    Panel = tuple[str, dict[View, np.ndarray], dict[View, np.ndarray] | None, bool]  # ..., outline top tiles
    panels: list[Panel] = [("model input", pre, None, False), ("Grad-CAM on the input", pre, cam_pre, False)]
    if attention is not None:
        scaled = {v: a / a.max() if a.max() > 0 else a for v, a in attention.items()}
        panels.append((f"tile attention, top {TOP_TILES} outlined", pre, scaled, True))
    if original is not None and cam_original is not None:
        panels.append(("Grad-CAM on the original", original, cam_original, False))
    fig, axes, bar_axes = _case_layout(len(panels), footer=marked is not None)
    for i, (what, images, cams, outline) in enumerate(panels):
        for j, view in enumerate(VIEWS):
            img = for_display(images[view])
            if cams is None:
                axes[i, j].imshow(img, cmap="gray", vmin=0, vmax=1)
            else:
                axes[i, j].imshow(overlay(img, for_display(cams[view])))
            axes[i, j].set_title(f"{view.value}: {what}", fontsize=12, y=1)  # y: not placed above ticks
            axes[i, j].axis("off")
            if marked is not None and cams is not None:  # the original's panel is the last
                mask = marked[1 if images is original else 0][view]
                if mask.any():
                    axes[i, j].contour(
                        for_display(mask.astype(np.float32)), [0.5], colors="white", linestyles="--"
                    )
            if outline and attention is not None:
                _outline(
                    axes[i, j], top_tiles(attention[view], tile), tile, img.shape[0] / images[view].shape[0]
                )
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps["jet"]), cax=bar_axes)
    bar.set_label("0-1 per view (each map scaled to its maximum)", fontsize=11)
    if marked is not None:
        line = "dashed white: the tumour as marked"
        fig.text(0.5, 0.1 / fig.get_figheight(), line, ha="center", fontsize=11)
    fig.suptitle(title, y=1 - 0.08 / fig.get_figheight(), va="top", fontsize=16, fontweight="bold")
    return fig


# The case figure's layout, in inches: a row of two images per panel, the colour bar on the right. Fixed
# rather than matplotlib's constrained layout, which measured every text at each save for a layout that
# never changes: a third of a figure's time (0.34 -> 0.23 s; predict --explain draws hundreds).
ROW, WIDTH, TITLE, GAP, BAR = 3.9, 7.2, 0.55, 0.32, 1.15


def _case_layout(rows: int, footer: bool) -> tuple[Figure, np.ndarray, Axes]:
    """The figure, its (rows, 2) image axes (each image's title above it) and the colour bar's axes;
    `footer`: room for a line below the images."""
    below = 0.3 if footer else 0.05
    height = ROW * rows + TITLE + below
    fig = Figure(figsize=(WIDTH, height))
    top, bottom = 1 - TITLE / height, below / height
    gap = GAP / (ROW - GAP)  # as a share of an image's height
    grid = fig.add_gridspec(
        rows, 2, left=0.01, right=1 - BAR / WIDTH, bottom=bottom, top=top, hspace=gap, wspace=0.03
    )
    axes = np.array([[fig.add_subplot(grid[i, j]) for j in range(2)] for i in range(rows)])
    span = top - bottom  # the bar: 0.2 inches wide, 60 % of the images' height, centred on them
    bar = fig.add_axes((1 - 0.8 / WIDTH, bottom + 0.2 * span, 0.2 / WIDTH, 0.6 * span))
    return fig, axes, bar


def _outline(ax, corners: list[tuple[int, int]], tile: int, scale: float) -> None:
    """White squares around the given tiles, numbered by rank."""
    for rank, (r, c) in enumerate(corners, start=1):
        ax.add_patch(
            Rectangle(
                (c * scale, r * scale), tile * scale, tile * scale, fill=False, edgecolor="white", lw=1.5
            )
        )
        ax.text(c * scale + 3, r * scale + 3, str(rank), color="white", fontsize=10, va="top", ha="left")
