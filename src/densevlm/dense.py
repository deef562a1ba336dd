"""The contract of a dense model runtime, whatever runs it: PyTorch, ONNX Runtime, OpenVINO.

Code that only turns images into dense maps and scores them against a vocabulary (``segment``,
batch inference, the export parity check) takes a :class:`DenseRuntime`, so one call runs a
checkpoint in PyTorch (:class:`densevlm.model.DenseModel`) or an export in ONNX Runtime or
OpenVINO (:class:`densevlm.export.runtime.OnnxDenseModel`, :class:`densevlm.export.openvino.
OpenVinoDenseModel`); ``isinstance(runtime, DenseRuntime)`` is tested for every runtime
(``typing.runtime_checkable`` checks that the members exist, not their signatures).

    >>> from densevlm.regions import similarity
    >>> def label_map(model: DenseRuntime, image, vocab) -> np.ndarray:
    ...     x, plan = model.prepare(image, model.default_size, square=True)   # [3, S, S], Letterbox
    ...     text = model.embed_vocabulary(vocab)                               # [K, C]
    ...     with no_grad():
    ...         dense = model.encode_dense(stack_inputs([x], like=text))      # [1, C, S/p, S/p]
    ...     return similarity.logits(as_array(dense)[0], as_array(text), model.logit_scale, dim=0).argmax(0)

Training, crops and global embeddings need the PyTorch model itself (``encode_image``,
``encode_crops``, ``backbone``); they are not part of this contract.

Arrays: a ``DenseModel`` takes and returns ``torch.Tensor``s (on its device); the exported
runtimes compute in numpy and return ``numpy.ndarray``s or CPU tensors (their ``tensors``
setting). Code that serves both (``segment``) stacks inputs with :func:`stack_inputs`, runs
under :func:`no_grad`, and converts the outputs once with :func:`as_array`; none of the three
imports PyTorch for numpy arrays, and neither does reading this module.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any, ContextManager, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from densevlm.imaging import Letterbox
from densevlm.vocab import Vocabulary

if TYPE_CHECKING:
    import torch

__all__ = ["DenseRuntime", "RuntimeSpec", "as_array", "stack_inputs", "no_grad"]


def as_array(x: Any) -> np.ndarray:
    """``x`` as a float32 numpy array: an array as is (cast if needed), a tensor on any device
    copied to the CPU (a CPU float32 tensor shares its memory)."""
    if isinstance(x, np.ndarray):
        return x if x.dtype == np.float32 else x.astype(np.float32)
    return x.detach().to("cpu").float().contiguous().numpy()


def stack_inputs(inputs: Sequence[Any], like: Any = None) -> Any:
    """``[B, 3, H, W]`` batch of ``[3, H, W]`` inputs from :meth:`DenseRuntime.prepare`, of their
    kind: a numpy array for arrays, else a tensor on ``like``'s device (e.g. the class embeddings')."""
    if isinstance(inputs[0], np.ndarray):
        return np.stack(inputs)
    import torch

    batch = torch.stack(list(inputs))
    return batch if like is None or isinstance(like, np.ndarray) else batch.to(like.device)


def no_grad() -> ContextManager[Any]:
    """``torch.inference_mode()`` when PyTorch is loaded, else a context that does nothing."""
    torch = sys.modules.get("torch")
    return torch.inference_mode() if torch is not None else contextlib.nullcontext()


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
                square: bool = False) -> tuple[Any, Letterbox]:
        """Letterbox an RGB image: ``([3, H, W]`` normalised input, its geometry``)``.

        The longest side becomes ``size`` (default :attr:`input_size`); the rest is padded
        right/bottom to a multiple of the patch, or to a square.
        """
        ...

    def encode_dense(self, images: Any) -> Any:
        """``[B, 3, H, W]`` inputs (H, W multiples of the patch) to the ``[B, C, H/p, W/p]``
        dense map, unit norm per token."""
        ...

    def embed_vocabulary(self, vocab: Vocabulary, templates: Optional[str] = None,
                         use_cache: bool = True) -> Any:
        """``[K, C]`` unit-norm class embeddings, on the device inputs should be sent to."""
        ...
