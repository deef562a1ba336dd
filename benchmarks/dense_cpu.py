"""encode_dense latency on this CPU: ViT-B-16 at 224 and 448 px, EVA02-B-16 at 224 px (random weights).

Prints the median of several runs after a warm-up, fp32 and bf16 autocast, and the peak
resident memory of the process. Run alone: other torch processes distort the numbers.

    python benchmarks/dense_cpu.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import densevlm


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_dense(model, size: int, repeats: int, bf16: bool) -> float:
    x = torch.randn(1, 3, size, size)
    times = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model.encode_dense(x)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model.encode_dense(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch 1, median of {args.repeats}")
    print(f"{'model':12} {'input':>7} {'fp32 s':>8} {'bf16 s':>8} {'grid':>7} {'peak RSS MB':>12}")
    for name, sizes in (("ViT-B-16", (224, 448)), ("EVA02-B-16", (224,))):
        model = densevlm.load_model(name)
        for size in sizes:
            fp32 = time_dense(model, size, args.repeats, bf16=False)
            bf16 = time_dense(model, size, args.repeats, bf16=True)
            grid = f"{size // model.patch_size}x{size // model.patch_size}"
            print(f"{name:12} {size:>7} {fp32:8.3f} {bf16:8.3f} {grid:>7} {peak_rss_mb():12.0f}")
        del model


if __name__ == "__main__":
    main()
