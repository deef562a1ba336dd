"""The operating point: thresholds chosen by ``densevlm calibrate``, bound to one model and vocabulary.

``op.json`` (schema ``densevlm.operating_point/1``)::

    {"schema", "model": {"name", "sha256"}, "vocabulary": {"fingerprint", "defects", "text"},
     "score": {"method", "min_area", "size", "low_confidence"},
     "thresholds": {"ng": t_ng, "unsure": t_unsure or null},
     "target_false_alarm", "unsure_band", "calibration": {...}, "densevlm_version"}

An image whose NG score is ``>= ng`` is NG, ``>= unsure`` (when set) UNSURE, else OK. The model
checksum is :meth:`Backbone.weights_sha256 <densevlm.backbones.base.Backbone.weights_sha256>` (every
weight's name, dtype, shape and bytes); the vocabulary is identified by its embedding fingerprint
*and* its defect list. An operating point is refused,
in one line, for any other model or vocabulary: its thresholds would not mean the same.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from densevlm.errors import DenseVLMError
from densevlm.imaging import MAX_INPUT_SIZE
from densevlm.inspection.scores import ScoreConfig
from densevlm.vocab.vocabulary import Vocabulary, parse_vocabulary

__all__ = ["SCHEMA", "OperatingPoint"]

SCHEMA = "densevlm.operating_point/1"


@dataclass
class OperatingPoint:
    """Thresholds for OK / UNSURE / NG and what they were made for.

    Attributes:
        model_name: how the model was named (``--model``), for messages and defaults.
        model_sha256: :meth:`~densevlm.backbones.base.Backbone.weights_sha256` of the calibrated model.
        vocabulary: the vocabulary text (its defects included).
        score: the scoring settings used in calibration (resolved).
        ng_threshold: NG when the NG score is at least this.
        unsure_threshold: UNSURE when at least this (and below ``ng_threshold``); None = no band.
        target_false_alarm, unsure_band: what calibration was asked for.
        calibration: data, counts, false-alarm rate and recall with bootstrap intervals.
        source: the file it was read from (messages only; empty when made in code).
    """

    model_name: str
    model_sha256: str
    vocabulary: str
    score: ScoreConfig
    ng_threshold: float
    unsure_threshold: Optional[float] = None
    target_false_alarm: float = 0.0
    unsure_band: Optional[float] = None
    calibration: dict[str, Any] = field(default_factory=dict)
    source: str = field(default="", compare=False)

    @property
    def vocab(self) -> Vocabulary:
        return parse_vocabulary(self.vocabulary, source="operating point vocabulary")

    def verdict(self, score: float) -> str:
        """``NG``, ``UNSURE`` or ``OK`` for an NG score."""
        if score >= self.ng_threshold:
            return "NG"
        if self.unsure_threshold is not None and score >= self.unsure_threshold:
            return "UNSURE"
        return "OK"

    def to_json(self) -> dict[str, Any]:
        from densevlm.version import __version__

        vocab = self.vocab
        return {
            "schema": SCHEMA,
            "model": {"name": self.model_name, "sha256": self.model_sha256},
            "vocabulary": {"fingerprint": vocab.fingerprint(), "defects": list(vocab.defects), "text": self.vocabulary},
            "score": self.score.to_json(),
            "thresholds": {"ng": self.ng_threshold, "unsure": self.unsure_threshold},
            "target_false_alarm": self.target_false_alarm,
            "unsure_band": self.unsure_band,
            "calibration": self.calibration,
            "densevlm_version": __version__,
        }

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        from densevlm.fileio import atomic_write_json

        path = Path(path)
        if path.exists() and not overwrite:
            raise DenseVLMError(f"{path} exists; pass --overwrite to replace it")
        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "OperatingPoint":
        """Read ``op.json``; any problem is one line naming the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DenseVLMError(f"{path}: operating point not found (make one with `densevlm calibrate`)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DenseVLMError(f"{path}: not a readable operating point ({e})") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise DenseVLMError(f"{path}: not an operating point (expected schema {SCHEMA})")
        try:
            return cls._from_json(data, str(path))
        except (KeyError, TypeError) as e:
            raise DenseVLMError(f"{path}: operating point is missing a field or has one of the wrong kind "
                                f"({type(e).__name__}: {e})") from None
        except DenseVLMError as e:
            raise DenseVLMError(f"{path}: {e}") from None

    @classmethod
    def _from_json(cls, data: dict[str, Any], path: str) -> "OperatingPoint":
        """Every field checked for kind and range, and the vocabulary text against its fingerprint
        (errors without the file name, which :meth:`load` adds)."""
        def text(value: Any, name: str) -> str:
            if not isinstance(value, str) or not value:
                raise DenseVLMError(f"{name} must be a non-empty string, got {value!r}")
            return value

        def number(value: Any, name: str, low: float, high: float) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low <= value <= high:
                raise DenseVLMError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
            return float(value)

        def count(value: Any, name: str) -> Optional[int]:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise DenseVLMError(f"{name} must be a whole number of pixels >= 1, got {value!r}")
            return value

        score, thresholds, vocabulary = data["score"], data["thresholds"], data["vocabulary"]
        ng = number(thresholds["ng"], "thresholds.ng", 0.0, 1.0)
        unsure = thresholds["unsure"]
        unsure = None if unsure is None else number(unsure, "thresholds.unsure", 0.0, ng)
        band = data.get("unsure_band")
        size = count(score["size"], "score.size")
        if size is not None and size > MAX_INPUT_SIZE:
            raise DenseVLMError(f"score.size must be at most {MAX_INPUT_SIZE} px, got {size}")
        score_cfg = ScoreConfig(text(score["method"], "score.method"), count(score["min_area"], "score.min_area"),
                                size, number(score["low_confidence"], "score.low_confidence", 0.0, 1.0))
        op = cls(
            model_name=text(data["model"]["name"], "model.name"),
            model_sha256=text(data["model"]["sha256"], "model.sha256"),
            vocabulary=text(vocabulary["text"], "vocabulary.text"),
            score=score_cfg,
            ng_threshold=ng,
            unsure_threshold=unsure,
            target_false_alarm=number(data["target_false_alarm"], "target_false_alarm", 0.0, 1.0),
            unsure_band=None if band is None else number(band, "unsure_band", 0.0, 1.0),
            calibration=data.get("calibration", {}),
            source=path,
        )
        vocab = op.vocab
        if vocabulary.get("fingerprint") != vocab.fingerprint() or vocabulary.get("defects") != list(vocab.defects):
            raise DenseVLMError("vocabulary.text does not match the vocabulary's fingerprint and defects "
                                "it was calibrated with (edited by hand?); run `densevlm calibrate` again")
        return op

    def check(self, model_sha256: str, vocab: Vocabulary) -> None:
        """Refuse (one line, naming :attr:`source`) a model or vocabulary other than the calibrated ones."""
        where = f"operating point {self.source}" if self.source else "operating point"
        if model_sha256 != self.model_sha256:
            raise DenseVLMError(
                f"{where} was calibrated for another model ({self.model_name}, sha256 {self.model_sha256[:12]}), "
                f"not this one (sha256 {model_sha256[:12]}); run `densevlm calibrate` for this model")
        mine = self.vocab
        if vocab.fingerprint() != mine.fingerprint() or vocab.defects != mine.defects:
            raise DenseVLMError(
                f"{where} was calibrated for another vocabulary (defects: {', '.join(mine.defects)}); "
                "use that vocabulary or run `densevlm calibrate` with this one")
