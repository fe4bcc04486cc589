"""Registries: the backbones mammofuse can build, one entry each, plain data, importable without torch.

An entry names the torchvision constructor, the family (which says how the network is cut into a
feature body and a head, and which layer Grad-CAM hooks: see `models.backbones.FAMILIES`), the input
normalisation its weights expect, and whether torchvision has ImageNet weights for it. Config
validation reads this table, so adding a torchvision backbone of a known family is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # the config's model.backbone and torchvision's model name
    family: str  # a key of models.backbones.FAMILIES
    imagenet: bool = True  # torchvision has ImageNet weights for it
    mean: tuple[float, float, float] = IMAGENET_MEAN  # RGB normalisation of its input
    std: tuple[float, float, float] = IMAGENET_STD


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("resnet18", "resnet"),
        BackboneSpec("resnet34", "resnet"),
        BackboneSpec("resnet50", "resnet"),
        BackboneSpec("efficientnet_b0", "efficientnet"),
        BackboneSpec("efficientnet_b3", "efficientnet"),
        BackboneSpec("densenet121", "densenet"),
        BackboneSpec("convnext_tiny", "convnext"),
        BackboneSpec("convnext_small", "convnext"),
        BackboneSpec("tiny_cnn", "tiny_cnn", imagenet=False),  # a small network for CPU runs (demo, tests)
    )
}
