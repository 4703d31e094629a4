"""The device's measured matmul throughput, the 100% of the perf table's "% of peak"."""

from __future__ import annotations

from dataclasses import dataclass, replace

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
        # at least 10 runs whatever the preset: the fastest of few runs on a busy machine is no peak
        timing = time_fn(lambda: a @ b, device, replace(settings, min_reps=max(settings.min_reps, 10)))
        # The fastest run, not the median: a peak is what the device reaches at best.
        _peaks[key] = Peak(tflops(2.0 * n ** 3, min(timing.times_ms)), n, dtype, timing.device_label, timing)
    return _peaks[key]
