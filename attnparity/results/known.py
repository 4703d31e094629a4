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
    checks = ["forward", "kwargs"]           # op and semantic check names, and "pipeline"
    dtypes = ["fp32", "fp16", "bf16"]        # optional: every dtype
    devices = ["cpu", "cuda"]                # optional: every device
    versions = { diffusers = ">=0.42,<0.43" } # optional: PEP 440 specifiers by distribution name
    when = { causal = ["top-left", "bottom-right"], mask = "none" }   # which cases it explains
    repro = [{ heads = 2, kv_heads = 1, sq = 17, skv = 65, head_dim = 64, causal = "top-left" }]

``when`` keys are AttnCase fields (a value or a list of values), the derived predicates of the
case in ``DERIVED``, or what the failure itself says in ``FAILURE`` (``ignored_kwargs``: the kwargs
the kwargs check found ignored; it builds its own variants of the drawn case, so only the failure
can say which kwarg was lost; ``error_size``: "rounding" within 4x the limit, else "gross", so a
finding about rounding cannot explain a NaN or a wrong mask on the same cases). ``repro`` cases (the dtype is the cell's unless a case names one) are run first in
every cell the finding applies to: a cell whose repro case fails is a strict xfail that shows the
reason; one whose repro case now passes, and where no drawn case met the finding, fails with "no
longer reproduces". Drawn cases the finding explains do not stop the search, so a second, unknown
bug in the same cell is still found.

``checks = ["pipeline"]`` makes a finding about the pipeline cells of its backends too (every
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
import sys
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
    return ("rounding" if 0 < use <= ROUNDING_SIZED and math.isfinite(use) else "gross",)


#: Predicates a ``when`` table may use besides AttnCase's fields.
DERIVED: dict[str, Callable[["AttnCase"], Any]] = {
    "fully_masked_rows": _fully_masked_rows,
    "large_kept_bias": _large_kept_bias,
    "sq_ne_skv": lambda case: case.sq != case.skv,
    "batch_eq_sq": lambda case: case.batch == case.sq,
    "gqa": lambda case: case.kv_heads != case.heads,
}
#: Predicates a ``when`` table may use on the failing result; a list value matches when any of its
#: items is allowed.
FAILURE: dict[str, Callable[["ParityResult"], Any]] = {
    "ignored_kwargs": lambda result: result.ignored_kwargs,
    # "rounding" for a failure within ROUNDING_SIZED times its limit, else "gross"
    "error_size": _error_size,
}


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
    checks: tuple[str, ...]
    link: str = ""
    dtypes: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    versions: Mapping[str, str] = field(default_factory=dict)
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    repro: tuple[Mapping[str, Any], ...] = ()

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
        """Whether a failure on ``case`` (with ``result``, when there is one) is this finding. Keys
        about the failure hold when there is no result to ask (a case-only question, such as
        scoping a backend's claims around the finding)."""
        for key, allowed in self.when.items():
            if key in FAILURE:
                if result is None:
                    continue
                values = FAILURE[key](result)
                if not any(v in allowed for v in values):
                    return False
                continue
            value = DERIVED[key](case) if key in DERIVED else getattr(case, key)
            if value not in allowed:
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


_REQUIRED = ("id", "reason", "backends", "checks")
_OPTIONAL = ("link", "dtypes", "devices", "versions", "when", "repro")


def read_ledger(path: Path) -> list[Finding]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

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
                _check_value(where, f"when.{key}", key, item)
    _check_names(where, "dtypes", strings("dtypes"), DTYPE_NAMES)
    _check_names(where, "devices", strings("devices"), DEVICE_KINDS)
    _check_names(where, "checks", strings("checks"), check_names())
    if PIPELINE_CHECK in strings("checks"):
        beyond = sorted(set(when) - set(PIPELINE_WHEN))
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
    finding = Finding(id=str(table["id"]), reason=str(table["reason"]), source=str(path), backends=strings("backends"),
                   checks=strings("checks"), link=str(table.get("link", "")), dtypes=strings("dtypes"),
                   devices=strings("devices"), versions={str(k): str(v) for k, v in versions.items()},
                   when={k: tuple(v) if isinstance(v, list) else (v,) for k, v in when.items()}, repro=tuple(repro))
    for case in repro:
        # A repro case the finding does not explain, or that no backend could claim, would make
        # "still reproduces" / "no longer reproduces" meaningless.
        built = AttnCase.from_dict({**case, "dtype": case.get("dtype", "fp32")})
        if built.outside(Capabilities()) is not None:
            raise LedgerError(f"{where}: repro case {case} is not a valid case: {built.outside(Capabilities())}")
        if not finding.explains(built):
            raise LedgerError(f"{where}: repro case {case} is outside the finding's own `when`")
    return finding


def check_names() -> tuple[str, ...]:
    """The check names a finding may name: op-level, semantic, and "pipeline" (every pipeline cell)."""
    from attnparity.check.semantics import SEMANTIC_CHECKS

    return ("forward", "backward", *SEMANTIC_CHECKS, PIPELINE_CHECK)


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
