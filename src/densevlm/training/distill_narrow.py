"""Start a narrower ViT tower from a wider one: principal components of its residual stream.

A distilled student that is narrower than its source (``tiny-vit-xs``, width 64, from
tiny-teacher's width 128) cannot copy the source's weights, and from a random init it needs
many more steps. This module builds a narrow init that already computes nearly what the wide
tower's dense path computes, in the spirit of SliceGPT (Ashkboos et al. 2024, "Compress Large
Language Models by Deleting Rows and Columns"): the residual stream is projected onto its
principal subspace and every weight that reads or writes it is projected with it.

**The projection.** Let ``x`` be a residual-stream token of the wide tower (width ``D``) and
``x~ = x - mean(x)`` its channel-centred part, the only part a LayerNorm sees. ``U`` holds the
top ``d - 1`` principal directions of ``x~ / |x~|`` pooled over every stage of the dense path
(after ``ln_pre``, after each block) on the given images. The narrow stream is ``z = S x`` with
``S = H [U, 0]^T`` (``[d, D]``), ``H`` the Householder reflection that swaps the last axis with
``1 / sqrt(d)``: the rows of ``S`` are orthogonal to the all-ones vector, so ``mean(z) = 0`` and
a narrow LayerNorm is, up to the factor ``c = sqrt(D / d)``, the wide one seen through ``S``:
``LN_D(x) ~ c S^T LN_d(z)`` with unit gain. Hence, for every linear map ``W`` reading a
LayerNorm with gain ``g`` and bias ``b``, the narrow map is ``c W diag(g) S^T`` with bias
``bias + W b``; every map writing the stream is ``S W`` with bias ``S bias``; the narrow
LayerNorms have unit gain and zero bias except ``ln_pre`` (fitted per channel by least squares
on the images, since its input is not yet the stream) and ``ln_post`` (whose bias carries the
wide one's through ``proj`` by least squares).

**Inner widths.** Attention blocks keep the ``d / head_width`` heads whose projected output has
the most energy on the images; the last block (value path only in the dense map) gets value map
``S W_o W_v`` and an identity output map, and its query and key keep the first heads (the
pooled output is not distilled). MLPs keep the ``mlp_ratio * d`` hidden units with the
most projected output energy. What a dropped head or unit writes on average is added to the
bias of the map that wrote it.

Pure functions on state dicts of open_clip ``VisionTransformer`` towers (``ResidualAttentionBlock``
with ``nn.MultiheadAttention``, batch first, no layer scale), as the tiny architectures build.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from densevlm.errors import DenseVLMError

__all__ = ["dense_path_trace", "narrow_tower"]

_EPS = 1e-5  # open_clip LayerNorm's eps


def _norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm without affine over the last axis."""
    return F.layer_norm(x, x.shape[-1:], eps=_EPS)


def _blocks(state: dict[str, torch.Tensor]) -> int:
    prefix = "transformer.resblocks."
    return 1 + max(int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix))


def dense_path_trace(state: dict[str, torch.Tensor], images: torch.Tensor, heads: int) -> dict[str, Any]:
    """Run a tower's dense path by hand and keep what :func:`narrow_tower` needs.

    Args:
        state: the tower's state dict (keys without the ``visual.`` prefix).
        images: ``[B, 3, H, W]`` normalised images at the tower's input size.
        heads: its attention heads.

    Returns:
        ``embed``: ``[T, D]`` the ``T = B (N + 1)`` tokens before ``ln_pre``; ``stream``: a list
        of ``[T, D]``, the tokens after ``ln_pre`` and after each block; ``head_out``: a list,
        per block with full attention (all but the last), of ``[heads, T, D]`` each head's
        contribution to the stream (bias excluded); ``hidden``: a list, per block, of ``[T, H]``
        GELU outputs; ``dense``: ``[B, N, E]`` the projected patch tokens before normalisation,
        as :class:`~densevlm.backbones.vit.ViTBackbone` computes them.
    """
    s = state
    x = F.conv2d(images, s["conv1.weight"], stride=s["conv1.weight"].shape[-1])
    b, width, gh, gw = x.shape
    if (gh * gw + 1) != s["positional_embedding"].shape[0]:
        raise DenseVLMError(f"images give a {gh}x{gw} grid; the tower was built for its own input size")
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([s["class_embedding"].expand(b, 1, width), x], dim=1) + s["positional_embedding"]
    out: dict[str, Any] = {"embed": x.reshape(-1, width), "stream": [], "head_out": [], "hidden": []}
    x = F.layer_norm(x, (width,), s["ln_pre.weight"], s["ln_pre.bias"], _EPS)
    out["stream"].append(x.reshape(-1, width))
    n_blocks = _blocks(s)
    hw = width // heads
    for i in range(n_blocks):
        p = f"transformer.resblocks.{i}."
        y = F.layer_norm(x, (width,), s[p + "ln_1.weight"], s[p + "ln_1.bias"], _EPS)
        q, k, v = F.linear(y, s[p + "attn.in_proj_weight"], s[p + "attn.in_proj_bias"]).split(width, dim=-1)
        w_o = s[p + "attn.out_proj.weight"]
        if i < n_blocks - 1:
            split = [t.reshape(b, -1, heads, hw).transpose(1, 2) for t in (q, k, v)]
            o = F.scaled_dot_product_attention(*split)  # [B, heads, N, hw]
            per_head = torch.einsum("bhnc,dhc->hbnd", o, w_o.reshape(width, heads, hw))
            out["head_out"].append(per_head.reshape(heads, -1, width))
            attn = per_head.sum(0)
        else:
            attn = F.linear(v, w_o)
        x = x + attn + s[p + "attn.out_proj.bias"]
        u = F.layer_norm(x, (width,), s[p + "ln_2.weight"], s[p + "ln_2.bias"], _EPS)
        a = F.gelu(F.linear(u, s[p + "mlp.c_fc.weight"], s[p + "mlp.c_fc.bias"]))
        out["hidden"].append(a.reshape(-1, a.shape[-1]))
        x = x + F.linear(a, s[p + "mlp.c_proj.weight"], s[p + "mlp.c_proj.bias"])
        out["stream"].append(x.reshape(-1, width))
    y = F.layer_norm(x, (width,), s["ln_post.weight"], s["ln_post.bias"], _EPS)
    out["dense"] = (y @ s["proj"])[:, 1:]
    return out


