"""The op suite's run conditions (attnparity/suite/op.py), apart from what its checks judge."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings

from attnparity import Backend, Capabilities
from attnparity.check.tolerance import Tolerances
from attnparity.options import Options
from attnparity.session import hypothesis_settings
from attnparity.suite import SuiteContext
from attnparity.suite.op import run_op


def _counting_backend(seen: set[int]) -> Backend:
    def sdpa_noting_threads(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
        seen.add(torch.get_num_threads())
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                                                scale=scale)

    return Backend("notes-threads", sdpa_noting_threads, Capabilities(masks=set(), causal=False, gqa=False))


@pytest.mark.parametrize("check, expected", [("forward", 1), ("kwargs", 1), ("deterministic", 2)])
def test_cpu_op_cells_run_single_threaded_except_the_determinism_check(check: str, expected: int, tmp_path) -> None:
    seen: set[int] = set()
    backend = _counting_backend(seen)
    ctx = SuiteContext(backends=[backend], device="cpu", options=Options(dtypes=("fp32",), examples=3),
                       tolerances=Tolerances(), hypothesis_settings=settings(hypothesis_settings(3), database=None),
                       rootdir=tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        record = run_op(ctx, backend, "fp32", check)
        assert torch.get_num_threads() == 2, "the cell did not restore the session's thread count"
    finally:
        torch.set_num_threads(before)
    assert record.verdict == "pass", record.message
    assert seen == {expected}


TF32_CONFTEST = '''
import torch
from attnparity import Backend, Capabilities, register_backend
from attnparity.backends import registry as _registry
from attnparity.backends.naive import naive_attention

# the user's own setting, which the run must override
torch.set_float32_matmul_precision("high")
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True

def tf32_where_allowed(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # what an Ampere GPU does to an fp32 matmul when TF32 is allowed: 10 mantissa bits
    if torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest":
        q, k, v = (t.view(torch.int32).bitwise_and(-8192).view(torch.float32) for t in (q, k, v))
    return naive_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)

register_backend(Backend("tf32-standin", tf32_where_allowed, Capabilities(devices={"cpu"})), replace=True)

def pytest_unconfigure(config):
    _registry.unregister_backend("tf32-standin")
'''


def test_the_run_pins_fp32_matmuls_to_full_fp32_and_records_it(pytester: pytest.Pytester, tmp_path) -> None:
    """A user who allowed TF32 still gets an fp32 matrix at full fp32: the setting is applied for the
    run (a stand-in that rounds to TF32 where allowed, as a GPU does, passes) and recorded."""
    import json

    from attnparity.check.cases import AttnCase
    from attnparity.check.parity import check_parity

    pytester.makeconftest(TF32_CONFTEST)
    result = pytester.runpytest("--attn-backends=tf32-standin", "--attn-dtypes=fp32", "--attn-examples=3", "-m",
                                "attn_op", "-k", "forward", "-p", "no:cacheprovider", f"--attn-report={tmp_path}")
    assert result.ret == 0, result.stdout.str()[-3000:]
    run = json.loads((tmp_path / "results.json").read_text())
    pinned = {"float32_matmul_precision": "highest", "cuda.matmul.allow_tf32": "False", "cudnn.allow_tf32": "False"}
    assert pinned.items() <= run["numerics"].items(), run["numerics"]
    assert all(pinned.items() <= r["numerics"].items() for r in run["records"])

    # the stand-in is a real TF32 kernel: with TF32 allowed, its fp32 output fails
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        import importlib.util

        spec = importlib.util.spec_from_file_location("tf32_conftest", pytester.path / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        backend = Backend("tf32", module.tf32_where_allowed, Capabilities(devices={"cpu"}))
        failed = check_parity(backend, AttnCase(heads=2, sq=33, skv=40, head_dim=64, seed=2))
    finally:
        torch.set_float32_matmul_precision(before)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        from attnparity.backends import registry

        registry.unregister_backend("tf32-standin")
    assert not failed.passed, failed.metrics
