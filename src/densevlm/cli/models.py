"""List every model name `--model` / `--student` / `--teacher` accept.

Built-ins ship with the package; open_clip names take `--pretrained TAG_OR_FILE`.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tags", action="store_true", help="also list the pretrained tags of each open_clip model")


def run(args: argparse.Namespace) -> int:
    from densevlm.backbones import BUILTIN_MODELS, TINY_ARCHS, list_models

    print("built-in (shipped, offline):", ", ".join(BUILTIN_MODELS))
    print("tiny architectures (random init):", ", ".join(TINY_ARCHS))
    import open_clip

    for name in list_models():
        if name in BUILTIN_MODELS or name in TINY_ARCHS:
            continue
        tags = open_clip.list_pretrained_tags_by_model(name) if args.tags else []
        print(name + (f"  [{', '.join(tags)}]" if tags else ""))
    return 0
