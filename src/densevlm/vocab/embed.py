"""Class text embeddings: prompt ensemble per class, cached on disk.

The cache key covers the text encoder's weights (hash), the vocabulary (names, synonyms,
sections) and the templates, so a changed model or vocabulary never reads a stale entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import weakref
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from densevlm.backbones.base import Backbone
from densevlm.vocab.prompts import fill_template, get_templates
from densevlm.vocab.tokens import check_class_tokens
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["class_embeddings", "default_cache_dir", "encode_texts"]

log = logging.getLogger(__name__)

# Tables this process made or read, so that segmenting image after image does not re-check,
# re-hash and re-read the vocabulary each time: (backbone id, templates, vocabulary, cache dir,
# use_cache) -> (the backbone, its text parameters, their version sum, the table). An entry is
# used only for the same backbone object whose text parameters were not changed in place since.
_RECENT: dict[tuple, tuple[weakref.ref, list[weakref.ref], int, torch.Tensor]] = {}
_RECENT_MAX = 16


def default_cache_dir() -> Path:
    """``$DENSEVLM_CACHE/text`` or ``~/.cache/densevlm/text``."""
    root = os.environ.get("DENSEVLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "densevlm")
    return Path(root) / "text"


def encode_texts(backbone: Backbone, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """``[N, C]`` unit-norm embeddings of ``texts`` (batched, on the backbone's device)."""
    device = next(backbone.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = backbone.tokenize(list(texts[start : start + batch_size])).to(device)
        out.append(F.normalize(backbone.encode_text_tokens(tokens).float(), dim=-1))
    if not out:
        return torch.zeros(0, backbone.embed_dim, device=device)
    return torch.cat(out, dim=0)


def class_embeddings(
    backbone: Backbone,
    vocab: Vocabulary,
    templates: Optional[str] = None,
    cache_dir: Optional[Path] = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """``[K, C]`` unit-norm class embeddings, in vocabulary order.

    The vocabulary is first checked against the text tower (:func:`check_class_tokens`: warnings
    for cut names and unknown words, an error for classes with identical token sequences).
    Each class embedding is the mean over its (synonym x template) sentences of the unit-norm
    sentence embeddings, normalised again. An adapted vocabulary
    (:class:`~densevlm.vocab.adapted.AdaptedVocabulary`) brings its own embeddings: they are
    returned as they are, after checking they were made for this backbone's weights.

    Args:
        templates: template set name; default the model's own (``spec.templates``).
        cache_dir: where cached tables live (default :func:`default_cache_dir`).
        use_cache: read and write the on-disk cache.
    """
    if vocab.adaptation is not None:
        vocab.check_model(backbone.weights_sha256())
        return torch.from_numpy(vocab.embeddings).to(next(backbone.parameters()).device).clone()
    template_name = templates or backbone.spec.templates
    recent_key = (id(backbone), template_name, vocab.fingerprint(), str(cache_dir), use_cache)
    recent = _RECENT.get(recent_key)
    if recent is not None and recent[0]() is backbone and _version(recent[1]) == recent[2]:
        return recent[3].to(next(backbone.parameters()).device).clone()
    table = _class_embeddings(backbone, vocab, template_name, cache_dir, use_cache)
    params = backbone.text_parameters()
    if len(_RECENT) >= _RECENT_MAX:
        _RECENT.clear()
    refs = [weakref.ref(p) for p in params]
    _RECENT[recent_key] = (weakref.ref(backbone), refs, _version(refs), table.detach().clone())
    return table


def _version(params: list[weakref.ref]) -> int:
    """Sum of the in-place version counters of still-living parameters (-1 if one is gone)."""
    alive = [ref() for ref in params]
    return -1 if any(p is None for p in alive) else sum(p._version for p in alive)


def _class_embeddings(backbone: Backbone, vocab: Vocabulary, template_name: str, cache_dir: Optional[Path],
                      use_cache: bool) -> torch.Tensor:
    """:func:`class_embeddings` without the in-process memo: the disk cache, or the text tower."""
    template_list = get_templates(template_name)
    check_class_tokens(backbone.tokenizer, vocab, template_list, model=backbone.spec.arch)
    key = hashlib.sha256(
        "|".join([backbone.text_fingerprint(), vocab.fingerprint(), *template_list]).encode("utf-8")
    ).hexdigest()[:32]
    path = (cache_dir or default_cache_dir()) / f"{key}.pt"
    if use_cache and path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.shape[0] == len(vocab):
                return cached.to(next(backbone.parameters()).device).clone()
        except Exception as e:  # a corrupt cache entry is rebuilt, never fatal
            log.warning("ignoring unreadable text-embedding cache %s (%s)", path, e)
    sentences: dict[str, int] = {}  # each distinct sentence is embedded once (synonyms can repeat one)
    owner: list[int] = []
    row: list[int] = []
    for k, synonyms in enumerate(vocab.synonyms):
        for name in synonyms:
            for t in template_list:
                row.append(sentences.setdefault(fill_template(t, name), len(sentences)))
                owner.append(k)
    log.info("embedding %d classes (%d prompts, '%s' templates) with the %s text tower; cached for the next run%s",
             len(vocab), len(sentences), template_name, backbone.spec.arch,
             "" if len(template_list) < 8 else " (--prompts short embeds a 7-template set, faster)")
    with torch.no_grad():  # not inference_mode: training uses the table in autograd graphs
        emb = encode_texts(backbone, list(sentences))[torch.tensor(row, device=next(backbone.parameters()).device)]
    index = torch.tensor(owner, device=emb.device)
    sums = torch.zeros(len(vocab), emb.shape[1], device=emb.device).index_add_(0, index, emb)
    table = F.normalize(sums, dim=-1)
    if use_cache:
        from densevlm.fileio import atomic_torch_save

        try:
            atomic_torch_save(table.cpu(), path)
        except OSError as e:
            log.warning("could not write text-embedding cache %s (%s)", path, e)
    return table
