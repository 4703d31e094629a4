"""Stand-in for torch's per-kernel SDPA checks (``torch.backends.cuda.can_use_*_attention``), which
answer only on a CUDA build with a GPU. Each refuses what torch 2.13's sdp_utils.cpp refuses for
the cases the matrix draws, with a warning worded like torch's when ``debug`` is set:

- memory-efficient: no GQA (``check_batch_size_and_num_heads_dense<false>``), last dims of stride 1;
- flash: no attn_mask, no is_causal with Sq != Skv, head_dim <= 256, fp16/bf16, and (as on sm86 /
  sm89) no head_dim > 192 when an input requires grad;
- cuDNN: fp16/bf16, head_dim a multiple of 8 up to 128.
"""

from __future__ import annotations

import warnings

import torch

HALF = (torch.float16, torch.bfloat16)


def _refuse(debug: bool, why: str) -> bool:
    if debug:
        warnings.warn(why)
    return False


def _same_heads(params, debug: bool) -> bool:
    q, k, v = params.query, params.key, params.value
    if q.shape[:2] != k.shape[:2] or q.shape[:2] != v.shape[:2]:
        return _refuse(debug, "Both fused kernels require query, key and value to have the same batch size and "
                              f"number of heads. Query.sizes(): {tuple(q.shape)}, Key.sizes(): {tuple(k.shape)}")
    return True


def _grad(params) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in (params.query, params.key, params.value))


def can_use_efficient_attention(params, debug: bool = False) -> bool:
    if not _same_heads(params, debug):
        return False
    if any(t.stride(-1) != 1 for t in (params.query, params.key, params.value)):
        return _refuse(debug, "All fused kernels require the last dimension of the input to have stride 1.")
    return True


def can_use_flash_attention(params, debug: bool = False) -> bool:
    q, k = params.query, params.key
    if params.attn_mask is not None:
        return _refuse(debug, "Flash Attention does not support non-null attn_mask.")
    if params.is_causal and q.shape[-2] != k.shape[-2]:
        return _refuse(debug, "Flash attention does not support the is_causal flag when seqlen_q != seqlen_k.")
    if q.dtype not in HALF:
        return _refuse(debug, f"Expected query, key and value to all be of dtype: {{Half, BFloat16}}. Got {q.dtype}")
    if q.shape[-1] > 256:
        return _refuse(debug, f"Flash attention requires q,k,v to have head dimension <= 256, got {q.shape[-1]}")
    if _grad(params) and q.shape[-1] > 192:
        return _refuse(debug, "Flash attention currently doesn't support training with head_dim ∈ (192, 224] or "
                              "head_dim > 224 on gpu architectures in the range[sm86, sm89].")
    return True


def can_use_cudnn_attention(params, debug: bool = False) -> bool:
    q = params.query
    if q.dtype not in HALF:
        return _refuse(debug, f"cuDNN attention requires Half or BFloat16, got {q.dtype}")
    if q.shape[-1] % 8 or q.shape[-1] > 128:
        return _refuse(debug, f"cuDNN attention requires head_dim a multiple of 8 up to 128, got {q.shape[-1]}")
    return True
