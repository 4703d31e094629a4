"""Our CUDA timer against triton.testing.do_bench, and a physically possible matmul peak.

Runs only where torch sees a GPU (skipped on CPU machines); on a GPU it must run, not skip:
triton ships with CUDA builds of torch.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")


def sdpa_call():
    import torch.nn.functional as F

    # SDXL's level-2 self-attention, CFG batch: a real shape, fp16
    q, k, v = (torch.randn(2, 10, 4096, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    return lambda: F.scaled_dot_product_attention(q, k, v)


def test_cuda_timer_agrees_with_triton_do_bench() -> None:
    import triton.testing

    from attnparity.perf import timer as perf

    fn = sdpa_call()
    ours = perf.time_cuda(fn, settings=perf.settings_for("cuda", "quick"))
    theirs = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    print(f"attnparity {ours.median_ms:.4f} ms (cv {ours.cv:.3f}, {ours.reps} runs) vs do_bench {theirs:.4f} ms")
    assert ours.reps >= 10
    assert 0.85 < ours.median_ms / theirs < 1.15


def test_cuda_matmul_peak_is_physically_possible() -> None:
    from attnparity.perf.peak import matmul_peak
    from attnparity.perf.timer import settings_for

    peak = matmul_peak("cuda", "fp16", settings_for("cuda", "quick"))
    # dense fp16 tensor-core peaks of current GPUs lie between ~10 and ~2500 TFLOP/s; a timing
    # that forgot to synchronise reports far more
    assert 5 < peak.tflops < 5000, peak.describe()
