"""Does expert review help? Simulate an expert with the ground truth on 200 teacher regions.

1. The teacher proposes categories for the grid cells of the first images of the unlabeled
   pool (``densevlm retrieve``); the regions are imported into a review database.
2. A simulated expert gives each of the first 200 regions the category covering most of its
   pixels (ground truth the training never sees), or "unsure" when no category covers at
   least 60 % of the box; every verdict goes through the review store as the web page's would.
3. DenseVLM fine-tuning runs twice with the same budget and seed: teacher targets only, and
   with ``--reviewed`` (verdicts replace the teacher's targets on those regions).
4. Both are evaluated on the held-out set; the script prints both rows and the review
   statistics (teacher/expert agreement, the confidence above which the teacher is right 95 %
   of the time).

    python benchmarks/review_sim.py [--regions 200] [--reviewed-weight 1]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from _worlds import KEYS, standard_worlds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/densevlm-review-sim")
    parser.add_argument("--regions", type=int, default=200)
    parser.add_argument("--reviewed-weight", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from densevlm.data.images import open_image_source
    from densevlm.data.panoptic import PanopticDataset
    from densevlm.data.synth import default_vocabulary
    from densevlm.evaluation import EvalConfig, evaluate
    from densevlm.model import load_model
    from densevlm.retrieval.candidates import write_candidates
    from densevlm.retrieval.teacher import RetrievalConfig
    from densevlm.review import session
    from densevlm.review.importing import import_candidates
    from densevlm.review.reviewed import load_reviewed
    from densevlm.review.stats import format_stats, review_stats
    from densevlm.review.store import ReviewStore
    from densevlm.training.config import TrainConfig
    from densevlm.training.trainer import train

    work = Path(args.work)
    pool, heldout = standard_worlds(work)
    vocab = default_vocabulary()
    images_needed = args.regions // 8 + 1
    candidates = work / "candidates.jsonl"
    write_candidates(load_model("tiny-teacher"), open_image_source(pool), vocab, candidates, RetrievalConfig(),
                     max_boxes=8, limit=images_needed, seed=args.seed, progress=False)
    db = work / "review.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    import_candidates(db, candidates)

    truth = PanopticDataset(pool)
    names = truth.names
    by_file = {truth.records[i][0]["file_name"]: i for i in range(len(truth))}
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT r.id, i.file_name, r.x1, r.y1, r.x2, r.y2 FROM regions r JOIN images i ON i.id = r.image_id ORDER BY r.id"
        ).fetchall()[: args.regions]
    decided = unsure = 0
    start_time = time.time() - 600.0
    with ReviewStore(db) as store:
        for n, (region_id, file_name, x1, y1, x2, y2) in enumerate(rows):
            sample = truth.load(by_file[Path(file_name).name])
            cell = sample.ids[int(round(y1)):int(round(y2)), int(round(x1)):int(round(x2))].reshape(-1)
            ids, counts = np.unique(cell, return_counts=True)
            top = ids[counts.argmax()]
            category = next(names[truth.category_index[s["category_id"]]] for s in sample.segments if s["id"] == top)
            at = start_time + 3.0 * n  # one verdict every 3 s
            if counts.max() >= 0.6 * cell.size:
                session.add_verdict(store, region_id, "simulated-expert", "category", category=category, at=at)
                decided += 1
            else:
                session.add_verdict(store, region_id, "simulated-expert", "unsure", at=at)
                unsure += 1
    print(f"simulated expert: {decided} regions labelled, {unsure} unsure, on {images_needed} images")
    print(format_stats(review_stats(db)))

    dataset = PanopticDataset(heldout)
    results = {}
    for label, reviewed in (("teacher only", None), ("teacher + 200 reviewed regions", load_reviewed(str(db)))):
        out = work / ("reviewed" if reviewed else "teacher-only")
        cfg = TrainConfig(images=str(pool / "images"), out=str(out), seed=args.seed, reviewed_weight=args.reviewed_weight)
        started = time.perf_counter()
        train(cfg, progress=False, reviewed=reviewed)
        took = time.perf_counter() - started
        results[label] = evaluate(load_model(str(out / "last.pt")), dataset, vocab, EvalConfig(crops=False, segmentation=False),
                                  progress=False).metrics
        print(f"  {label}: trained in {took:.0f} s")
    print("| training targets | " + " | ".join(name for _, name in KEYS) + " |")
    print("|" + "---|" * (len(KEYS) + 1))
    for label, m in results.items():
        print(f"| {label} | " + " | ".join(f"{m[k]:.1f}" for k, _ in KEYS) + " |")


if __name__ == "__main__":
    main()
