"""Few-shot class embeddings: prototypes on a stub with known features, the CLI, and ONNX export."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from densevlm.backbones.tiny import add_words_to_checkpoint
from densevlm.cli.main import main
from densevlm.data.synth.categories import PLANT
from densevlm.data.synth import write_world
from densevlm.model import load_model
from densevlm.regions.labelled import LabelledRegion
from densevlm.training.fewshot import adapt_from_regions, class_prototypes, negative_windows, own_regions
from densevlm.training.pretrain import save_model
from densevlm.vocab import AdaptedVocabulary, Vocabulary, load_vocabulary, parse_vocabulary
from densevlm.vocab.fitted import ANCHOR, DISTILL
from tests.conftest import perturb_
from tests.evaluation.stubs import PALETTE, ColourStub


class TextStub(ColourStub):
    """ColourStub (a token's feature = one-hot of its colour) with named text embeddings and a checksum."""

    TEXT = {"a": [0.0, 1.0, 0.0], "b": [0.0, 0.0, 1.0], "c": [1.0, 0.0, 0.0], "d": [0.0, 0.0, 1.0]}

    def __init__(self) -> None:
        super().__init__(3, patch=4, size=32)
        self.embed_dim = 3
        self.backbone = SimpleNamespace(weights_sha256=lambda: "stub")
        self.logit_scale = 100.0

    def embed_vocabulary(self, vocab, templates=None):
        return torch.tensor([self.TEXT[n] for n in vocab.names])


def _image(left: int, right: int) -> Image.Image:
    """32x32: the left half colour ``left``, the right half colour ``right`` (palette indices)."""
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:, :16], pixels[:, 16:] = PALETTE[left], PALETTE[right]
    return Image.fromarray(pixels)


def test_prototype_blend_on_a_stub_gives_the_hand_computed_embedding(tmp_path):
    stub, vocab = TextStub(), Vocabulary.from_lists(["a", "b"], ["c"])
    red_green = str(tmp_path / "red_green.png")
    _image(0, 1).save(red_green)
    regions = [LabelledRegion(red_green, (0, 0, 16, 16), "a", True), LabelledRegion(red_green, (0, 16, 16, 32), "a", True),
               LabelledRegion(red_green, (16, 0, 32, 32), "d", True), LabelledRegion(red_green, (0, 0, 32, 32), None)]
    seen = class_prototypes(stub, regions[:3], vocab.extended("d", True))
    protos, counts, image_mean = seen.prototypes, seen.counts, seen.image_mean
    np.testing.assert_allclose(seen.means, [[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(protos, [[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]], atol=1e-6)  # a, b, d, c
    assert counts.tolist() == [2, 0, 1, 0]
    np.testing.assert_allclose(image_mean, [0.5, 0.5, 0.0], atol=1e-6)
    out = adapt_from_regions(stub, vocab, regions, k0=3.0, gap=False, negative_rate=None, prototype="mean",
                             method="blend")
    assert out.names == ("a", "b", "d", "c") and out.is_thing == (True, True, True, False)
    # a: text e1, two red regions (e0): w = 2/5 -> normalise(0.6 e1 + 0.4 e0)
    np.testing.assert_allclose(out.embeddings[0], np.array([0.4, 0.6, 0.0]) / np.hypot(0.4, 0.6), rtol=1e-6)
    np.testing.assert_allclose(out.embeddings[1], [0, 0, 1])  # b: never reviewed, its text
    # d: new class, text e2, one green region (e1): w = 1/4
    np.testing.assert_allclose(out.embeddings[2], np.array([0.0, 0.25, 0.75]) / np.hypot(0.25, 0.75), rtol=1e-6)
    np.testing.assert_allclose(out.embeddings[3], [1, 0, 0])
    assert out.counts == (2, 0, 1, 0) and out.model_sha256 == "stub"
    # with the gap shift: p~ = normalise(p - image_mean + text_mean) before blending
    shifted = adapt_from_regions(stub, vocab, regions, k0=3.0, gap=True, negative_rate=None, prototype="mean",
                                 method="blend")
    text_mean = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 0]], float).mean(0)
    p = np.array([1.0, 0, 0]) - image_mean + text_mean
    expected = 0.6 * np.array([0, 1.0, 0]) + 0.4 * p / np.linalg.norm(p)
    np.testing.assert_allclose(shifted.embeddings[0], expected / np.linalg.norm(expected), rtol=1e-5)


