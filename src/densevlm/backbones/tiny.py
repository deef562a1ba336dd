"""Tiny CLIP-shaped architectures for the embedded world, served through the same code path.

A tiny model *is* an open_clip ``CLIP``: a ViT image tower (patch 8, class token, learned
positions, pre-LN blocks, final norm, projection), a small causal text transformer pooled at
the end-of-text token, and a learnable logit scale. Only the tokenizer differs: a word-level
vocabulary stored in the model config (the BPE embedding table alone would be 25 MB).
"""

from __future__ import annotations

import copy
import json
import re
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from densevlm.errors import DenseVLMError

__all__ = ["TINY_ARCHS", "WordTokenizer", "build_tiny_clip", "tiny_config", "DEFAULT_WORDS", "add_words",
           "add_words_to_checkpoint"]

# Words of the embedded world's captions, class names and prompt templates. Unknown words
# map to <unk>; `densevlm pretrain` extends this list with the words of the captions it sees.
DEFAULT_WORDS: tuple[str, ...] = tuple(
    """
    a an the and of on with next to in photo image picture close up there is are some two three several
    bolt bolts nut nuts washer washers gear gears spring springs screw screws scratch scratches crack cracks
    dent dents rust spot spots part parts defect defects hardware
    conveyor belt steel plate wooden pallet concrete floor cloth rubber mat surface background metal
    """.split()
)

TINY_ARCHS: dict[str, dict[str, Any]] = {
    "tiny-vit": {
        "embed_dim": 128,
        "vision": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32, "mlp_ratio": 4.0},
        "text": {"context_length": 16, "width": 128, "heads": 4, "layers": 2},
        "words": list(DEFAULT_WORDS),
    },
    # the small tower of `densevlm distill`: tiny-vit's width and heads, half its blocks
    "tiny-vit-s": {
        "embed_dim": 128,
        "vision": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 2, "head_width": 32, "mlp_ratio": 4.0},
        "text": {"context_length": 16, "width": 128, "heads": 4, "layers": 2},
        "words": list(DEFAULT_WORDS),
    },
    # a middle tower of `densevlm distill`: tiny-vit's width and heads, 3 blocks (for a 6-block teacher)
    "tiny-vit-m": {
        "embed_dim": 128,
        "vision": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 3, "head_width": 32, "mlp_ratio": 4.0},
        "text": {"context_length": 16, "width": 128, "heads": 4, "layers": 2},
        "words": list(DEFAULT_WORDS),
    },
    # the faster small tower of `densevlm distill`: half tiny-vit's width (2 heads of 32), 2 blocks
    "tiny-vit-xs": {
        "embed_dim": 128,
        "vision": {"image_size": 64, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32, "mlp_ratio": 4.0},
        "text": {"context_length": 16, "width": 128, "heads": 4, "layers": 2},
        "words": list(DEFAULT_WORDS),
    },
    "tiny-vit-l": {
        "embed_dim": 128,
        "vision": {"image_size": 64, "patch_size": 8, "width": 192, "layers": 6, "head_width": 32, "mlp_ratio": 4.0},
        "text": {"context_length": 16, "width": 128, "heads": 4, "layers": 2},
        "words": list(DEFAULT_WORDS),
    },
}


def tiny_config(arch: str, words: list[str] | None = None) -> dict[str, Any]:
    """A copy of the registered config ``arch``, optionally with extra tokenizer words appended."""
    config = copy.deepcopy(TINY_ARCHS[arch])
    for word in words or []:
        if word not in config["words"]:
            config["words"].append(word)
    return config


class WordTokenizer:
    """Lower-case word-level tokenizer: ``[SOT] words... [EOT] 0 0 ...``.

    Ids: 0 padding, 1 unknown word, ``2 .. n+1`` the words, ``n+2`` start, ``n+3`` end. The end
    token has the highest id, so open_clip's ``argmax`` pooling picks it.
    """

    def __init__(self, words: list[str], context_length: int) -> None:
        self.words = list(words)
        self.context_length = context_length
        self.index = {w: i + 2 for i, w in enumerate(self.words)}
        self.sot = len(self.words) + 2
        self.eot = len(self.words) + 3
        self.vocab_size = len(self.words) + 4

    @staticmethod
    def split(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in self.split(text) if w not in self.index]

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.index.get(w, 1) for w in self.split(text)][: self.context_length - 2]
            ids = [self.sot, *ids, self.eot]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


