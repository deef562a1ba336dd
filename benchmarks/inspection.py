"""Inspection on the embedded world: image AUROC, recall at 1 % / 5 % false alarms, AUPRO, defect
confusion, and whether a 2 % false-alarm calibration holds on fresh images.

Worlds (defect rate 0.5): a labelled calibration set (``--n-cal``, 500) and a fresh test set
(``--n-test``, 1000) of other seeds. For each model -- the base student (``tiny-student``), the
default teacher (``tiny-teacher-l``) and tuned students given as ``--runs LABEL=RUN_DIR`` (a run directory
holding ``last.pt``, e.g. from ``benchmarks/method_table.py``'s ``runs/``, or a checkpoint file):

* the ``eval --inspection`` metrics on the test set;
* ``calibrate`` at ``--max-false-alarm`` (0.02) on the calibration set, then the false-alarm rate
  and recall of that operating point on the test set (target: false alarms <= 3.5 %), for each
  calibration rule of ``--rules`` (default: all; the main table shows the first);
* with ``--compare-methods``, the test-set image AUROC of every score method and minimum area
  (the choice of the default in ``densevlm.inspection.scores``).

    python benchmarks/inspection.py --runs CLIPSelf=/tmp/densevlm-methods/runs/CLIPSelf-s0 \\
        DenseVLM=/tmp/densevlm-methods/runs/DenseVLM_tau_logit_scale-s0 --compare-methods --markdown insp.md
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
from _worlds import ensure_world

CAL_SEED = 3_000_000
TEST_SEED = 4_000_000


def _model(spec: str):
    from densevlm.model import load_model

    path = Path(spec)
    return load_model(str(path / "last.pt") if path.is_dir() else spec)


def _method_aurocs(model, test: Path, vocab, variants) -> dict[str, float]:
    """Test-set image AUROC of each (method, min_area) variant, from one pass over the images."""
    from densevlm.evaluation.manufacturing import image_auroc
    from densevlm.imaging import open_image
    from densevlm.inspection.labelled import load_labelled
    from densevlm.inspection.scores import ScoreConfig, analyse_images, defect_scores

    labelled = load_labelled(test, vocab)
    cfg = ScoreConfig().resolved(model)
    scores = {v: [] for v in variants}
    for a in analyse_images(model, (open_image(im.path) for im in labelled), vocab, cfg, keep_probs=True):
        for method, area in variants:
            scores[(method, area)].append(defect_scores(a.probs, vocab.defect_indices, method, area).max())
    ng = np.array([im.ng for im in labelled])
    return {f"{m} (min area {a})": image_auroc(ng, np.array(s)) for (m, a), s in scores.items()}


def _defect_regions(cal: Path, vocab, per_defect: int | None, seed: int = 0):
    """``LabelledRegion``s of the calibration set's ground-truth defect segments (what an expert
    would confirm in review): ``per_defect`` drawn at random per defect, or all (None)."""
    from densevlm.data.panoptic import PanopticDataset
    from densevlm.evaluation.protocol import map_categories
    from densevlm.regions.labelled import LabelledRegion

    dataset = PanopticDataset(cal)
    mapping = map_categories(dataset, vocab)
    found: dict[int, list] = {k: [] for k in vocab.defect_indices}
    for i, (_, ann) in enumerate(dataset.records):
        for seg in ann["segments_info"]:
            k = mapping[dataset.category_index[seg["category_id"]]]
            if k in found:
                x, y, w, h = seg["bbox"]
                found[k].append(LabelledRegion(str(dataset.image_path(i)), (x, y, x + w, y + h), vocab.names[k], True))
    rng = np.random.default_rng(seed)
    chosen = []
    for regions in found.values():
        take = len(regions) if per_defect is None else min(per_defect, len(regions))
        chosen += [regions[j] for j in sorted(rng.choice(len(regions), take, replace=False))]
    return chosen


def _definition_aurocs(model, test_images, vocab, cfg, adapted: dict) -> dict[str, float]:
    """Test-set image AUROC of alternative NG-score definitions, from one dense pass.

    From the ``[K, h, w]`` logits ``s * cos`` (``s`` the model's logit scale) of each image:
    the shipped ``window`` score (largest mean over a ``min_area`` window of one defect's
    probability, max over defects); the same window over the summed defect probability; the
    summed defect probability of the best token (top-1) and the mean of the best 4 tokens; the
    window score with the softmax restricted to defect and part classes (stuff removed); the
    best token's cosine margin of the best defect over the best non-defect class, and over the
    best part; and the shipped score with each adapted vocabulary of ``adapted`` (name ->
    class embeddings ``[K, C]``).
    """
    import torch.nn.functional as F

    from densevlm.evaluation.manufacturing import image_auroc
    from densevlm.imaging import open_image
    from densevlm.inspection.scores import defect_scores

    defects = list(vocab.defect_indices)
    others = [k for k in range(len(vocab)) if k not in defects]
    parts = [k for k in others if vocab.is_thing[k]]
    side = max(1, int(round(float(cfg.min_area) ** 0.5)))
    with torch.inference_mode():
        text = F.normalize(model.embed_vocabulary(vocab).float(), dim=1)
        tables = {"shipped (window, max over defects)": text,
                  **{f"shipped, adapted vocabulary ({k})": F.normalize(torch.as_tensor(e).float(), dim=1) for k, e in adapted.items()}}
    scale = float(model.logit_scale)
    scores: dict[str, list[float]] = {}

    def add(name: str, value) -> None:
        scores.setdefault(name, []).append(float(value))

    for im in test_images:
        x, plan = model.prepare(open_image(im.path), cfg.size, square=True)
        with torch.inference_mode():
            dense = model.encode_dense(x[None]).float()[0]
        for name, emb in tables.items():
            cos = torch.einsum("chw,kc->khw", dense, emb)
            up = F.interpolate(scale * cos[None], size=(plan.input_height, plan.input_width), mode="bilinear",
                               align_corners=False)[0, :, : plan.height, : plan.width]
            probs = torch.softmax(up.double(), dim=0).float()
            add(name, defect_scores(probs.numpy(), defects, "window", int(cfg.min_area)).max())
            if emb is not text:
                continue
            p_ng = probs[defects].sum(0)
            add("window over the summed defect probability", F.avg_pool2d(p_ng[None, None], side, stride=1).max())
            token = torch.softmax(scale * cos, dim=0)[defects].sum(0).flatten()
            add("best token, summed defect probability", token.max())
            add("mean of the best 4 tokens, summed defect probability", token.topk(4).values.mean())
            restricted = torch.softmax(up[defects + parts].double(), dim=0).float()[: len(defects)].sum(0)
            add("window, softmax over defects and parts only", F.avg_pool2d(restricted[None, None], side, stride=1).max())
            best = cos[defects].max(0).values
            add("best token, cosine margin over the best non-defect", (best - cos[others].max(0).values).max())
            add("best token, cosine margin over the best part", (best - cos[parts].max(0).values).max())
    ng = np.array([im.ng for im in test_images])
    return {name: image_auroc(ng, np.array(values)) for name, values in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/densevlm-inspection")
    parser.add_argument("--n-cal", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--defect-rate", type=float, default=0.5)
    parser.add_argument("--max-false-alarm", type=float, default=0.02)
    parser.add_argument("--models", nargs="+", default=["base=tiny-student", "teacher-l=tiny-teacher-l"])
    parser.add_argument("--runs", nargs="*", default=[], help="LABEL=RUN_DIR (or checkpoint) of tuned students")
    parser.add_argument("--compare-methods", action="store_true")
    parser.add_argument("--compare-definitions", action="store_true",
                        help="also the AUROC of alternative NG-score definitions and of adapted vocabularies")
    parser.add_argument("--adapt-regions", type=int, nargs="*", default=[20, 0],
                        help="adapted vocabularies from this many calibration defect regions per defect (0: all)")
    parser.add_argument("--rules", nargs="+", default=None,
                        help="calibration rules to compare (default: all of densevlm.inspection.calibrate.RULES)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from densevlm.imaging import open_image
    from densevlm.inspection.calibrate import RULES, calibrate
    from densevlm.inspection.evaluate import evaluate_inspection
    from densevlm.inspection.labelled import load_labelled
    from densevlm.inspection.verdict import inspect
    from densevlm.data.synth import default_vocabulary

    work = Path(args.work)
    cal = ensure_world(work / f"cal-{args.n_cal}", args.n_cal, CAL_SEED, defect_rate=args.defect_rate)
    test = ensure_world(work / f"test-{args.n_test}", args.n_test, TEST_SEED, defect_rate=args.defect_rate)
    vocab = default_vocabulary()
    cal_images, test_images = load_labelled(cal, vocab), load_labelled(test, vocab)
    test_ng = np.array([im.ng for im in test_images])
    rules = args.rules or list(RULES)
    records = {}
    for label, spec in (item.split("=", 1) for item in [*args.models, *args.runs]):
        model = _model(spec)
        start = time.perf_counter()
        metrics = evaluate_inspection(model, test, vocab)
        ops = {rule: calibrate(model, cal_images, vocab, args.max_false_alarm, model_name=spec, data=str(cal),
                               n_resamples=1000, rule=rule) for rule in rules}
        op = ops[rules[0]]
        verdicts = inspect(model, [im.path for im in test_images], op)
        test_scores = np.array([v.score for v in verdicts])
        by_rule = {}
        for rule, rule_op in ops.items():
            called = test_scores >= rule_op.ng_threshold
            by_rule[rule] = {"calibration": rule_op.calibration, "fresh_false_alarm": float(called[~test_ng].mean()),
                             "fresh_recall": float(called[test_ng].mean())}
        record = {
            "metrics": {k: v for k, v in metrics.items() if k != "inspection.roc"},
            **by_rule[rules[0]],
            "rules": by_rule,
            "seconds": round(time.perf_counter() - start, 1),
        }
        if args.compare_methods:
            areas = sorted({1, 16, int(op.score.min_area), 64})
            variants = [("pixel", 1)] + [("window", a) for a in areas if a > 1] + [("region", a) for a in areas]
            record["method_auroc"] = _method_aurocs(model, test, vocab, variants)
        if args.compare_definitions:
            from densevlm.training.fewshot import adapt_from_regions

            adapted = {}
            for n in args.adapt_regions:
                regions = _defect_regions(cal, vocab, n or None)
                adapted[f"{len(regions)} regions"] = adapt_from_regions(model, vocab, regions).embeddings
            record["definition_auroc"] = _definition_aurocs(model, test_images, vocab, op.score, adapted)
        records[label] = record
        m = record["metrics"]
        print(f"{label}: AUROC {m['inspection.image_auroc']:.3f}  R@1% {m['inspection.recall_at_fa_0.01']:.3f}  "
              f"R@5% {m['inspection.recall_at_fa_0.05']:.3f}  AUPRO {m['inspection.aupro']:.3f}  "
              f"calibrated FA {op.calibration['false_alarm']['value']:.3f} -> fresh FA {record['fresh_false_alarm']:.3f}, "
              f"fresh recall {record['fresh_recall']:.3f}  ({record['seconds']} s)", flush=True)
    lines = [f"Embedded world, defect rate {args.defect_rate}: test {args.n_test} images, calibration {args.n_cal} "
             f"images at {args.max_false_alarm:.0%} false alarms.", "",
             "| model | image AUROC | recall @1 % FA | recall @5 % FA | AUPRO | FA on cal. [95 % CI] | FA fresh | recall fresh |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in records.items():
        m, c = r["metrics"], r["calibration"]["false_alarm"]
        lines.append(f"| {label} | {m['inspection.image_auroc']:.3f} | {m['inspection.recall_at_fa_0.01']:.3f} | "
                     f"{m['inspection.recall_at_fa_0.05']:.3f} | {m['inspection.aupro']:.3f} | {c['value']:.3f} "
                     f"[{c['ci'][0]:.3f}, {c['ci'][1]:.3f}] | {r['fresh_false_alarm']:.3f} | {r['fresh_recall']:.3f} |")
    lines += ["", f"Calibration rules at {args.max_false_alarm:.0%} (`calibrate --rule`; k = OK calibration images "
              "allowed at or above the threshold, of n; new-image bounds as `calibrate` prints them)", "",
              "| model | rule | k / n | FA on cal. | expected FA on new images (at most) | 90 % bound | FA fresh | recall fresh |",
              "|---|---|---|---|---|---|---|---|"]
    for label, r in records.items():
        for rule, x in r["rules"].items():
            c, new = x["calibration"], x["calibration"]["false_alarm_new_images"]
            lines.append(f"| {label} | {rule} | {c['allowed_false_alarms']} / {c['n_ok']} | {c['false_alarm']['value']:.3f} | "
                         f"{new['expected']:.3f} | {new['upper']:.3f} | {x['fresh_false_alarm']:.3f} | {x['fresh_recall']:.3f} |")
    for label, r in records.items():
        conf = r["metrics"]["inspection.confusion"]
        lines += ["", f"Defect confusion, {label} (rows: true defect segments; columns: class of largest mean probability)", "",
                  "| true \\ called | " + " | ".join(conf["columns"]) + " |", "|---|" + "---|" * len(conf["columns"])]
        lines += [f"| {d} | " + " | ".join(str(c) for c in row) + " |" for d, row in zip(conf["defects"], conf["counts"])]
    if args.compare_methods:
        names = list(next(iter(records.values()))["method_auroc"])
        lines += ["", "Image AUROC by score method (test set)", "", "| model | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        lines += [f"| {label} | " + " | ".join(f"{r['method_auroc'][n]:.3f}" for n in names) + " |"
                  for label, r in records.items()]
    if args.compare_definitions:
        names = list(next(iter(records.values()))["definition_auroc"])
        lines += ["", "Image AUROC by NG-score definition (test set)", "", "| definition | " + " | ".join(records) + " |",
                  "|---|" + "---|" * len(records)]
        lines += [f"| {n} | " + " | ".join(f"{r['definition_auroc'].get(n, float('nan')):.3f}" for r in records.values()) + " |"
                  for n in names]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
