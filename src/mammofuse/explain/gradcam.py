"""Grad-CAM (Selvaraju et al. 2017) through pytorch-grad-cam, one view at a time.

The two-view network is wrapped so that only the explained view's image varies: the other view's
pooled features and the clinical vector are computed once and held fixed. The target layer is the
backbone's last feature layer, named by the backbone for every supported architecture. For the patch
model, the tiles' feature maps are put back where the tiles were (pytorch-grad-cam's
`reshape_transform`) and each tile weighs its channels by its own gradient (`TileGradCAM`), so one map
over the whole view shows each tile's part in the score; the attention over the tiles is a second
explanation (`attention_maps`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from mammofuse.domain import VIEWS, View
from mammofuse.models import TwoViewNet
from mammofuse.models.device import on_inference_device
from mammofuse.models.tiles import TileAttention, padded

POSITIVE = 1  # the logit explained: label 1, the positive class


class OneView(nn.Module):
    """image of `view` (B, 1, H, W) -> logits (B, 2), everything else fixed."""

    def __init__(self, net: TwoViewNet, view: View, other: torch.Tensor, clinical: torch.Tensor) -> None:
        super().__init__()
        self.net, self.view = net, view
        with torch.no_grad():
            self.other = net.view_features(VIEWS[1 - VIEWS.index(view)], other)  # (B, C)
            self.clinical = net.clinical(clinical)  # (B, F')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.net.view_features(self.view, x)  # (B, C)
        parts = [pooled, self.other] if self.view is View.CC else [self.other, pooled]
        return self.net.fuse(parts, self.clinical)


def gradcam(
    net: TwoViewNet, cc: torch.Tensor, mlo: torch.Tensor, clinical: torch.Tensor
) -> dict[View, np.ndarray]:
    """Grad-CAM maps for label 1, per view: {view: (B, H, W) in [0, 1]} at the input's resolution,
    computed on `inference_device` (the GPU where there is one)."""
    net, (cc, mlo, clinical) = on_inference_device(net, cc, mlo, clinical)
    images = {View.CC: cc, View.MLO: mlo}
    height, width = cc.shape[-2:]
    maps = {}
    for view in VIEWS:
        wrapper = OneView(net, view, images[VIEWS[1 - VIEWS.index(view)]], clinical)
        x, layers, attention = images[view], [net.backbone(view).target_layer], net.attention(view)
        if attention is not None:  # padded here, so Grad-CAM's map covers whole tiles
            x = padded(x, attention.tile)
        with (
            all_tiles_at_once(attention),
            GradCAM(wrapper, layers) if attention is None else TileGradCAM(wrapper, layers, attention) as cam,
        ):
            targets = [ClassifierOutputTarget(POSITIVE)] * len(cc)
            maps[view] = cam(input_tensor=x.clone().requires_grad_(True), targets=targets)[:, :height, :width]
    return maps


class TileGradCAM(GradCAM):
    """Grad-CAM for the patch model: every tile weighs its feature channels by the mean gradient over
    that tile, not over the view. The view's score pools the tiles by attention, so a tile's gradient
    carries its attention weight; averaged over the whole view (plain Grad-CAM on the assembled map)
    that weighting is lost, and tiles the attention ignores (slivers of breast edge, mostly black) light
    up for their activations alone. Per tile, a map is what Grad-CAM of each tile as its own image gives."""

    def __init__(self, model: nn.Module, target_layers: list[nn.Module], attention: TileAttention) -> None:
        super().__init__(model, target_layers, reshape_transform=attention.assemble)
        self.attention = attention

    def get_cam_image(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[nn.Module],
        activations: np.ndarray,
        grads: np.ndarray,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        assert self.attention.last is not None, "the tiles' layout comes from the forward pass"
        rows, cols = self.attention.last.grid
        b, c, height, width = activations.shape
        tiled = (b, c, rows, height // rows, cols, width // cols)
        weights = grads.reshape(tiled).mean(axis=(3, 5), keepdims=True)  # (B, C, rows, 1, cols, 1)
        return (weights * activations.reshape(tiled)).sum(axis=1).reshape(b, height, width)


@contextmanager
def all_tiles_at_once(attention: TileAttention | None) -> Iterator[None]:
    """Grad-CAM hooks one forward pass of the target layer: the tiles go through in one batch."""
    if attention is None:
        yield
        return
    saved, attention.tile_batch = attention.tile_batch, 0
    try:
        yield
    finally:
        attention.tile_batch = saved


def attention_maps(
    net: TwoViewNet, cc: torch.Tensor, mlo: torch.Tensor, clinical: torch.Tensor
) -> dict[View, np.ndarray] | None:
    """The patch model's tile attention per view: {view: (B, H, W)}, each pixel its tile's weight (the
    weights of a view sum to 1 over its tiles); None for the whole-image model."""
    attention = {v: net.attention(v) for v in VIEWS}
    if any(a is None for a in attention.values()):
        return None
    net, inputs = on_inference_device(net, cc, mlo, clinical)
    with torch.no_grad():
        net(*inputs)
    return {
        v: a.attention_map((cc.shape[-2], cc.shape[-1])).cpu().numpy()
        for v, a in attention.items()
        if a is not None
    }
