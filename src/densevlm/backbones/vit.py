"""open_clip ``VisionTransformer`` towers (OpenAI / OpenCLIP ViTs and the tiny models).

Dense path (DESIGN.md section 2): blocks 1..L-1 run normally; in block L the attention is
replaced by its value path, ``x + ls_1(out_proj(v(ln_1(x))))``, followed by the block's MLP
branch; then ``ln_post`` and ``proj`` are applied to every patch token. Learned absolute
position embeddings are resized bicubically at run time for any grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import CustomResidualAttentionBlock, ResidualAttentionBlock, VisionTransformer
from torch import nn

from densevlm.backbones.base import Backbone, ImageFeatures
from densevlm.errors import DenseVLMError

__all__ = ["ViTBackbone", "resize_pos_embed", "value_path_block"]


def resize_pos_embed(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Resize a learned position table to another token grid.

    Args:
        pos: ``[1 + h0*w0, D]`` class-token row first, then patch rows in raster order.
        old_grid: ``(h0, w0)`` grid the table was learned for.
        new_grid: ``(h, w)`` grid wanted.

    Returns:
        ``[1 + h*w, D]``; the patch rows are bicubically interpolated (``align_corners=False``,
        no antialiasing), the class row is kept. Returned unchanged when the grids match.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos
    cls_row, grid = pos[:1], pos[1:]
    d = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False).to(pos.dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], d)
    return torch.cat([cls_row, grid], dim=0)


def value_path_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run one open_clip residual block with self-only attention (the value path).

    Args:
        block: a ``ResidualAttentionBlock`` (``nn.MultiheadAttention``) or a
            ``CustomResidualAttentionBlock`` (open_clip's own ``Attention``).
        x: ``[B, N, D]`` tokens, batch first.

    Returns:
        ``[B, N, D]``: ``x + ls_1(attn_out)`` then ``+ ls_2(mlp(ln_2(.)))``, where ``attn_out``
        is what the block's attention returns when every token attends only to itself.
    """
    y = block.ln_1(x)
    if isinstance(block, ResidualAttentionBlock):
        attn = block.attn
        d = attn.embed_dim
        w_v = attn.in_proj_weight[2 * d:]
        b_v = attn.in_proj_bias[2 * d:] if attn.in_proj_bias is not None else None
        out = attn.out_proj(F.linear(y, w_v, b_v))
    elif isinstance(block, CustomResidualAttentionBlock):
        attn = block.attn
        d = attn.in_proj_weight.shape[1]
        w_v = attn.in_proj_weight[2 * d:]
        b_v = attn.in_proj_bias[2 * d:] if attn.in_proj_bias is not None else None
        v = F.linear(y, w_v, b_v)
        if attn.head_scale is not None:
            b, n, _ = v.shape
            v = v.reshape(b, n, attn.num_heads, -1).transpose(1, 2) * attn.head_scale
            v = v.transpose(1, 2).reshape(b, n, d)
        out = attn.out_proj(attn.ln_inner(v))
        out = block.ln_attn(out)
    else:
        raise DenseVLMError(f"no value path for block type {type(block).__name__}")
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


class ViTBackbone(Backbone):
    """Dense features from an open_clip ``VisionTransformer`` image tower."""

    def __init__(self, clip: nn.Module, spec, tokenizer) -> None:
        super().__init__(clip, spec, tokenizer)
        visual = clip.visual
        if not isinstance(visual, VisionTransformer):
            raise DenseVLMError(f"{spec.arch}: image tower is {type(visual).__name__}, not a ViT")
        if visual.attn_pool is not None:
            raise DenseVLMError(f"{spec.arch}: attentional pooling (CoCa-style) has no dense value path")

    @property
    def embed_dim(self) -> int:
        return int(self.clip.visual.output_dim)

    def _blocks(self) -> nn.ModuleList:
        return self.clip.visual.transformer.resblocks

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        visual = self.clip.visual
        x = visual.conv1(images)
        b, d, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls_token = visual.class_embedding.to(x.dtype).expand(b, 1, d)
        x = torch.cat([cls_token, x], dim=1)
        pos = resize_pos_embed(visual.positional_embedding, visual.grid_size, (gh, gw))
        x = x + pos.to(x.dtype)
        return visual.ln_pre(x)

    def forward_image(self, images: torch.Tensor, pooled: bool = True, dense: bool = True) -> ImageFeatures:
        self.check_input(images)
        visual = self.clip.visual
        gh, gw = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        x = self._embed(images)
        batch_first = visual.transformer.batch_first
        blocks = self._blocks()
        if not batch_first:
            x = x.transpose(0, 1)
        for block in blocks[:-1]:
            x = block(x)
        if not batch_first:
            x = x.transpose(0, 1)
        pooled_out = dense_out = None
        if pooled:
            xg = blocks[-1](x if batch_first else x.transpose(0, 1))
            xg = xg if batch_first else xg.transpose(0, 1)
            pooled_out, _ = visual._pool(xg)
            if visual.proj is not None:
                pooled_out = pooled_out @ visual.proj
        if dense:
            xd = visual.ln_post(value_path_block(blocks[-1], x))[:, 1:]
            if visual.proj is not None:
                xd = xd @ visual.proj
            dense_out = xd.transpose(1, 2).reshape(xd.shape[0], xd.shape[2], gh, gw)
        return ImageFeatures(pooled_out, dense_out)

    def image_groups(self) -> dict[str, list]:
        visual = self.clip.visual
        return {
            "embed": [visual.conv1, visual.class_embedding, visual.positional_embedding, visual.ln_pre],
            "blocks": list(self._blocks()),
            "head": [visual.ln_post, visual.proj],
        }
