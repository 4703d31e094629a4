"""Perf items (marker ``attn_perf``): every backend × dtype × real diffusion attention shape, timed.

One item per backend × dtype × shape: ``attnparity::perf:<shape>[<backend>-<dtype>]``, so ``-k``
picks a model (``-k sdxl``), a backend (``-k sdpa-flash``) or one cell, and ``--attn-perf-baseline``
compares cell by cell. Each record carries ms (median), ms_cv, tflops, pct_peak (of this device's
measured matmul peak in that dtype) and the speed-ups over sdpa-math and naive, timed in the same
item on the same inputs, interleaved run by run with the backend (perf.time_many), so the ratios
hold on a shared machine even when absolute times wander.

Timings never fail a run. With ``--attn-perf-baseline=old.json`` a cell fails when its time
relative to the reference timed in the same item (1 / speedup_math; 1 / speedup_naive for the
sdpa-math row) grew by more than ``--attn-perf-margin`` and by more than ``--attn-perf-noise``
times its measured noise, and only when both were timed on the same device label (GPU name, or
CPU with the same torch thread count); otherwise the record says why it was not compared. The
rule is results.gate.compare_timing, the same as ``--attn-compare``'s.

On CPU the items time with ``--attn-perf-threads`` torch threads (1 by default). With two threads on
a two-core machine that other processes use, a descheduled OpenMP thread stalls its partner at every
barrier: one bf16 kernel measured 10x slower a minute later, by a factor its reference did not
share, so even the in-item ratio moved 3.6x with nothing changed (docs/reports/upgrade-gate.md). One thread
is what makes the ratio hold under load.

Pipeline-level timings (images/s per backend, speed-up over the default attention) are the items
of suite/perf_pipelines.py, collected after these.

pytest-xdist: perf items run on worker gw0 only; on other workers they are skipped with the reason.
Workers share the device (one GPU, or the CPU's cores), so concurrent timings would contaminate each
other; gw0's records say when other workers may still have run beside them. Exception: on a machine
with several GPUs, where each worker is pinned to a GPU of its own (machine.has_own_gpu: `-n` at most
the number of GPUs), every worker times on its own GPU.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnparity.machine import torch_threads
from attnparity.results.gate import REFERENCES as GATE_REFERENCES

from . import Check, SuiteContext

if TYPE_CHECKING:
    from attnparity.backends.base import Backend
    from attnparity.check.cases import AttnCase
    from attnparity.options import Options
    from attnparity.perf.timer import Timing, TimerSettings
    from attnparity.perf.shapes import PerfShape
    from attnparity.results.record import ResultRecord

#: The rows every op-level speed-up is relative to: (backend, metric name), taken from the gate's
#: table of references (results.gate.REFERENCES), which reads them back with the cv kept as
#: extra["<backend>_cv"]; the pipelines' default attention is suite/perf_pipelines.py's reference.
REFERENCES = tuple((backend, metric) for metric, backend, _, _ in GATE_REFERENCES if metric != "speedup_default")


def checks(ctx: SuiteContext) -> list[Check]:
    from attnparity.perf import shapes as perf_shapes

    mode = ctx.options.perf
    shapes = perf_shapes.select(mode, ctx.device)
    gate = GateSettings.from_options(ctx.options)
    baseline = load_baseline(ctx.options.perf_baseline)
    refused = xdist_refusal(ctx.device)
    out: list[Check] = []
    for backend in ctx.backends:
        unavailable = ctx.unavailable(backend)
        for dtype in ctx.dtypes:
            for shape in shapes:
                skip = unavailable or refused or _not_claimed(backend, shape.case(dtype, ctx.device))
                run = functools.partial(run_perf, ctx, backend, dtype, shape, mode, baseline, gate)
                out.append(Check("perf", f"perf:{shape.name}", backend.name, dtype, run,
                                 marks=("attn_perf",), skip=skip))
    return out


def _not_claimed(backend: "Backend", case: "AttnCase") -> str | None:
    why = case.outside(backend.capabilities)
    return f"{backend.name} does not claim this shape ({why})" if why else None


# -- the baseline -------------------------------------------------------------------------------
@dataclass
class Baseline:
    path: str
    cells: dict[tuple[Any, ...], "ResultRecord"] = field(default_factory=dict)


@dataclass(frozen=True)
class GateSettings:
    """--attn-perf-margin, --attn-perf-noise and --attn-perf-busy-slowdown, as the baseline gate uses them."""

    margin: float
    noise: float
    busy_slowdown: float

    @classmethod
    def from_options(cls, options: "Options") -> "GateSettings":
        return cls(options.perf_margin, options.perf_noise, options.perf_busy_slowdown)


def load_baseline(path: Any) -> Baseline | None:
    """The perf records of an earlier results.json, by cell; a bad file is a clear usage error."""
    if not path:
        return None
    from attnparity.results.record import ResultsFileError, read_results

    try:
        run = read_results(Path(path))
    except ResultsFileError as exc:
        raise ValueError(f"--attn-perf-baseline: {exc}") from None
    cells = {r.cell: r for r in run["records"] if r.kind == "perf"}
    if not cells:
        raise ValueError(f"--attn-perf-baseline={path}: the file holds no perf records; "
                         "write one from a run that included -m attn_perf items")
    return Baseline(str(path), cells)


def _own_gpu(device: str) -> bool:
    """This xdist worker is pinned to a GPU no other worker uses (machine.has_own_gpu)."""
    if not device.startswith("cuda:"):
        return False
    import torch

    from attnparity.machine import has_own_gpu

    return has_own_gpu(device, os.environ.get("PYTEST_XDIST_WORKER"),
                       int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0), torch.cuda.device_count())


def xdist_refusal(device: str) -> str | None:
    """Why this pytest-xdist worker must not time (all but gw0, unless each worker has a GPU of its
    own), or None."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or worker == "gw0" or _own_gpu(device):
        return None
    where = "GPU" if device.startswith("cuda") else "CPU"
    return (f"perf items run on pytest-xdist worker gw0 only (this is {worker}): workers share this {where}, "
            "so concurrent timings would contaminate each other. For clean figures run "
            "`pytest -m attn_perf -p no:xdist`.")


