"""Reading weights safely: checkpoint files, foreign key names, and open_clip tags offline.

Files are read with safetensors or ``torch.load(weights_only=True)``, never with a full
unpickler. Every failure is a one-line :class:`~densevlm.errors.DenseVLMError`. densevlm's own
files carry a sha256 of their tensors (:func:`tensor_digest`) in the header, checked on reading,
so bytes damaged after writing are refused rather than loaded as wrong (often NaN) weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import zipfile
from pathlib import Path
from typing import Any, Optional

import torch

from densevlm.errors import DenseVLMError

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "read_checkpoint",
    "tensor_digest",
    "state_sha256",
    "nonfinite_tensors",
    "unwrap_state_dict",
    "is_eva_fork_state_dict",
    "convert_eva_fork_state_dict",
    "cached_tag_file",
]

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
HEADER_KEY = "densevlm"


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], Optional[dict[str, Any]]]:
    """Read a weights file.

    Returns:
        ``(state_dict, header)``: the tensors, and the densevlm header (architecture spec and
        metadata) when the file was written by densevlm, else None.
    """
    path = Path(path)
    if not path.is_file():
        raise DenseVLMError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if any(n.split("/", 1)[-1].startswith("code/") for n in zf.namelist()):
                raise DenseVLMError(
                    f"{path}: a TorchScript archive (like the original OpenAI release), which cannot be read "
                    "safely; load the same weights by tag instead (e.g. --pretrained openai)"
                )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or unsafe files
        raise DenseVLMError(f"{path}: not a readable weights file ({_load_failure(path, e)})") from None
    if not isinstance(obj, dict):
        raise DenseVLMError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    header = obj.get(HEADER_KEY) if isinstance(obj.get(HEADER_KEY), dict) else None
    return _checked(path, unwrap_state_dict(obj, str(path)), header), header


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """Hex sha256 of a state dict in its own order: each tensor's name, dtype, shape and bytes
    (what :meth:`Backbone.weights_sha256` and an export's ``image_tower_sha256`` record)."""
    h = hashlib.sha256()
    for name, tensor in state.items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def tensor_digest(obj: Any) -> str:
    """sha256 (hex) of every tensor in a nested dict / list / tuple: each tensor's key path,
    dtype, shape and bytes, dict keys taken in sorted order (so the order a file format stores
    them in does not matter). Non-tensor leaves are ignored."""
    h = hashlib.sha256()

    def walk(prefix: str, x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"{prefix}|{t.dtype}|{tuple(x.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                walk(f"{prefix}/{k}", x[k])
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(f"{prefix}/{i}", v)

    walk("", obj)
    return h.hexdigest()


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors of ``state`` holding a NaN or an infinity."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _checked(path: Path, state: dict[str, torch.Tensor], header: Optional[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """``state``, after checking it against the sha256 in densevlm's ``header`` (when there is one)."""
    expected = (header or {}).get("sha256")
    if expected is not None and tensor_digest(state) != expected:
        raise DenseVLMError(
            f"{path}: the weights do not match the checksum written with them (the file was damaged after it "
            "was saved); restore it from a copy or write it again"
        )
    return state


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], Optional[dict[str, Any]]]:
    from safetensors import SafetensorError, safe_open

    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as e:
        raise DenseVLMError(f"{path}: not a readable safetensors file ({str(e)[:200]})") from None
    header = json.loads(meta[HEADER_KEY]) if HEADER_KEY in meta else None
    return _checked(path, unwrap_state_dict(tensors, str(path)), header), header


