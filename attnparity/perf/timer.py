"""Timing attention backends: CUDA events with warm-up and an L2 flush, or perf_counter on CPU.

Nothing here knows pytest. The suite (suite/perf.py) calls ``time_many`` per backend × dtype × shape
and turns the ``Timing`` into a record; the formulas live in flops.py, the device's matmul peak in
peak.py.

How a figure is taken (``time_many`` times a backend together with its references):

* CUDA (the method of ``triton.testing.do_bench``, which a self-test compares us with): one untimed
  first call per function (lazy init; torch.compile / flex compilation happen here, never in a timed
  run), a 5-call estimate, warm-up calls for ``warmup_ms``, then rounds sized to ``rep_ms`` per
  function (at least ``min_reps``). Before each run a buffer larger than L2 is overwritten, so no
  run finds its inputs in cache left by the previous one; a CUDA event pair brackets only the call
  itself (events are stream-ordered, so the flush kernel is outside the window). One synchronize
  at the end, then the per-run elapsed times.
* CPU: the same first call and warm-up, then ``time.perf_counter`` around each call (CPU kernels are
  synchronous). The label states the torch thread count, since that is what the figure depends on.
* Several functions (a backend and the rows its speed-ups are relative to) are timed interleaved,
  round by round in rotating order, so load elsewhere on a shared machine hits them alike and the
  ratios stay meaningful even when the absolute times do not.

The figure is the median of the runs; the coefficient of variation (sample standard deviation /
mean) says how noisy they were.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from attnparity.machine import identify


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("no timings")
    return float(statistics.median(values))


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Sample standard deviation / mean (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    mean = statistics.fmean(values)
    return float(statistics.stdev(values) / mean) if mean > 0 else 0.0


# -- timings ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """The runs of one timed function, in milliseconds."""

    times_ms: tuple[float, ...]
    #: What the figure was taken on: the GPU's name, or "CPU (N torch threads)".
    device_label: str
    #: How: "CUDA events, L2 flushed (… MiB) between runs" or "perf_counter".
    method: str
    #: The untimed first call (lazy init, compilation): reported, never part of the median.
    first_call_ms: float
    warmup_runs: int

    @property
    def median_ms(self) -> float:
        return median(self.times_ms)

    @property
    def cv(self) -> float:
        return coefficient_of_variation(self.times_ms)

    @property
    def reps(self) -> int:
        return len(self.times_ms)


@dataclass(frozen=True)
class TimerSettings:
    """How long to warm up and how many runs to time (a time budget, bounded by rep counts)."""

    warmup_ms: float
    rep_ms: float
    min_reps: int
    max_reps: int


def ratio_cv(timing: Timing, reference: Timing) -> float:
    """The cv of the round-by-round ratios ``timing`` / ``reference`` (runs of the same rounds of
    time_many): load that changes between rounds cancels in them, so this is the noise of the
    relative time, which the perf gate allows for."""
    if len(timing.times_ms) != len(reference.times_ms):
        raise ValueError(f"{len(timing.times_ms)} runs against {len(reference.times_ms)}: not from the same rounds")
    return coefficient_of_variation([t / r for t, r in zip(timing.times_ms, reference.times_ms) if r > 0])


#: CUDA presets follow do_bench's defaults (25 ms warm-up, 100 ms of runs); CPU ones keep a quick
#: run of the whole perf set within a minute or two on a small machine.
SETTINGS = {
    ("cuda", "quick"): TimerSettings(warmup_ms=25, rep_ms=100, min_reps=10, max_reps=1000),
    ("cuda", "full"): TimerSettings(warmup_ms=50, rep_ms=300, min_reps=20, max_reps=2000),
    ("cpu", "quick"): TimerSettings(warmup_ms=0, rep_ms=100, min_reps=3, max_reps=100),
    ("cpu", "full"): TimerSettings(warmup_ms=100, rep_ms=1000, min_reps=5, max_reps=500),
}


def settings_for(device: str, mode: str) -> TimerSettings:
    return SETTINGS[("cuda" if device.startswith("cuda") else "cpu", mode)]



def time_fn(fn: Callable[[], Any], device: str, settings: TimerSettings) -> Timing:
    """Time ``fn()`` on ``device`` (CUDA events there, perf_counter on CPU)."""
    result = time_many({"fn": fn}, device, settings)["fn"]
    if isinstance(result, BaseException):
        raise result
    return result


def time_many(fns: Mapping[str, Callable[[], Any]], device: str, settings: TimerSettings, *,
              tolerate: tuple[type[BaseException], ...] = (), warm: Collection[str] = ()
              ) -> dict[str, "Timing | BaseException"]:
    """Time several functions on the same inputs, interleaved run by run.

    Interleaving is what makes the speed-up ratios trustworthy on a shared or throttling device:
    every function is timed in the same rounds, so a burst of load elsewhere slows them all alike
    instead of whichever happened to run then. The order rotates each round so no function always
    follows the same one. A function whose first call raises one of ``tolerate`` is left out and
    its exception returned in its place (a backend refusing a shape).

    ``warm``: functions this process has already called on inputs of this shape and dtype (a
    reference timed in an earlier item). What their untimed first call is for (lazy init,
    compilation, a refusal) has happened, so they skip it (first_call_ms 0); the warm-up before
    the timed runs stays, for them as for the others.
    """
    if device.startswith("cuda"):
        return time_many_cuda(fns, device=device, settings=settings, tolerate=tolerate, warm=warm)
    if device != "cpu":
        raise ValueError(f"perf timing supports cpu and cuda devices, not {device!r}")
    return time_many_cpu(fns, settings=settings, tolerate=tolerate, warm=warm)


def _first_calls(fns: Mapping[str, Callable[[], Any]], sync: Callable[[], None],
                 tolerate: tuple[type[BaseException], ...], warm: Collection[str] = ()
                 ) -> tuple[dict[str, float], dict[str, BaseException]]:
    """The untimed first call of each function (lazy init, compilation), its wall time, and refusals;
    0 for the ``warm`` ones, which skip it (time_many)."""
    first_ms: dict[str, float] = {}
    refused: dict[str, BaseException] = {}
    for name, fn in fns.items():
        if name in warm:
            first_ms[name] = 0.0
            continue
        sync()
        t0 = time.perf_counter()
        try:
            fn()
            sync()
        except tolerate as exc:
            refused[name] = exc
            continue
        first_ms[name] = (time.perf_counter() - t0) * 1e3
    return first_ms, refused


def _rotated(names: Sequence[str], round_no: int) -> list[str]:
    shift = round_no % len(names)
    return list(names[shift:]) + list(names[:shift])


def time_cpu(fn: Callable[[], Any], *, settings: TimerSettings) -> Timing:
    result = time_many_cpu({"fn": fn}, settings=settings)["fn"]
    assert isinstance(result, Timing)
    return result


def time_many_cpu(fns: Mapping[str, Callable[[], Any]], *, settings: TimerSettings,
                  tolerate: tuple[type[BaseException], ...] = (), warm: Collection[str] = ()
                  ) -> dict[str, "Timing | BaseException"]:
    first_ms, refused = _first_calls(fns, lambda: None, tolerate, warm)
    names = list(first_ms)
    times: dict[str, list[float]] = {n: [] for n in names}
    warmups = 0
    if names:
        deadline = time.perf_counter() + settings.warmup_ms / 1e3
        while warmups < 1 or time.perf_counter() < deadline:
            for name in names:
                fns[name]()
            warmups += 1
        # The budget is per function: n functions get n times the time, in the same rounds.
        deadline = time.perf_counter() + len(names) * settings.rep_ms / 1e3
        rounds = 0
        while rounds < settings.max_reps and (rounds < settings.min_reps or time.perf_counter() < deadline):
            for name in _rotated(names, rounds):
                t0 = time.perf_counter()
                fns[name]()
                times[name].append((time.perf_counter() - t0) * 1e3)
            rounds += 1
    label = identify("cpu").timing_label
    out: dict[str, Timing | BaseException] = dict(refused)
    for name in names:
        out[name] = Timing(tuple(times[name]), label, "perf_counter", first_ms[name], warmups)
    return out


#: do_bench overwrites 256 MB; we take at least that and at least twice the reported L2.
_MIN_FLUSH_BYTES = 256 * 1024 * 1024
_flush_buffers: dict[str, Any] = {}


def l2_flush_buffer(device: str) -> Any:
    """An int8 buffer at least twice this GPU's L2 (and >= 256 MiB); writing it evicts L2."""
    import torch

    if device not in _flush_buffers:
        l2 = int(getattr(torch.cuda.get_device_properties(torch.device(device)), "L2_cache_size", 0) or 0)
        _flush_buffers[device] = torch.empty(max(2 * l2, _MIN_FLUSH_BYTES), dtype=torch.int8, device=device)
    return _flush_buffers[device]


