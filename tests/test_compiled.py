"""Compiled rows (issue 14): selection, parity of correct compiled rows, a bounded graph count, and
wrong compiled paths caught: an inductor graph pass, registered only here, that drops the scale or
the mask of the SDPA call in the compiled graph.

Compiling costs seconds per graph on CPU, so these tests reuse one compiled row per test module and
keep to sdpa+compile (inductor calls torch's kernel: under a second per graph) except one case of
naive+compile, whose code inductor generates (20-70 s on a loaded 2-core machine, about 1 s on an
FX-graph-cache hit: TORCHINDUCTOR_CACHE_DIR, see docs/compile.md).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from attnparity.backends import compiled  # noqa: E402
from attnparity.backends.base import Backend  # noqa: E402
from attnparity.backends.registry import get_backend, select_backends  # noqa: E402
from attnparity.check.cases import AttnCase  # noqa: E402
from attnparity.check.parity import check_grads, check_parity  # noqa: E402
from attnparity.check.tolerance import Tolerances  # noqa: E402

pytestmark = pytest.mark.skipif(compiled.available() is not None, reason=str(compiled.available()))

COMPILED = ("sdpa+compile", "naive+compile", "matmul+compile")

#: Cases over the structures a compiled row sees: no mask, bool, float with dead rows, causal, GQA,
#: a non-default scale; shapes differ case to case so dynamic shapes must hold.
CASES = (
    dict(batch=2, heads=2, kv_heads=2, sq=17, skv=97, head_dim=40),
    dict(batch=3, heads=4, kv_heads=2, sq=33, skv=65, head_dim=64, scale=0.5),
    dict(batch=2, heads=3, kv_heads=3, sq=29, skv=31, head_dim=64, mask="random", mask_type="bool"),
    dict(batch=2, heads=4, kv_heads=4, sq=31, skv=47, head_dim=40, mask="dead-rows", mask_type="float"),
    dict(batch=2, heads=2, kv_heads=2, sq=40, skv=17, head_dim=64, causal="top-left"),
    dict(batch=3, heads=2, kv_heads=2, sq=21, skv=77, head_dim=40, scale=1.0),
)


def _drop_arg(name: str):
    """An inductor post-grad pass that removes argument ``name`` from every SDPA call in the graph:
    the kernel then runs with its default (scale 1/sqrt(D), no mask)."""
    from torch._inductor.custom_graph_pass import CustomGraphPass

    class Drop(CustomGraphPass):
        def __call__(self, graph) -> None:
            for node in graph.nodes:
                if node.op != "call_function" or "scaled_dot_product" not in str(node.target):
                    continue
                kwargs = dict(node.kwargs)
                if name in kwargs:
                    kwargs[name] = None
                    node.kwargs = kwargs
                    continue
                schema = getattr(node.target, "_schema", None)
                names = [a.name for a in schema.arguments] if schema is not None else []
                if name in names and names.index(name) < len(node.args):
                    args = list(node.args)
                    args[names.index(name)] = None
                    node.args = tuple(args)

        def uuid(self) -> str:  # keys the FX graph cache: a mutant never reuses a correct graph
            return f"attnparity-test-drop-{name}"

    return Drop()


def _mutant(name: str, dropped: str) -> Backend:
    correct = get_backend("sdpa+compile")
    fn = compiled.compiled_fn(name, compiled._sdpa, inductor_config={"post_grad_custom_post_pass": _drop_arg(dropped)})
    return Backend(name, fn, correct.capabilities)


def _case(dtype: str, **fields) -> AttnCase:
    return AttnCase(dtype=dtype, seed=7, **fields)


def test_compiled_rows_are_opt_in_on_cpu_and_selected_by_name_or_glob() -> None:
    names = {b.name for b in select_backends("all")}
    chosen = {b.name for b in select_backends("*+compile")}
    assert chosen == set(COMPILED)
    if torch.cuda.is_available():
        assert set(COMPILED) | {"flex"} <= names
    else:
        assert not (set(COMPILED) | {"flex"}) & names, "compiled rows must stay out of 'all' on CPU"
        assert all(get_backend(n).opt_in for n in (*COMPILED, "flex"))
    assert {b.name for b in select_backends("flex,sdpa+compile")} == {"flex", "sdpa+compile"}


def test_compiled_rows_claim_only_baked_in_scales() -> None:
    caps = get_backend("sdpa+compile").capabilities
    assert _case("fp32", scale=0.5).outside(caps) is None
    assert "scale" in (_case("fp32", scale=0.37).outside(caps) or "")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_sdpa_compile_matches_fp64_without_a_graph_per_shape(dtype: str) -> None:
    backend = get_backend("sdpa+compile")
    for fields in CASES:
        result = check_parity(backend, _case(dtype, **fields), Tolerances())
        assert result.passed, result.message
    before = compiled.compile_stats()[backend.name].graphs
    # The structure of CASES[0] (no mask, default scale, head_dim 40) at new batch, head and
    # sequence sizes: dynamic shapes take them all in the graph already compiled.
    for b, h, sq, skv in ((3, 5, 50, 70), (2, 3, 9, 200), (4, 2, 65, 33)):
        shape = dict(CASES[0], batch=b, heads=h, kv_heads=h, sq=sq, skv=skv)
        assert check_parity(backend, _case(dtype, **shape), Tolerances()).passed
    graphs = compiled.compile_stats()[backend.name].graphs - before
    assert graphs == 0, f"{graphs} new graphs for 3 new shapes of one structure: shapes are recompiling"


def test_sdpa_compile_backward_matches_fp64() -> None:
    backend = get_backend("sdpa+compile")
    for fields in (CASES[0], CASES[2]):
        result = check_grads(backend, _case("fp32", **fields), Tolerances())
        assert result.passed, result.message


@pytest.mark.parametrize("dropped, case", [
    ("scale", dict(batch=2, heads=2, kv_heads=2, sq=17, skv=33, head_dim=64, scale=1.0)),
    ("attn_mask", dict(batch=2, heads=2, kv_heads=2, sq=17, skv=33, head_dim=64, mask="random", mask_type="bool")),
])
def test_a_graph_pass_that_drops_an_argument_is_caught(dropped: str, case: dict) -> None:
    mutant = _mutant(f"sdpa+compile-drops-{dropped}", dropped)
    result = check_parity(mutant, _case("fp32", **case), Tolerances())
    assert not result.passed, f"a compiled SDPA without its {dropped} passed: {result.message}"
    # ...and the same case passes without the pass (the failure is the pass's, not the case's)
    assert check_parity(get_backend("sdpa+compile"), _case("fp32", **case), Tolerances()).passed


def test_naive_compile_classic_processor_matches_fp64() -> None:
    backend = get_backend("naive+compile")
    result = check_parity(backend, _case("fp32", **CASES[3]), Tolerances())
    assert result.passed, result.message
    assert compiled.compile_stats()[backend.name].graphs >= 1  # it really went through inductor


def test_a_compiled_item_compiles_about_a_graph_per_structure_not_per_case() -> None:
    """suite/op.py keeps a compiled row's item to Backend.structures input structures (spread over
    mask kind, causal, GQA, scale, sizes of 1), with many shapes and values in each; dynamic shapes
    make each structure one graph. Measured on the whole compiled set: 4 to 10 graphs a forward
    item (docs/compile.md) where there had been about one every two cases."""
    from pathlib import Path

    from attnparity.options import Options
    from attnparity.session import hypothesis_settings
    from attnparity.suite import SuiteContext, op

    backend = get_backend("sdpa+compile")
    ctx = SuiteContext([backend], "cpu", Options(backends=backend.name, dtypes=("fp32",), seed=3), Tolerances(),
                       hypothesis_settings(10), Path("."))
    before = compiled.compile_stats().get(backend.name, compiled.CompileStats())
    graphs, calls = before.graphs, before.calls
    record = op.run_op(ctx, backend, "fp32", "forward")
    after = compiled.compile_stats()[backend.name]
    assert record.verdict == "pass", record.message
    assert record.extra["structures"] == backend.structures == compiled.STRUCTURES["sdpa+compile"]
    assert after.calls - calls >= 40  # the corpus's edges and the draws, within those structures
    # a few more than the structures: dynamo also guards on what a structure cannot see (a size
    # range on either side of a kernel's choice), measured 10 for 8 on the whole set
    new = after.graphs - graphs
    assert new <= backend.structures + 3, f"{new} graphs for {after.calls - calls} calls"
