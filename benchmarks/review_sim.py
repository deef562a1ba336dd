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

With ``--plant-words`` it measures instead what review teaches about words the VLM never
learned (``synth --plant-words``: burr, weld spatter, porosity, rivet, never in a caption):

1. A simulated expert labels the first K ground-truth regions (boxes) of each plant word in a
   plant-word pool, for K in ``--shots`` (default 1 3 10 30), and with ``--confirm N`` also
   confirms the first N regions of every known class (the field's K-shot protocol, e.g. CoOp
   and CLAP, labels K regions of every class).
2. ``densevlm vocab adapt`` (``--method``: ``fit`` by default, or ``blend``) turns them into
   few-shot class embeddings for ``--model``.
3. Box mAcc on a plant-word held-out set, on the plant words and on the other things and the
   stuff, for: text only (the plant words' untrained tokens) and (a) few-shot embeddings.
4. With ``--train-shots K [K ...]``: (b) DenseVLM fine-tuning of the student (default recipe,
   ``--train-steps``) on the plant-word pool with the K-shot verdicts in a review database as
   reviewed targets (``--reviewed-weight``, ``--reviewed-embeddings``: ``few-shot`` = the student
   learns the plant words against its own few-shot embeddings, ``text`` = against their untrained
   tokens), and (a)+(b) (the fine-tuned student's few-shot embeddings). ``0`` among the K is the
   reference: the same fine-tuning without any review. A run whose ``last.pt`` is already in
   ``--work`` is reused (delete the folder to retrain), so several K can train in parallel
   processes and a last call prints the table.

    python benchmarks/review_sim.py --plant-words [--model tiny-teacher-l] [--shots 1 3 10 30]
        [--pool 600] [--heldout 300] [--confirm 0] [--method fit|blend] [--anchor 0.03] [--distill 10]
        [--k0 3] [--no-gap-shift] [--negative-rate 0.005 | --no-bias] [--prototype discriminant|mean]
        [--train-shots 0 10] [--train-steps 300] [--reviewed-weight 10] [--reviewed-embeddings few-shot]
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
    parser.add_argument("--plant-words", action="store_true", help="the few-shot curve on plant words (docstring)")
    parser.add_argument("--model", default="tiny-teacher-l", help="--plant-words: the model to adapt (default: the default teacher)")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 3, 10, 30], help="--plant-words: K")
    parser.add_argument("--pool", type=int, default=600, help="--plant-words: scenes the expert labels from")
    parser.add_argument("--heldout", type=int, default=300, help="--plant-words: held-out scenes")
    parser.add_argument("--world-offset", type=int, default=7,
                        help="--plant-words: pool and held-out world seeds are the standard ones plus this (7: the "
                             "worlds the defaults were chosen on; another offset checks them on fresh worlds)")
    parser.add_argument("--confirm", type=int, default=0,
                        help="--plant-words: the expert also confirms this many regions of every known class (the "
                             "field's K-shot protocol labels K of every class; default 0: plant words only)")
    parser.add_argument("--method", choices=("fit", "blend"), default="fit", help="--plant-words: vocab adapt's method")
    parser.add_argument("--anchor", type=float, default=None, help="--plant-words, fit: pull towards the text")
    parser.add_argument("--distill", type=float, default=None,
                        help="--plant-words, fit: weight of the model's own predictions outside the reviewed boxes")
    parser.add_argument("--k0", type=float, default=3.0, help="--plant-words, blend: prior strength of the text")
    parser.add_argument("--no-gap-shift", action="store_true", help="--plant-words: blend raw prototypes")
    parser.add_argument("--negative-rate", type=float, default=None,
                        help="--plant-words: share of the expert's negative windows a new class may win "
                             "(default: densevlm vocab adapt's)")
    parser.add_argument("--prototype", choices=("discriminant", "mean"), default=None,
                        help="--plant-words: few-shot prototype (default: densevlm vocab adapt's)")
    parser.add_argument("--no-bias", action="store_true",
                        help="--plant-words: no calibrated bias (the few-shot embeddings before issue 15's fix)")
    parser.add_argument("--train-shots", type=int, nargs="+", default=[],
                        help="--plant-words: also (b) and (a)+(b) at these K (0: fine-tuning without review)")
    parser.add_argument("--reviewed-embeddings", choices=("text", "few-shot"), default="few-shot",
                        help="--plant-words: class embeddings the student learns reviewed classes against")
    parser.add_argument("--train-steps", type=int, default=300, help="--plant-words: steps of the (b) fine-tuning")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.plant_words:
        plant_curve(args)
        return

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
    from densevlm.training.config import PAPER_SETTINGS, TrainConfig
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
        cfg = TrainConfig(**PAPER_SETTINGS, images=str(pool / "images"), out=str(out), seed=args.seed,
                          reviewed_weight=args.reviewed_weight)
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


