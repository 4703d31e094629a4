"""check_parity(backend, case) -> ParityResult: one backend on one case against the fp64 reference,
beside the naive same-dtype baseline, judged by the tolerance rule. Also the gradient check and the
call wrapper that enforces the contract (shape, dtype, Unsupported on claimed cases).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from attnparity.backends.base import Backend, Unsupported, torch_dtype
from .cases import AttnCase
from .tolerance import EPS, Errors, Tolerances, judge

if TYPE_CHECKING:
    import torch


@dataclass
class ParityResult:
    check: str
    backend: str
    case: AttnCase
    passed: bool
    #: set when the case is outside the backend's claims: nothing was judged
    skipped: str | None = None
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    #: what a failing check found, by name (the kwargs check: the kwargs it found ignored), so a
    #: known-findings ledger can match the failure, not only the drawn case
    ignored_kwargs: tuple[str, ...] = ()
    #: what failed, as classes the search keeps apart ("dv:bound", "out:nonfinite", "contract"); the
    #: first is the one a failing example is filed under. Empty: the check name is the class.
    failure_classes: tuple[str, ...] = ()
    #: The calls each failure rests on, as the cases the backend was called on, one group per
    #: failure (a semantic check's own variants of ``case``: the kwargs check's case with a kwarg, the
    #: batch check's full batch and row alone); at least one call of a group gave a wrong output.
    #: Empty: the one call on ``case``. A known finding is asked about these (results/known.py).
    calls: tuple[tuple[AttnCase, ...], ...] = ()

    @property
    def ratio(self) -> float:
        """The worst error ratio of this result (what hypothesis.target pushes up)."""
        return max(self.metrics.get("ratio_max", 0.0), self.metrics.get("ratio_mean", 0.0))

    @property
    def bound_use(self) -> float:
        """Measured value / the check's limit (0 where the check has no numeric limit): a pass is
        below 1, and how far below says how much room the backend left."""
        return self.metrics.get("bound_use", 0.0)

    def repro(self) -> str:
        return repro_line(self.check, self.backend, self.case)


class ContractViolation(AssertionError):
    """The backend broke the contract on a claimed case (raised, wrong shape, wrong dtype); ``case``:
    the case of the call that broke it."""

    case: "AttnCase | None" = None


def repro_line(check: str, backend: str, case: AttnCase) -> str:
    payload = json.dumps(case.as_dict(), separators=(",", ":"))
    return f"python -m attnparity.check.repro {check} {backend} '{payload}'"


#: The checks ``attnparity repro --standalone`` writes a file for (check/standalone.py).
STANDALONE_CHECKS = ("forward", "backward", "kwargs", "masked-rows", "deterministic", "batch")


def standalone_command(check: str, backend: str, case: AttnCase, out: str = "repro.py") -> str:
    """The command line that writes a standalone repro file of this failure (torch and the library only)."""
    payload = json.dumps(case.as_dict(), separators=(",", ":"))
    return f"attnparity repro --standalone {check} {backend} '{payload}' -o {out}"


def reproduce_lines(check: str, backend: str, case: AttnCase, indent: str = "") -> str:
    """The reproduce line of a failure message and, where one can be written, the standalone one."""
    from attnparity.backends.registry import standalone_call

    text = f"{indent}reproduce: {repro_line(check, backend, case)}"
    if check in STANDALONE_CHECKS and standalone_call(backend) is not None:
        text += f"\n{indent}standalone repro for an upstream report: {standalone_command(check, backend, case)}"
    return text


def call_backend(backend: Backend, case: AttnCase, q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor",
                 mask: "torch.Tensor | None") -> "torch.Tensor":
    """Run the backend on a claimed case; anything but a (B, H, Sq, D) tensor of the case dtype is a
    contract violation (a backend may not refuse what it claims)."""
    try:
        return _call_backend(backend, case, q, k, v, mask)
    except ContractViolation as exc:
        exc.case = case
        raise


def _call_backend(backend: Backend, case: AttnCase, q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor",
                  mask: "torch.Tensor | None") -> "torch.Tensor":
    import torch

    before = _snapshot(q, k, v, mask)
    try:
        out = backend(q, k, v, attn_mask=mask, is_causal=case.causal is not None, scale=case.scale)
    except Unsupported as exc:
        raise ContractViolation(f"raised Unsupported on a case its capabilities claim: {exc}") from exc
    except Exception as exc:  # a claimed case must run: the exception is the finding, with its case
        raise ContractViolation(f"raised {type(exc).__name__} on a claimed case: {exc}") from exc
    written = [name for name, t, copy in zip(("q", "k", "v", "attn_mask"), (q, k, v, mask), before)
               if t is not None and not _same_bits(t, copy)]
    if written:
        raise ContractViolation(f"wrote into its inputs ({', '.join(written)}): a caller's tensors must come back "
                                "unchanged (diffusers reuses q, k, v and the mask across calls)")
    if not isinstance(out, torch.Tensor):
        raise ContractViolation(f"returned {type(out).__name__}, not a tensor")
    expected = (case.batch, case.heads, case.sq, case.head_dim)
    if tuple(out.shape) != expected:
        raise ContractViolation(f"returned shape {tuple(out.shape)}, expected (B, H, Sq, D) = {expected}")
    if out.dtype != torch_dtype(case.dtype):
        raise ContractViolation(f"returned {out.dtype} for {case.dtype} inputs")
    return out


def _snapshot(*tensors: "torch.Tensor | None") -> list["torch.Tensor | None"]:
    """Copies to compare against after the call (detached: a grad-tracking input stays a leaf)."""
    return [None if t is None else t.detach().clone() for t in tensors]


def _same_bits(t: "torch.Tensor", copy: "torch.Tensor") -> bool:
    """Bitwise equality, NaN included (the masked-kv check puts NaN in the inputs on purpose)."""
    import torch

    t = t.detach()
    if t.dtype == torch.bool:
        return torch.equal(t, copy)
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return torch.equal(t.contiguous().view(bits), copy.contiguous().view(bits))


def baseline_forward(case: AttnCase, q, k, v, mask) -> "torch.Tensor":
    """Naive math in the case dtype (softmax in fp32), with the case's own causal alignment."""
    import torch

    from attnparity.backends.naive import attention_math

    return attention_math(q, k, v, mask, case.causal, case.scale, compute_dtype=q.dtype, softmax_dtype=torch.float32)


