"""The vocabulary: class names split into things (parts, defects) and stuff (belts, floors).

The file format is written by hand by a plant engineer::

    # comments start with '#'
    [things]
    bolt
    scratch, scuff          # synonyms after the first name are averaged in
    [stuff]
    conveyor belt
    steel plate
    [defects]               # optional: which things make an inspected item NG
    scratch                 # a thing above, or a new thing
    crack

Each non-empty line is one class; its first comma-separated name is the class name and the
others are synonyms whose prompt embeddings are averaged into the class embedding. A
``[defects]`` line names a thing (by any of its names) or adds a new thing; either way that
class is a defect. Defects change verdicts, not embeddings: :meth:`Vocabulary.fingerprint`
ignores them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

from densevlm.errors import DenseVLMError

__all__ = ["Vocabulary", "read_vocabulary_text", "parse_vocabulary"]

_SECTIONS: dict[str, bool | str] = {"things": True, "thing": True, "stuff": False, "defects": "defects",
                                     "defect": "defects"}


@dataclass(frozen=True)
class Vocabulary:
    """Classes in a fixed order: all things first, then all stuff.

    Attributes:
        names: ``[K]`` display names (the first name of each class).
        synonyms: ``[K]`` tuples of every name of a class, the display name first.
        is_thing: ``[K]`` True for things, False for stuff.
        is_defect: ``[K]`` True for the things listed under ``[defects]`` (empty = none).
        source: the file it was read from (empty when built in code); for messages only.
        lines: ``[K]`` the line of each class in ``source`` (empty when built in code).
    """

    names: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...]
    is_thing: tuple[bool, ...]
    is_defect: tuple[bool, ...] = ()
    source: str = field(default="", compare=False)
    lines: tuple[int, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.is_defect:
            object.__setattr__(self, "is_defect", (False,) * len(self.names))
        if len(self.is_defect) != len(self.names) or any(d and not t for d, t in zip(self.is_defect, self.is_thing)):
            raise DenseVLMError("vocabulary: is_defect must have one entry per class and mark things only")
        if not self.names:
            raise DenseVLMError("vocabulary is empty: give at least one class under [things] or [stuff]")
        if not (len(self.names) == len(self.synonyms) == len(self.is_thing)):
            raise DenseVLMError("vocabulary: names, synonyms and is_thing differ in length")
        seen: dict[str, str] = {}
        for name, syns in zip(self.names, self.synonyms):
            for s in syns:
                key = s.lower()
                if key in seen:
                    raise DenseVLMError(f"vocabulary: name '{s}' appears twice (classes '{seen[key]}' and '{name}')")
                seen[key] = name

    @classmethod
    def from_lists(cls, things: Sequence[str | Sequence[str]], stuff: Sequence[str | Sequence[str]],
                   defects: Sequence[str] = ()) -> "Vocabulary":
        """Build from Python lists; an entry is a name or a list of synonyms (display name first).

        ``defects`` names things (any synonym, case-insensitive) that make an item NG.
        """
        entries = [(_as_synonyms(e), True) for e in things] + [(_as_synonyms(e), False) for e in stuff]
        keys = {n.lower(): i for i, (syns, t) in enumerate(entries) if t for n in syns}
        marked = set()
        for name in defects:
            if name.strip().lower() not in keys:
                raise DenseVLMError(f"vocabulary: defect '{name}' is not a thing of the vocabulary")
            marked.add(keys[name.strip().lower()])
        return cls(
            names=tuple(s[0] for s, _ in entries),
            synonyms=tuple(s for s, _ in entries),
            is_thing=tuple(t for _, t in entries),
            is_defect=tuple(i in marked for i in range(len(entries))),
        )

    def __len__(self) -> int:
        return len(self.names)

    @property
    def thing_indices(self) -> list[int]:
        """Indices of thing classes (vocabulary section membership, not an index cut-off)."""
        return [i for i, t in enumerate(self.is_thing) if t]

    @property
    def stuff_indices(self) -> list[int]:
        """Indices of stuff classes."""
        return [i for i, t in enumerate(self.is_thing) if not t]

    @property
    def num_things(self) -> int:
        return sum(self.is_thing)

    @property
    def defect_indices(self) -> list[int]:
        """Indices of the defect classes (things listed under ``[defects]``)."""
        return [i for i, d in enumerate(self.is_defect) if d]

    @property
    def defects(self) -> tuple[str, ...]:
        """Display names of the defect classes, in vocabulary order."""
        return tuple(self.names[i] for i in self.defect_indices)

    def index(self, name: str) -> int:
        """Index of the class that has ``name`` (any synonym, case-insensitive)."""
        key = name.strip().lower()
        for i, syns in enumerate(self.synonyms):
            if key in (s.lower() for s in syns):
                return i
        raise KeyError(name)

    @property
    def adaptation(self) -> Optional[str]:
        """How the class embeddings were fitted to reviewed regions (``"fit"`` / ``"blend"``); None for text only."""
        return None

    def fingerprint(self) -> str:
        """A stable content hash (order, names, synonyms and sections): 16 hex digits of the
        sha256 of their JSON.

        Made once per object and kept on it (the fields it covers are tuples of strings and
        booleans of a frozen dataclass, so they cannot change; a copy made with
        :func:`dataclasses.replace` or :meth:`extended` hashes its own fields).
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            payload = json.dumps([self.synonyms, self.is_thing], ensure_ascii=False).encode("utf-8")
            cached = hashlib.sha256(payload).hexdigest()[:16]
            object.__setattr__(self, "_fingerprint", cached)
        return cached

    def extended(self, name: str, thing: bool) -> "Vocabulary":
        """A copy with one more class, placed at the end of its section (defects kept)."""
        things = [s for s, t in zip(self.synonyms, self.is_thing) if t]
        stuff = [s for s, t in zip(self.synonyms, self.is_thing) if not t]
        (things if thing else stuff).append((name,))
        return Vocabulary.from_lists(things, stuff, self.defects)

    def sections(self) -> dict[str, list[list[str]] | list[str]]:
        """``{"things": [[synonyms...], ...], "stuff": [...], "defects": [names]}``: the JSON form of the
        candidates header's vocabulary (:func:`Vocabulary.from_lists` reads it back)."""
        return {"things": [list(s) for s, t in zip(self.synonyms, self.is_thing) if t],
                "stuff": [list(s) for s, t in zip(self.synonyms, self.is_thing) if not t],
                "defects": list(self.defects)}

    def to_text(self) -> str:
        """The vocabulary in the file format (round-trips through :func:`load_vocabulary`)."""
        lines = ["[things]"]
        lines += [", ".join(s) for s, t in zip(self.synonyms, self.is_thing) if t]
        lines += ["[stuff]"]
        lines += [", ".join(s) for s, t in zip(self.synonyms, self.is_thing) if not t]
        if self.defects:
            lines += ["[defects]", *self.defects]
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_text(), encoding="utf-8")


