"""Run the compiled op set in-process and print what compiling cost per row (docs/compile.md).

    CI=1 python scripts/compiled_set.py [pytest args...]

defaults to ``--attn-backends='*+compile,flex' -m attn_op``; prints wall and CPU time (this process
and its reaped children, i.e. inductor's compile workers) and ``compile_stats()`` per row as JSON.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def main(argv: list[str]) -> int:
    import signal

    import pytest

    def interrupt(*_: object) -> None:  # `timeout` sends TERM: stop pytest cleanly and still print the stats
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    args = argv or ["--attn-backends=*+compile,flex", "-m", "attn_op", "-q", "-p", "no:cacheprovider"]
    wall = time.perf_counter()
    code = pytest.main(args)
    wall = time.perf_counter() - wall
    from attnparity.backends.compiled import compile_stats

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "exit": int(code), "args": args, "wall_s": round(wall, 1),
        "cpu_s_self": round(own.ru_utime + own.ru_stime, 1), "cpu_s_children": round(kids.ru_utime + kids.ru_stime, 1),
        "loadavg_end": open("/proc/loadavg").read().split()[:3], "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
        "compile_stats": {name: vars(s) for name, s in compile_stats().items()},
    }, indent=1))
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
