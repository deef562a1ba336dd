"""``add_words``: plant words get their own untrained token; known texts embed exactly as before."""

from __future__ import annotations

import shutil

import pytest
import torch

from densevlm.backbones.base import BackboneSpec
from densevlm.backbones.factory import build_backbone
from densevlm.backbones.tiny import WordTokenizer, add_words, add_words_to_checkpoint, tiny_config
from densevlm.errors import DenseVLMError
from densevlm.model import DenseModel, load_model
from densevlm.training.pretrain import save_model

NEW = ["burr", "weld spatter", "porosity", "rivet"]
KNOWN = ["a photo of a bolt", "a scratch on a steel plate", "close up of a rust spot", "a conveyor belt"]


def _model(config: dict) -> DenseModel:
    torch.manual_seed(0)
    spec = BackboneSpec("vit", "tiny-vit", 64, 8, templates="tiny", config=config)
    return DenseModel(build_backbone(spec)).eval()


def _with(model: DenseModel, config: dict, state: dict) -> DenseModel:
    out = _model(config)
    out.backbone.clip.load_state_dict(state)
    return out.eval()


def test_added_words_get_distinct_tokens_and_known_texts_are_unchanged():
    config = tiny_config("tiny-vit")
    model = _model(config)
    state = model.backbone.clip.state_dict()
    config2, state2 = add_words(config, state, NEW, seed=0)
    assert config2["words"][len(config["words"]):] == ["burr", "weld", "spatter", "porosity", "rivet"]
    assert state2["token_embedding.weight"].shape[0] == len(config2["words"]) + 4
    extended = _with(model, config2, state2)
    with torch.no_grad():
        assert torch.equal(model.encode_text(KNOWN), extended.encode_text(KNOWN))
        new = extended.encode_text(NEW)
    tok = WordTokenizer(config2["words"], 16)
    sequences = {tuple(tok(n)[0].tolist()) for n in NEW}
    assert len(sequences) == len(NEW) and all(1 not in s for s in sequences), "no word is <unk>"
    assert torch.cdist(new, new).add(torch.eye(len(NEW))).min() > 1e-3, "distinct embeddings"


def test_rows_are_seeded_per_word_and_match_the_table_statistics():
    config = tiny_config("tiny-vit")
    state = _model(config).backbone.clip.state_dict()
    n = len(config["words"])
    _, a = add_words(config, state, ["burr", "rivet"], seed=0)
    _, b = add_words(config, state, ["rivet"], seed=0)
    _, c = add_words(config, state, ["burr", "rivet"], seed=1)
    assert torch.equal(a["token_embedding.weight"][n + 3], b["token_embedding.weight"][n + 2]), "rivet's row"
    assert not torch.equal(a["token_embedding.weight"][n + 2], c["token_embedding.weight"][n + 2])
    _, many = add_words(config, state, [f"w{i}" for i in range(400)], seed=0)
    rows = many["token_embedding.weight"][n + 2 : n + 402]
    trained = state["token_embedding.weight"][2 : n + 2]
    assert torch.allclose(rows.mean(0), trained.mean(0), atol=4 * trained.std(0).max() / 400**0.5)
    assert torch.allclose(rows.std(0).mean(), trained.std(0).mean(), rtol=0.1)
    config2, same = add_words(config, state, ["bolt", "a photo"], seed=0)
    assert config2["words"] == config["words"] and torch.equal(same["token_embedding.weight"], state["token_embedding.weight"])


def test_checkpoint_file_round_trip_and_idempotence(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(_model(tiny_config("tiny-vit")), path, {"built_by": "test"}, half=True)
    before = load_model(path)
    assert add_words_to_checkpoint(path, NEW, tmp_path / "x.safetensors") == ["burr", "weld", "spatter", "porosity", "rivet"]
    shutil.copy(tmp_path / "x.safetensors", tmp_path / "y.safetensors")
    assert add_words_to_checkpoint(tmp_path / "y.safetensors", NEW, tmp_path / "y.safetensors") == []
    assert (tmp_path / "x.safetensors").read_bytes() == (tmp_path / "y.safetensors").read_bytes()
    after = load_model(tmp_path / "x.safetensors")
    with torch.no_grad():
        assert torch.equal(before.encode_text(KNOWN), after.encode_text(KNOWN))
        x = torch.rand(1, 3, 64, 64)
        assert torch.equal(before.encode_dense(x), after.encode_dense(x))
    with pytest.raises(DenseVLMError, match="not a densevlm tiny-model"):
        torch.save({"w": torch.zeros(1)}, tmp_path / "z.pt")
        add_words_to_checkpoint(tmp_path / "z.pt", NEW, tmp_path / "z2.safetensors")


@pytest.mark.parametrize("name", ["tiny-student", "tiny-teacher", "tiny-teacher-parts", "tiny-teacher-l"])
def test_shipped_models_embed_known_vocabularies_as_without_the_plant_words(name):
    """Stripping the added words (``meta.added_words``) from a shipped model leaves every known text's
    embedding bit-identical, and the plant words tokenise to their own ids."""
    from densevlm.backbones.factory import builtin_path
    from densevlm.backbones.weights import read_checkpoint
    from densevlm.data.synth import world_vocabulary_text
    from densevlm.data.synth.categories import PLANT

    state, header = read_checkpoint(builtin_path(name))
    config = header["spec"]["config"]
    added = header["meta"]["added_words"]
    assert added == ["burr", "weld", "spatter", "porosity", "rivet"]
    n = len(config["words"]) - len(added)
    stripped_state = dict(state)
    table = state["token_embedding.weight"]
    stripped_state["token_embedding.weight"] = torch.cat([table[: n + 2], table[n + 2 + len(added):]])
    stripped = _with(_model({**config, "words": config["words"][:n]}), {**config, "words": config["words"][:n]},
                     {k: v.float() for k, v in stripped_state.items()})
    shipped = load_model(name).float()
    texts = KNOWN + [line for line in world_vocabulary_text().splitlines() if not line.startswith(("#", "["))]
    with torch.no_grad():
        assert torch.equal(stripped.encode_text(texts), shipped.encode_text(texts))
    tok = shipped.backbone.tokenizer
    assert all(not tok.unknown_words(c.name) for c in PLANT)
