"""The mutant zoo: attention backends with one planted bug each, modelled on real bug classes.

Each is registered the way a vendor would (``register_backend`` from a conftest.py) and must be
caught by the DEFAULT ``pytest --attn-backends=<mutant>`` run. ``CAUGHT_BY`` names the check(s)
expected to catch each one. Which layer can see each at all (op-level checks, pipelines) is measured,
not declared: docs/reports/detection.md, section "Which layer sees each bug", made by scripts/detection.py.
"""

from __future__ import annotations

import math

import torch

from attnparity import Backend, Capabilities
from attnparity.backends.naive import causal_keep, expand_kv


def _math(q, k, v, attn_mask=None, causal=None, scale=None, *, softmax_dtype=torch.float32,
          mask_sign=1.0, kv_map=None, max_trick=True, fully_masked_nan=False):
    """Plain attention with the knobs the mutants turn (the correct setting is the default)."""
    heads, sq, d = q.shape[1], q.shape[2], q.shape[3]
    k, v = (expand_kv(t, heads) if kv_map is None else kv_map(t, heads) for t in (k, v))
    scale = d ** -0.5 if scale is None else scale
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale if max_trick else (q @ k.transpose(-2, -1)) * scale
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + mask_sign * attn_mask.to(scores.dtype)
    if causal is not None:
        scores = scores.masked_fill(~causal_keep(sq, k.shape[2], causal, q.device), float("-inf"))
    if not max_trick:  # exp without subtracting the row max, in the input dtype
        e = torch.exp(scores)
        probs = e / e.sum(-1, keepdim=True)
    else:
        s = scores.to(softmax_dtype)
        dead = torch.isneginf(s).all(-1, keepdim=True)
        probs = torch.softmax(s if fully_masked_nan else s.masked_fill(dead, 0), dim=-1)
        if not fully_masked_nan:
            probs = probs.masked_fill(dead, 0)
    return (probs.to(v.dtype) @ v).to(q.dtype)


def _causal(is_causal):
    return "top-left" if is_causal else None


