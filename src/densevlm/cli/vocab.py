"""Vocabulary tools. `adapt`: few-shot class embeddings from reviewed regions.

  densevlm vocab adapt --model M --reviewed review.sqlite --out plant.vocab.npz [--vocab FILE]
                       [--method fit] [--anchor 0.03] [--distill 10]
  densevlm vocab adapt ... --method blend [--k0 3] [--prototype discriminant|mean] [--negative-rate 0.005 | --no-bias]

Reviewed classes the vocabulary lacks become new classes. No training: seconds on a CPU. The .npz
works wherever --vocab does (segment, eval, export, inspect), for this model only.

--method fit (default): the embeddings of the classes experts confirmed or corrected regions to
are fitted so that the model names those regions, starting from and pulled towards their text
embeddings (--anchor), while every region of the same images outside the reviewed boxes keeps
what the model called it without them (--distill: the weight of that; larger steals less from
the other classes and teaches less). Classes no one reviewed keep their text embedding exactly.
Review the known classes too: confirm about ten object boxes of each (`retrieve --boxes`),
besides the new words. Where the expert labelled the class the model predicts, the fit learns
from those labels instead of keeping the model's guess, and the known classes lose far less;
confirmed grid cells or colour segments help much less (BENCHMARKS.md, "Stop 23").

--method blend: each class's text embedding is blended with the prototype of its reviewed
regions: e' = normalise((1 - w) t + w p) with w = n / (n + k0), n the class's reviewed
regions. The prototype is by default the direction that separates the reviewed boxes' RoI features
from the regions of the same images that no reviewed box covers (a regularised Fisher
discriminant); --prototype mean takes their mean feature. A small box is mostly the surface under
it, so each reviewed class then gets a logit bias (folded into its embedding) at which it wins on
at most --negative-rate of those uncovered regions: where the expert said the word is not.

Example:
  densevlm vocab adapt --model tiny-teacher-l --reviewed review.sqlite --out plant.vocab.npz
  densevlm segment photos/ --model tiny-teacher-l --vocab plant.vocab.npz --out seg
"""

from __future__ import annotations

import argparse
import math

