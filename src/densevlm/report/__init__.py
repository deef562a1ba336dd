"""The before/after HTML report (self-contained, readable by a manager)."""

from densevlm.report.html import build_report, load_run, verdict, write_report
from densevlm.report.inspection import inspection_section, recall_at

__all__ = ["build_report", "inspection_section", "load_run", "recall_at", "verdict", "write_report"]
