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
