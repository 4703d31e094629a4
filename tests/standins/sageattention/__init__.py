"""Stand-in for SageAttention: ``sageattn(q, k, v, tensor_layout="HND", is_causal=False,
sm_scale=None)``; HND = (batch, heads, seq, dim), NHD = (batch, seq, heads, dim); fp16/bf16;
head_dim <= 128; the last dim must be contiguous. Computes exactly (the real one quantises)."""

from __future__ import annotations

import torch

from _math import attend

SWAP_LAYOUT = False


def sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False, **kwargs):
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError("sageattn stand-in: q, k, v must be fp16 or bf16")
    if q.shape[-1] > 128:
        raise ValueError(f"Unsupported head_dim: {q.shape[-1]}")
    assert q.stride(-1) == 1 and k.stride(-1) == 1 and v.stride(-1) == 1, "Last dim of qkv must be contiguous."
    layout = tensor_layout
    if SWAP_LAYOUT:
        layout = "NHD" if layout == "HND" else "HND"
    if layout == "NHD":
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    out = attend(q, k, v, scale=sm_scale, causal="top-left" if is_causal else None)
    return out.transpose(1, 2) if layout == "NHD" else out
