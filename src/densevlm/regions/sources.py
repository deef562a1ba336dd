"""Where training regions come from: the paper's grid cells, token cells, or object-shaped colour segments.

All boxes are XYXY in the pixels of the image they are computed on, inside the image's
content (letterbox padding excluded).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["GRID_SPLITS", "grid_boxes", "token_boxes", "segment_regions", "region_boxes"]

# The 17 (rows, columns) splits of the reference recipe: rows in 2..6, columns from
# floor((rows + 1) / 2) + 1 up to min(2 * rows, 6). They give 4-36 cells per image.
GRID_SPLITS: tuple[tuple[int, int], ...] = tuple(
    (m, n) for m in range(2, 7) for n in range((m + 1) // 2 + 1, min(2 * m, 6) + 1)
)


def grid_boxes(width: float, height: float, rng: np.random.Generator, max_boxes: Optional[int] = None) -> torch.Tensor:
    """Every cell of one grid split drawn uniformly from :data:`GRID_SPLITS`, shuffled.

    Args:
        width, height: the image content in pixels.
        max_boxes: keep at most this many cells (a random subset).

    Returns:
        ``[N, 4]`` float boxes, XYXY pixels.
    """
    rows, cols = GRID_SPLITS[int(rng.integers(len(GRID_SPLITS)))]
    ys = np.linspace(0.0, height, rows + 1)
    xs = np.linspace(0.0, width, cols + 1)
    cells = [[xs[c], ys[r], xs[c + 1], ys[r + 1]] for r in range(rows) for c in range(cols)]
    order = rng.permutation(len(cells))
    if max_boxes is not None:
        order = order[:max_boxes]
    return torch.tensor([cells[i] for i in order], dtype=torch.float32)


def token_boxes(width: float, height: float, patch: int, rng: np.random.Generator, count: int) -> torch.Tensor:
    """``count`` distinct token cells of the image content, drawn uniformly (all when there are fewer).

    A token cell is the ``patch x patch`` square of one model token (cells in the last row and
    column are cut at the content's edge): the finest grid the dense map has, where a region is
    as small as a scratch, which the grid splits' cells (10-32 px of a 64 px image) never isolate.

    Args:
        width, height: the image content in pixels.
        patch: the model's patch size in pixels.
        count: cells to draw (0 or more).

    Returns:
        ``[min(count, cells), 4]`` float boxes, XYXY pixels, in the order drawn.
    """
    cols, rows = math.ceil(width / patch), math.ceil(height / patch)
    pick = rng.permutation(rows * cols)[:count]
    r, c = np.divmod(pick, cols)
    boxes = np.stack([c * patch, r * patch, np.minimum((c + 1) * patch, width), np.minimum((r + 1) * patch, height)],
                     axis=1)
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def _slic(image: torch.Tensor, n_segments: int, compactness: float, iterations: int) -> torch.Tensor:
    """Simple SLIC superpixels: k-means on (Lab-like colour, position) seeded on a grid.

    Args:
        image: ``[3, H, W]`` float RGB in [0, 1].

    Returns:
        ``[H, W]`` int64 labels.
    """
    _, h, w = image.shape
    step = max(2.0, float(np.sqrt(h * w / n_segments)))
    gy = torch.arange(step / 2, h, step) if h > step / 2 else torch.tensor([(h - 1) / 2])
    gx = torch.arange(step / 2, w, step) if w > step / 2 else torch.tensor([(w - 1) / 2])
    cy, cx = torch.meshgrid(gy, gx, indexing="ij")
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    colour = image.reshape(3, -1).t()
    pos = torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=1)
    centres_pos = torch.stack([cy.reshape(-1), cx.reshape(-1)], dim=1)
    idx = (centres_pos[:, 0].long().clamp(max=h - 1) * w + centres_pos[:, 1].long().clamp(max=w - 1))
    centres_col = colour[idx]
    weight = compactness / step
    for _ in range(iterations):
        d = torch.cdist(colour, centres_col) ** 2 + (weight**2) * torch.cdist(pos, centres_pos) ** 2
        labels = d.argmin(dim=1)
        counts = torch.bincount(labels, minlength=centres_col.shape[0]).clamp_min(1).float()[:, None]
        centres_col = torch.zeros_like(centres_col).index_add_(0, labels, colour) / counts
        centres_pos = torch.zeros_like(centres_pos).index_add_(0, labels, pos) / counts
    return labels.reshape(h, w)


def segment_regions(
    image: torch.Tensor,
    n_segments: int = 24,
    compactness: float = 0.08,
    min_area: int = 12,
    iterations: int = 6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Object-shaped regions from colour superpixels: parts with a distinct colour become their own region.

    Superpixels (SLIC) are merged with their most similar neighbour until none is smaller
    than ``min_area`` pixels; each surviving segment gives a mask and its tight box.

    Args:
        image: ``[3, H, W]`` float RGB in [0, 1] (the image content, no padding).

    Returns:
        ``(boxes [N, 4] XYXY pixels, masks [N, H, W] bool)``.
    """
    labels = _slic(image, n_segments, compactness, iterations)
    _, h, w = image.shape
    colour = image.reshape(3, -1).t()
    while True:
        ids, counts = labels.unique(return_counts=True)
        if counts.min() >= min_area or ids.numel() <= 1:
            break
        small = int(ids[counts.argmin()])
        mask = labels == small
        ring = F.max_pool2d(mask[None, None].float(), 3, stride=1, padding=1)[0, 0].bool() & ~mask
        neighbours = labels[ring].unique()
        if neighbours.numel() == 0:
            break
        mean = colour[mask.reshape(-1)].mean(0)
        dists = torch.stack([(colour[(labels == n).reshape(-1)].mean(0) - mean).norm() for n in neighbours])
        labels[mask] = neighbours[dists.argmin()]
    masks, boxes = [], []
    for sid in labels.unique():
        m = labels == sid
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([float(xs.min()), float(ys.min()), float(xs.max()) + 1.0, float(ys.max()) + 1.0])
        masks.append(m)
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.stack(masks)


def region_boxes(
    source: str,
    image: torch.Tensor,
    rng: np.random.Generator,
    max_boxes: Optional[int] = None,
) -> torch.Tensor:
    """Boxes for one image from ``source``: ``"grid"``, ``"segments"`` or ``"mixed"`` (both).

    Args:
        image: ``[3, H, W]`` float RGB in [0, 1], the content only.
    """
    _, h, w = image.shape
    if source == "grid":
        return grid_boxes(w, h, rng, max_boxes)
    if source in ("segments", "mixed"):
        boxes, _ = segment_regions(image)
        if source == "mixed":
            boxes = torch.cat([boxes, grid_boxes(w, h, rng)], dim=0)
        order = torch.from_numpy(rng.permutation(boxes.shape[0]))
        boxes = boxes[order]
        return boxes[:max_boxes] if max_boxes is not None else boxes
    raise ValueError(f"unknown region source {source!r}")
