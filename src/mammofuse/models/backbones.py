"""Backbones by name: torchvision classification networks cut before their classifier.

A Backbone maps a grey image (B, 1, H, W) in [0, 1] to a feature map (B, C, h, w) and names its last
feature layer (`target_layer`) so Grad-CAM can hook it. Pretrained weights come from torchvision's
weights API ("imagenet": its cache, or a download when online) or a local file; when neither is
available the error says so: never a silent random start. [timm create_model / forward_features]
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from mammofuse.problems import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TinyCNN(nn.Module):
    """A small network for CPU runs (the demo, tests): a stride-2 5x5 stem and three conv blocks, max
    pooling after all but the last (32x downsampling in all), about 100k parameters."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            kernel, stride = (5, 2) if i == 0 else (3, 1)
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], kernel, stride=stride, padding=kernel // 2, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
            ]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(chans[-1], 1000)  # a classifier, like torchvision models, so loading works alike


def _torchvision_model(name: str, pretrained: str) -> nn.Module:
    if name == "tiny_cnn":
        model: nn.Module = TinyCNN()
        if pretrained == "imagenet":
            raise ModelError(
                "tiny_cnn has no ImageNet weights: use model.pretrained = 'none' or a local file"
            )
    else:
        model = torchvision.models.get_model(name, weights=None)
        if pretrained == "imagenet":
            model.load_state_dict(_imagenet_state(name))
    if pretrained not in ("none", "imagenet"):
        model.load_state_dict(_file_state(Path(pretrained), name))
    return model


def _imagenet_state(name: str) -> dict[str, torch.Tensor]:
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # offline: URLError, socket errors, hash mismatch
        raise ModelError(
            f"ImageNet weights for {name} ({weights}) are not in the torch hub cache ({torch.hub.get_dir()}) "
            f"and cannot be downloaded ({type(exc).__name__}: {exc}). Copy the file there from a machine "
            "that is online, or set model.pretrained to a local weights file, or to 'none' to start from "
            "random weights on purpose."
        ) from None


def _file_state(path: Path, name: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"model.pretrained: weights file {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: not a weights file torch can load safely ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: expected a state_dict (a dict of tensors), found {type(state).__name__}")
    expected = (
        set(torchvision.models.get_model(name, weights=None).state_dict()) if name != "tiny_cnn" else None
    )
    if expected is not None and not set(state) >= expected - {
        k for k in expected if k.endswith("num_batches_tracked")
    }:
        missing = sorted(expected - set(state))[:5]
        raise ModelError(f"{path}: not {name} weights (missing {', '.join(missing)} ...)")
    return state


def _split(model: nn.Module, name: str) -> tuple[nn.Module, nn.Module, int, str]:
    """(body producing the feature map, module applied after pooling, feature channels, name of the
    body's last feature layer)."""
    if name.startswith("resnet"):
        body = nn.Sequential(*[m for n, m in model.named_children() if n not in ("avgpool", "fc")])
        return body, nn.Identity(), model.fc.in_features, str(len(body) - 1)  # layer4
    if name == "densenet121":  # torchvision applies a ReLU after the features
        body = nn.Sequential(model.features, nn.ReLU(inplace=False))
        return body, nn.Identity(), model.classifier.in_features, "0"
    if name == "convnext_tiny":  # its LayerNorm2d comes after pooling
        return (
            model.features,
            model.classifier[0],
            model.classifier[2].in_features,
            str(len(model.features) - 1),
        )
    if name == "efficientnet_b0":
        return model.features, nn.Identity(), model.classifier[1].in_features, str(len(model.features) - 1)
    if name == "tiny_cnn":
        return model.features, nn.Identity(), model.fc.in_features, ""
    raise ModelError(f"unknown backbone {name!r}")


def _adapt_first_conv(body: nn.Module) -> None:
    """Replace the first 3-channel convolution by a 1-channel one whose kernel is the sum over RGB."""
    for parent in body.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                conv = nn.Conv2d(
                    1,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups,
                    child.bias is not None,
                )
                with torch.no_grad():
                    conv.weight.copy_(child.weight.sum(dim=1, keepdim=True))
                    if child.bias is not None:
                        conv.bias.copy_(child.bias)
                setattr(parent, child_name, conv)
                return
    raise ModelError("no 3-channel first convolution to adapt")


class Backbone(nn.Module):
    """Grey image (B, 1, H, W) in [0, 1] -> feature map (B, C, h, w)."""

    def __init__(self, name: str, pretrained: str = "none", grey: str = "replicate") -> None:
        super().__init__()
        self.name = name
        self.body, self.post_pool, self.out_channels, self.target_name = _split(
            _torchvision_model(name, pretrained), name
        )
        self.replicate = grey == "replicate"
        if not self.replicate:
            _adapt_first_conv(self.body)
        mean = torch.tensor(IMAGENET_MEAN if self.replicate else [sum(IMAGENET_MEAN) / 3]).view(1, -1, 1, 1)
        std = torch.tensor(IMAGENET_STD if self.replicate else [sum(IMAGENET_STD) / 3]).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    @property
    def target_layer(self) -> nn.Module:
        """The last feature layer (Grad-CAM's target): layer4 of a ResNet, the last stage elsewhere."""
        return self.body.get_submodule(self.target_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, H, W)
        if self.replicate:
            x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W)
        return self.body((x - self.mean) / self.std)  # (B, C, h, w)

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, C)
        return torch.flatten(self.post_pool(nn.functional.adaptive_avg_pool2d(fmap, 1)), 1)


def create_backbone(name: str, pretrained: str = "none", grey: str = "replicate") -> Backbone:
    return Backbone(name, pretrained, grey)
