"""Semantic checks beside the numeric one. Each takes (backend, case, tolerances) and derives the
input it needs from the drawn case, so hypothesis searches the semantics too:

masked-rows      rows with no key left give zeros (or the documented finite value), never NaN
masked-kv        garbage in masked-out keys/values does not reach kept rows (NaN too, if claimed)
kwargs           attn_mask, is_causal and scale each change the output the way the reference does
                 (a backend that silently drops a kwarg fails here by name)
deterministic    the same input twice gives the same output (bitwise where claimed)
batch            a row's output does not depend on the other rows of the batch
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from attnparity.backends.base import Backend
from .cases import AttnCase
from .parity import ContractViolation, ParityResult, call_backend, dead_rows, reproduce_lines
from .tolerance import EPS, Tolerances

if TYPE_CHECKING:
    import torch


def _result(check: str, backend: Backend, case: AttnCase, problem: str | None,
            calls: tuple[tuple[AttnCase, ...], ...] = (), **metrics: float) -> ParityResult:
    """``calls``: the cases of the calls each failure rests on, where they are not ``case`` itself."""
    message = "" if problem is None else (
        f"{backend.name} {check}: {problem}\n  case: {case.short()}\n{reproduce_lines(check, backend.name, case, '  ')}")
    return ParityResult(check, backend.name, case, problem is None, message=message, metrics=dict(metrics),
                        calls=calls if problem is not None else ())


def _skip(check: str, backend: Backend, case: AttnCase, why: str) -> ParityResult:
    return ParityResult(check, backend.name, case, True, skipped=why)


def _run(backend: Backend, case: AttnCase, q, k, v, mask) -> "torch.Tensor":
    return call_backend(backend, case, q, k, v, mask)


def _claimed_mask_type(caps, case: AttnCase) -> str | None:
    """The drawn mask type if the backend claims it, else one it claims; None when it claims none."""
    if not caps.masks:
        return None
    return case.mask_type if case.mask_type in caps.masks else sorted(caps.masks)[0]


def masked_rows_case(case: AttnCase, caps) -> AttnCase | None:
    """The masked-rows check's variant of a drawn case (dead rows, a mask type the backend claims),
    or None when the backend claims no mask."""
    mask_type = _claimed_mask_type(caps, case)
    if mask_type is None:
        return None
    return case.with_(mask="dead-rows", mask_type=mask_type, masked_value="-inf", causal=None)


def masked_rows(backend: Backend, case: AttnCase, tolerances: Tolerances) -> ParityResult:
    caps = backend.capabilities
    derived = masked_rows_case(case, caps)
    if derived is None:
        return _skip("masked-rows", backend, case, "no masks claimed")
    case = derived
    if case.outside(caps):
        return _skip("masked-rows", backend, case, case.outside(caps) or "")
    q, k, v, mask = case.tensors()
    problem, metrics = dead_row_problem(case, _run(backend, case, q, k, v, mask), caps.fully_masked)
    return _result("masked-rows", backend, case, problem, **metrics)


def dead_row_problem(case: AttnCase, out, fully_masked: str) -> tuple[str | None, dict[str, float]]:
    """What is wrong with the rows of ``out`` that have no key left (NaN/Inf; not zero where the
    backend claims zeros), or None, with the metrics of the finding."""
    dead = dead_rows(case)
    assert dead is not None  # dead-rows masks always kill row 0 of batch 0
    dead = dead.expand_as(out).to(out.device)
    nonfinite = int((~out.isfinite()).sum())
    if nonfinite:
        return (f"{nonfinite} NaN/Inf values in the output with fully masked rows "
                f"({int(dead[..., 0].sum())} rows have no key)"), {"nonfinite": nonfinite}
    if fully_masked == "zero":
        worst = float(out.masked_fill(~dead, 0).abs().max())
        if worst > 0:
            return (f"fully masked rows are not zero (max |value| {worst:.3g}); a backend with another "
                    "convention declares Capabilities(fully_masked='finite')"), {"dead_row_max": worst}
    return None, {}


def masked_kv(backend: Backend, case: AttnCase, tolerances: Tolerances) -> ParityResult:
    import torch

    caps = backend.capabilities
    mask_type = _claimed_mask_type(caps, case)
    if mask_type is None:
        return _skip("masked-kv", backend, case, "no masks claimed")
    # -inf: a finite "masked" value (-1e4, finfo.min) lets large garbage logits through by design.
    # (B, 1, 1, Skv) as stored: the garbage goes where that pattern says; either padding side.
    case = case.with_(mask="padding", mask_type=mask_type, masked_value="-inf", layout="contiguous",
                      skv=max(case.skv, 2), mask_dims="B1", mask_layout="contiguous")
    if case.outside(caps):
        return _skip("masked-kv", backend, case, case.outside(caps) or "")
    q, k, v, mask = case.tensors()
    keep = case.keep().to(q.device)  # (B, 1, 1, Skv)
    if bool(keep.all()):  # padding drew full length: mask the last key of every row by hand
        keep = keep.clone()
        keep[..., -1 if case.pad_side == "right" else 0] = False
        keep[..., 0 if case.pad_side == "right" else -1] = True
        mask = keep if mask.dtype == torch.bool else torch.where(keep, mask, torch.tensor(float("-inf"), dtype=mask.dtype))
    clean = _run(backend, case, q, k, v, mask)
    dropped = ~keep[:, 0, 0, :]  # (B, Skv)
    # Large but finite garbage (stale memory of a padded batch): exp(-inf) * 1e4 is still 0, so a
    # correct kernel is untouched. NaN is tried only where claimed: torch's own kernels compute
    # 0 * NaN = NaN for masked-out values, so demanding it of everyone would flag every backend.
    poisoned, use = [], 0.0
    # Sized to the dtype so no logit overflows even in naive fp16 math (inf + -inf would be NaN):
    # 16 in fp16, 1e3 in bf16/fp32 for keys; values far beyond any real activation.
    big = torch.finfo(q.dtype).max
    garbage = (min(1e3, big ** 0.5 / 16), min(1e4, big / 64))
    values = [garbage] + ([(float("nan"), float("nan"))] if caps.masked_nan_safe else [])
    for k_value, v_value in values:
        k2, v2 = k.clone(), v.clone()
        k2[dropped[:, None, :, None].expand_as(k2)] = k_value
        v2[dropped[:, None, :, None].expand_as(v2)] = v_value
        dirty = _run(backend, case, q, k2, v2, mask)
        diff = (dirty.double() - clean.double()).abs().nan_to_num(nan=float("inf"))
        limit = 16 * EPS[case.dtype] * (float(clean.abs().max()) or 1.0)
        use = max(use, float(diff.max()) / limit)
        if float(diff.max()) > limit:
            poisoned.append(f"{k_value:g}/{v_value:g} in masked-out keys/values changed kept outputs by up to {float(diff.max()):.3g}")
    return _result("masked-kv", backend, case, "; ".join(poisoned) or None, bound_use=use)


def _kwarg_variants(case: AttnCase, backend: Backend) -> list[tuple[str, AttnCase, AttnCase]]:
    """(kwarg, case with it, case without it) for each kwarg the backend claims."""
    caps = backend.capabilities
    variants = []
    for mask_type in sorted(caps.masks):
        with_mask = case.with_(mask="random", mask_type=mask_type, masked_value="-inf", skv=max(case.skv, 4))
        variants.append((f"attn_mask ({mask_type})", with_mask, with_mask.with_(mask="none")))
    if caps.causal_mode:
        with_causal = case.with_(causal=caps.causal_mode, mask="none", sq=max(case.sq, 4), skv=max(case.skv, 4))
        variants.append(("is_causal", with_causal, with_causal.with_(causal=None)))
    with_scale = case.with_(scale=0.3 if case.scale in (None, 0.3) else case.scale, magnitude=max(case.magnitude, 1.0),
                            mask="none", skv=max(case.skv, 4))
    variants.append(("scale", with_scale, with_scale.with_(scale=None)))
    return [(kw, a, b) for kw, a, b in variants if a.outside(caps) is None and b.outside(caps) is None]


def kwargs_honoured(backend: Backend, case: AttnCase, tolerances: Tolerances) -> ParityResult:
    """Each claimed kwarg must move the output as far as it moves the reference, and the right way."""
    problems, ignored, calls, use = [], [], [], 0.0
    bound = tolerances.bound(backend.name, case.dtype)
    for kwarg, with_kw, without_kw in _kwarg_variants(case, backend):
        problem, kw_use = kwarg_lost(kwarg, with_kw, without_kw, lambda c, q, k, v, m: _run(backend, c, q, k, v, m), bound)
        use = max(use, kw_use)
        if problem is not None:
            ignored.append(kwarg.split(" ")[0])
            calls.append((with_kw,))
            problems.append(problem)
    result = _result("kwargs", backend, case, "; ".join(problems) or None, tuple(calls), bound_use=use)
    result.ignored_kwargs = tuple(ignored)
    return result


def kwarg_lost(kwarg: str, with_kw: AttnCase, without_kw: AttnCase, attend, bound) -> tuple[str | None, float]:
    """(why ``kwarg`` looks ignored, or None; error / half the kwarg's effect) for a backend called as
    ``attend(case, q, k, v, mask)`` on the inputs of ``with_kw``. ``bound``: the tolerance.Bound of
    the case's dtype (a kwarg that moves the reference by less than a few of its limits says nothing)."""
    from .parity import baseline_forward
    from .reference import reference_forward

    q, k, v, mask = with_kw.tensors()
    _, _, _, no_mask = without_kw.tensors()
    ref_with = reference_forward(q, k, v, mask, with_kw.causal, with_kw.scale)
    ref_without = reference_forward(q, k, v, no_mask, without_kw.causal, without_kw.scale)
    effect = float((ref_with - ref_without).abs().max())
    base_err = float((baseline_forward(with_kw, q, k, v, mask).double() - ref_with).abs().max())
    if effect <= 4 * bound.limit(base_err, with_kw.dtype, float(ref_with.abs().max())):
        return None, 0.0  # the kwarg hardly matters for this input: nothing to tell apart
    out = attend(with_kw, q, k, v, mask).double()
    err = float((out - ref_with).abs().max())
    if err < 0.5 * effect:  # nearer to "without" than "with" means the kwarg was lost
        return None, err / (0.5 * effect)
    return (f"{kwarg} looks ignored: output is {err:.3g} from the reference with it, and the kwarg itself moves "
            f"the reference by {effect:.3g}"), err / (0.5 * effect)


def deterministic(backend: Backend, case: AttnCase, tolerances: Tolerances) -> ParityResult:
    q, k, v, mask = case.tensors()
    first = _run(backend, case, q, k, v, mask)
    second = _run(backend, case, q, k, v, mask)
    problem, diff, use = repeat_problem(first, second, backend.capabilities.deterministic, case.dtype)
    return _result("deterministic", backend, case, problem, repeat_diff=diff, bound_use=use)


def repeat_problem(first, second, claimed: bool, dtype: str) -> tuple[str | None, float, float]:
    """(what is wrong, largest difference, difference / what is allowed) of two outputs of the same
    call: none at all where determinism is ``claimed``, else a few roundings."""
    same_nan = first.isnan() & second.isnan()  # NaN is the masked-rows check's business, not this one's
    diff = float((first.double() - second.double()).abs().masked_fill(same_nan, 0).nan_to_num(nan=float("inf")).max())
    if claimed:
        problem = None if diff == 0 else f"two identical calls differ by {diff:.3g} (deterministic claimed: bitwise)"
        return problem, diff, 0.0 if diff == 0 else float("inf")
    limit = 16 * EPS[dtype] * (float(first.abs().max()) or 1.0)
    return (None if diff <= limit else f"two identical calls differ by {diff:.3g} > {limit:.3g}"), diff, diff / limit


def batch_independent(backend: Backend, case: AttnCase, tolerances: Tolerances) -> ParityResult:
    """Output row b alone, in a shuffled batch and in the full batch must agree within the rounding
    budget: a kernel whose result depends on its neighbours (shared scratch, batch-wide statistics,
    wrong strides) fails."""
    case = batch_case(case)
    if case.outside(backend.capabilities):
        return _skip("batch", backend, case, case.outside(backend.capabilities) or "")
    problem, gaps, limit = batch_problem(case, lambda c, q, k, v, m: _run(backend, c, q, k, v, m),
                                         tolerances.bound(backend.name, case.dtype))
    # a gap says one of its two calls is wrong, not which: the shuffled batch has the full one's shape
    calls = tuple((case,) if what == "shuffled batch" else (case, case.with_(batch=1))
                  for what, gap in gaps.items() if not gap <= limit)
    return _result("batch", backend, case, problem, calls, bound_use=max(gaps.values()) / limit,
                   **{k.replace(" ", "_"): v for k, v in gaps.items()})


def batch_case(case: AttnCase) -> AttnCase:
    """The batch check's variant of a drawn case: three rows at least, contiguous."""
    return case.with_(batch=max(case.batch, 3), layout="contiguous")


def batch_problem(case: AttnCase, attend, bound) -> tuple[str | None, dict[str, float], float]:
    """(what is wrong, {"shuffled batch" | "row alone": gap to the full batch's output}, the limit)
    for a backend called as ``attend(case, q, k, v, mask)``; ``bound``: the case dtype's tolerance.Bound."""
    import torch

    from .parity import baseline_forward
    from .reference import reference_forward

    q, k, v, mask = case.tensors()
    full = attend(case, q, k, v, mask)
    perm = torch.arange(case.batch - 1, -1, -1)
    # Only a mask with a batch dim of its own is taken apart with the batch; (1, ...), 3-D and 2-D
    # masks broadcast over it and go in unchanged.
    per_row = mask is not None and mask.dim() == 4 and mask.shape[0] == case.batch > 1
    shuffled = attend(case, q[perm], k[perm], v[perm], mask[perm] if per_row else mask)[perm]
    row = slice(1, 2)
    alone = attend(case.with_(batch=1), q[row], k[row], v[row], mask[row] if per_row else mask)
    ref = reference_forward(q, k, v, mask, case.causal, case.scale)
    base_err = float((baseline_forward(case, q, k, v, mask).double() - ref).abs().max())
    limit = 2 * bound.limit(base_err, case.dtype, float(ref.abs().max()))
    gaps = {"shuffled batch": float((shuffled.double() - full.double()).abs().max()),
            "row alone": float((alone.double() - full[row].double()).abs().max())}
    bad = [f"{what} differs from the full batch by {gap:.3g} > {limit:.3g}" for what, gap in gaps.items()
           if not gap <= limit]
    return "; ".join(bad) or None, gaps, limit


SEMANTIC_CHECKS: dict[str, Callable[[Backend, AttnCase, Tolerances], ParityResult]] = {
    "masked-rows": masked_rows,
    "masked-kv": masked_kv,
    "kwargs": kwargs_honoured,
    "deterministic": deterministic,
    "batch": batch_independent,
}


def run_semantic(name: str, backend: Backend, case: AttnCase, tolerances: Tolerances) -> ParityResult:
    """A semantic check with contract violations turned into a failed result, like check_parity."""
    outside = case.outside(backend.capabilities)
    if outside:
        return _skip(name, backend, case, outside)
    try:
        return SEMANTIC_CHECKS[name](backend, case, tolerances)
    except ContractViolation as exc:
        result = _result(name, backend, case, str(exc), ((exc.case or case,),))
        result.failure_classes = ("contract",)
        return result
