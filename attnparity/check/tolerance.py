"""Error metrics and the verdict rule, applied to each tensor (the output; dQ, dK, dV) on its own.

    max-abs, every row r:  err_backend[r] <= k * rel_baseline * scale[r] + floor * (eps(dtype) * scale[r] + eta(dtype))
    mean-abs, the tensor:  err_backend    <= k * err_baseline    + floor_mean * (eps(dtype) * mean scale + eta(dtype))
    (both plus eps(dtype) * what rounded logits carry into P, once: see judge)

err_* are measured against the fp64 reference on the same rounded inputs; the baseline is naive
math in the case dtype (naive.py). A row is one vector along the last (head_dim) axis. ``scale`` is
the componentwise magnitude of the sums the tensor is made of (forward: P @ |V|, which bounds
|reference|; gradients: see parity._grad_terms), so the floor means "a few roundings of this row"
whatever the magnitudes elsewhere: a row of large values no longer lifts the bound of a small one.
eta is the dtype's subnormal spacing (Higham's underflow term), so a row whose terms are ~0 is not
asked for bitwise zeros. NaN/Inf where the reference is finite fails; the rest of that tensor is
still judged, so one class of failure does not hide another. Non-finite baseline elements (naive
math overflowed) say nothing about the dtype's rounding: they are left out of the baseline's error,
so they never lift the limit. rel_baseline is naive math's worst error in the tensor relative to its
row's scale (max over rows of err_baseline[r] / scale[r]): the rows share how accurate the dtype
allows, each at its own scale. The error ratio err_backend / err_baseline (whole tensor) is the number the matrix shows.

Defaults were calibrated on this project's CPU runs (see docs/reports/detection.md): every correct backend
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
#: The dtype's subnormal spacing (eps * smallest normal): the absolute part of a rounding, below
#: which a value underflows; fp16's 6e-8 is what a correct fp16 kernel may be off on a ~0 result.
ETA = {"fp32": 2.0 ** -149, "fp16": 2.0 ** -24, "bf16": 2.0 ** -133, "fp64": 2.0 ** -1074}

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
    #: the mean-abs limit's floor, in eps * (mean scale) units; None: the same count as ``floor``
    floor_mean: float | None = None

    def limit(self, baseline_err: float, dtype: str, scale: float, *, mean: bool = False) -> float:
        """k * baseline_err + floor roundings of ``scale``; a non-finite baseline error counts as 0
        (naive math that overflowed says nothing about how close a kernel must come)."""
        floor = self.floor if not mean or self.floor_mean is None else self.floor_mean
        base = baseline_err if math.isfinite(baseline_err) else 0.0
        return self.k * base + floor * (EPS[dtype] * max(scale, 0.0) + ETA[dtype])


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
        floor_mean = None
        for rule in self.rules:  # later rules win, as in an ini file read top to bottom
            if rule.matches(backend, dtype):
                k = rule.values.get("k", k)
                floor = rule.values.get("floor", floor)
                floor_mean = rule.values.get("floor_mean", floor_mean)
        return Bound(k, floor, floor_mean)


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
    """The rule on whole-tensor metrics with one scale (no rows): what a summary of metrics allows.
    parity judges each tensor row by row with ``judge``."""
    unit = EPS[dtype] * scale
    r_max, r_mean = ratio(backend.max_abs, baseline.max_abs, unit), ratio(backend.mean_abs, baseline.mean_abs, unit)
    if backend.nonfinite:
        return Verdict(False, f"{backend.nonfinite} NaN/Inf values where the fp64 reference is finite", r_max, r_mean,
                       math.inf)
    lim_max = bound.limit(baseline.max_abs, dtype, scale)
    lim_mean = bound.limit(baseline.mean_abs, dtype, scale, mean=True)
    use = max(backend.max_abs / lim_max, backend.mean_abs / lim_mean)
    failed = []
    if backend.max_abs > lim_max:
        failed.append(f"max-abs error {backend.max_abs:.3g} > {bound.k:g}*{baseline.max_abs:.3g} + floor = {lim_max:.3g}")
    if backend.mean_abs > lim_mean:
        failed.append(f"mean-abs error {backend.mean_abs:.3g} > {bound.k:g}*{baseline.mean_abs:.3g} + floor = {lim_mean:.3g}")
    return Verdict(not failed, "; ".join(failed), r_max, r_mean, use)


@dataclass(frozen=True)
class Judgement:
    """One tensor judged row by row: the verdict, the whole-tensor metrics, and what failed."""
    verdict: Verdict
    backend: Errors
    #: the baseline's errors over its finite elements
    baseline: Errors
    #: the largest row scale (the tensor's own scale)
    scale: float
    #: "nonfinite", "max-abs", "mean-abs": each part of the rule this tensor failed
    failed: tuple[str, ...] = ()
    #: baseline elements that were NaN/Inf where the reference is finite (left out of its error)
    baseline_nonfinite: int = 0


def judge(out: "torch.Tensor", base: "torch.Tensor", ref: "torch.Tensor", magnitude: "torch.Tensor | None",
          bound: Bound, dtype: str, logit_terms: "torch.Tensor | None" = None) -> Judgement:
    """The rule on one tensor: max-abs row by row, mean-abs over the tensor with its own floor.

    ``magnitude``: the componentwise magnitude of the sums ``ref`` is made of (same shape, fp64;
    None: |ref|). Each row's floor counts roundings of that row's largest magnitude.
    ``logit_terms``: the error the attention weights carry from rounded logits, in roundings
    (reference.probs_and_rounding), added once to each limit: large logits make every kernel's P
    off by more than a rounding, and that is no bug."""
    import torch

    ref = ref.to(torch.float64)
    finite_ref = torch.isfinite(ref)
    out64 = out.detach().to(device=ref.device, dtype=torch.float64)
    base64 = base.detach().to(device=ref.device, dtype=torch.float64)
    bad = ~torch.isfinite(out64) & finite_ref
    diff = (out64 - ref).abs().masked_fill(~finite_ref, 0.0)
    # Judged numerically where the backend is finite, so a NaN row does not hide a wrong row beside it.
    diff_finite = diff.masked_fill(bad, 0.0)
    dbase = (base64 - ref).abs().masked_fill(~finite_ref, 0.0)
    base_ok = torch.isfinite(dbase)
    dbase = dbase.masked_fill(~base_ok, 0.0)
    mag = ref.abs().masked_fill(~finite_ref, 0.0)
    if magnitude is not None:
        mag = torch.maximum(mag, magnitude.to(device=ref.device, dtype=torch.float64).nan_to_num(0.0, 0.0, 0.0))
    if ref.numel() == 0:
        empty = Errors(0.0, 0.0, (), 0)
        return Judgement(Verdict(True, "", 0.0, 0.0, 0.0), empty, empty, 0.0)

    extra = torch.zeros_like(mag) if logit_terms is None else logit_terms.to(device=ref.device, dtype=torch.float64)
    extra_row = extra.amax(-1)
    scale_row = mag.amax(-1)
    # The baseline term per row: naive math's worst error in this tensor in units of its row's scale,
    # times this row's scale. Not each row's own naive error: one row where naive math happens to
    # be exact is luck, not a standard (torch's correct bf16 flash backward failed on such a row).
    # Not the tensor's worst error either: a row of large values would lift every small row's limit.
    rows_ok = base_ok.any(-1) & (scale_row > 0)
    relative = float((dbase.amax(-1)[rows_ok] / scale_row[rows_ok]).max()) if bool(rows_ok.any()) else 0.0
    base_row = relative * scale_row
    eps, eta = EPS[dtype], ETA[dtype]
    floor_mean = bound.floor if bound.floor_mean is None else bound.floor_mean
    lim_row = bound.k * base_row + bound.floor * (eps * scale_row + eta) + eps * extra_row
    err_row = diff_finite.amax(-1)
    # A limit of 0 (an ini floor=0 on an exact row) is met only by an exact row.
    use_row = torch.where(lim_row > 0, err_row / lim_row.clamp_min(1e-300),
                          torch.where(err_row > 0, math.inf, 0.0).to(err_row.dtype))
    worst_row = int(use_row.argmax())
    use_max = float(use_row.flatten()[worst_row])
    row_index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst_row), use_row.shape))

    n_ok = int(base_ok.sum())
    base_mean = float(dbase.sum()) / n_ok if n_ok else 0.0
    err_mean_finite = float(diff_finite.mean())
    lim_mean = bound.k * base_mean + floor_mean * (eps * float(mag.mean()) + eta) + eps * float(extra.mean())
    use_mean = err_mean_finite / lim_mean if lim_mean > 0 else (math.inf if err_mean_finite > 0 else 0.0)

    err_b = errors(out, ref)
    flat0 = int(dbase.argmax())
    err_0 = Errors(float(dbase.max()), base_mean,
                   tuple(int(i) for i in torch.unravel_index(torch.tensor(flat0), dbase.shape)), int((~base_ok).sum()))
    scale = float(scale_row.max())
    unit = eps * scale
    r_max, r_mean = ratio(err_b.max_abs, err_0.max_abs, unit), ratio(err_b.mean_abs, err_0.mean_abs, unit)
    failed, reasons = [], []
    if err_b.nonfinite:
        failed.append("nonfinite")
        reasons.append(f"{err_b.nonfinite} NaN/Inf values where the fp64 reference is finite")
    if use_max > 1:
        failed.append("max-abs")
        err_r, base_r, lim_r = float(err_row[row_index]), float(base_row[row_index]), float(lim_row[row_index])
        reasons.append(f"max-abs error {err_r:.3g} in row {list(row_index)} > {bound.k:g}*{base_r:.3g} + floor "
                       f"{bound.floor:g}*eps*{float(scale_row[row_index]):.3g} = {lim_r:.3g}")
    if use_mean > 1:
        failed.append("mean-abs")
        reasons.append(f"mean-abs error {err_mean_finite:.3g} > {bound.k:g}*{base_mean:.3g} + floor "
                       f"{floor_mean:g}*eps*{float(mag.mean()):.3g} = {lim_mean:.3g}")
    use = math.inf if err_b.nonfinite else max(use_max, use_mean)
    v = Verdict(not failed, "; ".join(reasons), r_max, r_mean, use)
    return Judgement(v, err_b, err_0, scale, tuple(failed), int((~base_ok).sum()))
