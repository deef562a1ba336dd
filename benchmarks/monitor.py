"""Drift monitoring on the embedded world: detection rate per shift kind, false drift, time per batch.

A reference set (``--n-ref`` images, defect rate 0.5, e.g. the calibration images) against
``--batches`` unshifted batches and as many batches of each shift kind (``lighting``, ``blur``,
``new-surface``, ``new-defect``, ``camera``), each of ``--batch-size`` images (targets: every
shift detected in >= 95 % of its batches; false drift in <= 5 % of unshifted batches). Scenes
are drawn in memory (``generate_scene``), never written.

Every batch's per-signal p-values (and its seconds: drawing the scenes, which is not part of
monitoring; scoring them, one forward pass and the per-image statistics; the drift tests) go to
the ``--cache`` JSON after each batch, keyed by model label, kind and batch seed; a later run with
the same settings reuses them (and loads no model when all are there), so decision rules can be
compared without scoring again. The rules compared on the same p-values, each at family-wise
level ``--alpha`` over the ``m`` signals:

* ``weighted-simes`` -- the monitor's rule (:func:`densevlm.inspection.monitor.decide` with
  :func:`~densevlm.inspection.monitor.signal_weights`): Simes on ``p_i / w_i``, weights of mean
  1 that give ``defect_scores`` half of alpha (``w = m / 2``) and the other signals the rest.
  Chosen *after* seeing the default batches (the DenseVLM-recipe student's missed new-defect
  batches have only ``defect_scores`` small), so it was checked on a fresh reference and fresh
  batches (``--ref-seed``, ``--batch-seed``);
* ``simes`` -- Simes' global test with equal weights: drift when the smallest
  Benjamini-Hochberg adjusted p-value is <= alpha;
* ``bonferroni`` -- the rule before both: drift when the smallest p-value is < alpha / m;
* ``cauchy`` -- the Cauchy combination test (Liu & Xie, JASA 2020), equal weights:
  ``T = mean tan((0.5 - p_i) pi)``, drift when ``0.5 - arctan(T) / pi <= alpha``; valid
  asymptotically (small alpha) under arbitrary dependence of the signals.

Prints per model and rule the share of batches called drift per kind, and the signals the
monitor's rule names. ``--batch-seed`` and ``--ref-seed`` draw a fresh set of batches and a
fresh reference (e.g. to validate a rule chosen on the default seeds).

    python benchmarks/monitor.py --threads 1 --models base=tiny-student --runs DenseVLM=RUN --cache mon.json --markdown mon.md
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

REF_SEED = 3_000_000
BATCH_SEED = 6_000_000
RULES = ("weighted-simes", "simes", "bonferroni", "cauchy")


def _images(seed: int, n: int, defect_rate: float, shift) -> list:
    from PIL import Image

    from densevlm.data.synth.writer import generate_scene

    return [Image.fromarray(generate_scene(seed, i, 64, defect_rate=defect_rate, shift=shift).image) for i in range(n)]


def drifted(p_values: dict[str, float], rule: str, alpha: float) -> bool:
    """Whether ``rule`` (one of :data:`RULES`) calls a batch with these per-signal p-values drifted."""
    from densevlm.inspection.monitor import decide, signal_weights

    p = np.array(list(p_values.values()), dtype=np.float64)
    if rule == "weighted-simes":
        return bool(decide(p, alpha, signal_weights(list(p_values)))[1].any())
    if rule == "simes":
        return bool(decide(p, alpha)[1].any())
    if rule == "bonferroni":
        return bool(p.min() < alpha / len(p))
    if rule == "cauchy":
        t = np.mean(np.tan((0.5 - np.clip(p, 1e-15, 1.0 - 1e-15)) * np.pi))
        return bool(0.5 - np.arctan(t) / np.pi <= alpha)
    raise ValueError(f"unknown rule {rule!r}")


def _load_cache(path: str | None, config: dict) -> dict:
    if not path or not Path(path).exists():
        return {"config": config, "models": {}}
    cache = json.loads(Path(path).read_text(encoding="utf-8"))
    if cache.get("config") != config:
        raise SystemExit(f"{path}: cached p-values were made with other settings ({cache.get('config')}); "
                         "use another --cache file")
    return cache


def _measure(label: str, spec: str, kinds: list[str], args, cache: dict) -> None:
    """Score and test every batch of ``kinds`` for one model that ``cache`` lacks, saving after each batch."""
    import torch

    from densevlm.data.synth import default_vocabulary
    from densevlm.fileio import atomic_write_json
    from densevlm.inspection.monitor import BatchStats, compare
    from densevlm.inspection.scores import ScoreConfig, analyse_images
    from densevlm.model import load_model

    entry = cache["models"].setdefault(label, {"spec": spec, "kinds": {}})
    if entry["spec"] != spec:
        raise SystemExit(f"{args.cache}: {label} was measured with {entry['spec']}, not {spec}; use another label")
    todo = [(k, kind, b) for k, kind in enumerate(kinds) for b in range(args.batches)
            if str(b) not in entry["kinds"].get(kind, {})]
    if not todo:
        return
    torch.set_num_threads(args.threads)
    vocab = default_vocabulary()
    model = load_model(str(Path(spec) / "last.pt") if Path(spec).is_dir() else spec)
    cfg = ScoreConfig().resolved(model)

    def stats(images: list) -> BatchStats:
        return BatchStats.from_analyses(list(analyse_images(model, images, vocab, cfg)), vocab.defect_indices)

    reference = stats(_images(args.ref_seed, args.n_ref, args.defect_rate, None))
    for k, kind, b in todo:
        t0 = time.perf_counter()
        images = _images(args.batch_seed + 1000 * k + b, args.batch_size, args.defect_rate,
                         None if kind == "none" else kind)
        t1 = time.perf_counter()
        batch = stats(images)
        t2 = time.perf_counter()
        report = compare(reference, batch, alpha=args.alpha, n_resamples=args.permutations, seed=b)
        entry["kinds"].setdefault(kind, {})[str(b)] = {
            "p_values": {n: s["p_value"] for n, s in report["signals"].items()},
            "seconds": [t1 - t0, t2 - t1, time.perf_counter() - t2]}
        if args.cache:
            atomic_write_json(args.cache, cache, durable=False, indent=None)
        print(f"{label} {kind} batch {b}: {report['verdict']} {report['fired']}", flush=True)


def summarise(cache: dict, kinds: list[str], batches: int, alpha: float) -> str:
    """The markdown tables of the cached p-values: share of batches drifted per model, rule and kind."""
    from densevlm.inspection.monitor import decide, signal_weights

    lines = [f"Share of {batches} batches called drift per kind (unshifted: false drift); family-wise alpha {alpha}.",
             "", "| model | rule | " + " | ".join(kinds) + " | s / batch: score + tests (drawing) |",
             "|---|---|" + "---|" * (len(kinds) + 1)]
    named, differ = [], []
    for label, entry in cache["models"].items():
        rows = {kind: [entry["kinds"][kind][str(b)] for b in range(batches)] for kind in kinds}
        seconds = np.mean([r["seconds"] for kind in kinds for r in rows[kind]], axis=0)
        for rule in RULES:
            cells = [f"{np.mean([drifted(r['p_values'], rule, alpha) for r in rows[kind]]):.0%}" for kind in kinds]
            timing = f"{seconds[1]:.2f} + {seconds[2]:.2f} ({seconds[0]:.2f})" if rule == RULES[0] else ""
            lines.append(f"| {label} | {rule} | " + " | ".join(cells) + f" | {timing} |")
        per_kind = []
        for kind in kinds:
            counts: dict[str, int] = {}
            for r in rows[kind]:
                names = list(r["p_values"])
                p = np.array([r["p_values"][n] for n in names])
                for name, fired in zip(names, decide(p, alpha, signal_weights(names))[1]):
                    counts[name] = counts.get(name, 0) + int(fired)
            per_kind.append(f"{kind}: " + (", ".join(f"{n} {c}" for n, c in sorted(counts.items(), key=lambda x: (-x[1], x[0]))
                                                     if c) or "-"))
        named.append(f"- {label}: " + "; ".join(per_kind))
        for kind in kinds:
            for b, r in enumerate(rows[kind]):
                verdicts = [drifted(r["p_values"], rule, alpha) for rule in RULES]
                if len(set(verdicts)) > 1:
                    smallest = ", ".join(f"{n} {p:.4f}" for n, p in sorted(r["p_values"].items(), key=lambda x: x[1])[:4])
                    differ.append(f"- {label} {kind} batch {b}: " + ", ".join(
                        f"{rule} {'drift' if v else 'stable'}" for rule, v in zip(RULES, verdicts)) + f" (p: {smallest})")
    return "\n".join(lines + ["", f"Signals the {RULES[0]} rule names (batches of {batches}), per kind:", ""] + named
                     + ["", "Batches on which the rules disagree (the four smallest p-values):", ""] + (differ or ["- none"]))


def main() -> None:
    from densevlm.data.synth.inspection import SHIFTS
    from densevlm.inspection.monitor import DEFAULT_ALPHA

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-ref", type=int, default=500)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--batch-seed", type=int, default=BATCH_SEED,
                        help=f"batch b of kind k is drawn with seed BATCH_SEED + 1000 k + b (default: {BATCH_SEED})")
    parser.add_argument("--ref-seed", type=int, default=REF_SEED, help=f"seed of the reference images (default: {REF_SEED})")
    parser.add_argument("--defect-rate", type=float, default=0.5)
    parser.add_argument("--shifts", nargs="+", default=list(SHIFTS))
    parser.add_argument("--models", nargs="+", default=["base=tiny-student", "teacher-l=tiny-teacher-l"])
    parser.add_argument("--runs", nargs="*", default=[], help="LABEL=RUN_DIR (or checkpoint) of tuned students")
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=None, help="JSON of per-batch p-values, reused and extended")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()

    kinds = ["none", *args.shifts]
    config = {"n_ref": args.n_ref, "batch_size": args.batch_size, "batch_seed": args.batch_seed,
              "ref_seed": args.ref_seed, "defect_rate": args.defect_rate, "permutations": args.permutations}
    cache = _load_cache(args.cache, config)
    specs = dict(item.split("=", 1) for item in [*args.models, *args.runs])
    for label, spec in specs.items():
        _measure(label, spec, kinds, args, cache)
    table = summarise({"models": {k: cache["models"][k] for k in specs}}, kinds, args.batches, args.alpha)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
