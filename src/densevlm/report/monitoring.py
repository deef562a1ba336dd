"""The report's line-monitoring section: the drift reports of ``densevlm monitor --history DIR`` over time.

Each ``*.json`` in the history folder is one batch's drift report as ``densevlm monitor`` writes
it (:func:`densevlm.inspection.monitor.compare` documents the statistics); the section reads:

* ``created`` -- when the batch was checked, ``YYYY-MM-DDTHH:MM:SSZ`` (UTC);
* ``verdict`` -- ``"stable"`` or ``"drift"``; ``fired`` -- the signals named as fired;
  ``actions`` -- what to do, one line per fired signal;
* ``signals`` -- ``{name: {"p_value": p, "p_adjusted": q, "fired": bool, ...}}``;
* ``rule`` -- ``"weighted-simes"`` and ``alpha``: the batch drifted when some signal's
  Benjamini-Hochberg adjusted (weighted) p-value ``p_adjusted`` is ``<= alpha`` (Simes' test), and
  those signals fired.
  Reports written before that rule have no ``rule`` and no ``p_adjusted`` but ``alpha_per_signal``
  (Bonferroni: drift when some p-value is below ``alpha / m``, ``m`` signals); they are read as
  ``p_adjusted = min(1, m p)`` against ``alpha = m * alpha_per_signal``, the same verdict (their
  named signals are Holm's, which can include a point below the line);
* optionally ``batch`` (the inputs checked) and ``n_batch`` (its images).

Batches are shown in the order of ``created`` (file name breaks ties), not of file names. The
plot draws ``-log10`` of the adjusted p-value per signal and batch with the threshold
``-log10 alpha``: a point on or above the line is a signal that fired, and a batch with one
drifted. Like the rest of the report, this reads files only and never imports the inspection
code.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from densevlm.errors import DenseVLMError
from densevlm.report.plots import img_tag, signals_over_time

__all__ = ["Batch", "load_history", "neg_log10", "summary_line", "monitoring_section", "P_CAP"]

P_CAP = 1e-10
"""p-values below this are drawn at ``-log10(P_CAP)`` (the top of the plot) so one extreme batch keeps the rest readable."""

_HINT = "a drift report of `densevlm monitor --history DIR`"


@dataclass
class Batch:
    """One batch's drift report, checked (fields as in the module docstring)."""

    path: Path
    created: datetime
    verdict: str
    fired: list[str]
    actions: list[str]
    p_values: dict[str, float]
    p_adjusted: dict[str, float]
    alpha: float
    rule: str
    inputs: list[str]
    n_images: Any


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _p_value(value: Any) -> bool:
    """A p-value in [0, 1], or NaN (a test that could not be computed: drawn as a gap, never fired)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (math.isnan(value) or 0.0 <= value <= 1.0)


def _batch(path: Path, doc: Any) -> Batch:
    """Check the layout of ``doc`` (read from ``path``); one :class:`DenseVLMError` line naming ``path`` otherwise."""
    problem = None
    created = None
    if not isinstance(doc, dict):
        problem = "not a JSON object"
    elif doc.get("verdict") not in ("stable", "drift"):
        problem = "'verdict' must be \"stable\" or \"drift\""
    elif not isinstance(doc.get("signals"), dict) or not doc["signals"] or not all(
            isinstance(s, dict) and _p_value(s.get("p_value")) and isinstance(s.get("fired"), bool)
            for s in doc["signals"].values()):
        problem = "'signals' must map each signal to its 'p_value' (in [0, 1]) and 'fired'"
    elif (not isinstance(doc.get("fired"), list) or not all(isinstance(f, str) for f in doc["fired"])
          or sorted(doc["fired"]) != sorted(n for n, s in doc["signals"].items() if s["fired"])):
        problem = "'fired' must list the signals marked fired"
    elif (doc["verdict"] == "drift") != bool(doc["fired"]):
        problem = f"verdict {doc['verdict']!r} disagrees with the fired signals {doc['fired']}"
    elif not isinstance(doc.get("actions"), list) or not all(isinstance(a, str) for a in doc["actions"]):
        problem = "'actions' must be a list of lines"
    elif "rule" in doc and doc["rule"] != "weighted-simes":
        problem = (f"unknown decision rule {doc['rule']!r} (this version reads \"weighted-simes\" and older "
                   "Bonferroni reports)")
    elif "rule" in doc and (not _number(doc.get("alpha")) or not 0.0 < doc["alpha"] < 1.0):
        problem = "'alpha' must be a number in (0, 1)"
    elif "rule" in doc and not all(_p_value(s.get("p_adjusted")) for s in doc["signals"].values()):
        problem = "every signal needs its 'p_adjusted' in [0, 1]"
    elif "rule" in doc and any(s["fired"] != (s["p_adjusted"] <= doc["alpha"]) for s in doc["signals"].values()):
        problem = "'fired' disagrees with the adjusted p-values at 'alpha'"
    elif "rule" not in doc and (not _number(doc.get("alpha_per_signal")) or not 0.0 < doc["alpha_per_signal"] < 1.0):
        problem = "'alpha_per_signal' must be a number in (0, 1) (a report without 'rule')"
    else:
        try:
            created = datetime.strptime(str(doc.get("created")), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            problem = f"'created' must be a time YYYY-MM-DDTHH:MM:SSZ, not {doc.get('created')!r}"
    if problem:
        raise DenseVLMError(f"{path}: {problem} (expected {_HINT})")
    inputs = doc.get("batch")
    inputs = [str(i) for i in inputs] if isinstance(inputs, list) else [str(inputs)] if inputs else []
    p_values = {str(n): float(s["p_value"]) for n, s in doc["signals"].items()}
    if "rule" in doc:
        adjusted = {str(n): float(s["p_adjusted"]) for n, s in doc["signals"].items()}
        alpha, rule = float(doc["alpha"]), str(doc["rule"])
    else:  # Bonferroni: p < alpha / m  <=>  m p < alpha
        m = len(p_values)
        adjusted = {n: min(1.0, m * p) for n, p in p_values.items()}
        alpha, rule = m * float(doc["alpha_per_signal"]), "bonferroni"
    return Batch(path, created, doc["verdict"], [str(f) for f in doc["fired"]], list(doc["actions"]), p_values,
                 adjusted, alpha, rule, inputs, doc.get("n_batch", "?"))


def load_history(folder: str | Path) -> list[Batch]:
    """The drift reports in ``folder`` (its ``*.json`` files), sorted by ``created``, then file name.

    Raises:
        DenseVLMError: the folder is missing or holds no ``*.json`` (one line naming it), or a
            file is unreadable, not JSON or not of the layout in the module docstring (one line
            naming the file).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DenseVLMError(f"{folder}: monitoring history folder not found")
    files = sorted(p for p in folder.glob("*.json") if p.is_file())
    if not files:
        raise DenseVLMError(f"{folder}: no batch reports (*.json) in this monitoring history; "
                            "`densevlm monitor ... --history DIR` writes one per batch")
    batches = []
    for path in files:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DenseVLMError(f"{path}: not readable JSON ({e}; expected {_HINT})") from None
        batches.append(_batch(path, doc))
    return sorted(batches, key=lambda b: (b.created, b.path.name))