def wrong_scale(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # 1/d instead of 1/sqrt(d) when no scale is given
    return _math(q, k, v, attn_mask, _causal(is_causal), q.shape[-1] ** -1.0 if scale is None else scale)


def ignores_scale(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    return _math(q, k, v, attn_mask, _causal(is_causal), None)


def drops_tail_key(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # Blocks of 64 keys; the partial last block loses its last key (an off-by-one in the tail loop).
    skv = k.shape[2]
    if skv % 64 and skv > 1:
        keep = torch.ones(skv, dtype=torch.bool, device=q.device)
        keep[-1] = False
        mask = keep.view(1, 1, 1, skv)
        if attn_mask is not None:
            mask = (attn_mask & mask) if attn_mask.dtype == torch.bool else attn_mask.masked_fill(~mask, float("-inf"))
        attn_mask = mask
    return _math(q, k, v, attn_mask, _causal(is_causal), scale)


def softmax_bf16(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    return _math(q, k, v, attn_mask, _causal(is_causal), scale, softmax_dtype=torch.bfloat16)


def mask_ignored(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    return _math(q, k, v, None, _causal(is_causal), scale)


def mask_ignored_batched(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # the batched path broadcasts the first row's mask to every row
    if attn_mask is not None and q.shape[0] > 1:
        attn_mask = attn_mask[:1]
    return _math(q, k, v, attn_mask, _causal(is_causal), scale)


def mask_wrong_sign(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    return _math(q, k, v, attn_mask, _causal(is_causal), scale, mask_sign=-1.0)


def nan_dead_rows(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    return _math(q, k, v, attn_mask, _causal(is_causal), scale, fully_masked_nan=True)


def causal_top_left(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # claims bottom-right (flash-attn >= 2.1 style) but aligns top-left
    return _math(q, k, v, attn_mask, _causal(is_causal), scale)


def gqa_wrong(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # kv head h % Hkv (repeat) instead of h // (H // Hkv) (repeat_interleave)
    def tile(t, heads):
        return t.repeat(1, heads // t.shape[1], 1, 1)

    return _math(q, k, v, attn_mask, _causal(is_causal), scale, kv_map=tile)


def guesses_layout(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # Guesses the layout from the shape: (B, X, Y, D) with X > Y is taken for BSHD and "fixed" by a
    # reshape, so heads and sequence are mixed up whenever H > S.
    def fix(t):
        b, x, y, d = t.shape
        return t.reshape(b, y, x, d).transpose(1, 2) if x > y else t

    out = _math(fix(q), fix(k), fix(v), attn_mask, _causal(is_causal), scale)
    b, h, s, d = q.shape
    return out.transpose(1, 2).reshape(b, h, s, d) if h > s else out


def fp16_overflow(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # softmax without the max trick, in the input dtype: exp overflows (fp16 above logit ~11)
    return _math(q, k, v, attn_mask, _causal(is_causal), scale, max_trick=False)


def batch_dependent(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # int8 keys with ONE scale for the whole batch (per-tensor quantisation): a row's result
    # depends on the magnitudes of the other rows.
    amax = k.detach().abs().amax().float().clamp_min(1e-6)
    kq = (k.float() / amax * 127).round().clamp(-127, 127) * amax / 127
    return _math(q, kq.to(k.dtype), v, attn_mask, _causal(is_causal), scale)


def pads_head_dim(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # pads D to a multiple of 8 for the kernel and takes the default scale from the padded size
    d = q.shape[-1]
    padded = math.ceil(d / 8) * 8
    if scale is None and padded != d:
        scale = padded ** -0.5
    return _math(q, k, v, attn_mask, _causal(is_causal), scale)


class _UnscaledDK(torch.autograd.Function):
    """Forward is right; backward forgets the softmax scale in dK (a classic hand-written backward slip)."""

    @staticmethod
    def forward(ctx, q, k, v, attn_mask, causal, scale):
        ctx.save_for_backward(q, k, v)
        ctx.extra = (attn_mask, causal, scale)
        return _math(q, k, v, attn_mask, causal, scale)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        attn_mask, causal, scale = ctx.extra
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
            out = _math(*leaves, attn_mask, causal, scale)
            dq, dk, dv = torch.autograd.grad(out, leaves, grad_out)
        softmax_scale = q.shape[-1] ** -0.5 if scale is None else scale
        return dq, dk / softmax_scale, dv, None, None, None


def grad_unscaled_dk(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    return _UnscaledDK.apply(q, k, v, attn_mask, _causal(is_causal), scale)


# -- the classes of issue 13: mask layouts, value ranges, long pairs, head_dims, storage ------------

def mask_2d_as_query(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # Reads a 2-D mask as diffusers' flex backend does (0.42 attention_dispatch): viewed as
    # (X, 1, Y, 1), a mask over query rows, then expanded: raises where that cannot broadcast,
    # silently wrong where it can.
    if attn_mask is not None and attn_mask.dim() == 2:
        b, h, sq, _ = q.shape
        attn_mask = attn_mask.reshape(attn_mask.shape[0], 1, attn_mask.shape[1], 1).expand(b, h, sq, k.shape[2])
    return _math(q, k, v, attn_mask, _causal(is_causal), scale)


def mask_head_collapsed(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # Per-head mask content lost: the kernel reads the mask of head 0 for every head (a block
    # mask built with H=None / a head stride taken as 0).
    if attn_mask is not None and attn_mask.dim() >= 3 and attn_mask.shape[-3] > 1:
        attn_mask = attn_mask.narrow(-3, 0, 1)
    return _math(q, k, v, attn_mask, _causal(is_causal), scale)


def mask_stride0(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # Ignores the mask's strides and walks its storage as if the (B, H, Sq, Skv) view were dense:
    # right for a contiguous mask, wrong for an expanded view (stride 0) of a smaller one.
    if attn_mask is not None and 0 in attn_mask.stride():
        offset = attn_mask.storage_offset()
        stored = attn_mask.untyped_storage().nbytes() // attn_mask.element_size() - offset
        flat = attn_mask.as_strided((stored,), (1,), offset)
        attn_mask = flat[torch.arange(attn_mask.numel(), device=q.device) % stored].view(attn_mask.shape)
    return _math(q, k, v, attn_mask, _causal(is_causal), scale)


def bf16_via_fp16(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # Computes bf16 inputs in fp16 (a kernel built for fp16 only, fed bf16 by a cast): right while
    # the values fit fp16's range, inf/0 beyond it.
    if q.dtype != torch.bfloat16:
        return _math(q, k, v, attn_mask, _causal(is_causal), scale)
    mask = attn_mask.half() if attn_mask is not None and attn_mask.is_floating_point() else attn_mask
    return _math(q.half(), k.half(), v.half(), mask, _causal(is_causal), scale).to(q.dtype)


def int8_k_no_smoothing(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # INT8 keys with one scale per token, without subtracting the keys' common mean first (what
    # SageAttention's "smooth K" does): a shared offset or an outlier channel eats the int8 range.
    amax = k.detach().float().abs().amax(dim=-1, keepdim=True).clamp_min(1e-6)
    kq = (k.float() / amax * 127).round().clamp(-127, 127) * amax / 127
    return _math(q, kq.to(k.dtype), v, attn_mask, _causal(is_causal), scale)


def writes_inputs(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # Folds the softmax scale into q in place (saves a multiply in the kernel, and changes the
    # caller's tensor).
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    with torch.no_grad():
        q.mul_(scale)
    return _math(q, k, v, attn_mask, _causal(is_causal), 1.0)


def ignores_storage_offset(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # Builds its own view from the strides but takes the data pointer of the storage, not of the
    # tensor: right when storage_offset() is 0, a neighbour's data otherwise (packed QKV).
    def at_storage_start(t):
        return t.as_strided(t.shape, t.stride(), 0) if t.storage_offset() else t

    return _math(at_storage_start(q), at_storage_start(k), at_storage_start(v), attn_mask, _causal(is_causal), scale)


def long_pair_no_rescale(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # The non-split-KV path (Sq and Skv both above 1024) runs an online softmax over key blocks of
    # 1024 and forgets to rescale the accumulator when the running max grows.
    sq, skv = q.shape[2], k.shape[2]
    if sq <= 1024 or skv <= 1024:
        return _math(q, k, v, attn_mask, _causal(is_causal), scale)
    heads = q.shape[1]
    kf, vf = expand_kv(k, heads).float(), expand_kv(v, heads).float()
    s = (q.float() @ kf.transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask.float()
    if is_causal:
        s = s.masked_fill(~causal_keep(sq, skv, "top-left", q.device), float("-inf"))
    m = torch.full(s.shape[:-1] + (1,), float("-inf"), device=q.device)
    acc, denom = torch.zeros_like(q, dtype=torch.float32), torch.zeros_like(m)
    for start in range(0, skv, 1024):
        block = s[..., start:start + 1024]
        new_m = torch.maximum(m, block.amax(-1, keepdim=True))
        safe = new_m.masked_fill(torch.isneginf(new_m), 0)
        p = torch.exp(block - safe)
        denom = denom * torch.exp(m - safe).nan_to_num(0) + p.sum(-1, keepdim=True)
        acc = acc + p @ vf[..., start:start + 1024, :]  # the slip: acc is not rescaled like denom
        m = new_m
    return (acc / denom.clamp_min(1e-30)).nan_to_num(0).to(q.dtype)


def head_dim_96_192(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # The D = 96 / 192 kernel templates (tiles of 64 channels) drop the last partial tile of the
    # Q·K dot product: 32 channels never reach the logits (the scale is still 1/sqrt(D)).
    d = q.shape[-1]
    if d in (96, 192):
        q = torch.cat([q[..., : d - 32], q.new_zeros(q.shape[:-1] + (32,))], dim=-1)
    return _math(q, k, v, attn_mask, _causal(is_causal), scale)


def _mutant(name, fn, **caps) -> Backend:
    return Backend(f"mutant-{name}", fn, Capabilities(**caps), description=fn.__doc__ or name)


def backends() -> list[Backend]:
    return [
        _mutant("wrong-scale", wrong_scale),
        _mutant("ignores-scale", ignores_scale),
        _mutant("drops-tail-key", drops_tail_key),
        _mutant("softmax-bf16", softmax_bf16),
        _mutant("mask-ignored", mask_ignored),
        _mutant("mask-ignored-batched", mask_ignored_batched),
        _mutant("mask-wrong-sign", mask_wrong_sign),
        _mutant("nan-dead-rows", nan_dead_rows),
        _mutant("causal-misaligned", causal_top_left, causal="bottom-right"),
        _mutant("gqa-wrong", gqa_wrong),
        _mutant("guesses-layout", guesses_layout),
        _mutant("fp16-overflow", fp16_overflow),
        _mutant("batch-dependent", batch_dependent),
        _mutant("pads-head-dim", pads_head_dim),
        _mutant("grad-unscaled-dk", grad_unscaled_dk, backward=True),
        _mutant("mask-2d-as-query", mask_2d_as_query),
        _mutant("mask-head-collapsed", mask_head_collapsed),
        _mutant("mask-stride0", mask_stride0),
        _mutant("bf16-via-fp16", bf16_via_fp16),
        # claims half precision only, as INT8 kernels (sage) do: in fp32 any quantiser is seen
        _mutant("int8-k-no-smoothing", int8_k_no_smoothing, dtypes={torch.float16, torch.bfloat16}),
        _mutant("writes-inputs", writes_inputs),
        _mutant("ignores-storage-offset", ignores_storage_offset),
        _mutant("long-pair-no-rescale", long_pair_no_rescale),
        _mutant("head-dim-96-192", head_dim_96_192),
    ]


def mutant(name: str) -> Backend:
    """The mutant called ``name`` (a fresh Backend each call, as backends() makes them)."""
    return next(b for b in backends() if b.name == name)


#: mutant -> the checks expected to catch it (any of them failing counts as caught by that check)
CAUGHT_BY = {
    "mutant-wrong-scale": {"forward", "kwargs"},
    "mutant-ignores-scale": {"forward", "kwargs"},
    "mutant-drops-tail-key": {"forward"},
    "mutant-softmax-bf16": {"forward"},
    "mutant-mask-ignored": {"forward", "kwargs"},
    "mutant-mask-ignored-batched": {"forward", "batch"},
    "mutant-mask-wrong-sign": {"forward"},
    "mutant-nan-dead-rows": {"forward", "masked-rows"},
    "mutant-causal-misaligned": {"forward"},
    "mutant-gqa-wrong": {"forward"},
    "mutant-guesses-layout": {"forward"},
    "mutant-fp16-overflow": {"forward"},
    # batch-wide statistics also let garbage in padded keys of other rows through: masked-kv sees it in
    # every seed and dtype, batch and forward not always in bf16 (docs/reports/detection.md, over 20 seeds)
    "mutant-batch-dependent": {"forward", "batch", "masked-kv"},
    "mutant-pads-head-dim": {"forward"},
    "mutant-grad-unscaled-dk": {"backward"},
    "mutant-mask-2d-as-query": {"forward"},
    "mutant-mask-head-collapsed": {"forward"},
    "mutant-mask-stride0": {"forward"},
    "mutant-bf16-via-fp16": {"forward"},
    "mutant-int8-k-no-smoothing": {"forward"},
    # every check calls through the same guard; forward meets it first
    "mutant-writes-inputs": {"forward", "masked-rows", "masked-kv", "kwargs", "deterministic", "batch"},
    "mutant-ignores-storage-offset": {"forward"},
    "mutant-long-pair-no-rescale": {"forward"},
    "mutant-head-dim-96-192": {"forward"},
}
#: mutant -> the dtypes where its bug can show at all (default: every dtype it claims)
VISIBLE_IN = {
    "mutant-bf16-via-fp16": {"bf16"},
    "mutant-int8-k-no-smoothing": {"fp16", "bf16"},
}


# -- issue 13: bugs the tolerance rule let through before it judged each tensor, and each row, on
# its own scale (tests/test_mutants.py::test_tolerance_per_tensor_and_row_catches). --------------

class _GradDV(torch.autograd.Function):
    """Forward and dQ, dK right; dV computed from a damaged P (``damage``): the dV-only slips below."""

    @staticmethod
    def forward(ctx, q, k, v, attn_mask, causal, scale, damage):
        ctx.save_for_backward(q, k, v)
        ctx.extra = (attn_mask, causal, scale, damage)
        return _math(q, k, v, attn_mask, causal, scale)

    @staticmethod
    def backward(ctx, grad_out):
        from attnparity.backends.naive import attention_probs

        q, k, v = ctx.saved_tensors
        attn_mask, causal, scale, damage = ctx.extra
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
            out = _math(*leaves, attn_mask, causal, scale)
            dq, dk, _ = torch.autograd.grad(out, leaves, grad_out)
        heads, kv_heads = q.shape[1], k.shape[1]
        probs = attention_probs(q.float(), expand_kv(k, heads).float(), attn_mask, causal, scale,
                                compute_dtype=torch.float32, softmax_dtype=torch.float32)
        dv = damage(probs, q.dtype).float().transpose(-2, -1) @ grad_out.float()  # (B, H, Skv, D)
        dv = dv.unflatten(1, (kv_heads, heads // kv_heads)).sum(2)
        return dq, dk, dv.to(v.dtype), None, None, None, None


def _quantised_p(p, dtype):
    # FP8-style P for the dV matmul (as FP8 attention kernels quantise P): e4m3 for half inputs, bf16
    # for fp32 ones: a few percent off in dV, nothing in dQ/dK.
    return p.to(torch.bfloat16 if dtype == torch.float32 else torch.float8_e4m3fn).float()


def _flushed_p(p, dtype):
    # probabilities below 2^-8 skipped in the dV pass (a block-skipping "negligible P" shortcut):
    # keys no query attends much to lose their whole dV row, a row small next to the others.
    return p.masked_fill(p < 2.0 ** -8, 0.0)


def grad_dv_quantised_p(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    return _GradDV.apply(q, k, v, attn_mask, _causal(is_causal), scale, _quantised_p)


def grad_dv_flushes_small_p(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    return _GradDV.apply(q, k, v, attn_mask, _causal(is_causal), scale, _flushed_p)


_ISSUE13 = [
    ("grad-dv-quantised-p", grad_dv_quantised_p, {"backward": True}, {"backward"}),
    ("grad-dv-flushes-small-p", grad_dv_flushes_small_p, {"backward": True}, {"backward"}),
]


def _backends_issue13(base=backends):
    def all_backends() -> list[Backend]:
        return base() + [_mutant(name, fn, **caps) for name, fn, caps, _ in _ISSUE13]
    return all_backends


backends = _backends_issue13()
CAUGHT_BY.update({f"mutant-{name}": checks for name, *_, checks in _ISSUE13})
