"""Shared fixtures: no network, deterministic seeds, perturbed random weights."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DENSEVLM_OFFLINE", "1")
# module- and session-scoped fixtures run before the per-test cache below: they get a session
# cache, never the user's ~/.cache (entries an older densevlm wrote there can differ in the last bits);
# it goes when the test run ends
os.environ["DENSEVLM_CACHE"] = tempfile.mkdtemp(prefix="densevlm-test-cache-")
atexit.register(shutil.rmtree, os.environ["DENSEVLM_CACHE"], ignore_errors=True)

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own text-embedding cache; nothing is written to the user's home."""
    monkeypatch.setenv("DENSEVLM_CACHE", str(tmp_path_factory.mktemp("cache")))
    torch.manual_seed(0)


def perturb_(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Make a randomly initialised CLIP's tokens distinct (see research/ecosystem.md, testing tip).

    Random inits give nearly identical tokens (cosine ~0.999), so tests that compare features
    would pass for wrong code. Noise on every 1-d parameter (biases, norms, scales), larger
    position embeddings and sharper query/key projections fix that. Matrices initialised near
    zero (timm's EVA head, std 2e-5) are redrawn at std 0.02 so the bias noise cannot swamp them.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not p.dtype.is_floating_point:
                continue
            noise = torch.randn(p.shape, generator=g)
            if "positional_embedding" in name or "pos_embed" in name or "class_embedding" in name or "cls_token" in name:
                p.add_(noise * 2.0)
            elif p.ndim <= 1:
                p.add_(noise * scale)
            elif name.endswith(("in_proj_weight", "q_proj.weight", "k_proj.weight")):
                p.mul_(3.0)
            elif p.ndim == 2 and float(p.std()) < 1e-3:
                p.copy_(noise * 0.02)
    return module
