"""End-to-end pipeline checks: one item per (pipeline, backend, dtype), marked ``attn_pipeline``.

Each item runs the seeded pipeline with every attention call routed through the backend
(pipelines/routing.py) and makes two comparisons, by SSIM:

1. attention-isolated (``ssim_ref``): against the same pipeline, same dtype, on this machine, with
   fp64 reference attention. Everything but attention is identical, so a drop blames attention.
2. golden (``ssim_golden``): against the committed golden image (pipelines/golden.py), made with
   reference attention: catches a torch / diffusers upgrade that moves the image.

A known finding that names "pipeline" (results/known.py) and explains some of the routed calls
turns a failing cell into an xfail only when the image passes with exactly those calls computed by
the fp64 reference and every other call still by the backend (a second run): what is left failing
is another bug, and fails the cell.

``--attn-compile`` adds compiled-pipeline cells (row ``sdpa+compile``, pipelines/compiled.py): the
denoiser compiled by torch.compile with its own SDPA, not routed (dynamo traces routing's
TorchFunctionMode into the graph), compared by the same two SSIMs; the SDPA nodes in the compiled
graph stand in for routed calls (zero fails). They replace the routed cells of the ``sdpa+compile``
op row, which would share their item ids.

Thresholds per dtype (DEFAULT_SSIM, calibrated on this project's CPU runs, see the numbers below),
overridable with the ``attn_pipeline_ssim`` ini key, one rule per line: ``bf16 ref=0.98 golden=0.96``
(``*`` for every dtype; later lines win).

Calibration (64x64, 4 steps, CPU, torch 2.13, diffusers 0.42): correct backends give ssim_ref
1.0000 in fp32, >= 0.9998 in fp16 and >= 0.989 in bf16; a softmax-scale-1.0 backend gives 0.68-0.92
in every dtype. fp32 goldens from another CPU differ by last-bit rounding only.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import Check, SuiteContext

if TYPE_CHECKING:
    from attnparity.backends.base import Backend
    from attnparity.pipelines.specs import PipelineSpec
    from attnparity.options import Rule
    from attnparity.results.known import Finding
    from attnparity.results.record import ResultRecord

#: dtype -> (attention-isolated threshold, golden threshold), minimum SSIM to pass.
DEFAULT_SSIM = {"fp32": (0.999, 0.995), "fp16": (0.995, 0.99), "bf16": (0.97, 0.95)}


def thresholds(rules: "tuple[Rule, ...]") -> dict[str, tuple[float, float]]:
    """DEFAULT_SSIM with the ``attn_pipeline_ssim`` rules (already parsed by options) applied."""
    table = dict(DEFAULT_SSIM)
    for rule in rules:  # later rules win, as in an ini file read top to bottom
        for name in table:
            if rule.matches(name):
                ref, gold = table[name]
                table[name] = (rule.values.get("ref", ref), rule.values.get("golden", gold))
    return table


def missing_packages() -> str | None:
    """Why pipeline items cannot run here (their optional packages are absent), or None."""
    from importlib.util import find_spec

    absent = [name for module, name in (("diffusers", "diffusers"), ("transformers", "transformers"),
                                        ("sentencepiece", "sentencepiece"), ("skimage", "scikit-image"),
                                        ("PIL", "pillow")) if find_spec(module) is None]
    if not absent:
        return None
    return f"pipeline checks need {', '.join(absent)}: pip install 'attnparity[pipelines]'"


def golden_dir(ctx: SuiteContext) -> Path:
    return ctx.options.golden_dir or ctx.rootdir / "golden"


def checks(ctx: SuiteContext) -> list[Check]:
    from attnparity.pipelines.specs import specs_for

    table = thresholds(ctx.options.pipeline_ssim)
    specs = specs_for(list(ctx.options.pipeline), ctx.rootdir)
    missing = missing_packages()
    out: list[Check] = []
    compiled = compiled_cells(ctx, [spec.name for spec in specs]) if ctx.options.compile else set()
    for spec in specs:
        for dtype in ctx.dtypes:
            if (spec.name, dtype) in compiled:
                run = functools.partial(run_compiled_check, ctx, spec, dtype, table[dtype])
                out.append(Check("pipeline", f"pipeline:{spec.name}", COMPILED_ROW, dtype, run,
                                 marks=("attn_pipeline",), skip=missing or compile_unavailable()))
        for backend in ctx.backends:
            if backend.name == COMPILED_ROW and compiled:
                continue  # under --attn-compile this row's pipeline cells are the compiled-denoiser ones
            for dtype in ctx.dtypes:
                skip = missing or ctx.unavailable(backend)
                if skip is None and dtype not in backend.capabilities.dtype_names:
                    skip = f"{backend.name} does not claim {dtype}"
                known = ctx.ledger.for_cell(backend.name, f"pipeline:{spec.name}", dtype, ctx.device, ctx.versions)
                run = functools.partial(run_check, ctx, spec, backend, dtype, table[dtype], known)
                out.append(Check("pipeline", f"pipeline:{spec.name}", backend.name, dtype, run,
                                 marks=("attn_pipeline",), skip=skip))
    return out


#: The row of compiled-pipeline cells (pipelines/compiled.py): the denoiser compiled, its own SDPA.
COMPILED_ROW = "sdpa+compile"


def compiled_cells(ctx: SuiteContext, names: list[str]) -> set[tuple[str, str]]:
    """(pipeline, dtype) pairs that get a compiled-denoiser cell under --attn-compile: every one on
    CUDA; on CPU, where compiling a denoiser takes minutes, CPU_PIPELINES x CPU_DTYPES only (and a
    user checkpoint, which the user asked for by name)."""
    from attnparity.pipelines.compiled import CPU_DTYPES, CPU_PIPELINES
    from attnparity.pipelines.specs import BUILTIN

    cuda = ctx.device.startswith("cuda")
    return {(name, dtype) for name in names for dtype in ctx.dtypes
            if cuda or ((name in CPU_PIPELINES or name not in BUILTIN) and dtype in CPU_DTYPES)}


def compile_unavailable() -> str | None:
    """Why torch.compile cannot run here (no torch.compile, no C++ compiler for inductor on CPU)."""
    from attnparity.backends.compiled import available

    return available()


_references: dict[tuple[str, str, str, str], tuple[Any, dict[str, Any]]] = {}


def reference_image(spec: "PipelineSpec", dtype: str, device: str) -> tuple[Any, dict[str, Any]]:
    """The fp64-reference-attention image of a pipeline and its routing stats, once per process."""
    from attnparity.pipelines import routing, specs

    key = (spec.name, spec.source, dtype, device)
    if key not in _references:
        pipe = specs.load_pipeline(spec, dtype, device)
        with routing.route(pipe, None) as stats:
            image = specs.run_pipeline(pipe, spec)
        _references[key] = (image, stats.to_extra())
    return _references[key]




def golden_command(ctx: SuiteContext, spec: "PipelineSpec", backend: str, dtype: str) -> str:
    """The exact command line that (re)creates this golden, run from the rootdir."""
    parts = ["pytest", f"--attn-backends={backend}", f"--attn-dtypes={dtype}"]
    if ctx.options.device != "auto":
        parts.append(f"--attn-device={ctx.options.device}")
    if ctx.options.golden_dir:
        parts.append(f"--attn-golden-dir={ctx.options.golden_dir}")
    if not spec.builtin:
        parts.append(f"--attn-pipeline={spec.source}")
    parts += ["-m", "attn_pipeline", "-k", f"'pipeline:{spec.name}'", "--attn-golden-update"]
    return f"cd {ctx.rootdir} && " + " ".join(parts)


def golden_class_command(ctx: SuiteContext) -> str:
    """The one command that writes every golden of this run's pipelines, dtypes and device class
    (the golden is the fp64-reference image, whichever backend runs)."""
    parts = ["pytest", "--attn-backends=sdpa-math", f"--attn-dtypes={','.join(ctx.options.dtypes)}"]
    if ctx.options.device != "auto":
        parts.append(f"--attn-device={ctx.options.device}")
    if ctx.options.golden_dir:
        parts.append(f"--attn-golden-dir={ctx.options.golden_dir}")
    parts += [f"--attn-pipeline={p}" for p in ctx.options.pipeline]
    parts += ["-m", "attn_pipeline", "--attn-golden-update"]
    return f"cd {ctx.rootdir} && " + " ".join(parts)


def run_check(ctx: SuiteContext, spec: "PipelineSpec", backend: "Backend", dtype: str,
              limits: tuple[float, float], known: "tuple[Finding, ...]" = ()) -> "ResultRecord":
    import numpy as np

    from attnparity.pipelines import golden, routing, specs
    from attnparity.pipelines.specs import PipelineSpecError
    from attnparity.pipelines.ssim import ssim
    from attnparity.results.record import ResultRecord

    record = ResultRecord("pipeline", f"pipeline:{spec.name}", backend.name, dtype, "pass")
    try:
        pipe = specs.load_pipeline(spec, dtype, ctx.device)
        reference, ref_stats = reference_image(spec, dtype, ctx.device)
    except PipelineSpecError as exc:
        record.verdict, record.message = "error", str(exc)
        return record

    def explain(case: Any) -> str | None:
        return next((f.id for f in known if f.explains(case)), None)

    wall, cpu = time.perf_counter(), time.process_time()
    with routing.route(pipe, backend, known=explain if known else None) as stats:
        image = specs.run_pipeline(pipe, spec)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    ref_limit, golden_limit = limits
    ssim_ref = ssim(image, reference)
    record.metrics = {"ssim_ref": round(ssim_ref.score, 6), "routed_calls": stats.routed,
                      "fallback_calls": stats.fallback_calls, "seconds": round(wall, 4), "cpu_seconds": round(cpu, 4)}
    record.extra = {**stats.to_extra(), "reference_calls": ref_stats["routed_calls"], "thresholds":
                    {"ref": ref_limit, "golden": golden_limit}, **spec.describe()}
    label = f"pipeline {spec.name} with {backend.name} in {dtype}"
    problems: list[str] = []
    lines: list[str] = []
    artifacts_for: list[tuple[str, Any, Any]] = []  # (against, expected image, ssim result)

    if stats.routed == 0:
        problems.append(f"routing caught no attention call: {backend.name} was never exercised "
                        f"({stats.fallback_calls} calls ran elsewhere); the image proves nothing")
    if stats.fallback:
        lines.append(stats.describe_fallback())
    bad = int((~np.isfinite(image)).sum())
    if bad:
        problems.append(f"{bad} image values are NaN or Inf (the fp64-reference image has none)")
    if not ssim_ref.score >= ref_limit:  # NaN compares false: it fails here, never passes
        problems.append(f"SSIM {ssim_ref.score:.4f} < {ref_limit} against the same pipeline with fp64 reference "
                        "attention (attention-isolated): attention alone moved the image")
        artifacts_for.append(("reference", reference, ssim_ref))
    else:
        lines.append(f"attention-isolated SSIM {ssim_ref.score:.4f} >= {ref_limit}")

    _golden_check(ctx, spec, backend.name, dtype, pipe, image, reference, golden_limit,
                  attention_ok=bool(ssim_ref.score >= ref_limit), record=record, problems=problems, lines=lines,
                  artifacts_for=artifacts_for)
    if artifacts_for:
        record.artifacts = _write_artifacts(ctx, spec.name, backend.name, dtype, image, artifacts_for)
        lines.append("images: " + ", ".join(f"{k} {v}" for k, v in record.artifacts.items()))
    if stats.known and not problems:
        lines.append("the image passes although known finding(s) explain some calls: "
                     + ", ".join(f"{fid} {n} call(s)" for fid, n in stats.known.items()))
    calls = ", ".join(f"{k} {v}" for k, v in sorted(stats.by_component.items()))
    lines.append(f"{stats.routed} attention calls routed to {backend.name} ({calls})")
    attention_failed = bool(bad) or not ssim_ref.score >= ref_limit
    if problems and stats.known and attention_failed and ("golden" in record.extra or golden.MISSING_KEY in record.extra):
        _judge_known(ctx, spec, backend, dtype, pipe, reference, limits, known, stats, explain, record, label,
                     problems + lines)
    else:
        _conclude(record, label, problems, lines)
    return record


def run_compiled_check(ctx: SuiteContext, spec: "PipelineSpec", dtype: str, limits: tuple[float, float], *,
                       inductor_config: dict[str, Any] | None = None, row: str = COMPILED_ROW) -> "ResultRecord":
    """A compiled-pipeline cell: the image with the denoiser compiled (pipelines/compiled.py), by SSIM
    against the eager fp64-attention image and against the golden. ``inductor_config`` and ``row``
    let a test plant a wrong graph pass under a row name of its own."""
    import numpy as np

    from attnparity.pipelines import compiled, specs
    from attnparity.pipelines.specs import PipelineSpecError
    from attnparity.pipelines.ssim import ssim
    from attnparity.results.record import ResultRecord

    record = ResultRecord("pipeline", f"pipeline:{spec.name}", row, dtype, "pass")
    try:
        reference, _ = reference_image(spec, dtype, ctx.device)
        holder = compiled.compiled_pipeline(spec, dtype, ctx.device, inductor_config=inductor_config,
                                            key="" if row == COMPILED_ROW else row)
    except (PipelineSpecError, ValueError) as exc:
        record.verdict, record.message = "error", str(exc)
        return record
    wall, cpu = time.perf_counter(), time.process_time()
    image = compiled.run_compiled(holder, spec)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    ref_limit, golden_limit = limits
    ssim_ref = ssim(image, reference)
    record.metrics = {"ssim_ref": round(ssim_ref.score, 6), "sdpa_nodes": holder.sdpa_nodes, "graphs": holder.graphs,
                      "seconds": round(wall, 4), "cpu_seconds": round(cpu, 4)}
    record.extra = {**holder.describe(), "thresholds": {"ref": ref_limit, "golden": golden_limit},
                    "compiled": "torch.compile(fullgraph=True, dynamic=False), inductor", **spec.describe()}
    label = f"pipeline {spec.name} with its {holder.component} compiled ({row}) in {dtype}"
    problems: list[str] = []
    lines: list[str] = []
    artifacts_for: list[tuple[str, Any, Any]] = []
    if holder.graphs == 0:
        problems.append(f"torch.compile handed no graph to inductor: the {holder.component} ran eagerly")
    elif holder.sdpa_nodes == 0:
        problems.append(f"no scaled_dot_product_attention in the {holder.graphs} compiled graph(s): the "
                        f"{holder.component}'s attention is not what was compiled; the image proves nothing about it")
    bad = int((~np.isfinite(image)).sum())
    if bad:
        problems.append(f"{bad} image values are NaN or Inf (the fp64-reference image has none)")
    if not ssim_ref.score >= ref_limit:
        problems.append(f"SSIM {ssim_ref.score:.4f} < {ref_limit} against the eager pipeline with fp64 reference "
                        f"attention: the compiled {holder.component} moved the image")
        artifacts_for.append(("reference", reference, ssim_ref))
    else:
        lines.append(f"SSIM {ssim_ref.score:.4f} >= {ref_limit} against the eager fp64-attention image")
    # the eager pipeline's config: the compiled one names its denoiser OptimizedModule, and the golden's
    # config hash would then call the same model another one
    _golden_check(ctx, spec, row, dtype, specs.load_pipeline(spec, dtype, ctx.device), image, reference, golden_limit,
                  attention_ok=bool(ssim_ref.score >= ref_limit), record=record, problems=problems, lines=lines,
                  artifacts_for=artifacts_for)
    if artifacts_for:
        record.artifacts = _write_artifacts(ctx, spec.name, row, dtype, image, artifacts_for)
        lines.append("images: " + ", ".join(f"{k} {v}" for k, v in record.artifacts.items()))
    first = "" if holder.first_image_s is None else f", first image (compile) {holder.first_image_s:.1f} s"
    lines.append(f"{holder.graphs} graph(s), {holder.sdpa_nodes} SDPA call(s) compiled, "
                 f"{holder.inductor_s:.1f} s in inductor{first}")
    _conclude(record, label, problems, lines)
    return record


def _conclude(record: "ResultRecord", label: str, problems: list[str], lines: list[str]) -> None:
    """A pipeline cell's verdict and message: failed with every problem first, or passed with its lines."""
    if problems:
        record.verdict = "fail"
        record.message = f"{label}:\n  " + "\n  ".join(problems + lines)
    else:
        record.message = f"{label}: " + "; ".join(lines)


