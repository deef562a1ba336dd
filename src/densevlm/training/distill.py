"""Distil a teacher's dense map into a smaller image encoder, on unlabeled images.

The student is the teacher with a smaller image tower: the text tower, the tokenizer, the
logit scale and the prompt templates are the teacher's, copied and frozen, and the small
tower's projection outputs the teacher's embedding width, so the student's dense tokens live
in the teacher's joint space and every class embedding the teacher ever made (any vocabulary,
cached or exported) is the student's too. Only the image tower trains. The result is a normal
checkpoint (``OUT/last.pt``) that :func:`densevlm.load_model`, ``segment``, ``eval`` and
``export`` take like any other.

**Objective.** Per content token of each image (letterbox padding is ignored), the default is

    loss = cosine_weight * (1 - cos(x, t)) + kl_weight * KL(softmax(s t.T) || softmax(s x.T))

with ``x``/``t`` the student's/teacher's unit-norm dense tokens, ``T`` the ``[K, C]`` class
embeddings of ``--vocab`` (the embedded world's by default) and ``s`` the teacher's logit
scale (:mod:`densevlm.losses.distill`). Why both, cosine first:

* the cosine term copies the *whole* token, so the student stays open-vocabulary: words the
  vocabulary does not hold, which a plant adds later, score against the student as against
  the teacher. A KL over K classes only constrains the token's projection onto the span of
  ``K`` text embeddings (16 of the 128 dimensions on the embedded world, a few hundred of 512
  for a ViT-B plant vocabulary) and leaves the rest free to drift;
* the KL term spends the student's small capacity where labels change: at the teacher's scale
  (about 18 for tiny-teacher, 100 for real CLIPs) a token that sits between two classes gets a
  large gradient even when its cosine error is tiny, and labels are what ``segment`` and the
  region-classification protocol read. Cosine alone weights every direction of the token alike.

Measured on the embedded world (BENCHMARKS.md, "Distillation": tiny-teacher -> tiny-vit-s,
500 steps, 500 held-out scenes; box thing / stuff mAcc / fg_bias, teacher 48.3 / 80.2 / 5.4):
cosine alone 48.8 / 83.3 / 7.2, KL alone 50.8 / 81.3 / 9.2 (stuff drifts to parts), both
50.3 / 83.2 / 7.0. The default keeps both at weight 1.

**Initialisation.** The small tower starts from a source tower of its depth: by default the
teacher's own blocks (DistilBERT's recipe, Sanh et al. 2019): patch and position embeddings,
class token, pre-norm, final norm and projection, and as block ``i`` of ``L_s`` the teacher's
block ``round(i * (L_t - 1) / (L_s - 1))`` (evenly spaced, first and last kept, the last being
the block whose value path makes the dense map); or, with ``--init``, the image tower of an
earlier distilled model (progressive distillation: tiny-teacher -> tiny-vit-s -> tiny-vit-xs).
A source of the student's width is copied; a wider one is narrowed onto the principal
components of its residual stream on 256 of the images
(:mod:`densevlm.training.distill_narrow`, SliceGPT-style): a distilled tiny-vit-s narrowed to
width 64, before any step, gives the teacher's label on 89 % of the tokens of 100 scenes not
used for the projection (the wide tower 96 %, a random init 5 %).

**The small architectures** (:data:`densevlm.backbones.tiny.TINY_ARCHS`). ``tiny-vit-s`` keeps
tiny-vit's width 128 and heads and runs 2 blocks instead of 4 (encoder 1.75x faster than
tiny-teacher's at 64 px, one thread). ``tiny-vit-xs`` also halves the width (64, 2 heads of 32,
MLP 256; 0.12 M image parameters against 0.84 M): its encoder is about 3.6x faster (two runs of
``benchmarks/distill_cpu.py`` on a loaded machine). At 64 tokens the cost of a block is mostly
per-operator overhead plus the attention, so depth is cut first (a third block at width 64 adds
about 37 % to the encoder time) and one block is not enough (no attention in the dense path). Measured on the embedded world (500 steps, 500 held-out scenes,
box thing / stuff / fg_bias; teacher 48.3 / 80.2 / 5.4): tiny-vit-xs narrowed from the teacher's
blocks 48.2 / 82.6 / 7.7 (49.1 / 81.9 / 7.5 after 1000 steps), narrowed from a distilled tiny-vit-s (``--init``) 49.5 / 82.9 / 7.1,
from a random init 32.9 / 80.3 / 7.6 (46.0 / 80.7 / 8.4 after 1500 steps). ``tiny-vit-m`` (width
128, 3 blocks) is the middle step for the 6-block ``tiny-teacher-l``: narrowed from its blocks 0,
2 and 5 and distilled 1500 steps it keeps box 74.4 / 86.1 / 5.2 of the teacher's 75.6 / 86.7 / 4.4
and a 64 px ``segment`` call is 2.2x faster on one thread, 1.9x on two. Progressively, tiny-teacher-l
-> tiny-vit-s (4000 steps, 73.3 / 86.7 / 5.1) -> tiny-vit-xs (4000 steps, then 4000 more at lr 5e-4)
keeps 72.9 / 86.6 / 5.1 and a ``segment`` call is 2.1-2.4x faster on two threads, 64 px scenes and
640x480 photos (BENCHMARKS.md, "Distillation", stops 19 and 21).

**Real models (recipe, not yet built by this command).** For a ViT-B/16 teacher (e.g. a
DenseVLM-tuned EVA02-B/16 or ViT-B-16), the matching student is a ViT-S/16-sized tower (width
384, 12 blocks, 6 heads, about 22 M parameters against 86 M, roughly 4x fewer FLOPs per token)
whose projection is ``384 -> 512`` so it shares the teacher's text tower; initialise its
blocks from a ViT-S/16 CLIP or ImageNet checkpoint (widths differ, so not from the teacher),
train at the inference size (448-512 px) with both terms, lr 5e-4 with AdamW, warm-up 500
steps, batch 64, about 20-40 k steps on the plant's own unlabeled photos (the teacher's dense
maps can be cached, since the teacher is frozen and only sees fixed images). This command
builds students for the tiny architectures only, and says so for an open_clip teacher.

    >>> result = distill(DistillConfig(teacher="tiny-teacher", arch="tiny-vit-s", images="world", out="runs/small"))
    >>> model = load_model("runs/small/last.pt")
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from densevlm.backbones import BackboneSpec
from densevlm.backbones.factory import build_backbone
from densevlm.backbones.tiny import TINY_ARCHS, tiny_config
from densevlm.data.images import open_image_source
from densevlm.data.synth import default_vocabulary
from densevlm.errors import DenseVLMError, nearest_names
from densevlm.fileio import atomic_write_text, check_output
from densevlm.losses.distill import token_cosine_loss, token_kl_loss
from densevlm.model import DenseModel, load_model
from densevlm.regions.similarity import cosine
from densevlm.training.checkpoints import TrainProgress, load_state, save_state
from densevlm.training.config import check_run
from densevlm.training.data import ContentDataset, StepBatchSampler, make_loader, model_batch
from densevlm.training.distill_narrow import narrow_tower
from densevlm.training.optim import adamw_warmup_cosine
from densevlm.training.precision import resolve_precision
from densevlm.training.step import optimizer_step
from densevlm.vocab import load_vocabulary

__all__ = ["DistillConfig", "DistillResult", "Distiller", "distill", "student_from_teacher", "teacher_block_map"]

log = logging.getLogger(__name__)

RUN_FILES = ("last.pt", "state.pt", "metrics.jsonl", "config.yaml")


@dataclass
class DistillConfig:
    """Settings of a distillation run.

    Attributes:
        teacher: model name or checkpoint file whose dense map is copied (a tiny architecture).
        arch: the small image tower, a name in :data:`~densevlm.backbones.tiny.TINY_ARCHS`.
        init: model whose image tower the student starts from (``arch``'s depth; narrowed when
            wider); None = the teacher's blocks (:func:`student_from_teacher`).
        images: unlabeled images (folder, world dir, COCO JSON or tar shards).
        out: run directory (``last.pt``, ``state.pt``, ``metrics.jsonl``, ``config.yaml``).
        vocab: vocabulary of the KL term; None = the embedded world's.
        cosine_weight, kl_weight: weights of the two terms (module docstring); not both 0.
        steps, batch_size, lr, weight_decay, warmup_steps: AdamW with warm-up then cosine decay.
        size: longest input side (default: the teacher's input size).
        amp: ``auto`` (off on the CPU), ``off``, ``bf16`` or ``fp16``.
    """

    teacher: str = "tiny-teacher"
    arch: str = "tiny-vit-s"
    init: Optional[str] = None
    images: str = ""
    out: str = ""
    vocab: Optional[str] = None
    cosine_weight: float = 1.0
    kl_weight: float = 1.0
    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    seed: int = 0
    size: Optional[int] = None
    amp: str = "auto"
    workers: int = 0
    log_every: int = 10
    save_every: int = 100
    device: Optional[str] = None

    def check(self) -> None:
        """Raise a one-line error for any out-of-range setting."""
        check_run(self.images, self.out, self.steps, self.batch_size, self.lr, self.amp)
        if self.arch not in TINY_ARCHS:
            hint = nearest_names(self.arch, list(TINY_ARCHS))
            raise DenseVLMError(f"--arch {self.arch}: choose one of {', '.join(TINY_ARCHS)}"
                                + (f" (did you mean {hint}?)" if hint else ""))
        if self.cosine_weight < 0 or self.kl_weight < 0 or self.cosine_weight + self.kl_weight == 0:
            raise DenseVLMError("--cosine-weight and --kl-weight must be >= 0 and not both 0")
        if self.size is not None and self.size <= 0:
            raise DenseVLMError(f"--size {self.size} must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DistillResult:
    """What a run produced: the run directory, steps, last logged loss and label agreement
    (share of content tokens whose top class is the teacher's), wall time, skipped images."""

    out: Path
    steps: int
    final_loss: float
    agreement: float
    wall_s: float
    skipped_images: int
    history: list[dict[str, Any]] = field(default_factory=list)


def teacher_block_map(student_blocks: int, teacher_blocks: int) -> list[int]:
    """Teacher block index for each student block: evenly spaced, first and last kept.

    >>> teacher_block_map(2, 4), teacher_block_map(3, 12), teacher_block_map(1, 4)
    ([0, 3], [0, 6, 11], [3])
    """
    if student_blocks == 1:
        return [teacher_blocks - 1]
    return [round(i * (teacher_blocks - 1) / (student_blocks - 1)) for i in range(student_blocks)]


def student_from_teacher(teacher: DenseModel, arch: str, images: Optional[torch.Tensor] = None,
                         init: Optional[DenseModel] = None) -> DenseModel:
    """A model with the small image tower ``arch`` and everything else of ``teacher``.

    The text tower, tokenizer words, logit scale, templates, normalisation and input size are
    the teacher's; the image tower's projection outputs ``teacher.embed_dim``. The tower starts
    from a source tower of ``arch``'s depth: ``init``'s image tower when given, else the
    teacher's blocks picked by :func:`teacher_block_map` (module docstring). A source of
    ``arch``'s width is copied; a wider one is narrowed by principal components of its residual
    stream on ``images`` (:mod:`densevlm.training.distill_narrow`); any other width (or no
    ``images``) starts from a random init.

    Args:
        teacher: a tiny (config-described) model.
        arch: a name in :data:`~densevlm.backbones.tiny.TINY_ARCHS`.
        images: ``[B, 3, S, S]`` normalised images at the teacher's input size, for narrowing.
        init: a model whose image tower has ``arch``'s depth, patch and output width (e.g. a
            ``tiny-vit-s`` distilled from the same teacher).

    Raises:
        DenseVLMError: the teacher is not a tiny model, ``arch`` is unknown, or ``init`` does not fit.
    """
    if teacher.spec.config is None:
        raise DenseVLMError(
            f"{teacher.spec.source}: distill builds small towers for the tiny architectures only; "
            "for an open_clip teacher follow the ViT-S/16 recipe in densevlm.training.distill")
    if arch not in TINY_ARCHS:
        raise DenseVLMError(f"unknown small architecture {arch!r}; choose one of {', '.join(TINY_ARCHS)}")
    config = copy.deepcopy(teacher.spec.config)
    config["vision"] = tiny_config(arch)["vision"]
    spec = BackboneSpec(family="vit", arch=arch, image_size=config["vision"]["image_size"],
                        patch_size=config["vision"]["patch_size"], mean=teacher.spec.mean, std=teacher.spec.std,
                        templates=teacher.spec.templates, config=config,
                        extra={**teacher.spec.extra, "distilled_from": teacher.spec.source})
    if spec.patch_size != teacher.patch_size:
        raise DenseVLMError(f"--arch {arch}: patch {spec.patch_size} differs from the teacher's {teacher.patch_size}; "
                            "the dense maps would not line up")
    student = DenseModel(build_backbone(spec), input_size=teacher.input_size)
    own = student.backbone.clip.state_dict()
    shared = {k: v for k, v in teacher.backbone.clip.state_dict().items() if not k.startswith("visual.")}
    visual, source_vision = _source_tower(teacher, arch, init)
    vision = config["vision"]
    if source_vision["width"] > vision["width"] and images is not None:
        heads = source_vision["width"] // source_vision["head_width"]
        narrow = narrow_tower({k[len("visual."):]: v for k, v in visual.items()}, images, heads, vision["width"],
                              vision["head_width"], vision["mlp_ratio"])
        visual = {"visual." + k: v for k, v in narrow.items()}
    elif source_vision["width"] != vision["width"]:
        visual = {k: v for k, v in own.items() if k.startswith("visual.")}
    student.backbone.clip.load_state_dict({**shared, **visual}, strict=True)
    for name, p in student.backbone.clip.named_parameters():
        p.requires_grad_(name.startswith("visual."))
    return student.eval()


def _source_tower(teacher: DenseModel, arch: str, init: Optional[DenseModel]) -> tuple[dict[str, torch.Tensor], dict]:
    """The ``visual.*`` tensors the student starts from and their vision config."""
    layers = TINY_ARCHS[arch]["vision"]["layers"]
    if init is None:
        source = teacher.backbone.clip.state_dict()
        return (_visual_init(source, len(teacher.backbone.image_groups()["blocks"]), layers),
                teacher.spec.config["vision"])
    vision = (init.spec.config or {}).get("vision")
    if (vision is None or vision["layers"] != layers or init.patch_size != teacher.patch_size
            or init.embed_dim != teacher.embed_dim):
        raise DenseVLMError(f"--init {init.spec.source}: needs a tiny model with {layers} blocks, patch "
                            f"{teacher.patch_size} and output width {teacher.embed_dim}, like --arch {arch}")
    return {k: v.clone() for k, v in init.backbone.clip.state_dict().items() if k.startswith("visual.")}, vision


def _visual_init(teacher_state: dict[str, torch.Tensor], teacher_blocks: int, student_blocks: int) -> dict[str, torch.Tensor]:
    prefix = "visual.transformer.resblocks."
    out = {k: v.clone() for k, v in teacher_state.items() if k.startswith("visual.") and not k.startswith(prefix)}
    for i, j in enumerate(teacher_block_map(student_blocks, teacher_blocks)):
        for k, v in teacher_state.items():
            if k.startswith(f"{prefix}{j}."):
                out[f"{prefix}{i}." + k[len(f"{prefix}{j}."):]] = v.clone()
    return out


def content_tokens(contents: list[torch.Tensor], grid: tuple[int, int], patch: int) -> torch.Tensor:
    """``[B, h, w]`` bool: the tokens of a padded batch that cover each uint8 ``[3, h_i, w_i]`` content."""
    valid = torch.zeros(len(contents), *grid, dtype=torch.bool)
    for i, c in enumerate(contents):
        valid[i, : -(-c.shape[1] // patch), : -(-c.shape[2] // patch)] = True
    return valid


class Distiller:
    """One distillation run: the frozen teacher, the student, its optimizer and progress.

    Args: as :func:`distill`.
    """

    def __init__(self, cfg: DistillConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> None:
        cfg.check()
        self.cfg, self.progress = cfg, progress
        self.out = Path(cfg.out)
        if not resume:
            check_output(self.out, "dir", inputs=[cfg.teacher, cfg.images, *([cfg.init] if cfg.init else [])],
                         overwrite=overwrite)
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.source = open_image_source(cfg.images)
        if len(self.source) == 0:
            raise DenseVLMError(f"{cfg.images}: no images to distil on")
        torch.manual_seed(cfg.seed)
        self.teacher = load_model(cfg.teacher, device=self.device)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.size = cfg.size or self.teacher.input_size
        init = load_model(cfg.init, device="cpu") if cfg.init else None
        self.student = student_from_teacher(self.teacher.cpu(), cfg.arch, self._calibration(), init).to(self.device)
        self.teacher.to(self.device)
        vocab = load_vocabulary(cfg.vocab) if cfg.vocab else default_vocabulary()
        with torch.no_grad():
            self.text = self.teacher.embed_vocabulary(vocab).float().to(self.device)
        self.scale = self.teacher.logit_scale
        self.optimizer, self.schedule = adamw_warmup_cosine(self.student, cfg.lr, cfg.weight_decay, cfg.steps,
                                                            cfg.warmup_steps)
        self.precision = resolve_precision(cfg.amp, self.device)
        self.scaler = self.precision.grad_scaler()
        self.global_step, self.skipped, self.history = 0, 0, []
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DenseVLMError(f"{self.out}: cannot create the run directory ({e.strerror})") from None
        if resume:
            restored = load_state(self.out / "state.pt", self.student, self.optimizer, self.schedule, self.scaler,
                                  cfg.steps)
            if restored is not None:
                self.global_step, self.skipped, self.history = restored.step, restored.skipped, restored.history
        else:
            for name in RUN_FILES:
                (self.out / name).unlink(missing_ok=True)

    def _calibration(self, count: int = 256) -> torch.Tensor:
        """Up to ``count`` readable images spread evenly over the source, for narrowing a tower."""
        data = ContentDataset(self.source, self.size)
        picks = sorted({int(i) for i in torch.linspace(0, len(data) - 1, min(count, len(data)))})
        contents = [item["content"] for item in map(data.__getitem__, picks) if "error" not in item]
        if not contents:
            raise DenseVLMError(f"{self.cfg.images}: none of {len(picks)} images spread over the source is readable")
        return model_batch(self.teacher, contents, self.size, torch.device("cpu"))

    def save(self) -> None:
        """Write ``state.pt`` (resumable) and ``last.pt`` (the student, a normal checkpoint)."""
        save_state(self.out / "state.pt", self.student, self.optimizer, self.schedule, self.scaler,
                   TrainProgress(step=self.global_step, skipped=self.skipped, history=self.history))
        meta = {"distill": self.cfg.to_dict(), "step": self.global_step}
        copy.deepcopy(self.student).cpu().eval().save(self.out / "last.pt", meta)

    def step(self, contents: list[torch.Tensor]) -> dict[str, float]:
        """One optimisation step on uint8 ``[3, h, w]`` contents: ``{"loss", "cosine", "kl", "agreement"}``."""
        cfg = self.cfg
        images = model_batch(self.student, contents, self.size, self.device)
        with torch.no_grad(), self.precision.autocast():
            target = self.teacher.encode_dense(images).float()
        self.student.train()
        with self.precision.autocast():
            dense = self.student.encode_dense(images).float()
        valid = content_tokens(contents, tuple(dense.shape[-2:]), self.student.patch_size).to(self.device)
        cos = token_cosine_loss(dense, target, valid)
        kl = token_kl_loss(dense, target, valid, self.text, self.scale)
        loss = cfg.cosine_weight * cos + cfg.kl_weight * kl
        optimizer_step(loss, self.optimizer, self.scaler, self.schedule, 1)
        self.student.eval()
        with torch.no_grad():
            agree = cosine(dense, self.text, dim=1).argmax(1) == cosine(target, self.text, dim=1).argmax(1)
        self.global_step += 1
        return {"loss": float(loss.detach()), "cosine": float(cos.detach()), "kl": float(kl.detach()),
                "agreement": float(agree[valid].float().mean())}

    def run(self) -> DistillResult:
        """Distil to ``cfg.steps``, logging every ``log_every`` steps and saving every ``save_every``."""
        import yaml
        from tqdm import tqdm

        cfg = self.cfg
        atomic_write_text(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=True))
        sampler = StepBatchSampler(len(self.source), cfg.batch_size, cfg.steps, cfg.seed, start=self.global_step)
        loader = make_loader(self.source, self.size, sampler, cfg.workers)
        bar = tqdm(total=cfg.steps, initial=self.global_step, desc="distill", disable=None if self.progress else True)
        started = time.perf_counter()
        out = {"loss": float("nan"), "agreement": float("nan")}
        for batch in loader:
            for bad in (it for it in batch if "error" in it):
                self.skipped += 1
                log.warning("skipped image: %s", bad["error"])
            contents = [it["content"] for it in batch if "error" not in it]
            if not contents:
                raise DenseVLMError(f"every image of step {self.global_step} was unreadable ({batch[0]['error']})")
            out = self.step(contents)
            bar.update()
            step = self.global_step
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {"step": step, **out, "lr": self.schedule.get_last_lr()[0], "skipped": self.skipped}
                self.history.append(row)
                bar.set_postfix(loss=f"{out['loss']:.4f}", agree=f"{out['agreement']:.3f}")
                with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
            if step % cfg.save_every == 0 and step < cfg.steps:
                self.save()
        bar.close()
        self.save()
        return DistillResult(self.out, self.global_step, out["loss"], out["agreement"],
                             time.perf_counter() - started, self.skipped, self.history)


def distill(cfg: DistillConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> DistillResult:
    """Run (or resume, from ``cfg.out/state.pt``) a distillation; see the module docstring.

    Args:
        resume: continue an earlier run in ``cfg.out`` exactly where it stopped.
        overwrite: start afresh in an existing, non-empty ``cfg.out`` (its run files are removed).
        progress: show a progress bar (on terminals only).

    Raises:
        DenseVLMError: bad settings, an existing ``cfg.out`` without ``resume``/``overwrite``,
            an unreadable teacher or image source, a teacher that is not a tiny model.
    """
    return Distiller(cfg, resume, overwrite, progress).run()
