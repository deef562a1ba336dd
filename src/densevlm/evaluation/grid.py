"""How good is a teacher at labelling training regions? Agreement with the ground truth on grid cells.

DenseVLM trains on grid cells labelled by a teacher. On a dataset with panoptic ground truth
we can check those labels: each cell's reference label is the category covering most of its
pixels; the teacher's label is its top-1 class for the cell (crop, dense RoI, or both).
Reported: agreement over all cells, agreement on thing-majority and stuff-majority cells,
the share of cells without any thing pixel that the teacher calls a thing, and the kept share
at the confidence threshold.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from densevlm.data.panoptic import PanopticDataset
from densevlm.evaluation.protocol import map_categories
from densevlm.regions.sources import grid_boxes
from densevlm.retrieval.teacher import classify_regions, teacher_region_features
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["grid_agreement"]


def grid_agreement(
    model,
    dataset: PanopticDataset,
    vocab: Vocabulary,
    features: str = "crop",
    logit_scale: Optional[float] = None,
    threshold: float = 0.3,
    limit: Optional[int] = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Label the grid cells of ``dataset`` images with ``model`` and compare with the majority GT label.

    Cells are drawn as in training (one of the 17 splits per image, all cells); ``logit_scale``
    multiplies the cosines (default: the model's own).
    """
    mapping = map_categories(dataset, vocab)
    class_is_thing = torch.tensor(vocab.is_thing)
    logit_scale = float(logit_scale or model.logit_scale)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    agree = total = 0
    by_group = {True: [0, 0], False: [0, 0]}
    pure_stuff = pure_stuff_as_thing = kept = 0
    with torch.inference_mode():
        text = model.embed_vocabulary(vocab).float()
        for index in range(n):
            sample = dataset.load(index)
            x, plan = model.prepare(sample.image, square=True)
            rng = np.random.default_rng([seed, index])
            boxes = grid_boxes(plan.width, plan.height, rng)
            labels = np.full(sample.ids.shape, -1, dtype=np.int64)
            for seg in sample.segments:
                labels[sample.ids == seg["id"]] = mapping[dataset.category_index[seg["category_id"]]]
            feats = teacher_region_features(model, x[None], [boxes], features)
            r = classify_regions(feats, text, class_is_thing, logit_scale, threshold, features)
            for j, (x1, y1, x2, y2) in enumerate(plan.to_original(boxes).tolist()):
                cell = labels[int(round(y1)):int(round(y2)), int(round(x1)):int(round(x2))].reshape(-1)
                cell = cell[cell >= 0]
                if cell.size == 0:
                    continue
                values, counts = np.unique(cell, return_counts=True)
                majority = int(values[counts.argmax()])
                hit = int(r.label[j]) == majority
                agree += hit
                total += 1
                group = by_group[vocab.is_thing[majority]]
                group[0] += hit
                group[1] += 1
                if not any(vocab.is_thing[int(v)] for v in values):
                    pure_stuff += 1
                    pure_stuff_as_thing += bool(r.is_thing[j])
                kept += bool(r.kept[j])
    return {
        "cells": total,
        "agreement": 100.0 * agree / max(1, total),
        "agreement_thing_cells": 100.0 * by_group[True][0] / max(1, by_group[True][1]),
        "agreement_stuff_cells": 100.0 * by_group[False][0] / max(1, by_group[False][1]),
        "thing_majority_cells": by_group[True][1],
        "pure_stuff_called_thing": 100.0 * pure_stuff_as_thing / max(1, pure_stuff),
        "kept": 100.0 * kept / max(1, total),
        "features": features,
        "logit_scale": logit_scale,
    }
