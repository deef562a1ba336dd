"""Region classification as in the DenseVLM paper (Table 1), foreground bias and mIoU.

For every ground-truth segment of a COCO-panoptic dataset the box (RoI), mask and crop
features are classified against the class text embeddings; top-1/top-5 accuracy is averaged
over classes, separately for things and stuff. fg_bias is the share of stuff segments whose
top-1 is a thing class (bg_bias the mirror). Runs under torchrun with identical results.

--data: a directory from `densevlm synth`, coco:ROOT (COCO panoptic val2017), ade:ROOT
(ADE20K panoptic val), json=FILE,images=DIR,panoptic=DIR, or a review database
(review.sqlite): the regions experts accepted or corrected become a labelled held-out set.

Examples:
  densevlm eval --model tiny-student --data world/val --json student.json
  densevlm eval --model EVA02-B-16 --pretrained densevlm_b16.pt --data coco:/data/coco --size 512
"""

from __future__ import annotations

import argparse
from pathlib import Path

from densevlm.cli._common import add_model_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--data", required=True, help="panoptic directory or spec (see above)")
    p.add_argument("--vocab", default=None,
                   help="vocabulary file mapping the dataset's classes (default: built-in for coco:/ade:, "
                        "else the dataset's own category names)")
    p.add_argument("--size", type=int, default=None,
                   help="longest input side (default: the model's default_size: 448 for open_clip models, native for tiny ones)")
    p.add_argument("--json", default=None, help="write metrics (and per-class rows) to this JSON file")
    p.add_argument("--per-class", default=None, help="write per-class accuracies and IoU to this CSV file")
    p.add_argument("--overwrite", action="store_true", help="replace existing --json / --per-class files")
    p.add_argument("--no-crops", action="store_true", help="skip crop features (they cost one forward pass per segment)")
    p.add_argument("--no-seg", action="store_true", help="skip semantic segmentation (mIoU)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes (default: 0)")
    p.add_argument("--skip-bad", action="store_true", help="count and report bad items instead of stopping")
    p.add_argument("--strict", action="store_true",
                   help="stop on incomplete ground truth (an annotation without segments_info, a PNG id the JSON "
                        "does not list) instead of counting it as void and warning")
    p.add_argument("--templates", default=None, help="prompt template set: vild, tiny, single, name")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--inspection", action="store_true",
                   help="also the manufacturing metrics (inspection.image_auroc, recall_at_fa_0.01/0.05, aupro, "
                        "per-defect AUROC and recall, defect confusion), scored as --score-method / --min-area say "
                        "(calibrate's settings: give the operating point's to measure what inspect runs); the "
                        "defects are --vocab's [defects], else those of the data's vocab.txt")
    from densevlm.cli.calibrate import add_score_arguments

    add_score_arguments(p)


def builtin_vocab_for(spec: str):
    from importlib import resources

    from densevlm.vocab import load_vocabulary

    for prefix, name in (("coco:", "coco_panoptic.txt"), ("ade:", "ade20k_panoptic.txt")):
        if spec.startswith(prefix):
            return load_vocabulary(str(resources.files("densevlm") / "resources" / "vocab" / name))
    return None


def run(args: argparse.Namespace) -> int:
    from densevlm.cli._common import default_device, load_model_arg, write_json
    from densevlm.data.panoptic import PanopticDataset
    from densevlm.evaluation import EvalConfig, evaluate, evaluate_reviewed, format_table, write_per_class_csv
    from densevlm.training.distributed import init_distributed
    from densevlm.vocab import load_vocabulary

    check_outputs(args)
    if not args.inspection and (args.score_method != "window" or args.min_area is not None):
        from densevlm.errors import DenseVLMError

        raise DenseVLMError("--score-method and --min-area set how --inspection scores defects; add --inspection")
    device = default_device(args.device)
    rank, world = init_distributed(device)
    model = load_model_arg(args.model, args.pretrained, device, size=args.size)
    size = args.size or model.default_size
    cfg = EvalConfig(size=size, crops=not args.no_crops, segmentation=not args.no_seg, batch_size=args.batch_size,
                     workers=args.workers, skip_bad=args.skip_bad, templates=args.templates)
    if args.data.endswith((".sqlite", ".db", ".sqlite3")):
        if args.inspection:
            from densevlm.errors import DenseVLMError

            raise DenseVLMError("--inspection needs a panoptic dataset (pixel ground truth), not a review database")
        result = evaluate_reviewed(model, args.data, cfg)
    else:
        dataset = PanopticDataset(args.data, limit=args.limit, strict=args.strict)
        given = load_vocabulary(args.vocab) if args.vocab else None
        if args.inspection:
            from densevlm.inspection.evaluate import evaluate_inspection, inspection_vocabulary
            from densevlm.inspection.scores import ScoreConfig

            inspection_vocabulary(args.data, given)  # one line before any work when it has no defects
        result = evaluate(model, dataset, given or builtin_vocab_for(args.data), cfg, progress=rank == 0)
        if args.inspection:
            score = ScoreConfig(args.score_method, args.min_area, size)
            result.metrics.update(evaluate_inspection(model, args.data, given, score, limit=args.limit,
                                                      batch_size=args.batch_size, progress=rank == 0))
    if rank == 0:
        print(format_table(result.metrics, title=f"{args.model} on {args.data} ({size} px)"))
        if args.inspection:
            m = result.metrics
            print(f"inspection: image AUROC {m['inspection.image_auroc']:.3f}  recall at 1 % / 5 % false alarms "
                  f"{m['inspection.recall_at_fa_0.01']:.3f} / {m['inspection.recall_at_fa_0.05']:.3f}  "
                  f"AUPRO {m['inspection.aupro']:.3f}")
        if result.skipped:
            print(f"skipped {len(result.skipped)} items, e.g. {result.skipped[0]}")
        if args.json:
            write_json(args.json, result.to_json())
        if args.per_class:
            write_per_class_csv(args.per_class, result.per_class)
    return 0


def check_outputs(args: argparse.Namespace) -> None:
    """Before any work: --json / --per-class must be writable and name none of the inputs."""
    from densevlm.data.panoptic import resolve_panoptic_spec
    from densevlm.fileio import check_output

    reviewed = args.data.endswith((".sqlite", ".db", ".sqlite3"))
    inputs = [args.vocab, args.model, args.pretrained, args.data,
              *([] if reviewed else resolve_panoptic_spec(args.data))]
    inputs = [p for p in inputs if p and Path(p).exists()]
    for flag, out in (("--json", args.json), ("--per-class", args.per_class)):
        if out:
            check_output(out, "file", inputs=inputs, overwrite=args.overwrite, flag=flag)

