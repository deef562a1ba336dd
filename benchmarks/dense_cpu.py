"""encode_dense latency on this CPU: ViT-B-16 at 224 and 448 px, EVA02-B-16 at 224 px (random weights).

Prints the median of several runs after a warm-up, fp32 and bf16 autocast taking turns, their
ratio, and the peak resident memory of the process. Run alone: other torch processes distort
the numbers; on a shared machine, ``--threads 1 --clock cpu`` times with the process's CPU time,
which is what a quiet machine's wall time would be for one thread.

    python benchmarks/dense_cpu.py [--threads 2] [--repeats 5] [--clock wall|cpu]
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


def time_dense(model, size: int, repeats: int, clock) -> tuple[float, float]:
    """Median seconds of ``encode_dense`` on one ``size`` image in fp32 and in bf16 autocast."""
    x = torch.randn(1, 3, size, size)
    times: dict[bool, list[float]] = {False: [], True: []}
    with torch.inference_mode():
        for r in range(repeats + 1):  # the first round warms up
            for bf16 in (False, True):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    start = clock()
                    model.encode_dense(x)
                    if r:
                        times[bf16].append(clock() - start)
    return statistics.median(times[False]), statistics.median(times[True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall clock (default) or the process's CPU time (with --threads 1 on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"torch {torch.__version__}, {args.threads} threads, batch 1, median of {args.repeats}, {args.clock} clock")
    print(f"{'model':12} {'input':>7} {'fp32 s':>8} {'bf16 s':>8} {'fp32/bf16':>9} {'grid':>7} {'peak RSS MB':>12}")
    for name, sizes in (("ViT-B-16", (224, 448)), ("EVA02-B-16", (224,))):
        model = densevlm.load_model(name)
        for size in sizes:
            fp32, bf16 = time_dense(model, size, args.repeats, clock)
            grid = f"{size // model.patch_size}x{size // model.patch_size}"
            print(f"{name:12} {size:>7} {fp32:8.3f} {bf16:8.3f} {fp32 / bf16:8.2f}x {grid:>7} {peak_rss_mb():12.0f}",
                  flush=True)
        del model


if __name__ == "__main__":
    main()
