"""Builds the run's SuiteContext from resolved options, and what the run says about itself:
header lines, the stamp on every record, and the end-of-run summary and files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .suite import SuiteContext

#: Profiles hypothesis loads by itself ("ci" when the CI variable is set): not the user's choice,
#: so the suite's own settings (which derandomize under CI too) still apply.
HYPOTHESIS_OWN_PROFILES = ("default", "ci")


def resolve_device(requested: str | None) -> str:
    import torch

    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--attn-device={requested}: torch {torch.__version__} sees no CUDA device; use cpu or auto")
    if requested.split(":")[0] not in ("cpu", "cuda", "xpu", "mps"):
        raise ValueError(f"--attn-device={requested}: expected auto, cpu, cuda or cuda:N")
    return requested


def parse_dtypes(text: str) -> list[str]:
    from .backends.base import DTYPE_NAMES, dtype_name

    names = [dtype_name(p.strip()) for p in str(text).split(",") if p.strip()]
    unknown = [n for n in names if n not in DTYPE_NAMES]
    if unknown or not names:
        raise ValueError(f"--attn-dtypes={text}: unknown {unknown or 'empty'}; known: {', '.join(DTYPE_NAMES)}")
    return list(dict.fromkeys(names))


def hypothesis_settings(examples: int) -> Any:
    """The suite's settings: ours only when the user loaded no profile of their own."""
    from hypothesis import HealthCheck, settings

    if _user_profile() is not None:
        return settings()  # the user's loaded profile governs, untouched
    return settings(
        max_examples=examples,
        deadline=None,  # first calls compile kernels; timing is perf's business, not parity's
        derandomize=bool(os.environ.get("CI")),
        print_blob=True,
        database=None if os.environ.get("CI") else settings.default.database,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def share_cpu_threads(device: str) -> int | None:
    """Under pytest-xdist on CPU, cap each worker's torch threads at its share of the cores, and
    return the new count (None: nothing changed).

    Every worker's torch would otherwise start one thread per core: on 2 cores, `-n 2` then took 18
    minutes for the first seed of the slow false-alarm test on each worker, against 2 with one
    thread each, the small kernels' threads spinning against each other. A user's OMP_NUM_THREADS
    wins."""
    import os

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


def build_context(config: Any, options: dict[str, Any]) -> SuiteContext:
    from .backends.registry import select_backends
    from .tolerance import Tolerances

    backends = select_backends(options["attn_backends"])
    examples = options["attn_examples"]
    if examples is not None and int(examples) < 1:
        raise ValueError(f"--attn-examples={examples}: must be at least 1")
    root = Path(config.rootpath)
    _check_gate_options(options)
    artifacts = Path(options["attn_artifacts"] or ".attnparity/artifacts")
    device = resolve_device(options["attn_device"])
    share_cpu_threads(device)
    return SuiteContext(
        backends=backends,
        device=device,
        dtypes=parse_dtypes(options["attn_dtypes"] or "fp32,fp16,bf16"),
        tolerances=Tolerances.from_lines(options["attn_tolerance"]),
        hypothesis_settings=hypothesis_settings(int(examples or 30)),
        seed=options["attn_seed"],
        rootdir=root,
        artifacts_dir=artifacts if artifacts.is_absolute() else root / artifacts,
        options=options,
        user_profile=_user_profile(),
    )


def _check_gate_options(options: dict[str, Any]) -> None:
    """Bad gate input is a usage error at the start, not a surprise after the whole matrix ran."""
    from .compare import Thresholds
    from .results import read_results

    Thresholds(_opt_value(options, "attn_compare_ratio", 2.0), _opt_value(options, "attn_compare_ssim", 0.01),
               _opt_value(options, "attn_compare_slowdown", 0.25))
    # Paths are taken from the invocation directory, as --junitxml does; resolved once here.
    for name in ("attn_compare", "attn_report"):
        if options.get(name):
            options[name] = str(Path(options[name]).expanduser().resolve())
    if options.get("attn_compare"):
        read_results(Path(options["attn_compare"]))  # raises ResultsFileError (a ValueError) saying why
    timeout = options.get("attn_timeout")
    if timeout is not None and float(timeout) < 0:
        raise ValueError(f"--attn-timeout={timeout}: seconds must be >= 0 (0: no limit)")


def _opt_value(options: dict[str, Any], name: str, default: float) -> float:
    value = options.get(name)
    return default if value is None else float(value)


def _user_profile() -> str | None:
    from hypothesis import settings

    name = settings.get_current_profile_name()
    return None if name in HYPOTHESIS_OWN_PROFILES else name


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return device


def header_lines(ctx: SuiteContext) -> list[str]:
    import torch

    from .results import versions

    found = versions()
    libs = " ".join(f"{name} {found[name]}" for name in ("diffusers", "transformers", "xformers", "flash-attn",
                                                          "sageattention", "triton") if name in found)
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA build"
    prof = ctx.user_profile
    prof_text = f"user profile {prof!r}" if prof is not None else (
        f"attnparity ({ctx.hypothesis_settings.max_examples} examples, derandomize={ctx.hypothesis_settings.derandomize})")
    return [
        f"attnparity: torch {torch.__version__} ({cuda}), device {device_name(ctx.device)}; {libs or 'no optional libraries'}",
        f"attnparity: {len(ctx.backends)} backends, dtypes {','.join(ctx.dtypes)}; hypothesis {prof_text}"
        + (f", seed {ctx.seed}" if ctx.seed is not None else ""),
    ]


_versions_cache: dict[str, str] | None = None


def stamp(ctx: SuiteContext, record: Any) -> None:
    """Device and versions on every record: records travel alone (xdist, results.json)."""
    global _versions_cache
    from .results import versions

    if _versions_cache is None:
        _versions_cache = versions()
    record.device = record.device or device_name(ctx.device)
    record.versions = record.versions or dict(_versions_cache)


@dataclass
class RunOutcome:
    """What the end of a run produced on the controller: records, the gate, the files written."""

    records: list[Any]
    comparison: Any = None  # compare.Comparison when --attn-compare was given and readable
    gate_error: str | None = None  # --attn-compare given but unusable: the gate fails, saying why
    report_dir: Path | None = None
    errors: list[str] = field(default_factory=list)  # report problems: shown, never raised

    @property
    def gate_failed(self) -> bool:
        # An unreadable old results.json fails too: a gate that silently does nothing must not pass.
        return self.gate_error is not None or bool(self.comparison is not None and self.comparison.failed)


def finish_records(ctx: SuiteContext, records: list[dict[str, Any]]) -> RunOutcome:
    """The gate (--attn-compare) and the report files (--attn-report) for this run's records."""
    from .matrix import as_records, sort_records

    outcome = RunOutcome(sort_records(as_records(records), [b.name for b in ctx.backends]))
    old_path = ctx.options.get("attn_compare")
    if old_path:
        from .compare import Thresholds, compare_records
        from .results import ResultsFileError, read_results

        try:
            old = read_results(Path(old_path))
            thresholds = Thresholds(_opt_value(ctx.options, "attn_compare_ratio", 2.0),
                                    _opt_value(ctx.options, "attn_compare_ssim", 0.01),
                                    _opt_value(ctx.options, "attn_compare_slowdown", 0.25))
            outcome.comparison = compare_records(old["records"], outcome.records, thresholds, old_source=str(old_path))
        except (ResultsFileError, ValueError) as exc:
            outcome.gate_error = f"upgrade gate failed: {exc}"
    report_dir = ctx.options.get("attn_report")
    if report_dir:
        from .report_html import write_report

        target = Path(report_dir)
        try:
            outcome.report_dir = write_report(target, outcome.records, device=device_name(ctx.device),
                                              comparison=outcome.comparison, base=ctx.rootdir)
        except OSError as exc:
            outcome.errors.append(f"report not written to {target}: {exc}")
    return outcome


def finish_run(ctx: SuiteContext, outcome: RunOutcome, terminal: Any) -> None:
    from .report import summarize, write_comparison

    summarize(ctx, outcome.records, terminal)
    if outcome.comparison is not None:
        write_comparison(outcome.comparison, terminal)
    if outcome.gate_error:
        terminal.write_sep("=", "attnparity upgrade gate: FAILED", red=True)
        terminal.write_line(outcome.gate_error, red=True)
    for error in outcome.errors:
        terminal.write_line(f"attnparity: {error}", red=True)
    if outcome.report_dir is not None:
        html = outcome.report_dir / "index.html"
        terminal.write_line(f"attnparity report: {html} ({html.stat().st_size / 1024:.0f} KiB), "
                            f"{outcome.report_dir / 'results.json'}")
