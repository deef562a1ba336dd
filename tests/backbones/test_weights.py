"""Loading weights: files in every common layout, EVA-CLIP fork names, offline tags."""

from __future__ import annotations

import re
import time

import open_clip
import pytest
import torch
from safetensors.torch import save_file

import densevlm
from densevlm.backbones.weights import convert_eva_fork_state_dict, is_eva_fork_state_dict
from tests.conftest import perturb_


def _assert_same_state(model: densevlm.DenseModel, ref: dict[str, torch.Tensor]) -> None:
    got = model.backbone.clip.state_dict()
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert torch.equal(got[k], v), k


@pytest.fixture(scope="module")
def vit_s16_state():
    clip = open_clip.create_model("ViT-S-16", pretrained=None)
    perturb_(clip, seed=3)
    return {k: v.clone() for k, v in clip.state_dict().items()}


@pytest.mark.parametrize("layout", ["plain.pt", "wrapped.pth", "module.bin", "file.safetensors"])
def test_open_clip_state_dict_loads_bit_identically(tmp_path, vit_s16_state, layout):
    path = tmp_path / layout
    if layout == "plain.pt":
        torch.save(vit_s16_state, path)
    elif layout == "wrapped.pth":
        torch.save({"state_dict": vit_s16_state, "epoch": 3}, path)
    elif layout == "module.bin":
        torch.save({"state_dict": {"module." + k: v for k, v in vit_s16_state.items()}}, path)
    else:
        save_file({k: v.contiguous() for k, v in vit_s16_state.items()}, str(path))
    model = densevlm.load_model("ViT-S-16", pretrained=str(path))
    _assert_same_state(model, vit_s16_state)


def test_wrong_architecture_is_one_line_error(tmp_path, vit_s16_state):
    path = tmp_path / "s16.pt"
    torch.save(vit_s16_state, path)
    with pytest.raises(densevlm.DenseVLMError, match=r"s16\.pt: weights do not fit ViT-B-16") as err:
        densevlm.load_model("ViT-B-16", pretrained=str(path))
    assert "\n" not in str(err.value)


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": object.__new__(_Payload)}, path)
    with pytest.raises(densevlm.DenseVLMError, match="not a readable weights file"):
        densevlm.load_model("ViT-S-16", pretrained=str(path))


class _Payload:
    pass


def test_garbage_file_is_one_line_error(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00not a safetensors file")
    with pytest.raises(densevlm.DenseVLMError, match="broken.safetensors: not a readable safetensors file"):
        densevlm.load_model("ViT-S-16", pretrained=str(path))


def test_plain_state_dict_without_arch_explains(tmp_path, vit_s16_state):
    path = tmp_path / "bare.pt"
    torch.save(vit_s16_state, path)
    with pytest.raises(densevlm.DenseVLMError, match="does not say which architecture"):
        densevlm.load_model(str(path))


def _to_eva_fork_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename open_clip EVA02 keys to the EVA-CLIP fork's (the inverse of the documented mapping)."""
    out = {}
    for k, v in state.items():
        if k.startswith("visual.trunk."):
            k = "visual." + k[len("visual.trunk."):]
            k = k.replace("attn.q_proj.bias", "attn.q_bias").replace("attn.v_proj.bias", "attn.v_bias")
            k = k.replace("attn.norm.", "attn.inner_attn_ln.")
            k = k.replace("mlp.norm.", "mlp.ffn_ln.")
            k = k.replace("mlp.fc1_g.", "mlp.w1.").replace("mlp.fc1_x.", "mlp.w2.").replace("mlp.fc2.", "mlp.w3.")
        out[k] = v
    # buffers the fork stores and the conversion must drop
    out["visual.rope.freqs_cos"] = torch.zeros(196, 64)
    out["visual.blocks.0.attn.rope.freqs_sin"] = torch.zeros(196, 64)
    return out


def test_eva_fork_names_round_trip(tmp_path):
    model = densevlm.load_model("EVA02-B-16")
    perturb_(model.backbone.clip, seed=4)
    ref = {k: v.clone() for k, v in model.backbone.clip.state_dict().items()}
    fork = _to_eva_fork_names(ref)
    assert "visual.blocks.0.attn.q_bias" in fork and "visual.blocks.0.mlp.ffn_ln.weight" in fork
    assert is_eva_fork_state_dict(fork) and not is_eva_fork_state_dict(ref)
    assert set(convert_eva_fork_state_dict(fork, model.backbone.clip.visual.trunk)) == set(ref)
    path = tmp_path / "densevlm_eva_fork.safetensors"
    save_file({k: v.contiguous() for k, v in fork.items()}, str(path))
    loaded = densevlm.load_model("EVA02-B-16", pretrained=str(path))
    _assert_same_state(loaded, ref)


def test_offline_tag_fails_fast_with_one_line(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.perf_counter()
    with pytest.raises(densevlm.DenseVLMError) as err:
        densevlm.load_model("ViT-B-16", pretrained="openai")
    elapsed = time.perf_counter() - start
    message = str(err.value)
    assert elapsed < 1.0
    assert "\n" not in message
    assert "ViT-B-16" in message and "openai" in message and "offline" in message
    assert str(tmp_path) in message  # says where it looked
    assert re.search(r"--pretrained /path/to/weights", message)  # says how to provide the file


def test_unknown_tag_and_unknown_model_suggest_names():
    with pytest.raises(densevlm.DenseVLMError, match="did you mean .*laion2b_s34b_b88k"):
        densevlm.load_model("ViT-B-16", pretrained="laion2b_s34b_b8k")
    with pytest.raises(densevlm.DenseVLMError, match="unknown model 'ViT-B-61'.*did you mean"):
        densevlm.load_model("ViT-B-61")


def test_quickgelu_variant_builds():
    model = densevlm.load_model("ViT-B-16-quickgelu")
    act = model.backbone.clip.visual.transformer.resblocks[0].mlp.gelu
    assert type(act).__name__ == "QuickGELU"


def test_densevlm_checkpoint_round_trip(tmp_path):
    model = densevlm.load_model("tiny-vit")
    perturb_(model.backbone.clip, seed=5)
    path = model.save(tmp_path / "ckpt" / "last.pt", meta={"note": "x"})
    loaded = densevlm.load_model(str(path))
    _assert_same_state(loaded, model.backbone.clip.state_dict())
    assert loaded.spec.config == model.spec.config
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.encode_dense(x), model.encode_dense(x))


@pytest.mark.parametrize("content, why", [(b"\x00\x01garbage" * 10, "not a PyTorch checkpoint"), (b"", "empty")])
def test_a_foreign_or_empty_file_is_named_as_such_without_torchs_unsafe_advice(tmp_path, content, why):
    path = tmp_path / "m.pt"
    path.write_bytes(content)
    with pytest.raises(densevlm.DenseVLMError) as err:
        densevlm.load_model("ViT-S-16", pretrained=str(path))
    assert why in str(err.value) and "weights_only" not in str(err.value) and "\n" not in str(err.value)


def test_a_truncated_checkpoint_says_so(tmp_path):
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.zeros(1000)}, whole)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[:-600])
    with pytest.raises(densevlm.DenseVLMError, match="truncated or damaged"):
        densevlm.load_model("ViT-S-16", pretrained=str(cut))
