"""Unlabeled image collections with random access, for training and retrieval.

``--images`` accepts:

* a folder, searched recursively for jpg/png/bmp/tiff/webp files;
* a densevlm world directory (its ``images/`` folder);
* a COCO instances or panoptic JSON (its ``images[].file_name`` list), as ``FILE.json`` (the
  images are looked up in ``<json dir>/../<split>`` as in the COCO layout, e.g.
  ``annotations/instances_train2017.json`` -> ``train2017/``) or ``json=FILE,images=DIR``;
* webdataset tar shards, as a glob or brace pattern (``shards/train-{000..099}.tar``):
  every image member is indexed once (name, offset, size) and read on demand, so a collection
  far larger than memory is sampled at random like a folder.

Unreadable images raise :class:`~densevlm.errors.DenseVLMError` from :meth:`ImageSource.load`;
the trainer skips and counts them.
"""

from __future__ import annotations

import glob
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Optional

from PIL import Image

from densevlm.errors import DenseVLMError
from densevlm.imaging import IMAGE_SUFFIXES, open_image

__all__ = ["ImageSource", "FileListSource", "TarShardSource", "open_image_source", "expand_braces"]


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
    if text.endswith(".tar") or "{" in text or "*" in text:
        shards = sorted({Path(p) for pattern in expand_braces(text) for p in glob.glob(pattern)})
        if not shards:
            raise DenseVLMError(f"{text}: no tar shards match")
        return TarShardSource(shards)
    path = Path(text)
    if path.suffix == ".json":
        return _coco_json_source(path, None)
    if not path.is_dir():
        raise DenseVLMError(f"{path}: image folder not found")
    if (path / "panoptic.json").is_file() and (path / "images").is_dir():
        path = path / "images"
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return FileListSource(files, path, str(path))