def _plant_world(path: Path, n: int, seed: int) -> Path:
    from densevlm.data.synth import write_world

    if not (path / "panoptic.json").is_file():
        write_world(path, n, seed=seed, workers=2, progress=False, plant_words=True)
    return path


def _split_macc(result) -> dict[str, float]:
    from densevlm.data.synth import THINGS
    from densevlm.data.synth.categories import PLANT, STUFF
    from densevlm.evaluation import subset_mean_accuracy

    groups = {"plant words": PLANT, "other things": THINGS, "stuff": STUFF}
    out = {k: subset_mean_accuracy(result.per_class, [c.name for c in v]) for k, v in groups.items()}
    return {**out, "fg_bias": result.metrics["box.fg_bias"]}


def plant_curve(args: argparse.Namespace) -> None:
    """Few-shot class embeddings on plant words: box mAcc vs K (module docstring)."""
    from _worlds import HELDOUT_SEED, POOL_SEED

    from densevlm.data.panoptic import PanopticDataset
    from densevlm.evaluation import EvalConfig, evaluate
    from densevlm.model import load_model
    from densevlm.training.fewshot import adapt_from_regions
    from densevlm.vocab import load_vocabulary

    work = Path(args.work) / ("plant" if args.world_offset == 7 else f"plant-{args.world_offset}")
    pool = _plant_world(work / "pool", args.pool, POOL_SEED + args.world_offset)
    heldout = _plant_world(work / "heldout", args.heldout, HELDOUT_SEED + args.world_offset)
    vocab = load_vocabulary(heldout / "vocab.txt")
    dataset = PanopticDataset(heldout)
    model = load_model(args.model)
    cfg = EvalConfig(crops=False, segmentation=False)
    calibration = _calibration(args)
    rows = [("text only", 0, _split_macc(evaluate(model, dataset, vocab, cfg, progress=False)), 0.0)]
    for k in args.shots:
        started = time.perf_counter()
        adapted = adapt_from_regions(model, vocab, _plant_examples(pool, k) + _confirmed(pool, vocab, args.confirm),
                                     k0=args.k0, gap=not args.no_gap_shift, **calibration)
        took = time.perf_counter() - started
        rows.append(("(a) few-shot embeddings", k, _split_macc(evaluate(model, dataset, adapted, cfg, progress=False)),
                     took))
    for k in args.train_shots:
        rows += _trained_rows(args, k, pool, work, vocab, dataset, cfg)
    settings = (f"fit, anchor {calibration.get('anchor', 'default')}, distill {calibration.get('distill', 'default')}"
                if args.method == "fit" else
                f"blend, k0 {args.k0}, gap shift {'off' if args.no_gap_shift else 'on'}, negative rate "
                f"{calibration['negative_rate'] if 'negative_rate' in calibration else 'default'}, prototype "
                f"{calibration.get('prototype', 'default')}")
    confirmed = f"{args.confirm} confirmed regions of every known class, " if args.confirm else ""
    print(f"model {args.model}, held-out {args.heldout} plant-word scenes (seed {HELDOUT_SEED + args.world_offset}), "
          f"pool seed {POOL_SEED + args.world_offset}, {confirmed}{settings}; "
          "box mAcc (%), fg_bias (%): stuff boxes called a thing")
    print("| method | K per plant word | plant words | other things | stuff | fg_bias | seconds (adapt or train) |")
    print("|---|---|---|---|---|---|---|")
    for label, k, m, took in rows:
        seconds = "reused" if took != took else f"{took:.1f}"  # NaN: a trained run found in --work
        print(f"| {label} | {k} | {m['plant words']:.1f} | {m['other things']:.1f} | {m['stuff']:.1f} | "
              f"{m['fg_bias']:.1f} | {seconds} |")


