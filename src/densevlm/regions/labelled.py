"""The one record for a labelled region: a box (and maybe a mask) on an image, with its category.

Whoever labels a region -- an expert in the review page, the ground truth of a held-out set --
the result is a :class:`LabelledRegion`. Geometry is in *original* image pixels (convert with
:class:`densevlm.imaging.Letterbox` before pooling on a model input). The category is a name,
not a vocabulary index: a name means the same under every vocabulary, and consumers look it up
in theirs (``vocab.index(region.category)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["LabelledRegion"]


@dataclass(frozen=True)
class LabelledRegion:
    """A labelled box on an image, with its optional mask and where the label came from.

    The first seven attributes say what the region is; the rest where its label came from
    (their defaults mean "not reviewed").

    Attributes:
        image_path: the image file (absolute when read from a review database).
        box: ``(x1, y1, x2, y2)`` in original image pixels, continuous (pixel ``i`` covers
            ``[i, i + 1)``).
        category: class name (a synonym of a vocabulary class), or None when the region has no
            category (an expert rejected it or was unsure).
        thing: whether ``category`` is a thing (countable object) rather than stuff; None when
            there is no category or it is not known.
        mask_rle: the region's mask as a COCO compressed RLE at the original size,
            ``{"size": [height, width], "counts": str}``, or None (box only).
        width, height: the original image size in pixels, or None when not known.
        status: the resolved expert verdict -- ``accepted`` (the teacher's top-1 is right),
            ``corrected`` (``category`` is the expert's), ``rejected`` (not a region) or
            ``unsure`` -- or None for labels that were not reviewed (e.g. ground truth).
        region_id: a stable id of the region (the review database key), or ``""``.
        teacher_top1, teacher_confidence: the teacher's top-1 class name and its probability
            when the region came from retrieval, else None.
        reviewer: who gave the deciding verdict (``""`` if none).
        reviewers: everyone whose current verdict agrees with the deciding one.
        reviewed_at: time of the deciding verdict, Unix seconds (0 if none).
    """

    image_path: str
    box: tuple[float, float, float, float]
    category: Optional[str]
    thing: Optional[bool] = None
    mask_rle: Optional[dict[str, Any]] = None
    width: Optional[int] = None
    height: Optional[int] = None
    status: Optional[str] = None
    region_id: str = ""
    teacher_top1: Optional[str] = None
    teacher_confidence: Optional[float] = None
    reviewer: str = ""
    reviewers: tuple[str, ...] = ()
    reviewed_at: float = 0.0

    @property
    def rejected(self) -> bool:
        """The expert said this is not a region (training drops it)."""
        return self.status == "rejected"