def time_cuda(fn: Callable[[], Any], *, device: str = "cuda", settings: TimerSettings, flush: bool = True) -> Timing:
    result = time_many_cuda({"fn": fn}, device=device, settings=settings, flush=flush)["fn"]
    assert isinstance(result, Timing)
    return result


def time_many_cuda(fns: Mapping[str, Callable[[], Any]], *, device: str = "cuda", settings: TimerSettings,
                   flush: bool = True, tolerate: tuple[type[BaseException], ...] = (),
                   warm: Collection[str] = ()) -> dict[str, "Timing | BaseException"]:
    import torch

    dev = torch.device(device)
    with torch.cuda.device(dev):
        cache = l2_flush_buffer(device) if flush else None

        def clear() -> None:
            if cache is not None:
                cache.zero_()  # evict L2 so every run reads its inputs from HBM, as in a real model

        # First calls: lazy init, flex / torch.compile compilation happen here, never in a timed run.
        first_ms, refused = _first_calls(fns, torch.cuda.synchronize, tolerate, warm)
        names = list(first_ms)
        out: dict[str, Timing | BaseException] = dict(refused)
        if not names:
            return out

        # Estimate one run of each (flush included, as do_bench does) to size warm-up and rounds.
        estimate: dict[str, float] = {}
        for name in names:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(5):
                clear()
                fns[name]()
            end.record()
            torch.cuda.synchronize()
            estimate[name] = max(start.elapsed_time(end) / 5, 1e-3)
        round_ms = sum(estimate.values())
        warmups = max(1, int(settings.warmup_ms / round_ms))
        rounds = min(settings.max_reps, max(settings.min_reps, int(len(names) * settings.rep_ms / round_ms)))

        for _ in range(warmups):
            for name in names:
                fns[name]()
        starts = {n: [torch.cuda.Event(enable_timing=True) for _ in range(rounds)] for n in names}
        ends = {n: [torch.cuda.Event(enable_timing=True) for _ in range(rounds)] for n in names}
        for r in range(rounds):
            for name in _rotated(names, r):
                clear()  # stream-ordered before the start event: the flush is outside the window
                starts[name][r].record()
                fns[name]()
                ends[name][r].record()
        torch.cuda.synchronize()  # every event has completed before any elapsed time is read
        label = identify(device).timing_label
        method = "CUDA events" + (f", L2 flushed ({cache.numel() >> 20} MiB written) before each run"
                                  if cache is not None else ", no L2 flush")
        for name in names:
            times = tuple(s.elapsed_time(e) for s, e in zip(starts[name], ends[name]))
            out[name] = Timing(times, label, method, first_ms[name], warmups)
    return out


