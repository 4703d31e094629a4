"""Error metrics and the verdict rule.

    pass  iff  for max-abs and mean-abs:  err_backend <= k * err_baseline + floor(dtype)

err_* are measured against the fp64 reference on the same rounded inputs; the baseline is naive
math in the case dtype (naive.py). NaN/Inf where the reference is finite fails at once. ``floor``
is a multiple of the dtype's epsilon times the output's scale (max |reference|), so it means "a few
roundings of the result" whatever the magnitudes. The error ratio err_backend / err_baseline is the
number the matrix shows.

Defaults were calibrated on this project's CPU runs (see docs/detection.md): every correct backend
passes every seed, and every planted bug of the mutant zoo fails. Override per backend glob and
dtype with the ``attn_tolerance`` ini key, one rule per line: ``sage* bf16 k=8 floor=4``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from attnparity.options import TOLERANCE_RULES, Rule

if TYPE_CHECKING:
    import torch

EPS = {"fp32": 2.0 ** -23, "fp16": 2.0 ** -10, "bf16": 2.0 ** -7, "fp64": 2.0 ** -52}

#: Default k: how many times worse than naive math in the same dtype a correct kernel may be.
#: In fp32 naive math is within an ulp or two of fp64, so k counts ulps: fused kernels' online
#: softmax with large logits reached 13x in the CPU matrix (torch flash via diffusers:native,
#: scale 1.37, magnitude 3, D 80), while every fp32 mutant of tests/mutants.py is off by > 100x.
DEFAULT_K = {"fp32": 32.0, "fp16": 4.0, "bf16": 4.0}
#: Default floor, in units of eps(dtype) * max|reference|.
DEFAULT_FLOOR = {"fp32": 16.0, "fp16": 2.0, "bf16": 2.0}
#: Gradients go through two more matmuls and a softmax backward: looser, as PyTorch's own
#: test_transformers fudge factors for dK/dQ (16 to 180 for half); torch's CPU flash backward
#: reached 39x in fp32 (Sq 2, Skv 15, magnitude 3).
DEFAULT_GRAD_K = {"fp32": 64.0, "fp16": 8.0, "bf16": 8.0}


@dataclass(frozen=True)
class Bound:
    k: float
    floor: float  # in eps * scale units

    def limit(self, baseline_err: float, dtype: str, scale: float) -> float:
        return self.k * baseline_err + self.floor * EPS[dtype] * max(scale, 1e-30)


@dataclass(frozen=True)
class Tolerances:
    #: attn_tolerance rules (options.TOLERANCE_RULES): selectors (backend glob, dtype), values k / floor
    rules: tuple[Rule, ...] = field(default_factory=tuple)

    @classmethod
    def from_lines(cls, lines: list[str] | None) -> "Tolerances":
        return cls(TOLERANCE_RULES.parse(lines or []))

    def bound(self, backend: str, dtype: str, *, grad: bool = False) -> Bound:
        k = (DEFAULT_GRAD_K if grad else DEFAULT_K)[dtype]
        floor = DEFAULT_FLOOR[dtype]
        for rule in self.rules:  # later rules win, as in an ini file read top to bottom
            if rule.matches(backend, dtype):
                k = rule.values.get("k", k)
                floor = rule.values.get("floor", floor)
        return Bound(k, floor)


@dataclass(frozen=True)
class Errors:
    max_abs: float
    mean_abs: float
    #: index (tuple) of the worst element
    worst_index: tuple[int, ...]
    nonfinite: int  # count of NaN/Inf where the reference is finite


def errors(out: "torch.Tensor", ref: "torch.Tensor") -> Errors:
    import torch

    out64 = out.detach().to(device=ref.device, dtype=torch.float64)
    finite_ref = torch.isfinite(ref)
    bad = (~torch.isfinite(out64) & finite_ref)
    diff = (out64 - ref).abs().masked_fill(~finite_ref, 0.0).nan_to_num(nan=math.inf, posinf=math.inf)
    flat = int(diff.argmax()) if diff.numel() else 0
    worst = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)) if diff.numel() else ()
    return Errors(float(diff.max()) if diff.numel() else 0.0,
                  float(diff.mean()) if diff.numel() else 0.0, worst, int(bad.sum()))


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    ratio_max: float
    ratio_mean: float
    #: error / limit for the worse of max-abs and mean-abs: below 1 passes; how close a pass came
    use: float = 0.0


def ratio(err: float, base: float, unit: float = 0.0) -> float:
    """err / base, with base taken as at least one rounding ``unit`` (eps * scale): when naive math
    happens to be exact, the ratio still says how many roundings off the backend is, not infinity."""
    denominator = max(base, unit)
    if denominator > 0:
        return err / denominator
    return 0.0 if err == 0 else math.inf


def verdict(backend: Errors, baseline: Errors, bound: Bound, dtype: str, scale: float) -> Verdict:
    """Apply the rule to one output (or one gradient)."""
    unit = EPS[dtype] * scale
    r_max, r_mean = ratio(backend.max_abs, baseline.max_abs, unit), ratio(backend.mean_abs, baseline.mean_abs, unit)
    if backend.nonfinite:
        return Verdict(False, f"{backend.nonfinite} NaN/Inf values where the fp64 reference is finite", r_max, r_mean,
                       math.inf)
    lim_max = bound.limit(baseline.max_abs, dtype, scale)
    lim_mean = bound.limit(baseline.mean_abs, dtype, scale)
    use = max(backend.max_abs / lim_max, backend.mean_abs / lim_mean)
    failed = []
    if backend.max_abs > lim_max:
        failed.append(f"max-abs error {backend.max_abs:.3g} > {bound.k:g}*{baseline.max_abs:.3g} + floor = {lim_max:.3g}")
    if backend.mean_abs > lim_mean:
        failed.append(f"mean-abs error {backend.mean_abs:.3g} > {bound.k:g}*{baseline.mean_abs:.3g} + floor = {lim_mean:.3g}")
    return Verdict(not failed, "; ".join(failed), r_max, r_mean, use)
