"""Output files: checked before any work, written atomically.

:func:`check_output` is run by a command on each output path before it starts working, so a
path that cannot be written, or that would replace one of the command's own inputs or an earlier
result, costs one line instead of a finished run. :func:`atomic_write` and its variants then write
so that a crash never leaves a half-written checkpoint, database export or report.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Optional

from densevlm.errors import DenseVLMError

__all__ = ["check_output", "decode_utf8", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "atomic_torch_save", "open_exclusive", "read_progress"]


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _inside(inner: Path, outer: Path) -> bool:
    inner, outer = inner.resolve(), outer.resolve()
    return inner != outer and outer in inner.parents


def check_output(
    path: str | Path,
    kind: str = "file",
    inputs: Iterable[Optional[str | Path]] = (),
    overwrite: bool = False,
    flag: str = "--out",
) -> Path:
    """Check an output path before any work; the message names ``flag``, the path and the problem.

    Refused, in this order:

    * a ``kind="file"`` output that is an existing directory, or a ``kind="dir"`` output that is
      an existing non-directory;
    * an output that is the same file as one of ``inputs`` (``os.path.samefile``, else equal
      resolved paths: a symlink or ``./x`` names the same file), a ``dir`` output that holds
      one of them, or a ``file`` output that is an existing file inside an input folder (the
      command may read it: an image, a checkpoint, ground truth) -- even with ``overwrite``;
    * an output under a tree where nothing can be created: the nearest existing ancestor is a
      file, or creating a file there fails (read-only, no permission, ``/proc``); a probe file is
      created and removed to find out;
    * an existing file, or an existing non-empty directory, unless ``overwrite``.

    Args:
        path: the output path.
        kind: ``"file"`` or ``"dir"``.
        inputs: the command's input paths (``None`` entries are skipped).
        overwrite: replacing an earlier result is allowed (``--overwrite``).
        flag: the option that named ``path``, for the message.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DenseVLMError: as listed above.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', not {kind!r}")
    path = Path(path)
    where = f"{flag} {path}"
    if kind == "file" and path.is_dir():
        raise DenseVLMError(f"{where}: is a directory; give a file path")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise DenseVLMError(f"{where}: is an existing file; give a directory")
    sources = [Path(given) for given in inputs if given is not None and str(given) != ""]
    for source in sources:
        if _same(path, source):
            raise DenseVLMError(f"{where}: is also an input of this command ({source}); write the output elsewhere")
        if kind == "dir" and _inside(source, path):
            raise DenseVLMError(f"{where}: holds the input {source}; choose a directory that holds no inputs")
    for source in sources:
        if kind == "file" and path.is_file() and source.is_dir() and _inside(path, source):
            raise DenseVLMError(f"{where}: is an existing file in the input folder {source}, which this command reads; "
                                "write the output elsewhere")
    ancestor = path if kind == "dir" else path.parent
    try:
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise DenseVLMError(f"{where}: cannot be created because {ancestor} is a file, not a directory")
        fd, probe = tempfile.mkstemp(prefix=".densevlm-probe-", dir=ancestor)
    except OSError as e:
        why = "it accepts no new files" if e.errno == errno.ENOENT else (e.strerror or type(e).__name__)
        raise DenseVLMError(f"{where}: cannot write under {ancestor} ({why})") from None
    os.close(fd)
    os.unlink(probe)
    if not overwrite and (path.is_file() or (path.is_dir() and any(path.iterdir()))):
        raise DenseVLMError(f"{where}: exists already; pass --overwrite to replace it")
    return path


_temp_names = itertools.count()


