"""Pipeline-level perf: images/s of each seeded pipeline (and ``--attn-pipeline`` checkpoints) per
backend, and the speed-up over the pipeline's default attention.

Items ``attnparity::perf-pipeline:<pipeline>[<backend>-<dtype>]``, marked ``attn_perf``. Each times,
interleaved run by run (perf.time_many), one image per run from the same seed and latents:

* the pipeline with every attention call routed through the backend (pipelines/routing.py);
* the pipeline routed through ``sdpa`` (torch's own kernel choice, which is what the pipeline's
  default attention processors call): the reference of ``speedup_default``. Routing costs the same
  on both sides (a TorchFunctionMode sees every torch call), so the ratio isolates attention;
* the pipeline untouched: its images/s (``default_images_per_s``) shows what routing itself costs.

``--attn-perf-baseline`` and ``--attn-compare`` judge these cells by their time relative to the
routed ``sdpa`` run (1 / ``speedup_default``, results.gate.compare_timing). The ``sdpa`` row is its
own reference, so it falls back to absolute ms with an allowance widened by both runs' cv: unlike
every other row, it is not load-proof.

``--attn-compile`` adds ``perf-pipeline:<pipeline>[sdpa+compile-<dtype>]`` for its compiled cells
(suite/pipelines.compiled_cells), in either mode: the pipeline with the denoiser compiled against
the same pipeline eager, both unrouted, interleaved (``speedup_eager``); the first compiled image
(trace + inductor) is reported apart (``compile_s``, ``first_image_s``, ``inductor_s``).

A tiny pipeline takes about a second per image on a 2-core CPU, so on CPU these items belong to
``--attn-perf=full``; on CUDA they are part of the quick set too. On CPU ``specs.run_pipeline`` runs
single-threaded (image determinism across machines), so the timing is taken, and labelled, with one
torch thread.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from attnparity.machine import torch_threads

from . import Check, SuiteContext

if TYPE_CHECKING:
    from attnparity.backends.base import Backend
    from attnparity.pipelines.specs import PipelineSpec
    from attnparity.results.record import ResultRecord
    from .perf import Baseline, GateSettings

#: The backend a pipeline's default attention amounts to (diffusers' processors call SDPA).
DEFAULT_ATTENTION = "sdpa"


def wanted(ctx: SuiteContext, mode: str) -> bool:
    return mode == "full" or ctx.device.startswith("cuda")


def checks(ctx: SuiteContext) -> list[Check]:
    from .perf import GateSettings, load_baseline
    from .pipelines import COMPILED_ROW, compile_unavailable, compiled_cells

    mode, gate = ctx.options.perf, GateSettings.from_options(ctx.options)
    # --attn-compile times its compiled cells in either mode: the compile is paid for by the
    # pipeline cell anyway, and a few steady-state images cost seconds.
    if not (wanted(ctx, mode) or ctx.options.compile):
        return []
    from attnparity.pipelines.specs import specs_for

    baseline = load_baseline(ctx.options.perf_baseline)

    out: list[Check] = []
    specs = specs_for(list(ctx.options.pipeline), ctx.rootdir)
    compiled = compiled_cells(ctx, [spec.name for spec in specs]) if ctx.options.compile else set()
    for spec in specs:
        for dtype in ctx.dtypes:
            if (spec.name, dtype) in compiled:
                run = functools.partial(run_compiled_perf, ctx, spec, dtype, mode, baseline, gate)
                out.append(Check("perf", f"perf-pipeline:{spec.name}", COMPILED_ROW, dtype, run,
                                 marks=("attn_perf",), skip=compile_unavailable()))
        if not wanted(ctx, mode):
            continue
        for backend in ctx.backends:
            if backend.name == COMPILED_ROW and compiled:
                continue  # under --attn-compile this row's pipeline perf items are the compiled-denoiser ones
            for dtype in ctx.dtypes:
                skip = ctx.unavailable(backend)
                if skip is None and dtype not in backend.capabilities.dtype_names:
                    skip = f"{backend.name} does not claim {dtype}"
                run = functools.partial(run_pipeline_perf, ctx, spec, backend, dtype, mode, baseline, gate)
                out.append(Check("perf", f"perf-pipeline:{spec.name}", backend.name, dtype, run,
                                 marks=("attn_perf",), skip=skip))
    return out


def pipeline_settings(device: str, mode: str) -> Any:
    from attnparity.perf.timer import TimerSettings

    if device.startswith("cuda"):
        return TimerSettings(warmup_ms=100, rep_ms=300 if mode == "quick" else 2000, min_reps=3 if mode == "quick" else 5,
                             max_reps=100)
    return TimerSettings(warmup_ms=0, rep_ms=1000, min_reps=3, max_reps=20)


def run_pipeline_perf(ctx: SuiteContext, spec: "PipelineSpec", backend: "Backend", dtype: str, mode: str,
                      baseline: "Baseline | None", gate: "GateSettings") -> "ResultRecord":
    from attnparity.backends.registry import get_backend
    from attnparity.perf.timer import OthersCpu, Timing, ratio_cv, time_many
    from attnparity.pipelines import routing, specs
    from attnparity.pipelines.specs import PipelineSpecError
    from attnparity.results.record import ResultRecord
    from .perf import compare_to_baseline, note_contention

    check = f"perf-pipeline:{spec.name}"
    try:
        pipe = specs.load_pipeline(spec, dtype, ctx.device)
    except PipelineSpecError as exc:
        return ResultRecord("perf", check, backend.name, dtype, "error", message=str(exc))
    default = get_backend(DEFAULT_ATTENTION)
    stats: dict[str, Any] = {}

    def routed(through: "Backend") -> Any:
        def run() -> None:
            with routing.route(pipe, through) as route_stats:
                specs.run_pipeline(pipe, spec)
            stats[through.name] = route_stats

        return run

    fns = {backend.name: routed(backend), f"{DEFAULT_ATTENTION} (routed)": routed(default),
           "default (unrouted)": lambda: specs.run_pipeline(pipe, spec)}
    if backend.name == DEFAULT_ATTENTION:
        del fns[f"{DEFAULT_ATTENTION} (routed)"]
    # one thread: what run_pipeline uses anyway; the label must say so
    with torch_threads(None if ctx.device.startswith("cuda") else 1), OthersCpu() as others:
        timings = time_many(fns, ctx.device, pipeline_settings(ctx.device, mode))
    mine = timings[backend.name]
    ref = timings.get(f"{DEFAULT_ATTENTION} (routed)", mine)
    plain = timings["default (unrouted)"]
    assert isinstance(mine, Timing) and isinstance(ref, Timing) and isinstance(plain, Timing)

    route_stats = stats[backend.name]
    metrics: dict[str, float] = {
        "ms": mine.median_ms, "ms_cv": mine.cv, "images_per_s": 1e3 / mine.median_ms,
        "speedup_default": ref.median_ms / mine.median_ms, "default_images_per_s": 1e3 / plain.median_ms,
        "routing_overhead": ref.median_ms / plain.median_ms, "reps": mine.reps,
        "routed_calls": route_stats.routed, "fallback_calls": route_stats.fallback_calls,
    }
    extra: dict[str, Any] = {**spec.describe(), **route_stats.to_extra(), "device_label": mine.device_label,
                             "method": mine.method, "first_call_ms": mine.first_call_ms, "mode": mode,
                             "default_attention": DEFAULT_ATTENTION, "default_routed_ms": ref.median_ms,
                             "default_routed_cv": ref.cv, "default_routed_ratio_cv": ratio_cv(mine, ref),
                             "default_unrouted_ms": plain.median_ms}
    notes: list[str] = []
    if route_stats.routed == 0:
        notes.append(f"routing caught no attention call: {backend.name} was never exercised; the timing says nothing about it")
    if route_stats.fallback:
        notes.append(route_stats.describe_fallback() + " (included in the time)")
    note_contention(ctx.device, extra, notes, others.share, ctx.timing_beside)
    summary = (f"{metrics['images_per_s']:.3g} images/s ({mine.median_ms:.4g} ms per {spec.size}px image, "
               f"{spec.steps} steps; cv {100 * mine.cv:.0f}%, {mine.reps} runs), {metrics['speedup_default']:.2f}x "
               f"the default attention ({DEFAULT_ATTENTION}, routed alike); unrouted pipeline "
               f"{metrics['default_images_per_s']:.3g} images/s [{mine.device_label}, {mine.method}]")
    verdict, verdict_text = compare_to_baseline(baseline, gate, ("perf", check, backend.name, dtype),
                                                mine.device_label, metrics, extra)
    message = "\n".join([summary, *notes, *([verdict_text] if verdict_text else [])])
    if verdict == "fail":
        message = verdict_text + "\n" + summary
    return ResultRecord("perf", check, backend.name, dtype, verdict, metrics=metrics, message=message, extra=extra)


def run_compiled_perf(ctx: SuiteContext, spec: "PipelineSpec", dtype: str, mode: str,
                      baseline: "Baseline | None", gate: "GateSettings") -> "ResultRecord":
    """images/s with the denoiser compiled (pipelines/compiled.py) against the same pipeline eager,
    interleaved run by run; the first compiled image (tracing and compiling) is reported apart."""
    from attnparity.perf.timer import OthersCpu, Timing, ratio_cv, time_many
    from attnparity.pipelines import compiled, specs
    from attnparity.pipelines.specs import PipelineSpecError
    from attnparity.results.record import ResultRecord
    from .perf import compare_to_baseline, note_contention
    from .pipelines import COMPILED_ROW

    check = f"perf-pipeline:{spec.name}"
    try:
        pipe = specs.load_pipeline(spec, dtype, ctx.device)
        holder = compiled.compiled_pipeline(spec, dtype, ctx.device)
    except (PipelineSpecError, ValueError) as exc:
        return ResultRecord("perf", check, COMPILED_ROW, dtype, "error", message=str(exc))
    threads = None if ctx.device.startswith("cuda") else 1
    with torch_threads(threads):
        compiled.run_compiled(holder, spec)  # compiles here unless the pipeline cell already did
        with OthersCpu() as others:
            timings = time_many({COMPILED_ROW: lambda: compiled.run_compiled(holder, spec),
                                 "eager": lambda: specs.run_pipeline(pipe, spec)},
                                ctx.device, pipeline_settings(ctx.device, mode))
    mine, eager = timings[COMPILED_ROW], timings["eager"]
    assert isinstance(mine, Timing) and isinstance(eager, Timing)
    first_s = holder.first_image_s or 0.0
    metrics: dict[str, float] = {
        "ms": mine.median_ms, "ms_cv": mine.cv, "images_per_s": 1e3 / mine.median_ms,
        "eager_images_per_s": 1e3 / eager.median_ms, "speedup_eager": eager.median_ms / mine.median_ms,
        # the gate's in-item reference (results.gate.REFERENCES): the pipeline's default SDPA, eager
        "speedup_default": eager.median_ms / mine.median_ms,
        "compile_s": max(first_s - mine.median_ms / 1e3, 0.0), "first_image_s": first_s,
        "first_image_cpu_s": holder.first_image_cpu_s or 0.0, "inductor_s": holder.inductor_s,
        "graphs": holder.graphs, "sdpa_nodes": holder.sdpa_nodes, "reps": mine.reps,
    }
    extra: dict[str, Any] = {**spec.describe(), **holder.describe(), "device_label": mine.device_label,
                             "method": mine.method, "mode": mode, "default_attention": "sdpa (eager, unrouted)",
                             "default_routed_ms": eager.median_ms, "default_routed_cv": eager.cv,
                             "default_routed_ratio_cv": ratio_cv(mine, eager), "eager_ms": eager.median_ms}
    notes: list[str] = []
    note_contention(ctx.device, extra, notes, others.share, ctx.timing_beside)
    summary = (f"compiled {holder.component}: {metrics['images_per_s']:.3g} images/s ({mine.median_ms:.4g} ms per "
               f"{spec.size}px image, {spec.steps} steps; cv {100 * mine.cv:.0f}%, {mine.reps} runs), "
               f"{metrics['speedup_eager']:.2f}x eager ({metrics['eager_images_per_s']:.3g} images/s); "
               f"compile (first image minus a steady one) {metrics['compile_s']:.1f} s, {holder.inductor_s:.1f} s "
               f"in inductor, {holder.graphs} graph(s) [{mine.device_label}, {mine.method}]")
    verdict, verdict_text = compare_to_baseline(baseline, gate, ("perf", check, COMPILED_ROW, dtype),
                                                mine.device_label, metrics, extra)
    message = "\n".join([summary, *notes, *([verdict_text] if verdict_text else [])])
    if verdict == "fail":
        message = verdict_text + "\n" + summary
    return ResultRecord("perf", check, COMPILED_ROW, dtype, verdict, metrics=metrics, message=message, extra=extra)
