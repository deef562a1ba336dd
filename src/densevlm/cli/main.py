"""``densevlm <command>``: one verb per library entry point.

Only the chosen command's module is imported (``densevlm --help`` stays fast); every
:class:`~densevlm.errors.DenseVLMError` is printed as one line, without a traceback, and the
process exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

__all__ = ["main", "COMMANDS"]

# name -> (module under densevlm.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run the whole loop on the embedded world and write a report"),
    "segment": ("segment", "label every pixel and region of your images with your vocabulary"),
    "retrieve": ("retrieve", "let a strong frozen VLM propose categories for image regions"),
    "review": ("review", "review the proposed categories in a local web page (init/serve/export/stats)"),
    "train": ("train", "adapt a model with DenseVLM's decoupled region-language alignment"),
    "distill": ("distill", "train a smaller, faster image encoder to reproduce a model's dense map"),
    "eval": ("evaluate", "region classification (box/mask/crop mAcc), foreground bias, mIoU"),
    "calibrate": ("calibrate", "choose the OK/NG threshold for a target false-alarm rate on labelled images"),
    "inspect": ("inspect", "OK / UNSURE / NG verdicts with the defects found, at a calibrated operating point"),
    "monitor": ("monitor", "compare a production batch with a reference: stable or drift, and what to do"),
    "export": ("export", "export an image encoder and text embeddings to ONNX, with a parity check"),
    "report": ("report", "write a self-contained HTML report from run directories"),
    "synth": ("synth", "generate the embedded factory-floor world (COCO panoptic + captions)"),
    "pretrain": ("pretrain", "contrastive CLIP pretraining on (image, caption) pairs"),
    "models": ("models", "list model names and built-in checkpoints"),
    "vocab": ("vocab", "vocabulary tools: `vocab adapt` blends reviewed regions into class embeddings"),
}


def _build_parser(command: Optional[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densevlm",
        description="Dense open-vocabulary recognition of parts and defects, adapted to your own "
        "unlabeled images with DenseVLM's unbiased region-language alignment.",
        epilog="Run `densevlm <command> --help` for the options of a command.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    # the same two flags are accepted after the command too (`densevlm train ... -q`)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="print debug logging")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".",
                           parents=[common])
        if name == command:
            module = importlib.import_module(f"densevlm.cli.{module_name}")
            if module.__doc__:
                p.description = module.__doc__.strip()
                p.formatter_class = argparse.RawDescriptionHelpFormatter
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time, not the stream of the moment ``main``
    ran (an in-process caller, such as a test, may replace and close that stream later)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


QUIET_HELP = "no progress bars or info logging: warnings, errors and the command's result lines only"


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("densevlm")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # open_clip logs its own warning for random inits; ours is clearer
    logging.getLogger().setLevel(logging.ERROR)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = _build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    _setup_logging(args.verbose, args.quiet)
    from densevlm.errors import DenseVLMError

    try:
        status = args._run(args)
    except DenseVLMError as e:
        print(f"densevlm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"densevlm {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
