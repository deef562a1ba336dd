"""The public model: one object that turns images into dense, region and global features and
text into class embeddings, whatever the family (OpenAI/OpenCLIP ViT, EVA02, tiny).

    >>> model = load_model("tiny-student")
    >>> x = model.transform(pil_image)[None]          # [1, 3, H, W]
    >>> dense = model.encode_dense(x)                 # [1, C, H/p, W/p], unit norm per token
    >>> feats = model.encode_boxes(x, [boxes])        # [N, C], boxes XYXY in input pixels

The encode methods follow the ambient autograd mode: wrap inference in
``torch.inference_mode()`` (every densevlm command does) and call them normally for training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from densevlm.backbones import Backbone, BackboneSpec, load_backbone
from densevlm.backbones.weights import nonfinite_tensors, tensor_digest
from densevlm.devices import check_device
from densevlm.errors import DenseVLMError
from densevlm.fileio import atomic_torch_save
from densevlm.imaging import Letterbox, letterbox
from densevlm.regions.pooling import crop_boxes, mask_pool, roi_pool
from densevlm.vocab import Vocabulary, class_embeddings
from densevlm.vocab.embed import encode_texts

__all__ = ["DenseModel", "load_model", "pad_batch"]

log = logging.getLogger(__name__)

# Inference side for open_clip models when none is given: finer maps than their native 224.
OPEN_CLIP_DEFAULT_SIZE = 448


def pad_batch(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack ``[3, H_i, W_i]`` inputs into ``[B, 3, max H, max W]``, zero-padded right/bottom."""
    if not images:
        raise DenseVLMError("no images to batch")
    h = max(im.shape[-2] for im in images)
    w = max(im.shape[-1] for im in images)
    out = images[0].new_zeros(len(images), 3, h, w)
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]] = im
    return out


