"""Attention math written out, in any dtype, and ``naive``: that math in the case's dtype (matmuls
in the dtype, softmax in fp32).

The fp64 reference (check/reference.py) is this same math in fp64, and the tolerance rule's
same-dtype baseline is the ``naive`` row: one function serves both, so the reference and the baseline
can never disagree on semantics (GQA head mapping, mask kinds, causal alignment, zeros for fully
masked rows).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from .base import Backend, Capabilities
from .source import StandaloneCall, source_of

if TYPE_CHECKING:
    import torch

Causal = Literal["top-left", "bottom-right"] | None


def causal_keep(sq: int, skv: int, alignment: str, device: "torch.device | str" = "cpu") -> "torch.Tensor":
    """Bool (Sq, Skv), True = keep. top-left is SDPA's ``tril``; bottom-right aligns the last query
    with the last key (flash-attn >= 2.1)."""
    import torch

    offset = 0 if alignment == "top-left" else skv - sq
    return torch.ones(sq, skv, dtype=torch.bool, device=device).tril(diagonal=offset)


def expand_kv(k: "torch.Tensor", heads: int) -> "torch.Tensor":
    """(B, Hkv, S, D) -> (B, H, S, D): query head h reads kv head h // (H // Hkv), as SDPA's enable_gqa."""
    hkv = k.shape[1]
    if hkv == heads:
        return k
    if heads % hkv:
        raise ValueError(f"heads ({heads}) must be a multiple of kv heads ({hkv})")
    return k.repeat_interleave(heads // hkv, dim=1)


def attention_probs(
    q: "torch.Tensor",
    k: "torch.Tensor",
    attn_mask: "torch.Tensor | None" = None,
    causal: Causal = None,
    scale: float | None = None,
    *,
    compute_dtype: "torch.dtype",
    softmax_dtype: "torch.dtype",
) -> "torch.Tensor":
    """softmax(q k^T * scale + mask), (B, H, Sq, Skv) in ``softmax_dtype``, k already expanded to H
    heads. Rows with no key left are zeros (torch >= 2.5 SDPA's convention)."""
    import torch

    sq, d, skv = q.shape[2], q.shape[3], k.shape[2]
    q, k = q.to(compute_dtype), k.to(compute_dtype)
    scale = d ** -0.5 if scale is None else scale
    if scale > 0:  # scale q and k by sqrt(scale) before the matmul, as torch's math kernel does, so
        root = math.sqrt(scale)  # half-precision logits do not overflow before they are scaled
        scores = (q * root) @ (k * root).transpose(-2, -1)
    else:
        scores = (q @ k.transpose(-2, -1)) * scale
    scores = scores.to(softmax_dtype)
    keep = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = attn_mask
        else:
            scores = scores + attn_mask.to(softmax_dtype)
    if causal is not None:
        tri = causal_keep(sq, skv, causal, q.device)
        keep = tri if keep is None else keep & tri
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    # A row whose every logit is -inf has no key to attend to: zeros, never NaN.
    dead = torch.isneginf(scores).all(dim=-1, keepdim=True)
    return torch.softmax(scores.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)


def attention_math(
    q: "torch.Tensor",
    k: "torch.Tensor",
    v: "torch.Tensor",
    attn_mask: "torch.Tensor | None" = None,
    causal: Causal = None,
    scale: float | None = None,
    *,
    compute_dtype: "torch.dtype",
    softmax_dtype: "torch.dtype",
) -> "torch.Tensor":
    """softmax(q k^T * scale + mask) v with matmuls in ``compute_dtype`` and the softmax in
    ``softmax_dtype``. Rows with no key left give zeros (torch >= 2.5 SDPA's convention)."""
    heads = q.shape[1]
    probs = attention_probs(q, expand_kv(k, heads), attn_mask, causal, scale,
                            compute_dtype=compute_dtype, softmax_dtype=softmax_dtype)
    return probs.to(compute_dtype) @ expand_kv(v, heads).to(compute_dtype)


def naive_attention(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    import torch

    softmax_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return attention_math(q, k, v, attn_mask, "top-left" if is_causal else None, scale,
                          compute_dtype=q.dtype, softmax_dtype=softmax_dtype).to(q.dtype)


def math_sources() -> tuple[str, ...]:
    """The attention math above, as source for a standalone repro (backends/source.py)."""
    return tuple(source_of(f) for f in (causal_keep, expand_kv, attention_probs, attention_math))


def _standalone(name: str) -> StandaloneCall | None:
    if name != "naive":
        return None
    return StandaloneCall("naive_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)",
                          (*math_sources(), source_of(naive_attention)))


def backends() -> list[Backend]:
    return [Backend("naive", naive_attention, Capabilities(backward=True),
                    description="attention math in the case dtype, softmax in fp32 (the baseline)")]
