"""Inspection on the line: defect scores, OK / UNSURE / NG verdicts at a calibrated false-alarm
rate, and drift monitoring of production batches against a reference.

Modules: ``scores`` (per-image defect scores from the dense map), ``labelled`` (OK / NG ground
truth), ``calibrate`` (thresholds with bootstrap intervals), ``operating_point`` (``op.json``),
``verdict`` (``densevlm.inspect``), ``overlay``, ``evaluate`` (``eval --inspection``) and
``monitor`` (drift signals).
"""
