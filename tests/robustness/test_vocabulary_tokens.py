"""Kind: what the text tower cannot read of a vocabulary is said, and indistinguishable classes refused.

Names past the context were cut silently and unknown words all mapped to one token, so two classes
could tie exactly forever. Tokenizers are the real ones: open_clip's CLIP BPE (77 tokens, shipped
with open_clip, no download) and the tiny models' word tokenizer.
"""

from __future__ import annotations

import logging

import numpy as np
import open_clip
import pytest
from PIL import Image

from densevlm.backbones.tiny import DEFAULT_WORDS, WordTokenizer
from densevlm.cli.main import main
from densevlm.errors import DenseVLMError
from densevlm.vocab import get_templates, parse_vocabulary
from densevlm.vocab import tokens
from densevlm.vocab.tokens import check_class_tokens, token_count

CLIP_BPE = open_clip.get_tokenizer("ViT-B-16")
TINY = WordTokenizer(list(DEFAULT_WORDS), 16)


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(tokens, "_warned", set())


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_token_count_matches_what_the_tokenizers_emit():
    for tokenizer in (CLIP_BPE, TINY):
        ids = tokenizer(["a photo of a bolt"])[0]
        assert token_count(tokenizer, "a photo of a bolt") == int((ids != 0).sum())


def test_names_that_differ_only_past_the_clip_context_are_refused(caplog):
    stem = "very " * 80
    vocab = parse_vocabulary(f"[things]\nbolt\n{stem}red nut\n[stuff]\n{stem}blue nut\n", "plant.txt")
    with caplog.at_level(logging.WARNING, logger="densevlm"), pytest.raises(DenseVLMError) as info:
        check_class_tokens(CLIP_BPE, vocab, get_templates("vild"), "ViT-B-16")
    message = str(info.value)
    assert message.startswith("plant.txt: classes ") and "(line 3)" in message and "(line 5)" in message
    assert "cut at its context" in message and "\n" not in message
    warning = [m for m in _messages(caplog) if "context" in m]
    assert len(warning) == 1 and "77-token context" in warning[0] and "(line 3)" in warning[0]


def test_a_long_name_that_stays_distinct_is_only_warned_about(caplog):
    vocab = parse_vocabulary("[things]\n" + "very " * 80 + "red nut\nbolt\n", "plant.txt")
    with caplog.at_level(logging.WARNING, logger="densevlm"):
        check_class_tokens(CLIP_BPE, vocab, get_templates("vild"), "ViT-B-16")
    assert any("are cut" in m and "(line 2)" in m for m in _messages(caplog))


def test_unknown_words_are_named_and_ties_refused(caplog):
    vocab = parse_vocabulary("[things]\nbolt\nzebra\ncrane\n[stuff]\nfloor\n", "plant.txt")
    with caplog.at_level(logging.WARNING, logger="densevlm"), pytest.raises(DenseVLMError) as info:
        check_class_tokens(TINY, vocab, get_templates("tiny"), "tiny-vit")
    assert str(info.value).startswith("plant.txt: classes 'zebra' (line 3) and 'crane' (line 4) read as identical")
    assert any("does not know 2 word(s)" in m and "'zebra' (line 3)" in m for m in _messages(caplog))


def test_unknown_words_that_stay_distinct_are_only_warned_about_once(caplog):
    # "an apple" and "a zebra" differ by their article: not identical, so not refused
    vocab = parse_vocabulary("[things]\nbolt\napple\nzebra\nrusty bolt\n", "plant.txt")
    with caplog.at_level(logging.WARNING, logger="densevlm"):
        for _ in range(3):  # segment() embeds the vocabulary once per image
            check_class_tokens(TINY, vocab, get_templates("tiny"), "tiny-vit")
    warnings = [m for m in _messages(caplog) if "does not know 3 word(s)" in m]
    assert len(warnings) == 1 and "'rusty' in 'rusty bolt' (line 5)" in warnings[0]


def test_without_an_article_template_the_article_cannot_separate_them():
    vocab = parse_vocabulary("[things]\napple\nzebra\n", "plant.txt")
    with pytest.raises(DenseVLMError, match="'apple' \\(line 2\\) and 'zebra' \\(line 3\\)"):
        check_class_tokens(TINY, vocab, get_templates("name"), "tiny-vit")


def test_the_shipped_vocabularies_pass_clip():
    from importlib import resources

    from densevlm.vocab import load_vocabulary

    for name in ("coco_panoptic.txt", "ade20k_panoptic.txt"):
        vocab = load_vocabulary(str(resources.files("densevlm") / "resources" / "vocab" / name))
        check_class_tokens(CLIP_BPE, vocab, get_templates("vild"), "ViT-B-16")


def test_segment_refuses_in_one_line_and_leaves_the_vocabulary_alone(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(images / "a.png")
    vocab = tmp_path / "plant.txt"
    vocab.write_text("[things]\nbolt\nwidget\ngizmo\n[stuff]\nfloor\n")
    before = vocab.read_bytes()
    code = main(["segment", str(images), "--vocab", str(vocab), "--out", str(tmp_path / "out"), "--device", "cpu"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1
    assert f"{vocab}: classes 'widget' (line 3) and 'gizmo' (line 4)" in errors[0]
    assert vocab.read_bytes() == before
