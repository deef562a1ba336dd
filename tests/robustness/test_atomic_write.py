"""Kind: a write that fails half-way (no space, no permission, a file where a folder should be).

fileio.atomic_write let the OSError through as a traceback; it is now one line naming the file,
the earlier file is left as it was and no temporary file stays behind.
"""

from __future__ import annotations

import errno
import os
import sys

import pytest

from densevlm.errors import DenseVLMError
from densevlm.fileio import atomic_write, atomic_write_json, atomic_write_text


def test_a_full_disk_leaves_the_earlier_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("earlier\n")

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(DenseVLMError) as info:
        atomic_write(target, write)
    assert str(info.value) == f"{target}: cannot write ({os.strerror(errno.ENOSPC)})"
    assert target.read_text() == "earlier\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_file_where_a_folder_should_be_is_one_line(tmp_path):
    (tmp_path / "plain").write_bytes(b"mine")
    target = tmp_path / "plain" / "sub" / "report.json"
    with pytest.raises(DenseVLMError) as info:
        atomic_write_json(target, {"a": 1})
    message = str(info.value)
    assert message.startswith(f"{target}: cannot write (") and "\n" not in message
    assert (tmp_path / "plain").read_bytes() == b"mine"


@pytest.mark.skipif(sys.platform.startswith("win") or os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "old.txt").write_text("earlier")
    folder.chmod(0o500)
    try:
        with pytest.raises(DenseVLMError, match="cannot write"):
            atomic_write_text(folder / "old.txt", "new")
    finally:
        folder.chmod(0o700)
    assert (folder / "old.txt").read_text() == "earlier"


def test_read_progress_keeps_complete_lines_and_where_each_ends(tmp_path):
    from densevlm.fileio import read_progress

    data = b'{"kind": "header"}\n{"image": "a.png"}\n{"image": "b.p'  # cut off by a crash
    records, ends = read_progress(data, tmp_path / "x.partial", "retrieve")
    assert records == [{"kind": "header"}, {"image": "a.png"}] and ends == [19, 38]
    assert data[:ends[-1]].endswith(b'"a.png"}\n')
    assert read_progress(b"", tmp_path / "x.partial", "retrieve") == ([], [])
    with pytest.raises(DenseVLMError, match=r"x.partial: not the in-progress file of an interrupted inspect; pass"):
        read_progress(b'{"kind": "header"}\nnot json\n', tmp_path / "x.partial", "inspect")
