"""Files of a segment run: finding input images, naming outputs, writing results and the summary.

Output names: ``NAME`` is the image's path relative to its input root (the folder given, the
folder part of a glob before its first wildcard, or the file's own folder) with ``/`` replaced
by ``__``, extension kept: ``line1/cam2/0001.jpg`` under ``photos/`` gives
``line1__cam2__0001.jpg``. When two inputs would still get the same name (same relative path
under two roots, or ``a/b.png`` next to a file called ``a__b.png``), each of them gets
``~`` and 8 hex digits of a hash of its absolute path appended, so no output is overwritten.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from densevlm.data.images import find_images
from densevlm.errors import DenseVLMError
from densevlm.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from densevlm.imaging import IMAGE_SUFFIXES, encode_png
from densevlm.inference.result import SCHEMA, SegmentResult

__all__ = [
    "InputImage",
    "collect_inputs",
    "output_paths",
    "finished_json",
    "write_outputs",
    "SUMMARY_FIELDS",
    "write_summary",
]

log = logging.getLogger(__name__)

SUMMARY_FIELDS = ("file", "name", "status", "reason", "segments", "top_classes", "seconds")


@dataclass(frozen=True)
class InputImage:
    """One input file: ``path`` as found, ``rel`` (POSIX, relative to its root), output ``name``."""

    path: Path
    rel: str
    name: str


def _name_for(rel: str) -> str:
    return rel.replace("/", "__")


def collect_inputs(inputs: Sequence[str], exclude: Optional[str | Path] = None) -> list[InputImage]:
    """Expand files, folders (recursive) and globs into input images, each listed once.

    Args:
        inputs: as typed on the command line, each resolved by
            :func:`~densevlm.data.images.find_images` (hidden files and folders skipped); a
            folder holding ``panoptic.json`` (a ``densevlm synth`` world) stands for its ``images/``.
            A file named twice (e.g. through a symbolic or hard link) is used once, with a warning.
        exclude: a folder never to descend into (the output folder).

    Raises:
        DenseVLMError: an input that does not exist, a glob that matches nothing, or no images.
    """
    found: list[tuple[Path, str]] = []
    for spec in inputs:
        if (Path(spec) / "panoptic.json").is_file():  # a labelled world: its photos, not its masks
            spec = str(Path(spec) / "images")
        root, files = find_images(spec, exclude=exclude)
        found += [(f, f.relative_to(root).as_posix()) for f in files]
    unique: list[tuple[Path, str]] = []
    seen: dict[Any, Path] = {}
    for path, rel in found:
        try:
            st = path.stat()
            key: Any = (st.st_dev, st.st_ino)  # a symbolic or hard link is the same file
        except OSError:  # a dangling link: reported when it is read
            key = path.resolve()
        if key in seen:
            if path != seen[key]:
                log.warning("%s: the same file as %s; used once", path, seen[key])
            continue
        seen[key] = path
        unique.append((path, rel))
    if not unique:
        raise DenseVLMError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {' '.join(inputs)}")
    groups: dict[str, int] = {}
    for _, rel in unique:
        groups[_name_for(rel).lower()] = groups.get(_name_for(rel).lower(), 0) + 1
    images = []
    for path, rel in unique:
        name = _name_for(rel)
        if groups[name.lower()] > 1:
            name += "~" + hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:8]
        images.append(InputImage(path, rel, name))
    return images


def output_paths(out_dir: str | Path, name: str) -> dict[str, Path]:
    """``{"overlay": DIR/NAME.overlay.png, "labels": DIR/NAME.labels.png, "json": DIR/NAME.json}``."""
    out = Path(out_dir)
    return {"overlay": out / f"{name}.overlay.png", "labels": out / f"{name}.labels.png", "json": out / f"{name}.json"}


def finished_json(out_dir: str | Path, name: str) -> Optional[dict[str, Any]]:
    """The JSON of a finished image (all three outputs present and the JSON readable), else None."""
    paths = output_paths(out_dir, name)
    if not all(p.is_file() for p in paths.values()):
        return None
    try:
        doc = json.loads(paths["json"].read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        return None
    return doc


def _save_png(pixels: np.ndarray, path: Path) -> None:
    atomic_write_bytes(path, encode_png(pixels, level=1), durable=False)


def write_outputs(result: SegmentResult, out_dir: str | Path, name: str, overlay_max_side: int = 2048) -> dict[str, Path]:
    """Write ``NAME.labels.png``, ``NAME.overlay.png`` and, last, ``NAME.json`` (each atomically, not
    fsynced: a rerun redoes an image whose JSON does not read back; the JSON on one line, which
    Python's C encoder writes about 5x faster than an indented dump).

    The PNGs are deflated at level 1 by :func:`~densevlm.imaging.encode_png` (ISA-L where
    installed, else zlib), outside the GIL, so the finishing threads overlap their writing. zlib's
    level 1 against Pillow's level 6: the same overlay size at a quarter of the time for a 64 px
    scene's overlay (about 40 KiB), overlays of photos about a fifth larger (640x480: 265 KiB
    against 219 KiB), label maps a few KiB either way (640x480: 3.4 KiB against 1.6 KiB); ISA-L's
    level 1 is another 4.5x faster than zlib's, about 10 % larger (BENCHMARKS.md). The overlay is
    painted as one array (:meth:`~densevlm.inference.result.SegmentResult.overlay_pixels`) and
    never becomes a PIL image here."""
    paths = output_paths(out_dir, name)
    _save_png(result.labels, paths["labels"])
    _save_png(result.overlay_pixels(max_side=overlay_max_side), paths["overlay"])
    doc = result.to_json()
    doc["name"] = name
    doc["outputs"] = {"overlay": paths["overlay"].name, "labels": paths["labels"].name}
    atomic_write_json(paths["json"], doc, durable=False, indent=None)
    return paths


def write_summary(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write the run's ``summary.csv`` (one row per image, columns :data:`SUMMARY_FIELDS`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return atomic_write_text(path, buffer.getvalue())