def build_tiny_clip(config: dict[str, Any]) -> tuple[CLIP, WordTokenizer]:
    """Build a randomly initialised tiny CLIP and its tokenizer from a config dict."""
    tokenizer = WordTokenizer(config["words"], config["text"]["context_length"])
    vision = CLIPVisionCfg(**config["vision"])
    text = CLIPTextCfg(vocab_size=tokenizer.vocab_size, **config["text"])
    clip = CLIP(embed_dim=config["embed_dim"], vision_cfg=vision, text_cfg=text)
    return clip, tokenizer


def add_words(config: dict[str, Any], state_dict: dict[str, torch.Tensor], words: Sequence[str],
              seed: int = 0) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Give a tiny model its own untrained token for each new word, as a BPE CLIP has for any word.

    Each word of ``words`` (split like :class:`WordTokenizer` splits text; words the model
    already has are skipped) is appended to ``config["words"]``. The token table
    ``token_embedding.weight`` (``[n + 4, D]``: pad, unknown, the ``n`` words, start, end) gets
    one row per new word, inserted before the start and end rows, which move up so that the end
    token keeps the highest id (open_clip pools at the ``argmax`` id). Every other tensor is
    unchanged, so every text made of known words embeds exactly as before.

    A new row is drawn from ``N(mu, sigma^2)`` per dimension, with ``mu`` and ``sigma`` the mean
    and standard deviation of the trained word rows (ids ``2 .. n+1``): a token that looks like
    any other to the text tower and carries no meaning. The draw uses
    ``numpy.random.default_rng([seed, crc32(word)])``, so a word's row depends on the seed and the
    word only, not on the order or on the other words added.

    Args:
        config: a tiny model config (``spec.config``: ``words``, ``text`` ...); not modified.
        state_dict: its open_clip state dict; not modified.
        words: words or multi-word names (``"weld spatter"`` adds ``weld`` and ``spatter``).
        seed: the draw's seed.

    Returns:
        ``(config, state_dict)``: copies with the new words (the same objects' contents when
        nothing is new).
    """
    config = copy.deepcopy(config)
    table = state_dict["token_embedding.weight"]
    n = len(config["words"])
    if table.shape[0] != n + 4:
        raise DenseVLMError(f"token table has {table.shape[0]} rows but the config lists {n} words (expected {n + 4})")
    new: list[str] = []
    for name in words:
        for word in WordTokenizer.split(name):
            if word not in config["words"] and word not in new:
                new.append(word)
    if not new:
        return config, dict(state_dict)
    trained = table[2 : n + 2].float().numpy().astype(np.float64)
    mu, sigma = trained.mean(axis=0), trained.std(axis=0)
    rows = [np.random.default_rng([seed, zlib.crc32(w.encode("utf-8"))]).normal(mu, sigma) for w in new]
    added = torch.from_numpy(np.stack(rows).astype(np.float32)).to(table.dtype)
    out = dict(state_dict)
    out["token_embedding.weight"] = torch.cat([table[: n + 2], added, table[n + 2 :]], dim=0).contiguous()
    config["words"] = list(config["words"]) + new
    return config, out


def add_words_to_checkpoint(path: str | Path, words: Sequence[str], out: str | Path, seed: int = 0) -> list[str]:
    """:func:`add_words` on a densevlm tiny ``.safetensors`` file, written atomically to ``out``.

    The tensors keep their dtype (fp16 stays fp16); the header's ``spec.config.words`` grows and
    ``meta.added_words`` records every word added this way so far (the file's hash changes).

    Returns:
        The words that were new (empty when the file already had them all; ``out`` is still written).
    """
    from safetensors.torch import save_file

    from densevlm.backbones.weights import read_checkpoint, tensor_digest
    from densevlm.fileio import atomic_write

    state, header = read_checkpoint(path)
    if header is None or Path(path).suffix != ".safetensors" or not header.get("spec", {}).get("config"):
        raise DenseVLMError(f"{path}: not a densevlm tiny-model .safetensors file (no word list in its header)")
    before = list(header["spec"]["config"]["words"])
    config, state = add_words(header["spec"]["config"], state, words, seed=seed)
    added = config["words"][len(before):]
    header = copy.deepcopy(header)
    header["spec"]["config"] = config
    meta = header.setdefault("meta", {})
    meta["added_words"] = list(meta.get("added_words", [])) + added
    tensors = {k: v.contiguous() for k, v in state.items()}
    header["sha256"] = tensor_digest(tensors)  # the tensors changed: a new checksum
    text = json.dumps(header, sort_keys=True)
    atomic_write(Path(out), lambda tmp: save_file(tensors, tmp, metadata={"densevlm": text}))
    return added
