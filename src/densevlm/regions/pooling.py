"""Region features from a dense map: RoI pooling of boxes and mean pooling under masks.

Box convention everywhere: ``(x1, y1, x2, y2)`` in *input pixels* (the letterboxed model
input), continuous coordinates where pixel ``i`` covers ``[i, i + 1)``. A dense map with
stride ``p`` has token ``j`` centred at input pixel ``(j + 0.5) * p``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from densevlm.errors import DenseVLMError

if TYPE_CHECKING:  # torch and torchvision load on use: the mask pooling also serves numpy arrays without them
    import torch

__all__ = ["roi_pool", "mask_pool", "weighted_pool", "grid_token_weights", "mask_token_weights", "crop_boxes", "boxes_to_rois"]


def boxes_to_rois(boxes: Sequence[torch.Tensor], stride: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Stack per-image boxes into ``[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in map units.

    Args:
        boxes: per image, ``[N_i, 4]`` XYXY boxes in input pixels.
        stride: input pixels per dense-map cell (the patch size), e.g. 16 maps a 512 px box
            edge to 32 cells.
    """
    import torch

    rows = []
    for i, b in enumerate(boxes):
        b = torch.as_tensor(b, dtype=dtype, device=device).reshape(-1, 4)
        idx = torch.full((b.shape[0], 1), float(i), dtype=dtype, device=device)
        rows.append(torch.cat([idx, b / stride], dim=1))
    if not rows:
        return torch.zeros(0, 5, dtype=dtype, device=device)
    return torch.cat(rows, dim=0)