def test_negative_windows_leave_out_what_the_boxes_cover():
    # 4x4 tokens of 4 px; the box covers token (row 0, col 0) exactly
    windows = negative_windows(np.array([[0.0, 0.0, 4.0, 4.0]]), 4, 4, 4)
    sides = (windows[:, 2] - windows[:, 0]) // 4
    assert [int((sides == s).sum()) for s in (1, 2, 3, 4)] == [15, 9, 4, 1]  # 1/4, 1/9, 1/16 < half
    assert [0, 0, 4, 4] not in windows.tolist()
    half = negative_windows(np.array([[0.0, 0.0, 4.0, 8.0]]), 4, 4, 4, sizes=(2,))  # covers half of one 2x2
    assert len(half) == 8 and [0, 0, 8, 8] not in half.tolist()


def test_own_regions_are_the_components_of_the_unreviewed_argmax_outside_the_boxes():
    # 4x4 tokens of 4 px: columns 0-1 are class a, 2-3 class b, but token (row 0, col 3) looks like
    # the reviewed class r; without r it goes to a (a tie, the first) and is its own component
    dense = np.zeros((3, 4, 4))
    dense[0, :, :2] = 1.0
    dense[1, :, 2:] = 1.0
    dense[:, 0, 3] = (0.0, 0.0, 1.0)
    text = np.eye(3)[:2]  # r (the third class) may not win
    boxes = own_regions(dense, text, np.array([[12.0, 0.0, 16.0, 4.0]]), 4)
    # a's left block; a's lone token is the reviewed box itself (left out); b's block, 1/8 covered
    assert boxes.tolist() == [[0, 0, 8, 16], [8, 0, 16, 16]]
    assert own_regions(dense, text, np.array([[8.0, 0.0, 16.0, 12.0]]), 4).tolist() == [[0, 0, 8, 16]]
    diagonal = np.zeros((3, 2, 2))
    diagonal[0] = np.eye(2)
    diagonal[1] = 1 - np.eye(2)
    assert len(own_regions(diagonal, text, np.zeros((0, 4)), 4)) == 2  # 8-connected: one per class


class SurfaceStub(TextStub):
    """A stuff class whose text matches red tokens only fairly (0.71), as image-text cosines are low."""

    TEXT = {"a": [0.0, 1.0, 0.0], "c": [2**-0.5, 2**-0.5, 0.0], "d": [0.0, 0.0, 1.0]}


