"""Backbones by name: classification networks cut before their classifier.

A Backbone maps a grey image (B, 1, H, W) in [0, 1] to a feature map (B, C, h, w) and names its last
feature layer (`target_layer`) so Grad-CAM can hook it. What can be built is listed in
`models.registry.BACKBONES`; how each family is cut is `FAMILIES` below. Pretrained weights come from
torchvision's weights API ("imagenet": its cache, or a download when online) or a local file; when
neither is available the error says so: never a silent random start. [timm create_model / forward_features]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from mammofuse.problems import ModelError
from mammofuse.registry import BACKBONES, BackboneSpec


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


@dataclass(frozen=True)
class Cut:
    """A classification network cut for feature extraction."""

    body: nn.Module  # image -> feature map
    post_pool: nn.Module  # applied to the pooled features (identity for most)
    channels: int  # feature channels C
    target: str  # name of the body's last feature layer, Grad-CAM's target


def _last_linear(module: Any) -> int:
    """in_features of the last nn.Linear inside a classifier."""
    return [m for m in module.modules() if isinstance(m, nn.Linear)][-1].in_features


def _resnet(model: Any) -> Cut:
    body = nn.Sequential(*[m for n, m in model.named_children() if n not in ("avgpool", "fc")])
    return Cut(body, nn.Identity(), model.fc.in_features, str(len(body) - 1))  # layer4


def _densenet(model: Any) -> Cut:  # torchvision applies a ReLU after the features
    return Cut(nn.Sequential(model.features, nn.ReLU(inplace=False)), nn.Identity(), _last_linear(model), "0")


def _convnext(model: Any) -> Cut:  # its LayerNorm2d comes after pooling
    return Cut(model.features, model.classifier[0], _last_linear(model), str(len(model.features) - 1))


def _efficientnet(model: Any) -> Cut:
    return Cut(model.features, nn.Identity(), _last_linear(model), str(len(model.features) - 1))


def _tiny(model: Any) -> Cut:
    return Cut(model.features, nn.Identity(), model.fc.in_features, "")


@dataclass(frozen=True)
class Family:
    build: Callable[[str], nn.Module]  # backbone name -> the whole classification network, random weights
    cut: Callable[[Any], Cut]


def _torchvision(name: str) -> nn.Module:
    return torchvision.models.get_model(name, weights=None)


FAMILIES: dict[str, Family] = {
    "resnet": Family(_torchvision, _resnet),
    "densenet": Family(_torchvision, _densenet),
    "convnext": Family(_torchvision, _convnext),
    "efficientnet": Family(_torchvision, _efficientnet),
    "tiny_cnn": Family(lambda _: TinyCNN(), _tiny),
}


def spec_of(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ModelError(f"unknown backbone {name!r} (known: {', '.join(BACKBONES)})")
    return BACKBONES[name]


def _classifier(spec: BackboneSpec, pretrained: str) -> nn.Module:
    model = FAMILIES[spec.family].build(spec.name)
    if pretrained == "imagenet":
        if not spec.imagenet:
            raise ModelError(
                f"{spec.name} has no ImageNet weights: use model.pretrained = 'none' or a local file"
            )
        model.load_state_dict(_imagenet_state(spec.name))
    elif pretrained != "none":
        model.load_state_dict(_file_state(Path(pretrained), spec, model))
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


def _file_state(path: Path, spec: BackboneSpec, model: nn.Module) -> dict[str, torch.Tensor]:
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
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    if not set(state) >= expected:
        missing = sorted(expected - set(state))[:5]
        raise ModelError(f"{path}: not {spec.name} weights (missing {', '.join(missing)} ...)")
    return state


def _adapt_first_conv(body: nn.Module) -> tuple[nn.Conv2d, nn.Conv2d]:
    """Replace the first 3-channel convolution by a 1-channel one whose kernel is the sum over RGB;
    return (the replaced, its replacement)."""
    for parent in body.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                conv = nn.Conv2d(
                    1,
                    child.out_channels,
                    child.kernel_size,  # type: ignore[arg-type]
                    child.stride,  # type: ignore[arg-type]
                    child.padding,  # type: ignore[arg-type]
                    child.dilation,  # type: ignore[arg-type]
                    child.groups,
                    child.bias is not None,
                )
                with torch.no_grad():
                    conv.weight.copy_(child.weight.sum(dim=1, keepdim=True))
                    if child.bias is not None and conv.bias is not None:
                        conv.bias.copy_(child.bias)
                setattr(parent, child_name, conv)
                return child, conv
    raise ModelError("no 3-channel first convolution to adapt")


class Backbone(nn.Module):
    """Grey image (B, 1, H, W) in [0, 1] -> feature map (B, C, h, w)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, name: str, pretrained: str = "none", grey: str = "replicate") -> None:
        super().__init__()
        spec = spec_of(name)
        self.name = name
        whole = _classifier(spec, pretrained)
        cut = FAMILIES[spec.family].cut(whole)
        self.body, self.post_pool = cut.body, cut.post_pool
        self.out_channels, self.target_name = cut.channels, cut.target
        self.replicate = grey == "replicate"
        self._whole = [whole]  # in a list: not a submodule, so the weights' names stay the body's
        self._adapted = None if self.replicate else _adapt_first_conv(self.body)
        mean = spec.mean if self.replicate else [sum(spec.mean) / 3]
        std = spec.std if self.replicate else [sum(spec.std) / 3]
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

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

    def classifier_state(self) -> dict[str, torch.Tensor]:
        """These weights as the whole classification network's state_dict, with the 3-channel first
        convolution it was cut from: what `model.pretrained = FILE` loads (an adapted 1-channel kernel is
        spread evenly over RGB, so adapting it again gives it back exactly)."""
        whole = self._whole[0]  # shares every module with the body, but maybe not the first convolution
        state = {k: v.detach().clone() for k, v in whole.state_dict().items()}
        if self._adapted is not None:
            old, new = self._adapted
            name = next(n for n, m in whole.named_modules() if m is old or m is new)
            state[f"{name}.weight"] = new.weight.detach().repeat(1, 3, 1, 1) / 3
            if new.bias is not None:
                state[f"{name}.bias"] = new.bias.detach().clone()
        return state


def check_weights(name: str, pretrained: str) -> None:
    """A ModelError unless `name`'s starting weights can be had now: ImageNet's in the torch hub cache (or
    downloaded into it), or a local file torch loads as this network's. For a command that trains several
    setups one after another, before the first (the weights are read again as each trains)."""
    if pretrained != "none":
        _classifier(spec_of(name), pretrained)


def create_backbone(name: str, pretrained: str = "none", grey: str = "replicate") -> Backbone:
    return Backbone(name, pretrained, grey)
