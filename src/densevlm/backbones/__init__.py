"""Model families and how each yields pooled, dense and text features."""

from densevlm.backbones.base import Backbone, BackboneSpec, ImageFeatures
from densevlm.backbones.factory import BUILTIN_MODELS, build_backbone, list_models, load_backbone
from densevlm.backbones.tiny import TINY_ARCHS, WordTokenizer

__all__ = [
    "Backbone",
    "BackboneSpec",
    "ImageFeatures",
    "BUILTIN_MODELS",
    "TINY_ARCHS",
    "WordTokenizer",
    "build_backbone",
    "list_models",
    "load_backbone",
]
