"""The accuracy gate of a reduced-precision export: does it still say what the fp32 model says?

Compared on images that calibration did not see (the held-back part of the user's calibration
images) between the PyTorch fp32 model and the export, each with its own text embeddings:

* **dense-label agreement**: share of content tokens (letterbox padding excluded) whose argmax
  over the vocabulary is the same;
* **box-score agreement**: share of boxes whose top-1 class is the same, for a fixed grid of
  boxes over each image's content (the whole image, its 2x2 and 3x3 cells: 14 boxes), pooled
  with :func:`densevlm.regions.pooling.roi_pool` from each side's dense map; the largest cosine
  change is reported too;
* with a labelled set (``--eval-data``), the region-classification protocol of
  :mod:`densevlm.evaluation.protocol` (box features, square letterbox at the export size) on
  both, and the change of box thing / stuff mAcc and fg_bias in points.

The gate passes when both agreements reach ``min_agreement`` and, with labels, neither box mAcc
drops by more than ``max_macc_drop`` points.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional, Sequence

import torch

from densevlm.errors import DenseVLMError
from densevlm.imaging import Letterbox
from densevlm.regions import similarity
from densevlm.regions.pooling import roi_pool
from densevlm.vocab import Vocabulary

__all__ = ["MIN_AGREEMENT", "MAX_MACC_DROP", "grid_boxes", "compare_outputs", "labelled_change", "run_gate",
           "gate_failure", "format_gate"]

log = logging.getLogger(__name__)

MIN_AGREEMENT = 0.99
MAX_MACC_DROP = 1.0  # points of box thing / stuff mAcc
_LABELLED_KEYS = ("box.thing.macc1", "box.stuff.macc1", "fg_bias")


def grid_boxes(plan: Letterbox, levels: Sequence[int] = (1, 2, 3)) -> torch.Tensor:
    """``[sum n^2, 4]`` XYXY input-pixel boxes: the image content cut into n x n cells for each n in ``levels``."""
    rows = []
    for n in levels:
        for i in range(n):
            for j in range(n):
                rows.append([plan.width * j / n, plan.height * i / n, plan.width * (j + 1) / n,
                             plan.height * (i + 1) / n])
    return torch.tensor(rows, dtype=torch.float32)


def _dense(model: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.encode_dense(x.to(model.device)).float().cpu()


def compare_outputs(
    reference: Any,
    exported: Any,
    inputs: Sequence[torch.Tensor],
    plans: Sequence[Letterbox],
    vocab: Vocabulary,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Dense-label and box-score agreement of ``exported`` with ``reference`` on prepared images.

    Args:
        reference: the fp32 model (a DenseModel).
        exported: the export runtime (same interface).
        inputs: ``[3, H, W]`` normalised images of one size (letterboxed square).
        plans: their letterbox geometry (for the content region).
        vocab: the exported vocabulary.

    Returns:
        JSON-ready ``images``, ``tokens``, ``label_agreement``, ``boxes``, ``box_agreement``,
        ``box_score_max_abs`` (cosine units), ``token_cos_mean``.
    """
    if not inputs:
        raise DenseVLMError("the accuracy gate needs at least one held-back image")
    with torch.inference_mode():
        text_ref = reference.embed_vocabulary(vocab, templates=exported.spec.templates).float().cpu()
    text_out = exported.embed_vocabulary(vocab).float()
    p = exported.patch_size
    tokens = agree = boxes = box_agree = 0
    cos_sum, score_err = 0.0, 0.0
    for start in range(0, len(inputs), batch_size):
        x = torch.stack(list(inputs[start : start + batch_size]))
        ref, out = _dense(reference, x), _dense(exported, x)
        for b, plan in enumerate(plans[start : start + batch_size]):
            rows, cols = math.ceil(plan.height / p), math.ceil(plan.width / p)
            r, o = ref[b, :, :rows, :cols], out[b, :, :rows, :cols]
            labels_ref = similarity.cosine(r, text_ref, dim=0).argmax(dim=0)
            labels_out = similarity.cosine(o, text_out, dim=0).argmax(dim=0)
            tokens += labels_ref.numel()
            agree += int((labels_ref == labels_out).sum())
            cos_sum += float(torch.nn.functional.cosine_similarity(r, o, dim=0).sum())
            grid = [grid_boxes(plan)]
            scores_ref = similarity.cosine(roi_pool(ref[b : b + 1], grid, p), text_ref)
            scores_out = similarity.cosine(roi_pool(out[b : b + 1], grid, p), text_out)
            boxes += int(scores_ref.shape[0])
            box_agree += int((scores_ref.argmax(dim=1) == scores_out.argmax(dim=1)).sum())
            score_err = max(score_err, float((scores_ref - scores_out).abs().max()))
    return {
        "images": len(inputs),
        "tokens": tokens,
        "label_agreement": agree / tokens,
        "token_cos_mean": cos_sum / tokens,
        "boxes": boxes,
        "box_agreement": box_agree / boxes,
        "box_score_max_abs": score_err,
    }


