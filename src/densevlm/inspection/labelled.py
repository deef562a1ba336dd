"""Images labelled OK / NG (and which defects they hold), for calibration and evaluation.

Two sources, both read through the vocabulary's ``[defects]``:

* a panoptic dataset (a ``densevlm synth`` folder, ``coco:``/``ade:``/``json=...`` specs): an
  image is NG when one of its segments has a category that maps to a defect class (categories
  map to classes as ``densevlm eval`` maps them);
* a review database (``review.sqlite``): an image is labelled when it has at least one resolved
  region; it is NG when an accepted or corrected region was given a defect class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densevlm.errors import DenseVLMError
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["LabelledImage", "load_labelled", "is_review_database"]

_DB_SUFFIXES = (".sqlite", ".db", ".sqlite3")


@dataclass(frozen=True)
class LabelledImage:
    """One labelled image.

    Attributes:
        path: the image file.
        holds: ``[D]`` bool, the defects (vocabulary ``[defects]`` order) the image holds.
        index: position in the panoptic dataset (None for a review database).
    """

    path: Path
    holds: np.ndarray
    index: int | None = None

    @property
    def ng(self) -> bool:
        return bool(self.holds.any())


def is_review_database(spec: str | Path) -> bool:
    return str(spec).endswith(_DB_SUFFIXES)


def load_labelled(spec: str | Path, vocab: Vocabulary, limit: int | None = None) -> list[LabelledImage]:
    """Labelled images of a panoptic dataset or review database (see the module docstring).

    Raises:
        DenseVLMError: the vocabulary has no ``[defects]``, or the data cannot be read.
    """
    if not vocab.defects:
        raise DenseVLMError("the vocabulary has no [defects] section; list the things that make an item NG under [defects]")
    if is_review_database(spec):
        images = _from_review(Path(spec), vocab)
    else:
        images = _from_panoptic(spec, vocab, limit)
    if limit is not None:
        images = images[:limit]
    if not images:
        raise DenseVLMError(f"{spec}: no labelled images")
    return images


def _from_panoptic(spec: str | Path, vocab: Vocabulary, limit: int | None) -> list[LabelledImage]:
    from densevlm.data.panoptic import PanopticDataset
    from densevlm.evaluation.protocol import map_categories

    dataset = PanopticDataset(spec, limit=limit)
    mapping = map_categories(dataset, vocab)
    column = {k: j for j, k in enumerate(vocab.defect_indices)}
    out = []
    for i, (_, ann) in enumerate(dataset.records):
        holds = np.zeros(len(column), dtype=bool)
        for seg in ann.get("segments_info", []):
            k = mapping[dataset.category_index[seg["category_id"]]] if seg.get("category_id") in dataset.category_index else None
            if k in column:
                holds[column[k]] = True
        out.append(LabelledImage(dataset.image_path(i), holds, i))
    return out


def _from_review(path: Path, vocab: Vocabulary) -> list[LabelledImage]:
    from densevlm.review.reviewed import load_reviewed

    if not path.is_file():
        raise DenseVLMError(f"{path}: review database not found")
    column = {vocab.names[k].lower(): j for j, k in enumerate(vocab.defect_indices)}
    for j, k in enumerate(vocab.defect_indices):
        for name in vocab.synonyms[k]:
            column[name.lower()] = j
    holds: dict[str, np.ndarray] = {}
    for region in load_reviewed(path).regions:
        row = holds.setdefault(region.image_path, np.zeros(len(vocab.defect_indices), dtype=bool))
        if region.status in ("accepted", "corrected") and region.category and region.category.lower() in column:
            row[column[region.category.lower()]] = True
    return [LabelledImage(Path(p), h) for p, h in sorted(holds.items())]
