"""The embedded world generator: determinism, valid COCO panoptic files, captions."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from densevlm.data.synth import make_caption, make_scene, write_world
from densevlm.data.synth.categories import CATEGORIES, PLURALS
from densevlm.errors import DenseVLMError
from densevlm.vocab import load_vocabulary


def _digest(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    write_world(out, 40, seed=7, progress=False)
    return out


def test_same_seed_gives_byte_identical_files(world, tmp_path):
    again = tmp_path / "again"
    write_world(again, 40, seed=7, workers=2, progress=False)
    assert _digest(world) == _digest(again)
    other = tmp_path / "other"
    write_world(other, 40, seed=8, progress=False)
    assert _digest(other)["panoptic.json"] != _digest(world)["panoptic.json"]


def test_panoptic_files_are_consistent(world):
    data = json.loads((world / "panoptic.json").read_text())
    cats = {c["id"]: c for c in data["categories"]}
    assert len(cats) == 16 and sum(c["isthing"] for c in cats.values()) == 10
    assert len(data["images"]) == len(data["annotations"]) == 40
    for ann in data["annotations"]:
        png = np.asarray(Image.open(world / "panoptic" / ann["file_name"]))
        assert png.ndim == 3 and png.shape[2] == 3
        png = png.astype(np.int64)
        ids = png[..., 0] + 256 * png[..., 1] + 65536 * png[..., 2]
        info = {s["id"]: s for s in ann["segments_info"]}
        assert set(np.unique(ids)) == set(info), "every id in the PNG is described and vice versa"
        things = 0
        for sid, seg in info.items():
            mask = ids == sid
            ys, xs = np.nonzero(mask)
            assert seg["area"] == mask.sum() >= 10
            assert seg["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert seg["category_id"] in cats and seg["iscrowd"] == 0
            things += cats[seg["category_id"]]["isthing"]
        assert 1 <= things <= 3
        stuff = len(info) - things
        assert 1 <= stuff <= 3
        image = Image.open(world / "images" / ann["file_name"])
        assert image.mode == "RGB" and image.size == (64, 64)


def test_captions_name_every_thing(world):
    data = json.loads((world / "panoptic.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    isthing = {c["id"]: c["isthing"] for c in data["categories"]}
    captions = [json.loads(line) for line in (world / "captions.jsonl").read_text().splitlines()]
    assert len(captions) == 40
    for ann, cap in zip(data["annotations"], captions):
        assert cap["image"] == "images/" + ann["file_name"]
        for seg in ann["segments_info"]:
            if isthing[seg["category_id"]]:
                name = names[seg["category_id"]]
                assert name in cap["caption"] or PLURALS[name] in cap["caption"], cap


def test_background_is_named_at_rate_p_stuff():
    rng = np.random.default_rng(0)
    stuff = [("steel plate", 3000), ("cloth", 900)]
    named = sum("steel plate" in make_caption(rng, ["bolt"], stuff, p_stuff=0.15) for _ in range(4000))
    assert 0.12 < named / 4000 < 0.18
    assert make_caption(rng, [], stuff).endswith(("a steel plate", "next to a cloth"))


def test_vocab_file_matches_categories(world):
    vocab = load_vocabulary(world / "vocab.txt")
    assert list(vocab.names) == [c.name for c in CATEGORIES]
    assert vocab.num_things == 10


def test_no_tiny_segments_at_other_sizes():
    for i in range(30):
        scene = make_scene(np.random.default_rng([5, i]), size=96)
        assert all(s.area >= 10 for s in scene.segments)
        assert (scene.panoptic_ids() > 0).all()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "0"], "--n must be positive"),
        (["--n", "3", "--size", "60"], "--size 60 is not a positive multiple of the patch size 8"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "densevlm", "synth", "--out", str(tmp_path / "w"), *args],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unwritable_out_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DenseVLMError, match="cannot write there"):
        write_world(blocker / "world", 2, progress=False)


def test_overwrite_with_fewer_scenes_leaves_no_old_scene_and_keeps_other_files(tmp_path):
    out = tmp_path / "w"

    def synth(*args):
        proc = subprocess.run([sys.executable, "-m", "densevlm", "synth", "--out", str(out), *args],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr

    synth("--n", "6", "--defect-rate", "0.5")
    (out / "notes.txt").write_text("mine")
    (out / "images" / "mine.png").write_bytes((out / "images" / "000000.png").read_bytes())
    synth("--n", "3", "--overwrite")
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.png", "000001.png", "000002.png", "mine.png"]
    assert sorted(p.name for p in (out / "panoptic").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert len(json.loads((out / "panoptic.json").read_text())["images"]) == 3
    assert not (out / "inspection.json").exists()  # the new world is not an inspection world
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("to_group", [True, False], ids=["ctrl-c", "parent-only"])
def test_an_interrupted_synth_stops_with_its_workers(tmp_path, to_group):
    # a ProcessPoolExecutor once waited for every queued scene and could hang on a worker the signal hit
    import os
    import signal
    import time
    from pathlib import Path

    from tests.processes import children, running

    src = Path(__file__).resolve().parents[2] / "src"
    out = tmp_path / "world"
    proc = subprocess.Popen([sys.executable, "-m", "densevlm", "synth", "--out", str(out), "--n", "1000000",
                             "--workers", "2"], env={**os.environ, "PYTHONPATH": str(src)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not any((out / "images").glob("*.png")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no scene written in 300 s"
        time.sleep(0.05)
    workers = children(proc.pid)
    assert len(workers) == 2
    if to_group:
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does
    else:
        proc.send_signal(signal.SIGINT)  # as `timeout -s INT` does
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert not [pid for pid in workers if running(pid)]
    assert not (out / "panoptic.json").exists()
