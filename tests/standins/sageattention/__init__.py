"""Stand-in for SageAttention: ``sageattn(q, k, v, tensor_layout="HND", is_causal=False,
sm_scale=None)``; HND = (batch, heads, seq, dim), NHD = (batch, seq, heads, dim). Computes exactly
(the real one quantises) and, as the real kernels, makes no autograd node.

Refuses what the installed release refuses (set ``__version__``): 2.x: fp16/bf16, head_dim <= 128,
and the architectures outside its dispatch list (2.2.0's, written as core.py writes it, so the
adapter can read the list from this source); 1.x: head_dim in 64, 96, 128."""

from __future__ import annotations

import torch

from _math import attend

__version__ = "2.2.0+standin"
SWAP_LAYOUT = False


def _arch() -> str:
    major, minor = torch.cuda.get_device_capability()
    return f"sm{major}{minor}"


def sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False, **kwargs):
    if __version__.startswith("1."):
        assert q.shape[-1] in [64, 96, 128], "headdim should be in [64, 96, 128]."
        return _attend(q, k, v, tensor_layout, is_causal, sm_scale)
    arch = _arch()
    if arch == "sm80":
        pass
    elif arch == "sm86":
        pass
    elif arch == "sm89":
        pass
    elif arch == "sm90":
        pass
    elif arch == "sm120":
        pass
    else:
        raise ValueError(f"Unsupported CUDA architecture: {arch}")
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError("sageattn stand-in: q, k, v must be fp16 or bf16")
    if q.shape[-1] > 128:
        raise ValueError(f"Unsupported head_dim: {q.shape[-1]}")
    return _attend(q, k, v, tensor_layout, is_causal, sm_scale)


def _attend(q, k, v, tensor_layout, is_causal, sm_scale):
    assert q.stride(-1) == 1 and k.stride(-1) == 1 and v.stride(-1) == 1, "Last dim of qkv must be contiguous."
    layout = tensor_layout
    if SWAP_LAYOUT:
        layout = "NHD" if layout == "HND" else "HND"
    if layout == "NHD":
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    with torch.no_grad():
        out = attend(q, k, v, scale=sm_scale, causal="top-left" if is_causal else None)
    return out.transpose(1, 2) if layout == "NHD" else out
