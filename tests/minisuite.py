"""A tiny op-level suite for the report's own tests: "forward" per backend x dtype on a few seeded
cases, scored with the project's tolerance rule (check/tolerance.py) against the fp64 reference.

It stands in for attnparity.suite.op so the report, the gate, xdist and the vendor path can be
tested with records shaped like the real ones, in a fraction of a second per cell.
"""

from __future__ import annotations

from attnparity.check.cases import AttnCase
from attnparity.results.record import ResultRecord
from attnparity.suite import Check, SuiteContext

CASES = (dict(batch=1, heads=2, sq=16, skv=16, head_dim=32),
         dict(batch=2, heads=3, sq=17, skv=9, head_dim=40, mask="random"),
         dict(batch=1, heads=4, kv_heads=2, sq=8, skv=24, head_dim=16, causal="top-left"))


def checks(ctx: SuiteContext) -> list[Check]:
    out = []
    for backend in ctx.backends:
        reason = ctx.unavailable(backend)
        for dtype in ctx.dtypes:
            skip = reason or (None if dtype in backend.capabilities.dtype_names else f"dtype {dtype} not claimed")
            out.append(Check("op", "forward", backend.name, dtype, lambda b=backend, d=dtype: run_forward(ctx, b, d),
                             marks=("attn_op",), skip=skip))
    return out


def run_forward(ctx: SuiteContext, backend, dtype: str) -> ResultRecord:
    from attnparity.backends.naive import naive_attention
    from attnparity.check.progress import note_case
    from attnparity.check.reference import reference_forward
    from attnparity.check.tolerance import errors, verdict

    n = ctx.options.examples
    worst = None
    r_max = r_mean = 0.0
    examples = 0
    for i in range(n):
        case = AttnCase(dtype=dtype, seed=(ctx.seed or 0) + i, device=ctx.device, **CASES[i % len(CASES)])
        if case.outside(backend.capabilities):
            continue
        examples += 1
        note_case("forward", backend.name, case)  # an isolated worker that dies here names the case
        q, k, v, mask = case.tensors()
        out = backend.fn(q, k, v, attn_mask=mask, is_causal=case.causal is not None)
        repro = f"pytest --attn-backends={backend.name} --attn-dtypes={dtype} 'attnparity::forward[{backend.name}-{dtype}]'"
        if tuple(out.shape) != tuple(q.shape):
            return ResultRecord("op", "forward", backend.name, dtype, "fail", examples=examples, case=case.as_dict(),
                                repro=repro, message=f"{backend.name} returned shape {tuple(out.shape)}, "
                                                     f"expected {tuple(q.shape)} for {case.short()}")
        ref = reference_forward(q, k, v, mask, case.causal, case.scale)
        base = naive_attention(q, k, v, attn_mask=mask, is_causal=case.causal is not None)
        e, b = errors(out, ref), errors(base, ref)
        v_ = verdict(e, b, ctx.tolerances.bound(backend.name, dtype), dtype, float(ref.abs().max()))
        r_max, r_mean = max(r_max, v_.ratio_max), max(r_mean, v_.ratio_mean)
        metrics = {"ratio_max": r_max, "ratio_mean": r_mean, "err_max": e.max_abs, "base_max": b.max_abs}
        if not v_.passed:
            return ResultRecord("op", "forward", backend.name, dtype, "fail", metrics=metrics, examples=examples,
                                case=case.as_dict(), repro=repro, message=f"{case.short()}: {v_.reason}")
        worst = metrics
    return ResultRecord("op", "forward", backend.name, dtype, "pass", metrics=worst or {}, examples=examples)
