"""The contract of a dense model runtime, whatever runs it: PyTorch, ONNX Runtime, OpenVINO.

Code that only turns images into dense maps and scores them against a vocabulary (``segment``,
batch inference, the export parity check) takes a :class:`DenseRuntime`, so one call runs a
checkpoint in PyTorch (:class:`densevlm.model.DenseModel`) or an export in ONNX Runtime
(:class:`densevlm.export.runtime.OnnxDenseModel`). The OpenVINO runtime that is coming must
satisfy this protocol too; ``isinstance(runtime, DenseRuntime)`` is tested for every runtime
(``typing.runtime_checkable`` checks that the members exist, not their signatures).

    >>> from densevlm.regions import similarity
    >>> def label_map(model: DenseRuntime, image, vocab) -> torch.Tensor:
    ...     x, plan = model.prepare(image, model.default_size, square=True)   # [3, S, S], Letterbox
    ...     text = model.embed_vocabulary(vocab)                               # [K, C]
    ...     dense = model.encode_dense(x[None].to(text.device))[0]             # [C, S/p, S/p]
    ...     return similarity.logits(dense, text, model.logit_scale, dim=0).argmax(dim=0)

Training, crops and global embeddings need the PyTorch model itself (``encode_image``,
``encode_crops``, ``backbone``); they are not part of this contract.
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import torch
from PIL import Image

from densevlm.imaging import Letterbox
from densevlm.vocab import Vocabulary

__all__ = ["DenseRuntime", "RuntimeSpec"]


@runtime_checkable
class RuntimeSpec(Protocol):
    """What a runtime says about the weights it runs (``BackboneSpec``, ``ExportSpec``).

    Attributes:
        family: ``vit`` or ``eva``.
        arch: architecture name (``ViT-B-16``, ``tiny-vit``), written into results.
        source: where the weights came from (tag, file, built-in name), for reports.
        image_size: native input side in pixels; patch_size: pixels per token side.
        mean, std: RGB normalisation that :meth:`DenseRuntime.prepare` applies.
        templates: prompt template set of the class embeddings.
    """

    family: str
    arch: str
    source: str
    image_size: int
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    templates: str


@runtime_checkable
class DenseRuntime(Protocol):
    """Images to dense maps and a vocabulary to class embeddings, scored with :attr:`logit_scale`."""

    @property
    def spec(self) -> RuntimeSpec:
        """The weights' description (:class:`RuntimeSpec`)."""
        ...

    @property
    def patch_size(self) -> int:
        """Input pixels per dense-map cell side."""
        ...

    @property
    def input_size(self) -> int:
        """Longest side :meth:`prepare` uses when given no size."""
        ...

    @property
    def default_size(self) -> int:
        """Longest input side for inference when the user gives none (pixels): the native size
        for the tiny models, 448 for open_clip models, the export size for exports."""
        ...

    @property
    def logit_scale(self) -> float:
        """Multiplier of the cosines before the softmax (CLIP's ``exp(logit_scale)``, at most 100)."""
        ...

    def prepare(self, image: Image.Image, size: Optional[int] = None,
                square: bool = False) -> tuple[torch.Tensor, Letterbox]:
        """Letterbox an RGB image: ``([3, H, W]`` normalised input, its geometry``)``.

        The longest side becomes ``size`` (default :attr:`input_size`); the rest is padded
        right/bottom to a multiple of the patch, or to a square.
        """
        ...

    def encode_dense(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` inputs (H, W multiples of the patch) to the ``[B, C, H/p, W/p]``
        dense map, unit norm per token."""
        ...

    def embed_vocabulary(self, vocab: Vocabulary, templates: Optional[str] = None,
                         use_cache: bool = True) -> torch.Tensor:
        """``[K, C]`` unit-norm class embeddings, on the device inputs should be sent to."""
        ...
