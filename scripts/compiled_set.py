"""Run the compiled op set in-process and print what compiling cost per row and per item (docs/compile.md).

    CI=1 python scripts/compiled_set.py [pytest args...]

defaults to ``--attn-backends='*+compile,flex' -m attn_op``; prints, per item, its outcome, wall
seconds and what it compiled (graphs, seconds in inductor, calls: ``compile_stats()`` before and
after it), then as JSON the whole run's wall and CPU time (this process and its reaped children,
i.e. inductor's compile workers), the load average at the start and the end, and ``compile_stats()``
per row.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

import pytest


class ItemCost:
    """A pytest plugin: compile_stats() around each item's call."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    @staticmethod
    def _totals() -> dict[str, tuple[int, float, int]]:
        from attnparity.backends.compiled import compile_stats

        return {name: (s.graphs, s.seconds, s.calls) for name, s in compile_stats().items()}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> Any:  # noqa: D102
        before, start = self._totals(), time.perf_counter()
        result = yield
        after, wall = self._totals(), time.perf_counter() - start
        delta = {name: tuple(round(a - b, 1) if isinstance(a, float) else a - b
                             for a, b in zip(after[name], before.get(name, (0, 0.0, 0))))
                 for name in after if after[name] != before.get(name)}
        self.rows.append({"item": item.nodeid.split("::")[-1], "wall_s": round(wall, 1),
                          "outcome": getattr(item, "_attn_outcome", None), "compiled": delta})
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: Any, call: Any) -> Any:  # noqa: D102
        report = yield
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            item._attn_outcome = "xfail" if hasattr(report, "wasxfail") else report.outcome
        return report


def main(argv: list[str]) -> int:
    import signal

    def interrupt(*_: object) -> None:  # `timeout` sends TERM: stop pytest cleanly and still print the stats
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    args = argv or ["--attn-backends=*+compile,flex", "-m", "attn_op", "-q", "-p", "no:cacheprovider"]
    load_start = open("/proc/loadavg").read().split()[:3]
    costs = ItemCost()
    wall = time.perf_counter()
    code = pytest.main(args, plugins=[costs])
    wall = time.perf_counter() - wall
    from attnparity.backends.compiled import compile_stats

    print(f"\n{'item':<44} {'outcome':<8} {'wall s':>7}  compiled (graphs, s in inductor, calls)")
    for row in costs.rows:
        compiled = "; ".join(f"{name} {g} / {s} s / {c}" for name, (g, s, c) in row["compiled"].items()) or "-"
        print(f"{row['item']:<44} {str(row['outcome']):<8} {row['wall_s']:>7}  {compiled}")
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "exit": int(code), "args": args, "wall_s": round(wall, 1),
        "cpu_s_self": round(own.ru_utime + own.ru_stime, 1), "cpu_s_children": round(kids.ru_utime + kids.ru_stime, 1),
        "loadavg_start": load_start, "loadavg_end": open("/proc/loadavg").read().split()[:3],
        "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
        "compile_stats": {name: vars(s) for name, s in compile_stats().items()},
    }, indent=1))
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
