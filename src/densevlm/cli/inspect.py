"""OK / UNSURE / NG verdicts for your images at a calibrated false-alarm rate.

INPUT: image files, folders (searched recursively; a `densevlm synth` folder means its images/)
or globs. The operating point (--operating-point op.json, made by `densevlm calibrate`) holds
the thresholds, the scoring settings and the vocabulary; it is refused for any model or
vocabulary other than the ones it was calibrated for. There is no default operating point:
a threshold that was never calibrated on your line would give an unknown false-alarm rate.

Writes DIR/verdicts.csv, one row per image:
  image, verdict (OK | UNSURE | NG; ERROR for a file that cannot be read or is too small to
  inspect; a blank frame of one flat colour is UNSURE), score (the NG score: the
  largest defect score), defects ("name score [x1,y1,x2,y2] AREApx; ..." in original pixels,
  every defect at or above the lowest threshold), reason
  overlay (the overlay's path relative to DIR)
and DIR/overlays/NAME.overlay.png (verdict banner and defect boxes) unless --no-overlays; NAME is
the image's path below its input folder with '/' written '__' (as in `densevlm segment`), so
a.jpg and a.png, or two folders' 001.png, get overlays of their own.

Exit status: 0, or 1 with --fail-on-ng when any image is NG or unreadable (for a line PLC or CI).

Examples:
  densevlm inspect line1/ --model tuned.pt --operating-point op.json --out verdicts
  densevlm inspect 'cam2/*.png' --model tuned.pt --operating-point op.json --out v --fail-on-ng
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from densevlm.cli._common import MODEL_NAMES, PRETRAINED_HELP

    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("--operating-point", required=True, metavar="OP.JSON", help="thresholds made by `densevlm calibrate`")
    p.add_argument("--model", default=None,
                   help=f"the calibrated model: {MODEL_NAMES} (default: the name recorded in the operating point)")
    p.add_argument("--pretrained", default=None, help=PRETRAINED_HELP)
    p.add_argument("--vocab", default=None, metavar="FILE",
                   help="vocabulary file (default: the operating point's; another one is refused)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--fail-on-ng", action="store_true", help="exit with status 1 when any image is NG or unreadable")
    p.add_argument("--no-overlays", action="store_true", help="write verdicts.csv only")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a DIR that is not empty (replaces an earlier verdicts.csv; removes its overlays)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def image_inputs(specs: list[str], exclude: Path | None = None) -> list:
    """Input images of a command; a folder holding panoptic.json stands for its images/ folder."""
    from densevlm.inference.io import collect_inputs

    expanded = [str(Path(s) / "images") if (Path(s) / "panoptic.json").is_file() else s for s in specs]
    return collect_inputs(expanded, exclude=exclude)


def run(args: argparse.Namespace) -> int:
    from densevlm.cli._common import default_device, existing_paths, load_model_arg
    from densevlm.errors import DenseVLMError
    from densevlm.fileio import atomic_write, check_output
    from densevlm.inspection.operating_point import OperatingPoint
    from densevlm.inspection.verdict import inspect, write_verdicts

    inputs = existing_paths(*args.inputs, args.operating_point, args.vocab, args.model, args.pretrained)
    out = check_output(args.out, "dir", inputs=inputs, overwrite=args.overwrite)
    if args.batch_size < 1:
        raise DenseVLMError(f"--batch-size must be at least 1, got {args.batch_size}")
    op = OperatingPoint.load(args.operating_point)
    images = image_inputs(args.inputs, exclude=out)
    model = load_model_arg(args.model or op.model_name, args.pretrained, default_device(args.device))
    verdicts = inspect(model, [im.path for im in images], op, vocab=args.vocab, batch_size=args.batch_size)
    for old in sorted((out / "overlays").glob("*.overlay.png")) if (out / "overlays").is_dir() else []:
        old.unlink()  # an earlier run's, which the new verdicts.csv would not list
    if not args.no_overlays:
        from densevlm.imaging import open_image
        from densevlm.inspection.overlay import render_verdict

        for image, verdict in zip(images, verdicts):
            if verdict.verdict == "ERROR":
                continue
            drawn = render_verdict(open_image(image.path), verdict)
            verdict.overlay = f"overlays/{image.name}.overlay.png"
            atomic_write(out / verdict.overlay, lambda tmp: drawn.save(tmp, format="PNG"))
    write_verdicts(out / "verdicts.csv", verdicts)
    counts = {k: sum(v.verdict == k for v in verdicts) for k in ("OK", "UNSURE", "NG", "ERROR")}
    print(", ".join(f"{n} {k}" for k, n in counts.items() if n or k != "ERROR") + f" of {len(verdicts)} images "
          f"(NG at score >= {op.ng_threshold:.4f}, calibrated for {op.target_false_alarm:.1%} false alarms)")
    print(f"verdicts: {out / 'verdicts.csv'}")
    return 1 if args.fail_on_ng and (counts["NG"] or counts["ERROR"]) else 0
