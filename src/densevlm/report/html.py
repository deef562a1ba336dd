"""One self-contained HTML report from training run directories (images embedded, no network).

A run directory is what ``densevlm train --out DIR --val-data ...`` writes: ``config.yaml``,
``eval_before.json`` (the student before adaptation), ``eval.json`` (after), ``metrics.jsonl``,
``retrieval.json`` and optionally ``samples/*.overlay.png``; an evaluation JSON with inspection
metrics (``eval --inspection``) adds the inspection section (:mod:`densevlm.report.inspection`).
Review statistics come as the JSON file ``densevlm review stats --json`` writes, what review
taught as the ``review.json`` of ``densevlm demo`` (:mod:`densevlm.report.review`); the drift
reports of ``densevlm monitor --history DIR`` the line-monitoring section
(:mod:`densevlm.report.monitoring`). The report reads these *files* only; it never imports the
training, evaluation, inspection or review code.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from densevlm.errors import DenseVLMError
from densevlm.fileio import atomic_write_text
from densevlm.report.inspection import inspection_section, ng_overlays
from densevlm.report.monitoring import Batch, load_history, monitoring_section
from densevlm.report.plots import group_confusion, img_tag, per_class_bars, retrieval_bars, training_curves
from densevlm.report.review import check_taught, review_section

__all__ = ["RunRecord", "load_run", "build_report", "write_report", "verdict"]

COLUMNS = [
    ("box.thing.macc1", "things (box)"),
    ("box.stuff.macc1", "stuff (box)"),
    ("mask.thing.macc1", "things (mask)"),
    ("mask.stuff.macc1", "stuff (mask)"),
    ("box.fg_bias", "background called a part (box)"),
    ("mask.fg_bias", "background called a part (mask)"),
    ("miou", "mIoU"),
]


@dataclass
class RunRecord:
    """The files of one run directory, parsed."""

    path: Path
    name: str
    method: str
    config: dict[str, Any]
    before: Optional[dict[str, Any]]
    after: Optional[dict[str, Any]]
    history: list[dict[str, Any]]
    retrieval: Optional[dict[str, Any]]
    samples: list[Path] = field(default_factory=list)


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DenseVLMError(f"{path}: not valid JSON ({e})") from None


def load_run(path: str | Path) -> RunRecord:
    """Read a run directory; missing optional files are simply absent from the report."""
    import yaml

    path = Path(path)
    if not path.is_dir():
        raise DenseVLMError(f"{path}: run directory not found")
    config_file = path / "config.yaml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    before, after = _read_json(path / "eval_before.json"), _read_json(path / "eval.json")
    if after is None and before is None:
        raise DenseVLMError(f"{path}: no eval.json or eval_before.json (train with --val-data to evaluate)")
    history = []
    metrics = path / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            if line.strip():
                history.append(json.loads(line))
    retrieval = _read_json(path / "retrieval.json")
    samples = sorted((path / "samples").glob("*.overlay.png")) if (path / "samples").is_dir() else []
    return RunRecord(path, path.name, str(config.get("method", path.name)), config, before, after, history, retrieval, samples)


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    return f"{value:.1f}"


def verdict(base: dict[str, Any], runs: list[RunRecord]) -> str:
    """One paragraph a manager can read: the foreground bias before and after, and the cost."""
    dense = next((r for r in runs if r.method == "densevlm" and r.after), None) or next((r for r in runs if r.after), None)
    if dense is None:
        return "No adapted model was evaluated yet."
    a = dense.after
    parts = [
        f"Background misread as parts: <b>{base['box.fg_bias']:.0f}&nbsp;% &rarr; {a['box.fg_bias']:.0f}&nbsp;%</b> "
        f"of background regions after {html.escape(dense.method)} adaptation.",
        f"Surfaces named correctly (stuff, mean over classes): {base['box.stuff.macc1']:.0f}&nbsp;% &rarr; "
        f"{a['box.stuff.macc1']:.0f}&nbsp;%.",
        f"Parts and defects named correctly (things): {base['box.thing.macc1']:.0f}&nbsp;% &rarr; {a['box.thing.macc1']:.0f}&nbsp;%",
    ]
    clipself = next((r for r in runs if r.method == "clipself" and r.after), None)
    if clipself is not None and clipself is not dense:
        c = clipself.after
        parts[-1] += (f" (the CLIPSelf baseline: things {c['box.thing.macc1']:.0f}&nbsp;%, background misread as parts "
                      f"{c['box.fg_bias']:.0f}&nbsp;%)")
    parts[-1] += "."
    return " ".join(parts)


def _group_confusion(ev: dict[str, Any], kind: str = "box") -> np.ndarray:
    conf = np.asarray(ev["confusion"][kind], dtype=np.int64)
    thing = np.asarray(ev["is_thing"], dtype=bool)
    out = np.zeros((2, 2), dtype=np.int64)
    for gi, gmask in enumerate((thing, ~thing)):
        for pj, pmask in enumerate((thing, ~thing)):
            out[gi, pj] = conf[np.ix_(gmask, pmask)].sum()
    return out


def build_report(runs: list[RunRecord], title: str = "densevlm report", review: Optional[dict[str, Any]] = None,
                 base_samples: Optional[list[Path]] = None, commands: Optional[list[str]] = None,
                 false_alarm: float = 0.02, ng_images: Sequence[Path] = (),
                 taught: Optional[dict[str, Any]] = None, monitor: Sequence[Batch] = ()) -> str:
    """The HTML text of the report; ``false_alarm`` and ``ng_images`` feed the inspection section
    (:mod:`densevlm.report.inspection`), shown when an evaluation JSON holds inspection metrics;
    ``monitor`` (drift reports in time order, :func:`~densevlm.report.monitoring.load_history`) the
    line-monitoring section; ``review`` (statistics) and ``taught`` (what review taught) the review
    section (:mod:`densevlm.report.review`)."""
    if not runs:
        raise DenseVLMError("no run directories given")
    base = next((r.before for r in runs if r.before), None)
    rows = ([("student before adaptation", base)] if base else []) + [(r.name, r.after) for r in runs if r.after]
    ref = rows[0][1]
    body = [f"<h1>{html.escape(title)}</h1>"]
    body.append(f"<p class='meta'>Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from "
                f"{', '.join(html.escape(str(r.path)) for r in runs)}; evaluated on "
                f"{ref.get('n_images', '?')} held-out images, {ref.get('n_segments', '?')} regions.</p>")
    if base:
        body.append(f"<p class='verdict'>{verdict(base, runs)}</p>")
    body.append("<h2>Before and after</h2><table><tr><th>model</th>"
                + "".join(f"<th>{html.escape(label)}</th>" for _, label in COLUMNS) + "</tr>")
    for name, ev in rows:
        body.append(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{_pct(ev.get(k))}</td>" for k, _ in COLUMNS) + "</tr>")
    body.append("</table><p class='note'>Percentages. Accuracies are top-1 means over classes (the DenseVLM paper's "
                "protocol); 'background called a part' is the share of stuff regions whose top-1 class is a thing.</p>")
    names = ref["class_names"]
    is_thing = ref["is_thing"]
    series = {name: [row.get("box_acc1", float("nan")) for row in ev["per_class"]] for name, ev in rows}
    body.append("<h2>Per class</h2>" + img_tag(per_class_bars(names, series, is_thing, "box region accuracy per class"), "per-class accuracy"))
    panels = {name: _group_confusion(ev) for name, ev in rows}
    body.append("<h2>Things versus stuff</h2><p>Rows: what the region is; columns: what the model said. "
                "The lower-left cell is the foreground bias.</p>" + img_tag(group_confusion(panels), "thing/stuff confusion"))
    retrieval = [(r.name, r.retrieval["overall"]) for r in runs if r.retrieval and r.retrieval.get("overall", {}).get("regions")]
    if retrieval:
        body.append("<h2>What the teacher retrieved</h2>")
        for name, stats in retrieval:
            body.append(f"<p><b>{html.escape(name)}</b>: {stats['regions']} regions over the run (an image's regions "
                        f"counted each time it was drawn), kept {100 * stats['kept_frac']:.1f}&nbsp;% "
                        f"(confidence above the threshold), {100 * stats['thing_frac']:.1f}&nbsp;% of kept regions are things.</p>")
            if stats.get("top_categories"):
                body.append(img_tag(retrieval_bars(stats["top_categories"], f"{name}: most retrieved categories"), "retrieval"))
    curves = {r.name: [h for h in r.history if "loss" in h] for r in runs if r.history}
    if any(curves.values()):
        body.append("<h2>Training</h2>" + img_tag(training_curves(curves), "training loss"))
    sample_sets = ([("before", base_samples)] if base_samples else []) + [(r.name, r.samples) for r in runs if r.samples]
    if sample_sets:
        body.append("<h2>Samples</h2><div class='samples'>")
        for name, paths in sample_sets:
            body.append(f"<div class='col'><h3>{html.escape(name)}</h3>")
            for p in paths:
                body.append(img_tag(p.read_bytes(), f"{name} {p.name}", "sample"))
            body.append("</div>")
        body.append("</div>")
    body.append(inspection_section(rows, false_alarm, ng_images))
    body.append(monitoring_section(monitor))
    body.append(review_section(review, taught))
    body.append("<h2>How this was made</h2>")
    for cmd in commands or []:
        body.append(f"<pre>{html.escape(cmd)}</pre>")
    for r in runs:
        import yaml

        body.append(f"<details><summary>{html.escape(r.name)} configuration</summary><pre>"
                    f"{html.escape(yaml.safe_dump(r.config, sort_keys=True))}</pre></details>")
    return _PAGE.format(title=html.escape(title), body="\n".join(body))


def write_report(run_dirs: list[str | Path], out: str | Path, title: str = "densevlm report",
                 review_stats: Optional[str | Path] = None, base_samples: Optional[str | Path] = None,
                 commands: Optional[list[str]] = None, false_alarm: float = 0.02,
                 inspect_dir: Optional[str | Path] = None, taught: Optional[str | Path] = None,
                 monitor_history: Optional[str | Path] = None) -> Path:
    """Read the run directories (and the review JSONs, if given) and write the report atomically; returns its path.

    ``inspect_dir``: a ``densevlm inspect --out`` folder whose first NG overlays the inspection
    section shows; ``false_alarm``: the rate its recall is read at. ``taught``: what review
    taught (``review.json`` of ``densevlm demo``; layout in :mod:`densevlm.report.review`).
    ``monitor_history``: a ``densevlm monitor --history`` folder, one drift report per batch
    (layout in :mod:`densevlm.report.monitoring`).
    """
    runs = [load_run(d) for d in run_dirs]
    review = _read_json(Path(review_stats)) if review_stats else None
    if review_stats and review is None:
        raise DenseVLMError(f"{review_stats}: not found (write review statistics with `densevlm review stats --json FILE`)")
    taught_doc = _read_json(Path(taught)) if taught else None
    if taught and taught_doc is None:
        raise DenseVLMError(f"{taught}: not found (densevlm demo writes it as review.json)")
    if taught_doc is not None:
        check_taught(taught_doc, taught)
    samples = sorted(Path(base_samples).glob("*.overlay.png")) if base_samples and Path(base_samples).is_dir() else None
    ng_images = ng_overlays(inspect_dir) if inspect_dir else []
    batches = load_history(monitor_history) if monitor_history else []
    return atomic_write_text(out, build_report(runs, title, review, samples, commands, false_alarm, ng_images, taught_doc,
                                               batches))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }}
h1 {{ font-size: 1.6rem; }} h2 {{ margin-top: 2rem; border-bottom: 1px solid #ddd; }}
.verdict {{ font-size: 1.15rem; background: #eef6f1; border-left: 4px solid #1b7f5f; padding: .8rem 1rem; }}
.meta, .note {{ color: #666; font-size: .85rem; }}
table {{ border-collapse: collapse; font-size: .9rem; }} td, th {{ border: 1px solid #ccc; padding: .3rem .5rem; text-align: right; }}
td:first-child, th:first-child, table.monitor td {{ text-align: left; }}
img {{ max-width: 100%; }} .samples {{ display: flex; gap: 1rem; flex-wrap: wrap; }}
.col {{ flex: 1 1 200px; }} img.sample {{ width: 100%; margin-bottom: .5rem; image-rendering: pixelated; }}
pre {{ background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: .8rem; }}
</style></head><body>
{body}
</body></html>
"""
