"""Choose the OK / NG threshold for a target false-alarm rate on labelled images.

The false-alarm rate is the share of defect-free (OK) images called NG. In short: by default the
threshold is set so that good parts from the line are rejected at most --max-false-alarm of the
time on average; --rule confident adds a safety margin (the rate holds in 9 of 10 labelled sets
you could have drawn) at the cost of catching fewer defects; both need enough good parts in the
labelled set (for 2 %: 49 and 114).

In detail: --rule expected (default) is split conformal prediction: the threshold lies above the
(k+1)-th highest of the n labelled OK scores, with (k+1)/(n+1) <= the rate, which bounds the
average rate on new images. --rule confident holds it with probability --confidence (default
0.9) over labelled sets, and --rule labelled only on the labelled OK images (on new ones about
1/n higher on average). The output reports the false-alarm rate and the recall (share of NG
images called NG) on the labelled set, overall and per defect, with 95 % bootstrap intervals,
and the rate to expect on new OK images. With --unsure-band B a second threshold sends up to B
more of the good parts to a person (verdict UNSURE) instead of passing them.

--data: labelled images, either a panoptic dataset (a `densevlm synth` folder, coco:ROOT,
ade:ROOT, json=...,images=...,panoptic=...: an image is NG when it holds a segment of a
[defects] class) or a review database (review.sqlite: an image is NG when an expert accepted or
gave a region a [defects] class; images with reviewed regions and no defect are OK).

The vocabulary must have a [defects] section (the embedded world's has: scratch, crack, dent,
rust spot). op.json records the model's checksum, the vocabulary and the scoring settings;
`densevlm inspect` refuses it for any other model or vocabulary.

Examples:
  densevlm synth --out labelled --n 500 --seed 3000000 --defect-rate 0.5
  densevlm calibrate --model tuned.pt --data labelled --max-false-alarm 0.02 --out op.json
  densevlm calibrate --model tuned.pt --data labelled --max-false-alarm 0.02 --rule confident --out op.json
"""

from __future__ import annotations

import argparse


def add_score_arguments(p: argparse.ArgumentParser) -> None:
    """``--score-method`` and ``--min-area``: how a defect score is made (calibrate, eval --inspection)."""
    from densevlm.inspection.scores import METHODS

    p.add_argument("--score-method", choices=METHODS, default="window",
                   help="defect score: window (mean probability over the best min-area window; default), "
                        "pixel (max probability) or region (best argmax region of at least min-area pixels)")
    p.add_argument("--min-area", type=int, default=None, metavar="PIXELS",
                   help="minimum defect area in model-input pixels (default: half a model token)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from densevlm.cli._common import add_model_arguments
    from densevlm.inspection.calibrate import RULES

    add_model_arguments(p)
    p.add_argument("--data", required=True, help="labelled images: panoptic folder/spec or review database")
    p.add_argument("--vocab", default=None, metavar="FILE",
                   help="vocabulary with a [defects] section (default: the embedded world's)")
    p.add_argument("--max-false-alarm", type=float, required=True, metavar="RATE",
                   help="largest share of OK images to call NG, e.g. 0.02")
    p.add_argument("--rule", choices=RULES, default="expected",
                   help="how the rate is held: expected (on new OK images, on average; default), confident (on new "
                        "OK images with probability --confidence) or labelled (on the labelled OK images only)")
    p.add_argument("--confidence", type=float, default=0.9,
                   help="for --rule confident, and the upper bound printed for new images (default: 0.9)")
    p.add_argument("--unsure-band", type=float, default=None, metavar="RATE",
                   help="extra share of OK images that may be called UNSURE (sent to a person) instead of OK")
    p.add_argument("--out", required=True, metavar="OP.JSON", help="operating point file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing operating point file")
    add_score_arguments(p)
    p.add_argument("--size", type=int, default=None, help="model input side (default: native for tiny models, else 448)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N labelled images")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the intervals (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def load_vocab_arg(path):
    """The --vocab file, or the embedded world's vocabulary."""
    from densevlm.vocab import load_vocabulary

    if path:
        return load_vocabulary(path)
    from densevlm.data.synth import default_vocabulary

    return default_vocabulary()


def _rate(entry: dict) -> str:
    if entry["value"] is None:
        return "n/a"
    return f"{entry['value']:.1%} [{entry['ci'][0]:.1%}, {entry['ci'][1]:.1%}] of {entry['n']}"


def run(args: argparse.Namespace) -> int:
    from densevlm.cli._common import default_device, existing_paths, load_model_arg
    from densevlm.errors import DenseVLMError
    from densevlm.fileio import check_output
    from densevlm.inspection.calibrate import calibrate
    from densevlm.inspection.labelled import load_labelled
    from densevlm.inspection.scores import ScoreConfig

    if not 0.0 <= args.max_false_alarm < 1.0:
        raise DenseVLMError(f"--max-false-alarm {args.max_false_alarm} must be in [0, 1)")
    if not 0.0 < args.confidence < 1.0:
        raise DenseVLMError(f"--confidence {args.confidence} must be between 0 and 1")
    check_output(args.out, "file", inputs=existing_paths(args.data, args.vocab, args.model, args.pretrained),
                 overwrite=args.overwrite)
    vocab = load_vocab_arg(args.vocab)
    images = load_labelled(args.data, vocab, limit=args.limit)
    cfg = ScoreConfig(args.score_method, args.min_area, args.size)
    model = load_model_arg(args.model, args.pretrained, default_device(args.device), size=args.size)
    op = calibrate(model, images, vocab, args.max_false_alarm, model_name=args.model, data=str(args.data), cfg=cfg,
                   unsure_band=args.unsure_band, n_resamples=args.bootstrap, seed=args.seed,
                   batch_size=args.batch_size, progress=True, rule=args.rule, confidence=args.confidence)
    op.save(args.out, overwrite=args.overwrite)
    c = op.calibration
    print(f"calibrated on {c['n_images']} images ({c['n_ok']} OK, {c['n_ng']} NG): NG at score >= {op.ng_threshold:.4f}"
          + (f", UNSURE at >= {op.unsure_threshold:.4f}" if op.unsure_threshold is not None else ""))
    print(f"false alarms {_rate(c['false_alarm'])}; recall {_rate(c['recall'])}")
    new = c["false_alarm_new_images"]
    print(f"false alarms to expect on new OK images (rule {c['rule']}): {new['expected']:.1%} on average, "
          f"at most {new['upper']:.1%} with {new['confidence']:.0%} confidence")
    for name, entry in c["recall_per_defect"].items():
        print(f"  recall {name}: {_rate(entry)}")
    print(f"operating point: {args.out}")
    return 0
