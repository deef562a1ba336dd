"""``densevlm segment`` with its finish step in worker processes: the same files as in one thread,
a bad image in the middle is one line, a rerun keeps the earlier summary rows, a multi-frame image
is one warning line, and Ctrl-C or a killed command leaves no worker process behind."""

from __future__ import annotations

import csv
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from densevlm.cli.main import main
from densevlm.data.synth import generate_scene
from tests.processes import children, running

SRC = Path(__file__).resolve().parents[2] / "src"
GOOD = 12  # 10 scenes, an animated GIF and a two-page TIFF


def _scene(index: int) -> Image.Image:
    return Image.fromarray(generate_scene(seed=21, index=index, size=64).image)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("segment-pool") / "in"
    folder.mkdir()
    for i in range(10):
        _scene(i).save(folder / f"{i:02d}.png")
    (folder / "05-bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png after all")  # in the middle of the run
    frames = [_scene(20 + i) for i in range(3)]
    frames[0].save(folder / "07-anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(folder / "08-pages.tif", save_all=True, append_images=frames[1:2])
    return folder


@pytest.fixture
def segment(tmp_path, monkeypatch, capsys):
    """``densevlm segment INPUTS --out OUT ...`` in this process: ``(status, stdout, stderr)``; the logging
    main configures is undone."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DENSEVLM_CACHE", str(tmp_path / "cache"))
    logger = logging.getLogger("densevlm")
    saved = (logger.handlers[:], logger.level, logger.propagate, logging.getLogger().level)

    def run(folder: Path, out: str, *args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(["segment", str(folder), "--model", "tiny-student", "--out", out, "--batch-size", "3", *args])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    yield run
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
    logging.getLogger().setLevel(saved[3])


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def _lines(err: str, word: str) -> list[str]:
    return [line for line in err.replace("\r", "\n").splitlines() if word in line]


def test_worker_processes_write_the_files_one_thread_writes(inputs, segment, tmp_path):
    runs = {}
    for workers in ("0", "2"):
        status, out, err = segment(inputs, f"out{workers}", "--workers", workers)
        assert status == 0, err
        assert f"segmented {GOOD} images (0 skipped with existing outputs, 1 failed, see summary.csv)" in out
        bad = _lines(err, "05-bad.png")
        assert len(bad) == 1 and "not a readable image" in bad[0], err
        assert _lines(err, "frames") == [f"{inputs / '07-anim.gif'}: 3 frames; using the first",
                                         f"{inputs / '08-pages.tif'}: 2 frames; using the first"], err
        assert "Traceback" not in err
        runs[workers] = tmp_path / f"out{workers}"
    files = sorted(p.name for p in runs["0"].iterdir())
    assert files == sorted(p.name for p in runs["2"].iterdir())
    assert len(files) == 3 * GOOD + 1  # three outputs per good image, and the summary
    for name in files:
        if name != "summary.csv":
            assert (runs["0"] / name).read_bytes() == (runs["2"] / name).read_bytes(), name
    rows = [_rows(run) for run in runs.values()]
    assert list(rows[0]) == list(rows[1]) == sorted(rows[0])  # input order
    for row in (*rows[0].values(), *rows[1].values()):
        del row["seconds"]
    assert rows[0] == rows[1]
    assert [row["status"] for row in rows[1].values()].count("ok") == GOOD


def test_a_rerun_keeps_the_rows_of_the_images_it_skips(inputs, segment, tmp_path):
    assert segment(inputs, "out")[0] == 0
    first = (tmp_path / "out" / "summary.csv").read_text()
    status, out, err = segment(inputs, "out")
    assert status == 0, err
    assert f"segmented 0 images ({GOOD} skipped with existing outputs, 1 failed, see summary.csv)" in out
    assert (tmp_path / "out" / "summary.csv").read_text() == first  # status, reason, seconds as they were
    (tmp_path / "out" / "03.png.json").unlink()
    assert segment(inputs, "out")[0] == 0
    before, after = _rows_of(first), _rows(tmp_path / "out")
    assert after["03.png"]["status"] == "ok" and after["03.png"]["segments"] == before["03.png"]["segments"]
    assert {k: v for k, v in after.items() if k != "03.png"} == {k: v for k, v in before.items() if k != "03.png"}


def test_a_rerun_with_other_settings_refuses_the_folder_of_another_run(inputs, segment, tmp_path):
    assert segment(inputs, "out")[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    for extra, said in ((["--model", "tiny-teacher"], "model tiny-student, not tiny-teacher"),
                        (["--size", "96"], "input size 64, not 96"), (["--min-area", "1"], ", not 1)"),
                        (["--vocab", str(_vocab(tmp_path))], "vocabulary 16 classes, not 2 classes")):
        status, out, err = segment(inputs, "out", *extra)
        assert status == 2 and [line for line in err.splitlines() if "error" in line] == [err.splitlines()[-1]], err
        assert "holds another run's outputs" in err and said in err and "--overwrite" in err, err
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before  # nothing redone or rewritten
    status, out, err = segment(inputs, "out", "--size", "96", "--overwrite")
    assert status == 0 and f"segmented {GOOD} images (0 skipped" in out, err


def _vocab(tmp_path: Path) -> Path:
    path = tmp_path / "two.txt"
    path.write_text("[things]\nbolt\n[stuff]\nconcrete floor\n", encoding="utf-8")
    return path


def _rows_of(text: str) -> dict[str, dict[str, str]]:
    return {row["name"]: row for row in csv.DictReader(text.splitlines())}


# ``densevlm segment`` whose model holds still from its 4th batch on (until the process is signalled),
# after touching the marker file: the run cannot end by itself, whatever the machine's speed
_HELD_SEGMENT = """
import sys, time
from pathlib import Path
from densevlm.cli.main import main
from densevlm.model import DenseModel

marker, calls, real = Path(sys.argv[1]), [0], DenseModel.encode_dense

def encode_dense(self, images):
    calls[0] += 1
    if calls[0] > 3:
        marker.touch()
        while True:
            time.sleep(0.01)
    return real(self, images)

DenseModel.encode_dense = encode_dense
sys.exit(main(sys.argv[2:]))
"""
HELD_IMAGES = 40


def _start_long_run(tmp_path: Path) -> tuple[subprocess.Popen, set[int]]:
    """A ``segment`` subprocess in its own session over 40 scenes whose model holds still at its 4th batch
    of 2, once that has happened and the first image is written; and its worker processes."""
    folder = tmp_path / "many"
    folder.mkdir()
    _scene(0).save(folder / "0000.png")
    data = (folder / "0000.png").read_bytes()
    for i in range(1, HELD_IMAGES):
        (folder / f"{i:04d}.png").write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "DENSEVLM_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    marker = tmp_path / "held"
    # A command started from a terminal has SIGINT at its default. A test run started as a background job
    # (`nohup`, `&` in a script) has it ignored, the command would inherit that (Python keeps an ignored
    # SIGINT), and Ctrl-C could not mean anything: the command gets the terminal's default back.
    proc = subprocess.Popen([sys.executable, "-c", _HELD_SEGMENT, str(marker), "segment", str(folder), "--model",
                             "tiny-student", "--out", str(tmp_path / "out"), "--workers", "2", "--batch-size", "2"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not (marker.exists() and any((tmp_path / "out").glob("*.json"))):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not reach its 4th batch in 300 s"
        time.sleep(0.05)
    workers = children(proc.pid)
    assert len(workers) >= 2
    return proc, workers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_the_command_and_its_workers(tmp_path):
    proc, workers = _start_long_run(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: to every process of the command
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    rows = _rows(tmp_path / "out")
    assert 0 < len(rows) <= 6 and {row["status"] for row in rows.values()} == {"ok"}  # 3 batches of 2 at most
    assert not [pid for pid in workers if running(pid)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_leave_when_the_command_is_killed(tmp_path):
    proc, workers = _start_long_run(tmp_path)
    proc.kill()
    proc.communicate(timeout=300)
    deadline = time.monotonic() + 120
    while [pid for pid in workers if running(pid)]:
        assert time.monotonic() < deadline, "worker processes outlived the killed command"
        time.sleep(0.1)


def test_an_input_size_below_one_patch_is_one_line_before_any_image(inputs, segment, tmp_path):
    status, out, err = segment(inputs, "small", "--size", "7")
    lines = err.strip().splitlines()
    assert status == 2 and lines[-1] == ("densevlm segment: error: input size 7 is smaller than one patch of the "
                                         "model (8 px); use --size 8 or more")
    assert "unreadable" not in err + out and not list((tmp_path / "small").glob("*.json"))


def test_an_input_named_like_an_output_is_refused_before_any_work(segment, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _scene(1).save(folder / "p.png")
    _scene(2).save(folder / "p.png.overlay.png")  # a photo, not an earlier output (no p.png.json beside it)
    before = (folder / "p.png.overlay.png").read_bytes()
    status, out, err = segment(folder, str(folder))
    assert status == 2 and f"{folder / 'p.png.overlay.png'}: an input image, and the name of an output for" in err
    assert (folder / "p.png.overlay.png").read_bytes() == before and not (folder / "p.png.json").exists()
