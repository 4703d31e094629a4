"""SageAttention: ``sage`` (``sageattention.sageattn``, which picks its kernel for the GPU).

Claims, from SageAttention's README and sageattention/core.py:
- ``sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None)``; HND is SDPA's
  (B, H, S, D), so no transpose is needed; the last dim must be contiguous (core.py asserts it);
- by version (read from the installed package, ``versions.installed_version``):
  1.x (Triton): fp16 / bf16 / fp32, head_dim exactly 64, 96 or 128 (core.py asserts it), any GPU
  Triton runs on (sm80+ claimed);
  2.x: fp16 / bf16, head_dim up to 128 (core.py pads < 64 to 64 and 65..127 to 128, raises above
  128), and ``sageattn`` dispatches on an explicit list of architectures, raising
  ``ValueError("Unsupported CUDA architecture")`` outside it (2.0.x/2.1.x: sm80, sm86, sm89, sm90;
  2.2.0: + sm120; later: + sm121). The list is read from the installed ``sageattn``'s own source
  where it can be, else taken from that table: a GPU outside it is an unavailable row;
- different Sq and Skv, and GQA, are supported (README, 2024-11-11); no attention mask at all;
- ``is_causal``: the alignment for Sq != Skv is not documented, so only Sq == Skv is claimed.
- It is approximate by design: INT8 quantisation of Q and K (with K smoothing), FP8 or FP16 for
  P·V. Its errors are larger than fp16 attention's; the tolerance for it is a per-backend ini
  setting (``attn_tolerance``), not a claim of this module.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from .base import Backend, Capabilities, Unsupported
from .versions import installed_version, version_tuple

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


#: sageattn's dispatch list by release, for when its source cannot be read.
_ARCHS = {(2, 0): ("sm80", "sm86", "sm89", "sm90"), (2, 1): ("sm80", "sm86", "sm89", "sm90"),
          (2, 2): ("sm80", "sm86", "sm89", "sm90", "sm120")}


def _version() -> tuple[int, ...]:
    return version_tuple(installed_version("sageattention", "sageattention"))


def supported_archs(sageattn: Any) -> tuple[str, ...] | None:
    """The architectures the installed ``sageattn`` dispatches on (None: no list, 1.x's Triton)."""
    import inspect

    try:
        found = re.findall(r'arch\s*==\s*["\'](sm\d+)["\']', inspect.getsource(sageattn))
    except (OSError, TypeError):  # compiled or wrapped: fall back to the release table
        found = []
    if found:
        return tuple(dict.fromkeys(found))
    version = _version()
    if version and version < (2,):
        return None
    return _ARCHS.get(version[:2], _ARCHS[(2, 2)])


def is_available() -> str | None:
    try:
        sageattn = importlib.import_module("sageattention").sageattn
    except ImportError:
        return NOT_INSTALLED
    except Exception as exc:  # built for another torch / CUDA
        return f"sageattention failed to import: {type(exc).__name__}: {exc}"
    import torch

    if not torch.cuda.is_available():
        return f"sageattention needs CUDA (torch {torch.__version__} sees no GPU)"
    major, minor = torch.cuda.get_device_capability()
    arch = f"sm{major}{minor}"
    archs = supported_archs(sageattn)
    if archs is None:
        return None if (major, minor) >= (8, 0) else f"sageattention needs sm80+, this GPU is {arch}"
    if arch not in archs:
        version = ".".join(map(str, _version())) or "?"
        return f"sageattention {version}'s sageattn supports {', '.join(archs)}; this GPU is {arch}"
    return None


def backends() -> list[Backend]:
    import torch

    half = {torch.float16, torch.bfloat16}
    version = _version()
    if version and version < (2,):
        dtypes, head_dims = {*half, torch.float32}, frozenset({64, 96, 128})
    else:
        dtypes, head_dims = half, range(1, 129)
    caps = Capabilities(devices={"cuda"}, dtypes=dtypes, head_dims=head_dims,
                        masks=(), causal=True, gqa=True, backward=False, constraint=_causal_rule)
    return [Backend("sage", sage_attention, caps, is_available,
                    "sageattention.sageattn (INT8 Q·K, FP8/FP16 P·V; approximate by design)")]