from densevlm.cli._common import add_model_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="vocab_verb", metavar="<verb>", required=True)
    adapt = verbs.add_parser("adapt", help="blend class text embeddings with prototypes of reviewed regions",
                             description=__doc__.strip(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(adapt)
    adapt.add_argument("--reviewed", required=True, metavar="DB", help="review database (densevlm review init)")
    adapt.add_argument("--out", required=True, metavar="FILE", help="adapted vocabulary to write (.npz)")
    adapt.add_argument("--vocab", metavar="FILE", default=None,
                       help="starting vocabulary (default: the review database's, with the classes reviewers added)")
    adapt.add_argument("--method", choices=("fit", "blend"), default="fit",
                       help="fit (default): fit the reviewed classes' embeddings against the other classes; "
                            "blend: mix a prototype into each text embedding")
    adapt.add_argument("--anchor", type=float, default=None,
                       help="fit: pull of each reviewed class towards its text embedding (default: 0.03; larger "
                            "teaches less: a word the text tower cannot read has an uninformative one)")
    adapt.add_argument("--distill", type=float, default=None,
                       help="fit: weight of keeping the model's own predictions outside the reviewed boxes "
                            "(default: 10; larger teaches less and steals less)")
    adapt.add_argument("--k0", type=float, default=None,
                       help="blend: prior strength of the text embedding, in regions (default: 3; w = n / (n + k0))")
    adapt.add_argument("--no-gap-shift", action="store_true",
                       help="blend: raw prototypes (default: move them across the image-text modality gap first)")
    adapt.add_argument("--prototype", choices=("discriminant", "mean"), default=None,
                       help="blend: discriminant (default): what sets the reviewed boxes apart from the rest of their "
                            "images; mean: their mean feature, moved across the modality gap")
    adapt.add_argument("--negative-rate", type=float, default=None, metavar="R",
                       help="blend: share of the reviewed images' unlabelled regions a reviewed class may win "
                            "(default: 0.005; larger teaches more and steals more)")
    adapt.add_argument("--no-bias", action="store_true",
                       help="blend: no calibrated bias: new classes may take surfaces and other parts")
    adapt.add_argument("--size", type=int, default=None, help="longest input side (default: the model's)")
    adapt.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys
    from pathlib import Path

    from densevlm.cli._common import load_model_arg
    from densevlm.errors import DenseVLMError
    from densevlm.fileio import check_output
    from densevlm.training.fewshot import NEGATIVE_RATE, adapt_vocabulary
    from densevlm.vocab import load_vocabulary
    from densevlm.vocab.adapted import save_adapted
    from densevlm.vocab.fitted import ANCHOR, DISTILL

    out = Path(args.out)
    if out.suffix != ".npz":
        raise DenseVLMError(f"{out}: --out must end in .npz")
    check_output(out, "file", inputs=[args.reviewed, args.vocab], overwrite=args.overwrite)
    if not Path(args.reviewed).is_file():
        raise DenseVLMError(f"{args.reviewed}: review database not found")
    _check_method_options(args)
    rate = None if args.no_bias else NEGATIVE_RATE if args.negative_rate is None else args.negative_rate
    vocab = load_vocabulary(args.vocab) if args.vocab else None
    model = load_model_arg(args.model, args.pretrained, "cpu", size=args.size)
    result = adapt_vocabulary(model, args.reviewed, vocab, k0=3.0 if args.k0 is None else args.k0,
                              gap=not args.no_gap_shift, size=args.size, negative_rate=rate,
                              prototype=args.prototype or "discriminant", method=args.method,
                              anchor=ANCHOR if args.anchor is None else args.anchor,
                              distill=DISTILL if args.distill is None else args.distill)
    result = dataclasses.replace(result, model_name=args.model)
    save_adapted(result, out)
    blended = args.method == "blend" and rate is not None
    taught = [f"{n} ({c}{f', bias {b:+.3f}' if blended else ''})"
              for n, c, b in zip(result.names, result.counts, result.bias) if c]
    print(f"wrote {out} for model {args.model}: {len(result)} classes, {sum(result.counts)} reviewed regions; "
          f"adapted: {', '.join(taught)}")
    if not result.defects:
        print("note: it lists no [defects] (not the vocabulary `retrieve` was given, no word a reviewer added as a "
              "defect, not --vocab), so `inspect` and `calibrate` refuse it; give --vocab with a [defects] section "
              "(new words may be listed there too)", file=sys.stderr)
    return 0


def _check_method_options(args: argparse.Namespace) -> None:
    """One line for an option of the other method, or a value out of range."""
    from densevlm.errors import DenseVLMError

    blend_only = {"--k0": args.k0 is not None, "--no-gap-shift": args.no_gap_shift,
                  "--prototype": args.prototype is not None, "--negative-rate": args.negative_rate is not None,
                  "--no-bias": args.no_bias}
    fit_only = {"--anchor": args.anchor is not None, "--distill": args.distill is not None}
    other = blend_only if args.method == "fit" else fit_only
    given = [name for name, on in other.items() if on]
    if given:
        raise DenseVLMError(f"{', '.join(given)} do{'es' if len(given) == 1 else ''} not apply to --method "
                            f"{args.method}")
    values = {"--k0": args.k0, "--anchor": args.anchor, "--distill": args.distill,
              "--negative-rate": args.negative_rate}
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise DenseVLMError(f"{name} {value} must be a finite number")
    if args.k0 is not None and args.k0 <= 0:
        raise DenseVLMError(f"--k0 {args.k0} must be > 0")
    if args.anchor is not None and args.anchor <= 0:
        raise DenseVLMError(f"--anchor {args.anchor} must be > 0")
    if args.distill is not None and args.distill < 0:
        raise DenseVLMError(f"--distill {args.distill} must be >= 0")
    if args.negative_rate is not None and not 0.0 <= args.negative_rate < 1.0:
        raise DenseVLMError(f"--negative-rate {args.negative_rate} must be in [0, 1)")
    if args.negative_rate is not None and args.no_bias:
        raise DenseVLMError("--negative-rate and --no-bias cannot go together (--no-bias calibrates no bias)")
