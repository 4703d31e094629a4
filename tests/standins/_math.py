"""Shared by the stand-ins: attention in fp64 with attnparity's reference math, cast back.

Each stand-in has its library's documented signature and layout and does its layout conversion
itself, as the real library would; ``SWAP_LAYOUT`` in a stand-in module reads its input with the
head and sequence axes swapped, so a test can prove that a layout mistake is caught.
"""

from __future__ import annotations

import torch

from attnparity.backends.naive import attention_math


def attend(q_bhsd, k_bhsd, v_bhsd, *, scale=None, causal=None, bias=None, out_dtype=None):
    """softmax(q k^T * scale + bias) v in fp64; causal is None, "top-left" or "bottom-right"."""
    mask = None if bias is None else bias.double()
    out = attention_math(q_bhsd.double(), k_bhsd.double(), v_bhsd.double(), mask, causal, scale,
                         compute_dtype=torch.float64, softmax_dtype=torch.float64)
    return out.to(out_dtype or q_bhsd.dtype)
