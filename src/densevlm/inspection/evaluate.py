"""Manufacturing metrics of a model on a labelled panoptic dataset (``densevlm eval --inspection``).

Every image is scored once (:mod:`densevlm.inspection.scores`); its ground truth comes from the
panoptic segments whose categories map to the vocabulary's ``[defects]``. Keys added to the
evaluation JSON (rates in [0, 1]):

* ``inspection.image_auroc`` -- NG score, NG vs OK images;
* ``inspection.recall_at_fa_0.01`` / ``_0.05`` -- recall at the threshold that calls at most
  1 % / 5 % of the OK images NG (chosen on this set, so optimistic for new data);
* ``inspection.aupro`` -- pixel level: the anomaly map is the summed probability of the defect
  classes at the model's input resolution, the ground truth the defect segments resized there
  (nearest); per-region overlap integrated to 30 % false-positive rate, normalised;
* ``inspection.per_defect`` -- per defect: AUROC of its own score (images holding it vs OK
  images), recall at 5 % false alarms (images holding it called NG), count;
* ``inspection.confusion`` -- per ground-truth defect segment, the class whose mean probability
  under the segment is largest: a defect, or "not a defect";
* ``inspection.roc`` -- the ROC curve points; ``inspection.n_ok`` / ``n_ng``; ``inspection.score``;
  ``inspection.n_skipped``: images too small to inspect (each named in a warning).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from densevlm.errors import DenseVLMError
from densevlm.imaging import check_image_size
from densevlm.evaluation.manufacturing import (aupro, defect_confusion, image_auroc, recall_at_false_alarm,
                                               roc_points)
from densevlm.inspection.scores import ScoreConfig, analyse_images
from densevlm.vocab import Vocabulary, load_vocabulary

log = logging.getLogger(__name__)

__all__ = ["inspection_vocabulary", "evaluate_inspection", "FALSE_ALARM_RATES"]

FALSE_ALARM_RATES = (0.01, 0.05)


def inspection_vocabulary(data: str | Path, vocab: Optional[Vocabulary]) -> Vocabulary:
    """``vocab`` (which must list defects), else the dataset folder's ``vocab.txt`` (``synth`` writes one)."""
    if vocab is not None:
        if not vocab.defects:
            raise DenseVLMError(f"--inspection needs a vocabulary with a [defects] section; "
                                f"{vocab.source or 'the vocabulary given'} has none")
        return vocab
    candidate = Path(str(data)) / "vocab.txt"
    if candidate.is_file():
        found = load_vocabulary(candidate)
        if found.defects:
            return found
    raise DenseVLMError(f"--inspection needs a vocabulary with a [defects] section; pass --vocab (for {data})")


def _resize_nearest(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)) > 127


def evaluate_inspection(model: Any, data: str | Path, vocab: Optional[Vocabulary] = None,
                        cfg: Optional[ScoreConfig] = None, limit: Optional[int] = None, batch_size: int = 8,
                        progress: bool = False) -> dict[str, Any]:
    """The ``inspection.*`` metrics of ``model`` on the panoptic dataset ``data`` (see the module docstring)."""
    from tqdm import tqdm

    from densevlm.data.panoptic import PanopticDataset
    from densevlm.evaluation.protocol import map_categories

    vocab = inspection_vocabulary(data, vocab)
    dataset = PanopticDataset(data, limit=limit)
    mapping = map_categories(dataset, vocab)
    cfg = (cfg or ScoreConfig()).resolved(model)
    defects = vocab.defect_indices
    column = {k: j for j, k in enumerate(defects)}
    samples = []

    skipped = []

    def images():
        for i in range(len(dataset)):
            sample = dataset.load(i)
            try:
                check_image_size(sample.image.width, sample.image.height, cfg.size)
            except DenseVLMError as e:
                skipped.append(f"{dataset.image_path(i)}: {e}")
                log.warning("skipped: %s", skipped[-1])
                continue
            samples.append(sample)
            yield sample.image

    holds, scores, image_scores, masks, maps, true, pred = [], [], [], [], [], [], []
    bar = tqdm(total=len(dataset), desc="inspection", unit="img", disable=None if progress else True, leave=False)
    for n, analysis in enumerate(analyse_images(model, images(), vocab, cfg, batch_size, keep_probs=True)):
        sample, plan, probs = samples[n], analysis.plan, analysis.probs
        row = np.zeros(len(defects), dtype=bool)
        union = np.zeros(sample.ids.shape, dtype=bool)
        for seg in sample.segments:
            k = mapping[dataset.category_index[seg["category_id"]]]
            if k not in column:
                continue
            row[column[k]] = True
            mask = sample.ids == seg["id"]
            union |= mask
            small = _resize_nearest(mask, plan.width, plan.height)
            if not small.any():
                ys, xs = np.nonzero(mask)
                small[min(int(ys.mean() * plan.scale), plan.height - 1), min(int(xs.mean() * plan.scale), plan.width - 1)] = True
            best = int(probs[:, small].mean(axis=1).argmax())
            true.append(column[k])
            pred.append(column.get(best, len(defects)))
        holds.append(row)
        scores.append(analysis.defect_scores)
        image_scores.append(analysis.score)
        masks.append(_resize_nearest(union, plan.width, plan.height))
        maps.append(probs[defects].sum(axis=0))
        samples[n] = None
        bar.update()
    bar.close()
    if not holds:
        raise DenseVLMError(f"{data}: no image could be inspected ({len(skipped)} too small)")
    holds_a, scores_a, image_a = np.array(holds), np.array(scores), np.array(image_scores)
    ng = holds_a.any(axis=1)
    out: dict[str, Any] = {"inspection.image_auroc": image_auroc(ng, image_a)}
    for rate in FALSE_ALARM_RATES:
        out[f"inspection.recall_at_fa_{rate}"] = recall_at_false_alarm(ng, image_a, rate)[0] if (~ng).any() else float("nan")
    out["inspection.aupro"] = aupro(masks, maps) if ng.any() and (~ng).any() else float("nan")
    threshold = recall_at_false_alarm(ng, image_a, 0.05)[1] if (~ng).any() else float("inf")
    per_defect = {}
    for j, k in enumerate(defects):
        sel = holds_a[:, j]
        use = sel | ~ng
        per_defect[vocab.names[k]] = {
            "auroc": image_auroc(sel[use], scores_a[use, j]),
            "recall_at_fa_0.05": float((image_a[sel] >= threshold).mean()) if sel.any() else float("nan"),
            "n": int(sel.sum()),
        }
    out["inspection.per_defect"] = per_defect
    out["inspection.confusion"] = {"defects": list(vocab.defects), "columns": [*vocab.defects, "not a defect"],
                                   "counts": defect_confusion(true, pred, len(defects)).tolist()}
    out["inspection.roc"] = roc_points(ng, image_a)
    out.update({"inspection.n_ok": int((~ng).sum()), "inspection.n_ng": int(ng.sum()),
                "inspection.n_skipped": len(skipped), "inspection.score": cfg.to_json()})
    return out
