"""``Inputs`` and the op base class with xformers' own support checks (shapes, dtypes, bias type,
bias alignment, BMGHK, custom scale)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from _math import attend

from . import attn_bias as ab


@dataclass
class Inputs:
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    attn_bias: Any = None
    p: float = 0.0
    scale: float | None = None


def _bias_tensor(bias: Any) -> torch.Tensor | None:
    if isinstance(bias, torch.Tensor):
        return bias
    return getattr(bias, "_subtensor", None)


class AttentionOpBase:
    NAME = "base"
    OPERATOR: Any = True
    SUPPORTED_DEVICES = {"cuda"}
    CUDA_MINIMUM_COMPUTE_CAPABILITY = (5, 0)
    SUPPORTED_DTYPES: set = set()
    SUPPORTED_MAX_K = 256
    SUPPORTED_ATTN_BIAS_TYPES: tuple = (type(None),)
    SUPPORTS_CUSTOM_SCALE = True
    SUPPORTS_BMGHK = True
    IS_DETERMINISTIC = True
    BIAS_ALIGNMENT_BITS = 128
    #: Stand-in only: where the tests run (CPU tensors stand for CUDA ones).
    STANDIN_DEVICES = {"cpu", "cuda"}
    SWAP_LAYOUT = False

    @classmethod
    def is_available(cls) -> bool:
        return True

    @classmethod
    def not_supported_reasons(cls, d: Inputs) -> list[str]:
        reasons = []
        q, k = d.query, d.key
        if q.ndim not in (4, 5) or k.ndim != q.ndim:
            reasons.append("query/key must be BMHK or BMGHK")
            return reasons
        if q.ndim == 5 and not cls.SUPPORTS_BMGHK:
            reasons.append("operator does not support BMGHK format")
        if q.shape[-1] > cls.SUPPORTED_MAX_K:
            reasons.append(f"max(query.shape[-1] != value.shape[-1]) > {cls.SUPPORTED_MAX_K}")
        if q.device.type not in cls.STANDIN_DEVICES:
            reasons.append(f"device={q.device.type}")
        if q.dtype not in cls.SUPPORTED_DTYPES:
            reasons.append(f"dtype={q.dtype} (supported: {cls.SUPPORTED_DTYPES})")
        if type(d.attn_bias) not in cls.SUPPORTED_ATTN_BIAS_TYPES:
            reasons.append(f"attn_bias type is {type(d.attn_bias)}")
        if d.scale is not None and not cls.SUPPORTS_CUSTOM_SCALE:
            reasons.append("has custom scale")
        bias = _bias_tensor(d.attn_bias)
        if bias is not None:
            expected = (*q.shape[:1], *q.shape[2:-1], q.shape[1], k.shape[1])  # (B, [G,] H, Mq, Mkv)
            if tuple(bias.shape) != expected:
                reasons.append(f"Invalid shape for attention bias: {tuple(bias.shape)} (expected {expected})")
            if bias.dtype != q.dtype:
                reasons.append(f"attn_bias dtype {bias.dtype} != query dtype {q.dtype}")
            alignment = cls.BIAS_ALIGNMENT_BITS // torch.finfo(bias.dtype).bits
            if any(bias.stride(i) % alignment for i in range(bias.ndim - 1)):
                reasons.append(f"attn_bias.stride(-2) % {alignment} != 0 (attn_bias.stride() = {bias.stride()})")
        return reasons

    @classmethod
    def compute(cls, d: Inputs) -> torch.Tensor:
        q, k, v = d.query, d.key, d.value
        five = q.ndim == 5
        if five:  # BMGHK -> BMHK with H = G * heads per group
            b, mq, g, hg, kd = q.shape
            q, k, v = (t.reshape(t.shape[0], t.shape[1], g * hg, t.shape[-1]) for t in (q, k, v))
        if cls.SWAP_LAYOUT:
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        bias = _bias_tensor(d.attn_bias)
        if bias is not None and five:
            bias = bias.reshape(bias.shape[0], -1, *bias.shape[-2:])
        causal = "top-left" if isinstance(d.attn_bias, ab.LowerTriangularMask) else None
        out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=d.scale, causal=causal,
                     bias=bias).transpose(1, 2)
        if cls.SWAP_LAYOUT:
            out = out.transpose(1, 2)
        if five:
            out = out.reshape(b, mq, g, hg, out.shape[-1])
        return out


class AttentionBwOpBase(AttentionOpBase):
    """Backward ops take no BMGHK (xformers' AttentionOpBase default, kept by its BwOps)."""

    SUPPORTS_BMGHK = False