def _create_beside(path: Path) -> tuple[int, str]:
    """``(fd, name)`` of a new, empty temporary file beside ``path`` (its folders made if missing),
    opened for writing with the permissions a plain ``open`` gives (``0o666`` less the umask).

    The name holds this process's id and a counter (``O_EXCL``: a leftover of an earlier process
    with the same id is never reused), which costs one ``open`` where :func:`tempfile.mkstemp`
    also makes a random name and needs a ``chmod`` afterwards."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(path.parent, f".{path.name}.{os.getpid()}-{next(_temp_names)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
        except FileNotFoundError:
            if path.parent.is_dir():
                raise
            path.parent.mkdir(parents=True, exist_ok=True)


def _replace(path: Path, fill: Callable[[int, str], None], durable: bool) -> Path:
    """Create a temporary file beside ``path``, ``fill(fd, tmp_path)`` it, fsync it when ``durable``,
    close it and rename it over ``path``; one line on any OSError (see :func:`atomic_write`)."""
    tmp = None
    try:
        fd, tmp = _create_beside(path)
        try:
            fill(fd, tmp)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        why = e.strerror or (str(e).splitlines() or [type(e).__name__])[0]
        raise DenseVLMError(f"{path}: cannot write ({why})") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write(path: str | Path, write: Callable[[str], None], durable: bool = True) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path`` (with the permissions a plain ``open`` would give).

    ``durable=False`` skips the fsync: the file is still never seen half-written, but a power cut
    may leave it empty. For outputs a rerun redoes anyway (segment's per-image files, which a
    resumed run checks by reading the JSON back); the fsync was most of their writing time.

    Raises:
        DenseVLMError: any OSError on the way (no space, no permission, a file where a folder
            should be), as one line naming ``path``; ``path`` is then left as it was.
    """
    return _replace(Path(path), lambda fd, tmp: write(tmp), durable)


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> Path:
    """``data`` written as ``path`` like :func:`atomic_write` does, through the temporary file's
    own descriptor (one ``open`` per file)."""

    def fill(fd: int, tmp: str) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    return _replace(Path(path), fill, durable)


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> Path:
    """``text`` as UTF-8, written as :func:`atomic_write_bytes` does."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable)


def atomic_write_json(path: str | Path, obj: Any, durable: bool = True, indent: Optional[int] = 2) -> Path:
    """``obj`` as JSON with sorted keys, written atomically. ``indent=None`` writes one line with
    Python's C encoder (an indented dump runs the pure-Python one, about 5x slower)."""
    text = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False,
                      separators=None if indent is not None else (",", ":"))
    return atomic_write_text(path, text + "\n", durable)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch

    def write(tmp: str) -> None:
        torch.save(obj, tmp)

    return atomic_write(path, write)


def decode_utf8(data: bytes, path: str | Path) -> str:
    """``data`` (the bytes of ``path``) as text; a UTF-8 byte-order mark is dropped.

    Raises:
        DenseVLMError: one line naming the file, the line and column of the first byte that is
            not UTF-8, and the byte itself.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DenseVLMError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); "
                            "save the file as UTF-8") from None


def open_exclusive(path: str | Path, what: str) -> BinaryIO:
    """``path`` opened for reading and writing (created if missing, never truncated), with an
    exclusive lock that the process holds until the file is closed: the in-progress file of a
    resumable command, which a second run of the command must not write at the same time.

    The lock is ``fcntl.flock`` (Linux, macOS); where there is none (Windows), no lock is taken.

    Raises:
        DenseVLMError: another process holds the lock (``what`` names the command), or the file
            cannot be opened (one line naming ``path``).
    """
    try:
        import fcntl
    except ImportError:  # Windows
        fcntl = None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise DenseVLMError(f"{path}: cannot write ({e.strerror or type(e).__name__})") from None
    f = os.fdopen(fd, "r+b")
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise DenseVLMError(f"{path}: another {what} is writing it now; wait for it to finish") from None
    return f


def read_progress(data: bytes, path: str | Path, what: str) -> tuple[list[Any], list[int]]:
    """The records of ``data``, the bytes of the JSON-lines in-progress file ``path`` of an
    interrupted ``what`` (e.g. ``retrieve``), and the byte offset just past each record's line.

    A last line without its newline (cut off by a crash) is left out: truncating the file to
    ``ends[-1]`` (0 when no line is complete) removes it before appending.

    Raises:
        DenseVLMError: a complete line that is not JSON (one line naming ``path``).
    """
    lines = data.split(b"\n")[:-1]  # the last piece has no newline: cut off mid-line, or empty
    try:
        records = [json.loads(line) for line in lines]
    except ValueError:
        raise DenseVLMError(f"{path}: not the in-progress file of an interrupted {what}; "
                            "pass --overwrite to start again") from None
    return records, list(itertools.accumulate(len(line) + 1 for line in lines))
