"""Human-readable output of evaluation metrics: a terminal table and a per-class CSV."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from densevlm.fileio import atomic_write_text

__all__ = ["format_table", "write_per_class_csv"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "  -  " if math.isnan(value) else f"{value:5.1f}"
    return str(value)


def format_table(metrics: dict[str, Any], title: str = "") -> str:
    """The protocol's numbers as a small fixed-width table (percentages)."""
    lines = [title] if title else []
    lines.append(f"{'':6} {'thing@1':>8} {'thing@5':>8} {'stuff@1':>8} {'stuff@5':>8} {'fg_bias':>8} {'bg_bias':>8}")
    for kind in ("box", "mask", "crop"):
        if f"{kind}.thing.macc1" not in metrics:
            continue
        cells = [metrics[f"{kind}.{g}.macc{k}"] for g in ("thing", "stuff") for k in (1, 5)]
        cells += [metrics[f"{kind}.fg_bias"], metrics[f"{kind}.bg_bias"]]
        lines.append(f"{kind:6} " + " ".join(f"{_fmt(c):>8}" for c in cells))
    tail = []
    if "miou" in metrics:
        tail.append(f"mIoU {_fmt(metrics['miou']).strip()}  pixel acc {_fmt(metrics['pixel_acc']).strip()}")
    tail.append(f"{metrics.get('n_images', 0)} images, {metrics.get('n_segments', 0)} segments")
    if metrics.get("n_skipped"):
        tail.append(f"{metrics['n_skipped']} skipped")
    lines.append("  ".join(tail))
    return "\n".join(lines)


def write_per_class_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """One row per class and feature type (atomic write)."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.2f}" if isinstance(v, float) else v) for k, v in row.items()})
    return atomic_write_text(path, buf.getvalue())
