"""Which CPU backends are correct, and which of their failures are known upstream findings
(docs/findings.md). The false-alarm test and scripts/detection.py's margins read both from here.
"""

from __future__ import annotations

import dataclasses

from attnparity import Backend
from attnparity.check.cases import AttnCase
from attnparity.check.parity import dead_rows

#: Correct CPU backends. diffusers:flex is not among them: it drops is_causal (a real diffusers
#: bug, a strict xfail in test_backends_flex_diffusers.py), so it would fail every seed.
CORRECT = ("naive", "sdpa-math", "sdpa-flash", "sdpa", "flex-eager",
           "diffusers:native", "diffusers:_native_flash", "diffusers:_native_math")
#: The short CI version: the kernels every torch user runs.
CORRECT_CI = ("naive", "sdpa-math", "sdpa-flash", "sdpa")
#: The slow false-alarm test's seeds; scripts/detection.py's margins use the same ones.
FALSE_ALARM_SEEDS = range(1000, 1020)

#: (check, backend) cells that run torch's CPU flash backward, which recomputes P from a stored
#: fp32 logsumexp: where every key of a row carries a large finite mask value, the logsumexp keeps
#: only ulp(|mask|) of absolute precision (docs/findings.md): finfo.min is O(1) wrong, -1e4 about 1e-3.
FLASH_BACKWARD = {("backward", name) for name in ("sdpa-flash", "sdpa", "diffusers:native", "diffusers:_native_flash")}


def finite_mask_full_rows(case: AttnCase) -> bool:
    """Some query row has every key masked by a large finite additive value (finfo.min or -1e4)."""
    return (case.mask_type == "float" and case.masked_value in ("min", "-1e4")
            and dead_rows(case.with_(masked_value="-inf")) is not None)


def known_finding(check: str, backend: str, case: dict | None) -> str | None:
    """The finding a failure is, or None for a failure nobody knows of (a false alarm or a new bug)."""
    if (check, backend) in FLASH_BACKWARD and case and finite_mask_full_rows(AttnCase.from_dict(case)):
        return "torch CPU flash backward, rows fully masked by a large finite value"
    return None


def scoped(backend: Backend, check: str) -> Backend:
    """The backend with its known finding's cases declared outside its claims, the way a user would
    scope a backend around a bug they know: the search then measures the rest instead of stopping
    at the known failure."""
    if (check, backend.name) not in FLASH_BACKWARD:
        return backend
    caps = backend.capabilities
    previous = caps.constraint

    def constraint(case: AttnCase) -> str | None:
        if finite_mask_full_rows(case):
            return "rows fully masked by a large finite value: a known torch finding (docs/findings.md)"
        return previous(case) if previous is not None else None

    return dataclasses.replace(backend, capabilities=dataclasses.replace(caps, constraint=constraint))


__all__ = ["CORRECT", "CORRECT_CI", "FALSE_ALARM_SEEDS", "finite_mask_full_rows", "known_finding", "scoped"]
