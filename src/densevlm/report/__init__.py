"""The before/after HTML report (self-contained, readable by a manager)."""

from densevlm.report.html import build_report, load_run, verdict, write_report
from densevlm.report.inspection import inspection_section, recall_at
from densevlm.report.monitoring import load_history, monitoring_section

__all__ = ["build_report", "inspection_section", "load_history", "load_run", "monitoring_section", "recall_at", "verdict",
           "write_report"]
