"""The report's inspection section: OK / NG detection per model, read from evaluation JSON files.

Its input is the *inspection block* of an evaluation JSON: the ``inspection.*`` keys that
``densevlm eval --inspection`` (and ``densevlm demo``) write (:mod:`densevlm.inspection.evaluate`
documents them): ``inspection.roc`` (``{"false_alarm": [...], "recall": [...]}``, the image-level
ROC corners), ``inspection.image_auroc``, ``inspection.aupro``, ``inspection.confusion``
(``{"defects", "columns", "counts"}``), ``inspection.n_ok`` / ``n_ng``. NG overlays come from a
``densevlm inspect --out`` folder (``verdicts.csv`` and ``overlays/``). Like the rest of the
report, this reads files only and never imports the inspection code.

The recall at the chosen false-alarm rate ``r`` is read off the ROC: the largest recall among
the corners whose false-alarm rate is at most ``r`` (what a threshold allowing at most ``r`` of
the evaluated OK items to be called NG catches).
"""

from __future__ import annotations

import csv
import html
import math
from pathlib import Path
from typing import Any, Optional, Sequence

from densevlm.errors import DenseVLMError
from densevlm.report.plots import defect_confusion, img_tag, roc_curves

__all__ = ["inspection_block", "recall_at", "ng_overlays", "inspection_section"]


def inspection_block(ev: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The ``inspection.*`` keys of an evaluation JSON without their prefix (empty when it has none)."""
    if not ev:
        return {}
    return {k[len("inspection."):]: v for k, v in ev.items() if k.startswith("inspection.")}


def recall_at(roc: dict[str, Sequence[float]], false_alarm: float) -> float:
    """Recall (in [0, 1]) at false-alarm rate ``false_alarm`` read off ``roc`` (see the module
    docstring); NaN when the curve is empty (no OK or no NG items were evaluated)."""
    fa, recall = roc.get("false_alarm", []), roc.get("recall", [])
    if len(fa) != len(recall):
        raise DenseVLMError(f"inspection.roc: {len(fa)} false-alarm rates but {len(recall)} recalls")
    allowed = [r for f, r in zip(fa, recall) if f <= false_alarm + 1e-12]
    return float(max(allowed)) if allowed else float("nan")


def ng_overlays(folder: str | Path, limit: int = 4) -> list[Path]:
    """Up to ``limit`` overlays of NG items from a ``densevlm inspect --out`` folder, in ``verdicts.csv`` order."""
    folder = Path(folder)
    table = folder / "verdicts.csv"
    if not table.is_file():
        raise DenseVLMError(f"{folder}: no verdicts.csv (give the --out folder of `densevlm inspect`)")
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"image", "verdict", "overlay"} <= set(rows[0]):
        raise DenseVLMError(f"{table}: needs the columns image, verdict and overlay (written by `densevlm inspect`)")
    paths = [folder / r["overlay"] for r in rows if r["verdict"] == "NG" and r["overlay"]]
    inside = folder.resolve()
    return [p for p in paths if p.resolve().is_relative_to(inside) and p.is_file()][:limit]


def _fmt(value: Any, scale: float = 100.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    return f"{scale * value:.1f}"


def inspection_section(rows: Sequence[tuple[str, dict[str, Any]]], false_alarm: float = 0.02,
                       overlays: Sequence[Path] = ()) -> str:
    """HTML of the section for ``(model label, evaluation JSON)`` rows; empty when no row has an
    inspection block (and no overlays are given).

    Args:
        rows: models in display order; rows without an inspection block are left out.
        false_alarm: the chosen false-alarm rate in [0, 1) (e.g. 0.02 for 2 %).
        overlays: PNG files of NG items to show (see :func:`ng_overlays`).
    """
    if not 0.0 <= false_alarm < 1.0:
        raise DenseVLMError(f"false-alarm rate {false_alarm} must be in [0, 1)")
    blocks = [(name, inspection_block(ev)) for name, ev in rows]
    blocks = [(name, b) for name, b in blocks if b.get("roc")]
    if not blocks and not overlays:
        return ""
    pct = f"{100 * false_alarm:g}&nbsp;%"
    body = [f"<h2>Inspection: OK or NG</h2><p>An item is NG when it holds a defect. The threshold is set so that at "
            f"most {pct} of the OK items are called NG (false alarms); the recall is the share of NG items caught "
            "then.</p>"]
    if blocks:
        body.append(f"<table><tr><th>model</th><th>recall at {pct} false alarms</th><th>image AUROC</th>"
                    "<th>AUPRO</th><th>OK / NG items</th></tr>")
        for name, b in blocks:
            body.append(f"<tr><td>{html.escape(name)}</td><td>{_fmt(recall_at(b['roc'], false_alarm))}</td>"
                        f"<td>{_fmt(b.get('image_auroc'))}</td><td>{_fmt(b.get('aupro'))}</td>"
                        f"<td>{b.get('n_ok', '?')} / {b.get('n_ng', '?')}</td></tr>")
        body.append("</table><p class='note'>Percentages. AUROC: the chance that an NG item scores above an OK item; "
                    "AUPRO: pixel-level overlap with the defects up to 30&nbsp;% false-positive rate.</p>")
        curves = {name: (b["roc"]["false_alarm"], b["roc"]["recall"]) for name, b in blocks}
        body.append(img_tag(roc_curves(curves, false_alarm), "ROC curves"))
        panels = {name: (b["confusion"]["defects"], b["confusion"]["columns"], b["confusion"]["counts"])
                  for name, b in blocks if b.get("confusion", {}).get("defects")}
        if panels:
            body.append("<h3>Which defect</h3><p>Rows: the defect an item holds; columns: the class the model "
                        "gave its pixels (% of each row).</p>" + img_tag(defect_confusion(panels), "defect confusion"))
    if overlays:
        body.append("<h3>Items called NG</h3><div class='samples'>")
        body += [f"<div class='col'>{img_tag(p.read_bytes(), p.name, 'sample')}</div>" for p in overlays]
        body.append("</div>")
    return "\n".join(body)
