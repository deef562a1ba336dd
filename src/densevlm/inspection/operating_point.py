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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from densevlm.errors import DenseVLMError
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
            score = data["score"]
            return cls(
                model_name=str(data["model"]["name"]),
                model_sha256=str(data["model"]["sha256"]),
                vocabulary=str(data["vocabulary"]["text"]),
                score=ScoreConfig(score["method"], score["min_area"], score["size"], score["low_confidence"]),
                ng_threshold=float(data["thresholds"]["ng"]),
                unsure_threshold=None if data["thresholds"]["unsure"] is None else float(data["thresholds"]["unsure"]),
                target_false_alarm=float(data["target_false_alarm"]),
                unsure_band=data.get("unsure_band"),
                calibration=data.get("calibration", {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DenseVLMError(f"{path}: operating point is missing or has a bad field ({e})") from None

    def check(self, model_sha256: str, vocab: Vocabulary, where: str = "operating point") -> None:
        """Refuse (one line) a model or vocabulary other than the calibrated ones."""
        if model_sha256 != self.model_sha256:
            raise DenseVLMError(
                f"{where} was calibrated for another model ({self.model_name}, sha256 {self.model_sha256[:12]}), "
                f"not this one (sha256 {model_sha256[:12]}); run `densevlm calibrate` for this model")
        mine = self.vocab
        if vocab.fingerprint() != mine.fingerprint() or vocab.defects != mine.defects:
            raise DenseVLMError(
                f"{where} was calibrated for another vocabulary (defects: {', '.join(mine.defects)}); "
                "use that vocabulary or run `densevlm calibrate` with this one")
