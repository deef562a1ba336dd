"""Category retrieval with a frozen teacher VLM (the paper's P-VLM).

The teacher describes each region (dense RoI feature, or the global embedding of the region's
crop, or the mean of both logits, or a split of the two: the dense feature decides thing or
stuff, the crop names the thing) and classifies it against its *own* text embeddings of the
vocabulary: ``softmax(logit_scale * cos)`` (:mod:`densevlm.regions.similarity`). A region is
kept when its top probability exceeds the threshold (0.3); whether it is a thing or stuff is
decided by the vocabulary section of its top class -- membership, not an index cut-off (the
reference code's cut-off is off by one).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from densevlm.errors import DenseVLMError
from densevlm.regions import similarity
from densevlm.regions.pooling import crop_boxes, roi_pool

__all__ = ["RetrievalConfig", "Retrieval", "RetrievalStats", "teacher_region_features", "classify_regions", "part_blobs",
           "classify_parts", "FEATURE_KINDS"]

FEATURE_KINDS = ("crop", "dense", "mean", "split")


@dataclass
class RetrievalConfig:
    """How the teacher labels regions.

    Attributes:
        features: ``dense`` (RoI feature of the teacher's dense map, the paper's choice and the
            default), ``crop`` (global embedding of each box's crop), ``mean`` (average of
            both logits) or ``split`` (the dense verdict decides kept and thing/stuff and gives
            stuff regions their distribution; thing regions take the crop's logits, which the
            decoupled loss reads over thing classes only).
        logit_scale: multiplier of the cosines before the softmax (the inverse temperature);
            None = the teacher's learned one (100 for real CLIPs; the reference code
            hard-codes 100). The command line calls it ``--logit-scale`` or ``--tau``.
        threshold: keep a region when its top probability is above this.
        context: enlarge crop boxes by this factor about their centre.
        top_k: candidates reported per region.
    """

    features: str = "dense"
    logit_scale: Optional[float] = None
    threshold: float = 0.3
    context: float = 1.0
    top_k: int = 5

    def check(self) -> None:
        if self.features not in FEATURE_KINDS:
            raise DenseVLMError(f"retrieval features '{self.features}': choose {', '.join(FEATURE_KINDS)}")
        if not 0.0 <= self.threshold < 1.0:
            raise DenseVLMError(f"confidence threshold {self.threshold} must be in [0, 1)")
        if self.logit_scale is not None and self.logit_scale <= 0:
            raise DenseVLMError(f"logit scale {self.logit_scale} must be positive")


@dataclass
class Retrieval:
    """The teacher's verdict on N regions.

    Attributes:
        logits: ``[N, K]`` ``logit_scale * cos(region, class)``.
        probs: ``[N, K]`` softmax of ``logits``.
        confidence: ``[N]`` top probability.
        label: ``[N]`` top class index.
        is_thing: ``[N]`` bool, the top class is in the vocabulary's things section.
        kept: ``[N]`` bool, ``confidence > threshold``.
    """

    logits: torch.Tensor
    probs: torch.Tensor
    confidence: torch.Tensor
    label: torch.Tensor
    is_thing: torch.Tensor
    kept: torch.Tensor

    def __len__(self) -> int:
        return self.logits.shape[0]

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return (self.logits, self.probs, self.confidence, self.label, self.is_thing, self.kept)

    def select(self, index: torch.Tensor) -> "Retrieval":
        """The regions at ``index`` (a bool mask or integer indices)."""
        return Retrieval(*(t[index] for t in self._fields()))

    def cpu(self) -> "Retrieval":
        """A detached copy on the CPU (what the teacher cache keeps)."""
        return Retrieval(*(t.detach().cpu() for t in self._fields()))

    @staticmethod
    def cat(parts: Sequence["Retrieval"]) -> "Retrieval":
        """All regions of ``parts``, in order."""
        columns = zip(*(p._fields() for p in parts))
        return Retrieval(*(torch.cat(list(column)) for column in columns))


def teacher_region_features(
    teacher,
    images: torch.Tensor,
    boxes: Sequence[torch.Tensor],
    kind: str,
    context: float = 1.0,
    dense_map: Optional[torch.Tensor] = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Region features of a frozen teacher.

    Args:
        teacher: a :class:`~densevlm.model.DenseModel`.
        images: ``[B, 3, H, W]`` inputs prepared for the teacher.
        boxes: B tensors ``[N_i, 4]``, XYXY input pixels.
        kind: ``crop``, ``dense``, or ``mean`` / ``split`` (both, dense first).
        dense_map: ``teacher.encode_dense(images)`` when the caller already has it.

    Returns:
        ``[sum N_i, C]`` unit-norm features (a pair for ``mean`` and ``split``).
    """
    dense = crops = None
    if kind != "crop":
        if dense_map is None:
            dense_map = teacher.encode_dense(images)
        dense = roi_pool(dense_map, boxes, teacher.patch_size)
    if kind != "dense":
        side = teacher.image_size
        cut = [crop_boxes(images[i], b, side, context) for i, b in enumerate(boxes) if b.shape[0]]
        crops = teacher.encode_image(torch.cat(cut)) if cut else images.new_zeros(0, teacher.embed_dim)
    if kind in ("mean", "split"):
        return dense, crops
    return dense if kind == "dense" else crops


