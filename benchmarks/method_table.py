"""The method table on the embedded world: base / CLIPSelf / DenseVLM / no-decouple / stuff-only.

Fine-tunes the shipped student with each method on an unlabeled pool (no ground truth used),
over several fine-tuning seeds and both temperatures (tau = the teacher's logit scale, and
tau = 100 as in the paper's code), evaluates box and mask region classification on a held-out
set, and prints mean +- std with each run's wall time. Finished runs leave ``heldout.json`` in
their run directory and are not repeated when the benchmark is started again. ``--markdown FILE`` also writes the
table (the numbers in BENCHMARKS.md come from here). Extra configurations can be compared
with ``--variant NAME:key=value,key=value`` (e.g. ``seg:regions=segments``).

    python benchmarks/method_table.py [--seeds 0 1 2] [--steps 200] [--markdown table.md]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from _worlds import KEYS, mean_std, standard_worlds


def _parse_variant(text: str) -> tuple[str, dict]:
    name, _, spec = text.partition(":")
    values = {}
    for pair in filter(None, spec.split(",")):
        key, _, raw = pair.partition("=")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return name, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/densevlm-methods")
    parser.add_argument("--student", default="tiny-student")
    parser.add_argument("--teacher", default="tiny-teacher")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="override the default number of steps")
    parser.add_argument("--methods", nargs="+", default=["clipself", "densevlm", "nodecouple", "stuffonly"])
    parser.add_argument("--taus", nargs="+", default=["scale", "100"], help="'scale' = the teacher's logit scale")
    parser.add_argument("--variant", action="append", default=[], help="NAME:key=value,... extra DenseVLM configs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from densevlm.data.panoptic import PanopticDataset
    from densevlm.data.synth import default_vocabulary
    from densevlm.evaluation import EvalConfig, evaluate
    from densevlm.model import load_model
    from densevlm.training.config import PAPER_SETTINGS, TrainConfig
    from densevlm.training.trainer import train

    work = Path(args.work)
    pool, heldout = standard_worlds(work)
    dataset = PanopticDataset(heldout)
    vocab = default_vocabulary()
    eval_cfg = EvalConfig(crops=False, segmentation=False)

    def score(model) -> dict:
        return evaluate(model, dataset, vocab, eval_cfg, progress=False).metrics

    rows: list[tuple[str, list[dict], list[float]]] = []
    rows.append(("base (no fine-tuning)", [score(load_model(args.student))], []))
    configs: list[tuple[str, dict]] = []
    for method in args.methods:
        if method == "clipself":
            configs.append(("CLIPSelf", {"method": "clipself"}))
            continue
        for tau in args.taus:
            label = {"densevlm": "DenseVLM", "nodecouple": "no-decouple", "stuffonly": "stuff-only"}[method]
            tau_value = None if tau == "scale" else float(tau)
            configs.append((f"{label}, tau={'logit scale' if tau_value is None else tau}", {"method": method, "logit_scale": tau_value}))
    for text in args.variant:
        name, values = _parse_variant(text)
        configs.append((name, {"method": "densevlm", **values}))
    for label, overrides in configs:
        results, times = [], []
        for seed in args.seeds:
            out = work / "runs" / f"{re.sub(r'[^A-Za-z0-9.-]+', '_', label)}-s{seed}"
            fields = {**PAPER_SETTINGS, "student": args.student, "teacher": args.teacher, "images": str(pool),
                      "out": str(out), "seed": seed}
            if args.steps:
                fields["steps"] = args.steps
            done = out / "heldout.json"
            if done.is_file():  # finished by an earlier, interrupted invocation
                record = json.loads(done.read_text(encoding="utf-8"))
            else:
                cfg = TrainConfig(**{**fields, **overrides})
                start = time.perf_counter()
                train(cfg, progress=False)
                wall = time.perf_counter() - start
                record = {"wall_s": wall, "metrics": score(load_model(str(out / "last.pt")))}
                done.write_text(json.dumps(record), encoding="utf-8")
            times.append(record["wall_s"])
            results.append(record["metrics"])
            print(f"  {label} seed {seed}: " + ", ".join(f"{name} {results[-1][k]:.1f}" for k, name in KEYS)
                  + f"  ({times[-1]:.0f} s)", flush=True)
        rows.append((label, results, times))
    header = "| method | " + " | ".join(name for _, name in KEYS) + " | train wall s |"
    lines = [header, "|" + "---|" * (len(KEYS) + 2)]
    for label, results, times in rows:
        cells = [mean_std([r[k] for r in results]) for k, _ in KEYS]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean_std(times) if times else '-'} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