def _judge_known(ctx: SuiteContext, spec: "PipelineSpec", backend: "Backend", dtype: str, pipe: Any,
                 reference: Any, limits: tuple[float, float], known: "tuple[Finding, ...]", stats: Any,
                 explain: Any, record: "ResultRecord", label: str, failure: list[str]) -> None:
    """A failing cell whose routed calls a known finding explains: run again with those calls sent to
    the fp64 reference; xfail if that image passes both comparisons, fail (another bug) if not."""
    from attnparity.pipelines import golden, routing, specs
    from attnparity.pipelines.ssim import ssim

    with routing.route(pipe, backend, known=explain, divert=True) as diverted:
        image = specs.run_pipeline(pipe, spec)
    ref_limit, golden_limit = limits
    found = _find_golden(ctx, spec, dtype)  # None: no golden for this device class yet (that half skipped)
    scores = {"ref": ssim(image, reference).score}
    if found is not None:
        scores["golden"] = golden.compare(found, image, specs.config_hash(pipe, spec)).score
    passes = scores["ref"] >= ref_limit and scores.get("golden", 1.0) >= golden_limit
    record.metrics.update({f"ssim_{k}_known_diverted": round(v, 6) for k, v in scores.items()})
    calls = ", ".join(f"{n} call(s) {fid}" for fid, n in stats.known.items())
    cites = [f for f in known if f.id in stats.known]
    shown = f"attention-isolated SSIM {scores['ref']:.4f} (needs {ref_limit}), " + (
        f"golden SSIM {scores['golden']:.4f} (needs {golden_limit})" if found is not None else "no golden yet")
    rerun = (f"with the {sum(stats.known.values())} call(s) the ledger explains ({calls}) computed by the fp64 "
             f"reference and the other {diverted.routed} by {backend.name}: {shown}")
    if passes:
        record.verdict = "xfail"
        record.extra["known"] = {f.id: {"met": stats.known[f.id], "reason": f.reason, "link": f.link,
                                        "source": f.source} for f in cites}
        record.message = (f"{label}: " + "; ".join(f"known finding {f.id}: {f.cite}" for f in cites)
                          + f"\n  explained: {rerun}\n  as run:\n    " + "\n    ".join(failure))
    else:
        record.verdict = "fail"
        record.message = (f"{label}:\n  " + "\n  ".join(failure)
                          + f"\n  NOT explained by the ledger: {rerun}. Another bug moves the image too.")


