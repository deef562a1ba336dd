"""Pieces shared by several commands: model flags, device choice, JSON output."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Optional


MODEL_NAMES = ("tiny-student, tiny-teacher-l, tiny-teacher, tiny-teacher-parts (shipped), a checkpoint file, or an "
               "open_clip name such as ViT-B-16 / EVA02-B-16")
PRETRAINED_HELP = "weights for an open_clip model name: a tag (e.g. openai) or a file"


def add_model_arguments(p: argparse.ArgumentParser, flag: str = "--model", default: Optional[str] = "tiny-student",
                        what: str = "model", role: str = "") -> None:
    """``--model NAME_OR_CKPT`` and its ``--pretrained TAG_OR_FILE`` companion (``role``: what the
    model is for and its default, when ``default`` is not shown by argparse)."""
    dest = flag.lstrip("-").replace("-", "_")
    shown = f" (default: {default})" if default and default != argparse.SUPPRESS else ""
    p.add_argument(flag, dest=dest, default=default, required=default is None,
                   help=f"{what}{role}: {MODEL_NAMES}{shown}")
    is_model = flag == "--model"
    p.add_argument("--pretrained" if is_model else f"{flag}-pretrained",
                   dest="pretrained" if is_model else f"{dest}_pretrained", default=None,
                   help=PRETRAINED_HELP.replace("model name", f"{what} name"))


def default_device(requested: Optional[str] = None) -> str:
    """The ``--device`` value checked against this machine (:func:`densevlm.devices.check_device`),
    or the best device there is: ``cuda:LOCAL_RANK`` under torchrun, ``cuda``, else ``cpu``."""
    import torch

    if requested:
        from densevlm.devices import check_device

        check_device(requested)
        return requested
    if "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return "cuda" if torch.cuda.is_available() else "cpu"


def existing_paths(*names: Optional[str]) -> list[str]:
    """The arguments that name an existing file or folder: the inputs an output must not replace
    (model names such as ``tiny-student`` and unset flags drop out)."""
    return [str(n) for n in names if n and Path(n).exists()]


def write_json(path: str | Path, obj: Any) -> None:
    from densevlm.fileio import atomic_write_json

    atomic_write_json(path, json.loads(json.dumps(obj, default=str)))


def load_model_arg(name: str, pretrained: Optional[str], device: str, input_size: Optional[int] = None,
                   size: Optional[int] = None):
    """The model a command names; ``size`` (the command's ``--size``, if any) is refused in one line
    when it is below one patch of that model (:func:`densevlm.imaging.check_input_size`)."""
    from densevlm.imaging import check_input_size
    from densevlm.model import load_model

    model = load_model(name, pretrained=pretrained, device=device, input_size=input_size)
    if size is not None:
        check_input_size(size, model.patch_size)
    return model


def check_resume(partial: Path, resume: bool, overwrite: bool, command: str) -> None:
    """Before any work: ``--resume`` needs the in-progress file ``partial`` of an interrupted run,
    and a run without ``--resume`` or ``--overwrite`` must not start over one (one line each)."""
    from densevlm.errors import DenseVLMError

    if resume and overwrite:
        raise DenseVLMError("--resume continues an interrupted run and --overwrite starts again; give one")
    if resume and not partial.is_file():
        raise DenseVLMError(f"{partial}: no interrupted {command} to resume (leave out --resume)")
    if partial.exists() and not (resume or overwrite):
        raise DenseVLMError(f"{partial}: holds an interrupted {command}; --resume continues it, "
                            "--overwrite starts again")