def classify_regions(
    features: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    text: torch.Tensor,
    class_is_thing: torch.Tensor,
    logit_scale: float,
    threshold: float,
    kind: str = "mean",
) -> Retrieval:
    """Classify region features against class embeddings.

    Args:
        features: ``[N, C]`` unit-norm region features, or a (dense, crop) pair.
        text: ``[K, C]`` unit-norm class embeddings of the same model.
        class_is_thing: ``[K]`` bool.
        logit_scale: multiplier of the cosine similarities (:func:`~densevlm.regions.similarity.logits`).
        kind: the :data:`FEATURE_KINDS` entry that produced ``features``. For a pair, ``mean``
            averages the two logits; ``split`` lets the dense logits decide confidence, kept and
            thing/stuff, and gives thing regions the crop's logits and best thing class.
    """
    if not isinstance(features, tuple):
        logits = similarity.logits(features.float(), text, logit_scale)
        probs = similarity.probabilities(logits)
        confidence, label = probs.max(dim=-1)
        is_thing = similarity.is_thing(label, class_is_thing)
        return Retrieval(logits, probs, confidence, label, is_thing, confidence > threshold)
    if kind == "mean":  # the logits are linear in the feature: average the features
        mean = 0.5 * (features[0].float() + features[1].float())
        return classify_regions(mean, text, class_is_thing, logit_scale, threshold)
    if kind != "split":
        raise DenseVLMError(f"a (dense, crop) feature pair needs kind mean or split, not '{kind}'")
    dense = similarity.logits(features[0].float(), text, logit_scale)
    crop = similarity.logits(features[1].float(), text, logit_scale)
    confidence, label = similarity.probabilities(dense).max(dim=-1)
    is_thing = similarity.is_thing(label, class_is_thing)
    logits = torch.where(is_thing[:, None], crop, dense)
    label = torch.where(is_thing, similarity.restrict(crop, class_is_thing).argmax(dim=-1), label)
    return Retrieval(logits, similarity.probabilities(logits), confidence, label, is_thing, confidence > threshold)


def part_blobs(
    dense: torch.Tensor,
    text: torch.Tensor,
    class_is_thing: torch.Tensor,
    valid: Sequence[tuple[int, int]],
    max_parts: int,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The teacher's part blobs: 4-connected tokens whose top class is a thing.

    A teacher's dense map names single tokens far better than it names boxes that mix a part
    with its surroundings, so its token verdicts can propose object-shaped regions: a box
    around each blob, described by the mean of the blob's own tokens (mask pooling).

    Args:
        dense: ``[B, C, h, w]`` unit-norm token features.
        text: ``[K, C]`` unit-norm class embeddings of the same model.
        class_is_thing: ``[K]`` bool, vocabulary section membership.
        valid: per image, ``(rows, cols)`` of tokens that cover content (the rest is padding).
        max_parts: at most this many blobs per image, largest first.

    Returns:
        Per image ``(boxes, features)``: ``[N_i, 4]`` XYXY boxes in token units (multiply by
        the patch size for input pixels) and ``[N_i, C]`` unit-norm blob features.
    """
    from scipy import ndimage

    top = similarity.cosine(dense.float(), text.float().to(dense.device), dim=1).argmax(dim=1)
    out = []
    for i, (rows, cols) in enumerate(valid):
        mask = similarity.is_thing(top[i, :rows, :cols], class_is_thing).cpu().numpy()
        labels, n = ndimage.label(mask)
        found = []
        for blob in range(1, n + 1):
            ys, xs = (labels == blob).nonzero()
            found.append((len(ys), blob, ys, xs))
        found.sort(key=lambda f: (-f[0], f[1]))
        boxes, feats = [], []
        for _, _, ys, xs in found[:max_parts]:
            boxes.append([float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1])
            tokens = dense[i, :, torch.as_tensor(ys), torch.as_tensor(xs)]
            feats.append(F.normalize(tokens.float().mean(dim=1), dim=0))
        c = dense.shape[1]
        out.append((torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    torch.stack(feats) if feats else dense.new_zeros(0, c).float()))
    return out


def classify_parts(features: torch.Tensor, text: torch.Tensor, class_is_thing: torch.Tensor,
                   logit_scale: float) -> Retrieval:
    """Targets for part blobs: thing regions by construction, named by their best thing class.

    Args:
        features: ``[N, C]`` unit-norm blob features (:func:`part_blobs`).
        logit_scale: multiplier of the cosine similarities.
    """
    logits = similarity.logits(features.float(), text, logit_scale)
    probs = similarity.probabilities(logits)
    confidence, label = similarity.probabilities(logits, classes=class_is_thing).max(dim=-1)
    n = logits.shape[0]
    ones = torch.ones(n, dtype=torch.bool, device=logits.device)
    return Retrieval(logits, probs, confidence, label, ones, ones.clone())


@dataclass
class RetrievalStats:
    """Running statistics of the teacher's retrieval (kept share, thing share, top categories)."""

    names: Sequence[str]
    total: int = 0
    kept: int = 0
    things: int = 0
    categories: Counter = field(default_factory=Counter)

    def update(self, r: Retrieval) -> dict[str, float]:
        """Add a batch; returns the batch's own kept and thing fractions."""
        n, k = len(r), int(r.kept.sum())
        t = int((r.kept & r.is_thing).sum())
        self.total += n
        self.kept += k
        self.things += t
        self.categories.update(self.names[i] for i in r.label[r.kept].tolist())
        return {"kept_frac": k / n if n else 0.0, "thing_frac": t / k if k else 0.0}

    def count(self, kept: bool, thing: bool, label: str) -> None:
        """Add one region already classified (e.g. read back from a candidates file)."""
        self.total += 1
        if kept:
            self.kept += 1
            self.things += int(thing)
            self.categories[label] += 1

    def summary(self, top: int = 8) -> dict:
        return {
            "regions": self.total,
            "kept_frac": self.kept / self.total if self.total else 0.0,
            "thing_frac": self.things / self.kept if self.kept else 0.0,
            "top_categories": [[name, count] for name, count in self.categories.most_common(top)],
        }