def _calibration(args: argparse.Namespace) -> dict:
    """``adapt_from_regions`` keywords for ``--method`` (empty where the library's defaults apply)."""
    if args.method == "fit":
        return {"method": "fit", **{k: getattr(args, k) for k in ("anchor", "distill") if getattr(args, k) is not None}}
    out = {"method": "blend"} if args.prototype is None else {"method": "blend", "prototype": args.prototype}
    if args.no_bias:
        return {**out, "negative_rate": None}
    return out if args.negative_rate is None else {**out, "negative_rate": args.negative_rate}


def _plant_examples(pool: Path, shots: int) -> list:
    """The simulated expert's labels: the first ``shots`` ground-truth regions of each plant word in ``pool``."""
    from densevlm.data.synth.categories import PLANT
    from densevlm.review.simulated import expert_examples

    return expert_examples(pool, [c.name for c in PLANT], shots)


def _confirmed(pool: Path, vocab, shots: int) -> list:
    """The expert's confirmations: the first ``shots`` ground-truth regions of every class of ``vocab``
    but the plant words (none when ``shots`` is 0)."""
    from densevlm.data.synth.categories import PLANT
    from densevlm.review.simulated import expert_examples

    plant = {c.name for c in PLANT}
    return expert_examples(pool, [n for n in vocab.names if n not in plant], shots) if shots else []


def _trained_rows(args: argparse.Namespace, k: int, pool: Path, work: Path, vocab, dataset, cfg) -> list:
    """(b): fine-tune the student with the K-shot verdicts as targets; (a)+(b): adapt the result (K = 0: no review)."""
    from densevlm.evaluation import evaluate
    from densevlm.model import load_model
    from densevlm.review.reviewed import load_reviewed
    from densevlm.review.simulated import expert_database
    from densevlm.training.config import PAPER_SETTINGS, TrainConfig
    from densevlm.training.fewshot import adapt_from_regions
    from densevlm.training.trainer import train

    name = f"trained-{k}-{args.reviewed_embeddings}-w{args.reviewed_weight:g}-s{args.train_steps}" if k else \
        f"trained-0-s{args.train_steps}"
    out = work / name
    train_cfg = TrainConfig(**{**PAPER_SETTINGS, "steps": args.train_steps}, images=str(pool / "images"), out=str(out),
                            seed=args.seed, reviewed_weight=args.reviewed_weight,
                            reviewed_embeddings=args.reviewed_embeddings)
    took = float("nan")
    if not (out / "last.pt").is_file():
        reviewed = None
        if k:
            db = work / f"{name}.sqlite"
            for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), db.with_suffix(".jsonl")):
                path.unlink(missing_ok=True)
            reviewed = load_reviewed(expert_database(_plant_examples(pool, k), vocab, pool / "images", db))
        started = time.perf_counter()
        train(train_cfg, progress=False, reviewed=reviewed)
        took = time.perf_counter() - started
    student = load_model(str(out / "last.pt"))
    if not k:
        return [("fine-tuned, no review", 0, _split_macc(evaluate(student, dataset, vocab, cfg, progress=False)), took)]
    rows = [(f"(b) training ({args.reviewed_embeddings})", k,
             _split_macc(evaluate(student, dataset, vocab, cfg, progress=False)), took)]
    adapted = adapt_from_regions(student, vocab, _plant_examples(pool, k), k0=args.k0, gap=not args.no_gap_shift,
                                 **_calibration(args))
    rows.append((f"(a)+(b) ({args.reviewed_embeddings})", k,
                 _split_macc(evaluate(student, dataset, adapted, cfg, progress=False)), took))
    return rows


if __name__ == "__main__":
    main()
