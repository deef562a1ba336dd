"""Fine-tune a student VLM on unlabeled images with DenseVLM's decoupled alignment (or a baseline).

One step: draw this process's images (:mod:`densevlm.training.data`), cut regions (grid cells
or colour segments, optionally plus boxes around the teacher's part blobs), get targets from the
frozen teacher (category retrieval) or, for CLIPSelf, from a frozen copy of the student (crop
embeddings) (:mod:`densevlm.training.targets`), run the student's dense path through the DDP
wrapper and take an AdamW step (:mod:`densevlm.training.step`).

Outputs in ``cfg.out``: ``last.pt`` (weight-space ensemble ``alpha * tuned + (1 - alpha) *
original``, loadable by :func:`densevlm.load_model`), ``state.pt`` (resumable state; both in
:mod:`densevlm.training.checkpoints`), ``metrics.jsonl``, ``retrieval.json``, ``config.yaml``
and TensorBoard events in ``tb/``.

    >>> trainer = Trainer(cfg, progress=False)
    >>> trainer.step(items)          # one optimisation step on decoded images
    >>> result = trainer.run()       # the whole run, with logging, validation and checkpoints

Resume is exact: a run killed at any point and resumed from its last ``state.pt`` ends with the
same weights, ``metrics.jsonl`` rows, TensorBoard scalars and ``retrieval.json`` as one that was
never interrupted (rows logged after the last checkpoint are dropped; teacher targets are
recomputed in the batches the interrupted run used, see :mod:`densevlm.training.targets`).

Test hook: with the environment variable ``DENSEVLM_TEST_KILL_AT_STEP=N`` the process sends
itself SIGKILL right after step ``N`` (its logging and any checkpoint included), so a test can
interrupt a run at an exact point rather than by timing.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from densevlm.data.images import open_image_source
from densevlm.data.synth import default_vocabulary
from densevlm.errors import DenseVLMError
from densevlm.fileio import atomic_write_json, atomic_write_text
from densevlm.model import DenseModel, load_model
from densevlm.retrieval.teacher import RetrievalStats
from densevlm.review.reviewed import ReviewedSet
from densevlm.training.checkpoints import TrainProgress, ensembled_model, load_state, save_state
from densevlm.training.config import TrainConfig
from densevlm.training.data import ContentDataset, StepBatchSampler, make_loader, model_batch
from densevlm.training.distributed import all_reduce_sum, barrier, init_distributed
from densevlm.training.optim import adamw_warmup_cosine, apply_freezing
from densevlm.training.precision import resolve_precision
from densevlm.training.step import alignment_step_loss, clipself_step_loss, optimizer_step
from densevlm.training.targets import TargetBuilder, match_reviewed
from densevlm.vocab import load_vocabulary

__all__ = ["Trainer", "TrainResult", "train", "KILL_AT_STEP"]

log = logging.getLogger(__name__)

Validator = Callable[[DenseModel], dict[str, Any]]

KILL_AT_STEP = "DENSEVLM_TEST_KILL_AT_STEP"
"""Environment variable of the test hook (see the module docstring)."""


@dataclass
class TrainResult:
    """What a run produced."""

    out: Path
    steps: int
    final_loss: float  # of the last step whose teacher kept a region
    wall_s: float
    skipped_images: int
    retrieval: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """One training run: its models, optimizer, targets and progress.

    Args: as :func:`train` (``resume``: continue from ``cfg.out/state.pt`` when it exists).

    Attributes:
        student, teacher: the tuned model and the frozen one (``clipself``: a copy of the student).
        text_student, text_teacher, class_is_thing: ``[K, C]`` class embeddings, ``[K]`` bool.
        targets: per-image targets (:class:`~densevlm.training.targets.TargetBuilder`).
        global_step: optimisation steps taken so far.
    """

    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True,
                 validate: Optional[Validator] = None, reviewed: Optional[ReviewedSet] = None) -> None:
        cfg.check()
        self.cfg = cfg
        device_name = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.rank, self.world = init_distributed(device_name)
        if device_name == "cuda" and self.world > 1:
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
        _warn_one_sided(cfg, self.vocab.is_thing)
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
        if reviewed is not None and cfg.reviewed_embeddings == "few-shot":
            from densevlm.training.fewshot import reviewed_class_embeddings

            self.text_student = reviewed_class_embeddings(self.student, self.vocab, reviewed.regions).to(self.device)
        self.logit_scale = float(cfg.logit_scale or self.teacher.logit_scale)
        self.trainable = apply_freezing(self.student, cfg.unlocked_blocks, cfg.train_embed, cfg.train_head)
        self.student.train()
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.student, device_ids=ids, broadcast_buffers=False)
        else:
            self.forward = self.student
        self.optimizer, self.schedule = adamw_warmup_cosine(self.student, cfg.lr, cfg.weight_decay, cfg.steps,
                                                            cfg.warmup_steps, betas=tuple(cfg.betas))
        self.precision = resolve_precision(cfg.amp, self.device)
        self.scaler = self.precision.grad_scaler()
        self.source = open_image_source(cfg.images)
        self.targets = TargetBuilder(
            cfg, self.teacher, self.frozen, self.text_teacher, self.class_is_thing, self.logit_scale, self.size, self.precision,
            match_reviewed(reviewed, self.source) if reviewed is not None else {},
            reviewed.smoothing if reviewed is not None else 0.0, int(self.student.patch_size),
        )
        self.stats = RetrievalStats(self.vocab.names)
        self.epoch_stats: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.skipped = 0
        self.global_step = 0
        self.resumed = False
        if resume:
            restored = load_state(self.out / "state.pt", self.student, self.optimizer, self.schedule, self.scaler,
                                  cfg.steps)
            if restored is not None:
                self._restore(restored)

    def _restore(self, p: TrainProgress) -> None:
        self.resumed = True
        self.global_step, self.skipped, self.history, self.epoch_stats = p.step, p.skipped, p.history, p.epoch_stats
        for k in ("total", "kept", "things"):
            setattr(self.stats, k, int(p.stats.get(k, 0)))
        self.stats.categories.update(p.stats.get("categories", {}))
        sampler = self._sampler()
        self.targets.resume_at(p.step, len(self.source), sampler.indices, ContentDataset(self.source, self.size).__getitem__)
        if self.rank == 0:
            _truncate_jsonl(self.out / "metrics.jsonl", p.step)

    def _sampler(self) -> StepBatchSampler:
        cfg = self.cfg
        return StepBatchSampler(len(self.source), cfg.batch_size, cfg.steps, cfg.seed, self.rank, self.world,
                                self.global_step)

    def _progress(self) -> TrainProgress:
        stats = {"total": self.stats.total, "kept": self.stats.kept, "things": self.stats.things,
                 "categories": dict(self.stats.categories)}
        return TrainProgress(self.global_step, self.skipped, self.history, stats, self.epoch_stats)

    # ---- checkpoints ------------------------------------------------------------------------
    def save(self, final: bool = False) -> None:
        """Write ``state.pt`` and ``last.pt`` (and ``retrieval.json`` when ``final``); rank 0 only."""
        if self.rank != 0:
            return
        save_state(self.out / "state.pt", self.student, self.optimizer, self.schedule, self.scaler, self._progress())
        meta = {"train": self.cfg.to_dict(), "step": self.global_step, "alpha": self.cfg.alpha}
        ensembled_model(self.student, self.original, self.cfg.alpha).save(self.out / "last.pt", meta)
        if final:
            atomic_write_json(self.out / "retrieval.json", {"overall": self.stats.summary(), "epochs": self.epoch_stats})

    # ---- the step ---------------------------------------------------------------------------
    def step(self, items: list[dict[str, Any]]) -> dict[str, float]:
        """One optimisation step on this process's decoded images (``index`` and uint8 ``content``).

        Returns the loss and region count summed over processes, with the targets' ``kept_frac``
        and ``thing_frac``; the loss is None (and only the schedule steps) when no region carries weight.
        """
        cfg = self.cfg
        targets = self.targets(items, self.global_step)
        images = model_batch(self.student, [it["content"] for it in items], self.size, self.device)
        if cfg.method == "clipself":
            out = clipself_step_loss(self.forward, images, targets, self.precision)
        else:
            out = alignment_step_loss(cfg, self.forward, images, targets, self.text_student, self.class_is_thing,
                                      self.logit_scale, self.stats, self.precision, with_crops=self.frozen is not None)
        if out.loss is None:
            with warnings.catch_warnings():  # stepping the schedule alone is meant: the step's LR is spent unused
                warnings.simplefilter("ignore", UserWarning)
                self.schedule.step()
            totals = {"loss": None, "regions": 0.0}
        else:
            optimizer_step(out.loss, self.optimizer, self.scaler, self.schedule, self.world)
            (global_loss, global_regions) = all_reduce_sum([float(out.loss.detach()), float(out.regions)])
            totals = {"loss": global_loss, "regions": global_regions}
        self.global_step += 1
        return {**totals, **out.stats}

    # ---- the loop ---------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train to ``cfg.steps`` with logging, validation and checkpoints; see the module docstring."""
        from tqdm import tqdm

        cfg = self.cfg
        if self.rank == 0:
            import yaml

            atomic_write_text(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=True))
        # a resumed run drops the events logged after its checkpoint (TensorBoard's purge_step)
        writer = _tensorboard(self.out / "tb", self.global_step + 1 if self.resumed else None) if self.rank == 0 else None
        loader = make_loader(self.source, self.size, self._sampler(), cfg.workers)
        kill_at = int(os.environ.get(KILL_AT_STEP, "0") or 0)
        bar = tqdm(total=cfg.steps, initial=self.global_step, desc=f"train {cfg.method}",
                   disable=None if self.progress else True)
        if self.validate is not None and self.global_step == 0 and cfg.val_before:
            self._validate(writer, before=True)
        started = time.perf_counter()
        window_regions, window_start = 0.0, time.perf_counter()
        epoch_size = max(1, math.ceil(len(self.source) / (cfg.batch_size * self.world)))
        last_loss, learned = None, any(row.get("loss") is not None for row in self.history)
        for batch in loader:
            items = [it for it in batch if "error" not in it]
            for bad in (it for it in batch if "error" in it):
                self.skipped += 1
                log.warning("skipped image: %s", bad["error"])
            if not items:
                raise DenseVLMError(f"every image of step {self.global_step} was unreadable ({batch[0]['error']})")
            out = self.step(items)
            step = self.global_step
            if out["loss"] is not None and not math.isfinite(out["loss"]):
                raise DenseVLMError(
                    f"{self.out}: training diverged at step {step} (the loss is {out['loss']}); stopped before logging "
                    "or saving it, the last checkpoint stays; lower --lr and resume, or start again")
            if out["loss"] is not None:
                last_loss, learned = out["loss"], True
            window_regions += out["regions"]
            bar.update()
            if step % cfg.log_every == 0 or step == cfg.steps:
                rate = window_regions / max(1e-9, time.perf_counter() - window_start)
                window_regions, window_start = 0.0, time.perf_counter()
                row = {"step": step, "loss": out["loss"], "lr": self.schedule.get_last_lr()[0], "regions_per_s": rate,
                       "kept_frac": out["kept_frac"], "thing_frac": out["thing_frac"], "skipped": self.skipped}
                self.history.append(row)
                bar.set_postfix(loss="-" if out["loss"] is None else f"{out['loss']:.4f}", reg_s=f"{rate:.0f}",
                                kept=f"{out['kept_frac']:.2f}")
                if self.rank == 0:
                    _append_jsonl(self.out / "metrics.jsonl", row)
                    if writer is not None:
                        for k, v in row.items():
                            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                                writer.add_scalar(f"train/{k}", v, step)
            if cfg.method != "clipself" and step % epoch_size == 0:
                self.epoch_stats.append({"step": step, **self.stats.summary()})
            if self.validate is not None and cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps:
                self._validate(writer)
            if step % cfg.save_every == 0 and step < cfg.steps:
                self.save()
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        bar.close()
        self.save(final=True)
        if not learned:
            raise DenseVLMError(_nothing_learned(cfg, self.vocab.names))
        if self.validate is not None:
            self._validate(writer, final=True)
        barrier()
        if writer is not None:
            writer.close()
        if last_loss is None:
            last_loss = next(row["loss"] for row in reversed(self.history) if row.get("loss") is not None)
        return TrainResult(self.out, self.global_step, last_loss, time.perf_counter() - started, self.skipped,
                           self.stats.summary(), self.history)

    def _validate(self, writer, before: bool = False, final: bool = False) -> None:
        if self.rank == 0:
            model = (copy.deepcopy(self.student).cpu().eval() if before
                     else ensembled_model(self.student, self.original, self.cfg.alpha))
            full = self.validate(model)
            if before or final:
                atomic_write_json(self.out / ("eval_before.json" if before else "eval.json"), full)
            metrics = {k: v for k, v in full.items() if isinstance(v, (int, float))}
            _append_jsonl(self.out / "metrics.jsonl", {"step": self.global_step, "val": metrics})
            if writer is not None:
                for k, v in metrics.items():
                    if isinstance(v, float) and not math.isnan(v):
                        writer.add_scalar(f"val/{k}", v, self.global_step)
        barrier()


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=float) + "\n")


