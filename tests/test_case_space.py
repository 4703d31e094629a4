"""The case space of issue 13: every mask layout, value range and shape class is drawn, inside the
backend's claims and the work budget, and the edge corpus meets each class once."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnparity import Backend, Capabilities
from attnparity.backends.registry import get_backend
from attnparity.check.cases import AttnCase
from attnparity.check.parity import ContractViolation, call_backend, check_parity
from attnparity.check.strategies import (LONG_PAIR_SEQS, LONG_PAIR_WORK, WORK_BUDGET, attn_cases, class_corpus,
                                         edge_corpus)

#: Cases with the new fields at their defaults must rebuild the first case space's tensors, or old
#: repro lines and ledger cases drift.
FIRST_SPACE = [
    AttnCase(batch=2, heads=4, kv_heads=2, sq=9, skv=13, head_dim=8, mask="padding", seed=5),
    AttnCase(batch=2, heads=2, sq=7, skv=5, head_dim=16, dtype="bf16", mask="dead-rows", mask_type="float",
             masked_value="-1e4", layout="transposed", magnitude=3.0, seed=11),
]


def _sums(case: AttnCase) -> list[float]:
    return [float(t.double().sum()) if t is not None else 0.0 for t in case.tensors()]


def test_default_fields_rebuild_the_first_case_space_bit_for_bit() -> None:
    # Sums measured on the code before issue 13 (commit 415bc7a), same seeds.
    expected = [[15.978399064624682, 13.793667025165632, -5.606665522907861, 9.0],
                [-27.25433349609375, 34.0830078125, -2.398193359375, -359426.619720459]]
    assert [_sums(c) for c in FIRST_SPACE] == expected


def test_mask_dims_give_rank_shape_and_per_head_content() -> None:
    for dims, rank in (("B1", 4), ("BH", 4), ("1H", 4), ("11", 4), ("H", 3), ("1", 3), ("", 2)):
        case = AttnCase(batch=2, heads=3, sq=6, skv=8, head_dim=4, mask="random", mask_type="float", mask_dims=dims)
        mask = case.tensors()[3]
        assert mask.dim() == rank and tuple(mask.shape) == case.mask_shape()
        mask.expand(2, 3, 6, 8)  # SDPA's broadcast holds
        if "H" in dims:  # per head: the heads differ (random keep pattern and ALiBi slopes)
            assert not torch.equal(mask.select(-3, 0), mask.select(-3, 1))


def test_mask_layouts_strides_padding_sides_and_empty_rows() -> None:
    base = AttnCase(batch=2, heads=3, sq=6, skv=8, head_dim=4, mask="padding", mask_type="bool")
    expanded = base.with_(mask_layout="expanded").tensors()[3]
    assert tuple(expanded.shape) == (2, 3, 6, 8) and 0 in expanded.stride()
    sliced = base.with_(mask="random", mask_dims="BH", mask_layout="sliced").tensors()[3]
    assert not sliced.is_contiguous() and sliced.stride(-1) == 2
    assert torch.equal(sliced, base.with_(mask="random", mask_dims="BH").tensors()[3])  # same content
    right, left = base.keep(), base.with_(pad_side="left").keep()
    assert bool(right[..., 0].all()) and bool(left[..., -1].all())  # a kept prefix, a kept suffix
    assert torch.equal(right.sum(-1), left.sum(-1))
    dead = base.with_(mask="dead-rows", mask_dims="BH").keep()
    assert bool((~dead.any(-1)).any())  # rows with zero kept keys


def test_values_and_keys() -> None:
    big = AttnCase(sq=4, skv=64, head_dim=16, dtype="bf16", v_scale=1e5).tensors()[2]
    assert float(big.float().abs().max()) > torch.finfo(torch.float16).max  # beyond fp16's range
    plain = AttnCase(sq=4, skv=256, head_dim=32, seed=3).tensors()[1]
    offset = AttnCase(sq=4, skv=256, head_dim=32, seed=3, k_offset=16.0).tensors()[1]
    assert float((offset.mean(2) - plain.mean(2)).abs().mean()) > 4  # a common per-channel offset
    outliers = AttnCase(sq=4, skv=256, head_dim=32, seed=3, k_outliers=2).tensors()[1]
    per_channel = outliers.abs().amax(dim=(0, 1, 2))
    assert int((per_channel > 8 * per_channel.median()).sum()) == 2


def test_packed_views_share_one_buffer_at_offsets() -> None:
    q, k, v, _ = AttnCase(batch=2, heads=4, kv_heads=2, sq=9, skv=9, head_dim=8, layout="packed", dtype="fp16").tensors()
    assert q.untyped_storage().data_ptr() == k.untyped_storage().data_ptr() == v.untyped_storage().data_ptr()
    assert (q.storage_offset(), k.storage_offset(), v.storage_offset()) == (0, 32, 48)
    _, k, v, _ = AttnCase(batch=2, heads=4, sq=5, skv=9, head_dim=8, layout="packed").tensors()
    assert k.untyped_storage().data_ptr() == v.untyped_storage().data_ptr() and v.storage_offset() > 0


def test_the_corpus_meets_every_class_inside_the_claims() -> None:
    caps = get_backend("sdpa-math").capabilities
    corpus = edge_corpus(caps, "bf16")
    for name, case in class_corpus("bf16", caps=caps).items():
        assert case in corpus, name
        assert case.work <= (LONG_PAIR_WORK if min(case.sq, case.skv) > LONG_PAIR_SEQS[0] else WORK_BUDGET), name
    assert {c.head_dim for c in corpus} >= {96, 192, 288, 512}
    # A backend that claims less is not handed what it does not claim.
    narrow = Capabilities(head_dims=range(8, 257, 8), masks={"bool"}, causal=False, gqa=False)
    for case in edge_corpus(narrow, "fp16"):
        assert case.outside(narrow) is None and case.head_dim <= 256 and case.mask_type == "bool"
    assert not [c for c in edge_corpus(Capabilities(masks=set()), "fp32") if c.mask != "none"]


@settings(max_examples=60, deadline=None, database=None)
@given(st.data())
def test_drawn_cases_stay_inside_claims_and_budgets(data) -> None:
    caps = data.draw(st.sampled_from([Capabilities(), Capabilities(head_dims=range(16, 129, 16), masks={"float"}),
                                      Capabilities(masks=set(), gqa=False, causal="bottom-right")]))
    dtype = data.draw(st.sampled_from(["fp32", "fp16", "bf16"]))
    case = data.draw(attn_cases(caps, dtype))
    assert case.outside(caps) is None
    long_pair = min(case.sq, case.skv) > LONG_PAIR_SEQS[0]
    assert case.work <= (LONG_PAIR_WORK if long_pair else WORK_BUDGET)
    if dtype == "fp16":
        assert case.v_scale <= 1e2  # fp16 itself could not hold more


def test_every_class_is_drawn() -> None:
    from hypothesis import Phase, find
    from hypothesis.errors import NoSuchExample

    classes = {"2-D mask": lambda c: c.mask != "none" and c.mask_dims == "",
               "3-D per-head mask": lambda c: c.mask != "none" and c.mask_dims == "H",
               "expanded mask": lambda c: c.mask != "none" and c.mask_layout == "expanded",
               "sliced mask": lambda c: c.mask != "none" and c.mask_layout == "sliced",
               "left padding": lambda c: c.mask == "padding" and c.pad_side == "left",
               "V beyond fp16": lambda c: c.v_scale > 6e4, "key offset": lambda c: c.k_offset > 0,
               "outlier channels": lambda c: c.k_outliers > 0, "packed": lambda c: c.layout == "packed",
               "long pair": lambda c: min(c.sq, c.skv) > LONG_PAIR_SEQS[0],
               "head_dim above 256": lambda c: c.head_dim > 256}
    # find() per class, not a count over one run: a class drawn 1 time in 24 came up 0-16 times in
    # ten random 250-example runs (hypothesis's draws are correlated within a run), so one run made
    # this test flaky. What it asks is that the strategy reaches every class at all.
    never = []
    for name, holds in classes.items():
        try:
            find(attn_cases(Capabilities(), "bf16"), holds,
                 settings=settings(max_examples=1000, database=None, phases=[Phase.generate]))
        except NoSuchExample:
            never.append(name)
    assert not never, f"never drawn in 1000 examples: {never}"


def test_a_backend_that_writes_into_its_inputs_breaks_the_contract() -> None:
    def scales_q_in_place(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
        q.mul_(0.5)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=2 * (scale or q.shape[-1] ** -0.5))

    case = AttnCase(heads=2, sq=5, skv=7, head_dim=8, mask="random", mask_type="float")
    q, k, v, mask = case.tensors()
    try:
        call_backend(Backend("scales-q", scales_q_in_place), case, q, k, v, mask)
    except ContractViolation as exc:
        assert "wrote into its inputs (q)" in str(exc)
    else:
        raise AssertionError("an in-place write into q went unseen")
    result = check_parity(get_backend("sdpa-math"), case.with_(layout="packed"))  # a correct one passes
    assert result.passed, result.message