def xdist_note(device: str = "") -> str | None:
    """On gw0 with other workers: the figures may be contaminated by their items (not when each
    worker has a GPU of its own)."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if os.environ.get("PYTEST_XDIST_WORKER") and count > 1 and not _own_gpu(device):
        return (f"timed under pytest-xdist with {count} workers: other workers' items may have run on the "
                "same device meanwhile (run `pytest -m attn_perf -p no:xdist` for clean figures)")
    return None


def note_contention(device: str, extra: dict[str, Any], notes: list[str], others_cpu: float | None) -> None:
    """What else may have run beside a timing, in the record's extra["contended"] and its message
    notes: other xdist workers, a CPU busy by its load average and, on CPU, ``others_cpu``, the share
    of the machine other processes used while the item timed (perf.timer.OthersCpu around it), kept
    as extra["others_cpu"]. The gate reads others_cpu first (results.gate.TimingSample.busy): the
    load average is a minute's mean that counts this process too, and older records have only it."""
    from attnparity.perf.timer import cpu_contention
    from attnparity.results.gate import BUSY_SHARE

    on_cpu = not device.startswith("cuda")
    busy = None
    if on_cpu and others_cpu is not None:
        extra["others_cpu"] = round(others_cpu, 3)
        if others_cpu > BUSY_SHARE:
            busy = (f"CPU busy: other processes used {others_cpu:.0%} of this machine's CPU while timing; "
                    "a memory-heavy neighbour slows some kernels more than their reference")
    for contended in (xdist_note(device), cpu_contention() if on_cpu else None, busy):
        if contended:
            extra["contended"] = "; ".join(filter(None, (extra.get("contended"), contended)))
            notes.append(contended)