def _basis(stream: list[torch.Tensor], d: int) -> torch.Tensor:
    """``S`` (``[d, D]``, module docstring) from residual-stream tokens."""
    tokens = torch.cat([_norm(t) for t in stream]).double()  # centred, unit RMS: every stage alike
    eigvals, eigvecs = torch.linalg.eigh(tokens.T @ tokens)
    u = eigvecs[:, torch.argsort(eigvals, descending=True)[: d - 1]]  # [D, d-1]
    v = torch.zeros(d, dtype=torch.float64)
    v[-1] = 1.0
    v = v - torch.full((d,), 1.0 / math.sqrt(d), dtype=torch.float64)
    householder = torch.eye(d, dtype=torch.float64) - 2.0 * torch.outer(v, v) / (v @ v)
    return (householder @ torch.cat([u.T, torch.zeros(1, u.shape[0], dtype=torch.float64)])).float()


def _read(w: torch.Tensor, bias: torch.Tensor, gain: torch.Tensor, ln_bias: torch.Tensor, basis: torch.Tensor,
          c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear map reading ``LN(x)`` (gain, bias) rewritten to read the narrow ``LN_d(z)``."""
    return c * (w * gain) @ basis.T, bias + w @ ln_bias


def narrow_tower(state: dict[str, torch.Tensor], images: torch.Tensor, heads: int, width: int,
                 head_width: int, mlp_ratio: float) -> dict[str, torch.Tensor]:
    """A ``width``-wide state dict computing about what the wide tower ``state`` computes.

    Args:
        state: the wide tower's state dict (no ``visual.`` prefix), ``L`` blocks, width ``D``.
        images: ``[B, 3, H, W]`` normalised images at its input size (a few hundred suffice).
        heads: the wide tower's heads.
        width, head_width, mlp_ratio: the narrow tower's (``L`` blocks too, same patch and
            output width).

    Returns:
        A state dict for the narrow tower (same keys, narrow shapes); see the module docstring.

    Raises:
        DenseVLMError: ``width`` not below ``D``, not a multiple of ``head_width``, or more heads
            or hidden units than the wide tower has.
    """
    wide = state["conv1.weight"].shape[0]
    hidden_d = int(width * mlp_ratio)
    if not 2 <= width < wide or width % head_width:
        raise DenseVLMError(f"narrow width {width} must be below {wide} and a multiple of its head width {head_width}")
    if width // head_width > heads or hidden_d > state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]:
        raise DenseVLMError(f"narrow width {width} needs more heads or MLP units than the wide tower has")
    with torch.no_grad():
        state = {k: v.detach().float() for k, v in state.items()}
        trace = dense_path_trace(state, images.float(), heads)
        basis = _basis(trace["stream"], width)
        c = math.sqrt(wide / width)
        out = _embedding(state, trace, basis)
        n_blocks = _blocks(state)
        for i in range(n_blocks):
            p = f"transformer.resblocks.{i}."
            last = i == n_blocks - 1
            head_out = None if last else trace["head_out"][i]
            out.update(_attention(state, p, head_out, basis, c, heads, width // head_width))
            out.update(_mlp(state, p, trace["hidden"][i], basis, c, hidden_d))
            for ln in ("ln_1", "ln_2"):
                out[p + ln + ".weight"], out[p + ln + ".bias"] = torch.ones(width), torch.zeros(width)
        proj = c * (basis * state["ln_post.weight"]) @ state["proj"]  # [d, E]
        target = state["ln_post.bias"] @ state["proj"]
        out["proj"] = proj
        out["ln_post.weight"] = torch.ones(width)
        out["ln_post.bias"] = torch.linalg.lstsq(proj.T, target[:, None]).solution[:, 0]
    return {k: v.contiguous() for k, v in out.items()}


def _embedding(state: dict[str, torch.Tensor], trace: dict[str, Any], basis: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {
        "conv1.weight": torch.einsum("dD,Dcij->dcij", basis, state["conv1.weight"]),
        "class_embedding": basis @ state["class_embedding"],
        "positional_embedding": state["positional_embedding"] @ basis.T,
    }
    # ln_pre sees the projected embedding; fit its gain and bias per channel to the projected stream
    n = _norm(trace["embed"] @ basis.T)
    target = trace["stream"][0] @ basis.T
    n_mean, t_mean = n.mean(0), target.mean(0)
    gain = ((n - n_mean) * (target - t_mean)).mean(0) / (n - n_mean).pow(2).mean(0).clamp_min(1e-12)
    out["ln_pre.weight"], out["ln_pre.bias"] = gain, t_mean - gain * n_mean
    return out


def _attention(state: dict[str, torch.Tensor], p: str, head_out: torch.Tensor | None, basis: torch.Tensor,
               c: float, heads: int, keep_heads: int) -> dict[str, torch.Tensor]:
    wide = basis.shape[1]
    hw = wide // heads
    w_in, b_in = state[p + "attn.in_proj_weight"], state[p + "attn.in_proj_bias"]
    w_o, b_o = state[p + "attn.out_proj.weight"], state[p + "attn.out_proj.bias"]
    w_in, b_in = _read(w_in, b_in, state[p + "ln_1.weight"], state[p + "ln_1.bias"], basis, c)
    if head_out is None:  # value path only: fold W_o into the value map, identity output
        keep = list(range(keep_heads))
        w_v, b_v = w_in[2 * wide:], b_in[2 * wide:]
        value_w, value_b = basis @ w_o @ w_v, basis @ w_o @ b_v
        out_w, out_b = torch.eye(basis.shape[0]), basis @ b_o
    else:
        energy = (head_out @ basis.T).pow(2).sum(-1).mean(-1)  # [heads]
        keep = sorted(torch.argsort(energy, descending=True)[:keep_heads].tolist())
        dropped = [h for h in range(heads) if h not in keep]
        cols = torch.cat([torch.arange(h * hw, (h + 1) * hw) for h in keep])
        value_w, value_b = w_in[2 * wide:][cols], b_in[2 * wide:][cols]
        out_w = basis @ w_o[:, cols]
        out_b = basis @ (b_o + sum((head_out[h].mean(0) for h in dropped), torch.zeros(wide)))
    rows = torch.cat([torch.arange(h * hw, (h + 1) * hw) for h in keep])
    return {
        p + "attn.in_proj_weight": torch.cat([w_in[:wide][rows], w_in[wide:2 * wide][rows], value_w]),
        p + "attn.in_proj_bias": torch.cat([b_in[:wide][rows], b_in[wide:2 * wide][rows], value_b]),
        p + "attn.out_proj.weight": out_w,
        p + "attn.out_proj.bias": out_b,
    }


def _mlp(state: dict[str, torch.Tensor], p: str, hidden: torch.Tensor, basis: torch.Tensor, c: float,
         keep_units: int) -> dict[str, torch.Tensor]:
    w_fc, b_fc = _read(state[p + "mlp.c_fc.weight"], state[p + "mlp.c_fc.bias"], state[p + "ln_2.weight"],
                       state[p + "ln_2.bias"], basis, c)
    w_proj = basis @ state[p + "mlp.c_proj.weight"]  # [d, H]
    energy = hidden.pow(2).mean(0) * w_proj.pow(2).sum(0)
    order = torch.argsort(energy, descending=True)
    keep, dropped = order[:keep_units].sort().values, order[keep_units:]
    b_proj = basis @ state[p + "mlp.c_proj.bias"] + w_proj[:, dropped] @ hidden[:, dropped].mean(0)
    return {
        p + "mlp.c_fc.weight": w_fc[keep], p + "mlp.c_fc.bias": b_fc[keep],
        p + "mlp.c_proj.weight": w_proj[:, keep], p + "mlp.c_proj.bias": b_proj,
    }
