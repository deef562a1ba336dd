"""Write a self-contained HTML report (images embedded, no network) from training run directories.

Each RUN_DIR is a `densevlm train --out DIR --val-data ...` directory: the report shows the
student before adaptation and every run after it (thing/stuff accuracy, the foreground-bias
rate, mIoU), per-class bars, the thing/stuff confusion, what the teacher retrieved, training
curves, sample overlays, the configuration and, with --review-stats, the expert review's statistics.
A verdict paragraph sits on top. When an evaluation JSON of a run holds inspection metrics
(`densevlm eval --inspection`, or the demo's), an inspection section shows the ROC curve per model,
the recall at --false-alarm and the defect confusion, and with --inspect-dir a few items called NG.
--monitor-history DIR (the folder of `densevlm monitor --history DIR`, one drift report per batch)
adds a line-monitoring section: the -log10 p-value of every drift signal per batch in time order
against the threshold, a table of the batches (when, verdict, signals fired, suggested action)
and a summary line. --review-json FILE (what `densevlm demo` writes as review.json) adds what the
expert review taught.

Examples:
  densevlm report demo/densevlm demo/clipself --out demo/report.html
  densevlm report demo/densevlm demo/clipself --review-json demo/review.json --out demo/report.html --overwrite
  densevlm report runs/plant --monitor-history drift/ --out report.html
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training run directories")
    p.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    p.add_argument("--title", default="densevlm: adapting a VLM to the plant's images", help="report title")
    p.add_argument("--review-stats", metavar="FILE", help="review statistics JSON (`densevlm review stats --json FILE`)")
    p.add_argument("--before-samples", default=None, help="folder of *.overlay.png of the model before adaptation")
    p.add_argument("--false-alarm", type=float, default=0.02, metavar="RATE",
                   help="false-alarm rate the inspection recall is read at (default: 0.02, i.e. 2 %%)")
    p.add_argument("--inspect-dir", default=None, metavar="DIR",
                   help="a `densevlm inspect --out` folder: its first NG overlays go into the inspection section")
    p.add_argument("--monitor-history", default=None, metavar="DIR",
                   help="a `densevlm monitor --history DIR` folder: adds the line-monitoring section")
    p.add_argument("--review-json", default=None, metavar="FILE",
                   help="what review taught (the review.json of `densevlm demo`): adds it to the review section")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    from densevlm.cli._common import existing_paths
    from densevlm.fileio import check_output
    from densevlm.report import write_report

    inputs = existing_paths(*args.runs, args.review_stats, args.before_samples, args.inspect_dir,
                            args.monitor_history, args.review_json)
    check_output(args.out, "file", inputs=inputs, overwrite=args.overwrite)
    path = write_report(args.runs, args.out, args.title, args.review_stats, args.before_samples,
                        false_alarm=args.false_alarm, inspect_dir=args.inspect_dir, taught=args.review_json,
                        monitor_history=args.monitor_history)
    print(path)
    return 0
