"""The known-findings ledger: failures a user accepts as known (an upstream bug, with its link), so a
gate is red for what is new and only for that.

A ledger is a TOML file of ``[[finding]]`` tables (``--attn-known=PATH``, ini ``attn_known``);
attnparity ships its own (``known_findings.toml`` beside this module), on by default and scoped to
the versions where each finding was seen (``--attn-known=none`` turns it off)::

    [[finding]]
    id = "diffusers-flex-drops-is-causal"
    reason = "diffusers' flex backend sets block_mask = None when no mask is given"
    link = "https://github.com/huggingface/diffusers/issues/NNNN"    # or a docs/ path
    backends = ["diffusers:flex"]            # globs
    dtypes = ["fp32", "fp16", "bf16"]        # optional: every dtype
    devices = ["cpu", "cuda"]                # optional: every device
    versions = { diffusers = ">=0.42,<0.43" } # optional: PEP 440 specifiers by distribution name
    when = { causal = ["top-left", "bottom-right"], mask = "none", nonfinite = false }
    repro = [{ heads = 2, kv_heads = 1, sq = 17, skv = 65, head_dim = 64, causal = "top-left" }]

Scope. A bug does not care which check found it: without ``checks`` a finding applies to every
op-level check (``forward``, ``backward`` and each semantic check) that calls its backends on a case
its ``when`` matches. An entry may narrow ``checks`` (op and semantic check names, and "pipeline"),
but only on purpose: a ``checks`` that leaves out an op-level check needs ``checks_why``, a sentence
saying why the bug cannot show there (the bug is in the backward kernel, which only ``backward``
runs); narrowing without a reason is a LedgerError. "pipeline" is never implied: name it (with the
op checks) to explain pipeline cells too.

``when`` keys are AttnCase fields (a value, a list of values, or for a numeric field a range table
``{ min = 1001 }`` / ``{ max = 4 }`` / both, inclusive), the derived predicates of the case in
``DERIVED``, or what the failure itself says in ``FAILURE``:

- ``error_size``: "rounding" within 4x the limit, else "gross";
- ``nonfinite``: whether the failure has NaN/Inf where the reference is finite;
- ``tensors``: which tensors failed ("out", "dq", "dk", "dv", or "contract" for a call that raised or
  broke the contract); every failed tensor must be listed, so a finding about dQ cannot explain a
  wrong dV;
- ``masked_rows_only``: whether the failure comes from the fully masked rows alone (rows whose every
  key the mask drops, a finite masked value counted as dropped): the forward passes without those
  rows, the gradients pass once those rows' upstream gradient is zero;
- ``ignored_kwargs``: the kwargs the kwargs check found ignored.

``when`` is asked of the case the check actually ran: a semantic check builds variants of the drawn
case (masked-rows: a dead-rows mask; batch: the batch at 3 and a row alone; kwargs: a case with and
without each kwarg), and the failure carries the cases of the calls it rests on
(``ParityResult.calls``): it is explained only when each of its failures has such a call the
finding's ``when`` matches. Each built-in entry bounds the failure it explains with a ``FAILURE``
key (its size, the tensor, the rows, or the kwarg), so a NaN or a wrong dV of kept keys on the same
cases is not a finding about dQ.

``repro`` cases (the dtype is the cell's unless a case names one) are run first in every cell of the
checks in ``repro_checks`` (default: ``checks`` when the entry names them, else the check its
``when`` can fail in: ``backward`` for a finding about gradients only, ``kwargs`` for an ignored kwarg,
else ``forward``) the
finding applies to. A repro case is met only when it fails and the finding explains its failure: the
cell is then a strict xfail that shows the reason. A repro case that fails another way fails the
cell (a second bug on the finding's own case); one that now passes, where no drawn case met the
finding either, fails the cell with "no longer reproduces". Drawn cases the finding explains do not
stop the search, so a second, unknown bug in the same cell is still found.

``checks = [..., "pipeline"]`` makes a finding about the pipeline cells of its backends too (every
``pipeline:<name>``). Its ``when`` is then asked of each attention call the pipeline routes to the
backend (so only what a call shows may be used: ``PIPELINE_WHEN``). A failing pipeline cell is
explained only if the image passes once the calls the finding explains are computed by the fp64
reference instead, every other call still by the backend: a second bug in the other calls keeps
the cell failing. A pipeline cell is never a strict xfail (the same kernel error can be visible in
one dtype's image and not in another's); whether the finding still reproduces is the op-level
cells' question, asked by its ``repro`` cases.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attnparity.check.cases import AttnCase
    from attnparity.check.parity import ParityResult

BUILTIN = Path(__file__).with_name("known_findings.toml")


class LedgerError(ValueError):
    """A ledger file that cannot be used; the message names the file, the finding and the fix."""


def _fully_masked_rows(case: "AttnCase") -> bool:
    from attnparity.check.parity import dead_rows

    # A float mask's large finite values count as masked here: that is what the findings are about.
    return case.mask != "none" and dead_rows(case.with_(masked_value="-inf")) is not None


def _large_kept_bias(case: "AttnCase") -> bool:
    """A float mask that gives some kept position a bias of magnitude >= 8 (the case space's ALiBi
    over a long row): there bf16's spacing is 1/16 or more, so a logit rounded with its bias loses
    up to 1/32 or more."""
    import torch

    from attnparity.check.parity import kept_positions

    if case.mask == "none" or case.mask_type != "float":
        return False
    mask = case.with_(device="cpu").tensors()[3]
    # after causal too: a bias causal masking removes is never added to a kept logit
    mask, keep = torch.broadcast_tensors(mask.float(), kept_positions(case))
    kept = mask[keep]
    return bool(kept.numel()) and float(kept.abs().max()) >= 8


#: A failure at most this many times its limit is the size of a rounding error; a larger one (or a
#: non-finite output) is something else, which a finding about rounding must not explain.
ROUNDING_SIZED = 4.0


def _error_size(result: "ParityResult") -> tuple[str]:
    import math

    use = result.bound_use
    return ("rounding" if 0 < use <= ROUNDING_SIZED and math.isfinite(use) and not _nonfinite(result)[0]
            else "gross",)


def _nonfinite(result: "ParityResult") -> tuple[bool]:
    return (any(c.endswith(":nonfinite") for c in result.failure_classes) or result.metrics.get("nonfinite", 0) > 0,)


def _tensors(result: "ParityResult") -> tuple[str, ...]:
    """The tensors that failed: the part of each failure class before its colon ("dq:bound" -> dq),
    "contract" for a broken contract; a semantic check judges the forward output ("out")."""
    return tuple(dict.fromkeys(c.split(":")[0] for c in result.failure_classes)) or ("out",)


def _masked_rows_only(result: "ParityResult") -> tuple[bool]:
    return (result.metrics.get("live_rows_bound_use", float("inf")) <= 1.0,)


#: Predicates a ``when`` table may use besides AttnCase's fields.
DERIVED: dict[str, Callable[["AttnCase"], Any]] = {
    "fully_masked_rows": _fully_masked_rows,
    "large_kept_bias": _large_kept_bias,
    "sq_ne_skv": lambda case: case.sq != case.skv,
    "batch_eq_sq": lambda case: case.batch == case.sq,
    "gqa": lambda case: case.kv_heads != case.heads,
}
#: Predicates a ``when`` table may use on the failing result; each returns the values the failure
#: shows, and matches when any of them is allowed (every one, for the keys in FAILURE_ALL).
FAILURE: dict[str, Callable[["ParityResult"], Any]] = {
    "ignored_kwargs": lambda result: result.ignored_kwargs,
    # "rounding" for a finite failure within ROUNDING_SIZED times its limit, else "gross"
    "error_size": _error_size,
    "nonfinite": _nonfinite,
    "tensors": _tensors,
    "masked_rows_only": _masked_rows_only,
}
#: FAILURE keys whose every value must be allowed: a finding about dQ explains no failure of dV.
FAILURE_ALL = frozenset({"tensors"})


@dataclass(frozen=True)
class Range:
    """A ``when`` value ``{ min = .., max = .. }``: a numeric field within these bounds (inclusive)."""
    min: float | None = None
    max: float | None = None

    def __contains__(self, value: Any) -> bool:
        return (isinstance(value, (int, float)) and (self.min is None or value >= self.min)
                and (self.max is None or value <= self.max))


def _allowed(value: Any, allowed: tuple[Any, ...]) -> bool:
    return any(value in a if isinstance(a, Range) else value == a for a in allowed)


#: What a routed attention call of a pipeline shows (pipelines/routing.py describes each call as an
#: AttnCase with these fields true to the call; a mask is only "none" or present), hence what the
#: ``when`` of a finding that names "pipeline" may ask.
PIPELINE_WHEN = ("batch", "heads", "kv_heads", "sq", "skv", "head_dim", "dtype", "causal", "mask", "mask_type",
                 "scale", "device", "sq_ne_skv", "gqa")
PIPELINE_CHECK = "pipeline"


def is_pipeline_check(check: str) -> bool:
    return check.startswith(PIPELINE_CHECK + ":")


@dataclass(frozen=True)
class Finding:
    id: str
    reason: str
    source: str  # the ledger file it came from
    backends: tuple[str, ...]
    #: the checks it applies to: every op-level check (op_checks()) unless the entry narrows them
    checks: tuple[str, ...]
    link: str = ""
    dtypes: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    versions: Mapping[str, str] = field(default_factory=dict)
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    repro: tuple[Mapping[str, Any], ...] = ()
    #: why ``checks`` leaves out op-level checks ("" when it does not)
    checks_why: str = ""
    #: the checks whose cells run the repro cases (and fail with "no longer reproduces" once they pass)
    repro_checks: tuple[str, ...] = ("forward",)

    def applies(self, backend: str, check: str, dtype: str, device: str, installed: Mapping[str, str]) -> bool:
        """Whether this finding is about this cell, in this environment."""
        named = check in self.checks or (is_pipeline_check(check) and PIPELINE_CHECK in self.checks)
        return (any(fnmatch.fnmatchcase(backend, g) for g in self.backends) and named
                and (not self.dtypes or dtype in self.dtypes)
                and (not self.devices or device.split(":")[0] in self.devices)
                and self.versions_match(installed))

    def versions_match(self, installed: Mapping[str, str]) -> bool:
        """Every ``versions`` specifier holds for the installed distribution of that name (any
        package: those attnparity tracks come from ``installed``, others from importlib.metadata)."""
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version

        for dist, spec in self.versions.items():
            version = installed.get(dist) or distribution_version(dist)
            if version is None:
                return False
            try:
                if not SpecifierSet(spec, prereleases=True).contains(Version(version)):
                    return False
            except InvalidVersion:
                return False
        return True

    def explains(self, case: "AttnCase", result: "ParityResult | None" = None) -> bool:
        """Whether a failure is this finding. With ``result``, the cases asked are those of the calls
        the failure rests on (``result.calls``: a semantic check's own variants), each of its failures
        needing one that matches, and the keys about the failure are asked of ``result``; ``case`` is
        then not used. Without one, ``case`` alone is asked and keys about the failure hold (a
        case-only question, such as scoping a backend's claims around the finding)."""
        if result is None:
            return self._matches_case(case)
        for key, allowed in self.when.items():
            if key in FAILURE:
                values = FAILURE[key](result)
                match = all if key in FAILURE_ALL else any
                if not values or not match(_allowed(v, allowed) for v in values):
                    return False
        groups = result.calls or ((result.case,),)
        return all(any(self._matches_case(c) for c in group) for group in groups)

    def _matches_case(self, case: "AttnCase") -> bool:
        for key, allowed in self.when.items():
            if key in FAILURE:
                continue
            value = DERIVED[key](case) if key in DERIVED else getattr(case, key)
            if not _allowed(value, allowed):
                return False
        return True

    def repro_cases(self, dtype: str, device: str) -> list["AttnCase"]:
        from attnparity.check.cases import AttnCase

        return [AttnCase.from_dict({**case, "dtype": dtype, "device": device}) for case in self.repro
                if case.get("dtype", dtype) == dtype]

    @property
    def cite(self) -> str:
        return f"{self.reason} ({self.link})" if self.link else self.reason


@dataclass(frozen=True)
class Ledger:
    findings: tuple[Finding, ...] = ()
    sources: tuple[str, ...] = ()

    def for_cell(self, backend: str, check: str, dtype: str, device: str,
                 installed: Mapping[str, str]) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.applies(backend, check, dtype, device, installed))

    def describe(self) -> str:
        return f"{len(self.findings)} known finding(s) from {', '.join(self.sources) or 'no ledger'}"


def distribution_version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` (any spelling: flash-attn, flash_attn), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        from packaging.utils import canonicalize_name

        try:
            return version(canonicalize_name(dist))
        except PackageNotFoundError:
            return None


def load_ledger(entries: Iterable[str], *, invocation_dir: Path) -> Ledger:
    """The ledger of ``--attn-known`` values: the built-in one unless "none" is among them, plus each
    named file."""
    entries = [e.strip() for e in entries if e.strip()]
    paths = [] if "none" in entries else [BUILTIN]
    for entry in entries:
        if entry != "none":
            path = Path(entry).expanduser()
            paths.append(path if path.is_absolute() else invocation_dir / path)
    findings: list[Finding] = []
    for path in paths:
        findings.extend(read_ledger(path))
    seen: dict[str, str] = {}
    for f in findings:
        if f.id in seen:
            raise LedgerError(f"{f.source}: finding id {f.id!r} is also in {seen[f.id]}; ids must be unique")
        seen[f.id] = f.source
    return Ledger(tuple(findings), tuple("built-in" if p == BUILTIN else str(p) for p in paths))


_REQUIRED = ("id", "reason", "backends")
_OPTIONAL = ("checks", "checks_why", "link", "dtypes", "devices", "versions", "when", "repro", "repro_checks")


def read_ledger(path: Path) -> list[Finding]:
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise LedgerError(f"--attn-known={path}: no such ledger file (or pass 'none' to turn the built-in one off)") from None
    except tomllib.TOMLDecodeError as exc:
        raise LedgerError(f"--attn-known={path}: not valid TOML ({exc})") from None
    tables = data.get("finding", [])
    unknown_top = set(data) - {"finding"}
    if unknown_top or not isinstance(tables, list):
        raise LedgerError(f"{path}: a ledger holds [[finding]] tables only (found {sorted(unknown_top) or 'finding'})")
    return [_finding(path, i, table) for i, table in enumerate(tables)]


def _finding(path: Path, index: int, table: dict[str, Any]) -> Finding:
    from attnparity.backends.base import DTYPE_NAMES, Capabilities
    from attnparity.check.cases import AttnCase
    from attnparity.machine import DEVICE_KINDS

    where = f"{path}: finding #{index + 1} ({table.get('id', 'no id')})"
    missing = [k for k in _REQUIRED if k not in table]
    unknown = sorted(set(table) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        raise LedgerError(f"{where}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown keys {', '.join(unknown)}"] if unknown else []))
            + f" (keys: {', '.join(_REQUIRED + _OPTIONAL)})")

    def strings(key: str) -> tuple[str, ...]:
        value = table.get(key, [])
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise LedgerError(f"{where}: {key} must be a string or a list of strings")
        return tuple(value)

    case_fields = {f.name for f in fields(AttnCase)}
    when = table.get("when", {})
    if not isinstance(when, dict):
        raise LedgerError(f"{where}: when must be a table, e.g. when = {{ mask = \"none\" }}")
    bad = sorted(set(when) - case_fields - set(DERIVED) - set(FAILURE))
    if bad:
        raise LedgerError(f"{where}: when keys {', '.join(bad)} are neither AttnCase fields nor one of "
                          f"{', '.join([*DERIVED, *FAILURE])}")
    for key, value in when.items():
        for item in value if isinstance(value, list) else [value]:
            if key in case_fields:
                _check_when_value(where, key, item)
            elif key in FAILURE_VALUES and item not in FAILURE_VALUES[key]:
                raise LedgerError(f"{where}: when.{key} = {item!r}; expected one of "
                                  f"{', '.join(map(repr, FAILURE_VALUES[key]))}")
    _check_names(where, "dtypes", strings("dtypes"), DTYPE_NAMES)
    _check_names(where, "devices", strings("devices"), DEVICE_KINDS)
    checks = strings("checks") if "checks" in table else op_checks()
    _check_names(where, "checks", checks, check_names())
    repro_checks = strings("repro_checks") if "repro_checks" in table else (
        tuple(c for c in checks if c != PIPELINE_CHECK) if "checks" in table else _repro_default(when))
    _check_names(where, "repro_checks", repro_checks, [c for c in checks if c != PIPELINE_CHECK])
    if PIPELINE_CHECK in checks:
        beyond = sorted(set(when) - set(PIPELINE_WHEN) - set(FAILURE))
        masks = when.get("mask", "none")
        if beyond or any(m != "none" for m in (masks if isinstance(masks, list) else [masks])):
            raise LedgerError(
                f"{where}: with \"pipeline\" in checks, `when` is asked of each attention call a pipeline routes, "
                f"which shows only {', '.join(PIPELINE_WHEN)} (and a mask only as \"none\" or present); "
                f"{', '.join(beyond) or 'mask = ' + repr(masks)} cannot be told from a call. Put the pipeline "
                "cells in a finding of their own with a `when` of those keys")
    versions = table.get("versions", {})
    if not isinstance(versions, dict):
        raise LedgerError(f"{where}: versions must be a table of PEP 440 specifiers, e.g. {{ torch = \">=2.5\" }}")
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    for dist, spec in versions.items():
        try:
            SpecifierSet(str(spec))
        except InvalidSpecifier:
            raise LedgerError(f"{where}: versions.{dist} = {spec!r} is not a PEP 440 specifier (e.g. \">=2.5,<2.7\")") from None
    repro = table.get("repro", [])
    repro = [repro] if isinstance(repro, dict) else repro
    for case in repro:
        bad = sorted(set(case) - case_fields) if isinstance(case, dict) else ["(not a table)"]
        if bad:
            raise LedgerError(f"{where}: repro case has unknown fields {', '.join(bad)}")
        for key, item in case.items():
            _check_value(where, f"repro.{key}", key, item)
    left_out = [c for c in op_checks() if c not in checks]
    why = table.get("checks_why", "")
    if left_out and not (isinstance(why, str) and why.strip()):
        raise LedgerError(f"{where}: checks leaves out {', '.join(left_out)}, and a bug does not care which check "
                          "finds it: drop `checks` (every op-level check), or say in `checks_why` why the bug "
                          "cannot show in the checks left out")
    finding = Finding(id=str(table["id"]), reason=str(table["reason"]), source=str(path), backends=strings("backends"),
                      checks=checks, link=str(table.get("link", "")), dtypes=strings("dtypes"),
                      devices=strings("devices"), versions={str(k): str(v) for k, v in versions.items()},
                      when={k: tuple(_when_item(i) for i in (v if isinstance(v, list) else [v])) for k, v in when.items()},
                      repro=tuple(repro), checks_why=str(why), repro_checks=repro_checks)
    for case in repro:
        # A repro case the finding does not explain, or that no backend could claim, would make
        # "still reproduces" / "no longer reproduces" meaningless.
        built = AttnCase.from_dict({**case, "dtype": case.get("dtype", "fp32")})
        if built.outside(Capabilities()) is not None:
            raise LedgerError(f"{where}: repro case {case} is not a valid case: {built.outside(Capabilities())}")
        if not finding.explains(built):
            raise LedgerError(f"{where}: repro case {case} is outside the finding's own `when`")
    return finding


def _repro_default(when: Mapping[str, Any]) -> tuple[str, ...]:
    """Where repro cases run when the entry names neither ``checks`` nor ``repro_checks``: the check
    whose failure its ``when`` can describe (a forward cell never fails in dQ, nor drops a kwarg),
    so that a repro never reports "no longer reproduces" from a check it cannot fail in."""
    tensors = when.get("tensors")
    tensors = set(tensors if isinstance(tensors, list) else [tensors]) if tensors is not None else set()
    if tensors and tensors <= {"dq", "dk", "dv"}:
        return ("backward",)
    if "ignored_kwargs" in when:
        return ("kwargs",)
    return ("forward",)


def op_checks() -> tuple[str, ...]:
    """Every op-level check: the numeric ones and the semantic ones (what a finding applies to by default)."""
    from attnparity.check.semantics import SEMANTIC_CHECKS

    return ("forward", "backward", *SEMANTIC_CHECKS)


def check_names() -> tuple[str, ...]:
    """The check names a finding may name: op-level, semantic, and "pipeline" (every pipeline cell)."""
    return (*op_checks(), PIPELINE_CHECK)


#: The values a ``when`` key about the failure may take (ignored_kwargs: any kwarg name).
FAILURE_VALUES: dict[str, tuple[Any, ...]] = {
    "error_size": ("rounding", "gross"),
    "nonfinite": (True, False),
    "tensors": ("out", "dq", "dk", "dv", "contract"),
    "masked_rows_only": (True, False),
}


def _when_item(item: Any) -> Any:
    return Range(item.get("min"), item.get("max")) if isinstance(item, dict) else item


def _check_when_value(where: str, key: str, item: Any) -> None:
    """A value of AttnCase field ``key``, or a range table of a numeric one."""
    if not isinstance(item, dict):
        _check_value(where, f"when.{key}", key, item)
        return
    bad = sorted(set(item) - {"min", "max"})
    if bad or not item:
        raise LedgerError(f"{where}: when.{key} = {item!r}: a range table has min, max or both, e.g. {{ min = 1001 }}")
    for bound, value in item.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LedgerError(f"{where}: when.{key}.{bound} = {value!r} is not a number")
        _check_value(where, f"when.{key}.{bound}", key, value)


def _check_names(where: str, key: str, given: tuple[str, ...], known: Iterable[str]) -> None:
    unknown = [g for g in given if g not in known]
    if unknown:
        raise LedgerError(f"{where}: {key} {', '.join(map(repr, unknown))} unknown; expected some of {', '.join(known)}")


def _check_value(where: str, label: str, key: str, value: Any) -> None:
    """A value of an AttnCase field: one of its Literal's values, or a number where it is numeric."""
    import typing

    from attnparity.check.cases import AttnCase

    hint = typing.get_type_hints(AttnCase)[key]
    allowed = [a for arg in (typing.get_args(hint) or (hint,))
               for a in (typing.get_args(arg) if typing.get_origin(arg) is typing.Literal else (arg,))]
    literals = [a for a in allowed if not isinstance(a, type)]
    if hint is typing.Literal or typing.get_origin(hint) is typing.Literal or literals:
        if value not in literals and not (value is None and type(None) in allowed):
            raise LedgerError(f"{where}: {label} = {value!r}; expected one of {', '.join(map(repr, literals))}")
        return
    kinds = tuple(a for a in allowed if isinstance(a, type))
    kinds += (int,) if float in kinds else ()  # TOML writes 3 for 3.0
    if kinds and not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        raise LedgerError(f"{where}: {label} = {value!r} is not a {' or '.join(k.__name__ for k in kinds)}")
