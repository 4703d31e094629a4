"""``naive``: attention math in the case's dtype (matmuls in the dtype, softmax in fp32).

It is the same-dtype baseline of the tolerance rule and a row of the matrix like any other.
"""

from __future__ import annotations

from .base import Backend, Capabilities


def naive_attention(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    import torch

    from ..reference import attention_math

    softmax_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return attention_math(q, k, v, attn_mask, "top-left" if is_causal else None, scale,
                          compute_dtype=q.dtype, softmax_dtype=softmax_dtype).to(q.dtype)


def backends() -> list[Backend]:
    return [Backend("naive", naive_attention, Capabilities(backward=True),
                    description="attention math in the case dtype, softmax in fp32 (the baseline)")]