def kept_positions(case: AttnCase) -> "torch.Tensor | None":
    """Bool, True = the logit is kept: the mask's keep pattern (at its own shape) and causal
    together, broadcastable to (B, H, Sq, Skv); None with neither."""
    from attnparity.backends.naive import causal_keep

    keep = case.keep()
    if case.causal:
        tri = causal_keep(case.sq, case.skv, case.causal)
        keep = tri.view(1, 1, case.sq, case.skv) if keep is None else keep & tri
    return keep


def dead_rows(case: AttnCase) -> "torch.Tensor | None":
    """Bool (B, 1|H, Sq, 1): query rows with no key left after mask and causal, or None if none."""
    if case.mask_type == "float" and case.masked_value != "-inf":
        return None  # a finite "masked" logit still gets weight: no row is dead in the math
    keep = kept_positions(case)
    if keep is None:
        return None
    dead = ~keep.any(dim=-1, keepdim=True)
    return dead if bool(dead.any()) else None


def finite_convention_rows(case: AttnCase) -> "torch.Tensor | None":
    """Bool (B, 1|H, Sq, 1), or None: the rows whose value a backend declaring
    ``fully_masked="finite"`` documents itself. Rows with no key left, and rows whose every key a
    float mask pushes to finfo.min: the reference gives those the mean of V (equal logits), while a
    kernel that multiplies the biased scores by 1/ln2 for exp2 (compiled flex on CUDA) overflows
    them to -inf and gives 0."""
    return dead_rows(case.with_(masked_value="-inf") if case.masked_value == "min" else case)


