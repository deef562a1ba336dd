"""Vocabulary tools. `adapt`: few-shot class embeddings from reviewed regions.

  densevlm vocab adapt --model M --reviewed review.sqlite --out plant.vocab.npz [--vocab FILE] [--k0 3]
                       [--prototype discriminant|mean] [--negative-rate 0.005 | --no-bias]

Each class's text embedding is blended with the prototype of the regions experts confirmed or
corrected to it: e' = normalise((1 - w) t + w p) with w = n / (n + k0), n the class's reviewed
regions. The prototype is by default the direction that separates the reviewed boxes' RoI features
from the regions of the same images that no reviewed box covers (a regularised Fisher
discriminant); --prototype mean takes their mean feature. Reviewed classes the vocabulary lacks
become new classes. A small box is mostly the surface under it, so each reviewed class then
gets a logit bias (folded into its embedding) at which it wins on at most --negative-rate of
those uncovered regions: where the expert said the word is not. No training: seconds on a CPU.
The .npz works wherever --vocab does (segment, eval, export, inspect), for this model only.

Example:
  densevlm vocab adapt --model tiny-teacher --reviewed review.sqlite --out plant.vocab.npz
  densevlm segment photos/ --model tiny-teacher --vocab plant.vocab.npz --out seg
"""

from __future__ import annotations

import argparse

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
    adapt.add_argument("--k0", type=float, default=3.0,
                       help="prior strength of the text embedding, in regions (default: 3; w = n / (n + k0))")
    adapt.add_argument("--no-gap-shift", action="store_true",
                       help="blend raw prototypes (default: move them across the image-text modality gap first)")
    adapt.add_argument("--prototype", choices=("discriminant", "mean"), default="discriminant",
                       help="discriminant (default): what sets the reviewed boxes apart from the rest of their images; "
                            "mean: their mean feature, moved across the modality gap")
    adapt.add_argument("--negative-rate", type=float, default=None, metavar="R",
                       help="share of the reviewed images' unlabelled regions a reviewed class may win (default: "
                            "0.005; larger teaches more and steals more)")
    adapt.add_argument("--no-bias", action="store_true",
                       help="no calibrated bias: new classes may take surfaces and other parts")
    adapt.add_argument("--size", type=int, default=None, help="longest input side (default: the model's)")
    adapt.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from densevlm.cli._common import load_model_arg
    from densevlm.errors import DenseVLMError
    from densevlm.fileio import check_output
    from densevlm.training.fewshot import NEGATIVE_RATE, adapt_vocabulary
    from densevlm.vocab import load_vocabulary
    from densevlm.vocab.adapted import save_adapted

    out = Path(args.out)
    if out.suffix != ".npz":
        raise DenseVLMError(f"{out}: --out must end in .npz")
    check_output(out, "file", inputs=[args.reviewed, args.vocab], overwrite=args.overwrite)
    if not Path(args.reviewed).is_file():
        raise DenseVLMError(f"{args.reviewed}: review database not found")
    if args.k0 <= 0:
        raise DenseVLMError(f"--k0 {args.k0} must be > 0")
    if args.negative_rate is not None and (args.no_bias or not 0.0 <= args.negative_rate < 1.0):
        raise DenseVLMError(f"--negative-rate {args.negative_rate} must be in [0, 1) and cannot go with --no-bias")
    rate = None if args.no_bias else NEGATIVE_RATE if args.negative_rate is None else args.negative_rate
    vocab = load_vocabulary(args.vocab) if args.vocab else None
    model = load_model_arg(args.model, args.pretrained, "cpu")
    result = adapt_vocabulary(model, args.reviewed, vocab, k0=args.k0, gap=not args.no_gap_shift, size=args.size,
                              negative_rate=rate, prototype=args.prototype)
    save_adapted(result, out)
    taught = [f"{n} ({c}{'' if rate is None else f', bias {b:+.3f}'})"
              for n, c, b in zip(result.names, result.counts, result.bias) if c]
    print(f"wrote {out}: {len(result)} classes, {sum(result.counts)} reviewed regions; adapted: {', '.join(taught)}")
    return 0
