"""Distil a model's dense map into a smaller, faster image encoder, on your unlabeled images.

The student keeps the teacher's text tower, tokenizer and logit scale (so every vocabulary
and cached class embedding of the teacher works unchanged) and gets a smaller image tower
(--arch) trained to reproduce the teacher's dense tokens: 1 - cosine per token, plus the KL
of the class probabilities over --vocab at the teacher's logit scale. OUT/last.pt is a normal
checkpoint for segment, eval and export; --resume continues OUT/state.pt.

Small towers: tiny-vit-s (tiny-vit's width, half its blocks; encoder about 1.75x faster than
tiny-teacher's), tiny-vit-xs (also half the width; more than 3x faster), and for the 6-block
tiny-teacher-l also tiny-vit-m (width 128, 3 blocks; box accuracy within 1.2 points, a whole
segment() call 1.7-2.2x faster) and tiny-vit. For tiny-teacher-l, a tiny-vit-xs started from a
tiny-vit-s (last three examples; 22 min on 2 cores) is 2.7 points behind on parts and its
segment() call 2.1-2.4x faster on two threads, 2.9-3.1x on one (BENCHMARKS.md,
"Distillation"). A narrower tower starts from the teacher's blocks (or --init's tower)
projected onto the principal components of their residual stream on your images. For
open_clip teachers (ViT-B/16 -> a ViT-S/16-sized tower) the recipe is documented in
densevlm.training.distill.

Examples:
  densevlm distill --teacher tiny-teacher --arch tiny-vit-s --images world/unlabeled --out runs/small
  densevlm distill --teacher runs/embedded/last.pt --arch tiny-vit-s --images world/unlabeled --out runs/small --resume
  densevlm distill --teacher tiny-teacher --arch tiny-vit-xs --images world/unlabeled --out runs/xs
  densevlm distill --arch tiny-vit-xs --init runs/small/last.pt --images world/unlabeled --out runs/xs2
  densevlm distill --teacher tiny-teacher-l --arch tiny-vit-m --images world/unlabeled --out runs/m --steps 1500
  densevlm distill --teacher tiny-teacher-l --arch tiny-vit-s --images pool --out runs/s --steps 4000
  densevlm distill --teacher tiny-teacher-l --arch tiny-vit-xs --init runs/s/last.pt --images pool --out runs/xs --steps 4000
  densevlm distill --teacher tiny-teacher-l --arch tiny-vit-xs --init runs/xs/last.pt --images pool --out runs/xs2 --steps 4000 --lr 5e-4
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = argparse.SUPPRESS  # unset flags: the run's config.yaml with --resume, else DistillConfig's defaults
    p.add_argument("--teacher", default=d,
                   help="model whose dense map is copied: a checkpoint (e.g. RUN/last.pt) or a built-in tiny model "
                        "(default: tiny-teacher)")
    p.add_argument("--arch", default=d,
                   help="small image tower: tiny-vit-s (width 128, 2 blocks), tiny-vit-xs (width 64, 2 blocks), "
                        "tiny-vit-m (width 128, 3 blocks) or tiny-vit (width 128, 4 blocks; default: tiny-vit-s)")
    p.add_argument("--init", default=d,
                   help="checkpoint whose image tower the student starts from, e.g. a tiny-vit-s distilled from the "
                        "same teacher for --arch tiny-vit-xs (same depth; narrowed by principal components when "
                        "wider; default: the teacher's blocks)")
    p.add_argument("--images", default=d,
                   help="unlabeled images: folder, world dir, COCO JSON or tar shards (with --resume: the run's)")
    p.add_argument("--out", required=True, help="run directory (last.pt, state.pt, metrics.jsonl, config.yaml)")
    p.add_argument("--vocab", default=d, help="vocabulary of the KL term (default: the embedded world's)")
    p.add_argument("--cosine-weight", type=float, default=d, help="weight of 1 - token cosine (default: 1)")
    p.add_argument("--kl-weight", type=float, default=d,
                   help="weight of the class-probability KL at the teacher's logit scale (default: 1)")
    p.add_argument("--steps", type=int, default=d, help="optimisation steps (default: 500)")
    p.add_argument("--batch-size", type=int, default=d, help="images per step (default: 32)")
    p.add_argument("--lr", type=float, default=d, help="peak learning rate (default: 1e-3)")
    p.add_argument("--weight-decay", type=float, default=d, help="AdamW weight decay (default: 0.05)")
    p.add_argument("--warmup-steps", type=int, default=d, help="linear warm-up steps (default: 20)")
    p.add_argument("--seed", type=int, default=d, help="seed of the data order (default: 0)")
    p.add_argument("--size", type=int, default=d, help="longest input side (default: the teacher's)")
    p.add_argument("--amp", default=d, help="auto (default; off on the CPU), off, bf16 or fp16")
    p.add_argument("--workers", type=int, default=d, help="image decoding processes (default: 0)")
    p.add_argument("--log-every", type=int, default=d, help="steps between log lines (default: 10)")
    p.add_argument("--save-every", type=int, default=d, help="steps between checkpoints (default: 100)")
    p.add_argument("--device", default=d, help="cpu, cuda ... (default: cuda if available)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue from OUT/state.pt exactly where it stopped, with the run's settings "
                            "(OUT/config.yaml; other values for them are refused, except --steps (to go on longer), "
                            "--workers, --device, --log-every and --save-every)")
    group.add_argument("--overwrite", action="store_true", help="start afresh in an existing run directory")


def run(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from densevlm.cli._common import default_device
    from densevlm.errors import DenseVLMError
    from densevlm.training.config import absolute_paths, resumed_settings
    from densevlm.training.distill import DistillConfig, distill

    if getattr(args, "device", None):
        default_device(args.device)  # one line, before any work, when the machine lacks the device
    values = absolute_paths({f.name: getattr(args, f.name) for f in fields(DistillConfig) if hasattr(args, f.name)})
    saved = Path(args.out) / "config.yaml"
    if args.resume and saved.is_file():
        import yaml

        try:
            recorded = yaml.safe_load(saved.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise DenseVLMError(f"{saved}: not a readable run configuration ({str(e).splitlines()[0]})") from None
        if not isinstance(recorded, dict):
            raise DenseVLMError(f"{saved}: not a run configuration (expected a mapping of settings)")
        known = {f.name: f.default for f in fields(DistillConfig)}
        values = resumed_settings(values, {k: v for k, v in recorded.items() if k in known}, known, saved)
    cfg = DistillConfig(**values)
    result = distill(cfg, resume=args.resume, overwrite=args.overwrite)
    print(f"{result.steps} steps in {result.wall_s:.0f} s, final loss {result.final_loss:.4f}, "
          f"label agreement with the teacher {100 * result.agreement:.1f}%, {result.skipped_images} images skipped")
    print(result.out / "last.pt")
    return 0