def cpu_contention() -> str | None:
    """A note when other processes keep this machine's CPUs busy (1-minute load average above the
    CPU count): CPU timings then wander, and only ratios of interleaved runs mean much."""
    import os

    try:
        load = os.getloadavg()[0]
    except OSError:  # not on every platform
        return None
    cpus = os.cpu_count() or 1
    if load <= cpus:
        return None
    return (f"CPU busy: load average {load:.1f} on {cpus} CPUs while timing; absolute times are unreliable, "
            "speed-ups come from interleaved runs")


# -- what else ran beside a timing ----------------------------------------------------------------
@dataclass(frozen=True)
class CpuUsage:
    """A reading to measure other processes' CPU use from (``OthersCpu``), in seconds of CPU."""

    #: all CPUs' time (idle included) and their non-idle part, from /proc/stat
    total_s: float
    busy_s: float
    #: this process's CPU time, every thread, plus its reaped children's (os.times)
    own_s: float


def cpu_usage(stat: str = "/proc/stat") -> CpuUsage | None:
    """The machine's CPU time so far and this process's share of it; None where ``stat`` is
    missing or unreadable (not Linux)."""
    import os

    try:
        with open(stat, encoding="ascii") as f:
            first = f.readline().split()
        ticks = [int(x) for x in first[1:9]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    if first[:1] != ["cpu"] or len(ticks) < 8 or hz <= 0:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = ticks
    # guest time is already inside user and nice; steal is CPU a hypervisor gave to other machines,
    # which is other work slowing ours as much as a process here
    busy = user + nice + system + irq + softirq + steal
    own = os.times()
    return CpuUsage((busy + idle + iowait) / hz, busy / hz,
                    own.user + own.system + own.children_user + own.children_system)


def others_cpu_between(start: CpuUsage | None, end: CpuUsage | None) -> float | None:
    """The share of the machine's CPU (0..1, 1 = every CPU busy) that processes other than this
    one used between two readings: the non-idle time of all CPUs minus this process's, over all
    CPUs' time. None without both readings or when no time passed. Both clocks tick at 1/CLK_TCK s,
    so a window of a few ticks per CPU is coarse; perf items time for a tenth of a second and more."""
    if start is None or end is None:
        return None
    total = end.total_s - start.total_s
    if total <= 0:
        return None
    others = (end.busy_s - start.busy_s) - (end.own_s - start.own_s)
    return min(max(others / total, 0.0), 1.0)


class OthersCpu:
    """``with OthersCpu() as others: <timing>``, then ``others.share``: what ``others_cpu_between``
    says of the block (None where it cannot be measured). Unlike the load average (cpu_contention),
    a minute's mean that also counts this process, it covers exactly the timing and only others."""

    share: float | None = None
    _start: CpuUsage | None = None

    def __enter__(self) -> "OthersCpu":
        self._start = cpu_usage()
        return self

    def __exit__(self, *exc: object) -> None:
        self.share = others_cpu_between(self._start, cpu_usage())
