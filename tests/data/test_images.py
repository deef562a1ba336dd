"""Image sources for training: folders, COCO JSON lists, tar shards."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from densevlm.data.images import FileListSource, TarShardSource, expand_braces, find_images, open_image_source
from densevlm.errors import DenseVLMError


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (5, 4), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_folder_is_recursive_and_sorted(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.png").write_bytes(_png((1, 2, 3)))
    (tmp_path / "a.JPG").write_bytes(_png((9, 9, 9)))
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_image_source(tmp_path)
    assert isinstance(source, FileListSource)
    assert [source.name(i) for i in range(len(source))] == ["a.JPG", "b/x.png"]
    assert source.load(1).getpixel((0, 0)) == (1, 2, 3)


def test_coco_json_list(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "train2017").mkdir()
    (tmp_path / "train2017" / "000001.jpg").write_bytes(_png((5, 5, 5)))
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps({"images": [{"file_name": "000001.jpg"}]}))
    source = open_image_source(tmp_path / "annotations" / "instances_train2017.json")
    assert len(source) == 1 and source.load(0).size == (5, 4)
    explicit = open_image_source(f"json={tmp_path / 'annotations' / 'instances_train2017.json'},images={tmp_path / 'train2017'}")
    assert len(explicit) == 1


def test_tar_shards_random_access(tmp_path):
    for s in range(2):
        with tarfile.open(tmp_path / f"shard-{s:03d}.tar", "w") as tar:
            for i in range(3):
                data = _png((s, i, 7))
                info = tarfile.TarInfo(f"sample{s}{i}.png")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                meta = b'{"x": 1}'
                info = tarfile.TarInfo(f"sample{s}{i}.json")
                info.size = len(meta)
                tar.addfile(info, io.BytesIO(meta))
    source = open_image_source(str(tmp_path / "shard-{000..001}.tar"))
    assert isinstance(source, TarShardSource) and len(source) == 6
    assert source.load(4).getpixel((0, 0)) == (1, 1, 7)
    assert source.name(4) == "shard-001.tar:sample11.png"
    import pickle

    clone = pickle.loads(pickle.dumps(source))  # DataLoader workers get a copy without open handles
    assert clone.load(0).getpixel((0, 0)) == (0, 0, 7)


def test_brace_expansion():
    assert expand_braces("a-{08..10}.tar") == ["a-08.tar", "a-09.tar", "a-10.tar"]
    assert expand_braces("{x,y}/{1..2}") == ["x/1", "x/2", "y/1", "y/2"]


@pytest.mark.parametrize("spec, message", [("nope-dir", "no such file or folder; --images takes a folder"), ("none-{1..2}.tar", "no tar shards match")])
def test_bad_sources(tmp_path, spec, message):
    with pytest.raises(DenseVLMError, match=message):
        open_image_source(str(tmp_path / spec))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DenseVLMError, match="no images found"):
        open_image_source(tmp_path / "empty")


def _tree(root) -> None:
    """Images at two depths, hidden files and folders, a non-image, and a nested output folder."""
    for rel in ["a.png", "sub/b.jpg", "sub/deep/c.PNG", ".hidden.png", ".cache/d.png", "sub/.e.png", "out/f.png"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_png((1, 1, 1)))
    (root / "sub" / "notes.txt").write_text("not an image")


def test_find_images_skips_hidden_entries_and_the_excluded_folder(tmp_path):
    _tree(tmp_path)
    root, files = find_images(tmp_path, exclude=tmp_path / "out")
    assert root == tmp_path
    assert [f.relative_to(root).as_posix() for f in files] == ["a.png", "sub/b.jpg", "sub/deep/c.PNG"]
    root, files = find_images(tmp_path / ".hidden.png")  # a file named explicitly is taken as it is
    assert (root, files) == (tmp_path, [tmp_path / ".hidden.png"])
    with pytest.raises(DenseVLMError, match="matches no files"):
        find_images(tmp_path / "*.tif")
    with pytest.raises(DenseVLMError, match="no such file or folder"):
        find_images(tmp_path / "missing")


def test_segment_inputs_and_training_images_agree(tmp_path, monkeypatch):
    from densevlm.inference.io import collect_inputs

    _tree(tmp_path)
    monkeypatch.chdir(tmp_path)  # a glob is relative to the current folder
    for spec in [str(tmp_path), "sub", "**/*.*", "s*"]:
        source = open_image_source(spec)
        segment_names = [image.rel for image in collect_inputs([spec])]
        assert segment_names == [source.name(i) for i in range(len(source))], spec
        assert not any(part.startswith(".") for name in segment_names for part in name.split("/")), spec
    assert [im.rel for im in collect_inputs(["**/*.*"])] == ["a.png", "out/f.png", "sub/b.jpg", "sub/deep/c.PNG"]
    assert [im.rel for im in collect_inputs(["s*"])] == ["sub/b.jpg", "sub/deep/c.PNG"]
