"""The timer's arithmetic and units (CPU): FLOPs, TFLOP/s, median / CV, ms not s, interleaving."""

from __future__ import annotations

import time

import numpy as np
import pytest

from attnparity.perf import flops, peak
from attnparity.perf import timer as perf
from attnparity.report import markdown
from attnparity.backends.base import Unsupported

FAST = perf.TimerSettings(warmup_ms=0, rep_ms=30, min_reps=5, max_reps=50)


def test_attention_flops_equal_torch_flop_counter_of_the_two_matmuls():
    # torch's own FlopCounterMode counts the bmm of naive attention math: an independent count.
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from attnparity.backends.naive import naive_attention

    b, h, sq, skv, d = 2, 3, 17, 29, 8
    q, k, v = torch.randn(b, h, sq, d), torch.randn(b, h, skv, d), torch.randn(b, h, skv, d)
    with FlopCounterMode(display=False) as counter:
        naive_attention(q, k, v)
    assert flops.attention_flops(b, h, sq, skv, d) == counter.get_total_flops()


def test_causal_attention_counts_half():
    full = flops.attention_flops(2, 8, 4096, 4096, 40)
    assert flops.attention_flops(2, 8, 4096, 4096, 40, causal=True) == full / 2
    assert full == 4 * 2 * 8 * 4096 * 4096 * 40


def test_tflops_units():
    assert flops.tflops(1e12, 1000.0) == pytest.approx(1.0)  # 1 TFLOP in 1 s
    assert flops.tflops(3e12, 500.0) == pytest.approx(6.0)
    with pytest.raises(ValueError):
        flops.tflops(1e12, 0.0)
    assert flops.speedup(30.0, 10.0) == pytest.approx(3.0)


def test_median_and_cv_match_numpy():
    values = [4.0, 1.0, 2.0, 8.0, 2.5]
    assert perf.median(values) == np.median(values)
    assert perf.coefficient_of_variation(values) == pytest.approx(np.std(values, ddof=1) / np.mean(values))
    assert perf.coefficient_of_variation([5.0, 5.0, 5.0]) == 0.0
    assert perf.coefficient_of_variation([5.0]) == 0.0
    with pytest.raises(ValueError):
        perf.median([])


def test_cpu_timer_reports_milliseconds():
    timing = perf.time_cpu(lambda: time.sleep(0.005), settings=FAST)
    # A 5 ms sleep: never less than 5, and far from 0.005 (seconds) or 5000 (microseconds).
    assert 4.9 <= timing.median_ms < 50
    assert timing.reps >= FAST.min_reps
    assert timing.first_call_ms >= 4.9
    assert timing.device_label.startswith("CPU (") and "torch thread" in timing.device_label


def test_cpu_timer_matmul_tflops_consistent_with_wall_clock():
    import torch

    n = 512
    a, b = torch.randn(n, n), torch.randn(n, n)
    t0 = time.perf_counter()
    timing = perf.time_cpu(lambda: a @ b, settings=FAST)
    wall_ms = (time.perf_counter() - t0) * 1e3
    # The timed runs happened inside this wall-clock interval, besides one first call and one warm-up
    # call: together they fill most of it and never exceed it. Load elsewhere stretches both alike;
    # a units slip (s or us for ms) lands 1000x out of these bounds.
    timed = sum(timing.times_ms) + timing.first_call_ms
    assert timed <= wall_ms
    assert timed >= 0.1 * wall_ms
    rate = flops.tflops(2 * n ** 3, timing.median_ms)
    assert rate == pytest.approx(2 * n ** 3 / (timing.median_ms / 1e3) / 1e12)
    assert 1e-5 < rate < 50  # any CPU


def test_time_many_interleaves_and_rotates():
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    settings = perf.TimerSettings(warmup_ms=0, rep_ms=0, min_reps=3, max_reps=3)
    result = perf.time_many(fns, "cpu", settings)
    assert {n: result[n].reps for n in "abc"} == {"a": 3, "b": 3, "c": 3}
    timed_calls = calls[6:]  # 3 first calls, 3 in the warm-up round
    assert timed_calls == list("abc") + list("bca") + list("cab")