def _as_synonyms(entry: str | Sequence[str]) -> tuple[str, ...]:
    names = [entry] if isinstance(entry, str) else list(entry)
    names = [" ".join(n.split()) for n in names]
    if not names or any(not n for n in names):
        raise DenseVLMError(f"vocabulary: empty class name in {entry!r}")
    return tuple(names)


def parse_vocabulary(text: str, source: str = "<string>") -> Vocabulary:
    """Parse the vocabulary file format; errors name ``source`` and the line number."""
    things: list[tuple[str, ...]] = []
    stuff: list[tuple[str, ...]] = []
    defects: list[tuple[int, tuple[str, ...]]] = []
    section: bool | str | None = None
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            key = line.strip("[]").strip().lower()
            if not line.endswith("]") or key not in _SECTIONS:
                raise DenseVLMError(f"{source}:{lineno}: unknown section header '{line}'; use [things], [stuff] or [defects]")
            section = _SECTIONS[key]
            continue
        if section is None:
            raise DenseVLMError(f"{source}:{lineno}: class '{line}' comes before any section header; start with [things] or [stuff]")
        names = tuple(" ".join(n.split()) for n in line.split(","))
        if any(not _visible(n) for n in names):
            raise DenseVLMError(f"{source}:{lineno}: empty or invisible name in '{line}'")
        if section == "defects":
            defects.append((lineno, names))
            continue
        for n in names:
            key = n.lower()
            if key in first_line:
                where = "in both sections" if _section_of(key, things, stuff) != section else "twice"
                raise DenseVLMError(f"{source}:{lineno}: class '{n}' appears {where} (first on line {first_line[key]})")
            first_line[key] = lineno
        (things if section else stuff).append(names)
    if not things and not stuff:
        raise DenseVLMError(f"{source}: vocabulary is empty; list classes under [things] and [stuff]")
    vocab = Vocabulary.from_lists(things, stuff, _resolve_defects(defects, things, stuff, first_line, source))
    return replace(vocab, source=source, lines=tuple(first_line[n.lower()] for n in vocab.names))


def _resolve_defects(lines: list[tuple[int, tuple[str, ...]]], things: list[tuple[str, ...]],
                     stuff: list[tuple[str, ...]], first_line: dict[str, int], source: str) -> list[str]:
    """Display names of the ``[defects]`` lines; a line naming no thing is appended to ``things``."""
    names = []
    for lineno, syns in lines:
        known = [n for n in syns if n.lower() in first_line]
        if known and _section_of(known[0].lower(), things, stuff):
            names.append(known[0])
        elif known:
            raise DenseVLMError(f"{source}:{lineno}: defect '{known[0]}' is stuff (line {first_line[known[0].lower()]}); "
                                "[defects] lists things")
        else:
            things.append(syns)
            for n in syns:
                first_line[n.lower()] = lineno
            names.append(syns[0])
    return names


def _visible(name: str) -> bool:
    """Whether ``name`` has a character other than format characters (zero-width space, joiners,
    byte-order marks: Unicode category Cf), which print as nothing."""
    import unicodedata

    return any(unicodedata.category(ch) != "Cf" for ch in name)


def _section_of(key: str, things: list[tuple[str, ...]], stuff: list[tuple[str, ...]]) -> bool:
    return any(key in (n.lower() for n in syns) for syns in things)


def read_vocabulary_text(path: str | Path) -> Vocabulary:
    """Read a vocabulary text file (UTF-8); :func:`densevlm.vocab.load_vocabulary` reads ``.npz`` ones too."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DenseVLMError(f"{path}: vocabulary file not found") from None
    except OSError as e:
        raise DenseVLMError(f"{path}: cannot read vocabulary file ({e.strerror})") from None
    from densevlm.fileio import decode_utf8

    return parse_vocabulary(decode_utf8(data, path), source=str(path))
