"""Generate docs/detection.md: which check catches each planted bug, after how many examples, on
which shrunk case; and how close the correct backends come to their bound over many seeds.

    python scripts/detection.py                       # default budget, writes docs/detection.md
    python scripts/detection.py --seeds 20 --examples 30

It runs the suite's own code path (attnparity.suite.op.run_op) with the default tolerances.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def context(backends, dtypes, examples: int, seed: int | None):
    from attnparity.session import hypothesis_settings
    from attnparity.suite import SuiteContext
    from attnparity.tolerance import Tolerances

    from hypothesis import settings

    # No example database: replayed failures of an earlier run would flatter "examples to find".
    return SuiteContext(backends=backends, device="cpu", dtypes=dtypes, tolerances=Tolerances(),
                        hypothesis_settings=settings(hypothesis_settings(examples), database=None), seed=seed, rootdir=ROOT,
                        artifacts_dir=ROOT / ".attnparity" / "artifacts")


def detection_rows(examples: int, dtypes: list[str]) -> list[str]:
    from mutants import CAUGHT_BY, backends

    from attnparity.suite.op import OP_CHECKS, run_op

    rows = ["| mutant | dtype | caught by | examples to find (first catching check) | failing case (first catching check) |",
            "|---|---|---|---|---|"]
    for backend in backends():
        ctx = context([backend], dtypes, examples, seed=0)
        for dtype in dtypes:
            caught, first = [], None
            for check in OP_CHECKS:
                if check == "backward" and not backend.capabilities.backward:
                    continue
                record = run_op(ctx, backend, dtype, check)
                if record.verdict == "fail":
                    caught.append(f"{check} (@{record.extra.get('found_at')})")
                    first = first or record
            expected = " / ".join(sorted(CAUGHT_BY[backend.name]))
            case = first.message.splitlines()[0].split(" on ", 1)[-1] if first else "SURVIVED"
            if first and first.case:
                from attnparity.cases import AttnCase

                case = AttnCase.from_dict(first.case).short()
            rows.append(f"| {backend.name} | {dtype} | {', '.join(caught) or '**none**'} (expected: {expected}) "
                        f"| {first.extra.get('found_at') if first else '-'} | `{case}` |")
            print(rows[-1], flush=True)
    return rows


def margin_rows(seeds: int, examples: int, names: list[str], dtypes: list[str]) -> list[str]:
    from attnparity.backends.registry import get_backend
    from attnparity.suite.op import NUMERIC_CHECKS, run_op
    from attnparity.tolerance import Tolerances

    rows = ["| backend | dtype | check | worst error ratio over all seeds | k | failures |", "|---|---|---|---|---|---|"]
    for name in names:
        backend = get_backend(name)
        if backend.unavailable_reason():
            continue
        for dtype in dtypes:
            if dtype not in backend.capabilities.dtype_names:
                continue
            for check in NUMERIC_CHECKS:
                if check == "backward" and not backend.capabilities.backward:
                    continue
                worst, fails = 0.0, []
                for seed in range(seeds):
                    record = run_op(context([backend], [dtype], examples, seed), backend, dtype, check)
                    worst = max(worst, record.metrics.get("ratio_max", 0.0), record.metrics.get("ratio_mean", 0.0))
                    if record.verdict == "fail":
                        fails.append(f"seed {seed}: {record.case and record.case.get('masked_value')}")
                k = Tolerances().bound(name, dtype, grad=check == "backward").k
                rows.append(f"| {name} | {dtype} | {check} | {worst:.3g} | {k:g} | {'; '.join(fails) or 0} |")
                print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=30, help="hypothesis examples per item (the default run's)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--dtypes", default="fp32,fp16,bf16")
    parser.add_argument("--margin-backends", default="naive,sdpa-math,sdpa-flash,sdpa,flex-eager,diffusers:native")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "detection.md")
    parser.add_argument("--skip-margins", action="store_true")
    args = parser.parse_args(argv)
    dtypes = args.dtypes.split(",")
    start = time.perf_counter()
    detection = detection_rows(args.examples, dtypes)
    margins = [] if args.skip_margins else margin_rows(args.seeds, args.examples, args.margin_backends.split(","), dtypes)
    text = [
        "# Detection power",
        "",
        f"Generated by `python scripts/detection.py` on {dt.date.today()} with torch {torch.__version__} on CPU, "
        f"{args.examples} hypothesis examples per item (the default), default tolerances. "
        f"Took {time.perf_counter() - start:.0f} s.",
        "",
        "## Planted bugs (tests/mutants.py)",
        "",
        "`check (@n)`: that check failed, the first failing example being the n-th judged (1 = the first case of the",
        "edge corpus). The backward check runs only for mutants that claim backward.",
        "",
        *detection,
    ]
    if margins:
        text += ["", f"## Correct backends: worst error ratio over {args.seeds} seeds", "",
                 "The ratio is backend error / naive same-dtype error (max of max-abs and mean-abs ratios) of the",
                 "worst passing example; the verdict also allows a floor of a few roundings, so a ratio above k",
                 "on tiny errors can still pass. A failure here is a false alarm or an upstream finding (named).", "",
                 *margins]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