def labelled_change(reference: Any, exported: Any, eval_data: str, vocab: Vocabulary) -> dict[str, Any]:
    """Box thing / stuff mAcc and fg_bias of both models on a labelled panoptic set, and the change.

    Args:
        eval_data: a panoptic JSON or world directory (what ``densevlm eval --data`` takes).

    Returns:
        ``{key: {"fp32": a, "export": b, "change": b - a}}`` for ``box.thing.macc1``,
        ``box.stuff.macc1`` and ``fg_bias`` (points), plus ``images``.
    """
    from densevlm.data.panoptic import PanopticDataset
    from densevlm.evaluation.protocol import EvalConfig, evaluate

    dataset = PanopticDataset(eval_data)
    cfg = EvalConfig(size=exported.input_size, square=True, crops=False, segmentation=False)
    before = evaluate(reference, dataset, vocab, cfg, progress=False).metrics
    after = evaluate(exported, dataset, vocab, cfg, progress=False).metrics
    result: dict[str, Any] = {"data": str(eval_data), "images": after["n_images"]}
    for key in _LABELLED_KEYS:
        result[key] = {"fp32": before[key], "export": after[key], "change": after[key] - before[key]}
    return result


def run_gate(
    reference: Any,
    exported: Any,
    inputs: Sequence[torch.Tensor],
    plans: Sequence[Letterbox],
    eval_data: Optional[str] = None,
    min_agreement: float = MIN_AGREEMENT,
    max_macc_drop: float = MAX_MACC_DROP,
) -> dict[str, Any]:
    """Run the gate: :func:`compare_outputs` on held-back images (if any), :func:`labelled_change` with labels.

    Returns:
        JSON-ready ``heldout`` (or None), ``labelled`` (or None), ``min_agreement``,
        ``max_macc_drop``, ``failures`` (one phrase each) and ``passed``.

    Raises:
        DenseVLMError: neither held-back images nor ``eval_data``.
    """
    if not inputs and eval_data is None:
        raise DenseVLMError("the accuracy gate needs held-back images (two or more calibration images) or --eval-data")
    from densevlm.export.verify import reference_vocabulary

    vocab = reference_vocabulary(exported, reference)
    heldout = compare_outputs(reference, exported, inputs, plans, vocab) if inputs else None
    labelled = labelled_change(reference, exported, eval_data, vocab) if eval_data else None
    failures = []
    if heldout is not None:
        for key, what, unit in (("label_agreement", "dense-label agreement", "tokens"),
                                ("box_agreement", "box-score agreement", "boxes")):
            if not heldout[key] >= min_agreement:
                same = round(heldout[key] * heldout[unit])
                failures.append(f"{what} {heldout[key]:.2%} ({same} of {heldout[unit]} {unit}) is "
                                f"{100 * (min_agreement - heldout[key]):.2g} points below --min-agreement "
                                f"{min_agreement:.0%} on {heldout['images']} held-back images")
    if labelled is not None:
        for key in _LABELLED_KEYS[:2]:
            change = labelled[key]["change"]
            if not change >= -max_macc_drop:
                failures.append(f"{key} drops {-change:.2f} points (limit --max-macc-drop {max_macc_drop:g}) "
                                f"on {labelled['images']} labelled images")
    result = {"heldout": heldout, "labelled": labelled, "min_agreement": min_agreement,
              "max_macc_drop": max_macc_drop, "failures": failures, "passed": not failures}
    log.info("accuracy gate %s", "passed" if result["passed"] else "FAILED: " + "; ".join(failures))
    return result


def gate_failure(result: dict[str, Any], what: str) -> str:
    """One line for a failed gate: ``"{what} failed the accuracy gate: ...; ..."``."""
    return f"{what} failed the accuracy gate: " + "; ".join(result["failures"])


def format_gate(result: dict[str, Any], title: str = "accuracy gate, export vs PyTorch fp32") -> str:
    """A short text report of a :func:`run_gate` result (for the command line)."""
    lines = [f"{title}: " + ("PASSED" if result["passed"] else "FAILED")]
    h = result["heldout"]
    if h is not None:
        lines.append(f"  held-back images: {h['images']}, dense-label agreement {h['label_agreement']:.2%} "
                     f"({h['tokens']} tokens), box-score agreement {h['box_agreement']:.2%} ({h['boxes']} boxes), "
                     f"mean token cosine {h['token_cos_mean']:.5f}, box score max abs {h['box_score_max_abs']:.2e}")
    lab = result["labelled"]
    if lab is not None:
        lines.append(f"  labelled set {lab['data']} ({lab['images']} images):")
        for key in _LABELLED_KEYS:
            row = lab[key]
            lines.append(f"    {key:<16} fp32 {row['fp32']:6.2f}  export {row['export']:6.2f}  "
                         f"change {row['change']:+.2f}")
    drop = f", box mAcc drop <= {result['max_macc_drop']:g} points" if lab is not None else \
        " (no labelled set: box mAcc not checked; --eval-data adds it)"
    lines.append(f"  limits: agreement >= {result['min_agreement']:.0%}{drop}")
    for failure in result["failures"]:
        lines.append(f"  FAILED: {failure}")
    return "\n".join(lines)
