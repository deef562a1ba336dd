"""A simulated expert: ground-truth regions of chosen classes, labelled through the review store.

What ``densevlm demo``'s review stage and ``benchmarks/review_sim.py --plant-words`` put in the
place of an expert at the review page. The expert draws the box of each of the first ``shots``
ground-truth segments of every wanted class in a labelled pool (image order, the pool's
``panoptic.json`` segment order) and types its class; a class the database does not know yet
becomes a new class, as a typed name does on the review page. Every verdict goes through
:func:`densevlm.review.session.add_verdict`, so the database is the one a real review would leave.

Boxes are XYXY in original image pixels (the segment's COCO ``bbox`` ``[x, y, w, h]``). The
ground truth must be of a pool the evaluation never sees (the unlabeled pool, not the held-out set).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from densevlm.data.panoptic import PanopticDataset
from densevlm.errors import DenseVLMError
from densevlm.imaging import image_size
from densevlm.regions.labelled import LabelledRegion
from densevlm.review import session
from densevlm.review.importing import import_candidates
from densevlm.review.store import ReviewStore
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["EXPERT", "expert_examples", "expert_database"]

EXPERT = "simulated-expert"


def expert_examples(pool: str | Path, classes: Sequence[str], shots: int) -> list[LabelledRegion]:
    """The first ``shots`` ground-truth segments of each of ``classes`` in ``pool``, as the expert labels them.

    Args:
        pool: a labelled panoptic dataset (a ``synth`` world folder or a panoptic JSON).
        classes: category names of the pool (e.g. the plant words).
        shots: regions per class (> 0).

    Returns:
        ``len(classes) * shots`` regions in image order, each with its image path, box, class,
        thing flag and image size.

    Raises:
        DenseVLMError: ``shots`` is not positive, a class is not a category of the pool, or the
            pool holds fewer than ``shots`` segments of a class.
    """
    if shots <= 0:
        raise DenseVLMError(f"shots must be positive, got {shots}")
    truth = PanopticDataset(pool)
    missing = [c for c in classes if c not in truth.names]
    if missing:
        raise DenseVLMError(f"{truth.json_path}: no category {', '.join(repr(c) for c in missing)}")
    wanted = {c: 0 for c in classes}
    out = []
    for i in range(len(truth)):
        record = truth.records[i][1]
        for s in record.get("segments_info", []):
            k = truth.category_index[s["category_id"]]
            name = truth.names[k]
            if name in wanted and wanted[name] < shots:
                x, y, w, h = s["bbox"]
                width, height = image_size(truth.image_path(i))
                out.append(LabelledRegion(str(truth.image_path(i)), (x, y, x + w, y + h), name,
                                          thing=truth.is_thing[k], width=width, height=height))
                wanted[name] += 1
    short = [f"{n} ({k})" for n, k in wanted.items() if k < shots]
    if short:
        raise DenseVLMError(f"{truth.json_path}: fewer than {shots} segments of {', '.join(short)}; use a larger pool")
    return out


def expert_database(examples: Sequence[LabelledRegion], vocab: Vocabulary, images: str | Path, db: str | Path,
                    defects: Sequence[str] = ()) -> Path:
    """A new review database holding the expert's regions (``examples``) and the expert's verdicts.

    The regions are imported as a candidates file (written beside ``db``, same stem,
    ``.jsonl``) whose header vocabulary is ``vocab`` (what the VLM was asked about). The expert
    drew the boxes, so no model proposed a class for them: each region's one candidate is
    ``vocab``'s first class (probability 1), and the expert's verdict corrects it (or accepts it,
    when that is the truth). A class of ``examples`` that ``vocab`` lacks is added by the expert's
    first verdict on it (a new class, thing or stuff as the region says); a new thing class named
    in ``defects`` is added as a defect first, as the review page's "a defect" button adds it.

    Args:
        examples: labelled regions with a category and the image size (:func:`expert_examples`).
        vocab: the database's starting vocabulary.
        images: the folder the regions' images are in (their paths are taken relative to it).
        db: the database to create.
        defects: names that make an item NG (e.g. the world's ``[defects]``); only those that are
            new classes of ``examples`` are added (``vocab``'s own defects are in its header).

    Raises:
        DenseVLMError: ``db`` or its candidates file exists already, a region has no category or
            no image size, or its image is not in ``images``.
    """
    db, images = Path(db), Path(images).resolve()
    jsonl = db.with_suffix(".jsonl")
    for path in (db, jsonl):
        if path.exists():
            raise DenseVLMError(f"{path}: exists already (the simulated expert starts a new review database)")
    lines = [{"kind": "header", "version": 1, "teacher": EXPERT, "images": str(images),
              "vocabulary": vocab.sections(), "tau": 1.0, "threshold": 0.0, "region_source": "expert"}]
    placeholder = {"category": vocab.names[0], "prob": 1.0, "thing": bool(vocab.is_thing[0])}
    for j, e in enumerate(examples):
        if e.category is None or e.width is None or e.height is None:
            raise DenseVLMError(f"{e.image_path}: an expert region needs a category and the image size")
        path = Path(e.image_path).resolve()
        if images not in path.parents:
            raise DenseVLMError(f"{e.image_path}: not in the images folder {images}")
        name = path.relative_to(images).as_posix()
        lines.append({"kind": "region", "id": f"{name}#expert{j}", "image": name, "width": e.width,
                      "height": e.height, "box": [float(v) for v in e.box], "mask": None, "candidates": [placeholder],
                      "confidence": 1.0, "thing": bool(e.thing), "kept": True})
    db.parent.mkdir(parents=True, exist_ok=True)
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    import_candidates(db, jsonl)
    wanted = set(defects) - set(vocab.names)
    new_defects = sorted({e.category for e in examples if e.category in wanted and e.thing is not False})
    with ReviewStore(db) as store:
        for name in new_defects:
            session.add_class(store, name, True, EXPERT, defect=True)
        ids = [rid for (rid,) in store.conn.execute("SELECT id FROM regions ORDER BY id")]
        for region_id, e in zip(ids, examples):
            session.add_verdict(store, region_id, EXPERT, "category", category=e.category, thing=e.thing)
    return db
