"""Thin pytest glue: options and ini keys, markers, the items of the suite, the result records.

Without ``--attn-backends`` (or its ini key) nothing is collected and nothing heavy is imported.
The work lives below, in modules that know nothing of pytest (import-linter keeps it so): options.py
reads the options, session.py holds the run, suite/ makes the items' checks, report/ prints.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from attnparity.options import OPTIONS, Options
from attnparity.results.record import REPORT_ATTRIBUTE, USER_PROPERTY

if TYPE_CHECKING:
    from attnparity.session import Run


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attnparity", "attention backend parity matrix")
    for opt in OPTIONS:
        # argparse %-formats a flag's help: a bare "25%" made `pytest --help` raise
        text = opt.help.replace("%", "%%")
        # Every value arrives as text (or lines) and is read by options.Options.resolve alone.
        if opt.kind == "bool":
            group.addoption(opt.flag, action="store_true", default=None, dest=opt.ini, help=text)
        elif opt.kind in ("lines", "rules", "paths"):
            group.addoption(opt.flag, action="append", default=None, dest=opt.ini, help=text)
        else:
            group.addoption(opt.flag, action="store", default=None, dest=opt.ini, help=text)
        parser.addini(opt.ini, opt.help + " (ini)", type="linelist" if opt.kind in ("lines", "rules", "paths") else "string")
    group.addoption("--attn-list", action="store_true", default=False,
                    help="list every registered attention backend, whether it runs here and why not, and exit")


def resolve_options(config: pytest.Config) -> Options:
    """The run's options: the command line over the ini file over the defaults; bad values are
    usage errors."""
    try:
        return Options.resolve(lambda name: config.getoption(name), lambda name: config.getini(name) or None,
                               rootdir=Path(config.rootpath), invocation_dir=Path(config.invocation_params.dir),
                               ini_dir=Path(config.inipath).parent if config.inipath else None)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def _given(config: pytest.Config) -> frozenset[str]:
    """The options the user set (command line or ini), by Options field name."""
    return frozenset(o.attr for o in OPTIONS if config.getoption(o.ini) not in (None, [])
                     or config.getini(o.ini) not in (None, "", []))


RUN = pytest.StashKey["Run"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "attn_perf: attnparity timing item (select with -m attn_perf)")
    config.addinivalue_line("markers", "attn_pipeline: attnparity end-to-end pipeline item")
    config.addinivalue_line("markers", "attn_op: attnparity op-level parity or semantic item")
    if config.getoption("attn_list"):
        return
    options = resolve_options(config)
    if not options.backends:
        return
    from attnparity.session import start_run

    try:
        run = start_run(options, Path(config.rootpath), Path(config.invocation_params.dir), _given(config))
    except (LookupError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[RUN] = run
    config.pluginmanager.register(RecordCollector(run), "attnparity-records")


def pytest_cmdline_main(config: pytest.Config) -> int | None:
    if config.getoption("attn_list"):
        from attnparity.report.listing import print_backends

        config._do_configure()
        try:
            print_backends(resolve_options(config).device)
        finally:
            config._ensure_unconfigure()
        return 0
    return None


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    if RUN not in config.stash:
        return None
    from attnparity.session import header_lines

    return header_lines(config.stash[RUN])


@contextmanager
def _own_channels_only() -> Iterator[None]:
    """Detach pytest's log capture from non-propagating loggers while a cell runs.

    pytest (>= 8.4) adds its capture handler to every logger that does not propagate, so that
    their records reach the report. torch's ``torch.__trace`` is one: it never propagates, is
    always at DEBUG, and torch emits its structured trace (a JSON payload per compile event) only
    when that logger has a handler. With pytest's handler on it, a flex cell did torch's tracing
    work while being timed and its failure text got hundreds of empty ``DEBUG torch.__trace``
    lines. A logger that chose not to propagate has said where its records go; root-level
    capture still sees everything that propagates."""
    root = logging.getLogger()
    captured = set(root.handlers)  # pytest attaches the same handler objects to root
    detached: list[tuple[logging.Logger, logging.Handler]] = []
    for logger in list(root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and not logger.propagate:
            for handler in [h for h in logger.handlers if h in captured]:
                logger.removeHandler(handler)
                detached.append((logger, handler))
    try:
        yield
    finally:
        for logger, handler in detached:
            logger.addHandler(handler)


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
        from attnparity.results.record import ResultRecord

        check = self.check
        if check.skip:
            self._keep(ResultRecord(check.kind, check.check, check.backend, check.dtype, "skip", message=check.skip))
            raise pytest.skip.Exception(check.skip, _use_item_location=True)
        run = self.config.stash[RUN]
        record = run.execute(check, label=self.nodeid, quiet=_own_channels_only)
        unchanged = run.unchanged_failure(record)
        if unchanged:
            record.extra["unchanged_failure"] = True
        self._keep(record)
        if record.verdict == "skip":
            raise pytest.skip.Exception(record.message, _use_item_location=True)
        if record.verdict == "xfail":  # a known finding (the ledger), and nothing else wrong
            raise pytest.xfail.Exception(record.message)
        if record.verdict in ("fail", "error"):
            if unchanged:  # --attn-compare: the run fails only where the gate finds a cell worse
                raise pytest.xfail.Exception(f"{unchanged}\n{record.message}")
            raise CheckFailed(record.message)

    def _keep(self, record: Any) -> None:
        from attnparity.session import stamp

        record.nodeid = self.nodeid
        stamp(self.config.stash[RUN], record)
        self.record_json = json.dumps(record.to_json(), default=str)
        self.user_properties.append((USER_PROPERTY, headline(record)))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CheckFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, 0, self.nodeid


def headline(record: Any) -> str:
    """The record in one short line for junitxml: verdict, backend, dtype, the figures that matter."""
    figures = {"ratio": record.metrics.get("ratio_max"), "ssim": record.metrics.get("ssim_ref"),
               "ms": record.metrics.get("ms")}
    shown = " ".join(f"{k}={float(v):.4g}" for k, v in figures.items() if isinstance(v, (int, float)))
    return " ".join(p for p in (record.verdict, record.backend, record.dtype, shown) if p)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    text = getattr(item, "record_json", None)
    if text is not None and call.when in ("setup", "call"):
        setattr(report, REPORT_ATTRIBUTE, text)  # a plain attribute: xdist serializes it with the report
    return report


def record_of(report: pytest.TestReport) -> dict[str, Any] | None:
    """The record an item's report carries (from this process or an xdist worker), or None."""
    text = getattr(report, REPORT_ATTRIBUTE, None)
    return json.loads(text) if text else None


