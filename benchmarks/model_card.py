"""Numbers for models/README.md: region classification of the shipped student and teacher on a
held-out synthetic set (seeds never used for training), and how well each labels grid cells.

    python benchmarks/model_card.py [--student tiny-student] [--teacher tiny-teacher] [--n 500]
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="tiny-student")
    parser.add_argument("--teacher", default="tiny-teacher")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--work", default="/tmp/densevlm-card")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from densevlm.backbones.factory import BUILTIN_MODELS, builtin_path
    from densevlm.data.panoptic import PanopticDataset
    from densevlm.data.synth import default_vocabulary, write_world
    from densevlm.evaluation import EvalConfig, evaluate, format_table
    from densevlm.evaluation.grid import grid_agreement
    from densevlm.model import load_model

    heldout = Path(args.work) / "heldout"
    if not (heldout / "panoptic.json").is_file():
        write_world(heldout, args.n, seed=2_000_000, workers=2, progress=False)
    dataset = PanopticDataset(heldout)
    vocab = default_vocabulary()
    for name in (args.student, args.teacher):
        model = load_model(name)
        path = builtin_path(name) if name in BUILTIN_MODELS else Path(name)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        size_mb = path.stat().st_size / 1e6
        metrics = evaluate(model, dataset, vocab, EvalConfig(), progress=False).metrics
        print(f"## {name}  ({path.name}, {size_mb:.1f} MB, sha256 {digest}, logit scale {model.logit_scale:.1f})")
        print(format_table(metrics))
        for features in ("crop", "dense", "mean"):
            g = grid_agreement(model, dataset, vocab, features=features, limit=200)
            print(f"grid cells ({features:5}): agreement {g['agreement']:.1f} % (thing-majority cells "
                  f"{g['agreement_thing_cells']:.1f} %, stuff-majority {g['agreement_stuff_cells']:.1f} %), "
                  f"pure-stuff cells called a thing {g['pure_stuff_called_thing']:.1f} %, kept {g['kept']:.1f} % "
                  f"of {g['cells']} cells")
        print()


if __name__ == "__main__":
    main()
