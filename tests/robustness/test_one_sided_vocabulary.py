"""Kind: training on a vocabulary of only things (or only stuff) warns that the decoupled loss
has nothing to decouple; it used to run without a word."""

from __future__ import annotations

import logging

import pytest
import torch

from densevlm.data.synth import write_world
from densevlm.model import load_model
from densevlm.training.config import TrainConfig
from densevlm.training.trainer import Trainer

VOCABULARIES = {
    "things only": ("[things]\nbolt\nnut\nwasher\n", "every class is a thing (no stuff)"),
    "stuff only": ("[stuff]\nconveyor belt\nsteel plate\n", "every class is stuff (no things)"),
    "both": ("[things]\nbolt\nnut\n[stuff]\nsteel plate\n", None),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("onesided")
    write_world(root / "images", 4, seed=2, progress=False)
    return root, str(load_model("tiny-vit").save(root / "model.pt"))


@pytest.mark.parametrize("method", ["densevlm", "nodecouple"])
@pytest.mark.parametrize("kind", list(VOCABULARIES))
def test_a_one_sided_vocabulary_is_named_in_one_warning(inputs, tmp_path, caplog, kind, method):
    root, model = inputs
    text, fragment = VOCABULARIES[kind]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(text)
    cfg = TrainConfig(student=model, teacher=model, images=str(root / "images"), out=str(tmp_path / "run"),
                      vocab=str(vocab), steps=1, batch_size=2, method=method)
    with caplog.at_level(logging.WARNING, logger="densevlm"):
        Trainer(cfg, progress=False)
    lines = [r.getMessage() for r in caplog.records if "nothing to decouple" in r.getMessage()]
    if fragment is None or method == "nodecouple":  # nothing to warn about: both sides, or no decoupling asked
        assert lines == []
    else:
        assert len(lines) == 1 and "\n" not in lines[0]
        assert lines[0].startswith(str(vocab)) and fragment in lines[0]
    assert vocab.read_text() == text
