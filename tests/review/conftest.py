"""A tiny review dataset: a few Pillow-made PNGs and a candidates JSONL in the `densevlm retrieve` format."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from densevlm.review.store import ReviewStore

VOCAB = {"things": [["bolt"], ["scratch", "scuff"], ["nut"]], "stuff": [["conveyor belt"], ["steel plate"]]}
THING = {"bolt": True, "scratch": True, "nut": True, "conveyor belt": False, "steel plate": False}
TABLES = ("classes", "class_names", "images", "regions", "candidates", "verdicts", "imports")


@dataclass
class Dataset:
    root: Path
    images: Path
    candidates: Path
    db: Path
    regions: list[dict]
    masks: dict[str, np.ndarray]


def header(images: Path | str) -> dict:
    return {
        "kind": "header",
        "version": 1,
        "teacher": "tiny-teacher",
        "images": str(images),
        "vocabulary": VOCAB,
        "tau": 14.3,
        "threshold": 0.3,
        "region_source": "grid",
    }


def region(key: str, image: str, size: tuple[int, int], box: list[float], cats: list[tuple[str, float]], mask=None) -> dict:
    width, height = size
    return {
        "kind": "region",
        "id": key,
        "image": image,
        "width": width,
        "height": height,
        "box": box,
        "mask": mask,
        "candidates": [{"category": c, "prob": p, "thing": THING[c]} for c, p in cats],
        "confidence": cats[0][1],
        "thing": THING[cats[0][0]],
        "kept": cats[0][1] >= 0.3,
    }


def encode_mask(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_candidates(path: Path, head: dict, regions: list[dict]) -> Path:
    lines = [json.dumps(head)] + [json.dumps(r) for r in regions]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_dataset(root: Path) -> Dataset:
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (w, h) in {"a.png": (64, 64), "sub/b.png": (64, 64), "c.png": (48, 32)}.items():
        pixels = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / name)
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[10:30, 20:44] = 1
    mask[12:16, 24:28] = 0
    regions = [
        region("a.png#0", "a.png", (64, 64), [4.0, 4.0, 20.0, 20.0], [("bolt", 0.81), ("nut", 0.12)]),
        region("a.png#1", "a.png", (64, 64), [20.0, 10.0, 44.0, 30.0], [("scratch", 0.35), ("bolt", 0.30), ("steel plate", 0.2)], encode_mask(mask)),
        region("a.png#2", "a.png", (64, 64), [0.0, 40.0, 64.0, 64.0], [("conveyor belt", 0.92), ("steel plate", 0.05)]),
        region("sub/b.png#0", "sub/b.png", (64, 64), [10.5, 12.0, 30.0, 40.25], [("nut", 0.22), ("bolt", 0.21), ("scratch", 0.1)]),
        region("sub/b.png#1", "sub/b.png", (64, 64), [32.0, 0.0, 64.0, 16.0], [("steel plate", 0.55), ("conveyor belt", 0.4)]),
        region("c.png#0", "c.png", (48, 32), [2.0, 2.0, 24.0, 30.0], [("bolt", 0.15), ("nut", 0.14)]),
        region("c.png#1", "c.png", (48, 32), [24.0, 0.0, 48.0, 32.0], [("scratch", 0.64), ("nut", 0.2)]),
        region("c.png#2", "c.png", (48, 32), [10.0, 5.0, 20.0, 15.0], [("nut", 0.45), ("bolt", 0.44)]),
    ]
    candidates = write_candidates(root / "candidates.jsonl", header(images), regions)
    return Dataset(root, images, candidates, root / "review.sqlite", regions, {"a.png#1": mask})


def row_counts(db) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        conn.close()


def region_id(store: ReviewStore, key: str) -> int:
    return store.conn.execute("SELECT id FROM regions WHERE key = ?", (key,)).fetchone()[0]


@pytest.fixture
def dataset(tmp_path: Path) -> Dataset:
    return make_dataset(tmp_path)


@pytest.fixture
def imported(dataset: Dataset) -> Dataset:
    from densevlm.review.importing import import_candidates

    import_candidates(dataset.db, dataset.candidates)
    return dataset


@contextmanager
def live_server(db: Path, token: str | None = None) -> Iterator[str]:
    """Run the review app with uvicorn in a background thread on a free localhost port; yields the base URL."""
    from densevlm.review.app import make_server

    server, sock = make_server(db, "127.0.0.1", 0, token)
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the review server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
