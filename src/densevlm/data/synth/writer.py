"""Write the embedded world to disk in COCO panoptic format, plus captions and a vocabulary.

Layout of ``OUT``::

    images/000000.png ...      RGB scenes
    panoptic/000000.png ...    segment ids as R + 256 G + 256^2 B
    panoptic.json              images, annotations[].segments_info[], categories[]
    captions.jsonl             {"image": "images/000000.png", "caption": "..."}
    inspection.json            only with --defect-rate / --shift: {"defect_rate", "shift", "defects",
                               "images": [{"file_name", "ng", "defects"}]} (see synth/inspection.py)
    vocab.txt                  the 10 things (4 of them [defects]) and 6 stuff classes in the vocabulary format
                               (with --plant-words: 14 things, the 4 plant words among them, 3 of them defects)

Scene ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so the same seed gives
byte-identical files, and two seeds give disjoint, independent sets.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from densevlm.data.synth.categories import CATEGORIES, PLANT, by_name
from densevlm.data.synth.scene import Scene, make_scene, scene_caption
from densevlm.data.synth.vocabulary import world_vocabulary_text
from densevlm.errors import DenseVLMError

__all__ = ["write_world", "generate_scene", "ids_to_rgb", "GENERATOR_VERSION"]

GENERATOR_VERSION = 1


def ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    """``[H, W]`` segment ids -> ``[H, W, 3]`` uint8 with ``id = R + 256 G + 256^2 B``."""
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


def generate_scene(seed: int, index: int, size: int, plant_words: bool = False,
                   defect_rate: Optional[float] = None, shift: Optional[str] = None) -> Scene:
    """Scene ``index`` of the world with ``seed``: things drawn among the plant words too with
    ``plant_words``, and the inspection flags (see synth/inspection.py)."""
    rng = np.random.default_rng([seed, index])
    if defect_rate is None and shift is None:
        if plant_words:
            from densevlm.data.synth.plant import plant_things

            return make_scene(rng, size=size, choose_things=plant_things)
        return make_scene(rng, size=size)
    from densevlm.data.synth.inspection import inspection_scene, is_ng

    ng = None if defect_rate is None else is_ng(seed, index, defect_rate)
    return inspection_scene(rng, size, ng, shift, plant_words)


def _write_one(job: tuple) -> dict[str, Any]:
    out, seed, index, size, p_stuff, plant_words, defect_rate, shift = job
    scene = generate_scene(seed, index, size, plant_words, defect_rate, shift)
    name = f"{index:06d}.png"
    Image.fromarray(scene.image).save(os.path.join(out, "images", name), optimize=False)
    Image.fromarray(ids_to_rgb(scene.panoptic_ids())).save(os.path.join(out, "panoptic", name), optimize=False)
    caption = scene_caption(np.random.default_rng([seed, index, 1]), scene, p_stuff)
    segments = [
        {"id": s.id, "category_id": by_name(s.category).id, "bbox": s.bbox, "area": s.area, "iscrowd": 0}
        for s in scene.segments
    ]
    return {"index": index, "file_name": name, "segments_info": segments, "caption": caption}


def _jobs(out: Path, n: int, seed: int, size: int, p_stuff: float, start: int, plant_words: bool,
          defect_rate: Optional[float], shift: Optional[str]) -> Iterator[tuple]:
    for i in range(start, start + n):
        yield (str(out), seed, i, size, p_stuff, plant_words, defect_rate, shift)


def write_world(
    out: str | Path,
    n: int,
    seed: int = 0,
    size: int = 64,
    p_stuff: float = 0.15,
    start: int = 0,
    workers: int = 1,
    progress: bool = True,
    patch_size: int = 8,
    plant_words: bool = False,
    defect_rate: Optional[float] = None,
    shift: Optional[str] = None,
) -> Path:
    """Generate ``n`` scenes into ``out`` (see the module docstring for the layout).

    Args:
        n: number of images (> 0).
        seed: world seed; scenes of different seeds are independent.
        size: image side in pixels, a multiple of ``patch_size``.
        p_stuff: probability that a caption names the background (0.15 makes web-like,
            foreground-biased captions).
        start: index of the first scene (file names continue from it).
        workers: processes to render with.
        plant_words: add the four plant words (synth/plant.py), drawn like any thing and never
            named in a caption; without it the files are byte-identical to the reference world.
        defect_rate: share of NG images (at least one defect; the others hold parts only);
            None keeps the reference mix.
        shift: ``lighting``, ``blur``, ``new-surface``, ``new-defect`` or ``camera``: a drifted line.
    """
    from densevlm.data.synth.inspection import check_flags, extra_categories

    check_flags(defect_rate, shift)
    extra = (PLANT if plant_words else ()) + extra_categories(shift)
    if n <= 0:
        raise DenseVLMError(f"--n must be positive, got {n}")
    if size <= 0 or size % patch_size:
        raise DenseVLMError(f"--size {size} is not a positive multiple of the patch size {patch_size}")
    if not 0.0 <= p_stuff <= 1.0:
        raise DenseVLMError(f"--p-stuff {p_stuff} must be in [0, 1]")
    out = Path(out)
    try:
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "panoptic").mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DenseVLMError(f"{out}: cannot write there ({e.strerror})") from None
    from tqdm import tqdm

    jobs = _jobs(out, n, seed, size, p_stuff, start, plant_words, defect_rate, shift)
    bar = tqdm(total=n, desc="synth", unit="img", disable=None if progress else True, leave=False)
    records: list[dict[str, Any]] = []
    if workers > 1:
        # a Pool, not a ProcessPoolExecutor: leaving the block on Ctrl-C terminates the workers at once
        # (the executor waited for every queued scene, and could hang on a worker the signal had hit);
        # the workers ignore SIGINT, so only this process stops and reports it
        with multiprocessing.Pool(workers, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
            for rec in pool.imap(_write_one, jobs, chunksize=64):
                records.append(rec)
                bar.update()
    else:
        for job in jobs:
            records.append(_write_one(job))
            bar.update()
    bar.close()
    images = [{"id": r["index"], "file_name": r["file_name"], "width": size, "height": size} for r in records]
    annotations = [
        {"image_id": r["index"], "file_name": r["file_name"], "segments_info": r["segments_info"]} for r in records
    ]
    categories = [
        {"id": c.id, "name": c.name, "isthing": int(c.isthing), "supercategory": c.supercategory}
        for c in CATEGORIES + extra
    ]
    info = {"description": "densevlm embedded world", "generator_version": GENERATOR_VERSION, "seed": seed,
            "n": n, "start": start, "size": size, "p_stuff": p_stuff}
    if plant_words:
        info["plant_words"] = [c.name for c in PLANT]
    if defect_rate is not None or shift is not None:
        info.update({"defect_rate": defect_rate, "shift": shift})
        _write_ground_truth(out / "inspection.json", records, defect_rate, shift, plant_words)
    panoptic = {"info": info, "images": images, "annotations": annotations, "categories": categories}
    (out / "panoptic.json").write_text(json.dumps(panoptic, sort_keys=True) + "\n", encoding="utf-8")
    with open(out / "captions.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({"image": f"images/{r['file_name']}", "caption": r["caption"]}, sort_keys=True) + "\n")
    (out / "vocab.txt").write_text(world_vocabulary_text(extra), encoding="utf-8")
    return out


def _write_ground_truth(path: Path, records: list[dict[str, Any]], defect_rate: Optional[float],
                        shift: Optional[str], plant_words: bool) -> None:
    """``inspection.json``: per image whether it is NG and which defects it holds."""
    from densevlm.data.synth.inspection import defect_names

    ids = {by_name(name).id: name for name in defect_names(shift, plant_words)}
    images = []
    for r in records:
        held = sorted({ids[s["category_id"]] for s in r["segments_info"] if s["category_id"] in ids})
        images.append({"file_name": r["file_name"], "ng": bool(held), "defects": held})
    doc = {"defect_rate": defect_rate, "shift": shift, "defects": list(defect_names(shift, plant_words)), "images": images,
           "n_ng": sum(im["ng"] for im in images)}
    path.write_text(json.dumps(doc, sort_keys=True) + "\n", encoding="utf-8")
