"""The ``attnparity`` console command: ``attnparity backends`` (and subcommands added by other modules)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnparity", description="attention backend parity matrix")
    sub = parser.add_subparsers(dest="command", required=True)
    backends = sub.add_parser("backends", help="list every registered backend and whether it runs here")
    backends.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.command == "backends":
        from .listing import print_backends

        try:
            print_backends(args.device)
        except ValueError as exc:
            print(f"attnparity: {exc}", file=sys.stderr)
            return 2
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
