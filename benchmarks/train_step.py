"""Regions/s of one DenseVLM training step (student forward + backward + teacher), against a
plain reference step written the simplest way (a loop over images, a backward over their
mean loss, fp32, no caching), in one run. Both use the teacher's dense RoI features (the default).

* tiny pair (tiny-student <- tiny-teacher, 64 px, batch 32, 8 grid cells per image): the
  trainer's step with the teacher cache cold (first epoch) and warm (later epochs), and the
  reference step;
* ViT-B-16 student <- ViT-L-14 teacher at 224 px (random weights, batch 2): the same rows.

Each ``--amp`` setting (default ``off,bf16``: fp32 and bf16 autocast) times the same trainer,
its precision switched between runs, interleaved repeat by repeat, so a busy machine slows
every setting alike; ``vs off`` is the ratio of seconds per step to ``amp off``'s.

``--clock cpu`` times with the process's CPU time instead of the wall clock: with ``--threads 1``
that is what a quiet machine's wall time would be, on a machine other jobs share.

    python benchmarks/train_step.py [--threads 2] [--repeats 3] [--amp off,bf16] [--clock wall|cpu] [--skip-large]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F


def reference_step(student, teacher, optimizer, contents, boxes, text_s, text_t, class_is_thing, logit_scale) -> int:
    """The simplest correct DenseVLM step: one image and one crop at a time, no batching, no cache."""
    from densevlm.losses.alignment import decoupled_alignment_loss
    from densevlm.regions.pooling import roi_pool
    from densevlm.training.data import normalise_content

    optimizer.zero_grad()
    regions = 0
    per_image = []
    for content, b in zip(contents, boxes):
        x_t = normalise_content(content, teacher.spec.mean, teacher.spec.std, content.shape[-1], teacher.patch_size)
        with torch.no_grad():
            t_logits = logit_scale * roi_pool(teacher.encode_dense(x_t[None]), [b], teacher.patch_size) @ text_t.t()
        conf, label = F.softmax(t_logits, -1).max(-1)
        keep = conf > 0.3
        x_s = normalise_content(content, student.spec.mean, student.spec.std, content.shape[-1], student.patch_size)
        feats = roi_pool(student.encode_dense(x_s[None]), [b[keep]], student.patch_size)
        s_logits = logit_scale * feats @ text_s.t()
        thing = class_is_thing[label[keep]]
        per_image.append(decoupled_alignment_loss(s_logits, t_logits[keep], thing, class_is_thing))
        regions += int(keep.sum())
    loss = torch.stack(per_image).mean()
    loss.backward()
    optimizer.step()
    return regions


CLOCK = time.perf_counter


def time_it(fn, repeats: int) -> tuple[float, int]:
    fn()  # warm-up
    times, regions = [], 0
    for _ in range(repeats):
        start = CLOCK()
        regions = fn()
        times.append(CLOCK() - start)
    return statistics.median(times), regions


def time_interleaved(fns: dict[str, object], repeats: int) -> dict[str, tuple[float, int]]:
    """Median seconds and the last region count of each callable, run in turn ``repeats`` times after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    regions: dict[str, int] = {}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = CLOCK()
            regions[key] = fn()
            times[key].append(CLOCK() - start)
    return {k: (statistics.median(times[k]), regions[k]) for k in fns}


def bench_pair(student_name, teacher_name, size, batch, repeats, tmp, label, amps) -> list[tuple]:
    from densevlm.data.synth import write_world
    from densevlm.regions.sources import grid_boxes
    from densevlm.training.config import TrainConfig
    from densevlm.training.data import ContentDataset
    from densevlm.training.precision import resolve_precision
    from densevlm.training.trainer import Trainer

    world = f"{tmp}/world{size}"
    if not os.path.isdir(world):
        write_world(world, 64, seed=17, size=64, progress=False)
    cfg = TrainConfig(student=student_name, teacher=teacher_name, images=world, out=f"{tmp}/run-{label}",
                      steps=1000, batch_size=batch, size=size, logit_scale=100.0, amp="off", max_boxes=8, lr=1e-5)
    trainer = Trainer(cfg, progress=False)
    data = ContentDataset(trainer.source, size)
    items = [data[i] for i in range(batch)]

    def step(amp: str, cached: bool):
        def run() -> int:
            trainer.precision = trainer.targets.precision = resolve_precision(amp, trainer.device)
            if not cached:
                trainer.targets.cache.clear()
            return int(trainer.step([dict(it) for it in items])["regions"])
        return run

    fns = {(amp, cached): step(amp, cached) for cached in (False, True) for amp in amps}
    timed = time_interleaved(fns, repeats)
    rows = []
    for (amp, cached), (t, n) in timed.items():
        base = timed[("off", cached)][0] if ("off", cached) in timed else float("nan")
        rows.append((label, f"trainer, teacher {'cached' if cached else 'cold'}, amp {amp}", t, n, base / t))
    rng = np.random.default_rng(0)
    boxes = [grid_boxes(it["content"].shape[-1], it["content"].shape[-2], rng, 8) for it in items]
    contents = [it["content"] for it in items]
    student, teacher = trainer.student, trainer.teacher
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    t, n = time_it(lambda: reference_step(student, teacher, optimizer, contents, boxes, trainer.text_student,
                                          trainer.text_teacher, trainer.class_is_thing, 100.0), repeats)
    rows.append((label, "reference (per image, fp32, no cache)", t, n, float("nan")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--amp", default="off,bf16", help="comma-separated --amp settings to time (default off,bf16)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall clock (default) or the process's CPU time (with --threads 1 on a shared machine)")
    parser.add_argument("--skip-large", action="store_true", help="only the tiny pair")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    amps = tuple(a.strip() for a in args.amp.split(",") if a.strip())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += bench_pair("tiny-student", "tiny-teacher", 64, 32, args.repeats, tmp, "tiny pair 64 px b32", amps)
        if not args.skip_large:
            rows += bench_pair("ViT-B-16", "ViT-L-14", 224, 2, max(1, args.repeats - 1), tmp,
                               "B-16 <- L-14 224 px b2", amps)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats}, {args.clock} clock")
    print(f"{'pair':24} {'step':42} {'s/step':>8} {'regions':>8} {'regions/s':>10} {'vs ref':>7} {'vs off':>7}")
    for label in dict.fromkeys(r[0] for r in rows):
        group = [r for r in rows if r[0] == label]
        ref = next(r for r in group if r[1].startswith("reference"))
        ref_rate = ref[3] / ref[2]
        for _, name, t, n, vs_off in group:
            off = "" if vs_off != vs_off else f"{vs_off:6.2f}x"
            print(f"{label:24} {name:42} {t:8.3f} {n:8d} {n / t:10.1f} {n / t / ref_rate:6.1f}x {off:>7}")


if __name__ == "__main__":
    main()
