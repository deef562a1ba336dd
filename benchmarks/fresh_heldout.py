"""Re-score finished method-table runs on a fresh held-out world that no setting was tuned on.

The method table's held-out set (seed 2,000,000) was also where its variants were compared, so
a recipe picked there is scored optimistically. This generates another 500 scenes (seed
3,000,000 by default) and evaluates the ``last.pt`` of every run of ``benchmarks/method_table.py``
whose directory name starts with one of the given prefixes, grouped over seeds (mean +- std).

    python benchmarks/fresh_heldout.py --work /tmp/densevlm-methods CLIPSelf-s DenseVLM_taulogit_scale-s DenseVLM_parts
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from _worlds import KEYS, ensure_world, mean_std


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefixes", nargs="+", help="run directory name prefixes (one row each)")
    parser.add_argument("--work", default="/tmp/densevlm-methods", help="the method table's --work directory")
    parser.add_argument("--seed", type=int, default=3_000_000, help="world seed of the fresh held-out set")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from densevlm.data.panoptic import PanopticDataset
    from densevlm.data.synth import default_vocabulary
    from densevlm.evaluation import EvalConfig, evaluate
    from densevlm.model import load_model

    work = Path(args.work)
    fresh = ensure_world(work / f"heldout-{args.seed}", args.n, args.seed)
    dataset, vocab = PanopticDataset(fresh), default_vocabulary()
    cfg = EvalConfig(crops=False, segmentation=False)
    print("| runs | " + " | ".join(name for _, name in KEYS) + " | seeds |")
    print("|" + "---|" * (len(KEYS) + 2))
    for prefix in args.prefixes:
        runs = sorted(p for p in (work / "runs").glob(f"{prefix}*") if re.search(r"-s\d+$", p.name) and (p / "last.pt").is_file())
        if not runs:
            print(f"| {prefix} | no finished runs |")
            continue
        scores = [evaluate(load_model(str(r / "last.pt")), dataset, vocab, cfg, progress=False).metrics for r in runs]
        cells = [mean_std([s[key] for s in scores]) for key, _ in KEYS]
        print(f"| {prefix} | " + " | ".join(cells) + f" | {len(runs)} |", flush=True)


if __name__ == "__main__":
    main()