def test_warm_functions_skip_only_their_first_call():
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    settings = perf.TimerSettings(warmup_ms=0, rep_ms=0, min_reps=3, max_reps=3)
    result = perf.time_many(fns, "cpu", settings, warm={"b", "c"})
    assert calls[:4] == ["a", "a", "b", "c"]  # a's first call, then the warm-up round of all three
    assert calls[4:] == list("abc") + list("bca") + list("cab")
    assert result["b"].first_call_ms == 0.0 and result["a"].first_call_ms > 0.0


def test_a_reference_is_warm_from_its_second_item_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """suite/perf.py: the references' first call is paid once per case in a process, never the
    backend's own (its first_call_ms is reported: compilation shows there)."""
    from types import SimpleNamespace

    from attnparity.backends.registry import get_backend
    from attnparity.perf.shapes import quick_cpu
    from attnparity.suite import perf as suite_perf

    seen: list[set[str]] = []

    def recording(fns, device, settings, *, tolerate=(), warm=()):
        seen.append(set(warm))
        return {name: perf.Timing((1.0,), "CPU", "perf_counter", 1.0, 1) for name in fns}

    monkeypatch.setattr(perf, "time_many", recording)
    backends = [get_backend(n) for n in ("naive", "sdpa-math", "sdpa-flash")]
    ctx = SimpleNamespace(backends=backends, unavailable=lambda b: None, perf_warm=set())
    case = quick_cpu()[0].case("fp32", "cpu")
    for backend in backends:
        suite_perf.time_with_references(ctx, backend, case, FAST)
    # naive's own item warms both (naive timed as the backend); then sdpa-math's own first call runs
    assert seen == [set(), {"naive"}, {"naive", "sdpa-math"}]
    suite_perf.time_with_references(ctx, backends[0], quick_cpu()[1].case("fp32", "cpu"), FAST)
    assert seen[-1] == set()  # another case: cold again


def test_time_many_leaves_out_a_refusing_function():
    def refuses():
        raise Unsupported("not this shape")

    result = perf.time_many({"ok": lambda: None, "no": refuses}, "cpu", FAST, tolerate=(Unsupported,))
    assert isinstance(result["no"], Unsupported)
    assert isinstance(result["ok"], perf.Timing)
    with pytest.raises(ZeroDivisionError):  # anything not tolerated propagates
        perf.time_many({"bad": lambda: 1 / 0}, "cpu", FAST, tolerate=(Unsupported,))


def test_interleaved_ratio_recovers_a_known_speedup():
    # 4x by construction; wake-up latency on a busy machine adds the same few ms to both
    result = perf.time_many({"fast": lambda: time.sleep(0.005), "slow": lambda: time.sleep(0.020)}, "cpu", FAST)
    ratio = flops.speedup(result["slow"].median_ms, result["fast"].median_ms)
    assert 1.8 < ratio < 5


def test_matmul_peak_is_cached_per_dtype():
    settings = perf.TimerSettings(warmup_ms=0, rep_ms=10, min_reps=2, max_reps=5)
    first = peak.matmul_peak("cpu", "fp32", settings)
    assert peak.matmul_peak("cpu", "fp32", settings) is first
    assert first.tflops == pytest.approx(flops.tflops(2 * first.n ** 3, min(first.timing.times_ms)))


def test_matmul_peak_takes_three_runs_only_of_a_matmul_of_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    class Matrix:
        def __init__(self, seconds: float, kind: str = "cpu") -> None:
            self.seconds, self.device = seconds, SimpleNamespace(type=kind)

        def __matmul__(self, other: "Matrix") -> "Matrix":
            time.sleep(self.seconds)
            return self

    monkeypatch.setattr(peak, "LONG_MS", 30.0)
    assert peak._min_runs(Matrix(0.0), Matrix(0.0)) == 10
    assert peak._min_runs(Matrix(0.04), Matrix(0.04)) == 3
    assert peak._min_runs(Matrix(0.04, "cuda"), Matrix(0.04, "cuda")) == 10  # not timed by the clock there


