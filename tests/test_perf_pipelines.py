"""Pipeline-level perf items: images/s per backend and the speed-up over the default attention."""

from __future__ import annotations

import json

import pytest
import torch  # noqa: F401  (imported before any inline run: pytester's sys.modules snapshot must keep it)
import torch.nn.functional  # noqa: F401

pytest.importorskip("diffusers")

#: Each attention call sleeps 20 ms, then computes the right thing: a backend known to be slow.
CONFTEST = """
import time
import torch.nn.functional as F
from attnparity import Backend, register_backend

def sluggish(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    time.sleep(0.02)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                                          enable_gqa=q.shape[1] != k.shape[1])

register_backend(Backend("sluggish", sluggish), replace=True)
"""
#: Three interleaved runs each, no time budget: the test is about the arithmetic and the routing.
PATCH_SETTINGS = """
from attnparity.perf.timer import TimerSettings
from attnparity.suite import perf_pipelines
perf_pipelines.pipeline_settings = lambda device, mode: TimerSettings(0, 0, 3, 3)
"""


def test_pipeline_perf_reports_images_per_second_and_a_slow_backend_is_slower(pytester: pytest.Pytester) -> None:
    # A subprocess: an in-process run would leave diffusers' lazily imported pipeline modules
    # dropped by pytester's sys.modules snapshot, and later save/load tests of this process fail.
    pytester.makeconftest(CONFTEST + PATCH_SETTINGS)
    result = pytester.runpytest_subprocess("--attn-backends=sluggish", "--attn-dtypes=fp32", "--attn-isolate=none", "--attn-perf=full",
                                           "-m", "attn_perf", "-k", "perf-pipeline:pixart", "-p", "no:cacheprovider",
                                           "--attn-report=out")
    result.assert_outcomes(passed=1)
    records = json.loads((pytester.path / "out" / "results.json").read_text())["records"]
    (rec,) = [r for r in records if r["check"] == "perf-pipeline:pixart"]
    m = rec["metrics"]
    assert m["images_per_s"] == pytest.approx(1e3 / m["ms"])
    assert m["routed_calls"] > 0 and m["fallback_calls"] == 0
    # every routed call sleeps 20 ms: far slower than the same pipeline routed through sdpa
    assert m["ms"] >= 20 * m["routed_calls"]
    assert m["speedup_default"] < 0.9
    assert m["speedup_default"] == pytest.approx(rec["extra"]["default_routed_ms"] / m["ms"])
    assert rec["extra"]["device_label"] == "CPU (1 torch thread)"  # run_pipeline's own thread count


def test_pipeline_perf_belongs_to_full_on_cpu(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    quick = pytester.runpytest_inprocess("--attn-backends=sluggish", "--attn-dtypes=fp32", "--attn-isolate=none", "-m", "attn_perf",
                                         "--collect-only", "-q", "-p", "no:cacheprovider")
    assert "perf-pipeline:" not in quick.stdout.str()
    full = pytester.runpytest_inprocess("--attn-backends=sluggish", "--attn-dtypes=fp32", "--attn-isolate=none", "-m", "attn_perf",
                                        "--attn-perf=full", "--collect-only", "-q", "-p", "no:cacheprovider")
    full.stdout.fnmatch_lines(["attnparity::perf-pipeline:sd15[[]sluggish-fp32[]]"])
