"""SageAttention: ``sage`` (``sageattention.sageattn``, which picks its kernel for the GPU).

Claims, from SageAttention's README and sageattention/core.py:
- ``sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None)``; HND is SDPA's
  (B, H, S, D), so no transpose is needed; the last dim must be contiguous (core.py asserts it);
- fp16 / bf16 only, CUDA only (kernels for Ampere, Ada, Hopper: sm80+);
- head_dim up to 128 (core.py pads < 64 to 64 and 65..127 to 128, and raises above 128);
- different Sq and Skv, and GQA, are supported (README, 2024-11-11); no attention mask at all;
- ``is_causal``: the alignment for Sq != Skv is not documented, so only Sq == Skv is claimed.
- It is approximate by design: INT8 quantisation of Q and K (with K smoothing), FP8 or FP16 for
  P·V. Its errors are larger than fp16 attention's; the tolerance for it is a per-backend ini
  setting (``attn_tolerance``), not a claim of this module.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Backend, Capabilities, Unsupported

NOT_INSTALLED = "sageattention not installed (pip install sageattention --no-build-isolation; needs CUDA, sm80+)"


def sage_attention(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    if attn_mask is not None:
        raise Unsupported("sageattn takes no attn_mask")
    sageattn = importlib.import_module("sageattention").sageattn
    # HND is SDPA's layout; sage needs only the last dim contiguous.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    return sageattn(q, k, v, tensor_layout="HND", is_causal=is_causal, sm_scale=scale)


def _causal_rule(case: Any) -> str | None:
    if case.causal is not None and case.sq != case.skv:
        return "sageattn's causal alignment for Sq != Skv is undocumented"
    return None


def is_available() -> str | None:
    try:
        importlib.import_module("sageattention")
    except ImportError:
        return NOT_INSTALLED
    except Exception as exc:  # built for another torch / CUDA
        return f"sageattention failed to import: {type(exc).__name__}: {exc}"
    import torch

    if not torch.cuda.is_available():
        return f"sageattention needs CUDA (torch {torch.__version__} sees no GPU)"
    arch = torch.cuda.get_device_capability()
    if arch < (8, 0):
        return f"sageattention needs sm80+, this GPU is sm{arch[0]}{arch[1]}"
    return None


def backends() -> list[Backend]:
    import torch

    caps = Capabilities(devices={"cuda"}, dtypes={torch.float16, torch.bfloat16}, head_dims=range(1, 129),
                        masks=(), causal=True, gqa=True, backward=False, constraint=_causal_rule)
    return [Backend("sage", sage_attention, caps, is_available,
                    "sageattention.sageattn (INT8 Q·K, FP8/FP16 P·V; approximate by design)")]
