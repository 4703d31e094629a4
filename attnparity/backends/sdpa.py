"""torch's scaled_dot_product_attention, one row per kernel (math, flash, efficient, cuDNN) and
``sdpa`` with torch's own choice.

Each kernel is pinned with ``torch.nn.attention.sdpa_kernel``, so a case the kernel cannot take
raises instead of silently falling back to another kernel (which would test the wrong thing).
Claims follow torch's sdp_utils checks (torch/csrc/aten/native/transformers/sdp_utils*.cpp): on CPU
math and flash take everything; on CUDA flash/efficient/cuDNN have dtype, head_dim and mask rules.
"""

from __future__ import annotations

from typing import Any

from .base import Backend, Capabilities, Unsupported

# name -> SDPBackend member name, or None for torch's own choice
_KERNELS = {
    "sdpa-math": "MATH",
    "sdpa-flash": "FLASH_ATTENTION",
    "sdpa-efficient": "EFFICIENT_ATTENTION",
    "sdpa-cudnn": "CUDNN_ATTENTION",
    "sdpa": None,
}


def _make_fn(kernel: str | None):
    def sdpa_attention(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
        import torch
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel

        gqa = q.shape[1] != k.shape[1]
        call = lambda: F.scaled_dot_product_attention(  # noqa: E731
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=gqa)
        if kernel is None:
            return call()
        try:
            with sdpa_kernel([getattr(SDPBackend, kernel)]):
                return call()
        except RuntimeError as exc:
            if "No viable backend" in str(exc) or "No available kernel" in str(exc):
                raise Unsupported(f"torch SDPA {kernel} kernel refused the input: {str(exc).splitlines()[0]}") from exc
            raise

    sdpa_attention.__name__ = f"sdpa_{(kernel or 'auto').lower()}"
    return sdpa_attention


def _kernel_rules(kernel: str):
    """Rules of torch SDPA (and of its fused CUDA kernels) that Capabilities' fields cannot state."""

    def rule(case: Any) -> str | None:
        if case.mask != "none" and case.causal:
            return "torch SDPA refuses attn_mask together with is_causal"
        if kernel == "FLASH_ATTENTION" and case.mask != "none" and getattr(case, "mask_rank", 4) == 3:
            return "torch's flash kernel takes 2-D or 4-D masks only (sdp_utils_cpp.cpp check_attn_mask_shape)"
        if not case.device.startswith("cuda"):
            return None
        if kernel == "FLASH_ATTENTION":
            if case.mask != "none":
                return "CUDA flash takes no attn_mask"
            if case.causal and case.sq != case.skv:
                return "CUDA flash refuses is_causal with Sq != Skv"
        if kernel == "CUDNN_ATTENTION" and case.causal and case.sq != case.skv:
            return "cuDNN refuses is_causal with Sq != Skv"
        if case.layout == "expanded" and kernel != "MATH":
            return "fused CUDA kernels need a non-zero stride on the last dims"
        return None

    return rule


def _availability(kernel: str | None):
    def is_available() -> str | None:
        import torch

        if kernel in (None, "MATH", "FLASH_ATTENTION"):
            return None  # math and flash run on CPU too
        if not torch.cuda.is_available():
            return f"torch SDPA {kernel.lower()} kernel needs CUDA (torch {torch.__version__} sees no GPU)"
        if kernel == "CUDNN_ATTENTION" and torch.cuda.get_device_capability() < (8, 0):
            return "cuDNN attention needs sm80+"
        return None

    return is_available


def _capabilities(kernel: str | None) -> Capabilities:
    import torch

    half = {torch.float16, torch.bfloat16}
    every = {torch.float32, *half}
    on_cuda = torch.cuda.is_available()
    if kernel in (None, "MATH"):
        return Capabilities(dtypes=every, backward=True, constraint=_kernel_rules(kernel))
    if kernel == "FLASH_ATTENTION":
        # CPU flash takes every dtype, mask and head_dim; CUDA flash is fp16/bf16, D <= 256.
        return Capabilities(dtypes=half if on_cuda else every,
                            head_dims=range(1, 257) if on_cuda else None,
                            backward=True, constraint=_kernel_rules(kernel),
                            deterministic=not on_cuda)
    if kernel == "EFFICIENT_ATTENTION":
        return Capabilities(devices={"cuda"}, dtypes=every, backward=True,
                            constraint=_kernel_rules(kernel), deterministic=False)
    # cuDNN: fp16/bf16, head_dim a multiple of 8 up to 128 (sdp_utils.cpp check_cudnn_tensor_shapes)
    return Capabilities(devices={"cuda"}, dtypes=half, head_dims=range(8, 129, 8), backward=True,
                        constraint=_kernel_rules(kernel), deterministic=False)


def backends() -> list[Backend]:
    descriptions = {
        "sdpa-math": "torch SDPA, math kernel pinned",
        "sdpa-flash": "torch SDPA, flash kernel pinned (CPU flash on a CPU machine)",
        "sdpa-efficient": "torch SDPA, memory-efficient kernel pinned",
        "sdpa-cudnn": "torch SDPA, cuDNN kernel pinned",
        "sdpa": "torch SDPA with torch's own kernel choice",
    }
    return [Backend(name, _make_fn(kernel), _capabilities(kernel), _availability(kernel), descriptions[name])
            for name, kernel in _KERNELS.items()]
