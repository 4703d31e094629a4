"""The pytest-xdist scheduler of an attnparity run under ``--dist load`` (what ``-n`` means unless
the user picks another mode): xdist's own load balancing for every item but the perf items, which
it holds back until every other item has run and the other workers have ended, then sends, all of
them, to one worker. So every perf cell is timed, under any ``-n``, on a machine as quiet as a
serial run's.

plugin.py answers ``pytest_xdist_make_scheduler`` with it; nothing else of xdist is replaced. What
LoadScheduling does on a crash still holds: a crashed worker's items go back to the pending ones and
a replacement worker (``--max-worker-restart``) takes them, perf items included.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from xdist.scheduler import LoadScheduling
from xdist.workermanage import WorkerController

from attnparity.suite.perf import is_perf_nodeid


class PerfLastScheduling(LoadScheduling):
    """LoadScheduling whose perf items stay in ``pending`` until the rest has run.

    A worker runs an item only once it knows the next one (or that it is to shut down), so the
    worker chosen to time holds its last item until the perf items arrive, and runs it just before
    them, already alone."""

    def __init__(self, config: pytest.Config, log: Any = None,
                 is_perf: Callable[[str], bool] = is_perf_nodeid) -> None:
        super().__init__(config, log)
        self._is_perf = is_perf
        self._perf: frozenset[int] | None = None
        #: the worker chosen to time the perf items, once only they are left to send
        self.timer: WorkerController | None = None
        #: workers that crashed holding items, whose replacements (DSession starts one unless
        #: --max-worker-restart is spent, and then it shuts every worker down) have not joined yet:
        #: a replacement starting up beside the timing would load the machine
        self.replacing = 0

    @property
    def perf_indices(self) -> frozenset[int]:
        """The collection's perf items, by index."""
        if self._perf is None:
            assert self.collection is not None, "scheduled before the collection was complete"
            self._perf = frozenset(i for i, nodeid in enumerate(self.collection) if self._is_perf(nodeid))
        return self._perf

    def _send_tests(self, node: WorkerController, num: int) -> None:
        # every send of LoadScheduling comes here: it sends other items only
        perf = self.perf_indices
        self._send(node, list(itertools.islice((i for i in self.pending if i not in perf), num)))

    def _send(self, node: WorkerController, indices: Sequence[int]) -> None:
        if not indices:
            return
        if self.pending[:len(indices)] == list(indices):
            del self.pending[:len(indices)]
        else:
            taken = set(indices)
            self.pending[:] = [i for i in self.pending if i not in taken]
        self.node2pending[node].extend(indices)
        node.send_runtest_some(list(indices))

    def add_node(self, node: WorkerController) -> None:
        super().add_node(node)
        self.replacing = max(0, self.replacing - 1)

    def schedule(self) -> None:
        super().schedule()
        self._perf_phase()

    def check_schedule(self, node: WorkerController, duration: float = 0) -> None:
        super().check_schedule(node, duration)
        self._perf_phase()

    def remove_node(self, node: WorkerController) -> str | None:
        if self.node2pending.get(node):  # it ended holding items: it crashed (before LoadScheduling reschedules them)
            self.replacing += 1
        if self.timer is node:
            self.timer = None
        crashitem = super().remove_node(node)
        self._perf_phase()
        return crashitem

    def _perf_phase(self) -> None:
        """Once only perf items are left to send: every worker but one is told to shut down (after
        the items it holds); once they have ended, the one left gets every perf item, after the
        items it holds, and is told to shut down too."""
        if self.collection is None or not self.pending:
            return
        perf = self.perf_indices
        if any(i not in perf for i in self.pending):
            return
        alive = [n for n in self.nodes if not n.shutting_down]
        if self.timer not in alive:
            # the one with the most left to run is likely the last to finish
            self.timer = max(alive, key=lambda n: len(self.node2pending[n]), default=None)
        if self.timer is None:
            return  # every worker is down: a replacement worker takes the perf items
        for other in alive:
            if other is not self.timer:
                other.shutdown()
        if len(self.nodes) > 1 or self.replacing:
            return  # another worker has not ended (or its replacement not joined) yet
        self._send(self.timer, list(self.pending))
        self.timer.shutdown()
