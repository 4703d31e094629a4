from . import cutlass, flash


def _dispatch_fw(inp, needs_gradient=False):
    for op in (flash.FwOp, cutlass.FwOp):
        if not op.not_supported_reasons(inp):
            return op
    raise NotImplementedError("No operator found for `memory_efficient_attention_forward` with inputs")
