"""Weight-space ensembling and the resumable state."""

from __future__ import annotations

import torch

from densevlm.model import load_model
from densevlm.training.checkpoints import TrainProgress, ensemble_state, ensembled_model, load_state, save_state


def test_ensemble_is_a_convex_mix():
    tuned = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor([7])}
    original = {"w": torch.tensor([0.0, 1.0]), "n": torch.tensor([5])}
    out = ensemble_state(tuned, original, 0.9)
    assert torch.allclose(out["w"], torch.tensor([0.9, 2.8])) and out["n"].item() == 7


def test_ensembled_model_mixes_the_student_with_its_original_weights():
    student = load_model("tiny-vit")
    original = {k: v.clone() for k, v in student.backbone.clip.state_dict().items()}
    with torch.no_grad():
        student.backbone.clip.visual.proj.add_(1.0)
    mixed = ensembled_model(student, original, 0.25).backbone.clip.state_dict()
    assert torch.allclose(mixed["visual.proj"], original["visual.proj"] + 0.25)
    assert torch.equal(student.backbone.clip.visual.proj, original["visual.proj"] + 1.0)  # the student is untouched


def test_state_round_trip_restores_weights_optimizer_and_rng(tmp_path, caplog):
    def parts(seed):
        torch.manual_seed(seed)
        model = load_model("tiny-vit")
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))
        return model, optimizer, schedule, torch.amp.GradScaler("cuda", enabled=False)

    model, optimizer, schedule, scaler = parts(0)
    model.backbone.clip.logit_scale.sum().backward()
    optimizer.step()
    schedule.step()
    with caplog.at_level("WARNING", logger="densevlm.training.checkpoints"):
        assert load_state(tmp_path / "state.pt", model, optimizer, schedule, scaler) is None  # nothing saved yet
    assert any(r.levelname == "WARNING" and str(tmp_path / "state.pt") in r.getMessage() for r in caplog.records)
    progress = TrainProgress(7, 2, [{"step": 7}], {"total": 9, "categories": {"cat": 3}}, [{"step": 6}])
    save_state(tmp_path / "state.pt", model, optimizer, schedule, scaler, progress)
    expected = torch.rand(3)
    other = parts(1)
    assert load_state(tmp_path / "state.pt", *other) == progress
    assert torch.equal(torch.rand(3), expected)  # the RNG continues where the saved run was
    a, b = model.backbone.clip.state_dict(), other[0].backbone.clip.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert other[1].state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()
    assert other[2].last_epoch == schedule.last_epoch == 1