def _truncate_jsonl(path: Path, step: int) -> None:
    """Drop the rows of ``path`` logged after ``step`` (by a run killed after its last checkpoint)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if _row_step(line) <= step]
    if len(kept) < len(lines):
        atomic_write_text(path, "".join(kept))


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 0  # not a row of ours: keep it


def _tensorboard(path: Path, purge_step: Optional[int] = None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path), purge_step=purge_step)


def _warn_one_sided(cfg: TrainConfig, is_thing: list[bool]) -> None:
    """Warn when the vocabulary has only things or only stuff: the decoupled loss then has one group."""
    if cfg.method not in ("densevlm", "stuffonly") or (any(is_thing) and not all(is_thing)):
        return
    has, lacks = ("things", "stuff") if all(is_thing) else ("stuff", "things")
    log.warning("%s: every class is %s (no %s), so --method %s has nothing to decouple and trains like "
                "--method nodecouple; add %s classes to the vocabulary to use the decoupled loss",
                cfg.vocab or "the default vocabulary", "a thing" if has == "things" else "stuff", lacks, cfg.method, lacks)


def _nothing_learned(cfg: TrainConfig, names: list[str]) -> str:
    """The one line that says why a run learned nothing: the teacher kept no region."""
    return (f"{cfg.out}: nothing was learned: in all {cfg.steps} steps the teacher kept no region (every region's top "
            f"class probability was under --threshold {cfg.threshold}); the teacher ({cfg.teacher}) may be untrained "
            f"or not match the {len(names)} classes of {cfg.vocab or 'the default vocabulary'}; lower --threshold or "
            "check --teacher and --vocab")


def train(
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    validate: Optional[Validator] = None,
    reviewed: Optional[ReviewedSet] = None,
) -> TrainResult:
    """Run (or resume) a training run; see the module docstring.

    Args:
        validate: called with a model (rank 0 only) before training (``eval_before.json``),
            every ``cfg.val_every`` steps and at the end (``eval.json``, the ensembled model);
            returns evaluation JSON whose numbers go to ``metrics.jsonl`` and TensorBoard.
        reviewed: expert verdicts; their regions replace the sampled regions of their images.
    """
    return Trainer(cfg, resume, progress, validate, reviewed).run()
