"""The two-view + clinical network: a backbone per view, pooled, joined with the clinical vector.

A plain nn.Module, separate from the training loop; `create_model` builds it from the config.
"""

from __future__ import annotations

import torch
from torch import nn

from mammofuse.config import ModelConfig
from mammofuse.domain import VIEWS, View
from mammofuse.models.backbones import Backbone, create_backbone


class TwoViewNet(nn.Module):
    """(cc (B, 1, H, W), mlo (B, 1, H, W), clinical (B, F)) -> logits (B, 2)."""

    def __init__(self, cfg: ModelConfig, n_clinical: int) -> None:
        super().__init__()
        first = create_backbone(cfg.backbone, cfg.pretrained, cfg.grey)
        second = first if cfg.shared_backbone else create_backbone(cfg.backbone, cfg.pretrained, cfg.grey)
        self.backbones = nn.ModuleDict({View.CC.value: first, View.MLO.value: second})
        if cfg.clinical_hidden and n_clinical:
            self.clinical = nn.Sequential(nn.Linear(n_clinical, cfg.clinical_hidden), nn.ReLU())
            clinical_out = cfg.clinical_hidden
        else:
            self.clinical, clinical_out = nn.Identity(), n_clinical
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * first.out_channels + clinical_out, 2)

    def backbone(self, view: View) -> Backbone:
        return self.backbones[view.value]  # type: ignore[return-value]

    def features(self, cc: torch.Tensor, mlo: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        pooled = [self.backbone(v).pool(self.backbone(v)(x)) for v, x in zip(VIEWS, (cc, mlo))]  # 2 x (B, C)
        return torch.cat([*pooled, self.clinical(clinical)], dim=1)  # (B, 2C + F')

    def forward(self, cc: torch.Tensor, mlo: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(cc, mlo, clinical)))  # (B, 2)

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.backbones.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.clinical.parameters(), *self.head.parameters()]


def create_model(cfg: ModelConfig, n_clinical: int) -> TwoViewNet:
    """The one factory: the network the config describes."""
    return TwoViewNet(cfg, n_clinical)
