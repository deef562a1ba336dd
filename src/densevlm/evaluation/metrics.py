"""Streaming counters for region classification and semantic segmentation.

Memory does not grow with the number of images: only ``[K]`` and ``[K, K]`` integer counters
are kept. Counters are plain tensors, so distributed workers sum them with one all-reduce and
get exactly the numbers one process would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch

from densevlm.errors import DenseVLMError
from densevlm.regions import similarity

__all__ = ["RegionCounter", "SegmentationCounter", "mean_class_accuracy", "subset_mean_accuracy"]


def mean_class_accuracy(correct: torch.Tensor, total: torch.Tensor, select: torch.Tensor) -> float:
    """Mean over the selected classes that occur (``total > 0``) of ``correct / total``, in percent.

    Args:
        correct, total: ``[K]`` counts per ground-truth class.
        select: ``[K]`` bool, the classes to average over (e.g. the things).

    Returns:
        NaN when no selected class occurs.
    """
    use = select & (total > 0)
    if not bool(use.any()):
        return float("nan")
    return float((correct[use].double() / total[use].double()).mean() * 100.0)


def subset_mean_accuracy(per_class: Sequence[Mapping[str, Any]], classes: Iterable[str], kind: str = "box") -> float:
    """:func:`mean_class_accuracy` over a named subset of classes, from an evaluation's per-class rows.

    E.g. the classes a model was taught, out of an evaluation whose vocabulary also holds words
    it never learned: those still compete in every argmax, only the mean leaves them out.

    Args:
        per_class: :attr:`EvalResult.per_class` rows (an evaluation JSON's ``per_class``), each
            with ``class``, ``n`` and ``{kind}_acc1`` (percent).
        classes: class names to average over.
        kind: region feature, ``box``, ``mask`` or ``crop``.

    Returns:
        The mean top-1 accuracy in percent over the named classes that occur (``n > 0``); NaN
        when none occurs.

    Raises:
        DenseVLMError: a name is not a class of ``per_class``.
    """
    rows = {row["class"]: row for row in per_class}
    wanted = list(classes)
    missing = [c for c in wanted if c not in rows]
    if missing:
        raise DenseVLMError(f"not a class of the evaluation: {', '.join(missing)}")
    values = [float(rows[c][f"{kind}_acc1"]) for c in wanted if rows[c]["n"] > 0]
    return math.fsum(values) / len(values) if values else float("nan")


@dataclass
class RegionCounter:
    """Top-1 / top-5 hits and the full confusion of one region-feature type (box, mask or crop).

    Attributes:
        is_thing: ``[K]`` bool, the vocabulary's thing classes.
        confusion: ``[K, K]`` int64, rows = ground truth, columns = top-1 prediction.
        top5: ``[K]`` int64, how often the ground truth is among the 5 best.
    """

    is_thing: torch.Tensor
    confusion: torch.Tensor = field(init=False)
    top5: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        k = self.is_thing.numel()
        self.confusion = torch.zeros(k, k, dtype=torch.int64)
        self.top5 = torch.zeros(k, dtype=torch.int64)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add ``[N, K]`` scores for ``[N]`` ground-truth class indices."""
        if labels.numel() == 0:
            return
        logits, labels = logits.detach().float().cpu(), labels.cpu()
        k = logits.shape[1]
        pred = logits.argmax(dim=1)
        flat = labels * k + pred
        self.confusion += torch.bincount(flat, minlength=k * k).reshape(k, k)
        _, best = similarity.top_k(logits, 5)
        hit = (best == labels[:, None]).any(dim=1)
        self.top5 += torch.bincount(labels[hit], minlength=k)

    @property
    def total(self) -> torch.Tensor:
        return self.confusion.sum(dim=1)

    @property
    def top1(self) -> torch.Tensor:
        return self.confusion.diagonal()

    def tensors(self) -> list[torch.Tensor]:
        """The counters, for summing across processes (in place)."""
        return [self.confusion, self.top5]

    def summary(self, prefix: str) -> dict[str, float]:
        """``{prefix}.thing.macc1`` ... and the thing/stuff bias rates, in percent."""
        thing, stuff = self.is_thing, ~self.is_thing
        total = self.total
        pred_thing = self.confusion[:, thing].sum(dim=1)
        stuff_n = int(total[stuff].sum())
        thing_n = int(total[thing].sum())
        return {
            f"{prefix}.thing.macc1": mean_class_accuracy(self.top1, total, thing),
            f"{prefix}.thing.macc5": mean_class_accuracy(self.top5, total, thing),
            f"{prefix}.stuff.macc1": mean_class_accuracy(self.top1, total, stuff),
            f"{prefix}.stuff.macc5": mean_class_accuracy(self.top5, total, stuff),
            f"{prefix}.fg_bias": 100.0 * int(pred_thing[stuff].sum()) / stuff_n if stuff_n else float("nan"),
            f"{prefix}.bg_bias": 100.0 * (thing_n - int(pred_thing[thing].sum())) / thing_n if thing_n else float("nan"),
            f"{prefix}.n_thing": thing_n,
            f"{prefix}.n_stuff": stuff_n,
        }

    def per_class(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """Per ground-truth class: count, top-1/top-5 accuracy, share predicted as a thing."""
        total = self.total
        pred_thing = self.confusion[:, self.is_thing].sum(dim=1)
        rows = []
        for k, name in enumerate(names):
            n = int(total[k])
            rows.append({
                "class": name,
                "isthing": bool(self.is_thing[k]),
                "n": n,
                "acc1": 100.0 * int(self.top1[k]) / n if n else float("nan"),
                "acc5": 100.0 * int(self.top5[k]) / n if n else float("nan"),
                "pred_thing": 100.0 * int(pred_thing[k]) / n if n else float("nan"),
            })
        return rows


@dataclass
class SegmentationCounter:
    """Pixel confusion for semantic segmentation (``[K, K]``, rows = ground truth)."""

    num_classes: int
    confusion: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add ``[H, W]`` predicted and ground-truth class maps (target < 0 is ignored)."""
        valid = target >= 0
        k = self.num_classes
        flat = target[valid].long() * k + pred[valid].long()
        self.confusion += torch.bincount(flat.cpu(), minlength=k * k).reshape(k, k)

    def tensors(self) -> list[torch.Tensor]:
        return [self.confusion]

    def iou(self) -> torch.Tensor:
        """``[K]`` IoU in percent (NaN for classes absent from both prediction and ground truth)."""
        tp = self.confusion.diagonal().double()
        union = self.confusion.sum(dim=0).double() + self.confusion.sum(dim=1).double() - tp
        return torch.where(union > 0, 100.0 * tp / union.clamp_min(1), torch.full_like(tp, float("nan")))

    def summary(self) -> dict[str, float]:
        present = self.confusion.sum(dim=1) > 0
        iou = self.iou()
        total = int(self.confusion.sum())
        return {
            "miou": float(iou[present].mean()) if bool(present.any()) else float("nan"),
            "pixel_acc": 100.0 * int(self.confusion.diagonal().sum()) / total if total else float("nan"),
        }