def test_a_new_class_no_longer_wins_on_the_expert_s_negative_regions(tmp_path):
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:, :16], pixels[:, 16:] = PALETTE[0], PALETTE[1]  # red surface left, green right
    pixels[4:12, 4:12] = PALETTE[2]  # a small blue defect on the red surface
    Image.fromarray(pixels).save(tmp_path / "defect.png")
    # the expert's box is loose: 4 blue tokens on 12 red ones, so the prototype is mostly red
    regions = [LabelledRegion(str(tmp_path / "defect.png"), (0, 0, 16, 16), "d", True)]
    stub, vocab = SurfaceStub(), Vocabulary.from_lists(["a"], ["c"])
    red, blue = np.eye(3)[0], np.eye(3)[2]
    old = adapt_from_regions(stub, vocab, regions, k0=0.1, gap=False, negative_rate=None, prototype="mean",
                             method="blend")
    d = old.index("d")
    assert red @ old.embeddings[d] > red @ old.embeddings[old.index("c")], "without a bias, d takes the red surface"
    negatives = class_prototypes(stub, regions, old).negatives
    # 8x8 tokens, the box the top-left 4x4: windows of side 1, 2, 3, 4 less than half inside it
    assert len(negatives) == (64 - 16) + (49 - 15) + (36 - 8) + (25 - 6)
    for prototype in ("mean", "discriminant"):
        new = adapt_from_regions(stub, vocab, regions, k0=0.1, gap=False, negative_rate=0.0, prototype=prototype,
                                 method="blend")
        assert new.bias[old.index("a")] == new.bias[old.index("c")] == 0.0 and new.negative_rate == 0.0
        scores = negatives @ new.embeddings.T
        assert not (scores[:, d] > np.delete(scores, d, axis=1).max(axis=1)).any(), prototype
        assert (red @ new.embeddings.T).argmax() == new.index("c"), prototype
        assert (blue @ new.embeddings.T).argmax() == d, f"{prototype}: d still names the defect itself"
    fitted = adapt_from_regions(stub, vocab, regions)  # the default, fit: the box's feature is the target
    box = class_prototypes(stub, regions, old).features
    assert fitted.method == "fit" and (box @ fitted.embeddings.T).argmax() == d
    scores = negatives @ fitted.embeddings.T
    assert (scores[:, d] > np.delete(scores, d, axis=1).max(axis=1)).mean() < 0.1
    assert (red @ fitted.embeddings.T).argmax() == fitted.index("c") and (blue @ fitted.embeddings.T).argmax() == d


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fewshot")
    write_world(root / "world", 6, seed=5, progress=False, plant_words=True)
    torch.manual_seed(0)
    model = load_model("tiny-vit")
    perturb_(model.backbone.clip, seed=4)
    # as the shipped models, it gets a token of its own for each plant word (else they all read as <unk>)
    save_model(model, root / "m.safetensors", {}, half=False)
    add_words_to_checkpoint(root / "m.safetensors", [c.name for c in PLANT], root / "m.safetensors")
    return root, load_model(root / "m.safetensors")


