"""The training configuration: one frozen-after-checks dataclass, readable from YAML, written beside every run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

from densevlm.errors import DenseVLMError, nearest_names
from densevlm.losses.alignment import METHODS
from densevlm.training.precision import AMP_CHOICES

__all__ = ["PAPER_SETTINGS", "PATH_SETTINGS", "RESUME_MAY_CHANGE", "TrainConfig", "absolute_paths", "check_run",
           "load_config_file", "resumed_settings"]

REGION_SOURCES = ("grid", "segments", "mixed")

PAPER_SETTINGS: dict[str, Any] = {"teacher_parts": 0, "thing_tokens": 0, "thing_mass_weight": 0.0, "steps": 300,
                                  "alpha": 0.9}
"""The settings the defaults replace, for DenseVLM as the paper runs it (and for the method table's
paper rows and the demo's CLIPSelf baseline): no part-blob or thing-token regions, no thing-mass
term, 300 steps, the weight-space ensemble at 0.9. ``TrainConfig(**PAPER_SETTINGS)`` is that run."""


@dataclass
class TrainConfig:
    """Settings of a DenseVLM (or baseline) fine-tuning run.

    The defaults are DenseVLM's best settings on the embedded world with the default teacher
    ``tiny-teacher-l`` (``configs/embedded.yaml``; BENCHMARKS.md, method table): boxes around the
    teacher's part blobs (``teacher_parts`` 5), the teacher's thing tokens (``thing_tokens`` 64),
    the thing-mass term (0.4), 800 steps, no weight-space ensemble. :data:`PAPER_SETTINGS` gives
    the paper's.

    Attributes:
        student, teacher: model names or checkpoint files (``*_pretrained``: tag or file for
            open_clip names). The teacher is unused by ``clipself`` (its target is a frozen copy
            of the student).
        images: unlabeled images (folder, world dir, COCO JSON or tar shards).
        vocab: vocabulary file; None = the embedded world's.
        method: ``densevlm``, ``clipself``, ``nodecouple`` or ``stuffonly``.
        out: run directory (``last.pt``, ``state.pt``, ``metrics.jsonl``, ``config.yaml``).
        steps, batch_size: optimisation steps and images per step *per process*.
        lr, weight_decay, betas, warmup_steps: AdamW with linear warm-up then cosine decay. The
            defaults suit the embedded world's tiny models (the default 800 steps: about two
            minutes on 2 CPU cores, the demo's DenseVLM stage 91-145 s);
            the paper fine-tunes EVA02-B/16 with lr 1e-5.
        size: longest input side (default: the student's native size).
        regions: ``grid`` (the paper's 17 splits), ``segments`` (colour superpixels) or ``mixed``.
        max_boxes: regions per image (a random subset of the cells).
        teacher_parts: add up to this many regions per image around the teacher's part blobs
            (connected tokens of its dense map whose top class is a thing), taught as things
            with the blob's mask-pooled naming (:func:`~densevlm.retrieval.teacher.part_blobs`).
        thing_tokens: add this many single-token regions per image, drawn at random among the
            student's token cells (:func:`~densevlm.regions.sources.token_boxes`), and keep those
            the teacher calls things (above the threshold): the teacher's token-level verdicts
            on defects a token wide, which no grid cell isolates. Token cells it calls stuff are
            dropped (taught, they cost about 1.3 points of box thing mAcc; BENCHMARKS.md). Not
            used by ``clipself``.
        retrieval_features, logit_scale, threshold: the teacher's region features (``crop``, ``dense``,
            ``mean``, ``split``), the cosines' multiplier (None = the teacher's own logit scale; ``tau``
            in older config files) and confidence threshold.
        thing_weight: multiplier of the thing term of the decoupled loss.
        thing_mass_weight: add this times ``-log P(thing section)`` of the student on regions
            the teacher calls things (:func:`~densevlm.losses.alignment.thing_mass_loss`):
            the decoupled loss alone never says such a region is a part and not a surface.
        clipself_weight: add this times a CLIPSelf term on the regions the teacher calls things
            (the student's RoI feature against a frozen copy's crop embedding): the student keeps
            what its own global embedding knows about parts, beyond the teacher's knowledge.
        alpha: weight-space ensemble on save: ``alpha * tuned + (1 - alpha) * original``.
        unlocked_blocks: image blocks trained, counted from the top (-1 = all).
        train_embed, train_head: also train patch/position embeddings, final norm + projection.
        amp: ``auto`` (bf16 on GPUs that support it, fp16 + GradScaler on other GPUs; on the
            CPU off, or bf16 with ``DENSEVLM_CPU_BF16=1`` where it is measured to be fast:
            :mod:`densevlm.training.precision`), ``off``, ``bf16`` or ``fp16``.
        cache_teacher: draw each image's regions once and keep the teacher's targets for later
            epochs (the regions of an image then stay fixed).
        val_data, val_every, val_limit: validation with the evaluation protocol.
        val_before: also evaluate the student before training (``eval_before.json``).
        reviewed: a review database whose expert verdicts replace teacher targets.
        reviewed_weight: loss weight of a reviewed region.
        reviewed_embeddings: the student's class embeddings in the loss: ``text`` (its text
            tower) or ``few-shot`` (text blended with prototypes of the reviewed regions of each
            class, :func:`~densevlm.training.fewshot.reviewed_class_embeddings`: words the text
            tower cannot read, e.g. plant words, get a direction of their own).
    """

    student: str = "tiny-student"
    teacher: str = "tiny-teacher-l"
    images: str = ""
    out: str = ""
    student_pretrained: Optional[str] = None
    teacher_pretrained: Optional[str] = None
    vocab: Optional[str] = None
    method: str = "densevlm"
    steps: int = 800
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 20
    seed: int = 0
    size: Optional[int] = None
    regions: str = "grid"
    max_boxes: Optional[int] = 8
    teacher_parts: int = 5
    thing_tokens: int = 64
    retrieval_features: str = "dense"
    logit_scale: Optional[float] = None
    threshold: float = 0.3
    thing_weight: float = 1.0
    thing_mass_weight: float = 0.4
    clipself_weight: float = 0.0
    alpha: float = 1.0
    unlocked_blocks: int = -1
    train_embed: bool = False
    train_head: bool = False
    amp: str = "auto"
    cache_teacher: bool = True
    workers: int = 0
    log_every: int = 10
    save_every: int = 50
    val_data: Optional[str] = None
    val_every: int = 0
    val_limit: Optional[int] = None
    val_before: bool = True
    reviewed: Optional[str] = None
    reviewed_weight: float = 1.0
    reviewed_embeddings: str = "text"
    device: Optional[str] = None

    def check(self) -> None:
        """Raise a one-line error for any out-of-range setting."""
        check_run(self.images, self.out, self.steps, self.batch_size, self.lr, self.amp)
        if self.method not in METHODS:
            hint = nearest_names(self.method, METHODS)
            raise DenseVLMError(f"--method {self.method}: choose {', '.join(METHODS)}" + (f" (did you mean {hint}?)" if hint else ""))
        if self.regions not in REGION_SOURCES:
            raise DenseVLMError(f"--regions {self.regions}: choose {', '.join(REGION_SOURCES)}")
        from densevlm.retrieval.teacher import FEATURE_KINDS

        if self.retrieval_features not in FEATURE_KINDS:
            raise DenseVLMError(f"--retrieval-features {self.retrieval_features}: choose {', '.join(FEATURE_KINDS)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise DenseVLMError(f"--alpha {self.alpha} is outside [0, 1]")
        if not 0.0 <= self.threshold < 1.0:
            raise DenseVLMError(f"--threshold {self.threshold} is outside [0, 1)")
        if self.logit_scale is not None and self.logit_scale <= 0:
            raise DenseVLMError(f"--logit-scale {self.logit_scale} must be positive")
        if self.clipself_weight < 0 or self.thing_mass_weight < 0 or self.thing_weight <= 0:
            raise DenseVLMError("--clipself-weight and --thing-mass-weight must be >= 0 and --thing-weight > 0")
        if self.reviewed_embeddings not in ("text", "few-shot"):
            raise DenseVLMError(f"--reviewed-embeddings {self.reviewed_embeddings}: choose text or few-shot")
        if self.teacher_parts < 0:
            raise DenseVLMError(f"--teacher-parts {self.teacher_parts} must be >= 0")
        if self.thing_tokens < 0:
            raise DenseVLMError(f"--thing-tokens {self.thing_tokens} must be >= 0")
        if self.max_boxes is not None and self.max_boxes <= 0:
            raise DenseVLMError(f"--max-boxes {self.max_boxes} must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_ANNOTATIONS = {f.name: str(f.type) for f in fields(TrainConfig)}
_KINDS: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _checked_kind(path: Path, key: str, annotation: str, value: Any) -> Any:
    """``value`` if it has the kind of a ``TrainConfig`` field annotated ``annotation``
    (``int``, ``float``, ``bool``, ``str``, or ``Optional`` of one; a float may be written
    ``1e-3``, which YAML reads as text); else a one-line error naming the file and the setting.
    Other annotations (``tuple[float, float]``) are left to :meth:`TrainConfig.check`."""
    optional = annotation.startswith("Optional[")
    kind = annotation[len("Optional["):-1] if optional else annotation
    if value is None and optional:
        return value
    if kind == "float" and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    allowed = _KINDS.get(kind)
    if allowed is None or (isinstance(value, allowed) and (kind == "bool" or not isinstance(value, bool))):
        return value
    raise DenseVLMError(f"{path}: '{key}' must be {'an' if kind == 'int' else 'a'} {kind}, got {value!r}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) file of :class:`TrainConfig` fields; unknown keys are errors.

    ``tau`` (the old name, still in saved ``config.yaml`` files) is read as ``logit_scale``.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise DenseVLMError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise DenseVLMError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DenseVLMError(f"{path}: expected a mapping of settings")
    known = {f.name for f in fields(TrainConfig)}
    values = {}
    for key, value in data.items():
        name = "logit_scale" if key == "tau" else key.replace("-", "_")
        if name not in known:
            hint = nearest_names(key, known)
            raise DenseVLMError(f"{path}: unknown setting '{key}'" + (f"; did you mean {hint}?" if hint else ""))
        if name in values:
            raise DenseVLMError(f"{path}: '{key}' repeats a setting given under another name")
        values[name] = _checked_kind(path, key, _ANNOTATIONS[name], value)
    return values


def check_run(images: Optional[str], out: Optional[str], steps: int, batch_size: int, lr: float, amp: str) -> None:
    """The settings every training run shares (``train``, ``distill``); a one-line error for the first bad one."""
    if not images:
        raise DenseVLMError("--images is required (a folder, a world directory, a COCO JSON or tar shards)")
    if not out:
        raise DenseVLMError("--out is required (the run directory)")
    if steps <= 0 or batch_size <= 0:
        raise DenseVLMError(f"--steps and --batch-size must be positive (got {steps}, {batch_size})")
    if not 0.0 < lr < 1.0:
        raise DenseVLMError(f"--lr {lr} is outside (0, 1)")
    if amp not in AMP_CHOICES:
        raise DenseVLMError(f"--amp {amp}: choose {', '.join(AMP_CHOICES)}")


# what a resumed run may set anew: where it lives, how long it goes on (the rest of the schedule stretches
# to the new end), how it reports, loads and validates; never what each step computes
RESUME_MAY_CHANGE = frozenset({"out", "steps", "workers", "log_every", "save_every", "device", "val_data", "val_every",
                               "val_limit", "val_before"})


PATH_SETTINGS = ("images", "vocab", "val_data", "reviewed", "student", "teacher", "student_pretrained",
                 "teacher_pretrained", "init")


def absolute_paths(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each setting of :data:`PATH_SETTINGS` that names an existing file or folder made
    absolute, so that the run's ``config.yaml`` still finds it from another folder (``--resume``)."""
    return {k: str(Path(v).resolve()) if k in PATH_SETTINGS and isinstance(v, str) and v and Path(v).exists() else v
            for k, v in values.items()}


def resumed_settings(given: dict[str, Any], saved: dict[str, Any], defaults: dict[str, Any],
                     source: str | Path) -> dict[str, Any]:
    """A resumed run's settings: ``saved`` (its ``config.yaml``, read from ``source``) with those of
    ``given`` that :data:`RESUME_MAY_CHANGE` allows.

    A resume is exact only with the run's own settings, so every other given setting must equal
    the saved one (or ``defaults`` where the file predates the setting); paths are compared resolved.

    Raises:
        DenseVLMError: one line naming the first setting that differs, both values and ``source``.
    """
    for name, value in given.items():
        before = saved.get(name, defaults.get(name))
        if name in RESUME_MAY_CHANGE or _same(value, before):
            continue
        raise DenseVLMError(f"--resume: {name} {value!r} differs from the run's {before!r} ({source}); a resumed "
                            "run keeps its settings (leave the flag out, or start a new --out to change it)")
    return {**saved, **{k: v for k, v in given.items() if k in RESUME_MAY_CHANGE}}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, str) and isinstance(b, str) and a != b and Path(a).exists() and Path(b).exists():
        return Path(a).resolve() == Path(b).resolve()
    return a == b
