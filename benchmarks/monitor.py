"""Drift monitoring on the embedded world: detection rate per shift kind, false drift, time per batch.

A reference set (``--n-ref`` images, defect rate 0.5, e.g. the calibration images) against
``--batches`` unshifted batches and as many batches of each shift kind (``lighting``, ``blur``,
``new-surface``, ``new-defect``, ``camera``), each of ``--batch-size`` images (targets: every
shift detected in >= 95 % of its batches; false drift in <= 5 % of unshifted batches). Scenes
are drawn in memory (``generate_scene``), never written. Per model, prints how often each
signal fired per kind and the seconds per batch (scoring plus the four tests).

    python benchmarks/monitor.py [--models base=tiny-student] [--runs DenseVLM=RUN_DIR] [--markdown mon.md]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image

REF_SEED = 3_000_000
BATCH_SEED = 6_000_000


def _images(seed: int, n: int, defect_rate: float, shift):
    from densevlm.data.synth.writer import generate_scene

    for i in range(n):
        yield Image.fromarray(generate_scene(seed, i, 64, defect_rate, shift).image)


def main() -> None:
    from densevlm.data.synth.inspection import SHIFTS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-ref", type=int, default=500)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--defect-rate", type=float, default=0.5)
    parser.add_argument("--shifts", nargs="+", default=list(SHIFTS))
    parser.add_argument("--models", nargs="+", default=["base=tiny-student", "teacher=tiny-teacher"])
    parser.add_argument("--runs", nargs="*", default=[], help="LABEL=RUN_DIR (or checkpoint) of tuned students")
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from densevlm.inspection.monitor import BatchStats, compare
    from densevlm.inspection.scores import ScoreConfig, analyse_images
    from densevlm.model import load_model
    from densevlm.data.synth import default_vocabulary

    vocab = default_vocabulary()
    kinds = ["none", *args.shifts]
    results = {}
    for label, spec in (item.split("=", 1) for item in [*args.models, *args.runs]):
        model = load_model(str(Path(spec) / "last.pt") if Path(spec).is_dir() else spec)
        cfg = ScoreConfig().resolved(model)

        def stats(seed: int, n: int, shift) -> BatchStats:
            return BatchStats.from_analyses(list(analyse_images(model, _images(seed, n, args.defect_rate, shift), vocab, cfg)))

        reference = stats(REF_SEED, args.n_ref, None)
        per_kind = {}
        for k, kind in enumerate(kinds):
            drift, fired, seconds = 0, {}, []
            for b in range(args.batches):
                start = time.perf_counter()
                batch = stats(BATCH_SEED + 1000 * k + b, args.batch_size, None if kind == "none" else kind)
                report = compare(reference, batch, n_resamples=args.permutations, seed=b)
                seconds.append(time.perf_counter() - start)
                drift += report["verdict"] == "drift"
                for name in report["fired"]:
                    fired[name] = fired.get(name, 0) + 1
            per_kind[kind] = {"drift_share": drift / args.batches, "fired": fired, "seconds_per_batch": float(np.mean(seconds))}
            print(f"{label} {kind}: drift in {drift}/{args.batches} batches, signals {fired}, "
                  f"{np.mean(seconds):.1f} s/batch", flush=True)
        results[label] = per_kind
    lines = [f"Reference {args.n_ref} images; {args.batches} batches of {args.batch_size} per kind; "
             "share of batches called drift (unshifted: false drift).", "",
             "| model | " + " | ".join(kinds) + " | s / batch |", "|---|" + "---|" * (len(kinds) + 1)]
    for label, per_kind in results.items():
        cells = [f"{per_kind[k]['drift_share']:.0%}" for k in kinds]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {np.mean([v['seconds_per_batch'] for v in per_kind.values()]):.1f} |")
    lines += ["", "Signals that fired (batches), per kind:", ""]
    for label, per_kind in results.items():
        lines.append(f"- {label}: " + "; ".join(f"{k}: {per_kind[k]['fired'] or '-'}" for k in kinds))
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
