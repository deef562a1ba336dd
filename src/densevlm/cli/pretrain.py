"""Contrastive CLIP pretraining on (image, caption) pairs.

--data is a panoptic directory with ground truth (the embedded world: captions are
regenerated from the ground truth every step, and --crop-prob adds region-aware random crops
with their own captions) or any folder with captions.jsonl ({"image": ..., "caption": ...}).
The schedule is in steps, so the same command gives the same weights; --resume continues an
interrupted run from OUT.resume.pt exactly.

Examples:
  densevlm pretrain --data world/pretrain --arch tiny-vit --steps 600 --out student.safetensors
  densevlm pretrain --data my_captions/ --arch ViT-B-16 --pretrained openai --lr 1e-5 --steps 2000 --out mine.pt
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="panoptic directory or folder with captions.jsonl")
    p.add_argument("--out", required=True, help="final checkpoint path (.pt or .safetensors)")
    p.add_argument("--arch", default="tiny-vit", help="tiny-vit, tiny-vit-l or an open_clip name (default: tiny-vit)")
    p.add_argument("--pretrained", default=None, help="initial weights: open_clip tag or file (default: random)")
    p.add_argument("--steps", type=int, default=600, help="optimisation steps (default: 600)")
    p.add_argument("--batch-size", type=int, default=64, help="pairs per step (default: 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default: 0.1)")
    p.add_argument("--warmup", type=float, default=0.05, help="warm-up as a fraction of --steps (default: 0.05)")
    p.add_argument("--p-stuff", type=float, default=0.15, help="how often captions name the background (default: 0.15)")
    p.add_argument("--crop-prob", type=float, default=0.0,
                   help="share of region-aware samples: random crops captioned from their own ground truth (default: 0)")
    p.add_argument("--crop-area", type=float, nargs=2, default=(0.08, 0.5), metavar=("MIN", "MAX"),
                   help="crop area as a fraction of the image (default: 0.08 0.5)")
    p.add_argument("--part-crop-prob", type=float, default=0.0,
                   help="share of part-centred boxes captioned with their parts only, never the background (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batches and the init (default: 0)")
    p.add_argument("--save-every", type=int, default=100, help="steps between resumable checkpoints (default: 100)")
    p.add_argument("--half", action="store_true", help="store fp16 weights (safetensors output)")
    p.add_argument("--amp", choices=["off", "bf16", "auto"], default="off",
                   help="off (default: fp32, as the shipped tiny weights were made), bf16 autocast, or auto: fp32, "
                        "or bf16 with DENSEVLM_CPU_BF16=1 where a one-off probe finds bf16 matrix products at least "
                        "2x faster than fp32 on this CPU (Intel AMX)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.resume.pt if it exists")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out checkpoint")


def run(args: argparse.Namespace) -> int:
    import torch

    from densevlm.cli._common import existing_paths
    from densevlm.fileio import check_output
    from densevlm.training.pretrain import PretrainConfig, pretrain

    check_output(args.out, "file", inputs=existing_paths(args.data, args.pretrained),
                 overwrite=args.overwrite or args.resume)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PretrainConfig(
        data=args.data, out=args.out, arch=args.arch, pretrained=args.pretrained, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup,
        p_stuff=args.p_stuff, crop_prob=args.crop_prob, crop_area=tuple(args.crop_area), seed=args.seed,
        part_crop_prob=args.part_crop_prob, save_every=args.save_every, half=args.half, amp=args.amp,
    )
    summary = pretrain(cfg, resume=args.resume)
    print(f"final loss {summary['final_loss']:.4f}, logit scale {summary['logit_scale']:.1f}, "
          f"{summary['images_per_s']:.0f} images/s, {summary['wall_s']:.0f} s -> {summary['out']}")
    return 0
