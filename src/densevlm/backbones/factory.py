"""Build backbones by name, from checkpoint files, or from a spec stored in a checkpoint.

Names resolve in this order:

1. built-in pretrained models shipped with the package (``tiny-student``, ``tiny-teacher-l`` (the
   default teacher), ``tiny-teacher``, ``tiny-teacher-parts``);
2. an existing file path (a densevlm checkpoint, which carries its architecture);
3. a tiny architecture name (``tiny-vit``, ``tiny-vit-s``, ``tiny-vit-m``, ``tiny-vit-xs``, ``tiny-vit-l``);
4. an open_clip model name (``ViT-B-16``, ``ViT-L-14-336``, ``EVA02-B-16`` ...).

``pretrained`` is a tag known to open_clip, a weights file, or None (random init, logged at
WARNING: never silently random).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import torch

from densevlm.backbones.base import OPENAI_MEAN, OPENAI_STD, Backbone, BackboneSpec
from densevlm.backbones.eva import EvaBackbone
from densevlm.backbones.tiny import TINY_ARCHS, build_tiny_clip, tiny_config
from densevlm.backbones.vit import ViTBackbone
from densevlm.backbones.weights import (
    CHECKPOINT_SUFFIXES,
    cached_tag_file,
    convert_eva_fork_state_dict,
    is_eva_fork_state_dict,
    read_checkpoint,
)
from densevlm.errors import DenseVLMError, nearest_names

__all__ = ["BUILTIN_MODELS", "load_backbone", "build_backbone", "list_models", "builtin_path"]

log = logging.getLogger(__name__)

# Pretrained models shipped inside the package (see models/README.md for how they were made).
BUILTIN_MODELS: dict[str, str] = {
    "tiny-student": "tiny-student.safetensors",
    "tiny-teacher": "tiny-teacher.safetensors",
    "tiny-teacher-parts": "tiny-teacher-parts.safetensors",
    "tiny-teacher-l": "tiny-teacher-l.safetensors",
}


def builtin_path(name: str) -> Path:
    """Path of a shipped built-in weights file."""
    return Path(str(resources.files("densevlm") / "resources" / "weights" / BUILTIN_MODELS[name]))


def list_models() -> list[str]:
    """Every name :func:`load_backbone` accepts (built-ins, tiny architectures, open_clip ViTs and EVA02s)."""
    import open_clip

    names = [n for n in open_clip.list_models() if n.startswith(("ViT-", "EVA02-"))]
    return [*BUILTIN_MODELS, *TINY_ARCHS, *names]


def _family_of(clip: torch.nn.Module) -> str:
    from open_clip.transformer import VisionTransformer

    if isinstance(clip.visual, VisionTransformer):
        return "vit"
    if type(getattr(clip.visual, "trunk", None)).__name__ == "Eva":
        return "eva"
    raise DenseVLMError(f"image tower {type(clip.visual).__name__} has no dense path; use a ViT or EVA02 model")


def _wrap(clip: torch.nn.Module, spec: BackboneSpec, tokenizer) -> Backbone:
    cls = {"vit": ViTBackbone, "eva": EvaBackbone}[spec.family]
    return cls(clip, spec, tokenizer)


def build_backbone(spec: BackboneSpec) -> Backbone:
    """A randomly initialised backbone for ``spec`` (weights are loaded by the caller)."""
    if spec.config is not None:
        clip, tokenizer = build_tiny_clip(spec.config)
        return _wrap(clip, spec, tokenizer)
    return _build_open_clip(spec.arch, None, spec)


def _build_open_clip(name: str, tag: Optional[str], spec: Optional[BackboneSpec] = None) -> Backbone:
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    kwargs: dict[str, Any] = {}
    if spec is not None and spec.extra.get("quick_gelu"):
        kwargs["force_quick_gelu"] = True
    if tag and get_pretrained_cfg(name, tag).get("quick_gelu") and "quickgelu" not in name.lower():
        log.info("%s/%s was trained with QuickGELU: building it with QuickGELU", name, tag)
        kwargs["force_quick_gelu"] = True
    try:
        clip = open_clip.create_model(name, pretrained=tag, **kwargs)
    except RuntimeError as e:
        raise DenseVLMError(f"open_clip could not build {name} (pretrained={tag!r}): {str(e).splitlines()[0]}") from None
    clip.eval()
    tokenizer = open_clip.get_tokenizer(name)
    if spec is None:
        pre = getattr(clip.visual, "preprocess_cfg", {}) or {}
        size = clip.visual.image_size if hasattr(clip.visual, "image_size") else 224
        size = size[0] if isinstance(size, (tuple, list)) else size
        family = _family_of(clip)
        patch = clip.visual.patch_size[0] if family == "vit" else clip.visual.trunk.patch_embed.patch_size[0]
        spec = BackboneSpec(
            family=family,
            arch=name,
            image_size=int(size),
            patch_size=int(patch),
            mean=tuple(pre.get("mean", OPENAI_MEAN)),
            std=tuple(pre.get("std", OPENAI_STD)),
            templates="vild",
            source=tag or "random",
        )
        if kwargs.get("force_quick_gelu"):
            spec.extra["quick_gelu"] = True
    return _wrap(clip, spec, tokenizer)


def _load_state(backbone: Backbone, state_dict: dict[str, torch.Tensor], source: str) -> None:
    if is_eva_fork_state_dict(state_dict) and backbone.spec.family == "eva":
        state_dict = convert_eva_fork_state_dict(state_dict, backbone.clip.visual.trunk)
    if any(k.startswith("clip.") for k in state_dict):
        state_dict = {k[len("clip."):] if k.startswith("clip.") else k: v for k, v in state_dict.items()}
    own = backbone.clip.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        raise DenseVLMError(
            f"{source}: weights do not fit {backbone.spec.arch}: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:2]}); "
            "check the model name matches the file"
        )
    for k, v in state_dict.items():
        if own[k].shape != v.shape:
            raise DenseVLMError(
                f"{source}: weights do not fit {backbone.spec.arch}: {k} has shape {tuple(v.shape)}, "
                f"expected {tuple(own[k].shape)}; check the model name matches the file"
            )
    backbone.clip.load_state_dict(state_dict, strict=True)


def _from_checkpoint(path: Path, display: Optional[str] = None) -> Backbone:
    state_dict, header = read_checkpoint(path)
    if header is None or "spec" not in header:
        raise DenseVLMError(
            f"{path}: a plain state dict does not say which architecture it belongs to; "
            "load it with the model name, e.g. load_model('ViT-B-16', pretrained='" + str(path) + "')"
        )
    spec = BackboneSpec.from_dict(header["spec"])
    if spec.config is None:
        backbone = _build_open_clip(spec.arch, None, spec)
    else:
        backbone = build_backbone(spec)
    _load_state(backbone, state_dict, str(path))
    spec.source = display or str(path)
    backbone.eval()
    return backbone


def load_backbone(name_or_path: str | Path, pretrained: Optional[str | Path] = None) -> Backbone:
    """Resolve a model name or checkpoint path to a :class:`Backbone` in eval mode, on the CPU."""
    name = str(name_or_path)
    if name in BUILTIN_MODELS:
        path = builtin_path(name)
        if not path.is_file():
            raise DenseVLMError(f"built-in model {name} is missing from this installation ({path}); reinstall densevlm")
        return _from_checkpoint(path, display=name)
    looks_like_file = name.endswith(CHECKPOINT_SUFFIXES) or "/" in name or "\\" in name
    if Path(name).is_file() or looks_like_file:
        if pretrained is not None:
            raise DenseVLMError(f"{name}: a checkpoint file carries its own weights; drop --pretrained")
        return _from_checkpoint(Path(name))
    if name in TINY_ARCHS:
        config = tiny_config(name)
        spec = BackboneSpec(
            family="vit",
            arch=name,
            image_size=config["vision"]["image_size"],
            patch_size=config["vision"]["patch_size"],
            templates="tiny",
            config=config,
        )
        backbone = build_backbone(spec)
        _apply_pretrained(backbone, pretrained)
        return backbone
    import open_clip

    if name not in open_clip.list_models():
        hint = nearest_names(name, list_models())
        raise DenseVLMError(
            f"unknown model '{name}'" + (f"; did you mean {hint}?" if hint else "") + " (see `densevlm models` for all names)"
        )
    tag = None
    if pretrained is not None and not _is_file_like(pretrained):
        tag = str(pretrained)
        cached_tag_file(name, tag)
    backbone = _build_open_clip(name, tag)
    if tag is None:
        _apply_pretrained(backbone, pretrained)
    backbone.eval()
    return backbone


def _is_file_like(pretrained: str | Path) -> bool:
    text = str(pretrained)
    return Path(text).exists() or text.endswith(CHECKPOINT_SUFFIXES) or "/" in text or "\\" in text


def _apply_pretrained(backbone: Backbone, pretrained: Optional[str | Path]) -> None:
    if pretrained is None:
        log.warning("%s: no pretrained weights given, using a random initialisation", backbone.spec.arch)
        return
    if not _is_file_like(pretrained):
        raise DenseVLMError(f"{backbone.spec.arch} has no named tags; pass a weights file as pretrained")
    state_dict, _ = read_checkpoint(Path(pretrained))
    _load_state(backbone, state_dict, str(pretrained))
    backbone.spec.source = str(pretrained)
