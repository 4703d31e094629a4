"""The ``attnparity`` console command: ``backends`` lists what runs here, ``compare`` is the upgrade
gate between two results.json files (device by device), ``merge`` makes one matrix and report of the
runs of several devices, ``perf-table`` prints a run's timings as Markdown."""

from __future__ import annotations

import argparse
import sys

from attnparity.options import Options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnparity", description="attention backend parity matrix")
    sub = parser.add_subparsers(dest="command", required=True)
    backends = sub.add_parser("backends", help="list every registered backend and whether it runs here")
    backends.add_argument("--device", default="auto")
    compare = sub.add_parser("compare", help="the upgrade gate: exit 1 when a cell of NEW got worse than in OLD")
    compare.add_argument("old", help="results.json of the earlier run")
    compare.add_argument("new", help="results.json of this run")
    defaults = Options()
    compare.add_argument("--ratio", type=float, default=defaults.compare_ratio,
                         help=f"an error ratio may grow by this factor ({defaults.compare_ratio:g})")
    compare.add_argument("--ssim", type=float, default=defaults.compare_ssim,
                         help=f"an SSIM may drop by this much ({defaults.compare_ssim:g})")
    compare.add_argument("--slowdown", type=float, default=defaults.compare_slowdown,
                         help=f"a time may grow by this fraction ({defaults.compare_slowdown:g})")
    compare.add_argument("--noise", type=float, default=defaults.perf_noise,
                         help=f"... and by this many times its measured noise ({defaults.perf_noise:g})")
    compare.add_argument("--busy-slowdown", type=float, default=defaults.perf_busy_slowdown,
                         help="a timing taken beside other work (either run) that grew beyond that but within this "
                              f"fraction is inconclusive, not worse ({defaults.perf_busy_slowdown:g})")
    compare.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                         help="text for a log, markdown for a CI job summary or a pull-request comment, json for a "
                              "program (text)")
    table = sub.add_parser("perf-table", help="the perf records of a results.json as Markdown tables")
    table.add_argument("results", help="a results.json written with --attn-report=DIR")
    merge = sub.add_parser("merge", help="one matrix and one HTML report of runs on several devices (GPUs, machines)")
    merge.add_argument("runs", nargs="+", metavar="RUN.json", help="results.json of each run (--attn-report=DIR)")
    merge.add_argument("--report", required=True, metavar="DIR", help="directory to write results.json and index.html into")
    _add_repro_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "repro":
        return _repro(args)
    if args.command == "merge":
        return _merge(args)
    if args.command == "compare":
        return _compare(args)
    if args.command == "perf-table":
        return _perf_table(args)
    if args.command == "backends":
        from attnparity.report.listing import print_backends

        try:
            print_backends(args.device)
        except ValueError as exc:
            print(f"attnparity: {exc}", file=sys.stderr)
            return 2
        return 0
    return 2


def _compare(args: argparse.Namespace) -> int:
    """0: nothing got worse (inconclusive timings included); 1: something did (the differences are
    printed); 2: bad input."""
    from attnparity.report.comparison import render
    from attnparity.results.gate import Thresholds, compare_files
    from attnparity.results.record import ResultsFileError

    try:
        comparison = compare_files(args.old, args.new, Thresholds(args.ratio, args.ssim, args.slowdown, args.noise,
                                                                     args.busy_slowdown))
    except (ResultsFileError, ValueError) as exc:
        print(f"attnparity compare: {exc}", file=sys.stderr)
        return 2
    print(render(comparison, args.format).rstrip("\n"))
    return 1 if comparison.failed else 0



def _add_repro_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    repro = sub.add_parser("repro", help="write a standalone repro file of a failure (it needs only torch and the "
                                         "library at fault, for an upstream report), or one per built-in ledger entry")
    repro.add_argument("--standalone", action="store_true", required=True,
                       help="write a file that runs without attnparity (the only kind for now)")
    repro.add_argument("check", nargs="?", help="forward, backward, kwargs, masked-rows, deterministic or batch, as in the reproduce line")
    repro.add_argument("backend", nargs="?", help="the backend, as in the reproduce line")
    repro.add_argument("case", nargs="?", help="the case as JSON, as in the reproduce line")
    repro.add_argument("-o", "--output", required=True, metavar="FILE|DIR",
                       help="the file to write (with --ledger: the directory)")
    repro.add_argument("--ledger", action="store_true",
                       help="one file per entry of the built-in known-findings ledger, <id>.py in the -o directory")
    repro.add_argument("--call-as", metavar="BACKEND", action="append",
                       help="call this backend instead of the buggy one (a correct one must make the file pass); "
                            "repeatable: the first that claims the case is called")
    repro.add_argument("--tolerance", action="append", default=[], help="an attn_tolerance rule line")
    repro.add_argument("--import", dest="modules", action="append", default=[],
                       help="module to import first (one that calls register_backend)")


def _repro(args: argparse.Namespace) -> int:
    """0: written; 2: bad input (a check or backend without a standalone form, a case that is no JSON)."""
    import importlib
    import json
    from pathlib import Path

    from attnparity.backends.registry import UnknownBackend, get_backend
    from attnparity.check.cases import AttnCase
    from attnparity.check.standalone import StandaloneError, render, repro_of_failure
    from attnparity.check.tolerance import Tolerances
    from attnparity.options import OptionError
    from attnparity.results.findings_repro import write_ledger_repros

    try:
        for module in args.modules:
            importlib.import_module(module)
        if args.ledger:
            for path in write_ledger_repros(Path(args.output), call_as=args.call_as):
                print(f"wrote {path}")
            return 0
        if not (args.check and args.backend and args.case):
            raise StandaloneError("give CHECK BACKEND 'CASE JSON' (from a failure's reproduce line), or --ledger")
        backend = get_backend(args.backend)
        case = AttnCase.from_dict(json.loads(args.case))
        tolerances = Tolerances.from_lines(args.tolerance)
        text = render(repro_of_failure(args.check, backend, case, tolerances, call_as=args.call_as), backend, tolerances)
        Path(args.output).write_text(text)
    except (StandaloneError, UnknownBackend, OptionError, json.JSONDecodeError, TypeError, OSError) as exc:
        print(f"attnparity repro: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: run it with python {args.output} (exit 1 while the bug is there)")
    return 0


def _merge(args: argparse.Namespace) -> int:
    """0: written; 2: bad input (a file that is no results.json, runs that conflict)."""
    from pathlib import Path

    from attnparity.report.html import write_report
    from attnparity.results.matrix import sort_records
    from attnparity.results.merge import merge_runs
    from attnparity.results.record import ResultsFileError

    try:
        merged = merge_runs([Path(p) for p in args.runs])
        directory = write_report(Path(args.report), sort_records(merged.records), device=" + ".join(merged.devices))
    except (ResultsFileError, ValueError, OSError, RuntimeError) as exc:  # MergeError is a ValueError
        print(f"attnparity merge: {exc}", file=sys.stderr)
        return 2
    print(f"merged {len(args.runs)} runs, {len(merged.records)} records, {len(merged.devices)} device(s):")
    for line in merged.describe():
        print(f"  {line}")
    print(f"report: {directory / 'index.html'}, {directory / 'results.json'}")
    return 0


def _perf_table(args: argparse.Namespace) -> int:
    from pathlib import Path

    from attnparity.report.markdown import markdown_table
    from attnparity.results.record import ResultsFileError, read_results

    try:
        records = [r.to_json() for r in read_results(Path(args.results))["records"]]
    except ResultsFileError as exc:
        print(f"attnparity perf-table: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
