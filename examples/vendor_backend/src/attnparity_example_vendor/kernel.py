"""The "vendor kernel": attention over key blocks with a running (online) softmax, in the vendor's
own (batch, seq, heads, head_dim) layout, as FlashAttention-style kernels compute it."""

from __future__ import annotations

import torch


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, keep: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None, scale: float, block: int = 32) -> torch.Tensor:
    """q: (B, Sq, H, D); k, v: (B, Skv, H, D) with as many heads as q. ``keep`` (bool, True = attend)
    and ``bias`` (additive) broadcast to (B, H, Sq, Skv). Returns (B, Sq, H, D) in q's dtype."""
    qf, kf, vf = (t.transpose(1, 2).float() for t in (q, k, v))  # (B, H, S, D), fp32 accumulation
    b, h, sq, d = qf.shape
    skv = kf.shape[2]
    running_max = torch.full((b, h, sq, 1), float("-inf"), device=q.device)
    denom = torch.zeros((b, h, sq, 1), device=q.device)
    acc = torch.zeros((b, h, sq, d), device=q.device)
    for start in range(0, skv, block):
        stop = min(start + block, skv)
        scores = (qf @ kf[:, :, start:stop].transpose(-2, -1)) * scale
        if bias is not None:
            scores = scores + bias.float().expand(b, h, sq, skv)[..., start:stop]
        if keep is not None:
            scores = scores.masked_fill(~keep.expand(b, h, sq, skv)[..., start:stop], float("-inf"))
        new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))
        safe_max = new_max.masked_fill(torch.isneginf(new_max), 0.0)  # rows with no key yet
        correction = torch.exp(running_max - safe_max)
        probs = torch.exp(scores - safe_max)
        denom = denom * correction + probs.sum(dim=-1, keepdim=True)
        acc = acc * correction + probs @ vf[:, :, start:stop]
        running_max = new_max
    out = torch.where(denom > 0, acc / denom.clamp_min(1e-30), torch.zeros_like(acc))  # dead rows -> 0
    return out.transpose(1, 2).to(q.dtype)
