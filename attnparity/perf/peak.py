"""The device's measured matmul throughput, the 100% of the perf table's "% of peak"."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from attnparity.machine import identify

from .flops import tflops
from .timer import Timing, TimerSettings, time_fn

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


#: A CPU matmul this long (ms) or longer is timed MIN_RUNS_LONG times instead of MIN_RUNS.
LONG_MS = 1000.0
MIN_RUNS, MIN_RUNS_LONG = 10, 3


def _min_runs(a: Any, b: Any) -> int:
    """How many timed runs the peak takes at least, whatever the preset. The fastest of a few short
    runs on a busy machine is no peak, so 10; but a CPU matmul of a second or more (fp16 on a CPU
    without fp16 arithmetic: seconds, some hundred times its fp32 time, which load cannot stretch
    that far) averages over the bursts of load that hit short runs, and its fastest of 3 is its
    fastest of 10, for a third of the time."""
    if not a.device.type == "cpu":
        return MIN_RUNS
    t0 = time.perf_counter()
    a @ b
    return MIN_RUNS_LONG if (time.perf_counter() - t0) * 1e3 >= LONG_MS else MIN_RUNS


def matmul_peak(device: str, dtype: str, settings: TimerSettings) -> Peak:
    """This device's measured matmul throughput in ``dtype``, measured once per process and cached.

    "Peak" means the fastest run of a large square torch matmul in that dtype here, not the datasheet
    figure: the % of peak then says how close attention gets to the device's own dense-matmul speed.
    On a CPU whose fp16 GEMM is slow while attention kernels compute in fp32 inside, fp16 rows can
    exceed 100%.
    """
    from attnparity.backends.base import torch_dtype

    key = (device, identify(device).timing_label, dtype)
    if key not in _peaks:
        import torch

        n = matmul_size(device)
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen).to(torch_dtype(dtype)).to(device)
        b = torch.randn(n, n, generator=gen).to(torch_dtype(dtype)).to(device)
        timing = time_fn(lambda: a @ b, device, replace(settings, min_reps=max(settings.min_reps, _min_runs(a, b))))
        # The fastest run, not the median: a peak is what the device reaches at best.
        _peaks[key] = Peak(tflops(2.0 * n ** 3, min(timing.times_ms)), n, dtype, timing.device_label, timing)
    return _peaks[key]