class AttnCollector(pytest.Collector):
    """The ``attnparity`` node: ids stay ``attnparity::<check>[<param>]`` wherever it is installed."""

    def collect(self) -> list[pytest.Item]:
        from attnparity.suite import collect

        ctx = self.config.stash[RUN].suite
        return [AttnItem.from_parent(self, name=f"{c.check}[{c.item_param}]", check=c) for c in collect(ctx)]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: our items must be in the list before -k/-m deselection (also a modifyitems hook) runs.
    if RUN not in config.stash:
        return
    collector = AttnCollector.from_parent(session, name="attnparity", nodeid="attnparity", path=config.rootpath)
    try:
        items.extend(collector.collect())
    except (LookupError, ValueError) as exc:  # bad option values found while building the checks
        raise pytest.UsageError(str(exc)) from None


class RecordCollector:
    """Gathers the records of this run's items into the Run (registered per run, so no module
    global outlives a session). On the xdist controller the reports are the workers': each record
    rides in an attribute of its report (``record_of``)."""

    def __init__(self, run: "Run") -> None:
        self.run = run

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not (report.when == "setup" and report.skipped):
            return
        record = record_of(report)
        if record is not None:
            self.run.records.append(record)


def _is_controller(config: pytest.Config) -> bool:
    # xdist workers ship their records to the controller; only it writes reports and gates.
    return RUN in config.stash and not os.environ.get("PYTEST_XDIST_WORKER")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # tryfirst: before the terminal reporter's own sessionfinish prints the summary.
    if not _is_controller(session.config):
        return
    from attnparity.session import finish_records

    outcome = finish_records(session.config.stash[RUN])
    if outcome.gate_failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    if RUN not in config.stash:
        return
    from attnparity.session import end_run

    end_run(config.stash[RUN])
    config.stash[RUN].isolation.close()
    still = config.stash[RUN].guard.drain(5.0)
    if still:
        import sys

        sys.stderr.write(f"attnparity: {still} timed-out backend call(s) still running at exit; "
                         "the process may hang or crash while exiting (see attn_timeout)\n")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _is_controller(config):
        return
    from attnparity.session import finish_run

    finish_run(config.stash[RUN], terminalreporter)
