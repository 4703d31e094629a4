"""xformers.ops.fmha stand-in: memory_efficient_attention(_forward), Inputs, ops, biases.

As in xformers, ``memory_efficient_attention_forward`` is forward only (the op runs with
``needs_gradient=False`` and no autograd node: its output has no grad_fn), while
``memory_efficient_attention`` with inputs that require grad goes through a (FwOp, BwOp) pair,
each of which must take the inputs."""

import torch

from . import attn_bias, cutlass, dispatch, flash  # noqa: F401
from .attn_bias import LowerTriangularMask  # noqa: F401
from .common import AttentionOpBase, Inputs  # noqa: F401

MemoryEfficientAttentionCutlassOp = (cutlass.FwOp, cutlass.BwOp)
MemoryEfficientAttentionCutlassFwdFlashBwOp = (cutlass.FwOp, flash.BwOp)
MemoryEfficientAttentionFlashAttentionOp = (flash.FwOp, flash.BwOp)


def _check(op, inp, name):
    reasons = op.not_supported_reasons(inp)
    if reasons:
        raise ValueError(f"Operator `{name}` does not support inputs: {op.NAME}: {reasons}")


def memory_efficient_attention_forward(query, key, value, attn_bias=None, p=0.0, scale=None, *, op=None):
    inp = Inputs(query, key, value, attn_bias, p, scale)
    if op is None:
        op = dispatch._dispatch_fw(inp, False)
    _check(op, inp, "memory_efficient_attention")
    with torch.no_grad():
        return op.compute(inp)


def memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None, *, op=None):
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))):
        return memory_efficient_attention_forward(query, key, value, attn_bias, p, scale,
                                                  op=None if op is None else op[0])
    inp = Inputs(query, key, value, attn_bias, p, scale)
    fw = dispatch._dispatch_fw(inp, True) if op is None else op[0]
    bw = dispatch._dispatch_bw(inp, False) if op is None else op[1]
    _check(fw, inp, "memory_efficient_attention")
    _check(bw, inp, "memory_efficient_attention_backward")
    return fw.compute(inp)
