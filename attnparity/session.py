"""One attnparity run: the state a pytest session holds (``Run``, kept in ``config.stash``), how it
is built from the options, and what the run says about itself: header lines, the stamp on every
record, the gate and the files at the end."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from attnparity.machine import DeviceIdentity, identify, pin_fp32_math, resolve_device, versions, worker_device
from attnparity.options import Options
from attnparity.suite import SuiteContext
from attnparity.suite.guard import Guard
from attnparity.suite.isolation import Isolation

#: Profiles hypothesis loads by itself ("ci" when the CI variable is set): not the user's choice,
#: so the suite's own settings (which derandomize under CI too) still apply.
HYPOTHESIS_OWN_PROFILES = ("default", "ci")


@dataclass
class RunOutcome:
    """What the end of a run produced on the controller: records, the gate, the files written."""

    records: list[Any]
    comparison: Any = None  # results.gate.Comparison when --attn-compare was given and readable
    gate_error: str | None = None  # --attn-compare given but unusable: the gate fails, saying why
    report_dir: Path | None = None
    errors: list[str] = field(default_factory=list)  # report problems: shown, never raised

    @property
    def gate_failed(self) -> bool:
        # An unreadable old results.json fails too: a gate that silently does nothing must not pass.
        return self.gate_error is not None or bool(self.comparison is not None and self.comparison.failed)


@dataclass
class Run:
    """Everything one pytest session of attnparity holds; nothing of it lives in module globals."""

    options: Options
    suite: SuiteContext
    device: DeviceIdentity
    guard: Guard
    #: result records that reached this process, in the order their items finished (on the xdist
    #: controller, every worker's)
    records: list[dict[str, Any]] = field(default_factory=list)
    outcome: RunOutcome | None = None
    #: --attn-compare's records, read once at the start (the gate at the end uses them too)
    baseline: list[Any] | None = None
    #: the worker processes of isolated backends (--attn-isolate)
    isolation: Isolation = field(default_factory=lambda: Isolation(None, frozenset()))
    #: torch's fp32 matmul settings, pinned to full fp32 for the run (machine.pin_fp32_math)
    numerics: dict[str, str] = field(default_factory=dict)
    #: how the run's hypothesis draws were set (results.json keeps them for a later --attn-compare)
    draws: "Draws | None" = None

    @property
    def versions(self) -> dict[str, str]:
        return self.suite.versions

    @cached_property
    def baseline_cells(self) -> dict[Any, Any] | None:
        """The baseline folded by cell (results.gate.fold), as the gate sees it."""
        from attnparity.results.gate import fold

        return None if self.baseline is None else fold(self.baseline)

    def execute(self, check: Any, *, label: str,
                quiet: Callable[[], AbstractContextManager[Any]] = nullcontext) -> Any:
        """One cell's record. A crash, hang or poisoned state of an isolated backend stays in its
        worker; in-process, a hung backend (attn_timeout) or a raising one fails its own cell only.
        ``quiet``: what to run an in-process cell under (the plugin keeps pytest's log capture off
        torch's trace logger). pytest's outcomes and KeyboardInterrupt are BaseExceptions: they pass."""
        from attnparity.results.record import ResultRecord
        from attnparity.suite import error_record
        from attnparity.suite.guard import CellTimeout

        if self.isolation.covers(check.backend):
            return self.isolation.run(check, label=label)
        hung = self.guard.hung_reason(check.backend)
        try:
            if hung:
                raise CellTimeout(hung)
            with quiet():
                return self.guard.run(check.run, label=label)
        except CellTimeout as exc:
            if check.backend and not hung:
                self.guard.mark_hung(check.backend, label)
            return ResultRecord(check.kind, check.check, check.backend, check.dtype, "error", message=str(exc))
        except Exception as exc:
            return error_record(check, exc)

    def unchanged_failure(self, record: Any) -> str | None:
        """With --attn-compare: why a failing cell is no news (it failed in the baseline too), or None.
        The record keeps its verdict; only the item's outcome says the gate does not count it. Only
        the verdict class is compared: a different bug in a cell that failed before is unchanged
        too, unless its error ratio grew past the gate's factor (docs/gate.md says so)."""
        if self.baseline_cells is None or record.verdict not in ("fail", "error"):
            return None
        if record.extra.get("stale_known"):  # a ledger entry to remove is news every time
            return None
        old = self.baseline_cells.get(record.cell)
        if old is None or old.verdict not in ("fail", "error"):
            return None
        return (f"unchanged failure: this cell failed in {self.options.compare} too, so the upgrade gate does "
                f"not count it as worse (it still fails; fix it or record it in a known-findings ledger)")


#: Where the controller leaves the seed it picked, for its pytest-xdist workers (started after it).
RUN_SEED_ENV = "ATTNPARITY_RUN_SEED"


@dataclass(frozen=True)
class Draws:
    """What makes a run's hypothesis draws repeatable, kept in its results.json ("draws"): a run
    with --attn-compare draws as its baseline did unless the user set these themselves."""

    derandomize: bool
    seed: int | None
    examples: int
    #: the user's own hypothesis profile governed the draws (then nothing here is ours to repeat)
    profile: str | None = None
    #: the baseline the settings were taken from, and which ("" when none was)
    reused_from: str = ""
    reused: tuple[str, ...] = ()
    #: the seed was picked by attnparity for this run (no --attn-seed, no CI)
    picked: bool = False
    #: this process picked it and left it in RUN_SEED_ENV for its xdist workers (end_run removes it)
    shared: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"derandomize": self.derandomize, "seed": self.seed, "examples": self.examples, "profile": self.profile}

    def describe(self) -> str:
        if self.profile is not None:
            return f"user profile {self.profile!r}"
        how = f"seed {self.seed}" if self.seed is not None else "derandomized" if self.derandomize else "random"
        text = f"attnparity ({self.examples} examples, {how}"
        if self.picked:
            text += f", picked for this run: --attn-seed={self.seed} repeats it"
        if self.reused:
            text += f"; {', '.join(self.reused)} reused from {self.reused_from}"
        return text + ")"


