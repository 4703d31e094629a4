"""torch's scaled_dot_product_attention, one row per kernel (math, flash, efficient, cuDNN) and
``sdpa`` with torch's own choice.

Each kernel is pinned with ``torch.nn.attention.sdpa_kernel``, so a case the kernel cannot take
raises instead of silently falling back to another kernel (which would test the wrong thing).

What a fused CUDA kernel takes is asked of torch itself, case by case, before the case runs:
``torch.backends.cuda.can_use_{flash,efficient,cudnn}_attention(SDPAParams(...))`` runs the same
filters (sdp_utils.cpp) that ``select_sdp_backend`` runs when the kernel is pinned, so a case torch
would refuse is "not claimed" (a skip with torch's own reason), never a contract violation that
stops the search. Those functions exist since torch 2.1 (cuDNN's since 2.3) and answer only on a
CUDA build with a GPU; where they cannot answer, the static rules below (read from sdp_utils.cpp)
stand in. On CPU, math and flash take everything the matrix draws.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

from .base import Backend, Capabilities, Unsupported
from .source import StandaloneCall, source_of

# name -> SDPBackend member name, or None for torch's own choice
_KERNELS = {
    "sdpa-math": "MATH",
    "sdpa-flash": "FLASH_ATTENTION",
    "sdpa-efficient": "EFFICIENT_ATTENTION",
    "sdpa-cudnn": "CUDNN_ATTENTION",
    "sdpa": None,
}
#: The torch.backends.cuda function that answers for each fused kernel.
_TORCH_CHECK = {
    "FLASH_ATTENTION": "can_use_flash_attention",
    "EFFICIENT_ATTENTION": "can_use_efficient_attention",
    "CUDNN_ATTENTION": "can_use_cudnn_attention",
}


def sdpa_call(q, k, v, attn_mask=None, is_causal=False, scale=None, kernel=None):
    """torch SDPA with ``kernel`` (an SDPBackend member name) pinned, or torch's own choice (None)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # enable_gqa only when needed: torch < 2.5 has no such keyword.
    extra = {"enable_gqa": True} if q.shape[1] != k.shape[1] else {}
    if kernel is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, **extra)
    with sdpa_kernel([getattr(SDPBackend, kernel)]):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, **extra)