def _regions(root) -> list[LabelledRegion]:
    import json

    data = json.loads((root / "world" / "panoptic.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    out = []
    for ann in data["annotations"]:
        for s in ann["segments_info"]:
            x, y, w, h = s["bbox"]
            out.append(LabelledRegion(str(root / "world" / "images" / ann["file_name"]), (x, y, x + w, y + h),
                                     names[s["category_id"]], names[s["category_id"]] not in {"cloth", "steel plate"}))
    return out


def test_adapted_vocabulary_round_trips_through_onnx_export(world, tmp_path):
    from densevlm.export import check_export, export_onnx, load_onnx_model
    from densevlm.inference.segment import segment
    from densevlm.data.synth import default_vocabulary
    from densevlm.vocab.adapted import save_adapted

    root, model = world
    regions = [r for r in _regions(root) if r.category in {c.name for c in PLANT}]  # the rest stay unreviewed
    vocab = adapt_from_regions(model, default_vocabulary(), regions, k0=1.0)
    assert len(vocab) > len(default_vocabulary()), "plant words became new classes"
    assert vocab.method == "fit" and vocab.negative_rate is None and not any(vocab.bias)
    text = model.embed_vocabulary(parse_vocabulary(vocab.to_text())).numpy()  # the plain text embeddings
    fitted = np.array([n in {c.name for c in PLANT} for n in vocab.names])
    np.testing.assert_array_equal(vocab.embeddings[~fitted], text[~fitted])  # the unreviewed classes keep their text
    assert np.abs(vocab.embeddings[fitted] - text[fitted]).max() > 0.01
    save_adapted(vocab, tmp_path / "plant.vocab.npz")
    loaded = load_vocabulary(tmp_path / "plant.vocab.npz")
    manifest = export_onnx(model, tmp_path / "onnx", loaded, threads=1, parity_images=1)
    # the fitted rows are not unit norm: parity must score the stored table on both sides, not the text
    assert manifest["parity"]["passed"], manifest["parity"]["failures"]
    assert manifest["vocabulary"]["adapted"] == "fit"
    assert check_export(model, tmp_path / "onnx", count=1, threads=1)["passed"]  # re-checked without the .npz
    onnx_model = load_onnx_model(tmp_path / "onnx", threads=1)
    np.testing.assert_allclose(onnx_model.embed_vocabulary(loaded).numpy(), vocab.embeddings, atol=1e-6)
    images = sorted({r.image_path for r in regions})[:3]
    for image in images:
        ours = segment(model, image, loaded)
        theirs = segment(onnx_model, image, loaded)
        assert (ours.labels == theirs.labels).mean() > 0.99
    import json

    # without --vocab, an export segments with the vocabulary it carries (here: the adapted one)
    assert main(["segment", images[0], "--model", str(tmp_path / "onnx"), "--out", str(tmp_path / "seg")]) == 0
    doc = json.loads(next((tmp_path / "seg").glob("*.json")).read_text())
    assert doc["vocabulary"]["names"] == list(vocab.names)
    other = load_model(root / "m.safetensors")
    perturb_(other.backbone.clip, seed=5)
    with pytest.raises(Exception, match="adapted for another model"):
        segment(other, images[0], loaded)


@pytest.fixture(scope="module")
def review_db(world, tmp_path_factory):
    """A review database on the world: two regions corrected to porosity, one to gear, one rejected."""
    from densevlm.data.images import open_image_source
    from densevlm.data.synth import default_vocabulary
    from densevlm.retrieval.candidates import write_candidates
    from densevlm.retrieval.teacher import RetrievalConfig
    from densevlm.review import session
    from densevlm.review.importing import import_candidates
    from densevlm.review.store import ReviewStore

    root, model = world
    tmp = tmp_path_factory.mktemp("review")
    model_path = model.save(tmp / "m.pt")
    write_candidates(model, open_image_source(root / "world"), default_vocabulary(), tmp / "cand.jsonl",
                     RetrievalConfig(logit_scale=100.0), max_boxes=4, limit=3, progress=False)
    db = tmp / "review.sqlite"
    import_candidates(db, tmp / "cand.jsonl")
    with sqlite3.connect(db) as conn:
        ids = [rid for (rid,) in conn.execute("SELECT id FROM regions ORDER BY id")]
    with ReviewStore(db) as store:
        session.add_verdict(store, ids[0], "ana", "category", category="porosity", thing=True)
        session.add_verdict(store, ids[1], "ana", "category", category="porosity", thing=True)
        session.add_verdict(store, ids[2], "ana", "category", category="gear")
        session.add_verdict(store, ids[3], "ana", "rejected")
    return model_path, db


def test_training_against_few_shot_embeddings_of_reviewed_classes(world, review_db, tmp_path):
    from densevlm.review.reviewed import load_reviewed
    from densevlm.training.config import TrainConfig
    from densevlm.training.trainer import Trainer

    root, _ = world
    model_path, db = review_db
    data = load_reviewed(db)
    cfg = TrainConfig(student=str(model_path), teacher=str(model_path), images=str(root / "world" / "images"),
                      out=str(tmp_path / "run"), steps=1, batch_size=2, reviewed_embeddings="few-shot")
    trainer = Trainer(cfg, progress=False, reviewed=data)
    assert trainer.student.training
    text = trainer.student.embed_vocabulary(data.vocab).float()
    expected = adapt_from_regions(load_model(model_path), data.vocab, data.regions, negative_rate=None,
                                  prototype="mean", method="blend").embeddings
    np.testing.assert_allclose(trainer.text_student.numpy(), expected, atol=1e-5)
    reviewed = {data.vocab.index("porosity"), data.vocab.index("gear")}
    for k in range(len(data.vocab)):
        same = torch.allclose(trainer.text_student[k], text[k], atol=1e-6)
        assert same == (k not in reviewed), data.vocab.names[k]
    assert torch.isfinite(torch.tensor(trainer.step([trainer_item(trainer)])["loss"]))
    with pytest.raises(Exception, match="reviewed-embeddings"):
        TrainConfig(images=str(root / "world" / "images"), out=str(tmp_path / "r2"), reviewed_embeddings="proto").check()


def trainer_item(trainer):
    from densevlm.training.data import ContentDataset

    return ContentDataset(trainer.source, trainer.size)[next(iter(trainer.targets.reviewed))]


def test_vocab_adapt_cli_on_a_review_database(world, review_db, tmp_path, capsys):
    from densevlm.data.synth import default_vocabulary
    from densevlm.review.simulated import expert_database, expert_examples

    root, model = world
    model_path, db = review_db
    out = tmp_path / "plant.vocab.npz"
    assert main(["vocab", "adapt", "--model", str(model_path), "--reviewed", str(db), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "porosity (2)" in printed.out and f"for model {model_path}" in printed.out
    assert "[defects]" not in printed.err
    vocab = load_vocabulary(out)
    assert set(vocab.defects) == set(default_vocabulary().defects)  # the candidates header's [defects], kept
    assert vocab.model_name == str(model_path)
    assert isinstance(vocab, AdaptedVocabulary) and vocab.counts[vocab.index("porosity")] == 2
    assert (vocab.method, vocab.anchor, vocab.distill) == ("fit", ANCHOR, DISTILL)
    assert main(["vocab", "adapt", "--model", str(model_path), "--reviewed", str(db), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    adapt = ["vocab", "adapt", "--model", str(model_path), "--reviewed", str(db)]
    blended = tmp_path / "blend.vocab.npz"
    assert main(adapt + ["--out", str(blended), "--method", "blend"]) == 0
    assert "porosity (2, bias " in capsys.readouterr().out
    assert load_vocabulary(blended).method == "blend" and load_vocabulary(blended).negative_rate == 0.005
    plain = tmp_path / "plain.vocab.npz"
    assert main(adapt + ["--out", str(plain), "--method", "blend", "--no-bias"]) == 0
    assert "porosity (2)" in capsys.readouterr().out and load_vocabulary(plain).negative_rate is None
    for extra, message in ((["--method", "blend", "--negative-rate", "1.5"], "--negative-rate 1.5 must be in [0, 1)"),
                           (["--method", "blend", "--negative-rate", "0.01", "--no-bias"], "cannot go together"),
                           (["--distill", "nan"], "--distill nan must be a finite number"),
                           (["--anchor", "inf"], "--anchor inf must be a finite number"),
                           (["--no-bias", "--k0", "2"], "--k0, --no-bias do not apply to --method fit"),
                           (["--method", "blend", "--distill", "3"], "--distill does not apply to --method blend"),
                           (["--anchor", "0"], "--anchor 0.0 must be > 0")):
        assert main(adapt + ["--out", str(tmp_path / "x.npz")] + extra) == 2
        assert message in capsys.readouterr().err, extra
    assert not (tmp_path / "x.npz").exists()
    with_defects = tmp_path / "defects.vocab.npz"
    assert main(adapt + ["--out", str(with_defects), "--vocab", str(root / "world" / "vocab.txt")]) == 0
    assert "[defects]" not in capsys.readouterr().err
    assert "porosity" in load_vocabulary(with_defects).defects
    plain_db = expert_database(expert_examples(root / "world", [_regions(root)[0].category], 1),
                               Vocabulary.from_lists(["bolt"], ["cloth"]), root / "world" / "images",
                               tmp_path / "no-defects.sqlite")
    assert main(["vocab", "adapt", "--model", str(model_path), "--reviewed", str(plain_db),
                 "--out", str(tmp_path / "nd.npz")]) == 0
    assert "lists no [defects]" in capsys.readouterr().err  # inspect and calibrate would refuse it
    seg = tmp_path / "seg"
    assert main(["segment", str(root / "world" / "images"), "--model", str(model_path), "--vocab", str(out),
                 "--out", str(seg)]) == 0
    capsys.readouterr()
    assert main(["segment", str(root / "world" / "images"), "--model", "tiny-student", "--vocab", str(out),
                 "--out", str(tmp_path / "seg2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("densevlm segment: error:") and "adapted for another model" in err[-1]
    assert f"({model_path}, weights sha256" in err[-1]  # it names the model it was made for
    assert not any("Traceback" in line for line in err)
    assert not any("segmenting" in line for line in err), err  # refused before the run is announced
