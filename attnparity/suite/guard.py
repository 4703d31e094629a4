"""A time limit for one cell (``attn_timeout``): a hung backend fails its own cells, not the run.

A torch call cannot be interrupted from Python: there is no safe way to stop a thread stuck in a
kernel, and killing the process would lose every other cell. So the cell's work runs in a daemon
worker thread; the item waits ``seconds`` for it and, past that, fails with "timed out after N s"
while the thread is abandoned (it keeps running until it returns or the process exits). The
backend is then marked hung in this process: its later cells fail at once instead of each waiting
N s and piling up more stuck threads.

Limits, stated plainly: a call that holds the GIL while it hangs (a C extension spinning without
releasing it) blocks the waiting thread too, and no in-process timeout can help; use pytest-timeout's
``--timeout-method=signal`` or run under xdist, where only that worker is lost. On CUDA an abandoned
kernel may keep the stream busy, so later cells of other backends may time out as well. Under
xdist the hung mark is per worker process. An abandoned thread still running torch code when the
interpreter exits can crash the exit itself, so at the end of the session ``drain`` gives such
threads a short grace period and says how many are still running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class CellTimeout(Exception):
    """The cell ran past ``attn_timeout``; its worker thread was abandoned."""


class Guard:
    """One run's time limits: which backends hung, and the threads abandoned to them."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        #: backend name -> why it counts as hung (the node id where it timed out)
        self._hung: dict[str, str] = {}
        #: worker threads that ran past their limit and were left running
        self._abandoned: list[threading.Thread] = []

    def run(self, work: Callable[[], T], *, label: str) -> T:
        """``work()``; with a limit in a worker thread, raising CellTimeout past it.

        Exceptions of ``work`` (pytest's skip included) are re-raised here, in the caller's thread.
        """
        seconds = self.seconds
        if not seconds or seconds <= 0:
            return work()
        box: dict[str, object] = {}

        def target() -> None:
            try:
                box["result"] = work()
            except BaseException as exc:  # handed to the waiting thread, which re-raises it
                box["error"] = exc

        thread = threading.Thread(target=target, name=f"attnparity {label}", daemon=True)
        thread.start()
        thread.join(seconds)
        if thread.is_alive():
            self._abandoned.append(thread)
            raise CellTimeout(f"{label} timed out after {seconds:g} s (attn_timeout); its thread was abandoned "
                              "and is still running")
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["result"]  # type: ignore[return-value]

    def mark_hung(self, backend: str, where: str) -> None:
        self._hung.setdefault(backend, where)

    def hung_reason(self, backend: str | None) -> str | None:
        """Why ``backend``'s cells are not run any more in this process, or None."""
        if backend is None or backend not in self._hung:
            return None
        return (f"{backend} not run: it timed out in {self._hung[backend]} and that call is still running "
                "(attn_timeout); its remaining cells fail without being tried")

    def drain(self, grace_s: float) -> int:
        """Wait up to ``grace_s`` in all for abandoned threads to end; how many still run."""
        import time

        deadline = time.monotonic() + grace_s
        for thread in self._abandoned:
            thread.join(max(deadline - time.monotonic(), 0.0))
        self._abandoned[:] = [t for t in self._abandoned if t.is_alive()]
        return len(self._abandoned)