class DenseModel(nn.Module):
    """A CLIP-family model with dense, box, mask, crop, global and text encoders.

    The PyTorch :class:`~densevlm.dense.DenseRuntime`; the encoders beyond it (boxes, masks,
    crops, global, text) and training need this class itself.

    Attributes:
        backbone: the family-specific :class:`~densevlm.backbones.Backbone`.
        input_size: default longest side for :meth:`transform` (the native size unless changed).
    """

    def __init__(self, backbone: Backbone, input_size: Optional[int] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.input_size = int(input_size or backbone.image_size)

    # ---- properties -------------------------------------------------------------------------
    @property
    def spec(self) -> BackboneSpec:
        return self.backbone.spec

    @property
    def patch_size(self) -> int:
        return self.backbone.patch_size

    @property
    def image_size(self) -> int:
        """Native input side the position embeddings were learned at."""
        return self.backbone.image_size

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    @property
    def default_size(self) -> int:
        """Inference side when none is given: :attr:`input_size` for the tiny models (their
        native size unless changed), :data:`OPEN_CLIP_DEFAULT_SIZE` for open_clip models."""
        return self.input_size if self.spec.config is not None else OPEN_CLIP_DEFAULT_SIZE

    @property
    def logit_scale(self) -> float:
        """The learned multiplier of the cosines, CLIP's ``exp(logit_scale)``, capped at 100."""
        return self.backbone.logit_scale

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- preprocessing ----------------------------------------------------------------------
    def prepare(self, image: Image.Image, size: Optional[int] = None, square: bool = False) -> tuple[torch.Tensor, Letterbox]:
        """Letterbox ``image`` for this model: ``([3, H, W], geometry)``.

        The longest side becomes ``size`` (default :attr:`input_size`), the rest is padded to a
        multiple of the patch (or to a square).
        """
        return letterbox(image, size or self.input_size, self.patch_size, self.spec.mean, self.spec.std, square)

    def transform(self, image: Image.Image, size: Optional[int] = None) -> torch.Tensor:
        """``[3, H, W]`` normalised input for a PIL image (see :meth:`prepare`)."""
        return self.prepare(image, size)[0]

    # ---- image encoders ---------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` unit-norm global embeddings (the model's normal class-token path)."""
        return F.normalize(self.backbone.forward_image(images, pooled=True, dense=False).pooled, dim=-1)

    def encode_dense(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C, H/p, W/p]`` dense map, unit norm per token (value-path last block).

        Args:
            images: ``[B, 3, H, W]`` normalised; H and W any multiples of the patch size.
        """
        return F.normalize(self.backbone.forward_image(images, pooled=False, dense=True).dense, dim=1)

    def encode_boxes(self, images: torch.Tensor, boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """RoI features: ``[sum N_i, C]`` unit norm, in box order.

        Args:
            images: ``[B, 3, H, W]``.
            boxes: B tensors ``[N_i, 4]``, XYXY in input pixels.
        """
        return roi_pool(self.encode_dense(images), boxes, self.patch_size)

    def encode_masks(self, images: torch.Tensor, masks: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mask-pooled features: ``[sum N_i, C]`` unit norm.

        Args:
            images: ``[B, 3, H, W]``.
            masks: B tensors ``[N_i, H, W]`` (bool), at the input size.
        """
        return mask_pool(self.encode_dense(images), masks, self.patch_size)

    def encode_crops(
        self,
        image: torch.Tensor | Image.Image,
        boxes: torch.Tensor,
        context: float = 1.0,
        size: Optional[int] = None,
        batch_size: int = 64,
    ) -> torch.Tensor:
        """Crop each box, letterbox it to the native size and take the global embedding.

        Args:
            image: a ``[3, H, W]`` model input (boxes in input pixels) or a PIL image (boxes in
                its own pixels; crops are cut at full resolution, as the paper's protocol does).
            boxes: ``[N, 4]`` XYXY.
            context: enlarge each box about its centre by this factor first (clipped).
            size: crop side fed to the model (default: the native size).

        Returns:
            ``[N, C]`` unit-norm embeddings.
        """
        size = size or self.image_size
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        if isinstance(image, Image.Image):
            full, plan = self.prepare(image, size=max(image.size))
            image, boxes = full, plan.to_input(boxes)
        side = ((size + self.patch_size - 1) // self.patch_size) * self.patch_size
        crops = crop_boxes(image.to(self.device), boxes, side, context)
        out = [self.encode_image(crops[i : i + batch_size]) for i in range(0, crops.shape[0], batch_size)]
        return torch.cat(out, dim=0) if out else crops.new_zeros(0, self.embed_dim)

    # ---- text -------------------------------------------------------------------------------
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``[N, C]`` unit-norm text embeddings with the model's own tokenizer."""
        return encode_texts(self.backbone, list(texts))

    def embed_vocabulary(self, vocab: Vocabulary, templates: Optional[str] = None, use_cache: bool = True) -> torch.Tensor:
        """``[K, C]`` unit-norm class embeddings (prompt ensemble over templates and synonyms)."""
        return class_embeddings(self.backbone, vocab, templates=templates, use_cache=use_cache)

    # ---- training interface -----------------------------------------------------------------
    def forward(self, images: torch.Tensor, boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """Region features for training: same as :meth:`encode_boxes` (goes through DDP's forward)."""
        return self.encode_boxes(images, boxes)

    # ---- persistence ------------------------------------------------------------------------
    def checkpoint(self, meta: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """A ``weights_only``-loadable dict: the open_clip state dict plus the architecture spec and
        the sha256 of the tensors (:func:`~densevlm.backbones.weights.tensor_digest`)."""
        state = {k: v.detach().cpu() for k, v in self.backbone.clip.state_dict().items()}
        header = {"format": 1, "spec": self.spec.to_dict(), "input_size": self.input_size, "meta": meta or {},
                  "sha256": tensor_digest(state)}
        return {"densevlm": header, "state_dict": state}

    def save(self, path: str | Path, meta: Optional[dict[str, Any]] = None) -> Path:
        """Write a checkpoint that :func:`load_model` reads back (atomic).

        Raises:
            DenseVLMError: a weight holds NaN or infinity (nothing is written).
        """
        ckpt = self.checkpoint(meta)
        bad = nonfinite_tensors(ckpt["state_dict"])
        if bad:
            raise DenseVLMError(f"{path}: not saved: {len(bad)} weight tensor(s) hold NaN or infinity ({bad[0]} ...)")
        return atomic_torch_save(ckpt, path)


def load_model(
    name_or_path: str | Path,
    pretrained: Optional[str | Path] = None,
    device: str | torch.device = "cpu",
    input_size: Optional[int] = None,
) -> DenseModel:
    """Load a model by name or checkpoint path.

    Args:
        name_or_path: ``tiny-student`` / ``tiny-teacher-l`` / ``tiny-teacher`` /
            ``tiny-teacher-parts`` (shipped), a densevlm checkpoint
            file (e.g. ``train --out DIR`` writes ``DIR/last.pt``), a tiny architecture
            (``tiny-vit``), or an open_clip model name (``ViT-B-16``, ``ViT-L-14-336``,
            ``EVA02-B-16``, ``-quickgelu`` variants ...).
        pretrained: for open_clip names, a tag (``openai``, ``laion2b_s34b_b88k``...) or a weights
            file (``.pt/.pth/.bin/.safetensors``; plain state dict, ``{"state_dict": ...}``,
            ``module.`` prefixes and EVA-CLIP fork names all load); None for a random init.
        device: where to put the model.
        input_size: default longest side for :meth:`DenseModel.transform` (default native).

    Returns:
        A :class:`DenseModel` in eval mode.
    """
    device = check_device(device)
    backbone = load_backbone(name_or_path, pretrained)
    model = DenseModel(backbone, input_size=input_size)
    model.eval()
    return model.to(device)
