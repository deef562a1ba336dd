"""CPU speed of a distilled model against its teacher, in one run: dense encoder and ``segment``.

For each model: ``encode_dense`` at batch 1 (milliseconds per image) and one full
``densevlm.segment`` call (dense map, label and score maps at the original size, regions, RLE)
on a 64x64 scene of the embedded world and on the same scene at 640x480; and the part of the
64x64 call both models share, timed alone: the same call with ``encode_dense`` answering with
its stored output (letterbox, class embeddings from the memo, maps, regions, RLE, the
pipeline). A call costs more than its encoder plus that part alone, since each evicts the
other's data from the caches. The two models are
timed in alternating rounds (median of the rounds' per-call means), so a machine whose load
changes during the run slows both alike and the ratio stays meaningful. ``--clock cpu`` times
the process's CPU time instead of the wall clock: on a machine shared with other jobs the time
spent waiting for a core is then not counted, which is closer to what an idle machine gives.

    PYTHONPATH=src python benchmarks/distill_cpu.py --teacher tiny-teacher --student RUN/last.pt [--threads 2]

This is a script, not a test; HF_HUB_OFFLINE=1 is set for you.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import statistics
import tempfile
import time
from typing import Callable

import torch
from PIL import Image

import densevlm
from densevlm.data.synth import default_vocabulary, generate_scene


def _mean_call_s(fn: Callable[[], object], calls: int, clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    for _ in range(calls):
        fn()
    return (clock() - start) / calls


def _tasks(model, scene: Image.Image, photo: Image.Image) -> dict[str, Callable[[], object]]:
    vocab = default_vocabulary()
    x = model.prepare(scene, model.default_size, square=True)[0][None]
    with torch.inference_mode():
        stored = model.encode_dense(x)

    def dense() -> None:
        with torch.inference_mode():
            model.encode_dense(x)

    def shared() -> None:
        model.encode_dense = lambda images: stored.clone()  # shadows the method for this call
        try:
            densevlm.segment(model, scene, vocab)
        finally:
            del model.encode_dense

    return {
        "encode_dense ms": dense,
        "segment 64x64 ms": lambda: densevlm.segment(model, scene, vocab),
        "segment 640x480 ms": lambda: densevlm.segment(model, photo, vocab),
        "shared 64x64 ms": shared,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="tiny-teacher", help="teacher model or checkpoint")
    parser.add_argument("--student", required=True, help="distilled checkpoint (densevlm distill --out RUN: RUN/last.pt)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating timing rounds (default: 7)")
    parser.add_argument("--calls", type=int, default=50, help="calls per model per round (default: 50)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall clock, or this process's CPU time (for a shared machine; default: wall)")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    if "DENSEVLM_CACHE" not in os.environ:  # a throwaway cache, removed at exit
        os.environ["DENSEVLM_CACHE"] = tempfile.mkdtemp(prefix="densevlm-bench-")
        atexit.register(shutil.rmtree, os.environ["DENSEVLM_CACHE"], ignore_errors=True)
    scene = Image.fromarray(generate_scene(seed=0, index=0, size=64).image)
    photo = scene.resize((640, 480), Image.BICUBIC)
    models = {"teacher": densevlm.load_model(args.teacher), "student": densevlm.load_model(args.student)}
    tasks = {name: _tasks(m, scene, photo) for name, m in models.items()}
    times: dict[tuple[str, str], list[float]] = {}
    for name in models:  # warm-up: class embeddings cached, allocator warm
        for fn in tasks[name].values():
            _mean_call_s(fn, 3)
    for _ in range(args.rounds):
        for task in tasks["teacher"]:
            for name in models:
                times.setdefault((name, task), []).append(_mean_call_s(tasks[name][task], args.calls, clock))
    print(f"{args.threads} threads, torch {torch.__version__}, batch 1, median of {args.rounds} alternating rounds "
          f"of {args.calls} calls, {args.clock} clock")
    header = f"{'model':<10} {'arch':<12} {'image M':>8} " + " ".join(f"{t:>18}" for t in tasks["teacher"])
    print(header)
    medians = {k: statistics.median(v) for k, v in times.items()}
    for name, model in models.items():
        params = sum(p.numel() for p in model.backbone.clip.visual.parameters()) / 1e6
        cells = " ".join(f"{1000 * medians[(name, t)]:>18.2f}" for t in tasks[name])
        print(f"{name:<10} {model.spec.arch:<12} {params:>8.2f} {cells}")
    ratios = " ".join(f"{medians[('teacher', t)] / medians[('student', t)]:>17.2f}x" for t in tasks["teacher"])
    print(f"{'speed-up':<10} {'':<12} {'':>8} {ratios}")


if __name__ == "__main__":
    main()
