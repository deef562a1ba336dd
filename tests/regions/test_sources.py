"""Training region sources: the paper's 17 grid splits and colour segments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densevlm.data.synth import generate_scene
from densevlm.regions.sources import GRID_SPLITS, grid_boxes, region_boxes, segment_regions, token_boxes


def test_the_seventeen_official_splits():
    assert len(GRID_SPLITS) == 17
    assert (2, 2) in GRID_SPLITS and (6, 6) in GRID_SPLITS and (2, 5) not in GRID_SPLITS and (3, 2) not in GRID_SPLITS
    cells = sorted(m * n for m, n in GRID_SPLITS)
    assert cells[0] == 4 and cells[-1] == 36


def test_grid_cells_tile_the_image():
    rng = np.random.default_rng(0)
    for _ in range(20):
        boxes = grid_boxes(60.0, 40.0, rng)
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum()
        assert torch.isclose(area, torch.tensor(2400.0))
        assert boxes[:, 0].min() == 0 and boxes[:, 2].max() == 60 and boxes[:, 3].max() == 40
    assert grid_boxes(60.0, 40.0, rng, max_boxes=3).shape == (3, 4)


def test_colour_segments_find_a_part():
    scene = generate_scene(3, 1, 64)
    image = torch.from_numpy(scene.image.astype(np.float32) / 255.0).permute(2, 0, 1)
    boxes, masks = segment_regions(image)
    assert masks.shape[0] == boxes.shape[0] and masks.shape[1:] == (64, 64)
    coverage = masks.sum(dim=0)
    assert torch.equal(coverage, torch.ones(64, 64, dtype=coverage.dtype))  # a partition of the image
    # some segment is mostly made of one thing's pixels
    best = 0.0
    for seg in (s for s in scene.segments if s.isthing):
        thing = torch.from_numpy(seg.mask)
        for m in masks:
            inter = (m & thing).sum().item()
            best = max(best, inter / max(1, (m | thing).sum().item()))
    assert best > 0.3
    mixed = region_boxes("mixed", image, np.random.default_rng(0))
    assert mixed.shape[0] > boxes.shape[0]


@pytest.mark.parametrize("shape", [(1, 64), (2, 64), (64, 1), (1, 1)])
def test_colour_segments_of_a_strip_cover_it(shape):
    # SLIC seeds at half a grid step once fell outside a strip thinner than that: no seed, IndexError
    image = torch.rand(3, *shape, generator=torch.Generator().manual_seed(0))
    boxes, masks = segment_regions(image, min_area=1)
    assert masks.shape[1:] == shape and masks.any(dim=0).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_token_cells_are_distinct_patch_squares_cut_at_the_content_edge():
    rng = np.random.default_rng(0)
    boxes = token_boxes(60.0, 20.0, 8, rng, 100)  # 8 x 3 cells, the last column 4 px, the last row 4 px
    assert boxes.shape == (24, 4)
    assert len({tuple(b) for b in boxes.tolist()}) == 24
    x0, y0, x1, y1 = boxes.unbind(1)
    assert torch.all(x0 % 8 == 0) and torch.all(y0 % 8 == 0)
    assert torch.all(x1 == torch.minimum(x0 + 8, torch.tensor(60.0)))
    assert torch.all(y1 == torch.minimum(y0 + 8, torch.tensor(20.0)))
    area = ((x1 - x0) * (y1 - y0)).sum()
    assert float(area) == 60 * 20  # together they tile the content
    few = token_boxes(60.0, 20.0, 8, np.random.default_rng(1), 5)
    assert few.shape == (5, 4) and token_boxes(60.0, 20.0, 8, rng, 0).shape == (0, 4)
