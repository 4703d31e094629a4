"""flash-attn: ``flash-attn2`` (``flash_attn.flash_attn_func``) and ``flash-attn3``
(``flash_attn_interface.flash_attn_func``, the Hopper build from flash-attention/hopper).

Both take (B, S, H, D) ("BSHD"): the adapter transposes SDPA's (B, H, S, D) in and out. Claims,
from flash-attention's README and interfaces:
- fp16 and bf16 only; CUDA only; FA2 needs Ampere or newer (sm80+), FA3 Hopper (sm90);
- FA2: every head_dim up to 256 (its Python wrapper pads to a multiple of 8 itself); FA3: head_dim
  a multiple of 8 up to 256 (the C++ api checks the alignment, the wrapper does not pad);
- GQA/MQA natively (K/V with fewer heads; query head h reads kv head h // (H // Hkv));
- no arbitrary attention mask at all;
- ``causal=True`` is aligned to the BOTTOM-RIGHT corner since 2.1 ("If the row of the mask is all
  zero, the output will be zero": rows before the diagonal give zeros, the contract's convention);
  before 2.1 it was aligned TOP-LEFT (flash-attn's README, "Changes in v2.1"), so the claim follows
  the installed version (``versions.installed_version``); FA3 is bottom-right from its first release;
- FA2 backward at a (padded) head_dim in 193..224 needs sm80 or sm90 (flash_api.cpp: "head dim 224
  with/without dropout requires A100/A800 or H100/H800"): such cases are not claimed on other GPUs;
- forward is deterministic ("The forward pass is always deterministic"); backward is implemented.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Backend, Capabilities, Unsupported
from .versions import installed_version, version_tuple

_INSTALL = {
    "flash_attn": "flash-attn not installed (pip install flash-attn --no-build-isolation; needs CUDA, sm80+)",
    "flash_attn_interface": "flash-attn 3 (flash_attn_interface) not installed (build flash-attention/hopper "
                            "from source; needs CUDA 12.3+ and an sm90 Hopper GPU)",
}
_MIN_ARCH = {"flash_attn": (8, 0), "flash_attn_interface": (9, 0)}


def _load(module: str) -> Any:
    return importlib.import_module(module).flash_attn_func


def _make_fn(module: str):
    def flash_attention(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
        if attn_mask is not None:
            raise Unsupported("flash-attn takes no attn_mask")
        func = _load(module)
        # SDPA (B, H, S, D) -> flash-attn (B, S, H, D); transposes are views, flash-attn makes the
        # last dim contiguous itself.
        out = func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                   softmax_scale=scale, causal=is_causal)
        if isinstance(out, tuple):  # FA3 betas return (out, softmax_lse)
            out = out[0]
        return out.transpose(1, 2)

    flash_attention.__name__ = f"{module}_func"
    return flash_attention


def _availability(module: str):
    def is_available() -> str | None:
        try:
            _load(module)
        except ImportError:
            return _INSTALL[module]
        except Exception as exc:  # an ABI mismatch with this torch shows up here
            return f"{module} failed to import: {type(exc).__name__}: {exc}"
        import torch

        if not torch.cuda.is_available():
            return f"{module} needs CUDA (torch {torch.__version__} sees no GPU)"
        arch = torch.cuda.get_device_capability()
        need = _MIN_ARCH[module]
        if module == "flash_attn_interface" and arch[0] != 9:
            return f"flash-attn 3 needs a Hopper GPU (sm90), this one is sm{arch[0]}{arch[1]}"
        if arch < need:
            return f"{module} needs sm{need[0]}{need[1]}+, this GPU is sm{arch[0]}{arch[1]}"
        return None

    return is_available


def fa2_causal() -> str:
    """The alignment the installed flash-attn 2's ``causal=True`` means."""
    version = version_tuple(installed_version("flash_attn", "flash-attn", "flash_attn"))
    return "top-left" if version and version < (2, 1) else "bottom-right"


def _fa2_backward_rule(case: Any) -> str | None:
    import torch

    padded = -(-case.head_dim // 8) * 8
    if 192 < padded <= 224 and case.device.startswith("cuda") and torch.cuda.is_available():
        arch = torch.cuda.get_device_capability()
        if arch not in ((8, 0), (9, 0)):
            return (f"flash-attn 2 backward at head_dim {case.head_dim} needs sm80 or sm90, this GPU is "
                    f"sm{arch[0]}{arch[1]}")
    return None


def backends() -> list[Backend]:
    import torch

    half = {torch.float16, torch.bfloat16}
    common = dict(devices={"cuda"}, dtypes=half, masks=(), gqa=True, backward=True)
    causal2 = fa2_causal()
    return [
        Backend("flash-attn2", _make_fn("flash_attn"),
                Capabilities(head_dims=range(1, 257), causal=causal2, constraint=_fa2_backward_rule, **common),
                _availability("flash_attn"),
                f"flash_attn.flash_attn_func (FlashAttention-2), BSHD, causal {causal2}"),
        Backend("flash-attn3", _make_fn("flash_attn_interface"),
                Capabilities(head_dims=range(8, 257, 8), causal="bottom-right", **common),
                _availability("flash_attn_interface"), "flash_attn_interface.flash_attn_func (FlashAttention-3, Hopper)"),
    ]
