"""The ``attnparity`` console command: ``attnparity backends`` (and subcommands added by other modules)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnparity", description="attention backend parity matrix")
    sub = parser.add_subparsers(dest="command", required=True)
    backends = sub.add_parser("backends", help="list every registered backend and whether it runs here")
    backends.add_argument("--device", default="auto")
    compare = sub.add_parser("compare", help="the upgrade gate: exit 1 when a cell of NEW got worse than in OLD")
    compare.add_argument("old", help="results.json of the earlier run")
    compare.add_argument("new", help="results.json of this run")
    compare.add_argument("--ratio", type=float, default=2.0, help="an error ratio may grow by this factor (2)")
    compare.add_argument("--ssim", type=float, default=0.01, help="an SSIM may drop by this much (0.01)")
    compare.add_argument("--slowdown", type=float, default=0.25, help="a time may grow by this fraction (0.25)")
    args = parser.parse_args(argv)
    if args.command == "compare":
        return _compare(args)
    if args.command == "backends":
        from .listing import print_backends

        try:
            print_backends(args.device)
        except ValueError as exc:
            print(f"attnparity: {exc}", file=sys.stderr)
            return 2
        return 0
    return 2


def _compare(args: argparse.Namespace) -> int:
    """0: nothing got worse; 1: something did (the differences are printed); 2: bad input."""
    from .compare import Thresholds, compare_files, format_comparison
    from .results import ResultsFileError

    try:
        comparison = compare_files(args.old, args.new, Thresholds(args.ratio, args.ssim, args.slowdown))
    except (ResultsFileError, ValueError) as exc:
        print(f"attnparity compare: {exc}", file=sys.stderr)
        return 2
    print("\n".join(format_comparison(comparison)))
    print("upgrade gate: " + ("FAILED" if comparison.failed else "passed"))
    return 1 if comparison.failed else 0


if __name__ == "__main__":
    sys.exit(main())