def _make_fn(kernel: str | None):
    def sdpa_attention(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
        try:
            return sdpa_call(q, k, v, attn_mask, is_causal, scale, kernel)
        except RuntimeError as exc:
            if kernel is not None and ("No viable backend" in str(exc) or "No available kernel" in str(exc)):
                raise Unsupported(f"torch SDPA {kernel} kernel refused the input: {str(exc).splitlines()[0]}") from exc
            raise

    sdpa_attention.__name__ = f"sdpa_{(kernel or 'auto').lower()}"
    return sdpa_attention


def _standalone(name: str) -> StandaloneCall | None:
    """How a standalone repro calls row ``name`` (backends/source.py)."""
    if name not in _KERNELS:
        return None
    return StandaloneCall(f"sdpa_call(q, k, v, attn_mask, is_causal, scale, kernel={_KERNELS[name]!r})",
                          (source_of(sdpa_call),))


# -- what torch says a kernel takes ---------------------------------------------------------------
def probe_tensors(case: Any) -> tuple[Any, Any, Any, Any]:
    """The case's own (q, k, v, attn_mask), so torch judges the very strides, mask shape and dtype
    the case will pass (a test swaps this for CPU tensors to stand for CUDA ones)."""
    return case.tensors()


def torch_refusal(kernel: str, case: Any, backward: bool) -> str | None:
    """Why torch's own check refuses ``case`` for the pinned fused ``kernel`` (None: it takes it,
    or torch cannot answer here). With ``backward`` the case must also be taken with inputs that
    require grad: the harness judges gradients on the same claimed cases, and some filters
    (e.g. flash's head_dim > 192 backward on sm86/sm89) look at requires_grad."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    check = getattr(torch.backends.cuda, _TORCH_CHECK[kernel], None)
    params_type = getattr(torch.backends.cuda, "SDPAParams", None)
    if check is None or params_type is None:
        return None
    q, k, v, mask = probe_tensors(case)
    gqa = q.shape[1] != k.shape[1]
    for grad in (False, True) if backward else (False,):
        leaves = [t.detach().requires_grad_(grad) for t in (q, k, v)]
        try:
            params = params_type(*leaves, mask, 0.0, case.causal is not None, gqa)
        except TypeError:  # torch < 2.5: SDPAParams has no enable_gqa
            params = params_type(*leaves, mask, 0.0, case.causal is not None)
        # Pinned, as the call will be: the kernel's "disabled at runtime" filter then passes.
        with sdpa_kernel([getattr(SDPBackend, kernel)]), torch.enable_grad(), \
                warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            taken = check(params, True)
        if not taken:
            why = "; ".join(str(w.message).strip() for w in seen if str(w.message).strip())
            return (f"torch {torch.__version__} {_TORCH_CHECK[kernel]}{' (with grads)' if grad else ''} "
                    f"refuses it{': ' + why if why else ''}")
    return None


@functools.lru_cache(maxsize=4096)
def _asked(kernel: str, case: Any, backward: bool) -> str | None:
    # The harness asks the same case several times (fit, draw filter, each check): build its
    # tensors once. Cases are frozen dataclasses, so they key the cache.
    return torch_refusal(kernel, case, backward)


def _torch_answers(kernel: str) -> bool:
    """True where torch can be asked about ``kernel``: a GPU is present and this torch has the check."""
    import torch

    return (torch.cuda.is_available() and hasattr(torch.backends.cuda, "SDPAParams")
            and hasattr(torch.backends.cuda, _TORCH_CHECK[kernel]))


def _kernel_rules(kernel: str | None, backward: bool = True):
    """Rules of torch SDPA (and of its fused CUDA kernels) that Capabilities' fields cannot state."""

    def rule(case: Any) -> str | None:
        if case.mask != "none" and case.causal:
            return "torch SDPA refuses attn_mask together with is_causal"
        if kernel == "FLASH_ATTENTION" and case.mask != "none" and getattr(case, "mask_rank", 4) == 3:
            return "torch's flash kernel takes 2-D or 4-D masks only (sdp_utils_cpp.cpp check_attn_mask_shape)"
        if kernel in (None, "MATH") or not case.device.startswith("cuda"):
            return None
        if _torch_answers(kernel):
            return _asked(kernel, case, backward)
        return _static_rule(kernel, case)

    return rule


def _static_rule(kernel: str, case: Any) -> str | None:
    """sdp_utils.cpp's filters as read for torch 2.1-2.13, for a torch that cannot be asked."""
    if kernel == "FLASH_ATTENTION":
        if case.mask != "none":
            return "CUDA flash takes no attn_mask"
        if case.causal and case.sq != case.skv:
            return "CUDA flash refuses is_causal with Sq != Skv"
    if kernel == "EFFICIENT_ATTENTION" and case.kv_heads != case.heads:
        return "the memory-efficient kernel refuses GQA (check_batch_size_and_num_heads_dense<false>)"
    if kernel == "CUDNN_ATTENTION" and case.causal and case.sq != case.skv:
        return "cuDNN refuses is_causal with Sq != Skv"
    if case.layout == "expanded":
        return "fused CUDA kernels need a non-zero stride on the last dims"
    return None


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
        # GQA is compiled out of this kernel's dense path in every torch through 2.13
        # (check_batch_size_and_num_heads_dense<false /*supports_grouped_query_attention*/>), so
        # the field says no: the edge corpus then runs its GQA cases with kv_heads = heads.
        return Capabilities(devices={"cuda"}, dtypes=every, gqa=False, backward=True,
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