def test_table_rows_show_metrics_and_skips():
    records = [
        {"kind": "perf", "check": "perf:x", "backend": "b", "dtype": "fp32", "verdict": "pass",
         "metrics": {"ms": 2.0, "ms_cv": 0.05, "tflops": 1.5, "pct_peak": 30.0, "speedup_math": 3.0}},
        {"kind": "perf", "check": "perf:x", "backend": "c", "dtype": "fp32", "verdict": "skip", "metrics": {},
         "message": "needs CUDA"},
        {"kind": "op", "check": "forward", "backend": "b", "dtype": "fp32", "verdict": "pass", "metrics": {}},
    ]
    rows = markdown.table_rows(records)
    assert rows[0] == ("x", "b", "fp32", "2", "5%", "1.5", "30", "3.00", "–")
    assert rows[1][3] == "skip: needs CUDA"
    assert len(rows) == 2
    assert markdown.markdown_table(records).count("\n") == 3


class FakeCuda:
    """Stands in for torch.cuda on a CPU machine so the CUDA timer's control flow runs here: events
    stamp the wall clock when recorded (our fns are synchronous), and reading one before a
    synchronize is an error, as it would give garbage on a real GPU."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.synced_since_record = True

    def install(self, monkeypatch: pytest.MonkeyPatch, flush_buffer) -> None:
        import contextlib

        import torch

        fake = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                assert enable_timing
                self.t: float | None = None

            def record(self) -> None:
                fake.synced_since_record = False
                fake.log.append("record")
                self.t = time.perf_counter()

            def elapsed_time(self, other: "Event") -> float:
                assert fake.synced_since_record, "elapsed_time read before torch.cuda.synchronize()"
                return (other.t - self.t) * 1e3

        def synchronize(device=None) -> None:
            fake.synced_since_record = True
            fake.log.append("sync")

        monkeypatch.setattr(torch.cuda, "Event", Event)
        monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
        monkeypatch.setattr(torch.cuda, "device", lambda dev: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "Fake GPU")
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: (9, 0))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(perf, "l2_flush_buffer", lambda device: flush_buffer)


def test_cuda_timer_control_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    fake = FakeCuda()

    class FlushBuffer:
        def numel(self) -> int:
            return 256 << 20

        def zero_(self) -> None:
            fake.log.append("flush")

    fake.install(monkeypatch, FlushBuffer())

    def fn() -> None:
        fake.log.append("fn")
        time.sleep(0.003)

    settings = perf.TimerSettings(warmup_ms=10, rep_ms=40, min_reps=4, max_reps=50)
    timing = perf.time_cuda(fn, device="cuda", settings=settings)
    assert timing.device_label == "Fake GPU" and "L2 flushed" in timing.method
    assert 2.9 <= timing.median_ms < 30  # ms, and the flush is outside the window
    assert settings.min_reps <= timing.reps <= settings.max_reps
    # every timed run: flush, start event, the call, end event
    timed = fake.log[-(4 * timing.reps + 1):]
    assert timed[-1] == "sync"
    assert timed[:-1] == ["flush", "record", "fn", "record"] * timing.reps
    assert torch.cuda.get_device_name() == "Fake GPU"


def test_cuda_timer_interleaves_several_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCuda()

    class FlushBuffer:
        def numel(self) -> int:
            return 1

        def zero_(self) -> None:
            pass

    fake.install(monkeypatch, FlushBuffer())
    settings = perf.TimerSettings(warmup_ms=0, rep_ms=20, min_reps=3, max_reps=20)
    result = perf.time_many({"fast": lambda: time.sleep(0.002), "slow": lambda: time.sleep(0.010),
                             "no": lambda: (_ for _ in ()).throw(Unsupported("no"))}, "cuda", settings,
                            tolerate=(Unsupported,))
    assert isinstance(result["no"], Unsupported)
    assert result["fast"].reps == result["slow"].reps >= 3
    assert 1.3 < flops.speedup(result["slow"].median_ms, result["fast"].median_ms) < 7


# -- others_cpu: the share of the CPU other processes used beside a timing ------------------------
def test_others_cpu_is_the_machines_busy_time_less_our_own() -> None:
    start = perf.CpuUsage(total_s=100.0, busy_s=10.0, own_s=5.0)
    # 2 s of machine time (two CPUs for a second): 1.5 s busy, 1 s of it ours -> others 0.5 s = 25 %
    assert perf.others_cpu_between(start, perf.CpuUsage(102.0, 11.5, 6.0)) == pytest.approx(0.25)
    # our own time read a tick above the machine's (two clocks): never below 0
    assert perf.others_cpu_between(start, perf.CpuUsage(102.0, 11.0, 6.02)) == 0.0
    assert perf.others_cpu_between(start, perf.CpuUsage(100.0, 10.0, 5.0)) is None  # no time passed
    assert perf.others_cpu_between(None, start) is None and perf.others_cpu_between(start, None) is None


def test_without_proc_stat_there_is_no_measure_and_no_crash(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert perf.cpu_usage(str(tmp_path / "missing")) is None
    (tmp_path / "junk").write_text("intr 1 2 3\n")
    assert perf.cpu_usage(str(tmp_path / "junk")) is None
    (tmp_path / "stat").write_text("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 100 0 50 800 50 0 0 0 0 0\n")
    hz = __import__("os").sysconf("SC_CLK_TCK")
    reading = perf.cpu_usage(str(tmp_path / "stat"))
    assert reading is not None and (reading.total_s, reading.busy_s) == pytest.approx((1000 / hz, 150 / hz))
    monkeypatch.setattr(perf, "cpu_usage", lambda stat="/proc/stat": None)
    with perf.OthersCpu() as others:
        pass
    assert others.share is None


def _process_cpu_s(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (an account independent of /proc/stat's)."""
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_others_cpu_sees_a_busy_neighbour() -> None:
    import os

    from cpuload import cpu_load

    if perf.cpu_usage() is None:
        pytest.skip("no /proc/stat here")
    cpus = os.cpu_count() or 1
    with cpu_load(5, count=1) as (child,):
        time.sleep(0.3)  # past the interpreter's start-up
        start, child_before = perf.cpu_usage(), _process_cpu_s(child.pid)
        time.sleep(1.0)  # idle here: all the work is the neighbour's (and whoever else shares the machine)
        end, child_after = perf.cpu_usage(), _process_cpu_s(child.pid)
    assert start is not None and end is not None
    share = perf.others_cpu_between(start, end)
    spinner = (child_after - child_before) / (end.total_s - start.total_s)
    assert spinner > 0.5 / cpus, f"the spinner barely ran ({spinner:.0%} of the machine): no proof"
    # everything else on the machine only adds to it; two ticks' rounding per reading allowed
    assert share is not None and share >= spinner - 0.05 and share > 0.4 / cpus, (share, spinner)


def test_others_cpu_does_not_count_our_own_threads() -> None:
    import os
    import resource

    import torch

    from attnparity.machine import torch_threads

    if perf.cpu_usage() is None:
        pytest.skip("no /proc/stat here")
    a = torch.randn(256, 256)
    own_before, start = resource.getrusage(resource.RUSAGE_SELF), perf.cpu_usage()
    with torch_threads(min(2, os.cpu_count() or 1)):
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            a @ a
    own_after, end = resource.getrusage(resource.RUSAGE_SELF), perf.cpu_usage()
    assert start is not None and end is not None
    total = end.total_s - start.total_s
    # every thread's time, from getrusage (independent of the measure's os.times)
    own = (own_after.ru_utime + own_after.ru_stime - own_before.ru_utime - own_before.ru_stime) / total
    share = perf.others_cpu_between(start, end)
    assert own > 0.3 / (os.cpu_count() or 1), f"we barely ran ({own:.0%} of the machine): no proof"
    # ours and the others' together never exceed the machine: counting our work as theirs would
    assert share is not None and share + own <= 1.05, (share, own)
