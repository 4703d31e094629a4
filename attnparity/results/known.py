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
    checks = ["forward", "kwargs"]           # op and semantic check names
    dtypes = ["fp32", "fp16", "bf16"]        # optional: every dtype
    devices = ["cpu", "cuda"]                # optional: every device
    versions = { diffusers = ">=0.42,<0.43" } # optional: PEP 440 specifiers by distribution name
    when = { causal = ["top-left", "bottom-right"], mask = "none" }   # which cases it explains
    repro = [{ heads = 2, kv_heads = 1, sq = 17, skv = 65, head_dim = 64, causal = "top-left" }]

``when`` keys are AttnCase fields (a value or a list of values) or the derived predicates in
``DERIVED``. ``repro`` cases (the dtype is the cell's unless a case names one) are run first in
every cell the finding applies to: a cell whose repro case fails is a strict xfail that shows the
reason; one whose repro case now passes, and where no drawn case met the finding, fails with "no
longer reproduces". Drawn cases the finding explains do not stop the search, so a second, unknown
bug in the same cell is still found.
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

BUILTIN = Path(__file__).with_name("known_findings.toml")


class LedgerError(ValueError):
    """A ledger file that cannot be used; the message names the file, the finding and the fix."""


def _fully_masked_rows(case: "AttnCase") -> bool:
    from attnparity.check.parity import dead_rows

    # A float mask's large finite values count as masked here: that is what the findings are about.
    return case.mask != "none" and dead_rows(case.with_(masked_value="-inf")) is not None


#: Predicates a ``when`` table may use besides AttnCase's fields.
DERIVED: dict[str, Callable[["AttnCase"], Any]] = {
    "fully_masked_rows": _fully_masked_rows,
    "sq_ne_skv": lambda case: case.sq != case.skv,
    "gqa": lambda case: case.kv_heads != case.heads,
}


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
        return (any(fnmatch.fnmatchcase(backend, g) for g in self.backends) and check in self.checks
                and (not self.dtypes or dtype in self.dtypes)
                and (not self.devices or device.split(":")[0] in self.devices)
                and self.versions_match(installed))

    def versions_match(self, installed: Mapping[str, str]) -> bool:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version

        for dist, spec in self.versions.items():
            if dist not in installed:
                return False
            try:
                if not SpecifierSet(spec, prereleases=True).contains(Version(installed[dist])):
                    return False
            except InvalidVersion:
                return False
        return True

    def explains(self, case: "AttnCase") -> bool:
        """Whether a failure on ``case`` is this finding (its ``when`` holds for the case)."""
        for key, allowed in self.when.items():
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
    from attnparity.check.cases import AttnCase

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
    bad = sorted(set(when) - case_fields - set(DERIVED))
    if bad:
        raise LedgerError(f"{where}: when keys {', '.join(bad)} are neither AttnCase fields nor one of "
                          f"{', '.join(DERIVED)}")
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
    return Finding(id=str(table["id"]), reason=str(table["reason"]), source=str(path), backends=strings("backends"),
                   checks=strings("checks"), link=str(table.get("link", "")), dtypes=strings("dtypes"),
                   devices=strings("devices"), versions={str(k): str(v) for k, v in versions.items()},
                   when={k: tuple(v) if isinstance(v, list) else (v,) for k, v in when.items()}, repro=tuple(repro))
