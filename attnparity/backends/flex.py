"""torch's ``flex_attention``: ``flex`` (torch.compile'd, the fused kernel users deploy) and
``flex-eager`` (uncompiled: the unfused reference path torch ships beside it).

How the contract maps onto flex (torch/nn/attention/flex_attention.py):
- a bool mask and causal become a ``mask_mod`` turned into a BlockMask (``create_block_mask``), so
  masked blocks are skipped as in real use; causal is top-left (``kv_idx <= q_idx``), SDPA's;
- an additive float mask becomes a ``score_mod`` that adds the bias (flex has no other way);
- GQA goes through ``enable_gqa`` (query head h reads kv head h // (H // Hkv), as SDPA);
- ``scale`` is passed through (None means 1/sqrt(D) there too).

Claims, from torch's own checks: flex refuses backward on CPU (``_validate_device``); the compiled
CUDA (Triton) kernel needs head_dim >= 16 (``tl.dot``; inductor/kernel/flex/flex_attention.py) and
rounds other head_dims up to a power of two itself; the eager path takes any head_dim. torch <= 2.6
took only powers of two (see ``_head_dims``). A fully
masked row gives zeros in eager flex (measured on torch 2.13 CPU, bool and -inf float masks); the
compiled kernel is claimed the same and the matrix checks it.

The finfo.min convention differs by kernel. A row whose every key an additive mask pushes to
finfo.min has equal logits, so the reference (and eager flex, and the compiled C++ kernel on CPU,
measured on torch 2.13) gives it the mean of V. The compiled Triton kernel multiplies the scores by
1/ln2 after the score_mod, for exp2 (``post_mod_scores *= RCP_LN2`` in
torch/_inductor/kernel/flex/templates/common.py.jinja): finfo.min of fp32 or bf16 overflows to -inf,
the row counts as fully masked and gives 0. On CUDA the compiled row therefore declares
``fully_masked="finite"``: such rows (and rows with no key) are its own documented value, checked
finite, not judged against the mean of V (check/parity.finite_convention_rows). ``flex`` compiles through
compiled.compiled_fn (dynamic shapes, fullgraph), so it runs on CPU too, opt-in there
(docs/compile.md); it claims the scales a compiled graph bakes in (compiled.CLAIMED_SCALES).
"""

from __future__ import annotations

import warnings
from typing import Any

from . import compiled
from .base import Backend, Capabilities

def _mods(q: Any, k: Any, attn_mask: Any, is_causal: bool) -> tuple[Any, Any]:
    """(score_mod, block_mask) for the contract's mask and causal flag."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask

    b, h, sq, _ = q.shape
    skv = k.shape[2]
    keep = None
    score_mod = None
    if attn_mask is not None:
        # Broadcast to the full (B, H, Sq, Skv) as a view: the mods index it with the flex indices.
        full = attn_mask.expand(b, h, sq, skv)
        if full.dtype == torch.bool:
            keep = full
        else:
            bias = full

            def score_mod(score, b_idx, h_idx, q_idx, kv_idx):
                return score + bias[b_idx, h_idx, q_idx, kv_idx].to(score.dtype)

    if keep is None and not is_causal:
        return score_mod, None

    if keep is not None and is_causal:
        def mask_mod(b_idx, h_idx, q_idx, kv_idx):
            return keep[b_idx, h_idx, q_idx, kv_idx] & (kv_idx <= q_idx)
    elif keep is not None:
        def mask_mod(b_idx, h_idx, q_idx, kv_idx):
            return keep[b_idx, h_idx, q_idx, kv_idx]
    else:
        def mask_mod(b_idx, h_idx, q_idx, kv_idx):
            return kv_idx <= q_idx  # top-left, SDPA's alignment

    batch = b if keep is not None else None
    heads = h if keep is not None else None
    return score_mod, create_block_mask(mask_mod, batch, heads, sq, skv, device=q.device)


def _flex_call(q: Any, k: Any, v: Any, attn_mask: Any, is_causal: bool, scale: float | None, gqa: bool) -> Any:
    """The mods, the BlockMask and the kernel call, in one function: compiled, the mods are traced
    into the graph (closures built outside it are new objects per call, and dynamo would recompile
    for each one)."""
    from torch.nn.attention.flex_attention import flex_attention

    score_mod, block_mask = _mods(q, k, attn_mask, is_causal)
    return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale,
                          enable_gqa=gqa)


def _eager(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    with warnings.catch_warnings():
        # "flex_attention called without torch.compile()": uncompiled is the point of this row.
        warnings.simplefilter("ignore", UserWarning)
        return _flex_call(q, k, v, attn_mask, is_causal, scale, q.shape[1] != k.shape[1])


def _compiled_available() -> str | None:
    return _eager_available() or compiled.available()


def _eager_available() -> str | None:
    import torch

    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no flex_attention (needs torch >= 2.5)"
    return None


def _head_dims(lowest: int) -> "frozenset[int] | range | None":
    """Head dims flex takes on this torch. torch <= 2.6 only took powers of two >= 16 (its own
    ``_supported_head_dim``); later versions take any, rounding up inside the Triton kernel."""
    try:
        from torch.nn.attention import flex_attention as fa
    except ImportError:
        return None
    supported = getattr(fa, "_supported_head_dim", None)
    if supported is not None:
        return frozenset(d for d in range(1, 1025) if supported(d) and d >= lowest)
    return range(lowest, 257) if lowest > 1 else None


#: Input structures a forward item of ``flex`` tries (Backend.structures): fewer than the other
#: compiled rows', as each costs more (its structure is finer, and a graph is 8-10 s in inductor on
#: a quiet 2-core CPU against 3-4 s for naive+compile: docs/compile.md).
STRUCTURES = 4


#: flex's block size: create_block_mask guards a sequence length on either side of it.
BLOCK = 128


def structure_key(case: Any) -> tuple[Any, ...]:
    """What compiled flex compiles a graph per besides check/strategies.structure (measured with
    TORCH_LOGS=recompiles, torch 2.13 CPU): the head counts and head_dim, which flex's checks and the
    GQA split fix as constants, and whether each sequence length is within one block."""
    return (case.heads, case.kv_heads, case.head_dim, case.sq <= BLOCK, case.skv <= BLOCK)


def backends() -> list[Backend]:
    import torch

    every = {torch.float32, torch.float16, torch.bfloat16}
    # flex has no backward on CPU (flex_attention._validate_device); the caps are built once, for
    # the device this process will run on, as sdpa.py does.
    backward = torch.cuda.is_available()
    triton = torch.cuda.is_available()  # the compiled kernel is Triton's: exp2 after the score_mod
    return [
        # Compiled with dynamic shapes (compiled.compiled_fn): a graph per mask kind, dtype and scale,
        # not per drawn shape, so the row runs on CPU too (opt-in there: docs/compile.md).
        Backend("flex", compiled.compiled_fn("flex", _flex_call),
                Capabilities(dtypes=compiled.claimed_dtypes(), head_dims=_head_dims(16), backward=backward,
                             fully_masked="finite" if triton else "zero", constraint=compiled.scale_rule),
                _compiled_available, "torch.compile(flex_attention): the fused kernel (Triton on CUDA, C++ on CPU)",
                opt_in=compiled.opt_in(), structures=STRUCTURES, structure_key=structure_key),
        Backend("flex-eager", _eager,
                Capabilities(dtypes=every, head_dims=_head_dims(1), backward=backward),
                _eager_available, "flex_attention uncompiled (unfused math path)"),
    ]
