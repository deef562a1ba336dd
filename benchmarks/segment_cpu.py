"""CPU speed of ``densevlm segment`` on every engine: PyTorch fp32, ONNX Runtime fp32, OpenVINO fp32 and int8.

Every row in one run, on one machine state:

1. **End to end on a 640x480 photo** (an embedded-world scene upscaled), one image per
   ``densevlm.segment`` call: tiny-student at 64 px and ViT-B-16 (random weights: speed only)
   at 448 px, plus a distilled model with ``--distilled CKPT``. ``model s`` is ``encode_dense``
   alone, the rest of ``s/img`` is preprocessing and post-processing (label and score maps at
   640x480, regions, RLE). ``x torch`` is the images/s ratio to the same model's PyTorch fp32 row.
2. **Throughput on 64 px scenes** (tiny-student, and the distilled model): ``--scenes`` images
   through the ``segment()`` API given the whole list (batched, post-processing in threads),
   through ``segment_files`` in this process with its finishing (maps, overlays, PNGs, JSON) in
   threads and in worker processes, runs alternated, and through the command line (``densevlm
   segment SCENES --engine E``, writing overlays, label maps and JSON; the seconds the command
   prints, which exclude start-up and model loading).

Vocabulary embeddings are cached in every row: the exports carry theirs, the PyTorch models
embed once in the warm-up (and the command line reads the on-disk cache a warm-up run wrote).
Exports are written once into ``--work`` and reused by later runs. The int8 exports are
calibrated on embedded-world scenes; their accuracy gate is lowered to 0 because a random
ViT-B-16 has no labels worth agreeing on (the dense-label agreement each int8 export measured is
printed). OpenVINO int8 with a random ViT-B-16 is a speed figure only.

    PYTHONPATH=src python benchmarks/segment_cpu.py --threads 2 --runs 7 --work /tmp/segment-bench
    PYTHONPATH=src python benchmarks/segment_cpu.py --only tiny --runs 3        # the quick rows
    PYTHONPATH=src python benchmarks/segment_cpu.py --only tiny --engine "openvino fp32" --runs 4

This is a script, not a test; run it on an idle machine (HF_HUB_OFFLINE=1 is set for you).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from PIL import Image

import densevlm
from densevlm.data.synth import default_vocabulary, generate_scene, write_world
from densevlm.dense import no_grad, stack_inputs

ENGINES = ("torch fp32", "onnxruntime fp32", "openvino fp32", "openvino int8")
SRC = Path(__file__).resolve().parents[1] / "src"


def median_seconds(fn: Callable[[], object], runs: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_exports(model: Any, name: str, size: int, work: Path, calibration: Path, threads: int,
                 load_args: dict[str, Any], engines: tuple[str, ...] = ENGINES) -> dict[str, Path]:
    """``{engine: export directory}`` for the export rows among ``engines``, written once under ``work/name``."""
    from densevlm.export.build import export_edge
    from densevlm.export.onnx import export_onnx

    vocab = default_vocabulary()
    dirs = {"onnxruntime fp32": work / name / "onnx", "openvino fp32": work / name / "ov-fp32",
            "openvino int8": work / name / "ov-int8"}
    dirs = {engine: directory for engine, directory in dirs.items() if engine in engines}
    if "onnxruntime fp32" in dirs and not (dirs["onnxruntime fp32"] / "densevlm_export.json").is_file():
        export_onnx(model, dirs["onnxruntime fp32"], vocab, size=size, parity=False, load_args=load_args)
    if "openvino fp32" in dirs and not (dirs["openvino fp32"] / "densevlm_export.json").is_file():
        export_edge(model, dirs["openvino fp32"], vocab, precision="fp32", size=size, threads=threads,
                    parity_images=1, load_args=load_args)
    if "openvino int8" in dirs and not (dirs["openvino int8"] / "densevlm_export.json").is_file():
        export_edge(model, dirs["openvino int8"], vocab, precision="int8", size=size, calibration=str(calibration),
                    calibration_size=64, min_agreement=0.0, max_macc_drop=100.0, threads=threads,
                    parity_images=1, load_args=load_args)
    return dirs


def int8_agreement(directory: Path) -> str:
    import json

    gate = json.loads((directory / "densevlm_export.json").read_text()).get("gate") or {}
    held = gate.get("heldout") or {}
    return f"{100 * held['label_agreement']:.1f} %" if "label_agreement" in held else "?"


def runtimes(model: Any, dirs: dict[str, Path], threads: int) -> dict[str, Any]:
    from densevlm.export.openvino import load_export

    out = {"torch fp32": model}
    for engine, directory in dirs.items():
        out[engine] = load_export(directory, threads=threads, tensors="numpy")
    return out


def photo_rows(label: str, engines: dict[str, Any], photo: Image.Image, size: int, runs: int) -> list[dict[str, Any]]:
    """End-to-end ``segment`` on one photo and ``encode_dense`` alone, per engine."""
    vocab = default_vocabulary()
    rows = []
    for engine, runtime in engines.items():
        total = median_seconds(lambda: densevlm.segment(runtime, photo, vocab, size=size), runs)
        x, _ = runtime.prepare(photo, size, square=True)
        batch = stack_inputs([x])

        def forward() -> None:
            with no_grad():
                runtime.encode_dense(batch)

        rows.append({"model": label, "engine": engine, "size": size, "seconds": total,
                     "model_seconds": median_seconds(forward, runs)})
    base = next(r for r in rows if r["engine"] == "torch fp32")["seconds"]
    for r in rows:
        r["ratio"] = base / r["seconds"]
    return rows


def cli_seconds(model_arg: str, engine: str, scenes: Path, threads: int, cache: str,
                workers: Optional[int] = None) -> float:
    """Seconds ``densevlm segment`` reports for the scenes folder (fresh output folder)."""
    out = Path(tempfile.mkdtemp(prefix="segment-bench-out-"))
    try:
        cmd = [sys.executable, "-m", "densevlm", "segment", str(scenes), "--model", model_arg, "--engine", engine,
               "--out", str(out / "seg"), "--threads", str(threads), "-q"]
        cmd += [] if workers is None else ["--workers", str(workers)]
        env = {**os.environ, "PYTHONPATH": str(SRC), "DENSEVLM_CACHE": cache}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        return float(re.search(r"in ([0-9.]+) s", done.stdout).group(1))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def files_seconds(runtime: Any, files: list[Any], size: int, processes: bool) -> float:
    """Seconds ``segment_files`` (what the command line runs, in this process) reports for the scenes,
    finishing in worker processes or in threads."""
    from densevlm.inference.batch import RunConfig, segment_files

    out = Path(tempfile.mkdtemp(prefix="segment-bench-files-"))
    try:
        config = RunConfig(size=size, processes=processes)
        return segment_files(runtime, files, default_vocabulary(), out, config).seconds
    finally:
        shutil.rmtree(out, ignore_errors=True)


def throughput_rows(label: str, engines: dict[str, Any], model_args: dict[str, str], scenes: Path, size: int,
                    runs: int, threads: int, cli: bool, workers: Optional[int] = None) -> list[dict[str, Any]]:
    """Images/s of the ``segment()`` API on the scene list, of ``segment_files`` finishing in threads
    and in processes (alternated, so that both see the same machine), and of the command line."""
    from densevlm.inference.io import collect_inputs

    vocab = default_vocabulary()
    images = [Image.open(p).convert("RGB") for p in sorted(scenes.glob("*.png"))]
    files = collect_inputs([str(scenes)])
    rows = []
    for engine, runtime in engines.items():
        api = median_seconds(lambda: densevlm.segment(runtime, images, vocab, size=size), max(1, runs // 2))
        row = {"model": label, "engine": engine, "images": len(images), "api": len(images) / api}
        files_seconds(runtime, files, size, True)  # warm-up
        timed: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(max(1, runs // 2)):
            for processes in (False, True):
                timed[processes].append(files_seconds(runtime, files, size, processes))
        row["files threads"] = len(images) / statistics.median(timed[False])
        row["files processes"] = len(images) / statistics.median(timed[True])
        if cli:
            kind = engine.split()[0].replace("onnxruntime", "onnx")
            cache = os.environ["DENSEVLM_CACHE"]
            cli_seconds(model_args[engine], kind, scenes, threads, cache, workers)  # warm-up
            seconds = [cli_seconds(model_args[engine], kind, scenes, threads, cache, workers)
                       for _ in range(max(1, runs // 2))]
            row["cli"] = len(images) / statistics.median(seconds)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of every engine (default: 2)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per row after one warm-up (default: 5)")
    parser.add_argument("--only", choices=("tiny", "vit-b"), default=None, help="benchmark one model only")
    parser.add_argument("--engine", action="append", choices=ENGINES[1:], default=None,
                        help="besides torch fp32 (every ratio's base), benchmark only this engine (repeatable; "
                             "default: every engine)")
    parser.add_argument("--workers", type=int, default=None,
                        help="--workers of the command-line runs (default: the command's own default)")
    parser.add_argument("--distilled", metavar="CKPT", default=None,
                        help="also benchmark this checkpoint (e.g. `densevlm distill --out RUN`'s RUN/last.pt)")
    parser.add_argument("--distilled-size", type=int, default=64, help="input side of --distilled (default: 64)")
    parser.add_argument("--scenes", type=int, default=200, help="64 px scenes for the throughput rows (default: 200)")
    parser.add_argument("--no-cli", action="store_true", help="skip the command-line throughput column")
    parser.add_argument("--work", default=None, help="folder for exports and scenes, reused (default: a temp dir)")
    args = parser.parse_args()
    chosen = ("torch fp32", *(args.engine or ENGINES[1:]))
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="segment-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DENSEVLM_CACHE", str(work / "cache"))
    calibration = work / "calibration"
    if not (calibration / "panoptic.json").is_file():
        write_world(calibration, 80, seed=3_000_000, size=64, progress=False)
    scenes = work / f"scenes{args.scenes}"
    if not scenes.is_dir():
        scenes.mkdir()
        for i in range(args.scenes):
            Image.fromarray(generate_scene(seed=4_000_000, index=i, size=64).image).save(scenes / f"{i:04d}.png")
    photo = Image.fromarray(generate_scene(seed=0, index=0, size=64).image).resize((640, 480), Image.BICUBIC)

    models: list[tuple[str, str, int, Optional[dict[str, Any]]]] = []
    if args.only in (None, "tiny"):
        models.append(("tiny-student", "tiny-student", 64, {"model": "tiny-student", "pretrained": None}))
    if args.distilled and args.only in (None, "tiny"):
        models.append(("distilled", args.distilled, args.distilled_size, {"model": args.distilled, "pretrained": None}))
    if args.only in (None, "vit-b"):
        models.append(("ViT-B-16 (random)", "ViT-B-16", 448, {"model": "ViT-B-16", "pretrained": None}))
    photo_table, speed_table, agreements = [], [], {}
    for label, name, size, load_args in models:
        torch.manual_seed(0)
        model = densevlm.load_model(name)
        key = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")
        dirs = make_exports(model, key, size, work, calibration, args.threads, load_args, chosen)
        if "openvino int8" in dirs:
            agreements[label] = int8_agreement(dirs["openvino int8"])
        engines = runtimes(model, dirs, args.threads)
        photo_table += photo_rows(label, engines, photo, size, args.runs)
        if size <= 64:
            model_args = {"torch fp32": name, **{e: str(d) for e, d in dirs.items()}}
            speed_table += throughput_rows(label, engines, model_args, scenes, size, args.runs, args.threads,
                                           not args.no_cli, args.workers)

    print(f"densevlm segment on the CPU: {args.threads} threads, torch {torch.__version__}, median of {args.runs} runs")
    print("\nEnd to end, one 640x480 photo per segment() call")
    header = f"{'model':<20} {'engine':<17} {'size':>5} {'s/img':>8} {'model s':>8} {'img/s':>8} {'x torch':>8}"
    print(header + "\n" + "-" * len(header))
    for r in photo_table:
        print(f"{r['model']:<20} {r['engine']:<17} {r['size']:>5} {r['seconds']:>8.4f} {r['model_seconds']:>8.4f} "
              f"{1.0 / r['seconds']:>8.1f} {r['ratio']:>8.2f}")
    if agreements:
        print("\nint8 dense-label agreement with fp32 (held-back calibration scenes): "
              + ", ".join(f"{k}: {v}" for k, v in agreements.items()))
    if speed_table:
        print(f"\nThroughput on {args.scenes} scenes of 64x64 (images/s)")
        print("(files: segment_files in this process, writing overlays, label maps and JSON, finishing in "
              "threads or in worker processes)")
        header = (f"{'model':<20} {'engine':<17} {'segment() API':>14} {'files threads':>14} {'files processes':>16} "
                  f"{'CLI + files':>12}")
        print(header + "\n" + "-" * len(header))
        for r in speed_table:
            cli = f"{r['cli']:>12.1f}" if "cli" in r else f"{'-':>12}"
            print(f"{r['model']:<20} {r['engine']:<17} {r['api']:>14.1f} {r['files threads']:>14.1f} "
                  f"{r['files processes']:>16.1f} {cli}")
    print(f"\nexports and scenes: {work}")


if __name__ == "__main__":
    main()
