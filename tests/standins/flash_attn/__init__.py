"""Stand-in for flash-attn 2: ``flash_attn_func`` with its documented signature and layout.

q: (batch, seqlen_q, nheads, headdim); k, v: (batch, seqlen_k, nheads_k, headdim); fp16/bf16;
headdim <= 256; nheads % nheads_k == 0; causal aligned bottom-right from 2.1, top-left before
(set ``__version__`` to be an older release).
"""

from __future__ import annotations

import torch

from _math import attend

__version__ = "2.99.0+standin"
SWAP_LAYOUT = False


def _alignment() -> str:
    major, minor = (int(p) for p in __version__.split(".")[:2])
    return "top-left" if (major, minor) < (2, 1) else "bottom-right"


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                    softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise RuntimeError("FlashAttention only support fp16 and bf16 data type")
    if q.shape[-1] > 256:
        raise RuntimeError("FlashAttention forward only supports head dimension at most 256")
    if dropout_p or window_size != (-1, -1) or alibi_slopes is not None:
        raise NotImplementedError("the stand-in computes plain attention only")
    if SWAP_LAYOUT:  # the deliberate mistake: read BHSD as if it were BSHD
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    b, sq, h, d = q.shape
    if k.shape[0] != b or k.shape[3] != d or h % k.shape[2]:
        raise RuntimeError(f"flash-attn stand-in: bad shapes q {tuple(q.shape)} k {tuple(k.shape)}")
    out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=softmax_scale,
                 causal=_alignment() if causal else None).transpose(1, 2)
    if SWAP_LAYOUT:
        out = out.transpose(1, 2)
    return out


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, block_table=None):
    """Packed sequences: q (total_q, nheads, headdim), k, v (total_k, nheads_k, headdim); sequence i is
    rows cu_seqlens[i]:cu_seqlens[i + 1] of each. Same dtype and head_dim rules as flash_attn_func."""
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise RuntimeError("FlashAttention only support fp16 and bf16 data type")
    if dropout_p or window_size != (-1, -1) or alibi_slopes is not None or block_table is not None:
        raise NotImplementedError("the stand-in computes plain attention only")
    outs = []
    for i in range(len(cu_seqlens_q) - 1):
        qs, qe, ks, ke = (int(x) for x in (cu_seqlens_q[i], cu_seqlens_q[i + 1], cu_seqlens_k[i], cu_seqlens_k[i + 1]))
        outs.append(flash_attn_func(q[None, qs:qe], k[None, ks:ke], v[None, ks:ke], softmax_scale=softmax_scale,
                                    causal=causal)[0])
    return torch.cat(outs, dim=0)
