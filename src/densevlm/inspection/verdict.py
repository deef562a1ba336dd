"""Verdicts per image (OK / UNSURE / NG, with the defects found) and ``densevlm.inspect``.

    >>> op = OperatingPoint.load("op.json")          # made by `densevlm calibrate`
    >>> for v in densevlm.inspect(model, ["part1.png", "part2.png"], op):
    ...     print(v.file, v.verdict, [(d.name, round(d.score, 2)) for d in v.defects])

A defect is listed when its score reaches the lowest threshold in use (the UNSURE threshold when
the operating point has a band, else the NG one); the image's verdict comes from its NG score,
the largest defect score (see :mod:`densevlm.inspection.scores`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from PIL import Image

from densevlm.inspection.operating_point import OperatingPoint
from densevlm.inspection.scores import ImageAnalysis, analyse_images, readable_images
from densevlm.vocab import Vocabulary, load_vocabulary

__all__ = ["Defect", "Verdict", "inspect", "verdict_of", "write_verdicts", "CSV_FIELDS"]

CSV_FIELDS = ("image", "verdict", "score", "defects", "reason", "overlay")


@dataclass(frozen=True)
class Defect:
    """A defect found in an image: score in [0, 1], box XYXY and area in original pixels."""

    name: str
    score: float
    box: tuple[float, float, float, float]
    area: int


@dataclass
class Verdict:
    """One image's verdict.

    Attributes:
        file: the image file (None for an in-memory image).
        verdict: ``OK``, ``UNSURE``, ``NG``, or ``ERROR`` (unreadable image; see ``reason``).
        score: the NG score (largest defect score).
        defects: defects at or above the lowest threshold, highest score first.
        analysis: the scores and maps behind the verdict (None for ERROR).
        overlay: where its overlay was written, relative to the verdicts folder ("" for none).
    """

    file: Optional[str]
    verdict: str
    score: float = float("nan")
    defects: list[Defect] = field(default_factory=list)
    reason: str = ""
    analysis: Optional[ImageAnalysis] = field(default=None, repr=False)
    overlay: str = ""

    def csv_row(self) -> dict[str, str]:
        defects = "; ".join(
            f"{d.name} {d.score:.3f} [{d.box[0]:.0f},{d.box[1]:.0f},{d.box[2]:.0f},{d.box[3]:.0f}] {d.area}px"
            for d in self.defects)
        score = "" if self.verdict == "ERROR" else f"{self.score:.4f}"
        return {"image": self.file or "", "verdict": self.verdict, "score": score, "defects": defects,
                "reason": self.reason, "overlay": self.overlay}


def verdict_of(analysis: ImageAnalysis, op: OperatingPoint, defects: Sequence[str], file: Optional[str] = None) -> Verdict:
    """The verdict for one analysed image at operating point ``op``."""
    floor = op.unsure_threshold if op.unsure_threshold is not None else op.ng_threshold
    found = [
        Defect(name, float(s), tuple(float(v) for v in box), int(area))
        for name, s, box, area in zip(defects, analysis.defect_scores, analysis.defect_boxes, analysis.defect_areas)
        if s >= floor
    ]
    found.sort(key=lambda d: -d.score)
    return Verdict(file, op.verdict(analysis.score), analysis.score, found, analysis=analysis)


BLANK_STDDEV = 2.0
"""Grey levels (0-255) of luma standard deviation, over the image shrunk to 16 x 16 (box means,
which average sensor noise away), below which a frame is blank: one flat colour."""


def _blank(image: Image.Image) -> bool:
    """True for a frame of one flat colour, sensor noise aside (a covered lens, a dead light, a black
    or white frame)."""
    from PIL import ImageStat

    small = image.convert("L").resize((16, 16), Image.BOX)
    return ImageStat.Stat(small).stddev[0] < BLANK_STDDEV


def inspect(model: Any, images: Any, operating_point: OperatingPoint | str | Path,
            vocab: Vocabulary | str | Path | None = None, batch_size: int = 8) -> list[Verdict]:
    """OK / UNSURE / NG for each image at a calibrated operating point.

    Args:
        model: the :class:`~densevlm.model.DenseModel` the operating point was calibrated for.
        images: an image file or PIL image, or a list of them.
        operating_point: an :class:`OperatingPoint` or its JSON file.
        vocab: the vocabulary (default: the operating point's own).

    Returns:
        One :class:`Verdict` per image, in order; unreadable files and images too small to
        inspect get verdict ``ERROR``, and a blank frame (one flat colour: :data:`BLANK_STDDEV`)
        is ``UNSURE`` with a reason, whatever its score.

    Raises:
        DenseVLMError: the operating point was made for another model or vocabulary.
    """
    op = operating_point if isinstance(operating_point, OperatingPoint) else OperatingPoint.load(operating_point)
    if vocab is None:
        vocab = op.vocab
    elif not isinstance(vocab, Vocabulary):
        vocab = load_vocabulary(vocab)
    op.check(model.backbone.weights_sha256(), vocab)
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    errors: dict[int, str] = {}
    cfg = op.score.resolved(model)
    blank: list[bool] = []

    def opened() -> Iterator[Image.Image]:
        for image in readable_images(items, cfg.size, errors):
            blank.append(_blank(image))
            yield image

    good = iter(list(analyse_images(model, opened(), vocab, cfg, batch_size)))
    flat = iter(blank)
    out = []
    for i, item in enumerate(items):
        file = None if isinstance(item, Image.Image) else str(item)
        if i in errors:
            out.append(Verdict(file, "ERROR", reason=errors[i]))
            continue
        verdict = verdict_of(next(good), op, vocab.defects, file)
        if next(flat):  # nothing to judge: neither a pass nor a reject
            verdict.verdict = "UNSURE"
            verdict.reason = "blank frame: one flat colour (covered lens, lighting or camera fault?)"
        out.append(verdict)
    return out


def write_verdicts(path: str | Path, verdicts: Sequence[Verdict | dict[str, str]]) -> Path:
    """``verdicts.csv``: image, verdict, score, defects (``name score [x1,y1,x2,y2] areapx; ...``), reason,
    overlay; from verdicts or their :meth:`Verdict.csv_row` rows."""
    from densevlm.fileio import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for v in verdicts:
        writer.writerow(v if isinstance(v, dict) else v.csv_row())
    return atomic_write_text(path, buf.getvalue())
