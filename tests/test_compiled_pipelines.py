"""--attn-compile (issue 14, part 2): pipeline cells with the denoiser compiled by torch.compile.

Which cells exist (cheap), then the proof: the compiled pixart cell passes both SSIM comparisons,
and the same cell compiled with an inductor graph pass that sets every SDPA call's scale to 1.0
(the classic softmax-scale bug, planted in the compiled code only) fails by SSIM. Each compile of
the pixart transformer is a few CPU seconds in this process plus inductor's C++ builds: 207 s wall
at load 10 on the shared 2-core machine, far less on a quiet one or on an FX-graph-cache hit
(docs/compile.md); the two compiles are this file's whole cost (whole file: 76 s at load 6-7).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("skimage")

from attnparity.backends import compiled as compiled_rows  # noqa: E402
from attnparity.backends.registry import select_backends  # noqa: E402
from attnparity.check.tolerance import Tolerances  # noqa: E402
from attnparity.options import Options  # noqa: E402
from attnparity.pipelines import compiled, routing, specs  # noqa: E402
from attnparity.suite import SuiteContext  # noqa: E402
from attnparity.suite import perf_pipelines, pipelines  # noqa: E402

ROOT = Path(__file__).parent.parent
needs_compile = pytest.mark.skipif(compiled_rows.available() is not None, reason=str(compiled_rows.available()))


def _ctx(tmp_path: Path, backends: str = "sdpa,sdpa+compile", **options) -> SuiteContext:
    opts = Options(backends=backends, dtypes=("fp32", "bf16"), artifacts=tmp_path / "artifacts", **options)
    return SuiteContext(select_backends(backends), "cpu", opts, Tolerances(), None, ROOT)


def _ids(checks) -> list[str]:
    return [f"{c.check}[{c.item_param}]" for c in checks]


def test_attn_compile_adds_one_compiled_cell_per_cpu_pipeline_and_dtype(tmp_path: Path) -> None:
    plain = _ids(pipelines.checks(_ctx(tmp_path)))
    assert "pipeline:pixart[sdpa+compile-fp32]" in plain  # without the option: the routed op row
    ctx = _ctx(tmp_path, compile=True)
    cells = pipelines.checks(ctx)
    ids = _ids(cells)
    assert len(ids) == len(set(ids)), "an item id twice"
    compiled_ids = [i for i, c in zip(ids, cells) if c.backend == "sdpa+compile"]
    expected = [f"pipeline:{p}[sdpa+compile-{d}]" for p in compiled.CPU_PIPELINES for d in compiled.CPU_DTYPES]
    assert compiled_ids == expected, "on CPU only the cheap pipelines and dtypes are compiled"
    # the compiled cell replaced the routed one: its function is the compiled-denoiser check
    cell = cells[ids.index(expected[0])]
    assert cell.run.func is pipelines.run_compiled_check
    # perf: present under --attn-compile even in the quick mode, absent without it on CPU
    assert _ids(perf_pipelines.checks(_ctx(tmp_path))) == []
    perf = perf_pipelines.checks(ctx)
    assert _ids(perf) == [f"perf-pipeline:{p}[sdpa+compile-{d}]" for p in compiled.CPU_PIPELINES
                          for d in compiled.CPU_DTYPES]
    assert perf[0].run.func is perf_pipelines.run_compiled_perf


def test_a_compiled_pipeline_refuses_to_run_under_routing(tmp_path: Path) -> None:
    spec = specs.builtin_spec(compiled.CPU_PIPELINES[0])
    holder = compiled.compiled_pipeline(spec, "fp32", key="test-refuses")  # not compiled until it runs
    with routing.route(holder.pipe, None), pytest.raises(RuntimeError, match="TorchFunctionMode"):
        compiled.run_compiled(holder, spec)
    assert holder.graphs == 0 and holder.first_image_s is None


class _ScaleOne:
    """An inductor post-grad pass setting the scale of every SDPA call in the graph to 1.0; counts
    the calls it changed, so a pass that finds nothing to break cannot pass for a caught bug."""

    def __init__(self) -> None:
        from torch._inductor.custom_graph_pass import CustomGraphPass

        outer = self

        class Pass(CustomGraphPass):
            def __call__(self, graph) -> None:
                for node in graph.nodes:
                    if node.op == "call_function" and "scaled_dot_product" in str(node.target):
                        node.kwargs = {**node.kwargs, "scale": 1.0}
                        outer.changed += 1

            def uuid(self) -> str:
                # Keys the FX graph cache: unique per instance, so the mutant reuses neither a
                # correct graph nor its own graph cached by an earlier run (inductor's cache outlives
                # the process: a hit would skip the pass and count nothing).
                return token

        import uuid as _uuid

        token = f"attnparity-test-sdpa-scale-one-{_uuid.uuid4()}"
        self.changed = 0
        self.graph_pass = Pass()


@needs_compile
def test_compiled_pipeline_passes_and_a_wrong_compiled_scale_fails_by_ssim(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, compile=True)
    spec = specs.builtin_spec(compiled.CPU_PIPELINES[0])
    limits = pipelines.thresholds(())["fp32"]

    good = pipelines.run_compiled_check(ctx, spec, "fp32", limits)
    assert good.verdict == "pass", good.message
    assert good.metrics["graphs"] >= 1 and good.metrics["sdpa_nodes"] >= 1
    assert "ssim_golden" in good.metrics  # compared against the committed golden too
    assert "another pipeline config" not in good.message  # the golden's config hash is the eager model's

    mutant = _ScaleOne()
    bad = pipelines.run_compiled_check(ctx, spec, "fp32", limits, row="sdpa+compile-scale-one",
                                       inductor_config={"post_grad_custom_post_pass": mutant.graph_pass})
    assert mutant.changed >= 1, "the planted pass found no SDPA call in the compiled graph"
    assert bad.verdict == "fail", f"a compiled denoiser with softmax scale 1.0 passed: {bad.message}"
    assert bad.metrics["ssim_ref"] < limits[0] and "moved the image" in bad.message
    assert Path(bad.artifacts["reference_ssim_map"]).is_file()


@needs_compile
def test_compiled_perf_reports_speedup_and_compile_time_apart(tmp_path: Path) -> None:
    """Reuses the compiled pixart of the test above when run after it (one compile per process)."""
    from attnparity.suite.perf import GateSettings

    ctx = _ctx(tmp_path, compile=True)
    spec = specs.builtin_spec(compiled.CPU_PIPELINES[0])
    record = perf_pipelines.run_compiled_perf(ctx, spec, "fp32", "quick", None, GateSettings.from_options(ctx.options))
    assert record.verdict == "pass", record.message
    m = record.metrics
    assert m["images_per_s"] > 0 and m["eager_images_per_s"] > 0 and m["speedup_eager"] > 0
    # the first image compiled: it took longer than a steady one, and that time is reported apart
    assert m["first_image_s"] * 1e3 > m["ms"] and m["compile_s"] > 0 and m["inductor_s"] > 0
    assert "compile" in record.message and "x eager" in record.message
