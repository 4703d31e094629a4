"""Which CPU backends are correct, and which of their failures are known upstream findings (the
built-in ledger, docs/findings.md). The false-alarm test and scripts/detection.py's margins read
both from here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from attnparity import Backend
from attnparity.check.cases import AttnCase
from attnparity.check.parity import ParityResult
from attnparity.machine import versions
from attnparity.results.known import load_ledger

#: Correct CPU backends. diffusers:flex is not among them: it drops is_causal (a real diffusers
#: bug in the ledger, a strict xfail in test_backends_flex_diffusers.py).
CORRECT = ("naive", "sdpa-math", "sdpa-flash", "sdpa", "flex-eager",
           "diffusers:native", "diffusers:_native_flash", "diffusers:_native_math")
#: The short CI version: the kernels every torch user runs.
CORRECT_CI = ("naive", "sdpa-math", "sdpa-flash", "sdpa")
#: The slow false-alarm test's seeds; scripts/detection.py's margins use the same ones.
FALSE_ALARM_SEEDS = range(1000, 1020)

#: attnparity's built-in known-findings ledger (attnparity/results/known_findings.toml): the same
#: one a user's run applies by default.
LEDGER = load_ledger([], invocation_dir=Path(__file__).parent)
_INSTALLED = versions()


def known_finding(check: str, backend: str, result: "ParityResult") -> str | None:
    """The ledger finding a failing result is (its id), or None for a failure nobody knows of (a false
    alarm or a new bug): asked of the failure itself (the cases the check ran, its size and tensors),
    as a run asks it."""
    c = result.case
    return next((f.id for f in LEDGER.findings
                 if f.applies(backend, check, c.dtype, c.device, _INSTALLED) and f.explains(c, result)), None)


def cell_findings(backend: str, check: str, dtype: str, device: str = "cpu") -> tuple:
    """The built-in ledger's findings about one cell, as a run passes them to suite.op.run_op."""
    return LEDGER.for_cell(backend, check, dtype, device, _INSTALLED)


def scoped(backend: Backend, check: str) -> Backend:
    """The backend with its known findings' cases declared outside its claims, the way a user would
    scope a backend around a bug they know: the search then measures the rest instead of stopping
    at the known failure."""
    findings = [f for f in LEDGER.findings if any(f.applies(backend.name, check, d, "cpu", _INSTALLED)
                                                  for d in ("fp32", "fp16", "bf16"))]
    if not findings:
        return backend
    caps = backend.capabilities
    previous = caps.constraint

    def constraint(case: AttnCase) -> str | None:
        for f in findings:
            if f.explains(case):
                return f"a known finding ({f.id}, the built-in ledger)"
        return previous(case) if previous is not None else None

    return dataclasses.replace(backend, capabilities=dataclasses.replace(caps, constraint=constraint))


