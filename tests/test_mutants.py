"""Proof that the verdict works: every planted bug fails the DEFAULT suite (default examples, default
tolerances), and the check expected to see it is among those that fail."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

from mutants import CAUGHT_BY, backends, mutant

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


def test_every_mutant_fails_the_default_suite(pytester: pytest.Pytester) -> None:
    caught = failed_cells(pytester, "--attn-backends=mutant-*", "--attn-dtypes=fp32")
    missed = {m: sorted(caught.get(m, ())) for m, expected in CAUGHT_BY.items() if not expected & caught.get(m, set())}
    assert not missed, f"mutants not caught by their expected check (caught by): {missed}"


@pytest.mark.slow
def test_every_mutant_fails_in_every_dtype(pytester: pytest.Pytester) -> None:
    caught = failed_cells(pytester, "--attn-backends=mutant-*", "--attn-dtypes=fp16,bf16")
    assert set(caught) == set(CAUGHT_BY), f"survivors: {set(CAUGHT_BY) - set(caught)}"



def test_bound_use_crosses_one_exactly_where_the_verdict_flips() -> None:
    # The margins in docs/detection.md read bound use: it must say "failed" (>1) where the verdict
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
