"""Thin pytest glue: options and ini keys, markers, the items of the suite, the result records.

Without ``--attn-backends`` (or its ini key) nothing is collected and nothing heavy is imported.
The work lives in modules that know nothing of pytest: backends/, parity.py, suite/, report.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .results import USER_PROPERTY


@dataclass(frozen=True)
class Option:
    name: str  # ini key; the CLI flag is --attn-<rest> with dashes
    help: str
    default: Any = None
    kind: str = "string"  # "string", "int", "float", "bool", "linelist"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS = (
    Option("attn_backends", "backends to put in the matrix: 'all', a comma list, globs ('sdpa-*', 'diffusers:*')"),
    Option("attn_dtypes", "dtypes of the matrix, comma list of fp32,fp16,bf16", "fp32,fp16,bf16"),
    Option("attn_device", "device to run on: 'cuda' when one is present, else 'cpu'", "auto"),
    Option("attn_examples", "hypothesis examples per parity item (the user's hypothesis profile wins when loaded)", 30, "int"),
    Option("attn_seed", "fixed hypothesis seed for the suite (reproducible draws)", None, "int"),
    Option("attn_tolerance", "tolerance overrides, one per line: '<backend-glob> <dtype|*> k=<k> floor=<floor>'", [], "linelist"),
    Option("attn_artifacts", "directory for failure artifacts (images, diff maps)", ".attnparity/artifacts"),
    Option("attn_timeout", "seconds one cell may run before it fails as timed out (0: no limit)", 0, "float"),
    Option("attn_report", "directory to write results.json and a self-contained index.html into"),
    Option("attn_compare", "results.json of an earlier run: fail this run where a cell got worse (the upgrade gate)"),
    Option("attn_compare_ratio", "gate: an error ratio may grow by this factor before it counts as worse", 2.0, "float"),
    Option("attn_compare_ssim", "gate: an SSIM may drop by this much before it counts as worse", 0.01, "float"),
    Option("attn_compare_slowdown", "gate: a timing on the same device may grow by this fraction (0.25 = 25%)", 0.25, "float"),
    Option("attn_pipeline", "a local diffusers checkpoint directory to add to the pipeline checks (repeatable; ini: one per line)", [], "linelist"),
    Option("attn_golden_dir", "where golden images are read and written (default <rootdir>/golden; built-in pipelines fall back to attnparity's shipped golden/)"),
    Option("attn_golden_update", "write the golden images of the pipelines that run (made with fp64 reference attention); never done otherwise", False, "bool"),
    Option("attn_pipeline_ssim", "pipeline SSIM thresholds, one per line: '<dtype|*> ref=<ssim> golden=<ssim>'", [], "linelist"),
    Option("attn_perf", "perf shape set: 'quick' (a few real diffusion shapes; fewer tokens on CPU) or 'full' (every catalogued shape; meant for GPUs, hours on a small CPU)", "quick"),
    Option("attn_perf_baseline", "results.json of an earlier run: a perf cell slower than it beyond --attn-perf-margin fails (same device only)"),
    Option("attn_perf_margin", "slowdown allowed against --attn-perf-baseline, as a fraction (0.1 = 10%)", 0.1, "float"),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attnparity", "attention backend parity matrix")
    for opt in OPTIONS:
        cli_type = {"int": int, "float": float}.get(opt.kind)
        if opt.kind == "bool":
            group.addoption(opt.flag, action="store_true", default=None, dest=opt.name, help=opt.help)
        elif opt.kind == "linelist":
            group.addoption(opt.flag, action="append", default=None, dest=opt.name, help=opt.help)
        else:
            group.addoption(opt.flag, action="store", default=None, dest=opt.name, type=cli_type, help=opt.help)
        ini_type = {"linelist": "linelist", "bool": "bool"}.get(opt.kind, "string")
        parser.addini(opt.name, opt.help + " (ini)", type=ini_type, default=opt.default)
    group.addoption("--attn-list", action="store_true", default=False,
                    help="list every registered attention backend, whether it runs here and why not, and exit")


def resolve_options(config: pytest.Config) -> dict[str, Any]:
    """Every option by ini name: the command line wins over the ini file, which wins over the default."""
    resolved: dict[str, Any] = {}
    for opt in OPTIONS:
        value = config.getoption(opt.name)
        if value is None:
            value = config.getini(opt.name)
            if opt.kind in ("int", "float") and value not in (None, ""):
                try:
                    value = {"int": int, "float": float}[opt.kind](value)
                except ValueError:
                    raise pytest.UsageError(f"ini key {opt.name} = {value!r} is not a{'n integer' if opt.kind == 'int' else ' number'}") from None
        resolved[opt.name] = None if value == "" else value
    return resolved


_CONTEXT = pytest.StashKey["Any"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "attn_perf: attnparity timing item (select with -m attn_perf)")
    config.addinivalue_line("markers", "attn_pipeline: attnparity end-to-end pipeline item")
    config.addinivalue_line("markers", "attn_op: attnparity op-level parity or semantic item")
    options = resolve_options(config)
    if not options["attn_backends"]:
        return
    from .session import build_context

    try:
        config.stash[_CONTEXT] = build_context(config, options)
    except (LookupError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_cmdline_main(config: pytest.Config) -> int | None:
    if config.getoption("attn_list"):
        from .listing import print_backends

        config._do_configure()
        try:
            print_backends(resolve_options(config).get("attn_device") or "auto")
        finally:
            config._ensure_unconfigure()
        return 0
    return None


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    if _CONTEXT not in config.stash:
        return None
    from .session import header_lines

    return header_lines(config.stash[_CONTEXT])


class CheckFailed(Exception):
    """A cell's verdict is fail or error; the message is the whole explanation."""


