"""Contrastive CLIP pretraining on (image, caption) pairs, for the tiny models and any open_clip model.

Symmetric InfoNCE with the model's learnable temperature; identical captions in a batch share
their targets (no false negatives from duplicates). AdamW, linear warm-up then cosine decay,
all in *steps* so a run is reproducible and resumable bit for bit: batch ``t`` depends only
on ``(seed, t)`` and the resume file holds the model, optimizer and schedule at step ``t``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from densevlm.data.captions import JsonlCaptionSource, open_caption_source
from densevlm.data.synth import make_caption
from densevlm.errors import DenseVLMError
from densevlm.backbones.weights import tensor_digest
from densevlm.fileio import atomic_write_json
from densevlm.model import DenseModel, load_model, pad_batch
from densevlm.regions import similarity
from densevlm.training.checkpoints import read_state, write_state
from densevlm.training.optim import adamw_warmup_cosine
from densevlm.training.precision import resolve_precision

__all__ = ["PretrainConfig", "pretrain", "contrastive_loss"]

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """Settings of one pretraining run (saved beside the result).

    Attributes:
        data: a panoptic directory (captions regenerated from ground truth) or a folder with
            ``captions.jsonl``.
        out: the final checkpoint (``.pt`` or ``.safetensors``); ``OUT.resume.pt`` holds the
            resumable state and ``OUT.json`` the config and metrics.
        arch: a tiny architecture (``tiny-vit``) or any name :func:`densevlm.load_model` takes.
        pretrained: initial weights for ``arch`` (tag or file); None for random init.
        steps, batch_size, lr, weight_decay: the optimisation; ``warmup`` is a fraction of ``steps``.
        p_stuff: how often captions with things also name the background.
        crop_prob, crop_area: region-aware samples (random crops with their own captions).
        part_crop_prob: share of part-centred boxes captioned with their parts only.
        save_every: steps between resumable checkpoints.
        half: store the final weights in fp16 (safetensors only).
        amp: ``"off"`` (fp32, the default: the shipped tiny weights were pretrained so),
            ``"bf16"`` autocast, or ``"auto"`` (fp32, or bf16 with ``DENSEVLM_CPU_BF16=1`` where
            it is fast on this CPU: :mod:`densevlm.training.precision`).
    """

    data: str
    out: str
    arch: str = "tiny-vit"
    pretrained: Optional[str] = None
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: float = 0.05
    p_stuff: float = 0.15
    crop_prob: float = 0.0
    crop_area: tuple[float, float] = (0.08, 0.5)
    part_crop_prob: float = 0.0
    seed: int = 0
    save_every: int = 100
    half: bool = False
    amp: str = "off"
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.steps <= 0 or self.batch_size <= 1:
            raise DenseVLMError(f"--steps must be > 0 and --batch-size > 1 (got {self.steps}, {self.batch_size})")
        if not 0 <= self.p_stuff <= 1 or not 0 <= self.crop_prob <= 1 or not 0 <= self.part_crop_prob <= 1:
            raise DenseVLMError("--p-stuff, --crop-prob and --part-crop-prob must be in [0, 1]")
        if self.crop_prob + self.part_crop_prob > 1:
            raise DenseVLMError(f"--crop-prob + --part-crop-prob is {self.crop_prob + self.part_crop_prob:g}, above 1")
        if not 0 < self.crop_area[0] <= self.crop_area[1] <= 1:
            raise DenseVLMError(f"--crop-area {self.crop_area} must satisfy 0 < min <= max <= 1")
        if self.amp not in ("off", "bf16", "auto"):
            raise DenseVLMError(f"--amp {self.amp}: choose off, bf16 or auto")


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                     captions: list[str]) -> torch.Tensor:
    """Symmetric InfoNCE.

    Args:
        image: ``[B, C]`` unit-norm image embeddings.
        text: ``[B, C]`` unit-norm text embeddings of ``captions``.
        logit_scale: the multiplier of the cosines, ``exp`` of the learned parameter.
        captions: the B captions; equal captions are all positives for each other.
    """
    logits = similarity.logits(image, text, logit_scale)
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=logits.dtype, device=logits.device)
    targets = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def _build_model(cfg: PretrainConfig, source) -> DenseModel:
    from densevlm.backbones import TINY_ARCHS

    if cfg.arch in TINY_ARCHS and isinstance(source, JsonlCaptionSource):
        from densevlm.backbones.base import BackboneSpec
        from densevlm.backbones.factory import build_backbone
        from densevlm.backbones.tiny import tiny_config

        config = tiny_config(cfg.arch, source.words()[:4000])
        spec = BackboneSpec("vit", cfg.arch, config["vision"]["image_size"], config["vision"]["patch_size"],
                            templates="tiny", config=config)
        return DenseModel(build_backbone(spec))
    return load_model(cfg.arch, pretrained=cfg.pretrained)


def _resume_path(out: Path) -> Path:
    return out.with_name(out.name + ".resume.pt")


def pretrain(cfg: PretrainConfig, resume: bool = False, progress: bool = True,
             stop_after: Optional[int] = None) -> dict[str, Any]:
    """Run (or resume) pretraining; returns a summary with the final loss and throughput.

    Args:
        resume: continue from ``OUT.resume.pt`` when it exists.
        stop_after: stop (with the resumable state saved) once this many steps are done, as a
            time-limited job would; the final checkpoint is then not written.
    """
    cfg.check()
    out = Path(cfg.out)
    resume_file = _resume_path(out)
    state = None
    if resume and resume_file.is_file():  # read first: a damaged file stops the run before any work
        state = read_state(resume_file, ("model", "optimizer", "schedule", "step", "history"))
    torch.manual_seed(cfg.seed)
    source = open_caption_source(
        cfg.data, make_caption, p_stuff=cfg.p_stuff, crop_prob=cfg.crop_prob, crop_area=tuple(cfg.crop_area), seed=cfg.seed,
        part_crop_prob=cfg.part_crop_prob,
    )
    model = _build_model(cfg, source)
    model.train()
    backbone = model.backbone
    precision = resolve_precision(cfg.amp, torch.device("cpu"))
    optimizer, schedule = adamw_warmup_cosine(model, cfg.lr, cfg.weight_decay, cfg.steps,
                                              int(round(cfg.warmup * cfg.steps)), betas=(0.9, 0.98), eps=1e-6)
    start_step, history = 0, []
    if state is not None:
        model.backbone.clip.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_step, history = int(state["step"]), json.loads(state["history"])
        log.info("resumed %s at step %d", resume_file, start_step)
    from tqdm import tqdm

    bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc="pretrain", disable=None if progress else True)
    seen, started = 0, time.perf_counter()
    loss_value = float("nan")
    for step in bar:
        pils, captions = source.batch(step, cfg.batch_size)
        images = pad_batch([model.transform(p) for p in pils])
        tokens = backbone.tokenize(captions)
        with precision.autocast():
            image_emb = F.normalize(backbone.forward_image(images, pooled=True, dense=False).pooled.float(), dim=-1)
            text_emb = F.normalize(backbone.encode_text_tokens(tokens).float(), dim=-1)
        logit_scale = backbone.clip.logit_scale.exp().clamp(max=100.0)
        loss = contrastive_loss(image_emb, text_emb, logit_scale, captions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            backbone.clip.logit_scale.clamp_(0, math.log(100.0))
        seen += len(pils)
        loss_value, scale_value = float(loss.detach()), float(logit_scale.detach())
        if step % 10 == 0 or step == cfg.steps - 1:
            rate = seen / max(1e-9, time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss_value:.3f}", scale=f"{scale_value:.1f}", img_s=f"{rate:.0f}")
            history.append({"step": step, "loss": loss_value, "scale": scale_value})
            if bar.disable and step % 100 == 0:
                log.info("pretrain step %d/%d: loss %.4f, logit scale %.1f, %.0f images/s", step, cfg.steps,
                         loss_value, scale_value, rate)
        done = step + 1
        if done % cfg.save_every == 0 or done == cfg.steps or done == stop_after:
            write_state(
                {"model": model.backbone.clip.state_dict(), "optimizer": optimizer.state_dict(),
                 "schedule": schedule.state_dict(), "step": done, "history": json.dumps(history)},
                resume_file,
            )
        if done == stop_after:
            bar.close()
            return {"steps": done, "stopped": True, "final_loss": loss_value, "history": history}
    bar.close()
    elapsed = time.perf_counter() - started
    meta = {"pretrain": {k: v for k, v in asdict(cfg).items() if k != "extra"}, "final_loss": loss_value}
    model.eval()
    save_model(model, out, meta, half=cfg.half)
    summary = {"steps": cfg.steps, "final_loss": loss_value, "images_per_s": seen / max(elapsed, 1e-9),
               "wall_s": elapsed, "logit_scale": model.logit_scale, "out": str(out), "history": history}
    atomic_write_json(out.with_name(out.name + ".json"), {"config": asdict(cfg), "summary": summary})
    return summary


def save_model(model: DenseModel, path: Path, meta: dict[str, Any], half: bool = False) -> Path:
    """Write ``model`` as a densevlm checkpoint: ``.safetensors`` (optionally fp16) or ``.pt``."""
    if path.suffix != ".safetensors":
        return model.save(path, meta)
    from safetensors.torch import save_file

    from densevlm.fileio import atomic_write

    ckpt = model.checkpoint(meta)
    tensors = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in ckpt["state_dict"].items()}
    header = json.dumps({**ckpt["densevlm"], "sha256": tensor_digest(tensors)}, sort_keys=True)

    def write(tmp: str) -> None:
        save_file(tensors, tmp, metadata={"densevlm": header})

    return atomic_write(path, write)
