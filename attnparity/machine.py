"""What this run ran on: the device's identity and the versions of the libraries that move results.

One function, ``identify``, names the device; every record, golden path and timing label takes
its words from the ``DeviceIdentity`` it returns, so two runs can never disagree on whether they
ran on "the same device" because two functions spelled it differently.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

DEVICE_KINDS = ("cpu", "cuda", "xpu", "mps")
#: Distributions whose version can move a result; absent ones are left out of ``versions()``.
TRACKED_DISTRIBUTIONS = ("torch", "diffusers", "transformers", "xformers", "flash-attn", "sageattention",
                         "triton", "hypothesis", "attnparity")


@dataclass(frozen=True)
class DeviceIdentity:
    #: On every record: "cpu", or the GPU's name ("NVIDIA H100 80GB HBM3").
    name: str
    #: Goldens are kept per class: "cpu", or "cuda-sm<major><minor>" (kernels, hence images, differ
    #: by architecture, not by card).
    golden_class: str
    #: Timings compare only under one label: the GPU's name, or "CPU (N torch threads)" (a CPU figure
    #: depends on the thread count as much as on the chip).
    timing_label: str
    #: The CUDA index this process runs on (None on CPU): several GPUs of one model share a name.
    index: int | None = None
    #: The hardware, as the device dimension of a matrix of several runs: the GPU's name, or "CPU
    #: (<model name>)". Not the thread count: numerics do not change with it, and a serial baseline
    #: must stay comparable with a pytest-xdist run (whose workers share the cores); timings compare
    #: under ``timing_label`` anyway.
    model: str = ""

    @property
    def ran_on(self) -> str:
        return f"cuda:{self.index} {self.name}" if self.index is not None else self.timing_label


def gpu_for_worker(worker: str | None, device_count: int) -> int | None:
    """The GPU index a pytest-xdist worker ("gw0", "gw1", ...) is pinned to: its number modulo the
    device count, so `-n <number of GPUs>` gives each worker a GPU of its own. None outside xdist
    (no worker id, or "master") and without GPUs."""
    if not worker or device_count < 1 or not worker.startswith("gw") or not worker[2:].isdigit():
        return None
    return int(worker[2:]) % device_count


def worker_device(device: str, worker: str | None, device_count: int) -> str:
    """The device of this process: a plain "cuda" under xdist worker gwN becomes "cuda:<N % count>";
    an explicit index ("cuda:1", the user's choice) and non-CUDA devices stay as they are."""
    if device != "cuda":
        return device
    index = gpu_for_worker(worker, device_count)
    return device if index is None else f"cuda:{index}"


def auto_workers(device: str) -> int:
    """How many pytest-xdist workers ``-n auto`` starts for a run on ``device``: one per core this
    process may use on CPU (its affinity, which a container or ``taskset`` narrows), one per GPU for
    a plain "cuda" (worker_device pins each to its own), one for a device chosen by index or kind."""
    import os

    if device == "cpu":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device == "cuda":
        import torch

        return max(1, torch.cuda.device_count())
    return 1


def resolve_device(requested: str) -> str:
    """The device of ``--attn-device`` ("auto", "cpu", "cuda", "cuda:1", ...) as torch sees it here."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.split(":")[0] not in DEVICE_KINDS:
        raise ValueError(f"--attn-device={requested}: expected auto, cpu, cuda or cuda:N")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--attn-device={requested}: torch {torch.__version__} sees no CUDA device; use cpu or auto")
    return requested


def gpu_per_worker(device: str, workers: int, device_count: int) -> bool:
    """Whether every one of ``workers`` pytest-xdist workers of a run on ``device`` (as the run
    resolved it, before worker_device pins it) gets a GPU of its own: a plain "cuda" and no more
    workers than GPUs. Such workers may time side by side (their kernels run on other chips; only
    the host's CPU is shared, which launches them). An explicit "cuda:N" puts every worker on GPU N."""
    return device == "cuda" and 0 < workers <= device_count


def identify(device: str) -> DeviceIdentity:
    """The identity of ``device`` ("cpu", "cuda", "cuda:1", ...) as this process sees it now."""
    import torch

    if device.startswith("cuda"):
        dev = torch.device(device)
        gpu = torch.cuda.get_device_name(dev)
        major, minor = torch.cuda.get_device_capability(dev)
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return DeviceIdentity(gpu, f"cuda-sm{major}{minor}", gpu, index, gpu)
    kind = device.split(":")[0]
    threads = torch.get_num_threads()
    label = f"CPU ({threads} torch thread{'' if threads == 1 else 's'})" if kind == "cpu" else kind
    return DeviceIdentity(device, kind, label, model=f"CPU ({cpu_model()})" if kind == "cpu" else kind)


def cpu_model() -> str:
    """The CPU's model name as the OS reports it ("Intel(R) Xeon(R) Processor"), or the machine type."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` for the block and restored afterwards (None or
    0: left as it is). CPU timings and images depend on it, so what sets it for a figure must also be
    what ``identify`` reads back for that figure's label."""
    import torch

    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pin_fp32_math() -> dict[str, str]:
    """fp32 matmuls and convolutions at full fp32 for the run, and what is now set (``fp32_math``).

    With TF32 allowed (``torch.backends.cuda.matmul.allow_tf32``, cuDNN's ``allow_tf32``, or
    ``set_float32_matmul_precision("high")``), an fp32 matmul on an Ampere or newer GPU keeps 10
    mantissa bits: the fp32 baseline and every fp32 backend would then be judged as TF32, and a
    user's setting would decide the verdict. The run pins them; the record says so."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return fp32_math()


def fp32_math() -> dict[str, str]:
    """torch's fp32 matmul settings as they are now, by name (recorded in results.json)."""
    import torch

    found = {"float32_matmul_precision": torch.get_float32_matmul_precision(),
             "cuda.matmul.allow_tf32": str(torch.backends.cuda.matmul.allow_tf32),
             "cudnn.allow_tf32": str(torch.backends.cudnn.allow_tf32)}
    for name, holder in (("cuda.matmul.fp32_precision", torch.backends.cuda.matmul),
                         ("cudnn.fp32_precision", torch.backends.cudnn)):
        value = getattr(holder, "fp32_precision", None)  # the newer spelling, where torch has it
        if value is not None:
            found[name] = str(value)
    return found


def versions() -> dict[str, str]:
    """Versions of the libraries whose change moves results; absent packages are left out."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {}
    for dist in TRACKED_DISTRIBUTIONS:
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return found
