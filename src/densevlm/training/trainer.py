"""Fine-tune a student VLM on unlabeled images with DenseVLM's decoupled alignment (or a baseline).

One step: draw this process's images (:mod:`densevlm.training.data`), cut regions (grid cells
or colour segments, optionally plus boxes around the teacher's part blobs), get targets from the frozen teacher (category retrieval) or, for
CLIPSelf, from a frozen copy of the student (crop embeddings), run the student's dense path
*through the DDP wrapper* (so gradients really are averaged across processes), and take an
AdamW step. Group means in the loss use counts summed over processes, so N processes with
batch B compute the gradient of one process with batch N*B.

Outputs in ``cfg.out``: ``last.pt`` (weight-space ensemble ``alpha * tuned + (1 - alpha) *
original``, loadable by :func:`densevlm.load_model`), ``state.pt`` (resumable state),
``metrics.jsonl``, ``retrieval.json``, ``config.yaml`` and TensorBoard events in ``tb/``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from densevlm.data.images import open_image_source
from densevlm.data.synth import default_vocabulary
from densevlm.errors import DenseVLMError
from densevlm.fileio import atomic_torch_save, atomic_write_json, atomic_write_text
from densevlm.losses.alignment import clipself_loss, decoupled_alignment_loss, thing_mass_loss
from densevlm.model import DenseModel, load_model
from densevlm.regions.sources import region_boxes
from densevlm.retrieval.teacher import (Retrieval, RetrievalStats, classify_parts, classify_regions, part_blobs,
                                       teacher_region_features)
from densevlm.training.config import TrainConfig
from densevlm.training.data import StepBatchSampler, make_loader, normalise_content
from densevlm.training.distributed import all_reduce_sum, barrier, init_distributed
from densevlm.training.optim import param_groups, warmup_cosine
from densevlm.vocab import Vocabulary, load_vocabulary

__all__ = ["train", "apply_freezing", "ensemble_state", "TrainResult", "ReviewedSet", "ReviewedTarget"]

log = logging.getLogger(__name__)


def apply_freezing(model: DenseModel, unlocked_blocks: int = -1, train_embed: bool = False, train_head: bool = False) -> list[str]:
    """Freeze everything but the top ``unlocked_blocks`` image blocks (all when -1), optionally
    the embeddings and the head; then freeze what cannot reach the dense path (e.g. the last
    EVA block's query/key projections), so DDP sees no unused parameters.

    Returns:
        Names of the trainable parameters.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    groups = model.backbone.image_groups()

    def enable(items) -> None:
        for item in items:
            params = [item] if isinstance(item, torch.nn.Parameter) else list(item.parameters())
            for p in params:
                p.requires_grad_(True)

    blocks = groups["blocks"]
    n = len(blocks) if unlocked_blocks < 0 else min(unlocked_blocks, len(blocks))
    enable(blocks[len(blocks) - n:])
    if train_embed:
        enable(groups["embed"])
    if train_head:
        enable(groups["head"])
    probe = torch.zeros(1, 3, model.patch_size * 2, model.patch_size * 2, device=model.device)
    probe.normal_(generator=torch.Generator(device=model.device).manual_seed(0))
    was_training = model.training
    model.train()
    model.encode_dense(probe).sum().backward()
    model.train(was_training)
    names = []
    for name, p in model.named_parameters():
        if p.requires_grad and p.grad is None:
            p.requires_grad_(False)
        elif p.requires_grad:
            names.append(name)
        p.grad = None
    if not names:
        raise DenseVLMError("no trainable parameters: raise --unlocked-blocks or use --train-embed / --train-head")
    return names


def ensemble_state(tuned: dict[str, torch.Tensor], original: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """Weight-space ensemble: ``alpha * tuned + (1 - alpha) * original`` for floating tensors."""
    out = {}
    for k, v in tuned.items():
        if v.is_floating_point():
            out[k] = (alpha * v.float() + (1.0 - alpha) * original[k].float()).to(v.dtype)
        else:
            out[k] = v
    return out


@dataclass
class TrainResult:
    """What a run produced."""

    out: Path
    steps: int
    final_loss: float
    wall_s: float
    skipped_images: int
    retrieval: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReviewedTarget:
    """An expert verdict on one region of a training image.

    Attributes:
        image_path: the image file (matched against the training source's files).
        width, height: the image's original size in pixels.
        box: XYXY in original pixels.
        label: vocabulary index of the accepted or corrected category; None for ``unsure``
            (the teacher decides) and for ``rejected``.
        rejected: the expert said this is not a region: it is dropped.
    """

    image_path: str
    width: int
    height: int
    box: tuple[float, float, float, float]
    label: Optional[int]
    rejected: bool = False


@dataclass
class ReviewedSet:
    """Expert verdicts and the vocabulary they refer to (which may extend the original one)."""

    vocab: Vocabulary
    targets: list[ReviewedTarget]
    smoothing: float = 0.05


@dataclass
class _Targets:
    """Per-image training targets, kept in the teacher cache."""

    boxes: torch.Tensor  # [N, 4] content pixels
    retrieval: Optional[Retrieval] = None  # densevlm family
    crop_emb: Optional[torch.Tensor] = None  # clipself
    weights: Optional[torch.Tensor] = None  # [N] loss weights (reviewed regions)


def _resolve_amp(amp: str, device: torch.device) -> tuple[bool, Optional[torch.dtype]]:
    if amp == "off" or (amp == "auto" and device.type == "cpu"):
        return False, None
    if amp == "bf16" or (amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return True, torch.bfloat16
    if device.type != "cuda":
        raise DenseVLMError("--amp fp16 needs a GPU; use bf16 or off on the CPU")
    return True, torch.float16


class _Run:
    """State of one training run (kept small: everything else is derived)."""

    def __init__(self, cfg: TrainConfig, resume: bool, progress: bool, validate: Optional[Callable] = None,
                 reviewed: Optional[ReviewedSet] = None) -> None:
        cfg.check()
        self.cfg = cfg
        device_name = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.rank, self.world = init_distributed(device_name)
        if device_name == "cuda" and self.world > 1:
            import os

            device_name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        self.device = torch.device(device_name)
        self.progress = progress and self.rank == 0
        self.validate = validate
        self.out = Path(cfg.out)
        if self.rank == 0:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DenseVLMError(f"{self.out}: cannot create the run directory ({e.strerror})") from None
        torch.manual_seed(cfg.seed)
        self.vocab = load_vocabulary(cfg.vocab) if cfg.vocab else default_vocabulary()
        if reviewed is not None:
            self.vocab = reviewed.vocab
        self.class_is_thing = torch.tensor(self.vocab.is_thing)
        self.student = load_model(cfg.student, cfg.student_pretrained, self.device, input_size=cfg.size)
        self.size = cfg.size or self.student.input_size
        self.original = {k: v.detach().clone() for k, v in self.student.backbone.clip.state_dict().items()}
        if cfg.method == "clipself":
            self.teacher = copy.deepcopy(self.student).eval()
        else:
            self.teacher = load_model(cfg.teacher, cfg.teacher_pretrained, self.device)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.frozen = None  # frozen copy of the student, for a CLIPSelf term beside the KL
        if cfg.method != "clipself" and cfg.clipself_weight > 0:
            self.frozen = copy.deepcopy(self.student).eval()
            for p in self.frozen.parameters():
                p.requires_grad_(False)
        with torch.no_grad():
            self.text_student = self.student.embed_vocabulary(self.vocab).float().to(self.device)
            self.text_teacher = self.teacher.embed_vocabulary(self.vocab).float().to(self.device)
        self.tau = float(cfg.tau or self.teacher.logit_scale)
        self.trainable = apply_freezing(self.student, cfg.unlocked_blocks, cfg.train_embed, cfg.train_head)
        self.student.train()
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.student, device_ids=ids, broadcast_buffers=False)
        else:
            self.forward = self.student
        self.optimizer = torch.optim.AdamW(param_groups(self.student, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas))
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, cfg.steps, cfg.warmup_steps)
        )
        self.amp, self.amp_dtype = _resolve_amp(cfg.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.source = open_image_source(cfg.images)
        self.reviewed = _match_reviewed(reviewed, self.source) if reviewed is not None else {}
        self.smoothing = reviewed.smoothing if reviewed is not None else 0.0
        self.cache: dict[int, _Targets] = {}
        self.stats = RetrievalStats(self.vocab.names)
        self.epoch_stats: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.skipped = 0
        self.step = 0
        if resume:
            self._load_state()

    # ---- persistence ----------------------------------------------------------------------
    def _load_state(self) -> None:
        path = self.out / "state.pt"
        if not path.is_file():
            log.info("no %s yet: starting from step 0", path)
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.student.backbone.clip.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.skipped = int(state["skipped"])
        self.history = json.loads(state["history"])
        log.info("resumed %s at step %d", path, self.step)

    def save(self, final: bool = False) -> None:
        if self.rank != 0:
            return
        clip_state = {k: v.detach().cpu() for k, v in self.student.backbone.clip.state_dict().items()}
        state = {
            "model": clip_state,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
            "step": self.step,
            "skipped": self.skipped,
            "history": json.dumps(self.history),
        }
        atomic_torch_save(state, self.out / "state.pt")
        self.export_model(self.out / "last.pt")
        if final:
            atomic_write_json(self.out / "retrieval.json", {"overall": self.stats.summary(), "epochs": self.epoch_stats})

    def ensembled_model(self) -> DenseModel:
        tuned = {k: v.detach().cpu() for k, v in self.student.backbone.clip.state_dict().items()}
        model = copy.deepcopy(self.student).cpu().eval()
        model.backbone.clip.load_state_dict(ensemble_state(tuned, {k: v.cpu() for k, v in self.original.items()}, self.cfg.alpha))
        return model

    def export_model(self, path: Path) -> None:
        meta = {"train": self.cfg.to_dict(), "step": self.step, "alpha": self.cfg.alpha}
        self.ensembled_model().save(path, meta)

    # ---- targets ----------------------------------------------------------------------------
    def _regions(self, index: int, step: int, content: torch.Tensor) -> torch.Tensor:
        key = [self.cfg.seed, index] if self.cfg.cache_teacher else [self.cfg.seed, step, index]
        rng = np.random.default_rng(key)
        return region_boxes(self.cfg.regions, content.float() / 255.0, rng, self.cfg.max_boxes)

    def _model_input(self, model: DenseModel, contents: list[torch.Tensor]) -> torch.Tensor:
        """uint8 contents -> ``[B, 3, S, S]`` normalised and padded for ``model``."""
        m, sd, p = model.spec.mean, model.spec.std, model.patch_size
        return torch.stack([normalise_content(c, m, sd, self.size, p) for c in contents]).to(self.device)

    def targets(self, items: list[dict[str, Any]], step: int) -> list[_Targets]:
        """Targets of each image, from the cache or computed with the frozen teacher."""
        if not self.cfg.cache_teacher:
            return self._compute_targets(items, step)
        missing = [it for it in items if it["index"] not in self.cache]
        if missing:
            for it, t in zip(missing, self._compute_targets(missing, step)):
                self.cache[it["index"]] = t
        return [self.cache[it["index"]] for it in items]

    def _compute_targets(self, items: list[dict[str, Any]], step: int) -> list[_Targets]:
        """Regions of each image and the frozen models' verdicts on them (on the CPU)."""
        contents = [it["content"] for it in items]
        boxes = [self._reviewed_boxes(it) if it["index"] in self.reviewed else self._regions(it["index"], step, it["content"])
                 for it in items]
        counts = [b.shape[0] for b in boxes]
        on_device = [b.to(self.device) for b in boxes]
        images = self._model_input(self.teacher, contents)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp):
            if self.cfg.method == "clipself":
                emb = teacher_region_features(self.teacher, images, on_device, "crop").float().cpu()
                return [_Targets(b, crop_emb=e) for b, e in zip(boxes, emb.split(counts))]
            dense_map = self.teacher.encode_dense(images) if self.cfg.teacher_parts > 0 else None
            feats = teacher_region_features(self.teacher, images, on_device, self.cfg.retrieval_features,
                                            dense_map=dense_map)
            feats = tuple(f.float() for f in feats) if isinstance(feats, tuple) else feats.float()
            r = classify_regions(feats, self.text_teacher, self.class_is_thing, self.tau, self.cfg.threshold,
                                 self.cfg.retrieval_features).cpu()
            per_image, start = [], 0
            for n in counts:
                per_image.append(r.select(torch.arange(start, start + n)))
                start += n
            if self.cfg.teacher_parts > 0:
                boxes, per_image = self._add_teacher_parts(items, dense_map, boxes, per_image)
                counts = [b.shape[0] for b in boxes]
                on_device = [b.to(self.device) for b in boxes]
            crops = None
            if self.frozen is not None:
                own = self._model_input(self.frozen, contents)
                crops = teacher_region_features(self.frozen, own, on_device, "crop").float().cpu().split(counts)
        targets = []
        for i, (it, b) in enumerate(zip(items, boxes)):
            t = _Targets(b, retrieval=per_image[i], crop_emb=crops[i] if crops is not None else None)
            if it["index"] in self.reviewed:
                self._apply_verdicts(t, self.reviewed[it["index"]])
            targets.append(t)
        return targets

    def _add_teacher_parts(self, items: list[dict[str, Any]], dense_map: torch.Tensor, boxes: list[torch.Tensor],
                           per_image: list[Retrieval]) -> tuple[list[torch.Tensor], list[Retrieval]]:
        """Append boxes around the teacher's part blobs (taught as things) to each unreviewed image.

        Args:
            dense_map: the teacher's ``[B, C, h, w]`` dense map of these images.
        """
        p = self.teacher.patch_size
        sizes = [it["content"].shape[-2:] for it in items]
        valid = [((h + p - 1) // p, (w + p - 1) // p) for h, w in sizes]
        blobs = part_blobs(dense_map, self.text_teacher, self.class_is_thing, valid, self.cfg.teacher_parts)
        out_boxes, out_retrieval = [], []
        for it, b, r, (h, w), (blob_boxes, blob_feats) in zip(items, boxes, per_image, sizes, blobs):
            if it["index"] in self.reviewed or blob_boxes.shape[0] == 0:
                out_boxes.append(b)
                out_retrieval.append(r)
                continue
            extra = blob_boxes * p
            extra[:, 0::2] = extra[:, 0::2].clamp(max=float(w))
            extra[:, 1::2] = extra[:, 1::2].clamp(max=float(h))
            parts = classify_parts(blob_feats, self.text_teacher, self.class_is_thing, self.tau).cpu()
            out_boxes.append(torch.cat([b, extra]))
            out_retrieval.append(Retrieval.cat([r, parts]))
        return out_boxes, out_retrieval

    def _reviewed_boxes(self, item: dict[str, Any]) -> torch.Tensor:
        verdicts = self.reviewed[item["index"]]
        scale = item["content"].shape[-1] / verdicts[0].width
        return torch.tensor([v.box for v in verdicts], dtype=torch.float32).reshape(-1, 4) * scale

    def _apply_verdicts(self, targets: _Targets, verdicts: list[ReviewedTarget]) -> None:
        """Expert labels replace the teacher's: a near one-hot target, the section of the
        category decides thing/stuff, rejected regions are dropped, unsure ones keep the teacher's."""
        r = targets.retrieval
        k = len(self.vocab)
        weights = torch.ones(len(verdicts))
        for j, v in enumerate(verdicts):
            if v.rejected:
                r.kept[j] = False
            elif v.label is not None:
                probs = torch.full((k,), self.smoothing / max(1, k - 1))
                probs[v.label] = 1.0 - self.smoothing if k > 1 else 1.0
                r.probs[j] = probs
                r.logits[j] = probs.clamp_min(1e-8).log()
                r.label[j] = v.label
                r.confidence[j] = probs[v.label]
                r.is_thing[j] = bool(self.class_is_thing[v.label])
                r.kept[j] = True
                weights[j] = self.cfg.reviewed_weight
        targets.weights = weights

    # ---- the step ---------------------------------------------------------------------------
    def train_step(self, items: list[dict[str, Any]]) -> dict[str, float]:
        cfg = self.cfg
        targets = self.targets(items, self.step)
        s = self.student
        images = self._model_input(s, [it["content"] for it in items])
        if cfg.method == "clipself":
            boxes = [t.boxes for t in targets]
            target_emb = torch.cat([t.crop_emb for t in targets]).to(self.device)
            (n_all,) = all_reduce_sum([float(target_emb.shape[0])])
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp):
                feats = self.forward(images, [b.to(self.device) for b in boxes])
            loss = clipself_loss(feats, target_emb, count=n_all)
            stats = {"kept_frac": 1.0, "thing_frac": None}
            n_regions = int(target_emb.shape[0])
        else:
            r = Retrieval.cat([t.retrieval for t in targets])
            batch_stats = self.stats.update(r)
            boxes = [t.boxes[t.retrieval.kept] for t in targets]
            region_weights = torch.cat([t.weights if t.weights is not None else torch.ones(len(t.retrieval)) for t in targets])
            kept = r.select(r.kept)
            kept_weights = region_weights[r.kept]
            thing = kept.is_thing
            counts = all_reduce_sum([float(kept_weights[thing].sum()), float(kept_weights[~thing].sum())])
            if counts[0] + counts[1] == 0:
                self.schedule.step()
                return {"loss": float("nan"), "regions": 0.0, **batch_stats}
            if cfg.method == "nodecouple":
                counts = [counts[0] + counts[1], 0.0]
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp):
                feats = self.forward(images, [b.to(self.device) for b in boxes])
            student_logits = self.tau * feats.float() @ self.text_student.t()
            loss = decoupled_alignment_loss(
                student_logits, kept.logits.to(self.device), thing, self.class_is_thing, cfg.method, tuple(counts),
                kept_weights.to(self.device), cfg.thing_weight,
            )
            if cfg.thing_mass_weight > 0 and counts[0] > 0:
                on_things = thing.to(self.device)
                loss = loss + cfg.thing_mass_weight * thing_mass_loss(
                    student_logits[on_things], self.class_is_thing, counts[0], kept_weights[thing].to(self.device))
            if self.frozen is not None:
                crops = torch.cat([t.crop_emb[t.retrieval.kept] for t in targets]).to(self.device)
                on_things = thing.to(self.device)
                (n_thing,) = all_reduce_sum([float(on_things.sum())])
                if n_thing > 0:
                    loss = loss + cfg.clipself_weight * clipself_loss(feats[on_things], crops[on_things], count=n_thing)
            stats = batch_stats
            n_regions = int(r.kept.sum())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss * self.world).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        (global_loss, global_regions) = all_reduce_sum([float(loss.detach()), float(n_regions)])
        return {"loss": global_loss, "regions": global_regions, **stats}

    def run(self) -> TrainResult:
        from tqdm import tqdm

        cfg = self.cfg
        if self.rank == 0:
            import yaml

            atomic_write_text(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=True))
        writer = _tensorboard(self.out / "tb") if self.rank == 0 else None
        sampler = StepBatchSampler(len(self.source), cfg.batch_size, cfg.steps, cfg.seed, self.rank, self.world, self.step)
        loader = make_loader(self.source, self.size, sampler, cfg.workers)
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.method}", disable=None if self.progress else True)
        if self.validate is not None and self.step == 0 and cfg.val_before:
            self._validate(writer, before=True)
        started = time.perf_counter()
        window_regions, window_start = 0.0, time.perf_counter()
        epoch_size = max(1, math.ceil(len(self.source) / (cfg.batch_size * self.world)))
        last_loss = float("nan")
        for batch in loader:
            items = [it for it in batch if "error" not in it]
            for bad in (it for it in batch if "error" in it):
                self.skipped += 1
                log.warning("skipped image: %s", bad["error"])
            if not items:
                raise DenseVLMError(f"every image of step {self.step} was unreadable ({batch[0]['error']})")
            out = self.train_step(items)
            self.step += 1
            last_loss = out["loss"]
            window_regions += out["regions"]
            bar.update()
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                rate = window_regions / max(1e-9, time.perf_counter() - window_start)
                window_regions, window_start = 0.0, time.perf_counter()
                row = {"step": self.step, "loss": last_loss, "lr": self.schedule.get_last_lr()[0], "regions_per_s": rate,
                       "kept_frac": out["kept_frac"], "thing_frac": out["thing_frac"], "skipped": self.skipped}
                self.history.append(row)
                bar.set_postfix(loss=f"{last_loss:.4f}", reg_s=f"{rate:.0f}", kept=f"{out['kept_frac']:.2f}")
                if self.rank == 0:
                    _append_jsonl(self.out / "metrics.jsonl", row)
                    if writer is not None:
                        for k, v in row.items():
                            if k != "step" and isinstance(v, (int, float)) and not math.isnan(v):
                                writer.add_scalar(f"train/{k}", v, self.step)
            if cfg.method != "clipself" and self.step % epoch_size == 0:
                self.epoch_stats.append({"step": self.step, **self.stats.summary()})
            if self.validate is not None and cfg.val_every and self.step % cfg.val_every == 0 and self.step < cfg.steps:
                self._validate(writer)
            if self.step % cfg.save_every == 0 and self.step < cfg.steps:
                self.save()
        bar.close()
        self.save(final=True)
        if self.validate is not None:
            self._validate(writer, final=True)
        barrier()
        if writer is not None:
            writer.close()
        return TrainResult(self.out, self.step, last_loss, time.perf_counter() - started, self.skipped,
                           self.stats.summary(), self.history)

    def _validate(self, writer, before: bool = False, final: bool = False) -> None:
        if self.rank == 0:
            model = copy.deepcopy(self.student).cpu().eval() if before else self.ensembled_model()
            full = self.validate(model)
            if before or final:
                atomic_write_json(self.out / ("eval_before.json" if before else "eval.json"), full)
            metrics = {k: v for k, v in full.items() if isinstance(v, (int, float))}
            _append_jsonl(self.out / "metrics.jsonl", {"step": self.step, "val": metrics})
            if writer is not None:
                for k, v in metrics.items():
                    if isinstance(v, float) and not math.isnan(v):
                        writer.add_scalar(f"val/{k}", v, self.step)
        barrier()