def unwrap_state_dict(obj: dict[str, Any], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensors in common checkpoint layouts and strip DDP's ``module.`` prefix.

    Accepts a plain state dict, ``{"state_dict": ...}``, ``{"model": ...}`` and
    ``{"module": ...}`` wrappers, and keys prefixed with ``module.``.
    """
    for key in ("state_dict", "model", "module"):
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise DenseVLMError(f"{source}: no tensors found (expected a state dict)")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def is_eva_fork_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """True for EVA-CLIP fork names (``visual.blocks.0.attn.q_bias`` ...), as in the checkpoints
    published with DenseVLM and CLIPSelf, rather than open_clip's ``visual.trunk.*``."""
    return "visual.pos_embed" in state_dict and not any(k.startswith("visual.trunk.") for k in state_dict)


def convert_eva_fork_state_dict(state_dict: dict[str, torch.Tensor], trunk: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Map an EVA-CLIP fork state dict onto open_clip's ``EVA02-*`` model names.

    timm's ``checkpoint_filter_fn`` converts the image tower (``q_bias``/``v_bias``,
    ``inner_attn_ln``, ``ffn_ln``, ``w1``/``w2``/``w3``, RoPE buffers dropped, position
    embeddings resampled to ``trunk``'s grid); what it lacks is open_clip's ``visual.trunk.``
    prefix and the text tower, whose fork names already match open_clip's.
    """
    from timm.models.eva import checkpoint_filter_fn

    visual = {k: v for k, v in state_dict.items() if k.startswith("visual.")}
    converted = checkpoint_filter_fn(visual, trunk)
    out = {"visual.trunk." + k: v for k, v in converted.items() if k != "rope.freqs"}
    out.update({k: v for k, v in state_dict.items() if not k.startswith("visual.")})
    return out


def _offline() -> bool:
    flags = ("HF_HUB_OFFLINE", "DENSEVLM_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(f, "").strip().lower() in ("1", "true", "yes") for f in flags)


def _hub_reachable(host: str = "huggingface.co", timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def cached_tag_file(name: str, tag: str, cache_dir: Optional[str] = None) -> Optional[str]:
    """Check, without downloading, whether open_clip's weights for ``(name, tag)`` are on disk.

    Returns:
        The cached file path, or None when the weights are missing but this machine can
        reach the hub (open_clip will download them).

    Raises:
        DenseVLMError: unknown tag, or weights missing on an offline machine (within a second).
    """
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(name, tag)
    if not cfg:
        from densevlm.errors import nearest_names

        tags = open_clip.list_pretrained_tags_by_model(name)
        hint = nearest_names(tag, tags)
        raise DenseVLMError(
            f"'{tag}' is neither a weights file nor a known open_clip tag for {name}"
            + (f"; did you mean {hint}?" if hint else f"; tags: {', '.join(tags) or 'none'}")
        )
    looked: list[str] = []
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import constants, try_to_load_from_cache

        repo_id, filename = os.path.split(hub)
        candidates = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename.rsplit(".", 1)[0] + ".safetensors")
        for fname in candidates:
            found = try_to_load_from_cache(repo_id, fname, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
        looked.append(f"{cache_dir or constants.HF_HUB_CACHE} ({repo_id})")
    url = cfg.get("url", "")
    if url:
        local = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if local.is_file():
            return str(local)
        looked.append(str(local))
    if _offline() or not _hub_reachable():
        raise DenseVLMError(
            f"weights for {name} (pretrained='{tag}') are not on this machine and it is offline; "
            f"looked in {' and '.join(looked)}; download them on a connected machine with "
            f"`python -c \"import open_clip; open_clip.create_model('{name}', pretrained='{tag}')\"` and copy the "
            "cache folder over, or pass the weights file itself: --pretrained /path/to/weights.safetensors"
        )
    return None


def _load_failure(path: Path, error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, in the user's terms: torch's own text
    suggests turning the safety setting off, which is wrong advice for a damaged or foreign file."""
    if "weights_only" in str(error) or "Unsupported global" in str(error):
        return "it holds Python objects beyond tensors, or is not a PyTorch checkpoint at all; it is not loaded unsafely"
    if path.stat().st_size == 0:
        return "the file is empty"
    if zipfile.is_zipfile(path) or isinstance(error, (EOFError, OSError)):
        return "truncated or damaged; copy the checkpoint again"
    return "not a PyTorch checkpoint or safetensors file"
