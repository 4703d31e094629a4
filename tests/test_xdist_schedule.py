"""The pytest-xdist scheduler (attnparity/scheduling.py), driven by a simulated DSession: perf items
run after every other item, on one worker, once the others have ended, whatever the number of
workers, the order their items finish in, or a worker that crashes and is replaced."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st

pytest.importorskip("xdist")

from attnparity.scheduling import PerfLastScheduling  # noqa: E402
from attnparity.suite.perf import is_perf_nodeid  # noqa: E402
from xdist.remote import Producer  # noqa: E402

QUIET = Producer("sched", enabled=False)


class FakeNode:
    """A worker as xdist's WorkerController shows it to a scheduler, and what the worker does: it
    runs an item only once it has the next one, or has been told to shut down."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.queue: list[int] = []
        self.told_to_stop = False
        self.crashed = False

    @property
    def shutting_down(self) -> bool:
        return self.told_to_stop or self.crashed

    def shutdown(self) -> None:
        self.told_to_stop = True

    def send_runtest_some(self, indices: list[int]) -> None:
        assert not self.told_to_stop, f"{self.gateway.id}: items sent after shutdown are never run"
        self.queue.extend(indices)

    @property
    def can_run(self) -> bool:
        return len(self.queue) >= 2 or (self.told_to_stop and len(self.queue) == 1)

    @property
    def ended(self) -> bool:
        return self.told_to_stop and not self.queue


def config(workers: int) -> SimpleNamespace:
    options = {"tx": [f"{workers}*popen"], "maxschedchunk": None}
    return SimpleNamespace(getvalue=options.__getitem__, getoption=options.__getitem__)


def collection(ops: int, perf: int) -> list[str]:
    """Op items, then perf items, as the suite collects them."""
    return ([f"attnparity::forward[b{i}-fp32]" for i in range(ops)]
            + [f"attnparity::perf:sd15-self-{i}[b{i}-fp32]" for i in range(perf)])


def start(sched: PerfLastScheduling, node: FakeNode, items: list[str]) -> None:
    sched.add_node(node)
    sched.add_node_collection(node, items)


def drive(workers: int, items: list[str], pick, crash_at: int | None = None):
    """Run the collection; ``pick(n)`` chooses which of n possible events happens next. Returns the
    run log: (worker, index, workers still in the scheduler) per item, in the order they ran."""
    sched = PerfLastScheduling(config(workers), QUIET, is_perf=is_perf_nodeid)
    nodes = [FakeNode(f"gw{i}") for i in range(workers)]
    for node in nodes:
        start(sched, node, items)
    sched.schedule()
    log: list[tuple[str, int, int]] = []
    restarted = 0
    for step in range(10 * len(items) + 20):
        events = [n for n in nodes if n.can_run or n.ended]
        if not events:
            break
        node = events[pick(len(events))]
        if step == crash_at and node.queue:  # the worker dies running its item; a replacement starts
            node.crashed = True
            crashitem = sched.remove_node(node)
            log.append((node.gateway.id, items.index(crashitem), -1))
            nodes.remove(node)
            restarted += 1
            nodes.append(FakeNode(f"gw{workers + restarted}"))
            start(sched, nodes[-1], items)
            sched.schedule()
        elif node.ended:
            assert sched.remove_node(node) is None
            nodes.remove(node)
        else:
            index = node.queue.pop(0)
            log.append((node.gateway.id, index, len(sched.nodes)))
            sched.mark_test_complete(node, index, 0.01)
        if sched.tests_finished:  # what DSession.loop_once does
            for n in sched.nodes:
                n.shutdown()
    assert not nodes, f"deadlock: {[(n.gateway.id, n.queue, n.told_to_stop) for n in nodes]} left"
    return log


def check_log(items: list[str], log: list[tuple[str, int, int]]) -> None:
    ran = sorted(index for _, index, _ in log)
    assert ran == list(range(len(items))), "every item runs exactly once"
    perf = [i for i, (_, index, _) in enumerate(log) if is_perf_nodeid(items[index])]
    others = [i for i, (_, index, _) in enumerate(log) if not is_perf_nodeid(items[index])]
    if perf and others:
        assert min(perf) > max(others), "a perf item ran before another item had finished"
    # while a perf item runs, its worker is the only one left (crashes aside, marked -1)
    assert all(log[i][2] == 1 for i in perf if log[i][2] != -1)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(workers=st.integers(1, 4), ops=st.integers(0, 25), perf=st.integers(0, 8), data=st.data())
def test_perf_items_run_last_alone_on_one_worker(workers: int, ops: int, perf: int, data: st.DataObject) -> None:
    items = collection(ops, perf)
    if not items:
        return
    log = drive(workers, items, lambda n: data.draw(st.integers(0, n - 1)))
    check_log(items, log)
    assert len({worker for worker, index, _ in log if is_perf_nodeid(items[index])}) <= 1


@settings(max_examples=150, deadline=None, derandomize=True)
@given(workers=st.integers(1, 3), ops=st.integers(1, 15), perf=st.integers(1, 6), crash_at=st.integers(0, 40),
       data=st.data())
def test_a_crashed_worker_is_replaced_and_every_item_still_runs(workers: int, ops: int, perf: int, crash_at: int,
                                                                data: st.DataObject) -> None:
    items = collection(ops, perf)
    log = drive(workers, items, lambda n: data.draw(st.integers(0, n - 1)), crash_at=crash_at)
    check_log(items, log)


def test_perf_items_first_in_the_collection_still_run_last() -> None:
    items = collection(0, 3) + collection(6, 0)
    log = drive(2, items, lambda n: 0)
    check_log(items, log)
    assert [is_perf_nodeid(items[index]) for _, index, _ in log] == [False] * 6 + [True] * 3


def test_plain_load_scheduling_would_time_perf_items_beside_other_items() -> None:
    """The simulation can fail: xdist's LoadScheduling sends perf items while others still run."""
    from xdist.scheduler import LoadScheduling

    items = collection(12, 6)
    sched = LoadScheduling(config(2), QUIET)
    nodes = [FakeNode("gw0"), FakeNode("gw1")]
    for node in nodes:
        start(sched, node, items)
    sched.schedule()
    sent_perf_early = False
    while any(n.can_run for n in nodes):
        node = next(n for n in nodes if n.can_run)
        index = node.queue.pop(0)
        sched.mark_test_complete(node, index, 0.01)
        others_left = any(not is_perf_nodeid(items[i]) for n in nodes for i in n.queue) or any(
            not is_perf_nodeid(items[i]) for i in sched.pending)
        sent_perf_early |= others_left and any(is_perf_nodeid(items[i]) for n in nodes for i in n.queue)
    assert sent_perf_early
    with pytest.raises(AssertionError, match="perf item ran before"):
        check_log(items, [("gw0", 13, 2), ("gw1", 0, 2)] + [("gw0", i, 1) for i in range(1, 12)]
                  + [("gw0", i, 1) for i in range(12, 18) if i != 13])


def test_perf_nodeids() -> None:
    assert is_perf_nodeid("attnparity::perf:sd15-self-1024[naive-fp32]")
    assert is_perf_nodeid("attnparity::perf-pipeline:pixart[sdpa-bf16]")
    assert not is_perf_nodeid("attnparity::forward[naive-fp32]")
    assert not is_perf_nodeid("tests/test_perf_suite.py::test_perf_items_selected_by_marker_and_record_metrics")
