"""What the text tower actually reads of a vocabulary: cut names, unknown words, identical classes.

A class embedding is the mean over the class's (synonym x template) sentences as the model's
tokenizer encodes them (:func:`densevlm.vocab.embed.class_embeddings`). Two kinds of loss hide
there: a name longer than the text tower's context (77 tokens for CLIP, 16 for the tiny models)
is cut, and the tiny models' word-level tokenizer maps every word it does not know to one
unknown token. Both are reported as warnings naming the vocabulary lines; when they make two
classes' token sequences identical (their embeddings then tie exactly, forever), the vocabulary
is refused.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Optional, Sequence

import torch

from densevlm.errors import DenseVLMError
from densevlm.vocab.prompts import fill_template
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["check_class_tokens", "token_count"]

log = logging.getLogger(__name__)

_warned: set[tuple[str, ...]] = set()  # warnings already given in this process (segment() runs per image)


def _warn_once(key: tuple[str, ...], message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def token_count(tokenizer: Any, text: str) -> Optional[int]:
    """Tokens ``text`` takes before truncation, start and end tokens included; None when the
    tokenizer is of a kind this function does not know (open_clip's BPE ``encode``, Hugging Face
    tokenizers behind ``.tokenizer`` and densevlm's word tokenizer ``split`` are known)."""
    if hasattr(tokenizer, "split") and hasattr(tokenizer, "index"):  # densevlm.backbones.tiny.WordTokenizer
        return len(tokenizer.split(text)) + 2
    if hasattr(tokenizer, "encode") and callable(tokenizer.encode):  # open_clip SimpleTokenizer
        return len(tokenizer.encode(text)) + 2
    inner = getattr(tokenizer, "tokenizer", None)  # open_clip HFTokenizer
    if inner is not None and callable(inner):
        return len(inner(text)["input_ids"])
    return None


def _where(vocab: Vocabulary, k: int) -> str:
    """``'name' (line N)``, long names shortened to 40 characters."""
    name = vocab.names[k] if len(vocab.names[k]) <= 40 else vocab.names[k][:37] + "..."
    line = vocab.lines[k] if k < len(vocab.lines) else None
    return f"'{name}'" + (f" (line {line})" if line else "")


def _where_word(vocab: Vocabulary, word: str, classes: list[int]) -> str:
    return ", ".join(_where(vocab, k) if vocab.names[k].lower() == word else f"'{word}' in {_where(vocab, k)}"
                     for k in classes[:3])


def check_class_tokens(tokenizer: Any, vocab: Vocabulary, templates: Sequence[str], model: str = "the model") -> None:
    """Warn about names the text tower cuts or does not know; refuse indistinguishable classes.

    Args:
        tokenizer: the backbone's tokenizer (callable ``list[str] -> [N, L]`` token ids), with a
            ``context_length`` attribute.
        vocab: the classes; ``vocab.source`` and ``vocab.lines`` name the file and its lines.
        templates: the prompt templates the embedding uses.
        model: the text tower's name, for messages.

    Raises:
        DenseVLMError: two classes whose (synonym x template) token sequences are identical,
            so their embeddings would be equal.
    """
    source = vocab.source or "vocabulary"
    context = getattr(tokenizer, "context_length", None)
    cut: list[int] = []
    if context:
        # tokenizers here are word-local, so counts add up: the name is cut when the longest
        # template prefix plus the name (plus start and end tokens) exceeds the context
        prefix = max((token_count(tokenizer, fill_template(t.split("{}", 1)[0], "x")) or 2) - 2 for t in templates)
        for k, synonyms in enumerate(vocab.synonyms):
            counts = [token_count(tokenizer, name) for name in synonyms]
            if any(c is not None and prefix + c > context for c in counts):
                cut.append(k)
        if cut:
            _warn_once(("cut", source, vocab.fingerprint(), model, *templates),
                       "%s: %d class name(s) are longer than the %s text tower's %d-token context and are cut: %s",
                       source, len(cut), model, context, ", ".join(_where(vocab, k) for k in cut[:8]))
    unknown: dict[str, list[int]] = defaultdict(list)
    if hasattr(tokenizer, "unknown_words"):
        for k, synonyms in enumerate(vocab.synonyms):
            for word in dict.fromkeys(w for name in synonyms for w in tokenizer.unknown_words(name)):
                unknown[word].append(k)
        if unknown:
            words = ", ".join(_where_word(vocab, w, ks) for w, ks in list(unknown.items())[:8])
            _warn_once(("unknown", source, vocab.fingerprint(), model),
                       "%s: the %s text tower does not know %d word(s); each reads as the same unknown token: %s",
                       source, model, len(unknown), words)
    # identical sentences for every template iff identical for one when nothing is cut (word-local
    # tokenizers, the same template words around each name); with cut names compare them all
    used = templates if cut else ("{article} {}" if any("{article}" in t for t in templates) else "{}",)
    sentences = [fill_template(t, name) for synonyms in vocab.synonyms for name in synonyms for t in used]
    with torch.no_grad():
        ids = tokenizer(sentences)
    rows = [tuple(r) for r in ids.tolist()]
    signatures: dict[tuple, list[int]] = defaultdict(list)
    start = 0
    for k, synonyms in enumerate(vocab.synonyms):
        n = len(synonyms) * len(used)
        signatures[tuple(sorted(rows[start : start + n]))].append(k)
        start += n
    tied = [ks for ks in signatures.values() if len(ks) > 1]
    if tied:
        group = tied[0]
        unknown_classes = {k for ks in unknown.values() for k in ks}
        why = ("cut at its context" if any(k in cut for k in group) else
               "of words it does not know" if any(k in unknown_classes for k in group) else "spelt alike to it")
        raise DenseVLMError(
            f"{source}: classes {' and '.join(_where(vocab, k) for k in group)} read as identical token sequences "
            f"to the {model} text tower (names {why}), so they could never be told apart"
            + (f" ({len(tied) - 1} more such group(s))" if len(tied) > 1 else "")
            + "; shorten or reword them, or merge them as synonyms"
        )
