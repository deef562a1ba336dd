"""EVA02 image towers (timm ``Eva`` inside open_clip's ``TimmModel``).

The trunk is rebuilt with ``dynamic_img_size=True`` so that any input size that is a multiple
of the patch works per call: timm resamples the absolute position embedding and rebuilds the
RoPE grid for the actual token grid. Dense path: the last block's attention is replaced by its
value path ``proj(norm(v_proj(norm1(x))))`` (RoPE touches only queries and keys, so it drops
out), scaled by ``gamma_1``, then the MLP branch; then ``norm`` and ``head`` on every patch token.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from timm.models.eva import Eva
from torch import nn

from densevlm.backbones.base import Backbone, ImageFeatures
from densevlm.errors import DenseVLMError

__all__ = ["EvaBackbone", "make_trunk_dynamic", "eva_value_path_block"]


def make_trunk_dynamic(clip: nn.Module) -> None:
    """Replace ``clip.visual.trunk`` by an identical timm ``Eva`` built with ``dynamic_img_size=True``.

    The weights are copied over; the old trunk is discarded.
    """
    old = clip.visual.trunk
    name = old.pretrained_cfg.get("architecture") if getattr(old, "pretrained_cfg", None) else None
    if not name:
        raise DenseVLMError("EVA trunk has no timm architecture name; cannot enable dynamic input sizes")
    new = timm.create_model(
        name,
        pretrained=False,
        num_classes=old.num_classes,
        global_pool=old.global_pool,
        dynamic_img_size=True,
    )
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    if unexpected or [k for k in missing if "rope" not in k]:
        raise DenseVLMError(f"EVA trunk rebuild mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    new.train(old.training)
    clip.visual.trunk = new


def eva_value_path_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run one timm ``EvaBlock`` with self-only attention.

    Args:
        block: a timm ``EvaBlock`` (pre-norm).
        x: ``[B, N, D]`` tokens.
    """
    attn = block.attn
    y = block.norm1(x)
    if attn.qkv is not None:
        d = attn.qkv.weight.shape[0] // 3
        v = F.linear(y, attn.qkv.weight[2 * d:], attn.v_bias)
    else:
        v = attn.v_proj(y)
    v = attn.norm(v)
    if attn.gate is not None:
        v = v * attn.gate(y).sigmoid()
    out = attn.proj(v)
    if block.gamma_1 is not None:
        out = block.gamma_1 * out
    x = x + out
    mlp = block.mlp(block.norm2(x))
    if block.gamma_2 is not None:
        mlp = block.gamma_2 * mlp
    return x + mlp


class EvaBackbone(Backbone):
    """Dense features from an open_clip ``TimmModel`` whose trunk is a timm ``Eva``."""

    def __init__(self, clip: nn.Module, spec, tokenizer) -> None:
        super().__init__(clip, spec, tokenizer)
        trunk = getattr(clip.visual, "trunk", None)
        if not isinstance(trunk, Eva):
            raise DenseVLMError(f"{spec.arch}: image tower is not a timm EVA model")
        if trunk.__class__.__name__ != "Eva" or type(trunk.blocks[-1]).__name__ != "EvaBlock":
            raise DenseVLMError(f"{spec.arch}: only pre-norm EVA blocks have a value path here")
        if trunk.global_pool != "token":
            raise DenseVLMError(f"{spec.arch}: EVA pooling '{trunk.global_pool}' is not supported (need 'token')")
        if not trunk.dynamic_img_size:
            make_trunk_dynamic(clip)

    @property
    def embed_dim(self) -> int:
        return int(self.trunk.head.out_features)

    @property
    def trunk(self) -> Eva:
        return self.clip.visual.trunk

    def forward_image(self, images: torch.Tensor, pooled: bool = True, dense: bool = True) -> ImageFeatures:
        self.check_input(images)
        trunk = self.trunk
        gh, gw = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        x = trunk.patch_embed(images)
        x, rope = trunk._pos_embed(x)
        x = trunk.norm_pre(x)
        for block in trunk.blocks[:-1]:
            x = block(x, rope=rope)
        last = trunk.blocks[-1]
        pooled_out = dense_out = None
        if pooled:
            xg = trunk.norm(last(x, rope=rope))
            pooled_out = self.clip.visual.head(trunk.forward_head(xg))
        if dense:
            xd = trunk.norm(eva_value_path_block(last, x))[:, trunk.num_prefix_tokens:]
            xd = self.clip.visual.head(trunk.head(trunk.fc_norm(xd)))
            dense_out = xd.transpose(1, 2).reshape(xd.shape[0], xd.shape[2], gh, gw)
        return ImageFeatures(pooled_out, dense_out)

    def image_groups(self) -> dict[str, list]:
        trunk = self.trunk
        embed = [trunk.patch_embed, trunk.norm_pre]
        embed += [p for p in (trunk.cls_token, trunk.pos_embed, trunk.reg_token) if p is not None]
        return {
            "embed": embed,
            "blocks": list(trunk.blocks),
            "head": [trunk.norm, trunk.fc_norm, trunk.head, self.clip.visual.head],
        }