# -- timing ---------------------------------------------------------------------------------------
def reference_backends(ctx: SuiteContext, case: "AttnCase") -> tuple[dict[str, "Backend"], dict[str, str]]:
    """The speed-up references that can run ``case`` here, and why the others cannot."""
    from attnparity.backends.registry import get_backend

    usable: dict[str, Backend] = {}
    missing: dict[str, str] = {}
    for name, _ in REFERENCES:
        backend = next((b for b in ctx.backends if b.name == name), None)
        if backend is None:
            try:
                backend = get_backend(name)
            except LookupError:
                missing[name] = f"{name} is not registered"
                continue
        why = ctx.unavailable(backend) or case.outside(backend.capabilities)
        if why:
            missing[name] = f"{name}: {why}"
        else:
            usable[name] = backend
    return usable, missing


def time_with_references(ctx: SuiteContext, backend: "Backend", case: "AttnCase", settings: "TimerSettings"
                         ) -> tuple[dict[str, "Timing | BaseException"], dict[str, str]]:
    """The backend and its references timed interleaved on the same inputs (perf.time_many)."""
    from attnparity.backends.base import Unsupported
    from attnparity.perf.timer import time_many

    refs, missing = reference_backends(ctx, case)
    group = {backend.name: backend, **{n: b for n, b in refs.items() if n != backend.name}}
    q, k, v, _ = case.tensors()
    fns = {name: functools.partial(b.fn, q, k, v) for name, b in group.items()}
    return time_many(fns, case.device, settings, tolerate=(Unsupported,)), missing


def run_perf(ctx: SuiteContext, backend: "Backend", dtype: str, shape: "PerfShape", mode: str,
             baseline: Baseline | None, gate: "GateSettings") -> "ResultRecord":
    from attnparity.perf.flops import FLOPS_CONVENTION, speedup, tflops
    from attnparity.perf.peak import matmul_peak
    from attnparity.perf.timer import OthersCpu, Timing, ratio_cv, settings_for
    from attnparity.results.record import ResultRecord

    settings = settings_for(ctx.device, mode)
    case = shape.case(dtype, ctx.device)
    check = f"perf:{shape.name}"
    extra: dict[str, Any] = {"shape": shape.describe(), "note": shape.note, "mode": mode, "flops": shape.flops,
                             "flops_convention": FLOPS_CONVENTION}
    with torch_threads(None if ctx.device.startswith("cuda") else ctx.options.perf_threads):
        with OthersCpu() as others:
            timings, missing = time_with_references(ctx, backend, case, settings)
        peak = matmul_peak(ctx.device, dtype, settings)  # under the same thread count as the timing
    timing = timings[backend.name]
    if isinstance(timing, BaseException):
        return ResultRecord("perf", check, backend.name, dtype, "skip", extra=extra,
                            message=f"{backend.name} refused the shape: {timing}")
    ms = timing.median_ms
    metrics: dict[str, float] = {"ms": ms, "ms_cv": timing.cv, "tflops": tflops(shape.flops, ms),
                                 "reps": timing.reps}
    metrics["pct_peak"] = 100.0 * metrics["tflops"] / peak.tflops
    notes: list[str] = []
    for ref_name, metric in REFERENCES:
        ref = timings.get(ref_name, missing.get(ref_name))
        if isinstance(ref, Timing):
            metrics[metric] = speedup(ref.median_ms, ms)
            extra[f"{ref_name}_ms"] = ref.median_ms
            extra[f"{ref_name}_cv"] = ref.cv
            extra[f"{ref_name}_ratio_cv"] = ratio_cv(timing, ref)
        else:
            notes.append(f"no {metric}: {ref}")
    extra.update(device_label=timing.device_label, method=timing.method, first_call_ms=timing.first_call_ms,
                 warmup_runs=timing.warmup_runs, ms_min=min(timing.times_ms), ms_max=max(timing.times_ms),
                 matmul_peak=peak.describe(),
                 matmul_peak_tflops=peak.tflops)
    note_contention(ctx.device, extra, notes, others.share)
    summary = (f"{ms:.3g} ms (cv {100 * timing.cv:.0f}%, {timing.reps} runs), {metrics['tflops']:.3g} TFLOP/s = "
               f"{metrics['pct_peak']:.0f}% of matmul peak"
               + "".join(f", {metrics[m]:.2f}x {r}" for r, m in REFERENCES if m in metrics)
               + f" [{timing.device_label}, {timing.method}] {shape.describe()}")
    verdict, verdict_text = compare_to_baseline(baseline, gate, ("perf", check, backend.name, dtype),
                                                timing.device_label, metrics, extra)
    message = "\n".join([summary, *notes, *([verdict_text] if verdict_text else [])])
    if verdict == "fail":
        message = verdict_text + "\n" + summary + "".join("\n" + n for n in notes) + "\nrepro: " + _repro(
            backend.name, dtype, shape.name, mode, baseline, gate, ctx.options.perf_threads)
    return ResultRecord("perf", check, backend.name, dtype, verdict, metrics=metrics, message=message, extra=extra)


