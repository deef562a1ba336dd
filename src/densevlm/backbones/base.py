"""What every model family provides: pooled and dense image features, and text features.

A :class:`Backbone` wraps one open_clip-style CLIP module (``self.clip``) and knows how that
family's image tower yields a *dense* map: all blocks run normally except the last, whose
attention is replaced by its value path (each token attends only to itself), then the final
norm and the projection are applied to every patch token. Families differ only in where those
pieces live (see :mod:`densevlm.backbones.vit` and :mod:`densevlm.backbones.eva`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import nn

from densevlm.backbones.weights import state_sha256
from densevlm.errors import DenseVLMError

__all__ = ["Backbone", "BackboneSpec", "ImageFeatures", "OPENAI_MEAN", "OPENAI_STD"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class BackboneSpec:
    """Everything needed to rebuild a backbone: travels inside every checkpoint we write.

    Attributes:
        family: ``"vit"`` (open_clip VisionTransformer, tiny models included) or ``"eva"``.
        arch: open_clip model name (``"ViT-B-16"``) or ``"tiny-vit"``.
        image_size: native input side in pixels (the size position embeddings were learned at).
        patch_size: pixels per token side.
        mean, std: RGB normalisation of the weights.
        templates: name of the prompt template set (:mod:`densevlm.vocab.prompts`).
        config: the full architecture as data for models that open_clip does not know by name
            (the tiny models); ``None`` for open_clip names.
        source: where the weights came from (tag, file, built-in name), for reports.
    """

    family: str
    arch: str
    image_size: int
    patch_size: int
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    templates: str = "vild"
    config: Optional[dict[str, Any]] = None
    source: str = "random"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BackboneSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["mean"] = tuple(known.get("mean", OPENAI_MEAN))
        known["std"] = tuple(known.get("std", OPENAI_STD))
        return cls(**known)


class ImageFeatures(NamedTuple):
    """Unnormalised image-tower outputs.

    Attributes:
        pooled: ``[B, C]`` the model's normal global embedding, or None when not requested.
        dense: ``[B, C, H/p, W/p]`` value-path patch embeddings, or None when not requested.
    """

    pooled: Optional[torch.Tensor]
    dense: Optional[torch.Tensor]


class Backbone(nn.Module):
    """A CLIP-family model seen as image -> (pooled, dense) and text -> embedding.

    Subclasses implement :meth:`forward_image` and :meth:`image_groups`.
    """

    def __init__(self, clip: nn.Module, spec: BackboneSpec, tokenizer: Callable[[list[str]], torch.Tensor]) -> None:
        super().__init__()
        self.clip = clip
        self.spec = spec
        self.tokenizer = tokenizer
        self._text_fingerprint: Optional[tuple[int, str]] = None

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def embed_dim(self) -> int:
        """Width C of the joint image-text embedding space."""
        raise NotImplementedError

    @property
    def logit_scale(self) -> float:
        """The learned multiplier of the cosines, ``exp(logit_scale)``, capped at 100 (real CLIPs reach it)."""
        return float(self.clip.logit_scale.detach().exp().clamp(max=100.0))

    def check_input(self, images: torch.Tensor) -> None:
        """Raise a one-line error unless ``images`` is ``[B, 3, H, W]`` with H, W multiples of the patch."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise DenseVLMError(f"images must be a [B, 3, H, W] tensor, got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        p = self.patch_size
        if h % p or w % p or h == 0 or w == 0:
            raise DenseVLMError(
                f"image size {h}x{w} is not a multiple of the patch size {p}; use model.transform(), which pads"
            )

    def forward_image(self, images: torch.Tensor, pooled: bool = True, dense: bool = True) -> ImageFeatures:
        """Run the image tower once, sharing every block but the last between both outputs.

        Args:
            images: ``[B, 3, H, W]`` normalised, H and W multiples of :attr:`patch_size`.
            pooled: compute the global embedding (normal last block, class token, projection).
            dense: compute the dense map (value-path last block, every patch token, projection).
        """
        raise NotImplementedError

    def image_groups(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        """The image tower split for freezing: ``embed`` (patch + position embeddings, class token,
        pre-norm), ``blocks`` (transformer blocks, bottom to top) and ``head`` (final norm, projection)."""
        raise NotImplementedError

    def text_parameters(self) -> list[nn.Parameter]:
        """Every parameter that only the text encoder uses."""
        image = {id(p) for p in self.clip.visual.parameters()}
        return [p for n, p in self.clip.named_parameters() if id(p) not in image and not n.startswith("logit_")]

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """``[N, L]`` token ids for ``texts`` with the model's own tokenizer."""
        return self.tokenizer(list(texts))

    def encode_text_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` unnormalised text embeddings of ``[N, L]`` token ids.

        For an open_clip ``CLIP`` text tower (causal attention mask, end-of-text pooling: every
        model densevlm loads except the custom-text ones), the padding columns after the longest
        sentence of the batch are dropped first. A token attends only to the tokens before it, so
        the end-of-text token's output, the only one pooled, does not depend on what follows it:
        the embeddings equal the full-context ones to float round-off, and a 13-token prompt
        costs about 13/77 of the work (5x faster prompt embedding for ViT-B-16).
        """
        from open_clip.model import CLIP
        from open_clip.transformer import text_global_pool

        clip = self.clip
        if not isinstance(clip, CLIP) or clip.attn_mask is None or clip.text_pool_type not in ("argmax", "eos"):
            return clip.encode_text(tokens)
        used = (tokens != 0).any(dim=0).nonzero()
        length = int(used.max()) + 1 if used.numel() else 1
        tokens = tokens[:, :length]
        cast_dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:length, :length]))
        x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
        if clip.text_projection is None:
            return x
        return clip.text_projection(x) if isinstance(clip.text_projection, nn.Linear) else x @ clip.text_projection

    def weights_sha256(self) -> str:
        """Hex sha256 of every weight and buffer of ``clip`` (names, dtypes, shapes and bytes, in
        state-dict order): what an adapted vocabulary or an operating point is bound to.

        Recomputed only when a tensor changed in place (or was replaced) since the last call.
        """
        state = self.clip.state_dict()
        version = (sum(t._version for t in state.values()), tuple(t.data_ptr() for t in state.values()))
        cached = getattr(self, "_weights_sha256", None)
        if cached is None or cached[0] != version:
            self._weights_sha256 = (version, state_sha256(state))
        return self._weights_sha256[1]

    def text_fingerprint(self) -> str:
        """A hash of the text encoder's weights (and template set), for caching text embeddings.

        Recomputed only when a text parameter changed in place since the last call.
        """
        params = self.text_parameters()
        version = sum(p._version for p in params)
        if self._text_fingerprint is None or self._text_fingerprint[0] != version:
            h = hashlib.sha256(self.spec.arch.encode())
            h.update(json.dumps(self.spec.config, sort_keys=True).encode())
            for p in params:
                h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self._text_fingerprint = (version, h.hexdigest()[:24])
        return self._text_fingerprint[1]
