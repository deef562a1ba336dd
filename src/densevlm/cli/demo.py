"""The whole proof-of-concept loop on the embedded factory-floor world, on a laptop CPU.

The world is the plant-word world (``densevlm synth --plant-words``): besides the 10 parts and
defects and 6 surfaces the shipped models were pretrained on, its scenes hold four things no
caption ever named -- burr, weld spatter, porosity (defects) and rivet (a part) -- as a plant's
own words are unknown to a web-trained VLM.

1. generate a held-out set (with exact ground truth) and a pool of unlabeled images;
2. evaluate the shipped student: how often does it call the background a part?
3. let the shipped teacher retrieve categories (the 16 it knows) for regions of the unlabeled images;
4. fine-tune the student with DenseVLM's decoupled alignment (``densevlm train``'s defaults, its
   best settings on this world), and with CLIPSelf (as the paper's settings run it) to compare;
5. simulated expert review: an expert (the unlabeled pool's ground truth, never the held-out
   set) labels 10 regions of each plant word and confirms 10 of each known class in a review
   database, as the review page would;
   ``densevlm vocab adapt`` turns them into class embeddings for the DenseVLM-tuned student
   (fitted so that the student names the reviewed boxes and keeps its own predictions on the rest
   of the expert's images), and its box accuracy on the held-out set is measured with the text
   embeddings only and with the adapted vocabulary (``review.json``, ``review/``);
6. inspection: how many items holding a defect (burr, weld spatter and porosity included) are
   caught at 2 % false alarms, before and after, with the text embeddings;
7. segment a few sample images before and after;
8. write the HTML report. The last line printed is its path.

Every evaluation scores each region against all 20 classes (the plant words' text embeddings
included: a user lists the plant's words, the model just cannot read them), and the evaluation
JSONs and the report's tables hold the protocol's numbers over all of them. The closing table
(things, stuff, background called a part) averages over the 16 classes the VLM knows, as before
the plant words existed; a known part called "rivet" still counts as wrong. The plant words get
a line of their own (text only: near chance, 5 %), and the review line says what the expert's
40 regions of new words (and 160 confirmations) taught.

Takes about 5 minutes on 2 CPU cores (--fast: about 2). Nothing is downloaded. An --out folder
that is not empty (an earlier demo) is only reused with --overwrite, which starts every stage
again.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

DEFAULT_OUT = "densevlm-demo"
INSPECTION_FALSE_ALARM = 0.02
REVIEW_SHOTS = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default: ./{DEFAULT_OUT})")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated worlds and of training (default: 0)")
    p.add_argument("--fast", action="store_true", help="smaller sets and shorter training (about 2 minutes)")
    p.add_argument("--student", default="tiny-student", help="student model (default: tiny-student)")
    p.add_argument("--teacher", default="tiny-teacher-l", help="teacher model (default: tiny-teacher-l)")
    p.add_argument("--overwrite", action="store_true",
                   help="run again in an --out folder that holds an earlier demo (or anything else)")


class _Stages:
    """Prints each stage with its duration."""

    def __init__(self, total: int) -> None:
        self.total, self.index, self.started = total, 0, time.perf_counter()
        self.times: dict[str, float] = {}

    def __call__(self, title: str):
        self.index += 1
        return _Stage(self, f"[{self.index}/{self.total}] {title}")


class _Stage:
    def __init__(self, owner: _Stages, title: str) -> None:
        self.owner, self.title = owner, title

    def __enter__(self) -> "_Stage":
        print(self.title, flush=True)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        took = time.perf_counter() - self.start
        self.owner.times[self.title] = took
        if exc[0] is None:
            print(f"      done in {took:.1f} s", flush=True)


def run(args: argparse.Namespace) -> int:
    import torch

    from densevlm.cli.train import check_run_dir
    from densevlm.data.images import open_image_source
    from densevlm.data.panoptic import PanopticDataset
    from densevlm.data.synth import default_vocabulary, write_world
    from densevlm.data.synth.categories import PLANT
    from densevlm.evaluation import EvalConfig, evaluate, make_validator
    from densevlm.fileio import atomic_write_json, check_output
    from densevlm.model import load_model
    from densevlm.report import write_report
    from densevlm.report.review import taught_line
    from densevlm.retrieval.candidates import write_candidates
    from densevlm.retrieval.teacher import RetrievalConfig
    from densevlm.training.config import PAPER_SETTINGS, TrainConfig
    from densevlm.training.trainer import train
    from densevlm.vocab import load_vocabulary

    out = check_output(args.out, "dir", overwrite=args.overwrite)  # an earlier demo needs --overwrite
    n_val, n_pool, steps = (200, 800, 120) if args.fast else (500, 2000, 300)
    stage = _Stages(9)
    known = default_vocabulary()  # what the VLM was pretrained on: retrieval and fine-tuning use it
    val_dir, pool_dir = out / "data" / "heldout", out / "data" / "unlabeled"
    with stage(f"generating the plant-word world: {n_val} held-out images with ground truth, {n_pool} unlabeled; "
               f"{', '.join(c.name for c in PLANT)} are in no caption"):
        for path, n, seed in ((val_dir, n_val, 2_000_000 + args.seed), (pool_dir, n_pool, 1_000_000 + args.seed)):
            if path.exists():
                shutil.rmtree(path)
            write_world(path, n, seed=seed, workers=2, progress=False, plant_words=True)
    vocab = load_vocabulary(val_dir / "vocab.txt")  # the plant's: the known classes and the plant words
    student = load_model(args.student)
    dataset = PanopticDataset(val_dir)
    with stage(f"evaluating the student ({args.student}) before adaptation"):
        with torch.inference_mode():
            before = evaluate(student, dataset, vocab, EvalConfig(), progress=False)
        atomic_write_json(out / "before.json", before.to_json())
        groups = class_groups(before.per_class, known)
        print(f"      known classes: things {groups['things']:.1f}, stuff {groups['stuff']:.1f} (box mAcc, %); "
              f"plant words {groups['plant words']:.1f} (text only; chance {100 / len(vocab):.0f})")
        print(f"      -> the student calls {before.metrics['box.fg_bias']:.0f} % of background regions a part or defect")
    with stage(f"retrieving categories for unlabeled regions with the teacher ({args.teacher})"):
        teacher = load_model(args.teacher)
        summary = write_candidates(teacher, open_image_source(pool_dir), known, out / "candidates.jsonl",
                                   RetrievalConfig(), region_source="grid", max_boxes=8, seed=args.seed,
                                   limit=min(200, n_pool), progress=False)
        top = ", ".join(name for name, _ in summary["top_categories"][:5])
        print(f"      {summary['regions']} regions: kept {100 * summary['kept_frac']:.0f} % (confidence > 0.3), "
              f"{100 * summary['thing_frac']:.0f} % of them things; most retrieved: {top}")
        print(f"      candidates for expert review: {out / 'candidates.jsonl'}")
    validate = make_validator(str(val_dir), str(val_dir / "vocab.txt"))
    runs = []
    for method in ("densevlm", "clipself"):
        # DenseVLM with train's defaults (its best settings here), CLIPSelf with the paper's settings
        # (300 steps, alpha 0.9; 400 steps gained it half a point: BENCHMARKS.md); --fast scales both
        paper = PAPER_SETTINGS["steps"]
        settings = ({"steps": TrainConfig.steps * steps // paper} if method == "densevlm"
                    else {**PAPER_SETTINGS, "steps": steps})
        label = ("DenseVLM decoupled alignment (the embedded recipe)" if method == "densevlm"
                 else "CLIPSelf (baseline, for comparison)")
        with stage(f"fine-tuning the student with {label}, {settings['steps']} steps"):
            check_run_dir(str(out / method), [], resume=False, overwrite=True)  # no metrics of two runs
            cfg = TrainConfig(student=args.student, teacher=args.teacher, images=str(pool_dir), out=str(out / method),
                              method=method, seed=args.seed, val_before=False, **settings)
            result = train(cfg, progress=sys.stderr.isatty(), validate=validate)
            atomic_write_json(out / method / "eval_before.json", before.to_json())
            runs.append(out / method)
            print(f"      final loss {result.final_loss:.3f}; checkpoint {out / method / 'last.pt'}")
    checkpoints = {m: out / m / "last.pt" for m in ("densevlm", "clipself")}
    with stage(f"simulated expert review: {REVIEW_SHOTS} regions of each plant word and each known class, "
               "few-shot class embeddings"):
        taught = simulated_review(out, checkpoints["densevlm"], pool_dir, val_dir, known, REVIEW_SHOTS)
        print(f"      review database {out / 'review' / 'review.sqlite'}; adapted vocabulary "
              f"{out / 'review' / 'plant.vocab.npz'}")
    with stage(f"inspection: NG items caught at {100 * INSPECTION_FALSE_ALARM:g} % false alarms, before and after"):
        for name, files in ((args.student, [out / "before.json"] + [out / m / "eval_before.json" for m in checkpoints]),
                            *((str(c), [out / m / "eval.json"]) for m, c in checkpoints.items())):
            _add_inspection(name, files, val_dir, vocab, limit=min(n_val, 200))
    with stage("segmenting sample images before and after"):
        _segment_samples(out, args.student, list(checkpoints.values()), vocab, val_dir)
    with stage("writing the report"):
        report = write_report(runs, out / "report.html", base_samples=out / "samples" / "before",
                              commands=[" ".join(["densevlm", "demo", *sys.argv[2:]])], taught=out / "review.json")
    print()
    print(summary_table(out, known))
    print(f"review: {taught_line(taught)}")
    print(_inspection_line(out))
    total = time.perf_counter() - stage.started
    print(f"total {total:.0f} s")
    print(report)
    return 0


def class_groups(per_class: list[dict], known) -> dict[str, float]:
    """Box mAcc (%) over the known things, the known stuff and the plant words, from per-class rows.

    ``known``: the vocabulary the VLM was pretrained on; the plant words are
    :data:`~densevlm.data.synth.categories.PLANT`.
    """
    from densevlm.data.synth.categories import PLANT
    from densevlm.evaluation import subset_mean_accuracy

    things = [n for n, t in zip(known.names, known.is_thing) if t]
    stuff = [n for n, t in zip(known.names, known.is_thing) if not t]
    return {"things": subset_mean_accuracy(per_class, things), "stuff": subset_mean_accuracy(per_class, stuff),
            "plant words": subset_mean_accuracy(per_class, [c.name for c in PLANT])}


def simulated_review(out: Path, checkpoint: str | Path, pool_dir: Path, val_dir: Path, known, shots: int) -> dict:
    """Stage 5: the expert labels ``shots`` regions per class; text-only vs adapted box mAcc on the held-out set.

    The expert's regions are the first ``shots`` ground-truth segments of each plant word and of
    each class of ``known`` in the unlabeled pool (:func:`densevlm.review.simulated.expert_examples`:
    new words typed, known classes confirmed, the field's K-shot protocol), recorded in
    ``out/review/review.sqlite`` whose vocabulary is ``known``: the plant words are new classes the
    expert typed. :func:`densevlm.training.fewshot.adapt_vocabulary` (what ``densevlm vocab adapt``
    runs) builds the adapted vocabulary for ``checkpoint`` (``out/review/plant.vocab.npz``).

    Returns:
        The document written to ``out/review.json`` (layout in :mod:`densevlm.report.review`):
        ``new_words`` (reviewed regions per class the adapted vocabulary added to ``known``),
        ``regions``, ``shots``, ``model``, and ``text_only`` / ``reviewed`` box mAcc (plant words,
        other things, stuff) and background called a part, with the world's vocabulary (the plant
        words' text embeddings) and with the adapted one.
    """
    import torch

    from densevlm.data.panoptic import PanopticDataset
    from densevlm.data.synth.categories import PLANT
    from densevlm.evaluation import EvalConfig, evaluate
    from densevlm.fileio import atomic_write_json
    from densevlm.model import load_model
    from densevlm.review.simulated import expert_database, expert_examples
    from densevlm.training.fewshot import adapt_vocabulary
    from densevlm.vocab import load_vocabulary
    from densevlm.vocab.adapted import save_adapted

    folder = out / "review"
    if folder.exists():
        shutil.rmtree(folder)  # a demo that runs again (--overwrite) starts a new review
    world = load_vocabulary(val_dir / "vocab.txt")  # the known classes and the plant words, [defects] included
    examples = expert_examples(pool_dir, [c.name for c in PLANT], shots) + expert_examples(pool_dir, known.names, shots)
    db = expert_database(examples, known, pool_dir / "images", folder / "review.sqlite", defects=world.defects)
    model = load_model(str(checkpoint))
    adapted = adapt_vocabulary(model, db)
    save_adapted(adapted, folder / "plant.vocab.npz")
    dataset, cfg = PanopticDataset(val_dir), EvalConfig(crops=False, segmentation=False)
    scores = {}
    for key, vocab in (("text_only", world), ("reviewed", adapted)):
        with torch.inference_mode():
            result = evaluate(model, dataset, vocab, cfg, progress=False)
        groups = class_groups(result.per_class, known)
        scores[key] = {"new_words": groups["plant words"], "other_things": groups["things"], "stuff": groups["stuff"],
                       "fg_bias": result.metrics["box.fg_bias"]}
    new = {n: int(c) for n, c in zip(adapted.names, adapted.counts) if c and n not in known.names}
    doc = {"model": str(checkpoint), "database": str(db), "vocabulary": str(folder / "plant.vocab.npz"),
           "heldout": str(val_dir), "shots": shots, "new_words": new, "regions": int(sum(adapted.counts)), **scores}
    atomic_write_json(out / "review.json", doc)
    return doc


def _segment_samples(out: Path, student: str, checkpoints: list[Path], vocab, val_dir: Path, n: int = 4) -> None:
    from densevlm.imaging import open_image
    from densevlm.inference.segment import segment
    from densevlm.model import load_model

    images = sorted((val_dir / "images").glob("*.png"))[:n]
    targets = [(student, out / "samples" / "before")] + [(str(c), c.parent / "samples") for c in checkpoints]
    for name, folder in targets:
        model = load_model(name)
        folder.mkdir(parents=True, exist_ok=True)
        for path in images:
            result = segment(model, open_image(path), vocab)
            result.overlay().save(folder / f"{path.stem}.overlay.png")


def summary_table(out: Path, known) -> str:
    """The closing table: box mAcc over the known things and stuff, background called a part, then the
    plant words' text-only box mAcc, for the student before and after each fine-tuning (runs not in
    ``out`` are left out)."""
    import json

    rows = [("before", json.loads((out / "before.json").read_text()))]
    for method in ("densevlm", "clipself"):
        path = out / method / "eval.json"
        if path.is_file():
            rows.append((method, json.loads(path.read_text())))
    lines = [f"{'':10} {'things':>7} {'stuff':>7} {'bg->part':>9}   (box region accuracy over the "
             f"{len(known)} classes the VLM knows, %)"]
    plant = []
    for name, ev in rows:
        groups = class_groups(ev["per_class"], known)
        lines.append(f"{name:10} {groups['things']:7.1f} {groups['stuff']:7.1f} {ev['box.fg_bias']:9.1f}")
        plant.append(f"{name} {groups['plant words']:.1f}")
    chance = 100 / len(rows[0][1]["class_names"])
    lines.append(f"plant words, text only (box mAcc %, chance {chance:.0f}): {', '.join(plant)}")
    return "\n".join(lines)


def _add_inspection(model: str, files: list[Path], val_dir: Path, vocab, limit: int) -> None:
    """Add the ``inspection.*`` metrics of ``model`` on ``val_dir`` to each evaluation JSON in ``files``."""
    import json

    from densevlm.fileio import atomic_write_json
    from densevlm.inspection.evaluate import evaluate_inspection
    from densevlm.model import load_model

    metrics = evaluate_inspection(load_model(model), val_dir, vocab, limit=limit)
    for path in files:
        if path.is_file():
            atomic_write_json(path, {**json.loads(path.read_text()), **metrics})


def _inspection_line(out: Path) -> str:
    """``inspection: recall at 2 % false alarms X % before -> Y % after DenseVLM (CLIPSelf Z %)``."""
    import json

    from densevlm.report.inspection import inspection_block, recall_at

    def recall(path: Path) -> str:
        block = inspection_block(json.loads(path.read_text())) if path.is_file() else {}
        value = recall_at(block["roc"], INSPECTION_FALSE_ALARM) if block.get("roc") else float("nan")
        return "n/a" if value != value else f"{100 * value:.0f} %"

    return (f"inspection: NG items caught at {100 * INSPECTION_FALSE_ALARM:g} % false alarms {recall(out / 'before.json')} "
            f"before -> {recall(out / 'densevlm' / 'eval.json')} after DenseVLM "
            f"(CLIPSelf {recall(out / 'clipself' / 'eval.json')})")
