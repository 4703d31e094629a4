"""Our timer beside ``triton.testing.do_bench`` on the perf quick set's shapes (scripts/gpu_run.sh).

For each quick shape x dtype x backend that runs here and claims the shape: the median ms of
attnparity's timer (perf.timer: CUDA events, L2 flushed between runs) and of do_bench (its median,
the same warm-up and run budget: 25 ms, 100 ms), their ratio, TFLOP/s and % of this device's measured
matmul peak in that dtype. The two timers must agree (0.85..1.15, the bound of
tests/test_perf_cuda.py); a row outside it is marked.

Where triton is missing (the CPU dry run) do_bench's place is taken by a stand-in that times the
same function with perf_counter, and every row says so: the dry run proves the path, not the figure.

    python scripts/gpu_bench.py --device cuda --backends sdpa-flash,sdpa-cudnn --dtypes fp16,bf16 \
        --json dobench.json --markdown dobench.md [--match sdxl] [--budget-s 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

AGREE = (0.85, 1.15)


def do_bench_or_standin() -> tuple[Callable[[Callable[[], Any]], float], str]:
    """do_bench (median ms, its default 25 ms warm-up and 100 ms of runs), or a CPU stand-in."""
    try:
        import triton.testing
    except ImportError:
        def standin(fn: Callable[[], Any]) -> float:
            fn()
            times = []
            deadline = time.perf_counter() + 0.1
            while len(times) < 3 or time.perf_counter() < deadline:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            return float(statistics.median(times))

        return standin, "STAND-IN (triton not installed): perf_counter median, not do_bench"

    def bench(fn: Callable[[], Any]) -> float:
        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))

    return bench, f"triton.testing.do_bench (triton {getattr(triton, '__version__', '?')}), median"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backends", default="sdpa-math,sdpa-flash,sdpa-efficient,sdpa-cudnn,flex,xformers,sage")
    parser.add_argument("--dtypes", default="fp16,bf16")
    parser.add_argument("--match", default="", help="only the quick shapes whose name contains this")
    parser.add_argument("--budget-s", type=float, default=0, help="stop starting new rows after this long (0: none)")
    parser.add_argument("--json", required=True, type=Path)
    parser.add_argument("--markdown", required=True, type=Path)
    args = parser.parse_args(argv)

    import torch

    from attnparity.backends.registry import select_backends
    from attnparity.machine import identify, resolve_device, versions
    from attnparity.perf import shapes as perf_shapes
    from attnparity.perf.flops import tflops
    from attnparity.perf.peak import matmul_peak
    from attnparity.perf.timer import settings_for, time_fn

    device = resolve_device(args.device)
    ident = identify(device)
    bench, bench_name = do_bench_or_standin()
    settings = settings_for(device, "quick")
    shapes = perf_shapes.select("quick", device)
    shapes = [s for s in shapes if args.match in s.name]
    if not shapes:
        parser.error(f"--match {args.match!r}: no quick shape on {device} has that in its name")
    backends = select_backends(args.backends)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    peaks: dict[str, float] = {}
    for dtype in dtypes:
        peaks[dtype] = matmul_peak(device, dtype, settings).tflops
        for shape in shapes:
            case = shape.case(dtype, device)
            for backend in backends:
                why = backend.unavailable_reason() or case.outside(backend.capabilities)
                if why:
                    skipped.append(f"{backend.name} {dtype} {shape.name}: {why}")
                    continue
                if args.budget_s and time.perf_counter() - start > args.budget_s:
                    skipped.append(f"{backend.name} {dtype} {shape.name}: budget of {args.budget_s:g} s spent")
                    continue
                q, k, v, _ = case.tensors()
                fn = lambda b=backend, q=q, k=k, v=v: b(q, k, v)  # noqa: E731
                try:
                    ours = time_fn(fn, device, settings)
                    theirs = bench(fn)
                except Exception as exc:  # one backend refusing a shape must not end the table
                    skipped.append(f"{backend.name} {dtype} {shape.name}: raised {type(exc).__name__}: {exc}"[:300])
                    continue
                finally:
                    del q, k, v
                ratio = ours.median_ms / theirs
                t = tflops(shape.flops, ours.median_ms)
                rows.append({"shape": shape.name, "backend": backend.name, "dtype": dtype, "ms": ours.median_ms,
                             "cv": ours.cv, "reps": ours.reps, "do_bench_ms": theirs, "ratio": ratio,
                             "tflops": t, "pct_peak": 100 * t / peaks[dtype],
                             "agrees": AGREE[0] < ratio < AGREE[1]})
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    payload = {"device": ident.ran_on, "timing_label": ident.timing_label, "versions": versions(),
               "timer": bench_name, "peaks_tflops": peaks, "rows": rows, "skipped": skipped,
               "seconds": round(time.perf_counter() - start, 1)}
    args.json.write_text(json.dumps(payload, indent=1))
    lines = [f"### Our timer vs {bench_name}", "",
             f"device {ident.ran_on}; torch {torch.__version__}; matmul peak "
             + ", ".join(f"{d} {p:.4g} TFLOP/s" for d, p in peaks.items()), "",
             "| shape | backend | dtype | ours ms (cv) | do_bench ms | ours / do_bench | TFLOP/s | % of peak |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = "" if r["agrees"] else " **disagree**"
        lines.append(f"| {r['shape']} | {r['backend']} | {r['dtype']} | {r['ms']:.4g} ({r['cv']:.0%}) | "
                     f"{r['do_bench_ms']:.4g} | {r['ratio']:.3f}{mark} | {r['tflops']:.4g} | {r['pct_peak']:.1f} |")
    if skipped:
        lines += ["", f"{len(skipped)} not timed:"] + [f"- {s}" for s in skipped[:40]]
    args.markdown.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:6 + len(rows)]))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
