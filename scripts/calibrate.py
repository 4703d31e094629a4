"""Measure how far correct backends stray from the fp64 reference, to calibrate k and floor.

    python scripts/calibrate.py --examples 300 --out docs/calibration.json

For each (backend, dtype, forward|backward) it draws cases with the suite's own strategy and keeps,
per example, the backend's and the baseline's max/mean errors and the output scale. The smallest k
that passes every example for a given floor is what the tolerance defaults are chosen from.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from hypothesis import HealthCheck, given, settings

    from attnparity.backends.registry import get_backend
    from attnparity.cases import AttnCase
    from attnparity.parity import check_grads, check_parity
    from attnparity.strategies import attn_cases, edge_corpus
    from attnparity.tolerance import EPS, Bound, Tolerances

    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="sdpa-math,sdpa-flash")
    parser.add_argument("--dtypes", default="fp32,fp16,bf16")
    parser.add_argument("--checks", default="forward,backward")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("docs/calibration.json"))
    args = parser.parse_args(argv)
    # A huge k so nothing fails: we want the raw numbers.
    loose = Tolerances.from_lines(["* * k=1e30 floor=0"])
    rows = []
    for name in args.backends.split(","):
        backend = get_backend(name)
        for dtype in args.dtypes.split(","):
            for check in args.checks.split(","):
                fn = check_parity if check == "forward" else check_grads
                seen: list[dict] = []

                def record(case: AttnCase) -> None:
                    result = fn(backend, case, loose)
                    if result.skipped:
                        return
                    m = result.metrics
                    prefixes = [""] if check == "forward" else ["dq_", "dk_", "dv_"]
                    for p in prefixes:
                        seen.append({"case": case.short(), "err_max": m[f"{p}err_max"], "base_max": m[f"{p}base_max"],
                                     "err_mean": m[f"{p}err_mean"], "base_mean": m[f"{p}base_mean"],
                                     "scale": m.get("scale", 0.0), "out": p or "out"})

                for case in edge_corpus(backend.capabilities, dtype):
                    if check == "forward" or case.work <= 2 ** 19:
                        record(case)
                test = settings(max_examples=args.examples, deadline=None, database=None, derandomize=True,
                                suppress_health_check=list(HealthCheck))(given(attn_cases(backend.capabilities, dtype))(record))
                test._hypothesis_internal_add_digest = f"{name}{dtype}{check}".encode()
                test()
                worst = max((max(r["err_max"] / r["base_max"] if r["base_max"] else (math.inf if r["err_max"] else 0),
                                  r["err_mean"] / r["base_mean"] if r["base_mean"] else (math.inf if r["err_mean"] else 0))
                             for r in seen), default=0)
                print(f"{name:12} {dtype} {check:8} n={len(seen):4} worst raw ratio {worst:.3g}", flush=True)
                rows.append({"backend": name, "dtype": dtype, "check": check, "examples": seen})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
