"""The before/after HTML report (self-contained, readable by a manager)."""

from densevlm.report.html import build_report, load_run, verdict, write_report

__all__ = ["build_report", "load_run", "verdict", "write_report"]
