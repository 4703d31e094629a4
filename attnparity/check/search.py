"""Runs one check over hypothesis-drawn cases (edge corpus first), keeping the worst result and the
shrunk failure. Knows nothing of pytest; the suite turns its outcome into a ResultRecord.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from attnparity.backends.base import Backend
from .cases import AttnCase
from .parity import ParityResult
from .tolerance import Tolerances

CheckFn = Callable[[Backend, AttnCase, Tolerances], ParityResult]
#: Says which known finding (its id) a failing result is, or None for a failure nobody explained.
ExplainFn = Callable[[AttnCase, ParityResult], "str | None"]


class _Failed(Exception):
    def __init__(self, result: ParityResult):
        super().__init__(result.message)
        self.result = result


@dataclass
class SearchOutcome:
    #: examples judged (explicit + drawn, shrinking excluded)
    examples: int
    #: the example number at which the first failure appeared (None: no failure)
    found_at: int | None
    #: the shrunk failing result, or None
    failure: ParityResult | None
    #: the result with the highest error ratio among passing examples
    worst: ParityResult | None
    #: cases drawn that turned out outside the claims (rejected, not judged)
    rejected: int
    #: the passing result with the highest bound use (value / limit): how close the backend came to failing
    closest: ParityResult | None = None
    #: failing examples a known finding explains, by finding id: (count, the first such result)
    explained: dict[str, tuple[int, ParityResult]] = field(default_factory=dict)


def search(check: CheckFn, backend: Backend, strategy: Any, settings: Any, *, tolerances: Tolerances,
           corpus: Iterable[AttnCase] = (), seed: int | None = None, label: str = "",
           explain: ExplainFn | None = None) -> SearchOutcome:
    """``explain``: failures it names a known finding for are counted, not raised, so the search
    goes on and a second, unexplained bug in the same cell is still found and shrunk."""
    import hypothesis
    import hypothesis.errors
    from hypothesis import assume, given, target

    state: dict[str, Any] = {"n": 0, "found_at": None, "worst": None, "rejected": 0, "shrinking": False, "closest": None}
    explained: dict[str, tuple[int, ParityResult]] = {}

    def body(case: AttnCase) -> None:
        result = check(backend, case, tolerances)
        if result.skipped:
            state["rejected"] += 1
            assume(False)
        if not state["shrinking"]:
            state["n"] += 1
        known = explain(case, result) if explain is not None and not result.passed else None
        if known is not None:
            # Counted, not raised, and kept out of target(): a known bug's huge ratios would steer
            # the search back to it and spend the budget meant for finding a second one.
            if not state["shrinking"]:
                count, first = explained.get(known, (0, result))
                explained[known] = (count + 1, first)
            return
        ratio = result.ratio
        if ratio == ratio and ratio != float("inf"):  # target() needs a finite number
            target(min(ratio, 1e9), label="error ratio")
        if result.passed:
            if result.bound_use > 0 and (state["closest"] is None or result.bound_use > state["closest"].bound_use):
                state["closest"] = result
            if state["worst"] is None or ratio > state["worst"].ratio:
                state["worst"] = result
            return
        if state["found_at"] is None:
            state["found_at"] = state["n"]
            state["shrinking"] = True
        raise _Failed(result)

    test = given(strategy)(body)
    for case in reversed(list(corpus)):  # @example order: first listed runs first
        test = hypothesis.example(case)(test)
    test = settings(test)
    if seed is not None:
        test = hypothesis.seed(seed)(test)
    # Distinct database keys and derandomize seeds per backend x check x dtype: every test
    # function here has the same source, which is what hypothesis would otherwise key on.
    test._hypothesis_internal_add_digest = f"attnparity:{label}:{backend.name}".encode()  # type: ignore[attr-defined]
    try:
        test()
    except hypothesis.errors.Unsatisfiable:
        pass  # every case drawn was outside the claims: reported as a skip by the caller
    except _Failed as failed:
        return SearchOutcome(state["n"], state["found_at"], failed.result, state["worst"], state["rejected"],
                             state["closest"], explained)
    return SearchOutcome(state["n"], None, None, state["worst"], state["rejected"], state["closest"], explained)
