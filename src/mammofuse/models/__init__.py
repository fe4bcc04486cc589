"""The two-view + clinical network and the backbone factory."""

from mammofuse.models.backbones import Backbone, ModelError, create_backbone
from mammofuse.models.fusion import TwoViewNet, create_model

__all__ = ["Backbone", "ModelError", "TwoViewNet", "create_backbone", "create_model"]
