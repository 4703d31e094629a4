"""What a standalone repro file runs (check/standalone.py copies these functions into it): each check
judged as attnparity judges it, for a backend called as ``attend(case, q, k, v, mask)``. Each prints
the backend's error, the baseline's and the limit, and returns whether the check passed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .cases import AttnCase
from .parity import forward_pairs, grad_pairs, grads_of, upstream_grad
from .semantics import batch_problem, dead_row_problem, kwarg_lost, repeat_problem
from .tolerance import Bound, judge

Attend = Callable[[AttnCase, Any, Any, Any, Any], Any]


def show(label: str, j: Any) -> bool:
    """Print one judged tensor (a tolerance.Judgement); True when it passes."""
    print(f"{label}: backend  max-abs error {j.backend.max_abs:.4g}, mean-abs {j.backend.mean_abs:.4g}"
          + (f", {j.backend.nonfinite} NaN/Inf where the reference is finite" if j.backend.nonfinite else ""))
    print(f"{label}: baseline max-abs error {j.baseline.max_abs:.4g}, mean-abs {j.baseline.mean_abs:.4g} "
          "(naive math in the same dtype, softmax in fp32)")
    print(f"{label}: limit    max-abs {j.row_limit:.4g} in the row nearest to its limit (error there "
          f"{j.row_error:.4g}), mean-abs {j.mean_limit:.4g}")
    print(f"{label}: " + ("within the limits" if j.verdict.passed else "FAILS: " + j.verdict.reason))
    return bool(j.verdict.passed)


def judge_pairs(pairs: dict[str, tuple], bound: Bound, dtype: str) -> bool:
    """Judge each (output, baseline, reference, magnitude, logit terms) of ``pairs`` and show it."""
    shown = [show(label, judge(out, base, ref, magnitude, bound, dtype, terms))
             for label, (out, base, ref, magnitude, terms) in pairs.items()]
    return all(shown)


def run_forward(case: AttnCase, attend: Attend, bound: Bound, finite_dead_rows: bool = False) -> bool:
    q, k, v, mask = case.tensors()
    out = attend(case, q, k, v, mask)
    return judge_pairs(forward_pairs(case, q, k, v, mask, out, finite_dead_rows), bound, case.dtype)


def run_backward(case: AttnCase, attend: Attend, bound: Bound, finite_dead_rows: bool = False) -> bool:
    q, k, v, mask = case.tensors()
    grad_out = upstream_grad(case, q, finite_dead_rows)
    got = grads_of(lambda a, b, c: attend(case, a, b, c, mask), q, k, v, grad_out)
    return judge_pairs(grad_pairs(case, q, k, v, mask, grad_out, got), bound, case.dtype)


def run_kwargs(case: AttnCase, attend: Attend, bound: Bound,
               variants: Sequence[tuple[str, AttnCase, AttnCase]]) -> bool:
    """Each kwarg variant (kwarg, case with it, case without it) must move the output as it moves
    the reference."""
    passed = True
    for kwarg, with_kw, without_kw in variants:
        problem, use = kwarg_lost(kwarg, with_kw, without_kw, attend, bound)
        print(f"{kwarg}: {problem or 'honoured (or it hardly moves the reference here)'} "
              f"(error / half the kwarg's effect: {use:.3g}; above 1 it looks ignored)")
        passed = passed and problem is None
    return passed


def run_masked_rows(case: AttnCase, attend: Attend, fully_masked: str) -> bool:
    """Rows with no key left give zeros (``fully_masked`` "zero") or a finite value, never NaN."""
    q, k, v, mask = case.tensors()
    problem, _ = dead_row_problem(case, attend(case, q, k, v, mask), fully_masked)
    print(f"masked-rows: {problem or 'fully masked rows are ' + ('zero' if fully_masked == 'zero' else 'finite')}")
    return problem is None


def run_deterministic(case: AttnCase, attend: Attend, claimed: bool) -> bool:
    """The same call twice gives the same output (bitwise where ``claimed``)."""
    q, k, v, mask = case.tensors()
    problem, diff, _ = repeat_problem(attend(case, q, k, v, mask), attend(case, q, k, v, mask), claimed, case.dtype)
    print(f"deterministic: {problem or f'two identical calls differ by {diff:.3g}'}")
    return problem is None


def run_batch(case: AttnCase, attend: Attend, bound: Bound) -> bool:
    """A row's output does not depend on the other rows of the batch."""
    problem, gaps, limit = batch_problem(case, attend, bound)
    print("batch: " + ", ".join(f"{what} {gap:.3g} from the full batch" for what, gap in gaps.items())
          + f" (limit {limit:.3g})" + (f": {problem}" if problem else ""))
    return problem is None
