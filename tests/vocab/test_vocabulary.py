"""The vocabulary file format and the class text embeddings."""

from __future__ import annotations

import pytest
import torch

import densevlm
from densevlm.vocab import Vocabulary, class_embeddings, load_vocabulary, parse_vocabulary
from densevlm.vocab.prompts import TEMPLATE_SETS, fill_template
from tests.conftest import perturb_

GOOD = """
# a factory vocabulary
[things]
bolt
scratch, scuff          # synonyms
[stuff]
conveyor belt
steel plate
"""


def test_parse_sections_synonyms_and_comments():
    v = parse_vocabulary(GOOD)
    assert v.names == ("bolt", "scratch", "conveyor belt", "steel plate")
    assert v.synonyms[1] == ("scratch", "scuff")
    assert v.is_thing == (True, True, False, False)
    assert v.thing_indices == [0, 1] and v.stuff_indices == [2, 3]
    assert v.index("Scuff") == 1
    assert parse_vocabulary(v.to_text()) == v


def test_stuff_first_file_still_orders_things_first():
    v = parse_vocabulary("[stuff]\nfloor\n[things]\nnut\n")
    assert v.names == ("nut", "floor") and v.is_thing == (True, False)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("", "vocabulary is empty"),
        ("# only comments\n[things]\n", "vocabulary is empty"),
        ("[things]\nbolt\n[stuff]\nbolt\n", r"'bolt' appears in both sections \(first on line 2\)"),
        ("[things]\nbolt\nnut, Bolt\n", r"'Bolt' appears twice"),
        ("bolt\n[things]\nnut\n", r":1: class 'bolt' comes before any section header"),
        ("[objects]\nbolt\n", r":1: unknown section header '\[objects\]'"),
        ("[things]\nbolt,\n", r":2: empty or invisible name"),
        ("[things]\n\u200b\n[stuff]\nfloor\n", r":2: empty or invisible name"),
    ],
)
def test_bad_vocabularies_give_one_line_errors(tmp_path, text, pattern):
    path = tmp_path / "vocab.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(densevlm.DenseVLMError, match=pattern) as err:
        load_vocabulary(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_non_utf8_and_missing_files(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("[things]\nschraube \xfc\n".encode("latin-1"))
    with pytest.raises(densevlm.DenseVLMError, match=r"latin1.txt:2: not UTF-8 text \(byte 0xfc at column 10\)"):
        load_vocabulary(path)
    with pytest.raises(densevlm.DenseVLMError, match="vocabulary file not found"):
        load_vocabulary(tmp_path / "nope.txt")


def test_templates():
    assert len(TEMPLATE_SETS["vild"]) == 63
    assert fill_template("a photo of {article} {}.", "apple") == "a photo of an apple."
    assert fill_template("{article} {}", "bolt") == "a bolt"


def test_class_embeddings_are_renormalised_ensembles(tmp_path):
    model = densevlm.load_model("tiny-vit")
    perturb_(model.backbone.clip, seed=11)
    vocab = Vocabulary.from_lists(["bolt", ["scratch", "scuff"]], ["steel plate"])
    with torch.no_grad():
        table = class_embeddings(model.backbone, vocab, templates="tiny", cache_dir=tmp_path, use_cache=False)
        # reference: mean of unit-norm sentence embeddings over synonyms x templates, normalised
        sentences = [fill_template(t, n) for n in ("scratch", "scuff") for t in TEMPLATE_SETS["tiny"]]
        ref = torch.nn.functional.normalize(model.encode_text(sentences).mean(0), dim=0)
    assert table.shape == (3, 128)
    assert torch.allclose(table.norm(dim=-1), torch.ones(3), atol=1e-6)
    assert torch.allclose(table[1], ref, atol=1e-5)


def test_text_embedding_cache_hits_and_invalidates(tmp_path):
    model = densevlm.load_model("tiny-vit")
    vocab = Vocabulary.from_lists(["bolt"], ["cloth"])
    with torch.no_grad():
        first = class_embeddings(model.backbone, vocab, cache_dir=tmp_path)
        assert len(list(tmp_path.glob("*.pt"))) == 1
        again = class_embeddings(model.backbone, vocab, cache_dir=tmp_path)
        assert torch.equal(first, again)
        # another vocabulary -> another entry
        class_embeddings(model.backbone, vocab.extended("nut", thing=True), cache_dir=tmp_path)
        assert len(list(tmp_path.glob("*.pt"))) == 2
        # changed text weights -> another entry, different values
        model.backbone.clip.token_embedding.weight.add_(1.0)
        changed = class_embeddings(model.backbone, vocab, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 3
    assert not torch.allclose(changed, first)


def test_shipped_dataset_vocabularies():
    from importlib import resources

    root = resources.files("densevlm") / "resources" / "vocab"
    coco = load_vocabulary(str(root / "coco_panoptic.txt"))
    ade = load_vocabulary(str(root / "ade20k_panoptic.txt"))
    assert (len(coco), coco.num_things) == (133, 80)
    assert (len(ade), ade.num_things) == (150, 100)
    assert coco.names[0] == "person" and coco.names[80] == "banner"
    assert ade.synonyms[ade.index("conveyor belt")][0] == "conveyer belt"


def test_defects_section_marks_things_and_adds_new_ones():
    v = parse_vocabulary(GOOD + "[defects]\nScuff\ndent, ding\n")
    assert v.names == ("bolt", "scratch", "dent", "conveyor belt", "steel plate")
    assert v.is_defect == (False, True, True, False, False)
    assert v.defects == ("scratch", "dent") and v.defect_indices == [1, 2]
    assert v.synonyms[2] == ("dent", "ding") and v.is_thing[2]
    assert parse_vocabulary(v.to_text()) == v
    plain = parse_vocabulary(GOOD)
    assert plain.is_defect == (False,) * 4 and plain.defects == ()
    assert v.extended("nut", thing=True).defects == ("scratch", "dent")


def test_defects_do_not_change_the_embedding_fingerprint():
    marked = parse_vocabulary(GOOD + "[defects]\nscratch\n")
    assert marked.fingerprint() == parse_vocabulary(GOOD).fingerprint()
    assert marked != parse_vocabulary(GOOD)


def test_stuff_listed_as_defect_is_a_one_line_error(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text(GOOD + "[defects]\nsteel plate\n", encoding="utf-8")
    with pytest.raises(densevlm.DenseVLMError, match=r":10: defect 'steel plate' is stuff \(line 8\)"):
        load_vocabulary(path)


def test_embedded_world_lists_its_four_defects():
    from densevlm.data.synth import world_vocabulary_text

    v = parse_vocabulary(world_vocabulary_text())
    assert v.defects == ("scratch", "crack", "dent", "rust spot") and len(v) == 16


def test_fingerprint_is_kept_per_object_and_every_change_gets_its_own():
    import dataclasses
    import pickle

    v = parse_vocabulary(GOOD)
    first = v.fingerprint()
    assert v.fingerprint() is first  # made once, kept on the object
    assert v == parse_vocabulary(GOOD) and "_fingerprint" not in repr(v)
    changed = [
        v.extended("nut", thing=True),
        dataclasses.replace(v, synonyms=(("bolt",), ("scratch",), ("conveyor belt",), ("steel plate",))),
        dataclasses.replace(v, is_thing=(True, False, False, False)),
        Vocabulary.from_lists(["scratch", "bolt"], ["conveyor belt", "steel plate"]),
    ]
    prints = {c.fingerprint() for c in changed}
    assert first not in prints and len(prints) == len(changed)
    # a copy hashes its own fields, also after the original's fingerprint was kept
    assert dataclasses.replace(v, source="elsewhere").fingerprint() == first
    assert pickle.loads(pickle.dumps(v)).fingerprint() == first
