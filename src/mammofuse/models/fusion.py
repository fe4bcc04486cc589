"""The two-view + clinical network: a backbone per view, pooled, joined with the clinical vector.

A plain nn.Module, separate from the training loop; `create_model` builds it from the config. Two kinds:
"whole" (the backbone sees the whole view, its feature map averaged) and "patches" (the backbone encodes
tiles of the view at full resolution, pooled by attention: `models.tiles`).
"""

from __future__ import annotations

from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

from mammofuse.config import ModelConfig
from mammofuse.domain import VIEWS, View
from mammofuse.models.backbones import Backbone, create_backbone
from mammofuse.models.tiles import TileAttention
from mammofuse.problems import ModelError


class TwoViewNet(nn.Module):
    """(cc (B, 1, H, W), mlo (B, 1, H, W), clinical (B, F)) -> logits (B, n_outputs)."""

    clinical: nn.Module

    def __init__(self, cfg: ModelConfig, n_clinical: int, n_outputs: int = 2) -> None:
        super().__init__()
        first = create_backbone(cfg.backbone, cfg.pretrained, cfg.grey)
        second = first if cfg.shared_backbone else create_backbone(cfg.backbone, cfg.pretrained, cfg.grey)
        self.backbones = nn.ModuleDict({View.CC.value: first, View.MLO.value: second})
        self.kind = cfg.kind
        if cfg.kind == "patches":  # attention per view over the tiles its backbone encodes
            self.tiles = nn.ModuleDict({v.value: TileAttention(first.out_channels, cfg) for v in VIEWS})
        image_out = 2 * first.out_channels  # image_features
        if cfg.fusion == "late":  # images only: the clinical data joins after (models.stacking)
            n_clinical = 0
        hidden = cfg.clinical_hidden or (16 if cfg.fusion == "mlp" else 0)
        if hidden and n_clinical:
            self.clinical = nn.Sequential(nn.Linear(n_clinical, hidden), nn.ReLU())
            clinical_out = hidden
        else:
            self.clinical, clinical_out = nn.Identity(), n_clinical
        self.image_norm: nn.Module = nn.Identity()
        if cfg.fusion == "mlp":  # one scale for both branches; the image branch's dropout regularises it
            self.image_norm = nn.Sequential(nn.LayerNorm(image_out), nn.Dropout(cfg.dropout))
            if clinical_out:
                self.clinical = nn.Sequential(self.clinical, nn.LayerNorm(clinical_out))
        self.uses_clinical = clinical_out > 0
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(image_out + clinical_out, n_outputs)

    def backbone(self, view: View) -> Backbone:
        return self.backbones[view.value]  # type: ignore[return-value]

    def attention(self, view: View) -> TileAttention | None:
        """The patch model's tile attention of `view` (None for the whole-image model)."""
        return self.tiles[view.value] if self.kind == "patches" else None  # type: ignore[return-value]

    def view_features(self, view: View, x: torch.Tensor) -> torch.Tensor:
        """One view's image (B, 1, H, W) -> its pooled features (B, C)."""
        backbone, attention = self.backbone(view), self.attention(view)
        if attention is None:
            return backbone.pool(backbone(x))
        return attention(x, backbone)

    def fused(self, pooled: list[torch.Tensor], clinical: torch.Tensor) -> torch.Tensor:
        """Both views' pooled features (CC, MLO) and the clinical branch's output -> what the head sees."""
        image = self.image_norm(torch.cat(pooled, dim=1))
        parts = [image, clinical] if self.uses_clinical else [image]  # late fusion: images only
        return torch.cat(parts, dim=1)

    def fuse(self, pooled: list[torch.Tensor], clinical: torch.Tensor) -> torch.Tensor:
        """Both views' pooled features (CC, MLO) and the clinical branch's output -> logits."""
        return self.head(self.dropout(self.fused(pooled, clinical)))

    def scores(
        self, cc: torch.Tensor, mlo: torch.Tensor, clinical: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, n_outputs), the image features (B, 2C) they came from: what auxiliary heads read)."""
        pooled = [self.view_features(v, x) for v, x in zip(VIEWS, (cc, mlo))]  # 2 x (B, C)
        return self.fuse(pooled, self.clinical(clinical)), torch.cat(pooled, dim=1)

    @property
    def image_features(self) -> int:
        return 2 * self.backbone(View.CC).out_channels

    def forward(self, cc: torch.Tensor, mlo: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        return self.scores(cc, mlo, clinical)[0]  # (B, n_outputs)

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.backbones.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        tiles = self.tiles.parameters() if self.kind == "patches" else []
        return [*tiles, *self.image_norm.parameters(), *self.clinical.parameters(), *self.head.parameters()]


def create_model(cfg: ModelConfig, n_clinical: int, n_outputs: int = 2) -> TwoViewNet:
    """The one factory: the network the config describes."""
    return TwoViewNet(cfg, n_clinical, n_outputs)


def headline(cfg: ModelConfig) -> str:
    """The network in a few words, for the line that starts training: "resnet18 (imagenet)"."""
    net = f"{cfg.backbone} on {cfg.tile}-pixel tiles" if cfg.kind == "patches" else cfg.backbone
    return f"{net} ({cfg.pretrained})"


def describe(cfg: ModelConfig) -> str:
    """The network the config builds, in a sentence or two (model card, report)."""
    views = "one backbone shared by both views" if cfg.shared_backbone else "one backbone per view"
    if cfg.kind == "patches":
        images = (
            f"{cfg.backbone} on {cfg.tile}-pixel tiles of each view at full working resolution ({views}); "
            "the tiles with breast are encoded and pooled by gated attention, tiles of air are skipped"
        )
    else:
        images = f"{cfg.backbone} on each whole view ({views}), its feature map averaged"
    clinical = "the clinical features" + (" (through a small MLP)" if cfg.clinical_hidden else "")
    fusion = {
        "concat": f"the two views' features and {clinical} side by side into a linear head",
        "mlp": "the two views' features and the clinical features (through a small MLP), each normalised to "
        "one scale, into a linear head",
        "late": "the two views' features into a linear head that sees no clinical data; a logistic "
        "regression fitted on the validation breasts joins its logit with the clinical features",
    }[cfg.fusion]
    text = f"{images}; {fusion}. Initial weights: {cfg.pretrained}."
    if cfg.auxiliary:
        targets = ", ".join(f"{c} (weight {w:g})" for c, w in cfg.auxiliary.items())
        text += f" While training, extra heads also predicted {targets} from the images (not inputs)."
    return text


def load_network(
    cfg: ModelConfig, n_clinical: int, weights: dict[str, torch.Tensor] | Path, source: str
) -> TwoViewNet:
    """A trained network, built as configured (no pretrained download) and filled with `weights`: a
    state_dict, or a safetensors file (no pickle at all). In eval mode. Weights that do not fit the
    configured network are a ModelError naming `source`."""
    net = create_model(cfg.model_copy(update={"pretrained": "none"}), n_clinical)
    try:
        if isinstance(weights, Path):
            safetensors.torch.load_model(net, weights)  # knows a shared backbone's tied weights
        else:
            net.load_state_dict(weights)
    except (RuntimeError, safetensors.SafetensorError) as exc:
        raise ModelError(
            f"{source}: the weights do not fit the configured {cfg.backbone} network ({exc})"
        ) from None
    return net.eval()


def positive_probability(logits: torch.Tensor) -> torch.Tensor:
    """(B, 2) logits -> (B,) probability of label 1: the one place logits become probabilities."""
    return torch.softmax(logits.float(), dim=1)[:, 1]
