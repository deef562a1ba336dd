"""Drift monitoring on the embedded world: detection rate per shift kind, false drift, time per batch.

A reference set (``--n-ref`` images, defect rate 0.5, e.g. the calibration images) against
``--batches`` unshifted batches and as many batches of each shift kind (``lighting``, ``blur``,
``new-surface``, ``new-defect``, ``camera``), each of ``--batch-size`` images (targets: every
shift detected in >= 95 % of its batches; false drift in <= 5 % of unshifted batches). Scenes
are drawn in memory (``generate_scene``), never written. Per model, prints how often each
signal fired per kind and the seconds per batch: drawing the scenes (not part of monitoring),
scoring them (one forward pass and the per-image statistics) and the drift tests.

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


def _images(seed: int, n: int, defect_rate: float, shift) -> list[Image.Image]:
    from densevlm.data.synth.writer import generate_scene

    return [Image.fromarray(generate_scene(seed, i, 64, defect_rate=defect_rate, shift=shift).image) for i in range(n)]


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

        def stats(images: list[Image.Image]) -> BatchStats:
            return BatchStats.from_analyses(list(analyse_images(model, images, vocab, cfg)), vocab.defect_indices)

        reference = stats(_images(REF_SEED, args.n_ref, args.defect_rate, None))
        per_kind = {}
        for k, kind in enumerate(kinds):
            drift, fired, seconds = 0, {}, np.zeros((args.batches, 3))
            for b in range(args.batches):
                t0 = time.perf_counter()
                images = _images(BATCH_SEED + 1000 * k + b, args.batch_size, args.defect_rate, None if kind == "none" else kind)
                t1 = time.perf_counter()
                batch = stats(images)
                t2 = time.perf_counter()
                report = compare(reference, batch, n_resamples=args.permutations, seed=b)
                seconds[b] = (t1 - t0, t2 - t1, time.perf_counter() - t2)
                drift += report["verdict"] == "drift"
                for name in report["fired"]:
                    fired[name] = fired.get(name, 0) + 1
            mean = seconds.mean(axis=0)
            per_kind[kind] = {"drift_share": drift / args.batches, "fired": fired,
                              "seconds_per_batch": {"generate": float(mean[0]), "score": float(mean[1]), "tests": float(mean[2])}}
            print(f"{label} {kind}: drift in {drift}/{args.batches} batches, signals {fired}, s/batch: generate "
                  f"{mean[0]:.2f}, score {mean[1]:.2f}, tests {mean[2]:.2f}", flush=True)
        results[label] = per_kind
    lines = [f"Reference {args.n_ref} images; {args.batches} batches of {args.batch_size} per kind; "
             "share of batches called drift (unshifted: false drift).", "",
             "| model | " + " | ".join(kinds) + " | s / batch: score + tests (generate) |", "|---|" + "---|" * (len(kinds) + 1)]
    for label, per_kind in results.items():
        cells = [f"{per_kind[k]['drift_share']:.0%}" for k in kinds]
        t = {part: np.mean([v["seconds_per_batch"][part] for v in per_kind.values()]) for part in ("generate", "score", "tests")}
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {t['score']:.2f} + {t['tests']:.2f} ({t['generate']:.2f}) |")
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
