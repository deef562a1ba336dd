"""densevlm: dense open-vocabulary region recognition with DenseVLM's unbiased alignment.

The public surface (imported lazily, so the command line starts fast)::

    load_model(name_or_path, pretrained=None, device="cpu") -> DenseModel
    DenseRuntime   (the contract DenseModel and the exported runtimes share)
    Vocabulary, load_vocabulary
    segment(model, image, vocab) -> SegmentResult
    inspect(model, images, operating_point) -> [Verdict]   (OK / UNSURE / NG)
"""

from __future__ import annotations

from densevlm.lazy import loader
from densevlm.version import __version__

_EXPORTS = {
    "DenseModel": "densevlm.model",
    "DenseRuntime": "densevlm.dense",
    "load_model": "densevlm.model",
    "DenseVLMError": "densevlm.errors",
    "Vocabulary": "densevlm.vocab.vocabulary",
    "load_vocabulary": "densevlm.vocab.loading",
    "segment": "densevlm.inference.segment",
    "SegmentResult": "densevlm.inference.result",
    "inspect": "densevlm.inspection.verdict",
    "OperatingPoint": "densevlm.inspection.operating_point",
}

__all__ = [*_EXPORTS, "__version__"]
__getattr__ = loader(__name__, _EXPORTS)
