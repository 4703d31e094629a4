"""Stand-in for flash-attn 3 (flash-attention/hopper): ``flash_attn_func``, BSHD, fp16/bf16,
headdim a multiple of 8 up to 256, causal bottom-right. Returns ``out`` (``(out, lse)`` in betas:
set ``RETURN_LSE`` to mimic them)."""

from __future__ import annotations

import torch

from _math import attend

SWAP_LAYOUT = False
RETURN_LSE = False


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, qv=None, q_descale=None, k_descale=None,
                    v_descale=None, window_size=(-1, -1), attention_chunk=0, softcap=0.0, num_splits=1,
                    pack_gqa=None, deterministic=False, sm_margin=0, return_attn_probs=False):
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise RuntimeError("FlashAttention-3 stand-in: fp16 / bf16 only")
    if q.shape[-1] % 8 or q.shape[-1] > 256:
        raise RuntimeError("head_size should be a multiple of 8 and at most 256")
    if SWAP_LAYOUT:
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    if q.shape[2] % k.shape[2]:
        raise RuntimeError("Number of heads in key/value must divide number of heads in query")
    out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=softmax_scale,
                 causal="bottom-right" if causal else None).transpose(1, 2)
    if SWAP_LAYOUT:
        out = out.transpose(1, 2)
    if RETURN_LSE or return_attn_probs:
        return out, torch.zeros(out.shape[0], out.shape[2], out.shape[1])
    return out
