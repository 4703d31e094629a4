"""The parity suite the plugin collects: each module turns a SuiteContext into Checks.

A Check is one matrix cell (one pytest item): it runs and returns a ResultRecord. Nothing here
knows pytest; plugin.py wraps Checks into items. Suite modules, in collection order, are listed in
SUITE_MODULES; each exposes ``checks(ctx: SuiteContext) -> list[Check]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attnparity.backends.base import Backend
    from attnparity.results.record import ResultRecord
    from attnparity.check.tolerance import Tolerances
    from attnparity.options import Options
    from attnparity.results.known import Ledger

SUITE_MODULES = (
    "attnparity.suite.op",
    "attnparity.suite.pipelines",
    "attnparity.suite.perf",
    "attnparity.suite.perf_pipelines",
)


def _empty_ledger() -> "Ledger":
    from attnparity.results.known import Ledger

    return Ledger()


@dataclass
class SuiteContext:
    """Everything a suite module needs from the run, already resolved and validated."""

    backends: list["Backend"]
    #: the device cells run on, resolved ("auto" is never left here)
    device: str
    options: "Options"
    tolerances: "Tolerances"
    #: hypothesis.settings for the suite's @given tests (the user's profile when one is loaded)
    hypothesis_settings: Any
    rootdir: Path
    #: the hypothesis profile the user loaded (it then governs example counts), or None
    user_profile: str | None = None
    #: the known-findings ledger (--attn-known); its findings about a cell make it a strict xfail
    ledger: "Ledger" = field(default_factory=lambda: _empty_ledger())
    #: installed versions of the libraries that move results (findings are scoped by them)
    versions: dict[str, str] = field(default_factory=dict)
    #: (pipeline, device class, dtype) of goldens written in this run: each is written once
    goldens_written: set[tuple[str, str, str]] = field(default_factory=set)
    #: (reference backend, perf case) pairs this process has timed: their lazy init is done
    #: (perf.timer.time_many's ``warm``)
    perf_warm: set[tuple[str, Any]] = field(default_factory=set)
    #: what perf records say about other pytest-xdist workers' items running beside their timing
    #: (suite.perf.Placement.beside), or None when nothing of this run can
    timing_beside: str | None = None

    @property
    def dtypes(self) -> tuple[str, ...]:
        return self.options.dtypes

    @property
    def seed(self) -> int | None:
        """fixed hypothesis seed (--attn-seed), or None for hypothesis' own choice"""
        return self.options.seed

    @property
    def artifacts_dir(self) -> Path:
        return self.options.artifacts

    def unavailable(self, backend: "Backend") -> str | None:
        """Why ``backend`` cannot run in this run (package, device, arch), or None."""
        reason = backend.unavailable_reason()
        if reason:
            return reason
        if self.device.split(":")[0] not in backend.capabilities.devices:
            return f"does not run on {self.device} (claims {', '.join(sorted(backend.capabilities.devices))})"
        return None


@dataclass
class Check:
    """One item of the suite: ``attnparity::<check>[<param>]``."""

    kind: str
    check: str
    backend: str | None
    dtype: str | None
    run: Callable[[], "ResultRecord"]
    param: str | None = None
    #: marker names to put on the item (e.g. "attn_perf", "attn_pipeline")
    marks: tuple[str, ...] = ()
    #: set when the cell cannot run here: the item is skipped with this reason, and recorded so
    skip: str | None = None

    @property
    def item_param(self) -> str:
        if self.param is not None:
            return self.param
        return "-".join(p for p in (self.backend, self.dtype) if p)


def collect(ctx: SuiteContext) -> list[Check]:
    import importlib

    checks: list[Check] = []
    for module_name in SUITE_MODULES:
        checks.extend(importlib.import_module(module_name).checks(ctx))
    return checks


def error_record(check: Check, exc: BaseException) -> "ResultRecord":
    """The record of a cell whose run raised: the backend's own failure, with the end of its
    traceback (made the same way in-process and in an isolated worker)."""
    import traceback

    from attnparity.results.record import ResultRecord

    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-4))
    return ResultRecord(check.kind, check.check, check.backend, check.dtype, "error",
                        message=f"{check.backend or check.check} raised {type(exc).__name__}: {exc}\n{tail}")
