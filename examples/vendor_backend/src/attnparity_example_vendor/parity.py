"""The attnparity entry point: adapt the vendor kernel to the backend contract and say what it claims."""

from __future__ import annotations

from attnparity import Backend, Capabilities


def example_attention(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    """The contract's call, in torch SDPA's (B, H, S, D) layout; the kernel wants (B, S, H, D)."""
    import torch

    from examples.vendor_backend.src.attnparity_example_vendor.kernel import blocked_attention

    heads, sq, skv = q.shape[1], q.shape[2], k.shape[2]
    if k.shape[1] != heads:  # GQA/MQA: the kernel wants one K/V head per query head
        k, v = (t.repeat_interleave(heads // t.shape[1], dim=1) for t in (k, v))
    keep = bias = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = attn_mask
        else:
            bias = attn_mask
    if is_causal:  # torch's top-left alignment
        tri = torch.ones(sq, skv, dtype=torch.bool, device=q.device).tril()
        keep = tri if keep is None else keep & tri
    out = blocked_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), keep=keep, bias=bias,
                            scale=q.shape[-1] ** -0.5 if scale is None else scale)
    return out.transpose(1, 2)


def backends() -> list[Backend]:
    import torch

    return [Backend(
        "example-vendor", example_attention,
        Capabilities(devices={"cpu", "cuda"}, dtypes={torch.float32, torch.float16, torch.bfloat16},
                     masks={"bool", "float"}, causal=True, gqa=True, backward=False),
        description="example vendor kernel: key blocks with an online softmax (examples/vendor_backend)",
    )]
