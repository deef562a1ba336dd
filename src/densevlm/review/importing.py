"""Importing a candidates JSONL file (``densevlm retrieve``) into the review database.

An import is idempotent: regions are keyed by the candidates file's stable region id; a region
already in the database keeps its first import and its verdicts (a warning counts those that differ).
Header classes match existing classes by name or synonym. The whole import is one transaction.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from densevlm.errors import DenseVLMError
from densevlm.review.candidates import CandidateRegion, CandidatesFile, CandidatesHeader
from densevlm.review.store import ReviewStore

__all__ = ["ImportSummary", "import_candidates"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportSummary:
    """What one import did: counts of rows added, and regions that were already there."""

    regions_added: int
    regions_present: int
    regions_differing: int
    images_added: int
    classes_added: int
    total_regions: int


def import_candidates(db_path: str | Path, candidates_path: str | Path,
                      images_dir: str | Path | None = None) -> ImportSummary:
    """Add the regions of a candidates JSONL file to a review database; regions already there are left as they are.

    ``images_dir`` overrides the header's ``images``; a relative header path is taken relative
    to the candidates file. The database is created, if missing, only once the file checks out.
    """
    source = CandidatesFile.load(candidates_path, images_dir)
    path, header, regions, root, sizes = source.path, source.header, source.regions, source.root, source.sizes
    now = time.time()
    added = present = differing = images_added = 0
    with ReviewStore(db_path, create=True) as store, store.transaction() as conn:
        class_ids, classes_added = _add_header_classes(conn, header, path, now)
        cur = conn.execute(
            "INSERT INTO imports (candidates_file, images_dir, teacher, header, regions_added, imported_at)"
            " VALUES (?, ?, ?, ?, 0, ?)",
            (str(path.resolve()), str(root), header.teacher, json.dumps(header.raw, ensure_ascii=False), now),
        )
        import_id = cur.lastrowid
        image_ids: dict[str, int] = {}
        for region in regions:
            existing = conn.execute(
                "SELECT r.*, i.root AS image_root, i.file_name AS image_file FROM regions r"
                " JOIN images i ON i.id = r.image_id WHERE r.key = ?", (region.key,)).fetchone()
            if existing is not None:
                present += 1
                _check_same_folder(existing, region, root, path)
                if not _same_region(conn, existing, region, class_ids):
                    differing += 1
                continue
            image_id = image_ids.get(region.image)
            if image_id is None:
                image_id, is_new = _image_id(conn, root, region, sizes[region.image], path)
                image_ids[region.image] = image_id
                images_added += int(is_new)
            cur = conn.execute(
                "INSERT INTO regions (key, import_id, image_id, x1, y1, x2, y2, mask, confidence, thing, kept)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (region.key, import_id, image_id, *region.box, json.dumps(region.mask) if region.mask else None,
                 region.confidence, int(region.thing), int(region.kept)),
            )
            region_id = cur.lastrowid
            conn.executemany(
                "INSERT INTO candidates (region_id, rank, class_id, prob) VALUES (?, ?, ?, ?)",
                [(region_id, rank, class_ids[index], prob) for rank, (index, prob) in enumerate(region.candidates)],
            )
            added += 1
        if added or classes_added:
            conn.execute("UPDATE imports SET regions_added = ? WHERE id = ?", (added, import_id))
        else:
            conn.execute("DELETE FROM imports WHERE id = ?", (import_id,))
        total = conn.execute("SELECT COUNT(*) FROM regions").fetchone()[0]
    if differing:
        logger.warning("%s: %d regions are already in the database with a different box, mask or candidates; "
                       "the database keeps the first import (and its verdicts)", path, differing)
    return ImportSummary(added, present, differing, images_added, classes_added, total)


def _add_header_classes(conn: sqlite3.Connection, header: CandidatesHeader, path: Path,
                        now: float) -> tuple[list[int], int]:
    class_ids: list[int] = []
    added = 0
    for cls in header.classes:
        row = conn.execute(
            "SELECT c.id, c.name, c.thing FROM class_names n JOIN classes c ON c.id = n.class_id WHERE n.name = ?",
            (cls.synonyms[0],),
        ).fetchone()
        if row is not None:
            if bool(row["thing"]) != cls.thing:
                have = "a thing" if row["thing"] else "stuff"
                want = "a thing" if cls.thing else "stuff"
                raise DenseVLMError(
                    f"{path}: header class '{cls.synonyms[0]}' is {want}, but the database has '{row['name']}' as {have}"
                )
            class_ids.append(row["id"])
            continue
        for name in cls.synonyms[1:]:
            clash = conn.execute(
                "SELECT c.name FROM class_names n JOIN classes c ON c.id = n.class_id WHERE n.name = ?", (name,)
            ).fetchone()
            if clash is not None:
                raise DenseVLMError(
                    f"{path}: header synonym '{name}' of class '{cls.synonyms[0]}' is already a name of class '{clash['name']}' in the database"
                )
        cur = conn.execute(
            "INSERT INTO classes (name, synonyms, thing, source, added_by, created_at) VALUES (?, ?, ?, 'vocabulary', NULL, ?)",
            (cls.synonyms[0], json.dumps(list(cls.synonyms), ensure_ascii=False), int(cls.thing), now),
        )
        conn.executemany(
            "INSERT INTO class_names (name, class_id) VALUES (?, ?)", [(n, cur.lastrowid) for n in cls.synonyms]
        )
        class_ids.append(cur.lastrowid)
        added += 1
    return class_ids, added


def _image_id(conn: sqlite3.Connection, root: Path, region: CandidateRegion, size: tuple[int, int],
              path: Path) -> tuple[int, bool]:
    row = conn.execute(
        "SELECT id, width, height FROM images WHERE root = ? AND file_name = ?", (str(root), region.image)
    ).fetchone()
    if row is not None:
        if (row["width"], row["height"]) == (region.height, region.width) != (region.width, region.height):
            raise DenseVLMError(
                f"{path}:{region.line}: image '{region.image}' is {region.width}x{region.height} upright (EXIF "
                f"orientation applied) but {row['width']}x{row['height']} in the database, which an older densevlm "
                "made without applying EXIF orientation; import into a new database (--db NEW.sqlite)"
            )
        if (row["width"], row["height"]) != (region.width, region.height):
            raise DenseVLMError(
                f"{path}:{region.line}: image '{region.image}' is {region.width}x{region.height} here but "
                f"{row['width']}x{row['height']} in the database"
            )
        return row["id"], False
    cur = conn.execute(
        "INSERT INTO images (root, file_name, width, height) VALUES (?, ?, ?, ?)",
        (str(root), region.image, size[0], size[1]),
    )
    return cur.lastrowid, True


def _check_same_folder(row: sqlite3.Row, region: CandidateRegion, root: Path, path: Path) -> None:
    """Refuse a region whose key the database holds (``row``, with its ``image_root``) for an image
    of another folder (two folders with the same file names): its verdicts would be taken for this one's."""
    other = row["image_root"]
    if other != str(root):
        raise DenseVLMError(
            f"{path}:{region.line}: region '{region.key}' is already in this database for an image in {other}, "
            f"and this file's images are in {root}; review another folder in another database (--db OTHER.sqlite)"
        )


def _same_region(conn: sqlite3.Connection, row: sqlite3.Row, region: CandidateRegion, class_ids: list[int]) -> bool:
    """Whether the stored region ``row`` (of an image in the same folder, :func:`_check_same_folder`)
    is ``region``: the same image, box, mask and candidates."""
    cands = [
        (r["class_id"], r["prob"])
        for r in conn.execute("SELECT class_id, prob FROM candidates WHERE region_id = ? ORDER BY rank", (row["id"],))
    ]
    mask = json.loads(row["mask"]) if row["mask"] else None
    return (
        row["image_file"] == region.image
        and (row["x1"], row["y1"], row["x2"], row["y2"]) == region.box
        and mask == region.mask
        and cands == [(class_ids[i], p) for i, p in region.candidates]
    )
