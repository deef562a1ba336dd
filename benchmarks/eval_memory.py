"""Peak memory of `densevlm eval` does not grow with the number of images.

Generates a 2000-image world, then evaluates the tiny student on the first 200 and on all
2000 images, each in a fresh process, and compares their peak resident memory (the counters
are [K] and [K, K] integers; nothing per image is kept).

    python benchmarks/eval_memory.py [--model tiny-student] [--work /tmp/densevlm-evalmem]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import resource, sys, time, torch
torch.set_num_threads(2)
from densevlm.data.panoptic import PanopticDataset
from densevlm.evaluation import EvalConfig, evaluate
from densevlm.model import load_model
model = load_model(sys.argv[1])
ds = PanopticDataset(sys.argv[2], limit=int(sys.argv[3]))
start = time.perf_counter()
m = evaluate(model, ds, cfg=EvalConfig(batch_size=16), progress=False).metrics
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, m["n_images"], m["n_segments"], time.perf_counter() - start)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-student")
    parser.add_argument("--work", default="/tmp/densevlm-evalmem")
    args = parser.parse_args()
    world = Path(args.work) / "world"
    if not (world / "panoptic.json").is_file():
        from densevlm.data.synth import write_world

        write_world(world, 2000, seed=4_000_000, workers=2, progress=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    rows = []
    for n in (200, 2000):
        out = subprocess.run([sys.executable, "-c", CHILD, args.model, str(world), str(n)], capture_output=True,
                             text=True, env=env, check=True).stdout.split()
        rss, images, segments, seconds = float(out[0]), int(out[1]), int(out[2]), float(out[3])
        rows.append((images, segments, rss, seconds))
        print(f"{images:5d} images {segments:6d} segments  peak RSS {rss:7.1f} MB  eval {seconds:6.1f} s")
    growth = (rows[1][2] - rows[0][2]) / rows[0][2] * 100.0
    print(f"peak RSS growth 200 -> 2000 images: {growth:+.1f} % (target: < 10 %)")


if __name__ == "__main__":
    main()
