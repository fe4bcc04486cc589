"""Heat-map overlays and the per-case figure (CC and MLO side by side, preprocessed and original)."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from mammofuse.domain import VIEWS, View
from mammofuse.imaging.geometry import resize

DISPLAY_MAX_SIDE = 800


def overlay(img: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB (H, W, 3) in [0, 1]: the grey image with the map in 'jet' on top, weighted by the map."""
    grey = np.repeat(np.clip(img, 0, 1)[..., None], 3, axis=2)
    heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    weight = alpha * np.clip(cam, 0, 1)[..., None]
    return (1 - weight) * grey + weight * heat


def for_display(img: np.ndarray) -> np.ndarray:
    """Shrink a full-size mammogram for a figure (at most DISPLAY_MAX_SIDE pixels a side)."""
    scale = DISPLAY_MAX_SIDE / max(img.shape)
    if scale >= 1:
        return img
    return resize(img.astype(np.float32), (round(img.shape[0] * scale), round(img.shape[1] * scale)))


def case_figure(
    pre: dict[View, np.ndarray],
    cam_pre: dict[View, np.ndarray],
    original: dict[View, np.ndarray] | None,
    cam_original: dict[View, np.ndarray] | None,
    title: str,
) -> Figure:
    """Top: what the model saw (preprocessed); bottom: the same map on the original image geometry."""
    rows = 2 if original is not None else 1
    fig = Figure(figsize=(6.4, 4.2 * rows), layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    for j, view in enumerate(VIEWS):
        axes[0, j].imshow(overlay(pre[view], cam_pre[view]))
        axes[0, j].set_title(f"{view.value} (model input)", fontsize=9)
        if original is not None and cam_original is not None:
            axes[1, j].imshow(overlay(for_display(original[view]), for_display(cam_original[view])))
            axes[1, j].set_title(f"{view.value} (original)", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return fig
