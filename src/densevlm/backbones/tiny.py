"""Tiny CLIP-shaped architectures for the embedded world, served through the same code path.

A tiny model *is* an open_clip ``CLIP``: a ViT image tower (patch 8, class token, learned
positions, pre-LN blocks, final norm, projection), a small causal text transformer pooled at
the end-of-text token, and a learnable logit scale. Only the tokenizer differs: a word-level
vocabulary stored in the model config (the BPE embedding table alone would be 25 MB).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

__all__ = ["TINY_ARCHS", "WordTokenizer", "build_tiny_clip", "tiny_config", "DEFAULT_WORDS"]

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