def compare_to_baseline(baseline: Baseline | None, gate: "GateSettings", cell: tuple[Any, ...], label: str,
                        metrics: dict[str, float], extra: dict[str, Any]) -> tuple[str, str]:
    """("pass" | "fail", what the gate found) for one timing against the baseline run's cell, by
    results.gate.compare_timing (relative to the in-item reference when both cells have one);
    metrics gains baseline_ms, vs_baseline (new / old ms) and, on the relative basis,
    vs_baseline_relative (new / old relative time) when compared."""
    from attnparity.results.gate import TimingSample, compare_timing

    if baseline is None:
        return "pass", ""
    old = baseline.cells.get(cell)
    if old is None:
        return "pass", f"baseline {baseline.path}: no such cell; not compared"
    old_sample = TimingSample.from_record(old)
    if old.verdict not in ("pass", "fail") or old_sample is None:
        return "pass", f"baseline cell has no timing ({old.verdict}: {old.message.splitlines()[0] if old.message else ''})"
    new_sample = TimingSample.of(cell[2], metrics, extra, label)
    assert new_sample is not None, "a perf record always has a positive ms"
    change = compare_timing(old_sample, new_sample, gate.margin, gate.noise, gate.busy_slowdown)
    if not change.compared:
        return "pass", f"baseline {baseline.path}: {change.text}"
    metrics["baseline_ms"] = old_sample.ms
    metrics["vs_baseline"] = new_sample.ms / old_sample.ms
    if change.basis != "absolute":
        metrics["vs_baseline_relative"] = change.ratio or 0.0
    extra["baseline_basis"] = change.basis
    text = (f"{change.text} against {baseline.path} (cv now {100 * new_sample.cv:.0f}%, "
            f"then {100 * old_sample.cv:.0f}%)")
    if change.worse:
        return "fail", "SLOWER than baseline: " + text
    if change.inconclusive:
        return "pass", "INCONCLUSIVE against baseline (not failed): " + text
    return "pass", "within baseline: " + text


def _repro(backend: str, dtype: str, shape: str, mode: str, baseline: Baseline | None, gate: GateSettings,
           threads: int) -> str:
    return (f"pytest --attn-backends={backend} --attn-dtypes={dtype} -m attn_perf -k '{shape}' --attn-perf={mode}"
            f" --attn-perf-threads={threads}"
            + (f" --attn-perf-baseline={baseline.path} --attn-perf-margin={gate.margin:g}"
               f" --attn-perf-noise={gate.noise:g} --attn-perf-busy-slowdown={gate.busy_slowdown:g}"
               if baseline else ""))
