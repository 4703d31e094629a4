"""Backends that compile per input structure (Backend.structures, issue 14 part 3): what a structure
is, how an item's structures are chosen and kept to, and that an item of such a backend calls it on
no more structures than its bound. Eager stand-ins only: nothing here compiles (tests/test_compiled.py
counts real graphs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnparity import Backend, Capabilities
from attnparity.backends.naive import naive_attention
from attnparity.check.cases import AttnCase
from attnparity.check.strategies import (WORK_BUDGET, edge_corpus, neighbours, onto, spread_structures, structure,
                                         structure_with, within_structures)
from attnparity.check.tolerance import Tolerances
from attnparity.options import Options
from attnparity.session import hypothesis_settings
from attnparity.suite import SuiteContext, op

#: What the codegen compiled rows claim on CPU (backends/compiled.py).
CODEGEN = Capabilities(dtypes={torch.float32, torch.bfloat16}, head_dims=frozenset({40, 64, 72, 80, 128, 160}),
                       backward=True, constraint=lambda c: None if c.scale in (None, 1.0, 0.5, 0.05) else "scale")
BASE = AttnCase(batch=2, heads=4, kv_heads=2, sq=33, skv=65, head_dim=40, mask="random", mask_type="float", seed=3)


def test_a_structure_is_what_a_dynamic_shape_graph_is_compiled_for() -> None:
    same = [BASE.with_(batch=3, sq=17, skv=200), BASE.with_(heads=8, kv_heads=4), BASE.with_(mask="padding"),
            BASE.with_(mask_dims="BH", mask_layout="sliced", masked_value="min"), BASE.with_(seed=9, magnitude=6.0),
            BASE.with_(layout="transposed", v_scale=1e3)]
    assert {structure(c) for c in same} == {structure(BASE)}
    other = [BASE.with_(mask="none"), BASE.with_(mask_type="bool"), BASE.with_(causal="top-left"),
             BASE.with_(kv_heads=4), BASE.with_(batch=1), BASE.with_(sq=1), BASE.with_(kv_heads=1),
             BASE.with_(head_dim=64), BASE.with_(scale=0.5), BASE.with_(dtype="bf16")]
    keys = [structure(c) for c in other]
    assert structure(BASE) not in keys and len(set(keys)) == len(keys)
    # under a given scale, head_dim is a size like any other (the scale is the graph's constant)
    assert structure(BASE.with_(scale=1.0, head_dim=64)) == structure(BASE.with_(scale=1.0, head_dim=160))


def test_onto_moves_a_case_into_the_template_structure_keeping_what_it_can() -> None:
    template = AttnCase(batch=1, heads=2, kv_heads=2, sq=17, skv=65, head_dim=64, causal="top-left", seed=1)
    drawn = AttnCase(batch=3, heads=4, kv_heads=2, sq=40, skv=90, head_dim=40, mask="padding", layout="packed",
                     magnitude=3.0, seed=77)
    moved = onto(drawn, template, CODEGEN)
    assert structure(moved) == structure(template) and moved.outside(CODEGEN) is None
    assert (moved.sq, moved.skv, moved.layout, moved.magnitude, moved.seed) == (40, 90, "packed", 3.0, 77)
    assert moved.batch == 1 and moved.heads == moved.kv_heads and moved.head_dim == 64  # D: the scale's constant
    masked = onto(drawn.with_(mask="none"), BASE, CODEGEN)  # a mask the drawn case lacked: the template's
    assert structure(masked) == structure(BASE) and masked.work <= WORK_BUDGET


def _flex_key(case: AttnCase) -> tuple:
    from attnparity.backends.flex import structure_key

    return structure_with(structure_key)(case)


@settings(max_examples=80, deadline=None, database=None)
@given(st.data())
def test_drawn_cases_keep_to_the_chosen_structures(data) -> None:
    dtype = data.draw(st.sampled_from(["fp32", "bf16"]))
    count = data.draw(st.integers(1, 10))
    from attnparity.backends.flex import structure_key

    more = data.draw(st.sampled_from([None, structure_key]))  # the generic key, and a finer one (flex's)
    key = structure_with(more)
    corpus = edge_corpus(CODEGEN, dtype)
    kept, strategy, n = within_structures(corpus, count, CODEGEN, dtype, more=more)
    chosen = {key(c) for c in kept}
    assert len(chosen) == n <= count
    case = data.draw(strategy)
    # within the draws' work budget, or no more than a corpus case (a template) that exceeds it
    assert key(case) in chosen and case.outside(CODEGEN) is None
    assert case.work <= max(WORK_BUDGET, *(c.work for c in kept))


def test_the_chosen_structures_spread_over_the_axes() -> None:
    corpus = edge_corpus(CODEGEN, "fp32")
    kept, _, n = within_structures(corpus, 8, CODEGEN, "fp32")
    assert n == 8 and all(c.outside(CODEGEN) is None for c in kept)
    assert {c.mask_tensor_kind for c in kept} == {None, "bool", "float"}
    assert {c.causal for c in kept} == {None, "top-left"}
    assert {c.kv_heads != c.heads for c in kept} == {True, False}
    assert {c.batch == 1 for c in kept} == {True, False} and any(c.sq == 1 for c in kept)
    assert {c.scale is None for c in kept} == {True, False}
    assert {(c.mask_tensor_kind is not None, c.causal is not None) for c in kept} >= {(True, True)}  # a pair too
    # ...keeping most of the corpus's edges (moved into those structures), not one case per structure
    assert len(kept) >= 0.8 * len(corpus)
    assert {c.skv for c in corpus} <= {c.skv for c in kept}
    # the first structures are the ones the items with a smaller bound try: deterministic, a prefix
    assert spread_structures(corpus + [m for c in corpus for m in neighbours(c, CODEGEN)], 2, corpus) == \
        spread_structures(corpus + [m for c in corpus for m in neighbours(c, CODEGEN)], 8, corpus)[:2]


def _structure_of_call(q, k, v, attn_mask, is_causal, scale) -> tuple:
    """The structure of one backend call, from its arguments alone (what dynamo would guard on)."""
    b, h, sq, d = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    return (q.dtype, grad, d ** -0.5 if scale is None else scale, None if attn_mask is None else attn_mask.dtype,
            is_causal, h != hkv, tuple(n == 1 for n in (b, h, hkv, sq, skv)))


@pytest.mark.parametrize("check", ["forward", "backward", "batch"])
def test_an_item_calls_a_structured_backend_on_its_bound_of_structures(check: str) -> None:
    calls: list[tuple] = []

    def fn(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
        calls.append(_structure_of_call(q, k, v, attn_mask, is_causal, scale))
        return naive_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)

    backend = Backend("structured", fn, CODEGEN, structures=6)
    ctx = SuiteContext([backend], "cpu", Options(backends="structured", dtypes=("fp32",)), Tolerances(),
                       hypothesis_settings(6), Path("."))
    record = op.run_op(ctx, backend, "fp32", check)
    assert record.verdict == "pass", record.message
    bound = op.structure_count(backend, check)
    assert record.extra["structures"] == bound == (6 if check == "forward" else op.MIN_STRUCTURES)
    # forward and backward call the backend on the drawn case itself; the batch check also on a
    # batch of 1 (its own structure when B > 1), so at most twice the bound
    assert len(set(calls)) <= (bound if check != "batch" else 2 * bound)
    unbounded = Backend("free", fn, CODEGEN)
    assert op.structure_count(unbounded, check) is None


def test_structures_must_be_positive() -> None:
    with pytest.raises(ValueError, match="structures"):
        Backend("x", naive_attention, structures=0)
    with pytest.raises(ValueError, match="structure_key is only read with structures"):
        Backend("x", naive_attention, structure_key=structure)


@pytest.mark.parametrize("n", [1, 2, 3, 6, 9])
def test_the_other_items_never_try_more_structures_than_forward(n: int) -> None:
    backend = Backend("x", naive_attention, CODEGEN, structures=n)
    bounds = [op.structure_count(backend, check) for check in op.OP_CHECKS]
    assert max(bounds) == op.structure_count(backend, "forward") == n
    assert min(bounds) == min(n, op.MIN_STRUCTURES) or min(bounds) == n // op.SECONDARY_SHARE


def test_claims_no_edge_case_fits_still_keep_to_the_bound() -> None:
    caps = Capabilities(dtypes={torch.float32}, head_dims=frozenset({48}))
    assert edge_corpus(caps, "fp32") == []
    kept, strategy, n = within_structures([], 3, caps, "fp32")
    assert n == 3 and len({structure(c) for c in kept}) == 3
    assert all(c.head_dim == 48 and c.outside(caps) is None for c in kept)


def test_flex_keeps_most_edges_and_masks_over_several_blocks() -> None:
    from attnparity.backends.flex import STRUCTURES, structure_key

    flex = Capabilities(dtypes={torch.float32, torch.bfloat16}, head_dims=range(16, 257))
    corpus = edge_corpus(flex, "fp32")
    kept, _, n = within_structures(corpus, STRUCTURES, flex, "fp32", more=structure_key)
    assert n == STRUCTURES == len({_flex_key(c) for c in kept})
    # flex's key fixes H, Hkv and D per structure, so those edges go; the sequence lengths stay
    assert len(kept) >= 0.6 * len(corpus)
    assert {1023, 1025, 320} <= {c.skv for c in kept}
    # a mask beyond one block: where a block-sparse kernel splits and skips blocks
    assert any(c.mask != "none" and max(c.sq, c.skv) > 128 for c in kept)
