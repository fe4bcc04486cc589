"""The two-view + clinical network and the backbone factory."""

from mammofuse.models.backbones import Backbone, create_backbone
from mammofuse.models.device import inference_device
from mammofuse.models.fusion import TwoViewNet, create_model, describe, load_network, positive_probability
from mammofuse.problems import ModelError

__all__ = [
    "Backbone",
    "ModelError",
    "TwoViewNet",
    "create_backbone",
    "create_model",
    "describe",
    "inference_device",
    "load_network",
    "positive_probability",
]
