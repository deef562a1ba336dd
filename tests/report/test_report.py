"""The HTML report: content from run directories, self-contained, and clean in a real browser."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from densevlm.errors import DenseVLMError
from densevlm.report import build_report, load_run, verdict, write_report

NAMES = ["bolt", "nut", "steel plate", "floor"]
THING = [True, True, False, False]


def _eval(fg: float, stuff: float, thing: float, confusion: list[list[int]]) -> dict:
    per_class = [{"class": n, "isthing": t, "n": 10, "box_acc1": thing if t else stuff, "box_acc5": 90.0,
                  "box_pred_thing": 50.0, "mask_acc1": 40.0, "mask_acc5": 90.0, "mask_pred_thing": 50.0, "iou": 30.0}
                 for n, t in zip(NAMES, THING)]
    ev = {f"{k}.{g}.macc{i}": 50.0 for k in ("box", "mask", "crop") for g in ("thing", "stuff") for i in (1, 5)}
    ev.update({"box.fg_bias": fg, "box.bg_bias": 5.0, "mask.fg_bias": fg, "mask.bg_bias": 5.0, "box.stuff.macc1": stuff,
               "box.thing.macc1": thing, "miou": 33.0, "n_images": 7, "n_segments": 40, "per_class": per_class,
               "confusion": {"box": confusion, "mask": confusion}, "class_names": NAMES, "is_thing": THING})
    return ev


def _run(root: Path, name: str, method: str, after: dict, before: dict | None = None, samples: int = 0) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"method": method, "steps": 10}))
    (d / "eval.json").write_text(json.dumps(after))
    if before:
        (d / "eval_before.json").write_text(json.dumps(before))
    (d / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 6)) + "\n")
    (d / "retrieval.json").write_text(json.dumps({"overall": {"regions": 100, "kept_frac": 0.9, "thing_frac": 0.2,
                                                              "top_categories": [["floor", 40], ["bolt", 12]]}}))
    if samples:
        (d / "samples").mkdir()
        for i in range(samples):
            Image.fromarray(np.full((16, 16, 3), 40 * i, dtype=np.uint8)).save(d / "samples" / f"{i}.overlay.png")
    return d


# ground truth rows (thing, thing, stuff, stuff) x predictions
BIASED = [[8, 2, 0, 0], [1, 9, 0, 0], [6, 2, 2, 0], [5, 3, 0, 2]]
FIXED = [[9, 1, 0, 0], [0, 10, 0, 0], [0, 0, 10, 0], [1, 0, 0, 9]]


@pytest.fixture
def runs(tmp_path):
    before = _eval(83.0, 8.0, 30.0, BIASED)
    a = _run(tmp_path, "densevlm", "densevlm", _eval(4.0, 77.0, 45.0, FIXED), before, samples=2)
    b = _run(tmp_path, "clipself", "clipself", _eval(87.0, 10.0, 61.0, BIASED), before)
    return [a, b]


def test_verdict_names_the_foreground_bias_before_and_after(runs):
    records = [load_run(r) for r in runs]
    text = verdict(records[0].before, records)
    assert "83&nbsp;% &rarr; 4&nbsp;%" in text
    assert "8&nbsp;% &rarr; 77&nbsp;%" in text
    assert "CLIPSelf baseline: things 61" in text


def test_report_is_self_contained(runs, tmp_path):
    out = write_report(runs, tmp_path / "r.html", title="T", commands=["densevlm demo"])
    page = out.read_text()
    assert "http://" not in page and "https://" not in page  # no network resources
    images = page.count("<img ")
    assert images >= 6  # bars, confusion, 2 retrieval, training curves, samples
    for chunk in page.split('src="data:image/png;base64,')[1:]:
        data = base64.b64decode(chunk.split('"', 1)[0])
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<td>student before adaptation</td>" in page and "<td>densevlm</td>" in page
    assert "densevlm demo" in page


def test_review_statistics_come_from_their_json(runs, tmp_path):
    stats = {"agreement": {"decided": 4, "right": 3, "rate": 0.75}, "regions": {"total": 9},
             "trusted_threshold": {"threshold": 0.6, "covers": 2, "precision": 1.0, "target": 0.95}}
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(stats))
    page = write_report(runs, tmp_path / "r.html", review_stats=path).read_text()
    assert "<h2>Expert review</h2>" in page
    assert "<li>agreement: {&#x27;decided&#x27;: 4, &#x27;right&#x27;: 3, &#x27;rate&#x27;: 0.75}</li>" in page
    assert "<li>trusted threshold: {&#x27;threshold&#x27;: 0.6," in page
    assert "Expert review" not in write_report(runs, tmp_path / "plain.html").read_text()
    with pytest.raises(DenseVLMError, match="nope.json: not found"):
        write_report(runs, tmp_path / "r2.html", review_stats=tmp_path / "nope.json")


def test_missing_evaluations_are_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DenseVLMError, match="no eval.json or eval_before.json"):
        load_run(tmp_path / "empty")
    with pytest.raises(DenseVLMError, match="run directory not found"):
        load_run(tmp_path / "nope")


@pytest.mark.browser
def test_report_renders_in_chromium_without_errors(runs, tmp_path):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    out = write_report(runs, tmp_path / "report.html")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())
        page.wait_for_load_state("load")
        broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
        total = page.evaluate("document.images.length")
        browser.close()
    assert total >= 6
    assert broken == 0
    assert errors == []
