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


_FAILURE_TYPES: dict[str, type[_Failed]] = {}


def failure_class(result: ParityResult) -> str:
    """The class a failing result is filed under: its first failure class ("out:nonfinite",
    "dv:bound", "contract"), or the check's name for checks that have one kind of failure."""
    return result.failure_classes[0] if result.failure_classes else result.check


def _failure_type(cls: str) -> type[_Failed]:
    """One exception type per failure class: hypothesis tells bugs apart by exception type and line
    (InterestingOrigin), so with report_multiple_bugs each class is searched for and shrunk on its
    own, and a NaN in one tensor does not hide a bound exceeded in another."""
    if cls not in _FAILURE_TYPES:
        _FAILURE_TYPES[cls] = type(f"Failed[{cls}]", (_Failed,), {})
    return _FAILURE_TYPES[cls]


def _leaves(exc: BaseException) -> list[BaseException]:
    """What hypothesis raised, as single exceptions: one, or the members of a group of distinct ones."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


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
    #: every distinct failure class found (search.failure_class), each with its own shrunk result,
    #: in the order they were first met; ``failure`` is the first of them
    failures: list[ParityResult] = field(default_factory=list)
    #: the example number at which each class first appeared
    found_at_by_class: dict[str, int] = field(default_factory=dict)


#: Searches per cell at most: the first, and one more for each new failure class it found.
MAX_ROUNDS = 4


def search(check: CheckFn, backend: Backend, strategy: Any, settings: Any, *, tolerances: Tolerances,
           corpus: Iterable[AttnCase] = (), seed: int | None = None, label: str = "",
           explain: ExplainFn | None = None) -> SearchOutcome:
    """``explain``: failures it names a known finding for are counted, not raised, so the search
    goes on and a second, unexplained bug in the same cell is still found and shrunk.

    hypothesis.target pushes each example's bound use (error / limit) up, so the search leans toward
    the cases a backend comes closest to failing on (a bound use, unlike an error ratio, says how
    close to failing whatever the check).

    Failure classes (failure_class: NaN/Inf in the output, a bound exceeded in dV, a contract broken)
    do not hide one another. hypothesis alone does not ensure it: a failing explicit example (the
    edge corpus) ends the run before anything is drawn, and after a first failure it draws only a
    few more (report_multiple_bugs' heuristic). So a cell that failed is searched again, the classes
    already found counted and not raised (as known findings are), until a search finds no new class
    (at most MAX_ROUNDS searches): each class gets its own shrunk case, and a passing cell costs
    nothing more. Distinct exception types per class also let hypothesis report several classes
    met in one search."""
    import hypothesis
    import hypothesis.errors
    from hypothesis import assume, given, target

    corpus = list(corpus)
    state: dict[str, Any] = {"n": 0, "worst": None, "rejected": 0, "shrinking": False, "closest": None}
    explained: dict[str, tuple[int, ParityResult]] = {}
    found_at: dict[str, int] = {}
    seen: set[str] = set()

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
        if not result.passed and failure_class(result) in seen:
            return  # found and shrunk by an earlier search of this cell: look for another class
        ratio = result.ratio
        use = result.bound_use
        if use == use and use != float("inf"):  # target() needs a finite number
            target(min(use, 1e9), label="bound use")
        if result.passed:
            if result.bound_use > 0 and (state["closest"] is None or result.bound_use > state["closest"].bound_use):
                state["closest"] = result
            if state["worst"] is None or ratio > state["worst"].ratio:
                state["worst"] = result
            return
        cls = failure_class(result)
        found_at.setdefault(cls, state["n"])
        state["shrinking"] = True
        raise _failure_type(cls)(result)

    def make_test(explicit: list[AttnCase]) -> Any:
        test = given(strategy)(body)
        for case in reversed(explicit):  # @example order: first listed runs first
            test = hypothesis.example(case)(test)
        test = settings(test)
        if seed is not None:
            test = hypothesis.seed(seed)(test)
        # Distinct database keys and derandomize seeds per backend x check x dtype: every test
        # function here has the same source, which is what hypothesis would otherwise key on.
        test._hypothesis_internal_add_digest = f"attnparity:{label}:{backend.name}".encode()  # type: ignore[attr-defined]
        return test

    failures: list[ParityResult] = []
    for round_ in range(MAX_ROUNDS):
        state["shrinking"] = False
        # The first search judges the whole corpus (hypothesis runs every explicit example even after
        # one fails, and reports each class met there); later ones only draw.
        test = make_test(corpus if round_ == 0 else [])
        try:
            test()
        except hypothesis.errors.Unsatisfiable:
            pass  # every case drawn was outside the claims: reported as a skip by the caller
        except (_Failed, BaseExceptionGroup) as raised:
            failed = [leaf for leaf in _leaves(raised) if isinstance(leaf, _Failed)]
            if len(failed) != len(_leaves(raised)):
                raise  # something else went wrong beside our failures: not ours to swallow
            new = [f.result for f in failed if failure_class(f.result) not in seen]
            if new:
                failures.extend(new)
                seen.update(failure_class(r) for r in new)
                continue
        break
    failures.sort(key=lambda r: found_at.get(failure_class(r), 0))  # first met first
    first = failures[0] if failures else None
    return SearchOutcome(state["n"], found_at.get(failure_class(first)) if first else None, first, state["worst"],
                         state["rejected"], state["closest"], explained, failures,
                         {failure_class(r): found_at.get(failure_class(r), 0) for r in failures})
