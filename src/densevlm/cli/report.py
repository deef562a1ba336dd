"""Write a self-contained HTML report (images embedded, no network) from training run directories.

Each RUN_DIR is a `densevlm train --out DIR --val-data ...` directory: the report shows the
student before adaptation and every run after it (thing/stuff accuracy, the foreground-bias
rate, mIoU), per-class bars, the thing/stuff confusion, what the teacher retrieved, training
curves, sample overlays, the configuration and, with --review-stats, the expert review's statistics.
A verdict paragraph sits on top.

Example:
  densevlm report demo/densevlm demo/clipself --out demo/report.html
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training run directories")
    p.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    p.add_argument("--title", default="densevlm: adapting a VLM to the plant's images", help="report title")
    p.add_argument("--review-stats", metavar="FILE", help="review statistics JSON (`densevlm review stats --json FILE`)")
    p.add_argument("--before-samples", default=None, help="folder of *.overlay.png of the model before adaptation")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    from densevlm.cli._common import existing_paths
    from densevlm.fileio import check_output
    from densevlm.report import write_report

    inputs = existing_paths(*args.runs, args.review_stats, args.before_samples)
    check_output(args.out, "file", inputs=inputs, overwrite=args.overwrite)
    path = write_report(args.runs, args.out, args.title, args.review_stats, args.before_samples)
    print(path)
    return 0
