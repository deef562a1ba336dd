"""Traceable modules: the only things :mod:`densevlm.export.onnx` hands to the ONNX exporters.

Each wrapper has fixed tensor inputs and outputs and no Python control flow that depends on
tensor values. The backbones do branch on *shapes* (e.g. the position table is returned
unchanged when the token grid equals the native one); the exporter traces them at a grid that
differs from the native one in both directions, so the general path is the one recorded, and
the parity check runs at the export size and, for dynamic exports, at a second size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from densevlm.model import DenseModel
from densevlm.regions import similarity

__all__ = ["DenseEncoder", "RegionClassifier"]


class DenseEncoder(nn.Module):
    """The image tower's dense path: ``images [B, 3, H, W] -> dense [B, C, H/p, W/p]``.

    Same computation as :meth:`DenseModel.encode_dense`: the backbone's value-path dense map,
    L2-normalised per token (over C).
    """

    def __init__(self, model: DenseModel) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images ``[B, 3, H, W]`` float32, normalised, H and W multiples of the patch."""
        dense = self.backbone.forward_image(images, pooled=False, dense=True).dense
        return F.normalize(dense, dim=1)


class RegionClassifier(nn.Module):
    """Box logits from a dense map: ``(dense [B, C, h, w], boxes [K, 5]) -> logits [K, T]``.

    The region feature is :func:`densevlm.regions.pooling.roi_pool`'s: ``roi_align`` with a 1x1
    output, adaptive sampling and ``aligned=True`` (pixel ``i`` covers ``[i, i + 1)``), then L2
    normalisation; the logits are :func:`densevlm.regions.similarity.logits`,
    ``logit_scale * feature @ text.T``.

    Args:
        text: ``[T, C]`` unit-norm class embeddings (stored in the graph as a constant).
        patch_size: input pixels per dense-map cell (box coordinates are divided by it).
        logit_scale: multiplier of the cosine scores (about 100 for real CLIPs).
    """

    def __init__(self, text: torch.Tensor, patch_size: int, logit_scale: float) -> None:
        super().__init__()
        self.register_buffer("text", text.detach().float().clone())
        self.stride = float(patch_size)
        self.logit_scale = float(logit_scale)

    def forward(self, dense: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Args:
            dense: ``[B, C, h, w]`` dense map (the image encoder's output).
            boxes: ``[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)``, XYXY in input pixels.

        Returns:
            ``[K, T]`` logits.
        """
        rois = torch.cat([boxes[:, :1], boxes[:, 1:] / self.stride], dim=1)
        pooled = roi_align(dense, rois, output_size=1, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        feats = F.normalize(pooled.flatten(1), dim=-1)
        return similarity.logits(feats, self.text, self.logit_scale)
