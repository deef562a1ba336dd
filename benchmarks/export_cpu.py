"""CPU latency of the dense map: PyTorch eager (fp32, bf16 autocast) against ONNX Runtime (fp32).

A script, not a test (timings depend on the machine and its load). For each model it exports the
dense path once (dynamic H/W, no parity check, no region graph) into a temporary directory, then
times one forward pass of a batch of one image after warm-up and prints the median of N runs.

    python benchmarks/export_cpu.py                       # tiny-vit at 64 px, ViT-B-16 at 448 px
    python benchmarks/export_cpu.py --runs 20 --threads 2 --models tiny-vit:64 ViT-B-16:448=vitb16/

Models have random weights (only latency is measured). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from typing import Callable

import torch


def median_ms(fn: Callable[[], object], runs: int, warmup: int) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``runs`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def bench_model(
    name: str, size: int, runs: int, warmup: int, threads: int, export_dir: str = ""
) -> list[tuple[str, str, float]]:
    """``[(model@size, runtime, median ms)]`` for one model; ``export_dir``: an existing dynamic
    export of the same architecture to time instead of exporting again (weights do not matter)."""
    from densevlm.export import export_onnx, load_onnx_model
    from densevlm.model import load_model
    from densevlm.vocab import Vocabulary

    model = load_model(name)
    x = torch.randn(1, 3, size, size)
    label = f"{name} @ {size}"
    rows = []
    with torch.inference_mode():
        rows.append((label, "torch eager fp32", median_ms(lambda: model.encode_dense(x), runs, warmup)))

        def bf16() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model.encode_dense(x)

        rows.append((label, "torch eager bf16 autocast", median_ms(bf16, runs, warmup)))
    if export_dir:
        onnx_model = load_onnx_model(export_dir, threads=threads)
        rows.append((label, "onnxruntime fp32", median_ms(lambda: onnx_model.encode_dense(x), runs, warmup)))
        return rows
    vocab = Vocabulary.from_lists(["bolt"], ["floor"])
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        export_onnx(model, out, vocab, size=size, dynamic=True, regions=False, parity=False)
        export_s = time.perf_counter() - start
        onnx_model = load_onnx_model(out, threads=threads)
        ms = median_ms(lambda: onnx_model.encode_dense(x), runs, warmup)
        rows.append((label, f"onnxruntime fp32 (export {export_s:.0f} s)", ms))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny-vit:64", "ViT-B-16:448"],
                        help="NAME:SIZE[=EXPORT_DIR]; EXPORT_DIR reuses a dynamic export of that architecture")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per case (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default: 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for torch and ORT")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)
    rows = []
    for spec in args.models:
        model_size, _, export_dir = spec.partition("=")
        name, _, size = model_size.partition(":")
        rows += bench_model(name, int(size or 224), args.runs, args.warmup, args.threads, export_dir)
    print(f"dense map, batch 1, median of {args.runs} runs after {args.warmup} warm-up, {args.threads} threads, "
          f"torch {torch.__version__}")
    print(f"{'model':<18} {'runtime':<36} {'median ms':>10}")
    for label, runtime, ms in rows:
        print(f"{label:<18} {runtime:<36} {ms:>10.1f}")


if __name__ == "__main__":
    main()
