"""INT8 post-training quantisation of an OpenVINO image encoder with NNCF.

    >>> int8, record = quantize_openvino(ov_model, [x[None].numpy() for x in calibration_inputs])
    >>> int8, record = quantize_openvino(ov_model, inputs, keep_float="ends+tail")   # more layers in float

``nncf.quantize`` with ``model_type=TRANSFORMER`` on the OpenVINO model, so neither calibration
nor the result needs PyTorch. That model type implies NNCF's ``MIXED`` preset (symmetric
per-channel int8 weights, asymmetric activations), SmoothQuant on MatMuls (alpha
:data:`SMOOTH_QUANT_ALPHA`) and fast bias correction. Activation ranges are the global min/max
over the calibration images (NNCF ``MINMAX``), not NNCF's default mean of per-image extremes:
on the embedded world it lifted tiny-student's box agreement with fp32 from 99.10 to 99.31 % and
left tiny-teacher and the DenseVLM-tuned student unchanged, at the same speed (same int8 layers).

Weights are quantised to 7 bits' range (NNCF ``overflow_fix=ENABLE``) so that the export gives
the same answers on every x86 CPU: without VNNI (AVX2 or AVX-512 without DL Boost, e.g. AMD Zen 3
and older Intel cores, common in line-side PCs) the int8 dot products add pairs of u8 x s8
products in int16 and saturate (OpenVINO's "saturation issue"; NNCF's default fixes only the
first layer). On such a CPU (AMD EPYC, AVX2) tiny-student's held-back agreement with fp32 went
from 93.2 % of token labels and 91.1 % of box scores (default) to 99.2 % and 98.2 % (``ends``;
BENCHMARKS.md "INT8 accuracy", stop 25).

A few layers stay in float, chosen by name (:data:`FLOAT_SCOPES`, default
:data:`DEFAULT_KEEP_FLOAT`); first and last layers are the usual float islands of ViT
post-training quantisation. Dense-label agreement with fp32 on 500 held-out embedded-world scenes
(64 px, 300 calibration scenes; BENCHMARKS.md "INT8 accuracy"; ``none`` and ``ends+tail`` with
NNCF's default activation ranges):

==============  ============  ============  ===========================
keep_float      tiny-student  tiny-teacher  DenseVLM-tuned tiny-student
==============  ============  ============  ===========================
``none``        97.3 %        99.6 %        99.4 %
``ends``        99.1 %        99.9 %        99.8 %
``ends+tail``   99.1 %        99.9 %        99.8 %
==============  ============  ============  ===========================

``ends+tail`` costs 12-20 % more int8 encoder time on ViT-B-16 at 448 px; ``ends`` keeps 4 of its
74 matrix products in float at no measurable cost. Other NNCF means measured on tiny-student with ``ends``: SmoothQuant alpha 0.5 98.9 %,
SmoothQuant off 98.8 %, full bias correction 99.1 % (2.4x slower to quantise), ``preset=MIXED``
identical (already implied by the model type).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np

from densevlm.errors import DenseVLMError

__all__ = ["FLOAT_SCOPES", "DEFAULT_KEEP_FLOAT", "SMOOTH_QUANT_ALPHA", "check_keep_float", "float_operations",
           "quantize_openvino"]

log = logging.getLogger(__name__)

SMOOTH_QUANT_ALPHA = 0.95  # NNCF's default for MatMuls; 0.5 and off were both worse (module docstring)
_ATTENTION = ("ScaledDotProductAttention", "Softmax")


def _ordered(ov_model: Any) -> list[tuple[str, str]]:
    return [(op.get_friendly_name(), op.get_type_name()) for op in ov_model.get_ordered_ops()]


def _ends(ops: list[tuple[str, str]]) -> list[str]:
    convs = [name for name, kind in ops if kind == "Convolution"]
    matmuls = [name for name, kind in ops if kind == "MatMul"]
    return convs[:1] + matmuls[:2] + matmuls[-1:]


def _ends_and_tail(ops: list[tuple[str, str]]) -> list[str]:
    last_attention = max((i for i, (_, kind) in enumerate(ops) if kind in _ATTENTION), default=len(ops) - 1)
    tail = [name for name, kind in ops[last_attention + 1 :] if kind == "MatMul"]
    return list(dict.fromkeys(_ends(ops) + tail))


FLOAT_SCOPES: dict[str, Callable[[list[tuple[str, str]]], list[str]]] = {
    "none": lambda ops: [],
    # the patch embedding (first Convolution), the first block's first two MatMuls, the output projection
    "ends": _ends,
    # ends, plus every MatMul after the last attention: the last attention block's output projection
    # and MLP, and the dense path's final (value-path) block
    "ends+tail": _ends_and_tail,
}
DEFAULT_KEEP_FLOAT = "ends"


def check_keep_float(keep_float: str) -> str:
    """``keep_float`` if it names a scope of :data:`FLOAT_SCOPES`.

    Raises:
        DenseVLMError: it does not (one line listing the scopes).
    """
    if keep_float not in FLOAT_SCOPES:
        raise DenseVLMError(f"--keep-float {keep_float}: choose one of {', '.join(FLOAT_SCOPES)}")
    return keep_float


def float_operations(ov_model: Any, keep_float: str = DEFAULT_KEEP_FLOAT) -> list[str]:
    """Friendly names of the operations of ``ov_model`` that stay in float under scope ``keep_float``.

    Args:
        ov_model: an ``openvino.Model`` of the image encoder.
        keep_float: a key of :data:`FLOAT_SCOPES`.

    Raises:
        DenseVLMError: unknown ``keep_float``.
    """
    return FLOAT_SCOPES[check_keep_float(keep_float)](_ordered(ov_model))


def quantize_openvino(
    ov_model: Any, inputs: Sequence[np.ndarray], keep_float: str = DEFAULT_KEEP_FLOAT
) -> tuple[Any, dict[str, Any]]:
    """Quantise ``ov_model`` to int8 with NNCF, calibrated on ``inputs``.

    Args:
        ov_model: ``openvino.Model`` of the image encoder (float32).
        inputs: calibration inputs, each a ``[1, 3, H, W]`` float32 normalised array (never random data:
            activation ranges come from these).
        keep_float: which operations stay in float (a key of :data:`FLOAT_SCOPES`).

    Returns:
        ``(int8 model, record)``; the record (for the manifest) names the NNCF settings and the layers kept in float.

    Raises:
        DenseVLMError: unknown ``keep_float``.
    """
    import nncf
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, AdvancedSmoothQuantParameters,
                                                       OverflowFix)
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    keep = float_operations(ov_model, keep_float)
    quantized = nncf.quantize(
        ov_model,
        nncf.Dataset(list(inputs)),
        model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(inputs),
        fast_bias_correction=True,
        ignored_scope=nncf.IgnoredScope(names=keep) if keep else None,
        advanced_parameters=AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA),
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
            overflow_fix=OverflowFix.ENABLE),
    )
    log.info("quantised to int8 on %d images, %d operations kept in float (%s)", len(inputs), len(keep), keep_float)
    return quantized, {"method": "nncf.quantize", "model_type": "transformer", "preset": "mixed",
                       "smooth_quant_alpha": SMOOTH_QUANT_ALPHA, "activation_ranges": "minmax",
                       "bias_correction": "fast", "overflow_fix": "enable", "subset_size": len(inputs),
                       "keep_float": keep_float, "fp32_operations": keep}
