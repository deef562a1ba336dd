"""Contrastive pretraining throughput (images/s) of the tiny architectures on this CPU.

Builds a small world, runs a few pretraining steps per architecture after a warm-up and
prints images/s (forward + backward + AdamW, batch 64, fp32). Run alone.

    python benchmarks/pretrain_cpu.py [--threads 2] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from densevlm.data.synth import write_world
    from densevlm.training.pretrain import PretrainConfig, pretrain

    with tempfile.TemporaryDirectory() as tmp:
        write_world(f"{tmp}/world", 512, seed=9, workers=2, progress=False)
        print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}, {args.steps} timed steps")
        for arch, crop in (("tiny-vit", 0.0), ("tiny-vit", 0.5), ("tiny-vit-l", 0.0)):
            cfg = PretrainConfig(data=f"{tmp}/world", out=f"{tmp}/{arch}.pt", arch=arch, steps=args.steps + 3,
                                 batch_size=args.batch_size, crop_prob=crop, save_every=10_000)
            start = time.perf_counter()
            summary = pretrain(cfg, progress=False)
            print(f"{arch:11} crop_prob {crop:.1f}: {summary['images_per_s']:6.1f} images/s "
                  f"({summary['wall_s']:.1f} s for {summary['steps']} steps, {time.perf_counter() - start:.1f} s with loading)")


if __name__ == "__main__":
    main()
