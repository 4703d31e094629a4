"""A CPU load generator for the timing tests: spinning processes, bounded in count and in time
whatever the test does (each stops by itself after ``seconds``, and is killed on leaving)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

SPINNER = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def cpu_load(seconds: float, count: int | None = None) -> Iterator[list[subprocess.Popen]]:
    """``count`` spinners, each busy for at most ``seconds``.

    By default two per core this process may run on: with one per core, the timed thread makes one
    runnable thread more than there are cores, and the scheduler's slices let many single calls run
    whole; a CI run saw 2 spinners on 2 cores slow a 7 ms matmul by 2%. With two per core the timed
    thread gets at most a third of a core, which no choice of statistic hides."""
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(count or 2 * len(os.sched_getaffinity(0))):
            procs.append(subprocess.Popen([sys.executable, "-c", SPINNER.format(s=seconds)]))
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()
