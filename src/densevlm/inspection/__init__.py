"""Inspection on the line: defect scores, OK / UNSURE / NG verdicts at a calibrated false-alarm
rate, and drift monitoring of production batches against a reference.

Modules: ``scores`` (per-image defect scores from the dense map), ``labelled`` (OK / NG ground
truth), ``calibrate`` (thresholds with bootstrap intervals), ``operating_point`` (``op.json``),
``verdict`` (``densevlm.inspect``), ``overlay``, ``evaluate`` (``eval --inspection``),
``image_stats`` (brightness and sharpness) and ``monitor`` (drift signals). The names below load on first use.
"""

from __future__ import annotations

from densevlm.lazy import homes, loader

_HOMES = homes(__name__, {
    "scores": ("METHODS", "ScoreConfig", "ImageAnalysis", "analyse_images"),
    "labelled": ("LabelledImage", "load_labelled"),
    "operating_point": ("OperatingPoint",),
    "verdict": ("Defect", "Verdict", "inspect", "write_verdicts"),
    "monitor": ("BatchStats", "compare"),
    "evaluate": ("evaluate_inspection",),
})

__all__ = list(_HOMES)
__getattr__ = loader(__name__, _HOMES)
