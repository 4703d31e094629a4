from . import cutlass, flash


def _dispatch_fw(inp, needs_gradient=False):
    for op in (flash.FwOp, cutlass.FwOp):
        if not op.not_supported_reasons(inp):
            return op
    raise NotImplementedError("No operator found for `memory_efficient_attention_forward` with inputs")


def _dispatch_bw(inp, varlen_lse_packed):
    for op in (flash.BwOp, cutlass.BwOp):
        if not op.not_supported_reasons(inp):
            return op
    raise NotImplementedError("No operator found for `memory_efficient_attention_backward` with inputs")