def resolve_draws(options: Options, given: frozenset[str], baseline: dict[str, Any] | None,
                  source: str = "") -> Draws:
    """The run's draws: the user's settings (--attn-seed, --attn-examples, CI), else the baseline's
    (--attn-compare), else derandomized under CI, else a seed picked here and printed, so that every
    run's cases can be drawn again."""
    profile = _user_profile()
    derandomize, seed, examples = bool(os.environ.get("CI")), options.seed, options.examples
    if profile is not None:
        return Draws(derandomize, seed, examples, profile)
    reused: list[str] = []
    if baseline and baseline.get("profile") is None:
        if "seed" not in given and baseline.get("seed") is not None:
            seed = int(baseline["seed"])
            reused.append("seed")
        if "examples" not in given and baseline.get("examples"):
            examples = int(baseline["examples"])
            reused.append("examples")
        if "CI" not in os.environ and baseline.get("derandomize"):
            derandomize = True
            reused.append("derandomize")
    picked = seed is None and not derandomize
    inherited = os.environ.get(RUN_SEED_ENV) if picked else None
    if picked:
        import secrets

        # xdist workers take the controller's pick: one seed for the whole run
        seed = int(inherited or secrets.randbelow(2**32))
        os.environ[RUN_SEED_ENV] = str(seed)
    return Draws(derandomize, seed, examples, None, source if reused else "", tuple(reused), picked,
                 shared=picked and not inherited)


