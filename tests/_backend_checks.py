"""Helpers for the backend adapter tests: compare one backend call with the fp64 reference."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from attnparity.check.cases import AttnCase
from attnparity.check.reference import reference_forward

STANDINS = Path(__file__).parent / "standins"
STANDIN_PACKAGES = ("_math", "flash_attn", "flash_attn_interface", "sageattention", "xformers")
#: Max-abs error allowed against fp64: the stand-ins compute in fp64 and round once to the dtype.
ATOL = {"fp32": 1e-5, "fp16": 4e-3, "bf16": 3e-2}


def forget_standins() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in STANDIN_PACKAGES:
            del sys.modules[name]


def assert_matches_reference(backend, case: AttnCase, atol: float | None = None) -> None:
    """The backend's output on ``case`` equals the fp64 reference, in the backend's own causal
    alignment; the case must be one the backend claims."""
    # The stand-ins run CUDA-only adapters on CPU tensors: every claim is checked but the device.
    caps = dataclasses.replace(backend.capabilities, devices={*backend.capabilities.devices, "cpu"})
    outside = case.outside(caps)
    assert outside is None, f"{backend.name} does not claim {case.short()}: {outside}"
    q, k, v, mask = case.tensors()
    out = backend(q, k, v, attn_mask=mask, is_causal=case.causal is not None, scale=case.scale)
    ref = reference_forward(q, k, v, mask, case.causal, case.scale)
    assert tuple(out.shape) == tuple(ref.shape), f"{backend.name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert out.dtype == q.dtype, f"{backend.name}: dtype {out.dtype} != {q.dtype}"
    assert not out.isnan().any(), f"{backend.name} gave NaN on {case.short()}"
    err = (out.double() - ref).abs().max().item()
    limit = ATOL[case.dtype] if atol is None else atol
    assert err <= limit, f"{backend.name} on {case.short()}: max-abs error {err:.3g} > {limit:g}"
