"""Let a strong frozen VLM (the teacher) propose categories for the regions of your images.

Each image is cut into regions (the paper's grid cells, or colour segments; or, with --boxes,
the boxes of a file: objects from a labelling tool or a detector), each region is
classified by the teacher against your vocabulary (softmax of the cosines times
--logit-scale, default the teacher's own), and its top-k candidates are written to a JSONL file that
`densevlm review init` imports for an expert to confirm or correct. Regions whose top
probability is at most --threshold are marked kept=false (training ignores them).

Object boxes are what teaches `densevlm vocab adapt` most: an expert who confirms about ten
boxes of each known class besides the new words keeps the known classes' accuracy; grid cells
and colour segments are mostly surfaces and do not (BENCHMARKS.md, "Plant words / Stop 23").

An interrupted run leaves OUT.partial with the images done so far; the same command with
--resume goes on from there.

Example:
  densevlm retrieve --images world/unlabeled --out candidates.jsonl
  densevlm retrieve --images photos/ --boxes boxes.json --out candidates.jsonl
"""

from __future__ import annotations

import argparse

from densevlm.cli._common import add_model_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, "--teacher", default="tiny-teacher-l", what="teacher")
    p.add_argument("--images", required=True, help="image folder (or world directory) to label")
    p.add_argument("--vocab", default=None, help="vocabulary file (default: the embedded world's)")
    p.add_argument("--out", required=True, help="candidates JSONL to write")
    p.add_argument("--regions", choices=["grid", "segments"], default=None, help="region source (default: grid)")
    p.add_argument("--max-boxes", type=int, default=None, help="regions per image (default: every grid cell)")
    p.add_argument("--boxes", default=None, metavar="FILE",
                   help="label these boxes instead of --regions, only on the images they name (COCO JSON with "
                        "images and annotations, or a list of {image, box: [x1, y1, x2, y2]}; as `segment --boxes`)")
    p.add_argument("--features", choices=["dense", "crop", "mean", "split"], default="dense",
                   help="teacher region features (default: dense, the paper's RoI features)")
    p.add_argument("--logit-scale", "--tau", dest="logit_scale", type=float, default=None,
                   help="multiplier of the cosines before the softmax, i.e. the inverse temperature "
                        "(default: the teacher's own logit scale; --tau is the old name)")
    p.add_argument("--threshold", type=float, default=0.3, help="confidence threshold for kept regions (default: 0.3)")
    p.add_argument("--top-k", type=int, default=5, help="candidates per region (default: 5)")
    p.add_argument("--size", type=int, default=None, help="longest side the teacher sees (default: its input size)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--seed", type=int, default=0, help="seed of the grid splits (default: 0)")
    p.add_argument("--full-logits", action="store_true", help="store the full logit vector even for large vocabularies")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run (OUT.partial) with the same settings")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file (and start an interrupted one again)")


def run(args: argparse.Namespace) -> int:
    from densevlm.cli._common import check_resume, default_device, existing_paths, load_model_arg
    from densevlm.data.images import open_image_source
    from densevlm.data.synth import default_vocabulary
    from densevlm.errors import DenseVLMError
    from densevlm.fileio import check_output
    from densevlm.retrieval.candidates import partial_path, write_candidates
    from densevlm.retrieval.teacher import RetrievalConfig
    from densevlm.vocab import load_vocabulary

    image_inputs = [part.split("=", 1)[-1] for part in args.images.split(",")]  # json=FILE,images=DIR too
    inputs = existing_paths(args.vocab, args.teacher, args.teacher_pretrained, args.boxes, *image_inputs)
    partial = partial_path(args.out)
    check_resume(partial, args.resume, args.overwrite, "retrieve")
    # the interrupted run was allowed to replace --out (it did not exist, or --overwrite was given)
    check_output(args.out, "file", inputs=inputs, overwrite=args.overwrite or args.resume)
    if args.limit is not None and args.limit < 1:
        raise DenseVLMError(f"--limit {args.limit}: give at least 1 image (or leave it out for all)")
    source = open_image_source(args.images)
    boxes = _boxes(args, source) if args.boxes else None
    teacher = load_model_arg(args.teacher, args.teacher_pretrained, default_device(args.device), size=args.size)
    vocab = load_vocabulary(args.vocab) if args.vocab else default_vocabulary()
    cfg = RetrievalConfig(features=args.features, logit_scale=args.logit_scale, threshold=args.threshold,
                          top_k=args.top_k)
    summary = write_candidates(teacher, source, vocab, args.out, cfg, region_source=args.regions or "grid",
                               max_boxes=args.max_boxes, size=args.size, seed=args.seed, limit=args.limit,
                               full_logits=args.full_logits, boxes=boxes, resume=args.resume)
    top = ", ".join(f"{n} ({c})" for n, c in summary["top_categories"][:5])
    print(f"{summary['images']} images, {summary['regions']} regions (logit scale {summary['logit_scale']:.1f}): "
          f"kept {100 * summary['kept_frac']:.1f}%, things {100 * summary['thing_frac']:.1f}% of kept; top: {top}")
    if summary["skipped"]:
        print(f"skipped {summary['skipped']} unreadable images")
    print(summary["out"])
    return 0


def _boxes(args: argparse.Namespace, source):
    """``{image name: [N, 4] boxes}`` of ``--boxes``, checked against each image (one-line errors)."""
    from densevlm.data.images import FileListSource
    from densevlm.errors import DenseVLMError
    from densevlm.inference.boxes import assign_boxes, load_boxes
    from densevlm.inference.io import InputImage

    if not isinstance(source, FileListSource):
        raise DenseVLMError(f"--boxes needs --images to be a folder of image files, not {args.images}")
    if args.regions is not None or args.max_boxes is not None:
        raise DenseVLMError("--boxes replaces --regions and --max-boxes; give one or the other")
    entries = load_boxes(args.boxes)
    if not entries:
        raise DenseVLMError(f"{args.boxes}: holds no boxes")
    images = [InputImage(source.path(i), source.name(i), source.name(i)) for i in range(len(source))]
    assigned = assign_boxes(entries, images, args.boxes)
    if not assigned:
        raise DenseVLMError(f"{args.boxes}: no box names an image of {args.images}")
    return {name: arr for name, (arr, _) in assigned.items()}
