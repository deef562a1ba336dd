"""CPU throughput of ``densevlm.segment``: images per second, median of several timed runs.

Models: ``tiny-student`` at 64 px (``tiny-vit`` with random weights when the shipped weights are
missing; timing does not depend on the weights) and ``ViT-B-16`` (random init) at 448 px, on
the embedded world's vocabulary (16 classes). Each run is one full ``segment`` call on one image
(dense map, label and score maps at the original size, regions, RLE); the ``model s`` column
is ``encode_dense`` alone, so the rest is the post-processing. The class embeddings are
computed once during the warm-up and read from the cache afterwards.

    PYTHONPATH=src python benchmarks/segment_cpu.py [--threads 2] [--runs 5] [--only tiny|vit-b]

This is a script, not a test; run it on an idle machine (HF_HUB_OFFLINE=1 is set for you).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import statistics
import tempfile
import time

import torch
from PIL import Image

import densevlm
from densevlm.data.synth import default_vocabulary, generate_scene
from densevlm.errors import DenseVLMError


def _tiny_model() -> tuple[object, str]:
    try:
        return densevlm.load_model("tiny-student"), "tiny-student"
    except DenseVLMError:
        torch.manual_seed(0)
        return densevlm.load_model("tiny-vit"), "tiny-vit (random)"


def _median_seconds(fn, runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(model, label: str, image: Image.Image, size: int, runs: int) -> dict[str, object]:
    vocab = default_vocabulary()
    total = _median_seconds(lambda: densevlm.segment(model, image, vocab, size=size), runs)
    x, _ = model.prepare(image, size, square=True)

    def forward() -> None:
        with torch.inference_mode():
            model.encode_dense(x[None])

    dense = _median_seconds(forward, runs)
    return {"model": label, "size": size, "image": f"{image.width}x{image.height}", "seconds": total,
            "model_seconds": dense, "images_per_s": 1.0 / total, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model after one warm-up (default: 5)")
    parser.add_argument("--only", choices=("tiny", "vit-b"), default=None, help="benchmark one model only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("DENSEVLM_CACHE", tempfile.mkdtemp(prefix="densevlm-bench-"))
    scene = Image.fromarray(generate_scene(seed=0, index=0, size=64).image)
    rows = []
    if args.only in (None, "tiny"):
        model, label = _tiny_model()
        rows.append(bench(model, label, scene, 64, args.runs))
    if args.only in (None, "vit-b"):
        model = densevlm.load_model("ViT-B-16")
        photo = scene.resize((640, 480), Image.BICUBIC)
        rows.append(bench(model, "ViT-B-16 (random)", photo, 448, args.runs))
    print(f"densevlm.segment on CPU, {args.threads} threads, torch {torch.__version__}, median of {args.runs} runs")
    header = f"{'model':<20} {'size':>5} {'image':>9} {'s/img':>8} {'model s':>8} {'img/s':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<20} {r['size']:>5} {r['image']:>9} {r['seconds']:>8.3f} {r['model_seconds']:>8.3f} "
              f"{r['images_per_s']:>8.2f}")


if __name__ == "__main__":
    main()
