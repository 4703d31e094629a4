"""One standalone repro file per entry of a known-findings ledger (check/standalone.py), for the
upstream report each entry stands for:

    attnparity repro --standalone --ledger -o docs/findings/

writes ``<id>.py`` per entry: its first repro case, on its first backend and the first of its repro
checks that a standalone file can reproduce, described by its reason and link and scoped by its versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .known import BUILTIN, Finding, read_ledger

if TYPE_CHECKING:
    from attnparity.check.cases import AttnCase

#: The command that regenerates the built-in ledger's files (docs/findings/).
LEDGER_COMMAND = "attnparity repro --standalone --ledger -o docs/findings/"


@dataclass(frozen=True)
class FindingRepro:
    finding: Finding
    check: str
    backend: str
    case: "AttnCase"

    @property
    def filename(self) -> str:
        return f"{self.finding.id}.py"


def finding_repro(finding: Finding) -> FindingRepro | None:
    """What the standalone file of ``finding`` runs, or None when no check, backend or repro case of
    it can be written as one (pipeline-only findings, vendor backends)."""
    from attnparity.backends.registry import standalone_call
    from attnparity.check.parity import STANDALONE_CHECKS

    # the checks its repro cases are known to fail in (a finding applies to more)
    check = next((c for c in finding.repro_checks if c in STANDALONE_CHECKS), None)
    backend = next((b for b in finding.backends if not any(ch in b for ch in "*?[") and standalone_call(b)), None)
    if check is None or backend is None or not finding.repro:
        return None
    first = finding.repro[0]
    dtype = first.get("dtype") or (finding.dtypes[0] if finding.dtypes else "fp32")
    device = finding.devices[0] if finding.devices else "cpu"
    return FindingRepro(finding, check, backend, finding.repro_cases(dtype, device)[0])


def about(finding: Finding) -> str:
    scope = ", ".join(f"{k} {v}" for k, v in finding.versions.items()) or "any version"
    devices = ", ".join(finding.devices) or "any device"
    link = f" ({finding.link})" if finding.link else ""
    return (f"{finding.reason.rstrip('.')}.\n\nattnparity's known finding {finding.id}{link}, seen on {scope}, {devices}; "
            f"checks {', '.join(finding.checks)}, backends {', '.join(finding.backends)}.")


def write_ledger_repros(out_dir: Path, ledger: Path = BUILTIN, *, call_as: "str | Sequence[str] | None" = None) -> list[Path]:
    """Write ``<id>.py`` into ``out_dir`` for each entry of ``ledger`` that can have one; returns
    the paths. ``call_as``: a backend (or several: the first that claims the case) whose call replaces the buggy one (a correct backend must make
    every file pass)."""
    from attnparity.backends.registry import get_backend
    from attnparity.check.standalone import render, repro_of_failure

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for finding in read_ledger(ledger):
        chosen = finding_repro(finding)
        if chosen is None:
            continue
        backend = get_backend(chosen.backend)
        repro = repro_of_failure(chosen.check, backend, chosen.case, about=about(finding), applies=dict(finding.versions),
                                 call_as=call_as, command=LEDGER_COMMAND, name_device=False)
        path = out_dir / chosen.filename
        path.write_text(render(repro, backend))
        written.append(path)
    return written
