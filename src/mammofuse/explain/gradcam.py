"""Grad-CAM (Selvaraju et al. 2017) through pytorch-grad-cam, one view at a time.

The two-view network is wrapped so that only the explained view's image varies: the other view's
pooled features and the clinical vector are computed once and held fixed. The target layer is the
backbone's last feature layer, named by the backbone for every supported architecture.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from mammofuse.domain import VIEWS, View
from mammofuse.models import TwoViewNet

POSITIVE = 1  # the logit explained: label 1, the positive class


class OneView(nn.Module):
    """image of `view` (B, 1, H, W) -> logits (B, 2), everything else fixed."""

    def __init__(self, net: TwoViewNet, view: View, other: torch.Tensor, clinical: torch.Tensor) -> None:
        super().__init__()
        self.net, self.view = net, view
        other_view = VIEWS[1 - VIEWS.index(view)]
        with torch.no_grad():
            backbone = net.backbone(other_view)
            self.other = backbone.pool(backbone(other))  # (B, C)
            self.clinical = net.clinical(clinical)  # (B, F')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        backbone = self.net.backbone(self.view)
        pooled = backbone.pool(backbone(x))  # (B, C)
        parts = [pooled, self.other] if self.view is View.CC else [self.other, pooled]
        return self.net.head(self.net.dropout(torch.cat([*parts, self.clinical], dim=1)))


def gradcam(
    net: TwoViewNet, cc: torch.Tensor, mlo: torch.Tensor, clinical: torch.Tensor
) -> dict[View, np.ndarray]:
    """Grad-CAM maps for label 1, per view: {view: (B, H, W) in [0, 1]} at the input's resolution."""
    net = net.eval()
    images = {View.CC: cc, View.MLO: mlo}
    maps = {}
    for view in VIEWS:
        other = images[VIEWS[1 - VIEWS.index(view)]]
        wrapper = OneView(net, view, other, clinical)
        with GradCAM(model=wrapper, target_layers=[net.backbone(view).target_layer]) as cam:
            targets = [ClassifierOutputTarget(POSITIVE)] * len(cc)
            maps[view] = cam(input_tensor=images[view].clone().requires_grad_(True), targets=targets)
    return maps
