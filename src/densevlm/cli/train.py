"""Adapt a student VLM to your unlabeled images with DenseVLM's decoupled region-language alignment.

A frozen teacher (a stronger VLM) names the regions of each image from the vocabulary;
regions it is unsure about (top probability <= --threshold) are dropped; thing regions are
aligned over thing classes only and stuff regions over all classes, so background stops being
pulled towards objects. Baselines: --method clipself | nodecouple | stuffonly.

The defaults are the best settings found on the embedded world with the default teacher
(configs/embedded.yaml): three extensions beyond the paper (--teacher-parts 5: boxes around the
teacher's part blobs, taught as parts; --thing-tokens 64: single token cells the teacher calls
things; --thing-mass-weight 0.4), 800 steps, --alpha 1. The paper's settings: --teacher-parts 0
--thing-tokens 0 --thing-mass-weight 0 --steps 300 --alpha 0.9.

--batch-size is per process; run on several GPUs or nodes with
  torchrun --nproc_per_node 4 -m densevlm train ...
Settings may come from --config file.yaml (flags given on the command line win). An --out that
holds an earlier run (last.pt, state.pt, config.yaml, metrics.jsonl ...) is refused unless
--resume continues it or --overwrite starts again (removing those run files, nothing else).

Examples:
  densevlm train --images world/unlabeled --out runs/densevlm
  densevlm train --student EVA02-B-16 --student-pretrained merged2b_s8b_b131k \\
      --teacher EVA02-L-14-336 --teacher-pretrained clipself_l14.pt --retrieval-features dense \\
      --images /data/plant_photos --vocab plant.txt --size 512 --out runs/plant
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from densevlm.cli._common import add_model_arguments, default_device


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = argparse.SUPPRESS  # unset flags fall back to --config, then to TrainConfig's defaults
    p.add_argument("--config", default=None, help="YAML file of settings (flags override it)")
    add_model_arguments(p, "--student", default=d, what="student", role=" (the model to adapt; default tiny-student)")
    add_model_arguments(p, "--teacher", default=d, what="teacher", role=" (frozen, names the regions; default tiny-teacher-l)")
    p.add_argument("--images", default=d, help="unlabeled images: folder, world dir, COCO JSON or tar shards")
    p.add_argument("--vocab", default=d, help="vocabulary file (default: the embedded world's)")
    p.add_argument("--method", default=d, help="densevlm (default), clipself, nodecouple or stuffonly")
    p.add_argument("--out", default=d, help="run directory (last.pt, state.pt, metrics.jsonl ...)")
    p.add_argument("--steps", type=int, default=d, help="optimisation steps (default: 800; the paper's settings: 300)")
    p.add_argument("--batch-size", type=int, default=d, help="images per step per process (default: 32)")
    p.add_argument("--lr", type=float, default=d, help="peak learning rate (default: 1e-3 for the tiny models; the paper uses 1e-5 for EVA02-B)")
    p.add_argument("--weight-decay", type=float, default=d, help="AdamW weight decay (default: 0.1)")
    p.add_argument("--warmup-steps", type=int, default=d, help="linear warm-up steps (default: 20)")
    p.add_argument("--seed", type=int, default=d, help="seed of data order and regions (default: 0)")
    p.add_argument("--size", type=int, default=d, help="longest input side (default: the student's native size)")
    p.add_argument("--regions", default=d, help="grid (the paper's, default), segments (colour superpixels) or mixed")
    p.add_argument("--max-boxes", type=int, default=d, help="regions per image (default: 8)")
    p.add_argument("--teacher-parts", type=int, default=d,
                   help="add up to N regions per image around the teacher's part blobs, taught as parts (default: 5; the paper's: 0)")
    p.add_argument("--thing-tokens", type=int, default=d,
                   help="add N of the student's token cells per image as regions (drawn at random; every cell when "
                        "the image has N or fewer: 64 is all of a 64 px image at patch 8, 6 %% of 1024 cells at 512 px "
                        "and patch 16) and teach those the teacher calls things; the others are dropped "
                        "(default: 64; the paper's: 0)")
    p.add_argument("--retrieval-features", default=d, help="teacher region features: dense (RoI, the paper's; default), crop, mean (of both logits) or split (dense decides thing/stuff, crops name the things)")
    p.add_argument("--logit-scale", "--tau", dest="logit_scale", type=float, default=d,
                   help="multiplier of the cosines before the softmax, i.e. the inverse temperature "
                        "(default: the teacher's own logit scale; --tau is the old name)")
    p.add_argument("--threshold", type=float, default=d, help="teacher confidence threshold (default: 0.3)")
    p.add_argument("--thing-weight", type=float, default=d, help="weight of the thing term (default: 1)")
    p.add_argument("--thing-mass-weight", type=float, default=d,
                   help="add -log P(thing section) on regions the teacher calls things (default: 0.4; the paper's: 0)")
    p.add_argument("--clipself-weight", type=float, default=d,
                   help="add a CLIPSelf term (RoI feature vs the frozen student's crop embedding) on thing regions")
    p.add_argument("--alpha", type=float, default=d, help="saved = alpha*tuned + (1-alpha)*original (default: 1; the paper's settings: 0.9)")
    p.add_argument("--unlocked-blocks", type=int, default=d, help="image blocks trained from the top (default: -1 = all)")
    p.add_argument("--train-embed", action="store_true", default=d, help="also train patch/position embeddings")
    p.add_argument("--train-head", action="store_true", default=d, help="also train the final norm and projection")
    p.add_argument("--amp", default=d,
                   help="auto (default), off, bf16 or fp16. auto: bf16 on GPUs that support it, else fp16; fp32 on "
                        "the CPU, where DENSEVLM_CPU_BF16=1 makes it bf16 if a one-off probe finds bf16 matrix "
                        "products at least 2x faster than fp32 (Intel AMX; a frozen large teacher still runs slower "
                        "in bf16, see BENCHMARKS.md); one log line says which and why")
    p.add_argument("--no-cache-teacher", dest="cache_teacher", action="store_false", default=d,
                   help="redraw regions every step instead of caching each image's teacher targets")
    p.add_argument("--workers", type=int, default=d, help="image decoding processes (default: 0)")
    p.add_argument("--log-every", type=int, default=d, help="steps between log lines (default: 10)")
    p.add_argument("--save-every", type=int, default=d, help="steps between checkpoints (default: 50)")
    p.add_argument("--val-data", default=d, help="panoptic data to validate on with the eval protocol")
    p.add_argument("--val-every", type=int, default=d, help="steps between validations (default: only at the end)")
    p.add_argument("--val-limit", type=int, default=d, help="validate on the first N images only")
    p.add_argument("--reviewed", default=d,
                   help="review database: on a reviewed image, its reviewed regions (expert verdicts) are the "
                        "only regions trained, in place of the ones drawn for the teacher")
    p.add_argument("--reviewed-weight", type=float, default=d, help="loss weight of a reviewed region (default: 1)")
    p.add_argument("--reviewed-embeddings", choices=("text", "few-shot"), default=d,
                   help="class embeddings the student learns against: text (default) or few-shot (text blended with "
                        "prototypes of the reviewed regions; for words the text tower cannot read)")
    p.add_argument("--device", default=d, help="cpu, cuda ... (default: cuda if available)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/state.pt exactly where it stopped, with the run's settings "
                        "(OUT/config.yaml; other values for them are refused, except --steps (to go on longer), "
                        "--workers, --device, --log-every, --save-every and the --val-* flags)")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in an --out that holds an earlier run (its run files are removed first)")


def build_config(args: argparse.Namespace):
    """The run's settings: --config, then the flags given; with --resume, the run's own ``config.yaml``."""
    from densevlm.training.config import TrainConfig, absolute_paths, load_config_file, resumed_settings

    values = load_config_file(args.config) if args.config else {}
    names = {f.name for f in fields(TrainConfig)}
    for name in names:
        if name in vars(args):
            values[name] = getattr(args, name)
    values = absolute_paths(values)
    saved = Path(values.get("out") or "") / "config.yaml"
    if args.resume and values.get("out") and saved.is_file():
        defaults = {f.name: f.default for f in fields(TrainConfig)}
        values = resumed_settings(values, load_config_file(saved), defaults, saved)
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    return TrainConfig(**values)


# what a run writes in --out (densevlm.training.trainer); their presence means an earlier run
RUN_FILES = ("last.pt", "state.pt", "config.yaml", "metrics.jsonl", "retrieval.json", "eval.json", "eval_before.json")
RUN_FOLDERS = ("tb",)


def check_run_dir(out: str, inputs: list[str], resume: bool, overwrite: bool) -> None:
    """Before any work: ``out`` can be written, holds none of the inputs and, unless ``resume``
    or ``overwrite``, no earlier run; with ``overwrite`` the earlier run's files are removed.

    Raises:
        DenseVLMError: one line naming ``--out``, the problem and the flag that would allow it.
    """
    import os
    import shutil

    from densevlm.errors import DenseVLMError
    from densevlm.fileio import check_output

    if resume and overwrite:
        raise DenseVLMError("--resume continues the run in --out and --overwrite starts it again; pass one of them")
    path = check_output(out, "dir", inputs=inputs, overwrite=True)
    earlier = [name for name in RUN_FILES + RUN_FOLDERS if (path / name).exists()]
    if not earlier or resume:
        return
    if not overwrite:
        raise DenseVLMError(f"--out {path}: holds an earlier run ({', '.join(earlier)}); pass --resume to continue "
                            "it or --overwrite to start again")
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one process removes them
        for name in earlier:
            target = path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()


def run(args: argparse.Namespace) -> int:
    from densevlm.cli._common import existing_paths
    from densevlm.review.reviewed import load_reviewed
    from densevlm.training.trainer import train

    cfg = build_config(args)
    cfg.check()
    inputs = existing_paths(args.config, cfg.images, cfg.vocab, cfg.val_data, cfg.reviewed, cfg.student,
                            cfg.teacher, cfg.student_pretrained, cfg.teacher_pretrained)
    check_run_dir(cfg.out, inputs, args.resume, args.overwrite)
    if cfg.device:
        default_device(cfg.device)  # one line, before any work, when the machine lacks the device
    validate = None
    if cfg.val_data:
        from densevlm.evaluation import make_validator

        validate = make_validator(cfg.val_data, cfg.vocab, cfg.val_limit)
    reviewed = load_reviewed(cfg.reviewed) if cfg.reviewed else None
    result = train(cfg, resume=args.resume, validate=validate, reviewed=reviewed)
    from densevlm.training.distributed import rank_and_world

    if rank_and_world()[0] == 0:
        r = result.retrieval
        print(f"{result.steps} steps in {result.wall_s:.0f} s, final loss {result.final_loss:.4f}, "
              f"{result.skipped_images} images skipped")
        if r.get("regions"):
            print(f"teacher kept {100 * r['kept_frac']:.1f}% of the {r['regions']} regions of {result.steps} steps (an "
                  f"image's regions counted each time it is drawn), {100 * r['thing_frac']:.1f}% things; top: "
                  f"{', '.join(n for n, _ in r['top_categories'][:5])}")
        print(result.out / "last.pt")
    return 0
