"""Re-run one failing case from its reproduce line:

    python -m attnparity.check.repro <check> <backend> '<case JSON>'

Vendor backends registered in a conftest.py are not visible here; register them in the entry point
group (or import your module with ``--import``) to reproduce theirs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attnparity.backends.base import Backend

    from .cases import AttnCase
    from .parity import ParityResult
    from .tolerance import Tolerances


def run_check(check: str, backend: "Backend", case: "AttnCase", tolerances: "Tolerances") -> "ParityResult":
    """attnparity's ``check`` (forward, backward or a semantic check's name) of ``backend`` on ``case``."""
    from .parity import check_grads, check_parity
    from .semantics import run_semantic

    if check == "forward":
        return check_parity(backend, case, tolerances)
    if check == "backward":
        return check_grads(backend, case, tolerances)
    return run_semantic(check, backend, case, tolerances)


def main(argv: list[str] | None = None) -> int:
    from attnparity.backends.registry import UnknownBackend, get_backend
    from .cases import AttnCase
    from .semantics import SEMANTIC_CHECKS
    from .tolerance import Tolerances

    parser = argparse.ArgumentParser(prog="python -m attnparity.check.repro", description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=["forward", "backward", *SEMANTIC_CHECKS])
    parser.add_argument("backend")
    parser.add_argument("case", help="the case as JSON, as printed in the failure")
    parser.add_argument("--import", dest="modules", action="append", default=[],
                        help="module to import first (one that calls register_backend)")
    parser.add_argument("--tolerance", action="append", default=[], help="an attn_tolerance rule line")
    args = parser.parse_args(argv)
    for module in args.modules:
        importlib.import_module(module)
    try:
        backend = get_backend(args.backend)
        case = AttnCase.from_dict(json.loads(args.case))
    except (UnknownBackend, json.JSONDecodeError, TypeError) as exc:
        print(f"attnparity.check.repro: {exc}", file=sys.stderr)
        return 2
    result = run_check(args.check, backend, case, Tolerances.from_lines(args.tolerance))
    print(f"{args.check} {backend.name} {case.short()}")
    print(json.dumps(result.metrics, indent=1))
    print("PASS" if result.passed else f"FAIL\n{result.message}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