def _match_reviewed(reviewed: ReviewedSet, source) -> dict[int, list[ReviewedTarget]]:
    """Group verdicts by the index of their image in the training source (by resolved path)."""
    from densevlm.data.images import FileListSource

    if not isinstance(source, FileListSource):
        raise DenseVLMError("--reviewed needs --images to be a folder (the reviewed images are files)")
    index = {str(Path(p).resolve()): i for i, p in enumerate(source.files)}
    out: dict[int, list[ReviewedTarget]] = {}
    unmatched = 0
    for t in reviewed.targets:
        i = index.get(str(Path(t.image_path).resolve()))
        if i is None:
            unmatched += 1
        else:
            out.setdefault(i, []).append(t)
    if unmatched:
        log.warning("%d reviewed regions are on images outside --images; they are not used", unmatched)
    log.info("%d reviewed regions on %d training images", sum(len(v) for v in out.values()), len(out))
    return out


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=float) + "\n")


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))


def train(
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    validate: Optional[Callable[[DenseModel], dict[str, Any]]] = None,
    reviewed: Optional[ReviewedSet] = None,
) -> TrainResult:
    """Run (or resume) a training run; see the module docstring.

    Args:
        validate: called with a model (rank 0 only) before training (``eval_before.json``),
            every ``cfg.val_every`` steps and at the end (``eval.json``, the ensembled model);
            returns evaluation JSON whose numbers go to ``metrics.jsonl`` and TensorBoard.
        reviewed: expert verdicts; their regions replace the sampled regions of their images.
    """
    return _Run(cfg, resume, progress, validate, reviewed).run()