def _judge(check: str, backend: Backend, case: AttnCase, tolerances: Tolerances, pairs: dict[str, tuple],
           *, grad: bool = False) -> ParityResult:
    """Apply the rule to each named tensor on its own: {label: (backend, baseline, reference, magnitude,
    logit terms)}, magnitude being the componentwise size of the sums the reference is made of (its
    own floor's scale), logit terms the error P's logits carry into it (tolerance.judge)."""
    bound = tolerances.bound(backend.name, case.dtype, grad=grad)
    metrics: dict[str, float] = {}
    failures: list[str] = []
    classes: list[str] = []
    worst_ratio = -1.0
    use = 0.0
    for label, (out, base, ref, magnitude, logit_terms) in pairs.items():
        j = judge(out, base, ref, magnitude, bound, case.dtype, logit_terms)
        v = j.verdict
        prefix = "" if label == "out" else f"{label}_"
        metrics.update({f"{prefix}err_max": j.backend.max_abs, f"{prefix}err_mean": j.backend.mean_abs,
                        f"{prefix}base_max": j.baseline.max_abs, f"{prefix}base_mean": j.baseline.mean_abs,
                        f"{prefix}scale": j.scale, f"{prefix}bound_use": v.use})
        if j.baseline_nonfinite:
            metrics[f"{prefix}base_nonfinite"] = j.baseline_nonfinite
        r = max(v.ratio_max, v.ratio_mean)
        use = max(use, v.use)
        if r > worst_ratio:
            worst_ratio = r
            metrics["ratio_max"], metrics["ratio_mean"] = v.ratio_max, v.ratio_mean
        if not v.passed:
            failures.append(_explain(label, v.reason, j.backend, j.baseline, out, ref))
            # NaN/Inf first: the class a failing example is filed under (search.py) is its first.
            classes.extend(f"{label}:{'nonfinite' if part == 'nonfinite' else 'bound'}" for part in j.failed
                           if part != "mean-abs" or "max-abs" not in j.failed)
    classes.sort(key=lambda c: not c.endswith(":nonfinite"))
    metrics["k"], metrics["floor"], metrics["bound_use"] = bound.k, bound.floor, use
    metrics["scale"] = max((metrics.get(f"{'' if label == 'out' else label + '_'}scale", 0.0) for label in pairs),
                           default=0.0)
    message = "" if not failures else (
        f"{backend.name} {check} differs from the fp64 reference on {case.short()}\n"
        + "\n".join(failures) + f"\n{reproduce_lines(check, backend.name, case)}")
    return ParityResult(check, backend.name, case, not failures, message=message, metrics=metrics,
                        failure_classes=tuple(dict.fromkeys(classes)))


def _explain(label: str, reason: str, err_b: Errors, err_0: Errors, out, ref) -> str:
    idx = err_b.worst_index
    got = float(out[idx].double()) if idx else float("nan")
    want = float(ref[idx]) if idx else float("nan")
    return (f"  {label}: {reason}\n"
            f"    backend  max-abs {err_b.max_abs:.3g} mean-abs {err_b.mean_abs:.3g}\n"
            f"    baseline max-abs {err_0.max_abs:.3g} mean-abs {err_0.mean_abs:.3g} (naive math in the same dtype)\n"
            f"    worst element {list(idx)} (B, H, S, D): backend {got:.6g}, reference {want:.6g}")


def check_parity(backend: Backend, case: AttnCase, tolerances: Tolerances | None = None) -> ParityResult:
    """Forward output of ``backend`` on ``case`` against fp64 math, judged by the tolerance rule."""
    tolerances = tolerances or Tolerances()
    outside = case.outside(backend.capabilities)
    if outside:
        return ParityResult("forward", backend.name, case, True, skipped=outside)
    q, k, v, mask = case.tensors()
    try:
        out = call_backend(backend, case, q, k, v, mask)
    except ContractViolation as exc:
        return ParityResult("forward", backend.name, case, False, metrics={"ratio_max": float("inf")},
                            failure_classes=("contract",), message=f"{backend.name} {exc} on {case.short()}\n{reproduce_lines('forward', backend.name, case)}")
    pairs = forward_pairs(case, q, k, v, mask, out, backend.capabilities.fully_masked == "finite")
    result = _judge("forward", backend, case, tolerances, pairs)
    rows = None if result.passed or case.mask == "none" else dead_rows(case.with_(masked_value="-inf"))
    if rows is not None:
        # Whether the failure is in the fully masked rows alone (results/known.py: masked_rows_only).
        out, base, ref, magnitude, logit_terms = pairs["out"]
        rows = rows.expand_as(ref).to(ref.device)
        live = _judge("forward", backend, case, tolerances, {"out": (
            out.masked_fill(rows, 0.0), base.masked_fill(rows, 0.0), ref.masked_fill(rows, 0.0), magnitude, logit_terms)})
        result.metrics["live_rows_bound_use"] = live.bound_use if live.passed else float("inf")
    return result


