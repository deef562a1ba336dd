"""Matplotlib figures for the report, each returned as PNG bytes (Agg backend, no display)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Sequence

import numpy as np

__all__ = ["per_class_bars", "group_confusion", "training_curves", "retrieval_bars", "roc_curves", "defect_confusion",
           "signals_over_time", "png_bytes", "img_tag"]

COLOURS = ["#8a8f98", "#1b7f5f", "#c2571a", "#3a5fc8", "#9b3fb5", "#b59b2a"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def img_tag(data: bytes, alt: str, css: str = "") -> str:
    """An ``<img>`` element with the PNG ``data`` embedded (base64), so the page needs no other file."""
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" class="{css}" src="data:image/png;base64,{encoded}">'


def per_class_bars(names: Sequence[str], series: dict[str, Sequence[float]], is_thing: Sequence[bool], title: str) -> bytes:
    """Grouped bars: one group per class (things first), one bar per model; NaN shown as empty."""
    plt = _plt()
    k, m = len(names), len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * k + 1.5), 3.4))
    width = 0.8 / max(1, m)
    x = np.arange(k)
    for i, (label, values) in enumerate(series.items()):
        vals = np.nan_to_num(np.asarray(values, dtype=float), nan=0.0)
        ax.bar(x + (i - (m - 1) / 2) * width, vals, width, label=label, color=COLOURS[i % len(COLOURS)])
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    split = sum(is_thing) - 0.5
    ax.axvline(split, color="#444", linestyle=":", linewidth=1)
    ax.text(split - 0.2, 96, "things", ha="right", va="top", fontsize=8)
    ax.text(split + 0.2, 96, "stuff", ha="left", va="top", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncols=min(m, 4), loc="upper center", bbox_to_anchor=(0.5, -0.35))
    return png_bytes(fig)


def group_confusion(panels: dict[str, np.ndarray]) -> bytes:
    """Thing/stuff confusion (rows: ground truth, columns: prediction, row-normalised %) per model."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.9 * len(panels), 2.7), squeeze=False)
    for ax, (label, matrix) in zip(axes[0], panels.items()):
        rows = matrix.sum(axis=1, keepdims=True)
        share = np.where(rows > 0, 100.0 * matrix / np.maximum(rows, 1), 0.0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=100)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{share[i, j]:.0f}%", ha="center", va="center", color="white" if share[i, j] > 55 else "black")
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["thing", "stuff"])
        ax.set_yticks([0, 1])
        ax.set_yticklabels(["thing", "stuff"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("ground truth")
        ax.set_title(label, fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


def training_curves(runs: dict[str, list[dict[str, Any]]]) -> bytes:
    """Training loss per step, one line per run."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 2.8))
    for i, (label, rows) in enumerate(runs.items()):
        steps = [r["step"] for r in rows if "loss" in r]
        loss = [r["loss"] for r in rows if "loss" in r]
        ax.plot(steps, loss, label=label, color=COLOURS[(i + 1) % len(COLOURS)])
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def retrieval_bars(top: Sequence[Sequence[Any]], title: str) -> bytes:
    """Horizontal bars of the categories the teacher retrieved most often."""
    plt = _plt()
    names = [str(n) for n, _ in top][::-1]
    counts = [int(c) for _, c in top][::-1]
    fig, ax = plt.subplots(figsize=(5.0, 0.3 * len(names) + 1.0))
    ax.barh(names, counts, color=COLOURS[1])
    ax.set_xlabel("regions")
    ax.set_title(title, fontsize=10)
    return png_bytes(fig)


def roc_curves(curves: dict[str, tuple[Sequence[float], Sequence[float]]], false_alarm: float) -> bytes:
    """Image-level ROC, one line per model: ``{label: (false-alarm rates, recalls)}`` (both in [0, 1],
    drawn as %), with a dotted line at the chosen ``false_alarm`` rate."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    for i, (label, (fa, recall)) in enumerate(curves.items()):
        ax.plot(100 * np.asarray(fa, dtype=float), 100 * np.asarray(recall, dtype=float), label=label,
                color=COLOURS[i % len(COLOURS)])
    ax.plot([0, 100], [0, 100], color="#bbb", linewidth=0.8)
    ax.axvline(100 * false_alarm, color="#444", linestyle=":", linewidth=1)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("false alarms: OK items called NG (%)")
    ax.set_ylabel("recall: NG items caught (%)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return png_bytes(fig)


def defect_confusion(panels: dict[str, tuple[Sequence[str], Sequence[str], np.ndarray]]) -> bytes:
    """Defect confusion per model: ``{label: (row names, column names, counts [D, D + 1])}``, rows the
    ground-truth defect, columns what the model said (a defect or "not a defect"), row-normalised %."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), squeeze=False)
    for ax, (label, (rows, columns, counts)) in zip(axes[0], panels.items()):
        counts = np.asarray(counts, dtype=float).reshape(len(rows), len(columns))
        total = counts.sum(axis=1, keepdims=True)
        share = np.where(total > 0, 100.0 * counts / np.maximum(total, 1), 0.0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=100)
        for i in range(share.shape[0]):
            for j in range(share.shape[1]):
                ax.text(j, i, f"{share[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 55 else "black")
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels(columns, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("ground truth")
        ax.set_title(label, fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


def signals_over_time(series: dict[str, Sequence[float]], fired: dict[str, Sequence[bool]], threshold: Sequence[float],
                      top: float) -> bytes:
    """Drift signals per batch in time order: ``{signal: [-log10 adjusted p per batch]}`` (NaN: not
    tested), ``fired`` the same shape (filled markers), ``threshold`` the per-batch ``-log10 alpha`` (dotted
    steps) and ``top`` the value capped p-values were drawn at (the y-axis limit)."""
    plt = _plt()
    n = len(threshold)
    x = np.arange(1, n + 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * n + 3.0), 3.4))
    markers = "osD^v<>pXh"
    for i, (name, values) in enumerate(series.items()):
        colour = f"C{i % 10}"  # matplotlib's ten distinct colours: eight signals need more than COLOURS
        y = np.asarray(values, dtype=float)
        hit = np.asarray(fired[name], dtype=bool)
        marker = markers[i % len(markers)]
        ax.plot(x, y, color=colour, linewidth=1, marker=marker, markersize=5, markerfacecolor="white", label=name)
        ax.plot(x[hit], y[hit], color=colour, linestyle="none", marker=marker, markersize=6)
    ax.stairs(threshold, np.arange(n + 1) + 0.5, color="#444", linestyle=":", linewidth=1.2, label="threshold alpha")
    ax.set_xlim(0.5, n + 0.5)
    ax.set_ylim(0, top * 1.05)
    if n <= 30:
        ax.set_xticks(x)
    ax.set_xlabel("batch (in time order)")
    ax.set_ylabel("-log10 adjusted p-value")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return png_bytes(fig)
