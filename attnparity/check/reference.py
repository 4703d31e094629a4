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


def reference_forward_terms(q, k, v, attn_mask=None, causal: Causal = None, scale: float | None = None):
    """(reference, P @ |V|) in fp64: the output and the componentwise magnitude of the sums it is made
    of, whose rows scale each row's floor. One softmax for both: |V| rides along as extra columns."""
    import torch

    mask = attn_mask if attn_mask is None or attn_mask.dtype == torch.bool else attn_mask.double()
    v64 = v.double()
    both = attention_math(q.double(), k.double(), torch.cat([v64, v64.abs()], dim=-1), mask, causal, scale,
                          compute_dtype=torch.float64, softmax_dtype=torch.float64)
    d = v.shape[-1]
    return both[..., :d], both[..., d:]


def reference_grads(q, k, v, grad_out, attn_mask=None, causal: Causal = None, scale: float | None = None):
    """(dQ, dK, dV) in fp64 for the upstream gradient ``grad_out``."""
    import torch

    leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    mask = attn_mask if attn_mask is None or attn_mask.dtype == torch.bool else attn_mask.double()
    out = attention_math(*leaves, mask, causal, scale, compute_dtype=torch.float64, softmax_dtype=torch.float64)
    return torch.autograd.grad(out, leaves, grad_out.double())