def neg_log10(p: float) -> float:
    """``-log10 p`` with ``p`` floored at :data:`P_CAP` (so 0 and extreme p-values are drawn at the top); NaN stays NaN."""
    return math.nan if math.isnan(p) else -math.log10(max(p, P_CAP))


def summary_line(batches: Sequence[Batch]) -> str:
    """``"3 of 12 batches drifted; last: stable"`` (the last in time; ``"last: drift (brightness)"`` names its signals)."""
    drifted = sum(b.verdict == "drift" for b in batches)
    last = batches[-1]
    fired = f" ({', '.join(last.fired)})" if last.fired else ""
    return (f"{drifted} of {len(batches)} batch{'es' if len(batches) != 1 else ''} drifted; "
            f"last: {last.verdict}{fired}")


def _signal_names(batches: Sequence[Batch]) -> list[str]:
    names: list[str] = []
    for b in batches:
        names += [n for n in b.p_values if n not in names]
    return names


def monitoring_section(batches: Sequence[Batch]) -> str:
    """The HTML of the section (heading included); empty when ``batches`` is empty."""
    if not batches:
        return ""
    names = _signal_names(batches)
    series = {n: [neg_log10(b.p_adjusted[n]) if n in b.p_values and not math.isnan(b.p_values[n]) else math.nan
                  for b in batches] for n in names}
    fired = {n: [n in b.fired for b in batches] for n in names}
    threshold = [neg_log10(b.alpha) for b in batches]
    body = ["<h2>Line monitoring</h2>", f"<p class='verdict'>{html.escape(summary_line(batches))}.</p>",
            "<p>Each batch was compared with the reference set by <code>densevlm monitor</code>. Each point is a "
            "signal's adjusted p-value (weighted Benjamini-Hochberg; Bonferroni for reports made before that rule); a point "
            "on or above the dotted line (the false-drift rate alpha) is a signal that fired and made its batch "
            f"drift; filled points are the signals named as fired. p-values below {P_CAP:g} are drawn at the top.</p>",
            img_tag(signals_over_time(series, fired, threshold, -math.log10(P_CAP)), "drift signals over batches"),
            "<table class='monitor'><tr><th>batch</th><th>checked (UTC)</th><th>images</th><th>verdict</th>"
            "<th>signals fired</th><th>suggested action</th></tr>"]
    for i, b in enumerate(batches, 1):
        label = html.escape(", ".join(b.inputs) or b.path.name)
        body.append(f"<tr><td>{i}. {label}</td><td>{b.created:%Y-%m-%d %H:%M:%S}</td>"
                    f"<td>{html.escape(str(b.n_images))}</td><td>{b.verdict}</td>"
                    f"<td>{html.escape(', '.join(b.fired)) or '&ndash;'}</td>"
                    f"<td>{'<br>'.join(html.escape(a) for a in b.actions) or '&ndash;'}</td></tr>")
    body.append("</table>")
    return "\n".join(body)