def _find_golden(ctx: SuiteContext, spec: "PipelineSpec", dtype: str) -> Any:
    """The golden of this pipeline, device class and dtype (pipelines.golden.GoldenFiles), or None.
    The shipped goldens stand in only for built-in pipelines and only when no directory was named."""
    from attnparity.machine import identify
    from attnparity.pipelines import golden

    return golden.find(golden_dir(ctx), spec.name, identify(ctx.device).golden_class, dtype,
                       spec.builtin and not ctx.options.golden_dir)


def _golden_check(ctx: SuiteContext, spec: "PipelineSpec", backend: str, dtype: str, pipe: Any, image: Any,
                  reference: Any, limit: float, *, attention_ok: bool, record: "ResultRecord",
                  problems: list[str], lines: list[str], artifacts_for: list[tuple[str, Any, Any]]) -> None:
    """The golden half of an item: write the golden when asked, find it, compare, explain."""
    from attnparity.pipelines import golden, specs
    from attnparity.machine import identify

    device = identify(ctx.device)
    cls = device.golden_class
    store = golden_dir(ctx)
    config_hash = specs.config_hash(pipe, spec)
    if ctx.options.golden_update:
        key = (spec.name, cls, dtype)
        if key not in ctx.goldens_written:  # once per session; the image is the reference one, whatever the backend
            paths = golden.write(store, spec.name, cls, dtype, reference,
                                 {**spec.describe(), "config_hash": config_hash, "device": device.name})
            ctx.goldens_written.add(key)
            record.extra["golden_written"] = str(paths.image)
            lines.append(f"golden written: {paths.image}")
    found = _find_golden(ctx, spec, dtype)
    if found is None:
        expected = golden.GoldenPaths.under(store, spec.name, cls, dtype).image
        if ctx.options.golden_required:
            problems.append(f"no golden image {expected} (--attn-golden-required). Create it (fp64 reference "
                            f"attention, this machine) with:\n    {golden_command(ctx, spec, backend, dtype)}")
            return
        # A device class without goldens (every new GPU) starts green where the kernels are right: the
        # cell stands on the attention-isolated comparison, and the summary says once how to write them.
        record.extra[golden.MISSING_KEY] = {"device_class": cls, "expected": str(expected),
                                        "command": golden_class_command(ctx)}
        lines.append(f"no golden for {cls} yet ({expected}): golden half skipped; write this one with "
                     f"{golden_command(ctx, spec, backend, dtype)}")
        return
    result = golden.compare(found, image, config_hash)
    record.metrics["ssim_golden"] = round(result.score, 6)
    record.extra["golden"] = str(found.image)
    if result.notes:
        record.extra["golden_notes"] = result.notes
        lines.extend(result.notes)
    if result.score >= limit:
        lines.append(f"golden SSIM {result.score:.4f} >= {limit} ({found.image})")
        return
    why = ("; " + "; ".join(result.notes)) if result.notes else ""
    if attention_ok:  # attention matches the reference here, so the image moved for another reason
        advice = ("attention matches the reference on this machine, so something else moved the image (torch, "
                  "diffusers, the pipeline config, the CPU/GPU). If that change is expected, regenerate with:\n"
                  f"    {golden_command(ctx, spec, backend, dtype)}")
    else:
        advice = "the attention-isolated check fails too: the backend, not the golden, is the likely cause"
    problems.append(f"SSIM {result.score:.4f} < {limit} against the golden {found.image}{why}. {advice}")
    artifacts_for.append(("golden", result.expected, result.diff_map))


def _write_artifacts(ctx: SuiteContext, pipeline: str, backend: str, dtype: str, image: Any,
                     against: list[tuple[str, Any, Any]]) -> dict[str, str]:
    from attnparity.pipelines.ssim import diff_image, save_png

    base = ctx.artifacts_dir / "pipelines"
    stem = f"{pipeline}-{backend.replace(':', '_')}-{dtype}"
    out = {"actual": str(save_png(image, base / f"{stem}-actual.png"))}
    for name, expected, result in against:
        out[name] = str(save_png(expected, base / f"{stem}-{name}.png"))
        out[f"{name}_ssim_map"] = str(save_png(diff_image(result), base / f"{stem}-{name}-ssim-map.png"))
    return out