def roi_pool(dense: torch.Tensor, boxes: Sequence[torch.Tensor], stride: int) -> torch.Tensor:
    """Average the dense map inside each box with ``roi_align`` (1x1 output), then L2-normalise.

    Exactly DESIGN.md section 2: ``roi_align(map, boxes / stride, output_size=1,
    spatial_scale=1, sampling_ratio=-1, aligned=True)``. A box covering the whole input gives
    the (normalised) mean of the map.

    Args:
        dense: ``[B, C, h, w]`` dense map (normalised per token or not).
        boxes: list of B tensors ``[N_i, 4]``, XYXY in input pixels.
        stride: input pixels per map cell.

    Returns:
        ``[sum N_i, C]`` unit-norm features, in the order of ``boxes``.
    """
    import torch.nn.functional as F
    from torchvision.ops import roi_align

    if len(boxes) != dense.shape[0]:
        raise DenseVLMError(f"got boxes for {len(boxes)} images but {dense.shape[0]} images")
    rois = boxes_to_rois(boxes, stride, dense.dtype, dense.device)
    if rois.shape[0] == 0:
        return dense.new_zeros(0, dense.shape[1]) + 0.0 * dense.sum()
    pooled = roi_align(dense, rois, output_size=1, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return F.normalize(pooled.flatten(1), dim=-1)


def grid_token_weights(masks: Any, token_rows: Any, token_cols: Any, shape: tuple[int, int]) -> Any:
    """Sum masks over token cells: the one mask -> token weights, for any pixel -> token map.

    Pixel ``(i, j)`` of the masks lies in token ``(token_rows[i], token_cols[j])``; a mask
    value may be a pixel's area (e.g. the original pixels a resized pixel stands for), so a
    token's weight is the mask's mass in its cell. Computed as ``R^T M C`` with one-hot
    ``R [H, h]``, ``C [W, w]``, so masks only as large as their pixel grid are ever built.

    Args:
        masks: ``[N, H, W]`` float (the dtype of the result), a tensor or a numpy array.
        token_rows, token_cols: ``[H]`` / ``[W]`` int64 token row (column) of each pixel row
            (column), in ``[0, h)`` / ``[0, w)``, of the same kind.
        shape: the token grid ``(h, w)``.

    Returns:
        ``[N, h, w]`` mask mass per token (0 for tokens no pixel maps to), of the masks' kind.
    """
    if isinstance(masks, np.ndarray):
        rows = np.eye(shape[0], dtype=masks.dtype)[np.asarray(token_rows)]
        cols = np.eye(shape[1], dtype=masks.dtype)[np.asarray(token_cols)]
        return rows.T @ masks @ cols
    import torch.nn.functional as F

    rows = F.one_hot(token_rows.to(masks.device), shape[0]).to(masks.dtype)
    cols = F.one_hot(token_cols.to(masks.device), shape[1]).to(masks.dtype)
    return rows.t() @ masks @ cols


def mask_token_weights(masks: torch.Tensor, stride: int) -> torch.Tensor:
    """Area-average input-size masks onto the token grid (:func:`grid_token_weights` over
    ``stride x stride`` cells, divided by the cell area).

    The weight of a token is the fraction of its input-pixel cell that the mask covers (a
    float mask counts its values). Masks at the original image size are brought to the input
    size first with :meth:`densevlm.imaging.Letterbox.masks_to_input`.

    Args:
        masks: ``[N, H, W]`` bool or float in ``[0, 1]``, in input pixels; ``H`` and ``W``
            multiples of ``stride``.
        stride: input pixels per token side (the patch size).

    Returns:
        ``[N, H / stride, W / stride]`` float32 weights in ``[0, 1]``.

    Raises:
        DenseVLMError: ``H`` or ``W`` is not a multiple of ``stride``.
    """
    import torch

    n, h, w = masks.shape
    if h % stride or w % stride:
        raise DenseVLMError(f"mask size {h}x{w} is not a multiple of the stride {stride}")
    rows = torch.arange(h, device=masks.device) // stride
    cols = torch.arange(w, device=masks.device) // stride
    return grid_token_weights(masks.float(), rows, cols, (h // stride, w // stride)) / (stride * stride)


def weighted_pool(dense: Any, weights: Any) -> Any:
    """Weighted mean of one image's dense map, then L2-normalise.

    Args:
        dense: ``[C, h, w]``, a tensor or a numpy array.
        weights: ``[N, h, w]`` non-negative token weights, of the same kind.

    Returns:
        ``[N, C]`` unit-norm features (all-zero where a weight map is all zero), of the same kind.
    """
    if isinstance(dense, np.ndarray):
        w = np.asarray(weights, dtype=dense.dtype).reshape(len(weights), -1)
        feats = w @ dense.reshape(dense.shape[0], -1).T
        feats = feats / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
        return feats / np.maximum(np.linalg.norm(feats, axis=-1, keepdims=True), 1e-12)
    import torch.nn.functional as F

    w = weights.to(dense.dtype).flatten(1)
    feats = w @ dense.flatten(1).transpose(0, 1)
    feats = feats / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return F.normalize(feats, dim=-1)


def mask_pool(dense: torch.Tensor, masks: Sequence[torch.Tensor], stride: int) -> torch.Tensor:
    """Weighted mean of the dense map under each mask, then L2-normalise.

    Each mask is area-averaged onto the token grid (:func:`mask_token_weights`), so a full
    mask gives the plain mean of the map.

    Args:
        dense: ``[B, C, h, w]``.
        masks: list of B tensors ``[N_i, H, W]`` (bool or float in [0, 1]) at the input size
            ``H = h * stride``, ``W = w * stride``.

    Returns:
        ``[sum N_i, C]`` unit-norm features (all-zero for an empty mask).
    """
    import torch

    if len(masks) != dense.shape[0]:
        raise DenseVLMError(f"got masks for {len(masks)} images but {dense.shape[0]} images")
    b, c, h, w = dense.shape
    out = []
    for i, m in enumerate(masks):
        m = torch.as_tensor(m, device=dense.device)
        if m.numel() == 0:
            continue
        if m.shape[-2:] != (h * stride, w * stride):
            raise DenseVLMError(
                f"mask size {tuple(m.shape[-2:])} does not match the input size {(h * stride, w * stride)}"
            )
        out.append(weighted_pool(dense[i], mask_token_weights(m.reshape(-1, h * stride, w * stride), stride)))
    if not out:
        return dense.new_zeros(0, c)
    return torch.cat(out, dim=0)


def crop_boxes(image: torch.Tensor, boxes: torch.Tensor, size: int, context: float = 1.0) -> torch.Tensor:
    """Cut boxes out of an image and letterbox each to ``size x size``.

    Args:
        image: ``[3, H, W]`` normalised image (zero is the mean colour).
        boxes: ``[N, 4]`` XYXY in the image's pixels.
        size: output side in pixels; the longest side of each crop is resized to it
            (bilinear, antialiased) and the rest is zero-padded right/bottom.
        context: scale each box about its centre by this factor before cutting
            (1.5 for the paper's thing crops), clipped to the image.

    Returns:
        ``[N, 3, size, size]``.
    """
    import torch.nn.functional as F

    _, hgt, wid = image.shape
    out = image.new_zeros(boxes.shape[0], 3, size, size)
    for n, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        bw, bh = (x2 - x1) * context, (y2 - y1) * context
        left = max(0, int(round(cx - bw / 2)))
        top = max(0, int(round(cy - bh / 2)))
        right = min(wid, max(left + 1, int(round(cx + bw / 2))))
        bottom = min(hgt, max(top + 1, int(round(cy + bh / 2))))
        crop = image[:, top:bottom, left:right]
        ch, cw = crop.shape[-2:]
        scale = size / max(ch, cw)
        nh, nw = max(1, round(ch * scale)), max(1, round(cw * scale))
        resized = F.interpolate(crop[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        out[n, :, :nh, :nw] = resized[0]
    return out
