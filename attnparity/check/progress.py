"""Which case a cell is running right now, for a process that may die while running it.

A backend that aborts or segfaults takes its process with it, before any result can be returned.
An isolated worker (suite/isolation.py) sets a sink that writes each note to a file outside the
process, so the cell's failure can still name the case and its reproduce line. Outside a worker
there is no sink and a note costs one comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cases import AttnCase
from .parity import repro_line

CaseSink = Callable[[dict[str, Any]], None]

# One sink per process: the worker process runs one cell at a time and owns this module's state.
_sink: CaseSink | None = None


def set_case_sink(sink: CaseSink | None) -> None:
    """Send every later note to ``sink`` (None: stop noting)."""
    global _sink
    _sink = sink


def note_case(check: str, backend: str, case: AttnCase) -> None:
    """Say that ``backend`` is about to run ``case`` for ``check``."""
    if _sink is None:
        return
    _sink({"check": check, "backend": backend, "case": case.short(), "case_dict": case.as_dict(),
           "repro": repro_line(check, backend, case)})
