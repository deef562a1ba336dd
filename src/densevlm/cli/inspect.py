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

The verdicts are recorded in DIR/verdicts.partial.jsonl as they are made; an interrupted run
leaves it, and the same command with --resume inspects only the images not done yet.

Exit status: 0, or 1 with --fail-on-ng when any image is NG or unreadable (for a line PLC or CI).

Examples:
  densevlm inspect line1/ --model tuned.pt --operating-point op.json --out verdicts
  densevlm inspect 'cam2/*.png' --model tuned.pt --operating-point op.json --out v --fail-on-ng
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import BinaryIO

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
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in DIR (the same inputs, model and operating point)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")


PARTIAL = "verdicts.partial.jsonl"
CHUNK = 64  # images inspected (and recorded in PARTIAL) at a time


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from densevlm.cli._common import check_resume, default_device, existing_paths, load_model_arg
    from densevlm.errors import DenseVLMError
    from densevlm.fileio import check_output, open_exclusive, read_progress
    from densevlm.inference.io import collect_inputs
    from densevlm.inspection.operating_point import OperatingPoint
    from densevlm.inspection.verdict import inspect, write_verdicts
    from densevlm.vocab import load_vocabulary

    inputs = existing_paths(*args.inputs, args.operating_point, args.vocab, args.model, args.pretrained)
    partial = Path(args.out) / PARTIAL
    check_resume(partial, args.resume, args.overwrite, "inspect")
    out = check_output(args.out, "dir", inputs=inputs, overwrite=args.overwrite or args.resume)
    if args.batch_size < 1:
        raise DenseVLMError(f"--batch-size must be at least 1, got {args.batch_size}")
    op = OperatingPoint.load(args.operating_point)
    images = collect_inputs(args.inputs, exclude=out)
    model = load_model_arg(args.model or op.model_name, args.pretrained, default_device(args.device))
    vocab = load_vocabulary(args.vocab) if args.vocab else op.vocab
    op.check(model.backbone.weights_sha256(), vocab)  # before anything is written
    header = {"kind": "header", "model": model.backbone.weights_sha256(),
              "operating_point": _sha256(args.operating_point),
              "vocab": _sha256(args.vocab) if args.vocab else None, "overlays": not args.no_overlays}
    out.mkdir(parents=True, exist_ok=True)
    with open_exclusive(partial, "inspect") as f:
        records, ends = read_progress(f.read(), partial, "inspect") if args.resume else ([], [])
        rows = _done(records, partial, header, images) if records else None
        if rows is None:  # a new run
            for old in sorted((out / "overlays").glob("*.overlay.png")) if (out / "overlays").is_dir() else []:
                old.unlink()  # an earlier run's, which the new verdicts.csv would not list
            f.truncate(0)
            _append(f, partial, [header])
            rows = {}
        else:
            f.truncate(ends[-1])  # a line cut off mid-way by a crash goes
        todo = [im for im in images if str(im.path) not in rows]
        quiet = not logging.getLogger("densevlm").isEnabledFor(logging.INFO)
        try:
            with tqdm(total=len(images), initial=len(images) - len(todo), desc="inspect", unit="img",
                      disable=True if quiet else None) as bar:
                for start in range(0, len(todo), CHUNK):
                    chunk = todo[start:start + CHUNK]
                    verdicts = inspect(model, [im.path for im in chunk], op, vocab=vocab, batch_size=args.batch_size)
                    if not args.no_overlays:
                        _overlays(out, chunk, verdicts)
                    new = [v.csv_row() for v in verdicts]
                    _append(f, partial, new)
                    rows.update((r["image"], r) for r in new)
                    bar.update(len(chunk))
        except BaseException:
            log.warning("%d of %d verdicts are in %s; the same command with --resume inspects the others",
                        len(rows), len(images), partial)
            raise
        write_verdicts(out / "verdicts.csv", [rows[str(im.path)] for im in images])
        partial.unlink()
    counts = {k: sum(rows[str(im.path)]["verdict"] == k for im in images) for k in ("OK", "UNSURE", "NG", "ERROR")}
    print(", ".join(f"{n} {k}" for k, n in counts.items() if n or k != "ERROR") + f" of {len(images)} images "
          f"(NG at score >= {op.ng_threshold:.4f}, calibrated for {op.target_false_alarm:.1%} false alarms)")
    print(f"verdicts: {out / 'verdicts.csv'}")
    return 1 if args.fail_on_ng and (counts["NG"] or counts["ERROR"]) else 0


def _sha256(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _append(f: BinaryIO, partial: Path, records: list[dict]) -> None:
    """Write ``records`` as JSON lines at the end of ``f`` (``partial``) and flush them to the disk."""
    import json
    import os

    from densevlm.errors import DenseVLMError

    try:
        f.seek(0, os.SEEK_END)
        f.write("".join(json.dumps(r) + "\n" for r in records).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    except OSError as e:
        raise DenseVLMError(f"{partial}: cannot write ({e.strerror or type(e).__name__})") from None


def _done(records: list, partial: Path, header: dict, images: list) -> dict[str, dict]:
    """The rows of an interrupted run's ``records`` (its header checked against this run's ``header``)
    by image."""
    from densevlm.errors import DenseVLMError

    if records[0] != header:
        old = records[0] if isinstance(records[0], dict) else {}
        flags = {"model": "--model (other weights)", "operating_point": "--operating-point (another file content)",
                 "vocab": "--vocab (another file content)",
                 "overlays": "--no-overlays (given then)" if header["overlays"] else "--no-overlays (not given then)"}
        what = [flags[k] for k in flags if old.get(k) != header[k]] or ["settings"]
        raise DenseVLMError(f"{partial}: the interrupted run had other {'; '.join(what)}; resume with the same "
                            "ones, or pass --overwrite to start again")
    wanted = {str(im.path) for im in images}
    rows = {r["image"]: r for r in records[1:] if isinstance(r, dict) and r.get("image") in wanted}
    log.info("resuming %s: %d of %d images done", partial, len(rows), len(images))
    return rows


def _overlays(out: Path, images: list, verdicts: list) -> None:
    """Write each readable image's overlay as ``out/overlays/NAME.overlay.png`` and note it in its verdict."""
    from densevlm.fileio import atomic_write
    from densevlm.imaging import open_image
    from densevlm.inspection.overlay import render_verdict

    for image, verdict in zip(images, verdicts):
        if verdict.verdict == "ERROR":
            continue
        drawn = render_verdict(open_image(image.path), verdict)
        verdict.overlay = f"overlays/{image.name}.overlay.png"
        atomic_write(out / verdict.overlay, lambda tmp: drawn.save(tmp, format="PNG"))
