"""Timing attention backends: CUDA events with warm-up and an L2 flush, or perf_counter on CPU.

Nothing here knows pytest. The suite (suite/perf.py) calls ``time_fn`` per backend × dtype × shape
and turns the ``Timing`` into a record; the formulas (FLOPs, TFLOP/s, % of peak, speed-up) live
here so the report and the self-tests use the very same arithmetic.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

#: Forward-pass FLOPs are counted as two matmuls (Q·Kᵀ and P·V), 2 FLOPs per multiply-add each;
#: softmax is not counted (the convention of the FlashAttention papers and their benchmarks).
FLOPS_CONVENTION = "4·B·H·Sq·Skv·D (QKᵀ and PV, 2 FLOPs per MAC; softmax not counted), half for causal"


# -- arithmetic ------------------------------------------------------------------------------------
def attention_flops(batch: int, heads: int, sq: int, skv: int, head_dim: int, causal: bool = False) -> float:
    """Forward FLOPs of one attention call: 4·B·H·Sq·Skv·D, half when causal."""
    flops = 4.0 * batch * heads * sq * skv * head_dim
    return flops / 2 if causal else flops


def tflops(flops: float, ms: float) -> float:
    """TFLOP/s of ``flops`` done in ``ms`` milliseconds."""
    if ms <= 0:
        raise ValueError(f"time must be positive, got {ms} ms")
    return flops / (ms * 1e-3) / 1e12


def speedup(reference_ms: float, ms: float) -> float:
    """How many times faster than the reference: >1 is faster, <1 slower."""
    return reference_ms / ms


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


def device_label(device: str) -> str:
    """The GPU's name, or ``CPU (N torch threads)``: two timings compare only under one label
    (a CPU figure depends on the thread count as much as on the chip)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    threads = torch.get_num_threads()
    return f"CPU ({threads} torch thread{'' if threads == 1 else 's'})"


def time_fn(fn: Callable[[], Any], device: str, settings: TimerSettings) -> Timing:
    """Time ``fn()`` on ``device`` (CUDA events there, perf_counter on CPU)."""
    result = time_many({"fn": fn}, device, settings)["fn"]
    if isinstance(result, BaseException):
        raise result
    return result


def time_many(fns: Mapping[str, Callable[[], Any]], device: str, settings: TimerSettings, *,
              tolerate: tuple[type[BaseException], ...] = ()) -> dict[str, "Timing | BaseException"]:
    """Time several functions on the same inputs, interleaved run by run.

    Interleaving is what makes the speed-up ratios trustworthy on a shared or throttling device:
    every function is timed in the same rounds, so a burst of load elsewhere slows them all alike
    instead of whichever happened to run then. The order rotates each round so no function always
    follows the same one. A function whose first call raises one of ``tolerate`` is left out and
    its exception returned in its place (a backend refusing a shape).
    """
    if device.startswith("cuda"):
        return time_many_cuda(fns, device=device, settings=settings, tolerate=tolerate)
    if device != "cpu":
        raise ValueError(f"perf timing supports cpu and cuda devices, not {device!r}")
    return time_many_cpu(fns, settings=settings, tolerate=tolerate)


def _first_calls(fns: Mapping[str, Callable[[], Any]], sync: Callable[[], None],
                 tolerate: tuple[type[BaseException], ...]) -> tuple[dict[str, float], dict[str, BaseException]]:
    """The untimed first call of each function (lazy init, compilation), its wall time, and refusals."""
    first_ms: dict[str, float] = {}
    refused: dict[str, BaseException] = {}
    for name, fn in fns.items():
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
                  tolerate: tuple[type[BaseException], ...] = ()) -> dict[str, "Timing | BaseException"]:
    first_ms, refused = _first_calls(fns, lambda: None, tolerate)
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
    label = device_label("cpu")
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
                   flush: bool = True, tolerate: tuple[type[BaseException], ...] = ()
                   ) -> dict[str, "Timing | BaseException"]:
    import torch

    dev = torch.device(device)
    with torch.cuda.device(dev):
        cache = l2_flush_buffer(device) if flush else None

        def clear() -> None:
            if cache is not None:
                cache.zero_()  # evict L2 so every run reads its inputs from HBM, as in a real model

        # First calls: lazy init, flex / torch.compile compilation happen here, never in a timed run.
        first_ms, refused = _first_calls(fns, torch.cuda.synchronize, tolerate)
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
        label = device_label(device)
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


# -- matmul peak -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Peak:
    tflops: float
    n: int
    dtype: str
    device_label: str
    timing: Timing

    def describe(self) -> str:
        return f"{self.tflops:.3g} TFLOP/s ({self.n}x{self.n} {self.dtype} matmul, fastest of {self.timing.reps} runs)"


_peaks: dict[tuple[str, str, str], Peak] = {}


def matmul_size(device: str) -> int:
    # Large enough to reach the dense peak: 8192³ on a GPU (~1 ms on an H100), 1024³ on a CPU.
    return 8192 if device.startswith("cuda") else 1024


