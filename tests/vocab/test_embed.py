"""Class embeddings: the in-process memo serves repeated calls and never a stale table."""

from __future__ import annotations

import torch

import densevlm
from densevlm.data.synth import default_vocabulary
from densevlm.vocab import embed


def test_memo_serves_repeats_and_follows_in_place_weight_changes(monkeypatch):
    model = densevlm.load_model("tiny-student")
    vocab = default_vocabulary()
    first = model.embed_vocabulary(vocab)
    calls = []
    monkeypatch.setattr(embed, "_class_embeddings", lambda *a: calls.append(a) or torch.zeros(1))
    again = model.embed_vocabulary(vocab)
    assert calls == [] and torch.equal(again, first)
    again.add_(1.0)  # the caller's copy; the memo keeps its own
    assert torch.equal(model.embed_vocabulary(vocab), first)
    monkeypatch.undo()
    with torch.no_grad():
        model.backbone.clip.text_projection.add_(0.05 * torch.randn_like(model.backbone.clip.text_projection))
    changed = model.embed_vocabulary(vocab)
    assert float((changed - first).abs().max()) > 1e-3
    short = model.embed_vocabulary(vocab, templates="tiny-short")
    assert short.shape == first.shape and float((short - changed).abs().max()) > 1e-4


def test_memo_keys_on_the_vocabulary_content(monkeypatch):
    model = densevlm.load_model("tiny-student")
    vocab = default_vocabulary()
    first = model.embed_vocabulary(vocab)
    things = [vocab.synonyms[k] for k in vocab.thing_indices]
    stuff = [vocab.synonyms[k] for k in vocab.stuff_indices]
    same = densevlm.Vocabulary.from_lists(things, stuff)  # another object, same classes
    swapped = densevlm.Vocabulary.from_lists([things[1], things[0], *things[2:]], stuff)
    calls = []
    real = embed._class_embeddings
    monkeypatch.setattr(embed, "_class_embeddings", lambda *a: calls.append(a) or real(*a))
    assert torch.equal(model.embed_vocabulary(same), first) and calls == []
    rows = model.embed_vocabulary(swapped)
    assert len(calls) == 1 and torch.equal(rows[[1, 0]], first[:2]) and torch.equal(rows[2:], first[2:])
