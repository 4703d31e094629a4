"""xformers.ops.fmha stand-in: memory_efficient_attention(_forward), Inputs, ops, biases."""

from . import attn_bias, cutlass, dispatch, flash  # noqa: F401
from .attn_bias import LowerTriangularMask  # noqa: F401
from .common import AttentionOpBase, Inputs  # noqa: F401

MemoryEfficientAttentionCutlassOp = (cutlass.FwOp, cutlass.BwOp)
MemoryEfficientAttentionFlashAttentionOp = (flash.FwOp, flash.BwOp)


def memory_efficient_attention_forward(query, key, value, attn_bias=None, p=0.0, scale=None, *, op=None):
    inp = Inputs(query, key, value, attn_bias, p, scale)
    if op is None:
        op = dispatch._dispatch_fw(inp, False)
    reasons = op.not_supported_reasons(inp)
    if reasons:
        raise ValueError(f"Operator `memory_efficient_attention` does not support inputs: {reasons}")
    return op.compute(inp)


def memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None, *, op=None):
    return memory_efficient_attention_forward(query, key, value, attn_bias, p, scale, op=None if op is None else op[0])