def forward_pairs(case: AttnCase, q, k, v, mask, out, finite_dead_rows: bool = False) -> dict[str, tuple]:
    """{"out": (output, baseline, reference, magnitude, logit terms)} for ``_judge``: the fp64
    reference and the naive same-dtype baseline of ``out``, a backend's output on ``case``'s inputs.
    ``finite_dead_rows``: the backend documents its own value for the rows of finite_convention_rows;
    those rows are then judged only elsewhere (the masked-rows check), here only never NaN/Inf, and
    left out of the reference too (its mean of V on a finfo.min row would swamp the limit)."""
    from .reference import reference_forward_terms

    ref, magnitude, logit_terms = reference_forward_terms(q, k, v, mask, case.causal, case.scale, EPS["fp32"] / EPS[case.dtype])
    base = baseline_forward(case, q, k, v, mask)
    dead = finite_convention_rows(case) if finite_dead_rows else None
    if dead is not None:
        dead = dead.expand_as(ref).to(ref.device)
        out = out.masked_fill(dead & out.isfinite(), 0.0)
        base = base.masked_fill(dead, 0.0)
        ref = ref.masked_fill(dead, 0.0)
    return {"out": (out, base, ref, magnitude, logit_terms)}


def check_grads(backend: Backend, case: AttnCase, tolerances: Tolerances | None = None) -> ParityResult:
    """dQ, dK, dV of ``backend`` against fp64 autograd, beside the naive baseline's gradients."""
    tolerances = tolerances or Tolerances()
    if not backend.capabilities.backward:
        return ParityResult("backward", backend.name, case, True, skipped="backward not claimed")
    outside = case.outside(backend.capabilities)
    if outside:
        return ParityResult("backward", backend.name, case, True, skipped=outside)
    q, k, v, mask = case.tensors()
    grad_out = upstream_grad(case, q, backend.capabilities.fully_masked == "finite")
    result = _judge_grads(backend, case, tolerances, (q, k, v, mask), grad_out)
    dead = None if result.passed or case.mask == "none" else dead_rows(case.with_(masked_value="-inf"))
    if dead is not None and not result.failure_classes == ("contract",):
        # Whether the failure comes from the fully masked rows alone: with their upstream gradient
        # zero they add nothing to dQ, dK or dV, whatever the kernel computes for them.
        live = _judge_grads(backend, case, tolerances, (q, k, v, mask),
                            grad_out.masked_fill(dead.expand_as(grad_out).to(grad_out.device), 0))
        result.metrics["live_rows_bound_use"] = live.bound_use if live.passed else float("inf")
    return result


def _judge_grads(backend: Backend, case: AttnCase, tolerances: Tolerances, tensors: tuple,
                 grad_out: "torch.Tensor") -> ParityResult:
    q, k, v, mask = tensors
    try:
        got = grads_of(lambda a, b, c: call_backend(backend, case, a, b, c, mask), q, k, v, grad_out)
    except (ContractViolation, RuntimeError) as exc:
        return ParityResult("backward", backend.name, case, False, metrics={"ratio_max": float("inf")},
                            failure_classes=("contract",), message=f"{backend.name} backward failed on {case.short()}: {exc}\n"
                                    f"{reproduce_lines('backward', backend.name, case)}")
    return _judge("backward", backend, case, tolerances, grad_pairs(case, q, k, v, mask, grad_out, got), grad=True)


def upstream_grad(case: AttnCase, q, finite_dead_rows: bool = False) -> "torch.Tensor":
    """The gradient flowing into the output (B, H, Sq, D), drawn from the case's seed + 1.
    ``finite_dead_rows``: the backend documents its own value for the rows of
    finite_convention_rows; no gradient flows from them."""
    import torch

    gen = torch.Generator().manual_seed(case.seed + 1)
    grad_out = torch.randn(case.batch, case.heads, case.sq, case.head_dim, generator=gen).to(q.dtype).to(q.device)
    dead = finite_convention_rows(case) if finite_dead_rows else None
    return grad_out if dead is None else grad_out.masked_fill(dead.expand_as(grad_out).to(grad_out.device), 0)


