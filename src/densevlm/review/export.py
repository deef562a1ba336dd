"""Export reviewed regions: COCO instances, Label Studio pre-annotations, or one JSON line per region.

Verdicts are resolved over reviewers as in :mod:`densevlm.review.resolve`
(majority of current verdicts, ties to the most recent). Files are written atomically.

* ``coco``: images with at least one reviewed region; one annotation per accepted or corrected
  region (``bbox`` XYWH pixels, ``segmentation`` compressed RLE when the region has a mask,
  ``category_id``); every class as a category with ``isthing`` 1/0.
* ``labelstudio``: one task per image (``data.image`` = prefix + file name relative to the
  images directory) with up to two predictions of ``rectanglelabels`` in percent of the image
  size: the experts' labels (model_version ``expert-review``) and the teacher's top-1 for
  regions not decided yet (unreviewed or unsure). Rejected regions are left out. The project's
  labeling config is :func:`labelstudio_config`.
* ``jsonl``: every region, reviewed or not, with the teacher's top-1 and the final outcome.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from densevlm.errors import DenseVLMError
from densevlm.regions.rle import rle_area
from densevlm.review.resolve import resolved_regions
from densevlm.review.store import ReviewStore

__all__ = [
    "FORMATS",
    "LABELSTUDIO_PREFIX",
    "coco_dataset",
    "labelstudio_tasks",
    "labelstudio_config",
    "verdict_records",
    "export_reviews",
]

logger = logging.getLogger(__name__)

FORMATS = ("coco", "labelstudio", "jsonl")
LABELSTUDIO_PREFIX = "/data/local-files/?d="
_LABELED = ("accepted", "corrected")


def _iso(seconds: Optional[float]) -> Optional[str]:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds")


def coco_dataset(db_path: str | Path) -> dict:
    """COCO instances: accepted/corrected regions as annotations (bbox XYWH pixels, RLE segmentation if masked)."""
    with ReviewStore(db_path) as store:
        regions = resolved_regions(store)
        classes = store.classes()
    class_ids = {c["name"]: c["id"] for c in classes}
    images: dict[int, dict] = {}
    annotations = []
    for r in regions:
        if r["image_id"] not in images:
            images[r["image_id"]] = {
                "id": r["image_id"],
                "file_name": r["image"],
                "width": r["width"],
                "height": r["height"],
                "path": r["image_path"],
            }
        if r["status"] not in _LABELED:
            continue
        x1, y1, x2, y2 = r["box"]
        ann = {
            "id": r["id"],
            "image_id": r["image_id"],
            "category_id": class_ids[r["category"]],
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": float((x2 - x1) * (y2 - y1)),
            "iscrowd": 0,
            "region_id": r["key"],
            "status": r["status"],
            "teacher_top1": r["teacher_top1"],
            "teacher_confidence": r["confidence"],
        }
        if r["mask"] is not None:
            ann["segmentation"] = {"size": list(r["mask"]["size"]), "counts": r["mask"]["counts"]}
            ann["area"] = float(rle_area(r["mask"]))
        annotations.append(ann)
    return {
        "info": {
            "description": "densevlm expert review",
            "date_created": _iso(datetime.now(tz=timezone.utc).timestamp()),
        },
        "images": sorted(images.values(), key=lambda im: im["id"]),
        "annotations": annotations,
        "categories": [
            {
                "id": c["id"],
                "name": c["name"],
                "supercategory": "thing" if c["thing"] else "stuff",
                "isthing": 1 if c["thing"] else 0,
                "synonyms": c["synonyms"],
            }
            for c in classes
        ],
    }


def _rectangle(r: dict, label: str, score: float) -> dict:
    x1, y1, x2, y2 = r["box"]
    w, h = r["width"], r["height"]
    return {
        "id": f"r{r['id']}",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "score": score,
        "value": {
            "x": 100.0 * x1 / w,
            "y": 100.0 * y1 / h,
            "width": 100.0 * (x2 - x1) / w,
            "height": 100.0 * (y2 - y1) / h,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }


def labelstudio_tasks(db_path: str | Path, image_prefix: str = LABELSTUDIO_PREFIX) -> list[dict]:
    """Label Studio tasks with ``rectanglelabels`` predictions in percent of the image width/height."""
    with ReviewStore(db_path) as store:
        regions = resolved_regions(store, include_unreviewed=True)
    tasks: dict[int, dict] = {}
    for r in regions:
        task = tasks.get(r["image_id"])
        if task is None:
            task = {
                "data": {"image": image_prefix + quote(r["image"]), "densevlm_image": r["image"]},
                "expert": [],
                "teacher": [],
                "teacher_name": r["teacher"] or "teacher",
            }
            tasks[r["image_id"]] = task
        if r["status"] in _LABELED:
            task["expert"].append(_rectangle(r, r["category"], 1.0))
        elif r["status"] in ("unreviewed", "unsure"):
            task["teacher"].append(_rectangle(r, r["teacher_top1"], r["confidence"]))
    out = []
    for image_id in sorted(tasks):
        task = tasks[image_id]
        predictions = []
        if task["expert"]:
            predictions.append({"model_version": "expert-review", "score": 1.0, "result": task["expert"]})
        if task["teacher"]:
            mean = sum(item["score"] for item in task["teacher"]) / len(task["teacher"])
            predictions.append({"model_version": f"teacher:{task['teacher_name']}", "score": mean, "result": task["teacher"]})
        out.append({"data": task["data"], "predictions": predictions})
    return out


def labelstudio_config(db_path: str | Path) -> str:
    """A Label Studio labeling config whose names match :func:`labelstudio_tasks` (every class as a label)."""
    with ReviewStore(db_path) as store:
        classes = store.classes()
    labels = "\n".join(f"    <Label value={quoteattr(c['name'])}/>" for c in classes)
    return (
        "<View>\n"
        '  <Image name="image" value="$image"/>\n'
        '  <RectangleLabels name="label" toName="image">\n'
        f"{labels}\n"
        "  </RectangleLabels>\n"
        "</View>\n"
    )


def verdict_records(db_path: str | Path) -> list[dict]:
    """One record per region: box XYXY pixels, mask, teacher top-1 and confidence, final outcome, reviewers, time."""
    with ReviewStore(db_path) as store:
        regions = resolved_regions(store, include_unreviewed=True)
    records = []
    for r in regions:
        final = r["category"] if r["status"] in _LABELED else r["status"]
        records.append(
            {
                "id": r["key"],
                "image": r["image"],
                "image_path": r["image_path"],
                "width": r["width"],
                "height": r["height"],
                "box": r["box"],
                "mask": r["mask"],
                "teacher": r["teacher"],
                "teacher_top1": r["teacher_top1"],
                "teacher_confidence": r["confidence"],
                "final": None if final == "unreviewed" else final,
                "status": r["status"],
                "thing": r["thing"],
                "reviewers": r["reviewers"],
                "votes": r["votes"],
                "time": _iso(r["reviewed_at"]),
            }
        )
    return records


def export_reviews(
    db_path: str | Path, fmt: str, out_path: str | Path, image_prefix: str = LABELSTUDIO_PREFIX
) -> Path:
    """Write the export ``fmt`` (one of FORMATS) to ``out_path`` atomically; returns the path."""
    from densevlm.fileio import atomic_write_json, atomic_write_text

    out = Path(out_path)
    if fmt not in FORMATS:
        raise DenseVLMError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}")
    if out.is_dir():
        raise DenseVLMError(f"{out}: is a directory; give a file name for the export")
    if fmt == "coco":
        data = coco_dataset(db_path)
        atomic_write_json(out, data)
        logger.info("wrote %d annotations on %d images to %s", len(data["annotations"]), len(data["images"]), out)
    elif fmt == "labelstudio":
        tasks = labelstudio_tasks(db_path, image_prefix)
        atomic_write_json(out, tasks)
        logger.info("wrote %d Label Studio tasks to %s", len(tasks), out)
    else:
        records = verdict_records(db_path)
        text = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
        atomic_write_text(out, text)
        logger.info("wrote %d regions to %s", len(records), out)
    return out
