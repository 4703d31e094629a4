"""The fp64 reference (forward and gradients): the naive attention math (backends/naive.py) run in
fp64 on exactly the already rounded inputs of a case."""

from __future__ import annotations

from attnparity.backends.naive import Causal, attention_math


def reference_forward(q, k, v, attn_mask=None, causal: Causal = None, scale: float | None = None):
    """fp64 reference on exactly the (already rounded) inputs."""
    import torch

    mask = attn_mask if attn_mask is None or attn_mask.dtype == torch.bool else attn_mask.double()
    return attention_math(q.double(), k.double(), v.double(), mask, causal, scale,
                          compute_dtype=torch.float64, softmax_dtype=torch.float64)


def probs_and_rounding(q, k, attn_mask=None, causal: Causal = None, scale: float | None = None,
                       logit_eps_ratio: float = 1.0):
    """(P, L) in fp64, P (B, H, Sq, Skv) on K expanded to H heads; L the relative error a kernel's
    P_ij carries from its logits, in roundings of the dtype: ratio * (|s|_ij + max_j |s|_ij), |s| = scale * |q|.|k|
    (the logits' terms), without the mask.

    Kernels compute the logits in fp32 whatever the dtype, each off by an fp32 rounding of its
    magnitude, and exp turns an absolute error in s_ij, or in the row's max or logsumexp (which a
    flash backward recomputes P from), into that relative error in P_ij: at logits of ~1e3 torch's
    correct flash backward is ~60 fp32 roundings off in dV, which one rounding of P could not
    allow. ``logit_eps_ratio`` is eps(fp32) / eps(dtype): in half dtypes it is negligible until the
    logits are huge. The mask is left out: rounding a -1e4 mask is the kernel's business (the known
    flash finding, docs/findings.md)."""
    import torch

    from attnparity.backends.naive import attention_probs, expand_kv

    heads = q.shape[1]
    q64, k64 = q.double(), expand_kv(k, heads).double()
    mask = attn_mask if attn_mask is None or attn_mask.dtype == torch.bool else attn_mask.double()
    p = attention_probs(q64, k64, mask, causal, scale, compute_dtype=torch.float64, softmax_dtype=torch.float64)
    softmax_scale = abs(q.shape[-1] ** -0.5 if scale is None else scale)
    # Higham's magnitude of the dot product s_ij = scale * q_i.k_j, sum_d |q_id| |k_jd|: its rounding
    # is a few eps of that, not of |s_ij| (which cancels)
    logits = softmax_scale * (q64.abs() @ k64.abs().transpose(-2, -1))
    return p, logit_eps_ratio * (logits + logits.amax(-1, keepdim=True))


def reference_forward_terms(q, k, v, attn_mask=None, causal: Causal = None, scale: float | None = None,
                            logit_eps_ratio: float = 1.0):
    """(reference, P @ |V|, (P * L) @ |V|) in fp64: the output, the componentwise magnitude of the sums
    it is made of (whose rows scale each row's floor) and the error P's logits carry into it
    (probs_and_rounding), in roundings."""
    from attnparity.backends.naive import expand_kv

    p, amp = probs_and_rounding(q, k, attn_mask, causal, scale, logit_eps_ratio)
    v64 = expand_kv(v, q.shape[1]).double()
    return p @ v64, p @ v64.abs(), (p * amp) @ v64.abs()


def reference_grads(q, k, v, grad_out, attn_mask=None, causal: Causal = None, scale: float | None = None):
    """(dQ, dK, dV) in fp64 for the upstream gradient ``grad_out``."""
    import torch

    leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    mask = attn_mask if attn_mask is None or attn_mask.dtype == torch.bool else attn_mask.double()
    out = attention_math(*leaves, mask, causal, scale, compute_dtype=torch.float64, softmax_dtype=torch.float64)
    return torch.autograd.grad(out, leaves, grad_out.double())
