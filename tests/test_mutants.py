"""Proof that the verdict works: every planted bug fails the DEFAULT suite (default examples, default
tolerances), and the check expected to see it is among those that fail."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

from mutants import CAUGHT_BY, VISIBLE_IN, backends, mutant

TESTS = Path(__file__).parent
REGISTER_MUTANTS = (
    "import sys\n"
    f"sys.path.insert(0, {str(TESTS)!r})\n"
    "from attnparity import register_backend\n"
    "from mutants import backends\n"
    "for backend in backends():\n"
    "    register_backend(backend, replace=True)\n"
)


def failed_cells(pytester: pytest.Pytester, *args: str) -> dict[str, set[str]]:
    """backend -> checks that failed, from a real run of the plugin."""
    pytester.makeconftest(REGISTER_MUTANTS)
    # In-process: mutants are wrong math, not crashers, and 15 isolated backends would each start
    # workers over and over (isolation keeps 3 alive); tests/test_isolation.py covers isolation.
    reports = pytester.inline_run("-p", "no:cacheprovider", "-m", "not attn_perf", "--attn-isolate=none",
                                  *args).getreports("pytest_runtest_logreport")
    caught: dict[str, set[str]] = defaultdict(set)
    for report in reports:
        if report.failed:
            check, backend = re.match(r"attnparity::(.+)\[(.+)-(?:fp32|fp16|bf16)\]", report.nodeid).groups()
            caught[backend].add(check)
    return caught


def test_zoo_is_complete() -> None:
    names = {b.name for b in backends()}
    assert len(names) >= 12 and names == set(CAUGHT_BY)


def _visible(dtypes: set[str]) -> set[str]:
    return {m for m in CAUGHT_BY if VISIBLE_IN.get(m, {"fp32", "fp16", "bf16"}) & dtypes}


def test_every_mutant_fails_the_default_suite(pytester: pytest.Pytester) -> None:
    caught = failed_cells(pytester, "--attn-backends=mutant-*", "--attn-dtypes=fp32")
    missed = {m: sorted(caught.get(m, ())) for m, expected in CAUGHT_BY.items()
              if m in _visible({"fp32"}) and not expected & caught.get(m, set())}
    assert not missed, f"mutants not caught by their expected check (caught by): {missed}"


def test_half_precision_mutants_fail_where_visible(pytester: pytest.Pytester) -> None:
    # The bugs fp32 cannot show: bf16 computed through fp16 (only values beyond fp16's range show
    # it) and an INT8 key quantiser (in bf16 only keys with outlier channels or an offset show it).
    only_half = sorted(set(CAUGHT_BY) - _visible({"fp32"}))
    assert only_half, "VISIBLE_IN names no half-precision-only mutant"
    caught = failed_cells(pytester, f"--attn-backends={','.join(only_half)}", "--attn-dtypes=bf16")
    missed = {m: sorted(caught.get(m, ())) for m in only_half if not CAUGHT_BY[m] & caught.get(m, set())}
    assert not missed, f"mutants not caught in bf16 by their expected check (caught by): {missed}"


@pytest.mark.slow
def test_every_mutant_fails_in_every_dtype(pytester: pytest.Pytester) -> None:
    caught = failed_cells(pytester, "--attn-backends=mutant-*", "--attn-dtypes=fp16,bf16")
    expected = _visible({"fp16", "bf16"})
    assert set(caught) >= expected, f"survivors: {expected - set(caught)}"


def test_each_new_class_is_what_catches_its_mutant() -> None:
    # The classes of issue 13 are needed: each mutant of a new class passes the first corpus (the
    # edge cases without the class cases) and fails the corpus case of its class, in every dtype
    # where it is visible.
    from attnparity.check.parity import check_parity
    from attnparity.check.strategies import class_corpus, edge_corpus, fit

    needs = {"mutant-mask-2d-as-query": "mask 2-D (Sq, Skv)",
             "mutant-mask-head-collapsed": "mask per head, full batch (B, H, Sq, Skv), ALiBi",
             "mutant-mask-stride0": "mask stride-0 expand of (B, 1, 1, Skv) padding",
             "mutant-bf16-via-fp16": "V beyond fp16's range (or at its edge in fp16)",
             "mutant-int8-k-no-smoothing": "keys with offset and outlier channels",
             "mutant-ignores-storage-offset": "packed QKV (storage offsets)",
             "mutant-long-pair-no-rescale": "Sq and Skv both long",
             "mutant-head-dim-96-192": "head_dim 96"}
    for name, cls in needs.items():
        backend = mutant(name)
        caps = backend.capabilities
        dtype = "bf16" if name in VISIBLE_IN else "fp32"
        classes = {fit(c, caps) for c in class_corpus(dtype, caps=caps).values()}
        first = [c for c in edge_corpus(caps, dtype) if c not in classes]
        assert len(first) > 40
        first = first[::2]  # half of it, spread: keeps this test to seconds
        if name == "mutant-bf16-via-fp16":
            # The first corpus did see it, in one corner: bf16's finfo.min as the masked value of a
            # fully masked row becomes -inf in fp16 (zeros instead of the mean of V).
            first = [c for c in first if c.masked_value != "min"]
        if name != "mutant-int8-k-no-smoothing":  # INT8 keys are seen by any fp16 case; in bf16 only here
            wrong = [c.short() for c in first if not check_parity(backend, c).passed]
            assert not wrong, f"{name} is caught without its class: {wrong[:3]}"
        case = fit(class_corpus(dtype, caps=caps)[cls], caps)
        assert case is not None and not check_parity(backend, case).passed, f"{name} passes {cls}"



def test_bound_use_crosses_one_exactly_where_the_verdict_flips() -> None:
    # The margins in docs/reports/detection.md read bound use: it must say "failed" (>1) where the verdict
    # does and "passed" (<1) where it does, for the numeric rule and for a semantic check alike.
    import itertools

    import torch

    from attnparity import Backend, Capabilities
    from attnparity.backends.registry import get_backend
    from attnparity.check.cases import AttnCase
    from attnparity.check.parity import check_parity
    from attnparity.check.semantics import run_semantic
    from attnparity.check.tolerance import Tolerances

    calls = itertools.count()

    def drifting(q, k, v, *, attn_mask=None, is_causal=False, scale=None):  # differs call to call
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
        return out + next(calls) * 1e-3

    drift = Backend("drifting", drifting, Capabilities(dtypes={"fp32"}, masks=set(), causal=False,
                                                          deterministic=False))  # the numeric limit, not bitwise
    wrong_scale = mutant("mutant-wrong-scale")
    correct = get_backend("sdpa-math")
    case = AttnCase(batch=3, heads=2, sq=5, skv=7, head_dim=16, dtype="fp32", seed=4)
    deterministic = lambda b, c, t: run_semantic("deterministic", b, c, t)  # noqa: E731
    for check, buggy in ((check_parity, wrong_scale), (deterministic, drift)):
        bad, good = check(buggy, case, Tolerances()), check(correct, case, Tolerances())
        assert not bad.passed and bad.bound_use > 1, bad.metrics
        assert good.passed and 0 <= good.bound_use < 1, good.metrics


# -- issue 13: the tolerance rule per tensor and per row, and the search's failure classes ----------

def _old_rule_use(result, labels: tuple[str, ...]) -> dict[str, float]:
    """Bound use under the rule before issue 13, from the result's own metrics: one scale for every
    tensor (the largest of their scales), floors over the whole tensor, the mean-abs limit with the
    max-abs floor, and a non-finite baseline error as it was (infinite: limit infinite)."""
    import math

    from attnparity.check.tolerance import EPS

    m, dtype = result.metrics, result.case.dtype
    shared = max(m[f"{label}scale"] for label in labels)
    uses = {}
    for label in labels:
        base_max = math.inf if m.get(f"{label}base_nonfinite") else m[f"{label}base_max"]
        base_mean = math.inf if m.get(f"{label}base_nonfinite") else m[f"{label}base_mean"]
        floor = m["floor"] * EPS[dtype] * shared
        uses[label] = max(m[f"{label}err_max"] / (m["k"] * base_max + floor),
                          m[f"{label}err_mean"] / (m["k"] * base_mean + floor))
    return uses


GRADS = ("dq_", "dk_", "dv_")


@pytest.mark.parametrize("name, case, why", [
    # per tensor: at magnitude 3 the shared scale was dQ's and dK's terms, many times dV's own
    ("mutant-grad-dv-quantised-p", dict(magnitude=3.0, dtype="fp16", sq=16, skv=16, seed=1), "dv:bound"),
    # per row: the dV rows of keys nobody attends to are small next to the others, and were judged
    # against the largest row
    ("mutant-grad-dv-flushes-small-p", dict(magnitude=2.0, dtype="fp16", sq=16, skv=64, seed=2), "dv:bound"),
    ("mutant-grad-dv-flushes-small-p", dict(magnitude=2.0, dtype="bf16", sq=16, skv=64, seed=2), "dv:bound"),
], ids=["per-tensor-fp16", "per-row-fp16", "per-row-bf16"])
def test_tolerance_per_tensor_and_row_catches(name: str, case: dict, why: str) -> None:
    from attnparity.backends.registry import get_backend
    from attnparity.check.cases import AttnCase
    from attnparity.check.parity import check_grads

    case = AttnCase(batch=2, heads=2, head_dim=32, **case)
    bad = check_grads(mutant(name), case)
    assert _old_rule_use(bad, GRADS)["dv_"] < 1, "the old rule should have let this through"
    assert not bad.passed and bad.failure_classes == (why,), bad.message
    assert bad.metrics["dv_bound_use"] > 1 and bad.metrics["dq_bound_use"] < 1 and bad.metrics["dk_bound_use"] < 1
    for correct in ("sdpa-math", "sdpa-flash", "naive"):
        good = check_grads(get_backend(correct), case)
        assert good.passed and good.bound_use < 0.5, (correct, good.metrics)


def test_a_nonfinite_baseline_cannot_lift_the_limit() -> None:
    # fp16 logits of ~1e5: naive fp16 math overflows (its error is infinite, so the old limit was),
    # the fp64 reference and the fused kernels do not: a wrong GQA head mapping hid behind it.
    from attnparity.backends.registry import get_backend
    from attnparity.check.cases import AttnCase
    from attnparity.check.parity import check_parity

    case = AttnCase(batch=1, heads=4, kv_heads=2, sq=8, skv=15, head_dim=64, magnitude=60.0, scale=1.0,
                    dtype="fp16", seed=5)
    bad = check_parity(mutant("mutant-gqa-wrong"), case)
    assert bad.metrics["base_nonfinite"] > 0 and _old_rule_use(bad, ("",))[""] == 0.0
    assert not bad.passed and bad.failure_classes == ("out:bound",), bad.message
    for correct in ("sdpa-math", "sdpa-flash"):
        good = check_parity(get_backend(correct), case)
        assert good.passed, (correct, good.message)


def test_the_mean_abs_limit_has_its_own_floor() -> None:
    # Every element 8 roundings of its row's largest element off: within each row's max-abs floor
    # (16), but most elements are 100x smaller than their row's largest, so the mean error is 8
    # roundings of the row's max against a mean magnitude ~25x smaller. The old mean-abs limit used
    # the max-abs floor and let it through.
    import torch

    from attnparity.check.tolerance import EPS, Bound, judge

    ref = torch.full((1, 2, 8, 16), 0.01, dtype=torch.float64)
    ref[..., 0] = 1.0
    out = ref + 8 * EPS["fp32"]
    j = judge(out, ref.clone(), ref, None, Bound(32.0, 16.0), "fp32")
    assert j.failed == ("mean-abs",), j.verdict.reason
    assert judge(out, ref.clone(), ref, None, Bound(32.0, 16.0, floor_mean=400.0), "fp32").verdict.passed
    exact_but_rounded = ref.float().double()  # one rounding per element: a correct fp32 result
    assert judge(exact_but_rounded, ref.clone(), ref, None, Bound(32.0, 16.0), "fp32").verdict.passed


def _classes_backend():
    """NaN on odd query counts, 1% off on even ones (D > 8 only): two failure classes in one cell."""
    import torch

    from attnparity import Backend, Capabilities

    def two_bugs(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)
        if q.shape[-1] > 8:
            return out.clone().fill_(float("nan")) if q.shape[2] % 2 else out * 1.01
        return out

    return Backend("two-bugs", two_bugs, Capabilities(dtypes={"fp32"}, masks=set(), causal=False, gqa=False))


def _tiny_cases():
    from hypothesis import strategies as st

    from attnparity.check.cases import AttnCase

    return st.builds(AttnCase, sq=st.integers(1, 4), skv=st.integers(1, 4), head_dim=st.integers(4, 12),
                     seed=st.integers(0, 3))


@pytest.mark.parametrize("corpus_fails", [False, True], ids=["drawn", "corpus-fails-first"])
def test_distinct_failure_classes_do_not_hide_one_another(corpus_fails: bool) -> None:
    from hypothesis import settings

    from attnparity.check.cases import AttnCase
    from attnparity.check.parity import check_parity
    from attnparity.check.search import failure_class, search
    from attnparity.check.tolerance import Tolerances

    corpus = [AttnCase(sq=3, skv=2, head_dim=16)] if corpus_fails else []  # NaN: the corpus ends hypothesis' run
    outcome = search(check_parity, _classes_backend(), _tiny_cases(), settings(max_examples=40, deadline=None, database=None),
                     tolerances=Tolerances(), corpus=corpus, seed=3, label="classes")
    classes = {failure_class(r): r for r in outcome.failures}
    assert set(classes) == {"out:nonfinite", "out:bound"}, outcome.failures
    assert outcome.failure is outcome.failures[0]
    # each class shrunk on its own: the smallest head_dim that fails (9), the smallest Sq of its parity
    nonfinite = classes["out:nonfinite"].case  # a corpus case is reported as it is (explicit examples are not shrunk)
    assert (nonfinite.sq, nonfinite.head_dim) == ((3, 16) if corpus_fails else (1, 9))
    assert (classes["out:bound"].case.sq, classes["out:bound"].case.head_dim) == (2, 9)


def test_search_targets_bound_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import hypothesis
    from hypothesis import settings

    from attnparity.backends.registry import get_backend
    from attnparity.check.parity import check_parity
    from attnparity.check.search import search
    from attnparity.check.tolerance import Tolerances

    seen: list[tuple[float, str]] = []
    real = hypothesis.target

    def spy(observation, *, label=""):
        seen.append((observation, label))
        return real(observation, label=label)

    monkeypatch.setattr(hypothesis, "target", spy)
    outcome = search(check_parity, get_backend("sdpa-math"), _tiny_cases(), settings(max_examples=8, deadline=None, database=None),
                     tolerances=Tolerances(), seed=1, label="target")
    assert outcome.failure is None and seen and {label for _, label in seen} == {"bound use"}
    assert max(use for use, _ in seen) == pytest.approx(outcome.closest.bound_use)