def matmul_peak(device: str, dtype: str, settings: TimerSettings) -> Peak:
    """This device's measured matmul throughput in ``dtype``, measured once per process and cached.

    "Peak" means the fastest run of a large square torch matmul in that dtype here, not the datasheet
    figure: the % of peak then says how close attention gets to the device's own dense-matmul speed.
    On a CPU whose fp16 GEMM is slow while attention kernels compute in fp32 inside, fp16 rows can
    exceed 100%.
    """
    from .backends.base import torch_dtype

    key = (device, device_label(device), dtype)
    if key not in _peaks:
        import torch

        n = matmul_size(device)
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen).to(torch_dtype(dtype)).to(device)
        b = torch.randn(n, n, generator=gen).to(torch_dtype(dtype)).to(device)
        # at least 10 runs whatever the preset: the fastest of few runs on a busy machine is no peak
        timing = time_fn(lambda: a @ b, device, replace(settings, min_reps=max(settings.min_reps, 10)))
        # The fastest run, not the median: a peak is what the device reaches at best.
        _peaks[key] = Peak(tflops(2.0 * n ** 3, min(timing.times_ms)), n, dtype, timing.device_label, timing)
    return _peaks[key]


# -- tables ---------------------------------------------------------------------------------------
TABLE_COLUMNS = ("shape", "backend", "dtype", "ms", "cv", "TFLOP/s", "% peak", "× sdpa-math", "× naive")
PIPELINE_COLUMNS = ("pipeline", "backend", "dtype", "images/s", "cv", "× default attention", "unrouted images/s",
                    "fallback calls")


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _skipped(rec: dict[str, Any]) -> bool:
    return rec.get("verdict") in ("skip", "error") or "ms" not in (rec.get("metrics") or {})


def _rows(records: Sequence[dict[str, Any]], prefix: str, cells: Any, width: int) -> list[tuple[str, ...]]:
    """Rows of the perf records whose check starts with ``prefix``; skips show their reason."""
    rows = []
    for rec in records:
        if rec.get("kind") != "perf" or not rec["check"].startswith(prefix):
            continue
        head = (rec["check"].removeprefix(prefix), rec.get("backend") or "", rec.get("dtype") or "")
        if _skipped(rec):
            reason = rec["message"].splitlines()[0] if rec.get("message") else ""
            rows.append(head + (f"{rec.get('verdict')}: {reason}",) + ("",) * (width - 1))
            continue
        rows.append(head + cells(rec.get("metrics") or {}))
    return rows


def table_rows(records: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per op-level perf record (dicts as in results.json)."""
    return _rows(records, "perf:", lambda m: (
        _num(m.get("ms"), ".3g"), _pct(m.get("ms_cv")), _num(m.get("tflops"), ".3g"),
        _num(m.get("pct_peak"), ".0f"), _num(m.get("speedup_math"), ".2f"), _num(m.get("speedup_naive"), ".2f")), 6)


def pipeline_table_rows(records: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per pipeline perf record."""
    return _rows(records, "perf-pipeline:", lambda m: (
        _num(m.get("images_per_s"), ".3g"), _pct(m.get("ms_cv")), _num(m.get("speedup_default"), ".2f"),
        _num(m.get("default_images_per_s"), ".3g"), _num(m.get("fallback_calls"), ".0f")), 5)


def _markdown(columns: Sequence[str], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def grouped(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records grouped by shape (or pipeline), then dtype, in the order each first appears; backends
    keep their run order within a group, so each group reads as one comparison."""
    checks = {c: i for i, c in enumerate(dict.fromkeys(r.get("check") for r in records))}
    dtypes = {d: i for i, d in enumerate(dict.fromkeys(r.get("dtype") for r in records))}
    return sorted(records, key=lambda r: (checks[r.get("check")], dtypes[r.get("dtype")]))


def markdown_table(records: Sequence[dict[str, Any]]) -> str:
    """The perf records as Markdown: the op-level table, then the pipeline table when there is one."""
    records = grouped(records)
    ops, pipelines = table_rows(records), pipeline_table_rows(records)
    tables = [_markdown(TABLE_COLUMNS, ops)] if ops or not pipelines else []
    if pipelines:
        tables.append(_markdown(PIPELINE_COLUMNS, pipelines))
    return "\n\n".join(tables)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m attnparity.perf results.json``: the perf records of a run as Markdown tables."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m attnparity.perf", description=main.__doc__)
    parser.add_argument("results", type=Path, help="a results.json written with --attn-report=DIR")
    args = parser.parse_args(argv)
    try:
        payload = json.loads(args.results.read_text())
        records = payload["records"] if isinstance(payload, dict) else payload
    except (OSError, ValueError, KeyError) as exc:
        parser.error(f"{args.results}: not a readable attnparity results.json ({exc})")
    print(markdown_table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