class AttnItem(pytest.Item):
    def __init__(self, *, check: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        for mark in check.marks:
            self.add_marker(mark)
        # -k matches these too: backend, dtype and check names.
        for word in (check.backend, check.dtype, check.check, check.kind):
            if word:
                self.extra_keyword_matches.add(word)

    def runtest(self) -> None:
        from .results import ResultRecord

        check = self.check
        if check.skip:
            self._keep(ResultRecord(check.kind, check.check, check.backend, check.dtype, "skip", message=check.skip))
            raise pytest.skip.Exception(check.skip, _use_item_location=True)
        from . import guard

        hung = guard.hung_reason(check.backend)
        try:
            if hung:
                raise guard.CellTimeout(hung)
            record = guard.run_with_timeout(check.run, self.config.stash[_CONTEXT].options.get("attn_timeout"),
                                            label=self.nodeid)
        except (pytest.skip.Exception, KeyboardInterrupt):
            raise
        except guard.CellTimeout as exc:  # a hung backend fails its own cells, nothing else
            if check.backend and not hung:
                guard.mark_hung(check.backend, self.nodeid)
            record = ResultRecord(check.kind, check.check, check.backend, check.dtype, "error", message=str(exc))
        except Exception as exc:  # a crashing backend fails its own cell, nothing else
            import traceback

            tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-4))
            record = ResultRecord(check.kind, check.check, check.backend, check.dtype, "error",
                                  message=f"{check.backend or check.check} raised {type(exc).__name__}: {exc}\n{tail}")
        self._keep(record)
        if record.verdict == "skip":
            raise pytest.skip.Exception(record.message, _use_item_location=True)
        if record.verdict in ("fail", "error"):
            raise CheckFailed(record.message)

    def _keep(self, record: Any) -> None:
        from .session import stamp

        record.nodeid = self.nodeid
        stamp(self.config.stash[_CONTEXT], record)
        self.user_properties.append((USER_PROPERTY, json.dumps(record.to_json(), default=str)))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CheckFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, 0, self.nodeid


class AttnCollector(pytest.Collector):
    """The ``attnparity`` node: ids stay ``attnparity::<check>[<param>]`` wherever it is installed."""

    def collect(self) -> list[pytest.Item]:
        from .suite import collect

        ctx = self.config.stash[_CONTEXT]
        return [AttnItem.from_parent(self, name=f"{c.check}[{c.item_param}]", check=c) for c in collect(ctx)]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: our items must be in the list before -k/-m deselection (also a modifyitems hook) runs.
    if _CONTEXT not in config.stash:
        return
    collector = AttnCollector.from_parent(session, name="attnparity", nodeid="attnparity", path=config.rootpath)
    try:
        items.extend(collector.collect())
    except (LookupError, ValueError) as exc:  # bad option values found while building the checks
        raise pytest.UsageError(str(exc)) from None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Runs on the controller for xdist workers' reports too: the record rides in user_properties.
    if report.when != "call" and not (report.when == "setup" and report.skipped):
        return
    for key, value in report.user_properties:
        if key == USER_PROPERTY:
            _records_sink.append(json.loads(value))


_records_sink: list[dict[str, Any]] = []


def collected_records() -> list[dict[str, Any]]:
    """The records of this run, in the order their items finished (serial or gathered from xdist)."""
    return list(_records_sink)


def pytest_sessionstart(session: pytest.Session) -> None:
    _records_sink.clear()


_OUTCOME = pytest.StashKey["Any"]()


def _is_controller(config: pytest.Config) -> bool:
    # xdist workers ship their records to the controller; only it writes reports and gates.
    return _CONTEXT in config.stash and not os.environ.get("PYTEST_XDIST_WORKER")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # tryfirst: before the terminal reporter's own sessionfinish prints the summary.
    if not _is_controller(session.config):
        return
    from .session import finish_records

    outcome = finish_records(session.config.stash[_CONTEXT], collected_records())
    session.config.stash[_OUTCOME] = outcome
    if outcome.gate_failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    import sys

    guard = sys.modules.get("attnparity.guard")
    if guard is None:  # no cell ever ran under a time limit
        return
    still = guard.drain(5.0)
    if still:
        sys.stderr.write(f"attnparity: {still} timed-out backend call(s) still running at exit; "
                         "the process may hang or crash while exiting (see attn_timeout)\n")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _is_controller(config) or _OUTCOME not in config.stash:
        return
    from .session import finish_run

    finish_run(config.stash[_CONTEXT], config.stash[_OUTCOME], terminalreporter)
