"""Proof that the verdict works: every planted bug fails the DEFAULT suite (default examples, default
tolerances), and the check expected to see it is among those that fail."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

from mutants import CAUGHT_BY, backends

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
    reports = pytester.inline_run("-p", "no:cacheprovider", "-m", "not attn_perf", *args).getreports("pytest_runtest_logreport")
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