def hypothesis_settings(examples: int, derandomize: bool | None = None) -> Any:
    """The suite's settings: ours only when the user loaded no profile of their own. No example
    database: a run's draws follow from its seed (or derandomization) alone, so a baseline's cases
    are the ones drawn again."""
    from hypothesis import HealthCheck, settings

    if _user_profile() is not None:
        return settings()  # the user's loaded profile governs, untouched
    return settings(
        max_examples=examples,
        deadline=None,  # first calls compile kernels; timing is perf's business, not parity's
        derandomize=bool(os.environ.get("CI")) if derandomize is None else derandomize,
        print_blob=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def share_cpu_threads(device: str) -> int | None:
    """Under pytest-xdist on CPU, cap each worker's torch threads at its share of the cores, and
    return the new count (None: nothing changed).

    Every worker's torch would otherwise start one thread per core: on 2 cores, `-n 2` then took 18
    minutes for the first seed of the slow false-alarm test on each worker, against 2 with one
    thread each, the small kernels' threads spinning against each other. A user's OMP_NUM_THREADS
    wins."""

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers < 2 or not device.startswith("cpu") or "OMP_NUM_THREADS" in os.environ:
        return None
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, cores // workers)
    if torch.get_num_threads() <= share:
        return None
    torch.set_num_threads(share)
    return share


def pin_worker_device(device: str) -> str:
    """Under pytest-xdist, each worker on a GPU of its own: a plain "cuda" becomes cuda:<N % GPUs>
    for worker gwN (machine.worker_device, the one mapping; isolated workers pin the device this
    returns), made current before any CUDA work, so `-n <number of GPUs>` spreads the matrix."""
    if device != "cuda":
        return device
    import torch

    from attnparity.suite.isolation import pin_device

    device = worker_device(device, os.environ.get("PYTEST_XDIST_WORKER"), torch.cuda.device_count())
    pin_device(device)
    return device


def start_run(options: Options, rootdir: Path, invocation_dir: Path, given: frozenset[str] = frozenset(),
              timing_beside: str | None = None) -> Run:
    """The run for ``options`` (``given``: the options the user set, by field name); bad input (an
    unknown backend, an unreadable gate file, a report without jinja2) raises a ValueError or
    LookupError that says what to do. ``timing_beside``: what perf records say about other
    pytest-xdist workers' items beside their timing (suite.perf.Placement.beside)."""
    from attnparity.backends.registry import select_backends
    from attnparity.check.tolerance import Tolerances
    from attnparity.results.known import load_ledger

    if options.report is not None:
        from attnparity.report.html import require_jinja2

        require_jinja2()
    backends = select_backends(options.backends or "")
    ledger = load_ledger(options.known, invocation_dir=invocation_dir)  # raises LedgerError saying why
    baseline, baseline_draws = None, None
    if options.compare is not None:
        from attnparity.results.record import read_results

        payload = read_results(options.compare)  # raises ResultsFileError saying why
        baseline, baseline_draws = payload["records"], payload.get("draws")
    device = pin_worker_device(resolve_device(options.device))
    # after every check that may refuse the run: the seed it picks is left in the environment for
    # its xdist workers, and only a run that started (end_run) takes it away again
    draws = resolve_draws(options, given, baseline_draws, str(options.compare))
    options = replace(options, seed=draws.seed, examples=draws.examples)
    share_cpu_threads(device)
    numerics = pin_fp32_math()
    suite = SuiteContext(backends=backends, device=device, options=options, tolerances=Tolerances(options.tolerance),
                         hypothesis_settings=hypothesis_settings(draws.examples, draws.derandomize), rootdir=rootdir,
                         user_profile=_user_profile(), ledger=ledger, versions=versions(),
                         timing_beside=timing_beside)
    try:
        isolation = _isolation(options, suite, rootdir, invocation_dir)
    except BaseException:
        end_run_draws(draws)
        raise
    return Run(options=options, suite=suite, device=identify(device), guard=Guard(options.timeout), baseline=baseline,
               isolation=isolation, numerics=numerics, draws=draws)


def end_run(run: Run) -> None:
    """Forget the seed this run picked, so a later run in this process picks its own."""
    if run.draws is not None:
        end_run_draws(run.draws)


def end_run_draws(draws: Draws) -> None:
    if draws.shared:
        os.environ.pop(RUN_SEED_ENV, None)


def _isolation(options: Options, suite: SuiteContext, rootdir: Path, invocation_dir: Path) -> Isolation:
    """The run's isolation: which backends get a worker process, and how a worker rebuilds the run."""
    import sys
    from functools import partial

    import torch

    import attnparity
    import attnparity.suite
    from attnparity.backends.registry import registered_from
    from attnparity.suite.isolation import WorkerSpec, isolated_backends, registering_modules

    isolated = isolated_backends(suite.backends, options.isolate, suite.device)
    if not isolated:
        return Isolation(None, isolated)
    spec = WorkerSpec(build=partial(worker_suite, options, rootdir, invocation_dir, suite.timing_beside),
                      registering=registering_modules(suite.backends, registered_from),
                      suite_modules=tuple(attnparity.suite.SUITE_MODULES), sys_path=tuple(sys.path),
                      cwd=os.getcwd(), env=tuple(os.environ.items()), torch_threads=torch.get_num_threads(),
                      device=suite.device, package=os.path.realpath(attnparity.__file__))
    return Isolation(spec, isolated, options.timeout)


def worker_suite(options: Options, rootdir: Path, invocation_dir: Path,
                 timing_beside: str | None = None) -> SuiteContext:
    """The suite of an isolated worker process: the parent's run, rebuilt from the same options."""
    # the parent's draws are settled in ``options``: nothing is taken from the baseline again
    return start_run(replace(options, isolate="none"), rootdir, invocation_dir, frozenset({"seed", "examples"}),
                     timing_beside).suite


def _user_profile() -> str | None:
    from hypothesis import settings

    name = settings.get_current_profile_name()
    return None if name in HYPOTHESIS_OWN_PROFILES else name


def header_lines(run: Run, distribution: str | None = None) -> list[str]:
    """The run's header; ``distribution``: how pytest-xdist spreads it (suite.perf.Placement.describe)."""
    import torch

    found = run.versions
    libs = " ".join(f"{name} {found[name]}" for name in ("diffusers", "transformers", "xformers", "flash-attn",
                                                          "sageattention", "triton") if name in found)
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA build"
    ctx = run.suite
    draws = run.draws or Draws(bool(ctx.hypothesis_settings.derandomize), ctx.seed, ctx.options.examples,
                               ctx.user_profile)
    return [
        f"attnparity: torch {torch.__version__} ({cuda}), device {run.device.ran_on}; {libs or 'no optional libraries'}",
        f"attnparity: {len(ctx.backends)} backends, dtypes {','.join(ctx.dtypes)}; hypothesis {draws.describe()}",
        f"attnparity: {ctx.ledger.describe()}",
        *([f"attnparity: {distribution}"] if distribution else []),
    ]


def stamp(run: Run, record: Any) -> None:
    """Device and versions on every record: records travel alone (xdist, results.json). The
    pytest-xdist worker that ran it is a detail in extra: no cell or gate key depends on it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        record.extra.setdefault("worker", worker)
    record.device = record.device or run.device.name
    record.versions = record.versions or dict(run.versions)
    record.device_label = record.device_label or run.device.model
    record.numerics = record.numerics or dict(run.numerics)
    if record.device_index is None:
        record.device_index = run.device.index


def finish_records(run: Run) -> RunOutcome:
    """The gate (--attn-compare) and the report files (--attn-report) for this run's records."""
    from attnparity.results.matrix import as_records, sort_records

    options = run.options
    outcome = RunOutcome(sort_records(as_records(run.records), [b.name for b in run.suite.backends]))
    if run.baseline is not None:
        from attnparity.results.gate import Thresholds, compare_records

        try:
            outcome.comparison = compare_records(run.baseline, outcome.records, Thresholds.from_options(options),
                                                 old_source=str(options.compare))
        except ValueError as exc:
            outcome.gate_error = f"upgrade gate failed: {exc}"
    if options.report is not None:
        from attnparity.report.html import write_report

        try:
            outcome.report_dir = write_report(options.report, outcome.records, device=run.device.name,
                                              comparison=outcome.comparison, base=run.suite.rootdir,
                                              draws=run.draws.to_json() if run.draws else None)
        except OSError as exc:
            outcome.errors.append(f"report not written to {options.report}: {exc}")
    if options.report is not None or options.compare is not None:
        _job_summary(run, outcome)
    run.outcome = outcome
    return outcome


def _job_summary(run: Run, outcome: RunOutcome) -> None:
    """The run in Markdown appended to CI's job summary file (GITHUB_STEP_SUMMARY), when one is named."""
    from attnparity.report.summary import append_step_summary, run_summary

    try:
        append_step_summary(run_summary(outcome.records, device=run.device.name, comparison=outcome.comparison))
    except OSError as exc:
        outcome.errors.append(f"job summary not written: {exc}")


def finish_run(run: Run, terminal: Any) -> None:
    from attnparity.report.terminal import summarize, write_comparison

    outcome = run.outcome
    if outcome is None:
        return
    summarize(run.suite, outcome.records, terminal, full=run.options.summary == "full")
    if outcome.comparison is not None:
        write_comparison(outcome.comparison, terminal)
    if outcome.gate_error:
        terminal.write_sep("=", "attnparity upgrade gate: FAILED", red=True)
        terminal.write_line(outcome.gate_error, red=True)
    iso = run.isolation
    if iso.started:  # what isolation cost this process (under xdist each worker has its own)
        terminal.write_line(f"attnparity isolation: {iso.started} worker process(es) started for "
                            f"{len(iso.isolated)} isolated backend(s), {iso.start_s:.1f} s spent starting them")
    for error in outcome.errors:
        terminal.write_line(f"attnparity: {error}", red=True)
    if outcome.report_dir is not None:
        html = outcome.report_dir / "index.html"
        terminal.write_line(f"attnparity report: {html} ({html.stat().st_size / 1024:.0f} KiB), "
                            f"{outcome.report_dir / 'results.json'}")
