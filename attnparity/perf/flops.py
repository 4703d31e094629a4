"""Attention arithmetic: FLOPs of one call, TFLOP/s and speed-ups, so the perf items, the report and
the self-tests use the very same formulas."""

from __future__ import annotations

#: Forward-pass FLOPs are counted as two matmuls (Q·Kᵀ and P·V), 2 FLOPs per multiply-add each;
#: softmax is not counted (the convention of the FlashAttention papers and their benchmarks).
FLOPS_CONVENTION = "4·B·H·Sq·Skv·D (QKᵀ and PV, 2 FLOPs per MAC; softmax not counted), half for causal"


def attention_flops(batch: int, heads: int, sq: int, skv: int, head_dim: int, causal: bool = False) -> float:
    """Forward FLOPs of one attention call: 4·B·H·Sq·Skv·D, half when causal."""
    flops = 4.0 * batch * heads * sq * skv * head_dim
    return flops / 2 if causal else flops


def tflops(flops: float, ms: float) -> float:
    """TFLOP/s of ``flops`` done in ``ms`` milliseconds."""
    if ms <= 0:
        raise ValueError(f"time must be positive, got {ms} ms")
    return flops / (ms * 1e-3) / 1e12


def speedup(reference_ms: float, ms: float) -> float:
    """How many times faster than the reference: >1 is faster, <1 slower."""
    return reference_ms / ms
