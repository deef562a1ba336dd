"""Label every pixel and every region of your images with the classes of your vocabulary.

INPUT: image files, folders (searched recursively, hidden files and folders skipped) or globs
('photos/**/*.jpg', only image files kept); any size, RGB, grayscale, RGBA or 16-bit, EXIF
orientation applied; an animated GIF or a multi-page TIFF is read by its first frame, with a
warning. A folder or glob never yields the outputs of an earlier segment run (NAME.overlay.png /
NAME.labels.png beside NAME.json or summary.csv, wherever its --out was), and one line lists what
a scan skipped and why. For each image, --out DIR gets:

  NAME.overlay.png  the image with stuff tinted, things outlined, labels and a legend
                    (small images are upscaled, large ones drawn at most --overlay-max-side px)
  NAME.labels.png   class index per original pixel (8-bit PNG for fewer than 256 classes, else
                    16-bit); the index is the position in the JSON's vocabulary.names
  NAME.json         {schema, file, name, width, height, model, input_size, mode (regions|boxes),
                    min_area, vocabulary: {names, isthing}, class_areas: [{category, share}],
                    outputs: {overlay, labels}, segments: [{id, category, category_index,
                    isthing, score, topk: [{category, prob}], bbox: [x1, y1, x2, y2] in original
                    pixels, area in pixels, mask: COCO RLE {size: [H, W], counts}, source}]}

and DIR/summary.csv has one row per image: file, name, status (ok/skipped/error), reason,
segments, top_classes (by area), seconds. NAME is the path relative to the input folder with
'/' replaced by '__' (line1/0001.jpg -> line1__0001.jpg).

A pixel's class is the argmax of its dense feature against the class embeddings, its score the
softmax probability of that class. Segments are the 8-connected regions of each class; regions
under --min-area pixels are dropped as specks (default: half a model token, e.g. 0.5 * (16 px /
scale)^2 for a patch-16 model, clipped to the image for very thin images); when that removes
every region, a warning and the summary's reason say so. A segment's score is the mean pixel score, its topk the
classification of the features pooled under its mask. With --boxes, each given box is
classified (RoI features) and becomes a segment instead: COCO JSON ({"images": [{"id",
"file_name"}], "annotations": [{"image_id", "bbox": [x, y, w, h]}]}) or a list
[{"image": "a.jpg", "box": [x1, y1, x2, y2]}], in original pixels.

Images whose three outputs exist are skipped (--overwrite redoes them) and keep their rows in
summary.csv; a folder whose outputs were made with another model, input size, vocabulary, mode
or --min-area is refused before any work (use another --out, or --overwrite). Unreadable files
are reported in one warning line each and in summary.csv, and the run goes on.

Without --model, ./densevlm-demo/densevlm/last.pt (the model `densevlm demo` tuned) is used
when it exists, else tiny-student. Without --vocab, the embedded world's vocabulary (an export's own).

ENGINES: --model names a model (tiny-student, ViT-B-16, a checkpoint file) run in PyTorch, or an
export directory (`densevlm export --format onnx|openvino --out DIR`) run in ONNX Runtime or
OpenVINO; the engine is read from the export's manifest unless --engine says it. An export
carries its vocabulary's embeddings (--vocab, if given, must be the exported one) and runs without PyTorch
installed (`pip install "densevlm[runtime]"`). Images are decoded in --workers threads, and
post-processed and written in --workers processes, while the model runs a batch at a time.

PROMPTS: the first run of a new vocabulary embeds every class name in the model's prompt
templates (63 sentences per name for CLIPs; cached afterwards). --prompts short uses a 7-sentence
set instead (1 for the tiny models): a much faster first run, for trying vocabularies
interactively, at a small accuracy cost (BENCHMARKS.md).

Examples:
  densevlm segment photos/ --vocab parts.txt --out seg
  densevlm segment 'line1/**/*.jpg' --vocab parts.txt --model ViT-B-16 --pretrained openai
  densevlm segment photos/ --vocab parts.txt --boxes boxes.json --out seg-boxes
  densevlm segment photos/ --vocab parts.txt --model line/ --threads 4        # an OpenVINO export
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

DEMO_CHECKPOINT = Path("densevlm-demo") / "densevlm" / "last.pt"


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
    return value


def _positive(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative(text: str) -> int:
    return _whole_number(text, 0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from densevlm.cli._common import MODEL_NAMES, PRETRAINED_HELP

    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("--vocab", metavar="FILE", default=None,
                   help="vocabulary file ([things] / [stuff] sections; default: the embedded world's)")
    p.add_argument("--model", default=None,
                   help=f"{MODEL_NAMES}; or an export directory written by `densevlm export` (default: "
                        "./densevlm-demo/densevlm/last.pt if present, else tiny-student)")
    p.add_argument("--pretrained", default=None, help=PRETRAINED_HELP)
    p.add_argument("--out", metavar="DIR", default="densevlm-segment", help="output folder (default: densevlm-segment)")
    p.add_argument("--size", type=_positive, default=None,
                   help="input side in pixels; images are letterboxed to a square (default: native for tiny models, else 448)")
    p.add_argument("--top-k", type=_positive, default=5, help="candidates kept per segment (default: 5)")
    p.add_argument("--boxes", metavar="FILE", default=None, help="classify these boxes instead of the regions (see above)")
    p.add_argument("--min-area", type=_non_negative, default=None, metavar="PIXELS",
                   help="drop regions smaller than this many original pixels (default: half a model token; 0 keeps all)")
    p.add_argument("--engine", choices=("torch", "onnx", "openvino"), default=None,
                   help="torch for model names and checkpoints, onnx or openvino for an export directory "
                        "(default: read from the export's manifest, else torch)")
    p.add_argument("--threads", type=_positive, default=None,
                   help="CPU threads of the engine (default: the engine's own choice, one per core)")
    p.add_argument("--prompts", choices=("full", "short"), default="full",
                   help="prompt templates per class name: full (the model's own set) or short (a 7-sentence "
                        "set, 1 for tiny models: faster first run of a new vocabulary; see PROMPTS above)")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    p.add_argument("--workers", type=_non_negative, default=2,
                   help="threads that decode images and processes that post-process and write them while the "
                        "model runs (default: 2; 0: one thread, in order)")
    p.add_argument("--batch-size", type=_positive, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--overlay-max-side", type=_positive, default=2048,
                   help="longest side of the image drawn in the overlay (default: 2048)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1 ... for --engine torch (default: cuda if available); exports run on the CPU")


def _load_model(args: argparse.Namespace):
    """``(model, engine, name for the JSON)`` from --engine / --model / --pretrained / --threads."""
    from densevlm.export.engines import load_engine

    name = args.model
    if name is None and args.engine in ("onnx", "openvino"):
        from densevlm.errors import DenseVLMError

        raise DenseVLMError(f"--engine {args.engine} needs --model EXPORT_DIR (written by `densevlm export "
                            f"--format {args.engine} --out EXPORT_DIR`)")
    if name is None:
        if DEMO_CHECKPOINT.is_file():
            name = str(DEMO_CHECKPOINT)
            log.info("using the model tuned by `densevlm demo`: %s (pass --model to choose another)", name)
        else:
            name = "tiny-student"
    device = args.device
    if device is not None:
        from densevlm.cli._common import default_device

        device = default_device(device)
    model, engine = load_engine(name, args.engine, threads=args.threads, pretrained=args.pretrained, device=device)
    return model, engine, name


def run(args: argparse.Namespace) -> int:
    from densevlm.inference.boxes import assign_boxes, load_boxes
    from densevlm.inference.io import collect_inputs

    from densevlm.cli._common import existing_paths
    from densevlm.fileio import check_output

    # an earlier run's outputs are skipped image by image (--overwrite redoes them), so an existing
    # folder is fine; a file, an unwritable place or a folder holding --vocab/--boxes/--model is not
    inputs = existing_paths(args.vocab, args.boxes, args.model, args.pretrained)
    out = check_output(args.out, "dir", inputs=inputs, overwrite=True)
    images = collect_inputs(args.inputs, exclude=out)
    _check_outputs_are_not_inputs(images, out)
    boxes = assign_boxes(load_boxes(args.boxes), images, args.boxes) if args.boxes else None

    from densevlm.errors import DenseVLMError
    from densevlm.inference.batch import RunConfig, segment_files
    from densevlm.imaging import check_input_size
    from densevlm.inference.segment import default_size
    from densevlm.vocab import load_vocabulary

    model, engine, model_name = _load_model(args)
    if args.vocab:
        vocab = load_vocabulary(args.vocab)
    elif engine != "torch":
        vocab = model.vocabulary  # an export carries its own
    else:
        from densevlm.data.synth import default_vocabulary

        vocab = default_vocabulary()
    size = args.size or default_size(model)
    check_input_size(size, model.patch_size)  # one line now, not one unreadable row per image
    templates = None
    if engine != "torch":
        model.check_size(size)  # a fixed-size export at another --size: one line, before any image
        if args.prompts != "full":
            raise DenseVLMError(f"--prompts applies to --engine torch: {model_name} carries the class embeddings "
                                "it was exported with")
    else:
        from densevlm.vocab.prompts import prompt_set

        templates = prompt_set(model.spec.templates, args.prompts)
    config = RunConfig(
        size=size, top_k=args.top_k, min_area=args.min_area, batch_size=args.batch_size, workers=args.workers,
        overwrite=args.overwrite, overlay_max_side=args.overlay_max_side,
        progress=logging.getLogger("densevlm").isEnabledFor(logging.INFO), model_name=model_name, templates=templates,
    )
    # the vocabulary against the model (an adapted one made for another model, an export's other classes,
    # classes the text tower cannot tell apart) before the run is announced; the table is cached for the run
    model.embed_vocabulary(vocab, templates=templates)
    log.info("segmenting %d images with %s (%s) at %d px, %d classes%s", len(images), model_name, engine, size,
             len(vocab), ", boxes from " + str(args.boxes) if boxes is not None else "")
    summary = segment_files(model, images, vocab, out, config, boxes=boxes)
    ok, skipped, errors = summary.count("ok"), summary.count("skipped"), summary.count("error")
    print(f"segmented {ok} images ({skipped} skipped with existing outputs, {errors} failed, see summary.csv) "
          f"in {summary.seconds:.2f} s")
    print(f"outputs: {out} (summary: {out / 'summary.csv'})")
    return 1 if errors and not ok and not skipped else 0


def _check_outputs_are_not_inputs(images: list, out: Path) -> None:
    """Refuse, before any work, an input image that one of the outputs would replace (an image of
    the --out folder named like another image's NAME.overlay.png, NAME.labels.png or NAME.json)."""
    from densevlm.errors import DenseVLMError
    from densevlm.inference.io import output_paths

    inputs = {im.path.resolve(): im for im in images}
    for im in images:
        for path in output_paths(out, im.name).values():
            hit = inputs.get(path.resolve())
            if hit is not None:
                raise DenseVLMError(f"{hit.path}: an input image, and the name of an output for {im.path}; "
                                    "give another --out (or rename the image)")
