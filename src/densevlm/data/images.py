"""Unlabeled image collections with random access, for training and retrieval.

``--images`` accepts:

* a folder, an image file or a glob, as :func:`find_images` resolves it (the rule of every
  command that takes images: hidden files and folders skipped, globs relative to the cwd);
* a densevlm world directory (its ``images/`` folder);
* a COCO instances or panoptic JSON (its ``images[].file_name`` list), as ``FILE.json`` (the
  images are looked up in ``<json dir>/../<split>`` as in the COCO layout, e.g.
  ``annotations/instances_train2017.json`` -> ``train2017/``) or ``json=FILE,images=DIR``;
* webdataset tar shards, as a path or pattern ending in ``.tar`` or a brace pattern
  (``shards/train-{000..099}.tar``): every image member is indexed once (name, offset, size)
  and read on demand, so a collection far larger than memory is sampled at random like a folder.

Unreadable images raise :class:`~densevlm.errors.DenseVLMError` from :meth:`ImageSource.load`;
the trainer skips and counts them.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import re
import tarfile
from pathlib import Path
from typing import Optional

from PIL import Image

from densevlm.errors import DenseVLMError
from densevlm.imaging import IMAGE_SUFFIXES, open_image

__all__ = ["ImageSource", "FileListSource", "TarShardSource", "open_image_source", "expand_braces", "find_images",
           "is_densevlm_output"]

log = logging.getLogger(__name__)

_GLOB_CHARS = "*?["
# what `densevlm segment` writes beside NAME.json (see densevlm.inference.io.output_paths)
_OUTPUT_SUFFIXES = (".overlay.png", ".labels.png")
_EXAMPLES = 3
_EXPECTED = ("a folder, an image file (" + ", ".join(IMAGE_SUFFIXES) + "), a glob, a world directory, "
             "a COCO JSON or tar shards")


class ImageSource:
    """Random access to an image collection."""

    def __len__(self) -> int:
        raise NotImplementedError

    def name(self, index: int) -> str:
        """A stable identifier (relative path or shard member) of image ``index``."""
        raise NotImplementedError

    def load(self, index: int) -> Image.Image:
        """Image ``index`` as RGB (EXIF orientation applied)."""
        raise NotImplementedError


class FileListSource(ImageSource):
    """A list of image files, named relative to ``root``."""

    def __init__(self, files: list[Path], root: Path, description: str) -> None:
        if not files:
            raise DenseVLMError(f"{description}: no images found")
        self.files, self.root = files, root

    def __len__(self) -> int:
        return len(self.files)

    def name(self, index: int) -> str:
        path = self.files[index]
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def path(self, index: int) -> Path:
        return self.files[index]

    def load(self, index: int) -> Image.Image:
        return open_image(self.files[index])


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{000..012}`` numeric ranges and ``{a,b}`` lists (webdataset style)."""
    match = re.search(r"\{([^{}]+)\}", pattern)
    if not match:
        return [pattern]
    body = match.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        options = [str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    out = []
    for option in options:
        out += expand_braces(pattern[: match.start()] + option + pattern[match.end():])
    return out


class TarShardSource(ImageSource):
    """Image members of tar shards, indexed once and read by offset."""

    def __init__(self, shards: list[Path]) -> None:
        self.shards = shards
        self.members: list[tuple[int, int, int, str]] = []  # shard, data offset, size, name
        for s, shard in enumerate(shards):
            try:
                with tarfile.open(shard, "r:") as tar:
                    for member in tar:
                        if member.isfile() and member.name.lower().endswith(IMAGE_SUFFIXES):
                            self.members.append((s, member.offset_data, member.size, member.name))
            except (tarfile.TarError, OSError) as e:
                raise DenseVLMError(f"{shard}: not a readable uncompressed tar shard ({e})") from None
        if not self.members:
            raise DenseVLMError(f"{shards[0].parent}: no image members in {len(shards)} shards")
        self._handles: dict[int, io.BufferedReader] = {}

    def __len__(self) -> int:
        return len(self.members)

    def name(self, index: int) -> str:
        s, _, _, name = self.members[index]
        return f"{self.shards[s].name}:{name}"

    def load(self, index: int) -> Image.Image:
        s, offset, size, name = self.members[index]
        handle = self._handles.get(s)
        if handle is None:
            handle = self._handles[s] = open(self.shards[s], "rb")
        handle.seek(offset)
        data = handle.read(size)
        return open_image(io.BytesIO(data), name=self.name(index))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state


def _coco_json_source(json_path: Path, images_dir: Optional[Path]) -> FileListSource:
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        names = [im["file_name"] for im in data["images"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise DenseVLMError(f"{json_path}: not a COCO JSON with an images list ({e})") from None
    if images_dir is None:
        split = re.sub(r"^(instances|panoptic|captions)_", "", json_path.stem)
        images_dir = json_path.parent.parent / split
    if not images_dir.is_dir():
        raise DenseVLMError(f"{images_dir}: image folder for {json_path.name} not found; pass json=FILE,images=DIR")
    return FileListSource([images_dir / n for n in names], images_dir, str(json_path))


def open_image_source(spec: str | Path) -> ImageSource:
    """Resolve an ``--images`` value (see the module docstring)."""
    text = str(spec)
    if text.startswith("json="):
        parts = dict(p.split("=", 1) for p in text.split(",") if "=" in p)
        return _coco_json_source(Path(parts["json"]), Path(parts["images"]) if "images" in parts else None)
    if text.endswith(".tar") or "{" in text:
        shards = sorted({Path(p) for pattern in expand_braces(text) for p in glob.glob(pattern)})
        if not shards:
            raise DenseVLMError(f"{text}: no tar shards match")
        return TarShardSource(shards)
    path = Path(text)
    if path.suffix == ".json":
        return _coco_json_source(path, None)
    if not path.exists() and not _is_glob(text):
        raise DenseVLMError(f"{path}: no such file or folder; --images takes {_EXPECTED}")
    if path.is_file() and not path.name.lower().endswith(IMAGE_SUFFIXES):
        raise DenseVLMError(f"{path}: not an image file, a COCO JSON or a tar shard; --images takes {_EXPECTED}")
    if (path / "panoptic.json").is_file() and (path / "images").is_dir():
        path = path / "images"
    root, files = find_images(path)
    return FileListSource(files, root, str(path))


def _is_glob(spec: str | Path) -> bool:
    return any(c in str(spec) for c in _GLOB_CHARS) and not Path(spec).exists()


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard component (``.`` when there is none)."""
    fixed = []
    for part in Path(pattern).parts[:-1]:
        if any(c in part for c in _GLOB_CHARS):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def is_densevlm_output(path: Path) -> bool:
    """Whether ``path`` is a file that ``densevlm segment`` or ``inspect`` wrote, wherever its ``--out`` was.

    An overlay or label map is named ``NAME.overlay.png`` or ``NAME.labels.png`` and has
    ``NAME.json`` or a ``summary.csv`` beside it (segment), or sits in ``overlays/`` beside a
    ``verdicts.csv`` (inspect); ``NAME.json`` has one of those two beside it; ``summary.csv``
    starts with the run summary's header (``file,name,status``).
    """
    name = path.name.lower()
    for suffix in _OUTPUT_SUFFIXES:
        if name.endswith(suffix):
            stem = path.name[: -len(suffix)]
            return ((path.parent / f"{stem}.json").is_file() or (path.parent / "summary.csv").is_file()
                    or (path.parent.name == "overlays" and (path.parent.parent / "verdicts.csv").is_file()))
    if name.endswith(".json"):
        return any((path.parent / f"{path.name[:-5]}{suffix}").is_file() for suffix in _OUTPUT_SUFFIXES)
    if name == "summary.csv":
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.readline().startswith("file,name,status")
        except OSError:
            return False
    return False


def _skip_reason(path: Path) -> Optional[str]:
    """Why a file found in a scan is not an input (None: it is one)."""
    if is_densevlm_output(path):
        return "densevlm outputs"
    if not path.name.lower().endswith(IMAGE_SUFFIXES):
        return "not an image type densevlm reads"
    return None


def _walk(folder: Path, exclude: Optional[Path], skipped: dict[str, set[Path]]) -> list[Path]:
    """Image files under ``folder`` (recursive), skipping hidden entries and the folder ``exclude``;
    other files are added to ``skipped`` under their reason."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and (exclude is None or (here / d).resolve() != exclude)]
        for f in filenames:
            if f.startswith("."):
                continue
            reason = _skip_reason(here / f)
            if reason is None:
                found.append(here / f)
            else:
                skipped.setdefault(reason, set()).add(here / f)
    return found


def _report_skipped(spec: str | Path, skipped: dict[str, set[Path]]) -> None:
    """One line: how many files the scan of ``spec`` left out, why, and a few of each."""
    if not skipped:
        return
    parts = []
    for reason, paths in sorted(skipped.items()):
        examples = ", ".join(p.name for p in sorted(paths)[:_EXAMPLES]) + (", ..." if len(paths) > _EXAMPLES else "")
        parts.append(f"{len(paths)} {reason} ({examples})")
    total = sum(len(p) for p in skipped.values())
    log.info("%s: skipped %d file%s: %s", spec, total, "" if total == 1 else "s", "; ".join(parts))


def find_images(spec: str | Path, exclude: Optional[str | Path] = None) -> tuple[Path, list[Path]]:
    """``(root, image files)`` of one input: the one rule of ``densevlm segment INPUT`` and ``--images``.

    An existing file is taken as it is (root: its folder). An existing folder is searched
    recursively for :data:`~densevlm.imaging.IMAGE_SUFFIXES` files, any case (root: the folder).
    Anything else holding ``*``, ``?`` or ``[`` is a glob relative to the current directory
    (``**`` spans folders), whose folders are searched as above and whose files are kept when
    they are images (root: the pattern's folders before the first wildcard, else ``.``). Hidden
    files and folders (``.name``) are skipped below the spec; a glob matches them only where its
    own pattern starts a name with ``.``. Nothing inside the folder ``exclude`` is found.

    A folder or glob never yields densevlm's own outputs (:func:`is_densevlm_output`: the
    overlays and label maps of an earlier ``densevlm segment``, wherever its ``--out`` was) nor
    files of other types; what it left out is logged as one line (counts per reason and a few
    names). GIFs are read (an animated GIF by its first frame).

    Returns:
        ``root`` and the files under it, sorted, each once.

    Raises:
        DenseVLMError: a path that does not exist, a file named explicitly that is not an image
            (by its suffix), or a glob that matches nothing.
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    path = Path(spec)
    skipped: dict[str, set[Path]] = {}
    if path.is_file():
        if not path.name.lower().endswith(IMAGE_SUFFIXES):
            raise DenseVLMError(f"{path}: not an image file; expected a folder, a glob or an image file "
                                f"({', '.join(IMAGE_SUFFIXES)})")
        return path.parent, [path]
    if path.is_dir():
        files = sorted(_walk(path, excluded, skipped))
        _report_skipped(spec, skipped)
        return path, files
    if not _is_glob(spec):
        raise DenseVLMError(f"{spec}: no such file or folder")
    matches = [Path(m) for m in glob.glob(str(spec), recursive=True)]
    if not matches:
        raise DenseVLMError(f"{spec}: the pattern matches no files")
    found: set[Path] = set()
    for match in matches:
        if excluded is not None and (match.resolve() == excluded or excluded in match.resolve().parents):
            continue
        if match.is_dir():
            found.update(_walk(match, excluded, skipped))
        else:
            reason = _skip_reason(match)
            if reason is None:
                found.add(match)
            else:
                skipped.setdefault(reason, set()).add(match)
    _report_skipped(spec, skipped)
    return _glob_root(str(spec)), sorted(found)