def grads_of(fn, q, k, v, grad_out) -> tuple:
    """(dQ, dK, dV) of ``fn(q, k, v)`` for the upstream gradient ``grad_out``."""
    import torch

    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
    return torch.autograd.grad(fn(*leaves), leaves, grad_out)


def grad_pairs(case: AttnCase, q, k, v, mask, grad_out, got) -> dict[str, tuple]:
    """{"dq" | "dk" | "dv": (gradient, baseline's, fp64 reference's, magnitude, logit terms)} for
    ``_judge``, ``got`` being a backend's (dQ, dK, dV) on ``case``'s inputs."""
    from .reference import reference_grads

    ref = reference_grads(q, k, v, grad_out, mask, case.causal, case.scale)
    base = grads_of(lambda a, b, c: baseline_forward(case, a, b, c, mask), q, k, v, grad_out)
    terms = _grad_terms(case, q, k, v, mask, grad_out)
    return {name: (g, b, r, *t) for name, g, b, r, t in zip(("dq", "dk", "dv"), got, base, ref, terms)}


def _grad_terms(case: AttnCase, q, k, v, mask, grad_out) -> tuple:
    """The componentwise magnitude of the sums dQ, dK and dV are made of, in fp64, each the shape of
    its gradient: each tensor's (and row's) own floor scale.

    Floating-point error in a sum is a few roundings of the sum of its terms' magnitudes, not of the
    sum (Higham, Accuracy and Stability of Numerical Algorithms, sec. 3.1: |fl(a.b) - a.b| <= g_n |a|.|b|).
    It matters where the result cancels: with one key, or a one-hot softmax, dS = P * (dP - rowsum)
    is exactly 0, so dQ and dK are 0 while every kernel still rounds dP and the row sum, and adds
    those roundings up over Sq (for dK) or Skv (for dQ) terms. So the floors are a few roundings of

        dQ: scale * (P * (|dO| |V|^T + |dO|.|O|)) @ |K|     dK: scale * (P * (...))^T @ |Q|
        dV: P^T @ |dO|

    summed over the query heads that share a kv head, with P weighted by the roundings it carries
    itself (reference.probs_and_rounding: large logits). Until issue 13 one scale, the largest element
    of all three, served every tensor: at magnitude 6 it was 1.3e3 while max|dV| was 6.7."""
    import torch

    from attnparity.backends.naive import expand_kv

    from .reference import probs_and_rounding

    heads, kv_heads = case.heads, k.shape[1]
    if not (q.numel() and k.numel()):
        return ((None, None),) * 3
    softmax_scale = abs(case.scale if case.scale is not None else case.head_dim ** -0.5)
    q64, k64, v64, do = q.double(), expand_kv(k, heads).double(), expand_kv(v, heads).double(), grad_out.double()
    p, amp = probs_and_rounding(q, k, mask, case.causal, case.scale, EPS["fp32"] / EPS[case.dtype])
    # dP = dO V^T and the row sum dO . O are dot products too: their roundings are of sum |dO||V| and
    # sum |dO||O|, not of the (often cancelling) results: with one key dP - rowsum is exactly 0, yet
    # torch's flash backward is ~300 roundings of |dP - rowsum|-based terms off in dQ there.
    dp = do.abs() @ v64.abs().transpose(-2, -1)
    rowsum = (do.abs() * (p @ v64).abs()).sum(-1, keepdim=True)

    def per_kv_head(t):  # (B, H, Skv, D) -> (B, Hkv, Skv, D): GQA sums the heads of a group
        return t.unflatten(1, (kv_heads, heads // kv_heads)).sum(2)

    def terms(p):
        ds = p * (dp + rowsum)
        return (softmax_scale * (ds @ k64.abs()), per_kv_head(softmax_scale * (ds.transpose(-2, -1) @ q64.abs())),
                per_kv_head(p.transpose(-2, -1) @ do.abs()))

    return tuple(zip(terms(p), terms(p * amp)))
