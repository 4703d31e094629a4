"""Standalone repro files: one Python file per failure that needs only torch and the library at
fault (diffusers, xformers, ...), never attnparity, for an upstream bug report.

    attnparity repro --standalone CHECK BACKEND 'CASE JSON' -o FILE

The file is put together from attnparity's own code, copied (backends/source.py), never rewritten:
the case's AttnCase builds the very tensors attnparity builds (``make_inputs()`` returns them), the
backend is called as its adapter calls it (the adapter module's ``_standalone`` hook), and the fp64
reference, the naive same-dtype baseline and the tolerance rule are attnparity's (check/parity.py,
check/tolerance.py; the check's own logic in check/standalone_run.py). Only the rule's k and floor
are fixed at generation time (``BOUND``: the defaults, or the ``attn_tolerance`` rules given). The
file prints the backend's error, the baseline's and the limit, and exits 1 while the check fails,
0 once it passes.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from string import Template
from typing import TYPE_CHECKING, Any

from attnparity.backends.base import Backend
from attnparity.backends.source import StandaloneCall, constant_source, source_of
from .cases import AttnCase
from .parity import STANDALONE_CHECKS, standalone_command
from .tolerance import Tolerances

if TYPE_CHECKING:
    from .parity import ParityResult

#: The expression that runs each check in the file (check/standalone_run.py).
_RUN = {
    "forward": "run_forward(case, attend, Bound(**BOUND), CLAIMS['fully_masked'] == 'finite')",
    "backward": "run_backward(case, attend, Bound(**BOUND), CLAIMS['fully_masked'] == 'finite')",
    "kwargs": "run_kwargs(case, attend, Bound(**BOUND), [(kw, AttnCase(**a), AttnCase(**b)) for kw, a, b in VARIANTS])",
    "masked-rows": "run_masked_rows(case, attend, CLAIMS['fully_masked'])",
    "deterministic": "run_deterministic(case, attend, CLAIMS['deterministic'])",
    "batch": "run_batch(case, attend, Bound(**BOUND))",
}


class StandaloneError(ValueError):
    """A standalone repro that cannot be written; the message says why and what to do instead."""


@dataclass(frozen=True)
class Repro:
    """What one standalone file reproduces. ``about``: the paragraph that describes the bug;
    ``versions``: the versions it was generated (and checked) with; ``applies``: PEP 440 specifiers
    of the versions it is known on (a ledger entry's), if any."""

    check: str
    backend: str
    case: AttnCase
    about: str
    command: str
    versions: dict[str, str]
    applies: dict[str, str]
    call_as: str | None = None
    #: the device it was generated on, in words ("NVIDIA H100 80GB HBM3"); empty: the case's device kind
    device: str = ""


def supported(check: str) -> bool:
    return check in STANDALONE_CHECKS


def describe_failure(result: "ParityResult") -> str:
    """The bug paragraph of a standalone file, from attnparity's own result on the case."""
    if result.skipped:
        return f"attnparity skips this case for {result.backend}: {result.skipped}."
    if result.passed:
        return (f"attnparity's {result.check} check of {result.backend} passes on {result.case.short()} "
                "where this file was generated: it exits 0 there.")
    text = "\n".join(line for line in result.message.splitlines()
                     if not line.strip().startswith(("reproduce:", "standalone:")))
    return f"attnparity's {result.check} check of {result.backend} fails on {result.case.short()}:\n{text}"


def render(repro: Repro, backend: Backend, tolerances: Tolerances | None = None) -> str:
    """The text of the standalone file of ``repro`` (``backend``: the row it is about)."""
    from attnparity.backends.registry import standalone_call

    if not supported(repro.check):
        raise StandaloneError(f"a standalone repro of the {repro.check!r} check is not available (only "
                              f"{', '.join(STANDALONE_CHECKS)}); use the reproduce line, which needs attnparity")
    caller = repro.call_as or repro.backend
    call = standalone_call(caller)
    if call is None:
        raise StandaloneError(f"backend {caller!r} has no standalone call: only attnparity's built-in adapters "
                              "say how to call their library without attnparity; use the reproduce line")
    bound = (tolerances or Tolerances()).bound(repro.backend, repro.case.dtype, grad=repro.check == "backward")
    case = _case_run(repro, backend)
    caps = backend.capabilities
    values = {
        "title": f"{repro.check} check of {repro.backend} on {case.short()}",
        "about": _docstring_text(repro.about),
        "command": repro.command,
        "libraries": " and ".join(call.libraries),
        "swapped": (f"\nThe call under test is swapped for {caller}'s (a check that the file passes with a correct "
                    "backend).\n") if repro.call_as else "",
        "generated": ", ".join(f"{k} {v}" for k, v in repro.versions.items()),
        "applies": ", ".join(f"{k} {v}" for k, v in repro.applies.items()) or "the versions above (not scoped further)",
        "device": repro.device or case.device,
        "check": repr(repro.check),
        "case": _literal(_changed(case)),
        "variants": _literal(_variants(repro, backend)),
        "bound": _literal({"k": bound.k, "floor": bound.floor, "floor_mean": bound.floor_mean}),
        "claims": _literal({"fully_masked": caps.fully_masked, "deterministic": caps.deterministic}),
        "versions": _literal(repro.versions),
        "library_list": repr(call.libraries),
        "backend": repro.backend,
        "caller": caller,
        "call": call.call,
        "run": _RUN[repro.check],
        "copied": "\n\n\n".join(_definitions(call)),
    }
    return _FILE.substitute(values)


def _case_run(repro: Repro, backend: Backend) -> AttnCase:
    """The case the check actually runs: its own variant of the drawn case (masked-rows, batch)."""
    from .semantics import batch_case, masked_rows_case

    if repro.check == "masked-rows":
        derived = masked_rows_case(repro.case, backend.capabilities)
        if derived is None:
            raise StandaloneError(f"{repro.backend} claims no mask: its masked-rows check is skipped, nothing to reproduce")
        return derived
    return batch_case(repro.case) if repro.check == "batch" else repro.case


def _variants(repro: Repro, backend: Backend) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    if repro.check != "kwargs":
        return []
    from .semantics import _kwarg_variants

    return [(kw, _changed(a), _changed(b)) for kw, a, b in _kwarg_variants(repro.case, backend)]


def _changed(case: AttnCase) -> dict[str, Any]:
    """The fields of ``case`` that differ from AttnCase's defaults (the file has the same defaults)."""
    default = AttnCase().as_dict()
    return {k: v for k, v in case.as_dict().items() if v != default[k]}


def _literal(value: Any) -> str:
    """A Python literal of ``value`` (a list: one item a line), one that ``ast.literal_eval`` reads
    back (checked)."""
    text = repr(value)
    if isinstance(value, list) and value:
        text = "[\n" + "".join(f"    {item!r},\n" for item in value) + "]"
    ast.literal_eval(text)
    return text


def _docstring_text(text: str) -> str:
    """``text`` made safe inside the file's docstring (no closing quotes, no escapes)."""
    import textwrap

    text = text.replace("\\", "/").replace('"""', "'''")
    # Long prose lines are wrapped; indented lines (a failure's details) are kept as they are.
    return "\n".join(line.rstrip() if line.startswith(" ") or len(line) <= 100 else textwrap.fill(line, 100)
                     for line in text.strip().splitlines())


def _definitions(call: StandaloneCall) -> list[str]:
    """attnparity's code the file runs, copied: the case, the reference, the rule, the check, then
    the adapter's call; each name once."""
    from attnparity.backends import base, naive

    from . import parity, reference, semantics, standalone_run, tolerance

    sources = [
        source_of(base.dtype_name), source_of(base.torch_dtype),
        source_of(AttnCase, drop=("outside",)),
        *naive.math_sources(),
        *(source_of(f) for f in (reference.probs_and_rounding, reference.reference_forward_terms,
                                 reference.reference_forward, reference.reference_grads)),
        constant_source("EPS", tolerance.EPS), constant_source("ETA", tolerance.ETA),
        *(source_of(f) for f in (tolerance.Bound, tolerance.Errors, tolerance.errors, tolerance.Verdict,
                                 tolerance.ratio, tolerance.Judgement, tolerance.judge)),
        *(source_of(f) for f in (parity.baseline_forward, parity.kept_positions, parity.dead_rows, parity.finite_convention_rows,
                                 parity.forward_pairs, parity.upstream_grad, parity.grads_of, parity.grad_pairs,
                                 parity._grad_terms, semantics.kwarg_lost, semantics.dead_row_problem,
                                 semantics.repeat_problem, semantics.batch_problem)),
        *(source_of(f) for f in (standalone_run.show, standalone_run.judge_pairs, standalone_run.run_forward,
                                 standalone_run.run_backward, standalone_run.run_kwargs, standalone_run.run_masked_rows,
                                 standalone_run.run_deterministic, standalone_run.run_batch)),
        *call.sources,
    ]
    seen: set[str] = set()
    unique = []
    for text in sources:
        names = _defined_names(text)
        if not names & seen:
            unique.append(text)
        seen |= names
    return unique


def _defined_names(text: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def library_versions(libraries: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of ``libraries`` (distribution names); absent ones are left out."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in libraries:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def claiming(candidates: "str | Sequence[str] | None", case: AttnCase) -> str | None:
    """The first of ``candidates`` (backend names) that claims ``case``: a backend swapped in for the
    buggy one must be called only where attnparity would call it. None when none is asked for."""
    from attnparity.backends.registry import get_backend

    if not candidates:
        return None
    names = [candidates] if isinstance(candidates, str) else list(candidates)
    why = {name: case.outside(get_backend(name).capabilities) for name in names}
    chosen = next((name for name, outside in why.items() if outside is None), None)
    if chosen is None:
        raise StandaloneError("no backend given to --call-as claims this case (" + "; ".join(
            f"{name}: {outside}" for name, outside in why.items()) + "); name one that does, e.g. naive")
    return chosen


def repro_of_failure(check: str, backend: Backend, case: AttnCase, tolerances: Tolerances | None = None, *,
                     about: str | None = None, applies: dict[str, str] | None = None,
                     call_as: "str | Sequence[str] | None" = None,
                     command: str | None = None, name_device: bool = True) -> Repro:
    """The Repro of ``check`` on ``case``: ``about`` defaults to what attnparity's own check says
    of the case here (it is run once). ``call_as``: a correct backend (or several, the first that
    claims the case is taken) to call instead of the buggy one. ``name_device``: say which device
    (its model) the file was generated on, not only its kind (files committed for every machine
    leave it out)."""
    from attnparity.machine import identify

    from attnparity.backends.registry import standalone_call

    from .repro import run_check

    if about is None:
        about = describe_failure(run_check(check, backend, case, tolerances or Tolerances()))
    call = standalone_call(backend.name)
    libraries = call.libraries if call is not None else ("torch",)
    return Repro(check, backend.name, case, about, command or standalone_command(check, backend.name, case),
                 library_versions(libraries), dict(applies or {}), claiming(call_as, case),
                 (identify(case.device).model or identify(case.device).name) if name_device else "")


_FILE = Template('''\
"""Standalone repro: the $title.

$about

Run: python THIS_FILE. Exit status 1 while the bug is there, 0 once it is fixed. Needs only
$libraries (no attnparity).
$swapped
Generated by attnparity with
    $command
on device $device, with $generated. Known on: $applies.

How: make_inputs() builds the case's tensors (q, k, v, attn_mask: dtype, layout, strides and
stride-0 views, mask, values) with attnparity's own code, copied below, bit for bit as attnparity
builds them; attention() calls $caller as attnparity's adapter calls it. The output is compared with
fp64 math on the same rounded inputs, beside naive math in the same dtype (the baseline), by
attnparity's tolerance rule (per row: error <= k * baseline error + floor roundings; BOUND holds the
k and floor in force when this file was generated).
"""

from __future__ import annotations

import math
import sys
import traceback
from dataclasses import asdict, dataclass, field, fields, replace

import torch

CHECK = $check
CASE = $case
VARIANTS = $variants
BOUND = $bound
CLAIMS = $claims
GENERATED_WITH = $versions
LIBRARIES = $library_list


def attention(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    """The call under test: $caller, in SDPA's (B, H, S, D) layout."""
    return $call


def attend(case, q, k, v, mask):
    return attention(q, k, v, attn_mask=mask, is_causal=case.causal is not None, scale=case.scale)


def make_inputs():
    """(q, k, v, attn_mask) of the case, as attnparity builds them."""
    return AttnCase(**CASE).tensors()


def installed_versions():
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in LIBRARIES:
        try:
            found[name] = torch.__version__ if name == "torch" else version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def main():
    case = AttnCase(**CASE)
    print(f"$backend {CHECK} on {case.short()} ({case.device})")
    print("installed: " + ", ".join(f"{k} {v}" for k, v in installed_versions().items())
          + "; generated with: " + ", ".join(f"{k} {v}" for k, v in GENERATED_WITH.items()))
    try:
        passed = $run
    except Exception:
        traceback.print_exc()
        print("the call raised on this input")
        passed = False
    print("PASS: not reproduced (fixed?)" if passed else "FAIL: the bug reproduces")
    return 0 if passed else 1


# ---- attnparity's own code, copied: the case, the reference, the rule, the check, the adapter ----


$copied


if __name__ == "__main__":
    sys.exit(main())
''')
