"""Op-level items: ``forward`` and ``backward`` parity and the semantic checks, per backend x dtype.

Each item searches with hypothesis inside the backend's claims (edge corpus first) and reports the
worst error ratio it saw, or the shrunk failing case with a reproduce line.
"""

from __future__ import annotations

from functools import partial

from typing import TYPE_CHECKING

from attnparity.backends.base import Backend
from attnparity.check.cases import AttnCase
from attnparity.check.parity import ParityResult, check_grads, check_parity
from attnparity.results.record import ResultRecord
from attnparity.check.semantics import SEMANTIC_CHECKS, run_semantic
from . import Check, SuiteContext

if TYPE_CHECKING:
    from attnparity.results.known import Finding

NUMERIC_CHECKS = ("forward", "backward")
OP_CHECKS = NUMERIC_CHECKS + tuple(SEMANTIC_CHECKS)
#: Gradient and semantic items search less than forward: each example costs several calls.
SECONDARY_SHARE = 3
#: The corpus for gradients keeps to the smaller edge cases (fp64 autograd of a 4096-key case is slow).
GRAD_CORPUS_WORK = 2 ** 19
#: A backend that compiles per input structure (Backend.structures) tries that many structures in its
#: forward items, and 1/SECONDARY_SHARE of them in the others, at least this many (never more than
#: forward's).
MIN_STRUCTURES = 2


def structure_count(backend: Backend, name: str) -> int | None:
    """How many input structures an item of check ``name`` tries for ``backend`` (None: no bound)."""
    if backend.structures is None:
        return None
    if name == "forward":
        return backend.structures
    return min(backend.structures, max(MIN_STRUCTURES, backend.structures // SECONDARY_SHARE))


def _check_fn(name: str):
    if name == "forward":
        return check_parity
    if name == "backward":
        return check_grads
    return partial(run_semantic, name)


#: The checks that keep torch's own CPU thread count: run-to-run variation is what they look for,
#: and a multi-threaded kernel's reductions are where it comes from.
THREADED_CHECKS = frozenset({"deterministic"})


def run_op(ctx: SuiteContext, backend: Backend, dtype: str, name: str,
           known: "tuple[Finding, ...]" = ()) -> ResultRecord:
    """One op cell; ``known``: the ledger's findings about this cell (results/known.py).

    On CPU the cell runs with one torch thread (except THREADED_CHECKS). The cases are small, so a
    second thread saved 7 % of the wall time on an idle 2-core machine while burning 62 % more CPU
    (docs/reports/matrix-cpu.md), and beside any other process it stalls at every OpenMP barrier: items
    took 20-40x their time in a run that shared the machine. The verdict does not depend on it."""
    from attnparity.machine import torch_threads

    single = ctx.device == "cpu" and name not in THREADED_CHECKS
    with torch_threads(1 if single else None):
        return _run_op(ctx, backend, dtype, name, known)


def _run_op(ctx: SuiteContext, backend: Backend, dtype: str, name: str,
            known: "tuple[Finding, ...]") -> ResultRecord:
    from attnparity.check.search import failure_class, search
    from attnparity.check.strategies import attn_cases, edge_corpus, within_structures

    from attnparity.check.progress import note_case

    unnoted = _check_fn(name)

    def check_fn(backend: Backend, case: AttnCase, tolerances) -> ParityResult:
        note_case(name, backend.name, case)  # an isolated worker that dies here still names the case
        return unnoted(backend, case, tolerances)

    reproduced, repro_passed, repro_other = _run_repros(check_fn, backend, ctx, dtype, name, known)

    def explain(case: AttnCase, result: ParityResult) -> str | None:
        return next((f.id for f in known if f.explains(case, result)), None)

    caps = backend.capabilities
    settings = ctx.hypothesis_settings
    if name != "forward" and ctx.user_profile is None:
        settings = settings.__class__(settings, max_examples=max(5, settings.max_examples // SECONDARY_SHARE))
    corpus = edge_corpus(caps, dtype, ctx.device)
    if name == "backward":
        corpus = [c for c in corpus if c.work <= GRAD_CORPUS_WORK]
    strategy = attn_cases(caps, dtype, ctx.device)
    count = structure_count(backend, name)
    structures = None
    if count is not None:  # a compiled backend: a few graph structures, many shapes and values in each
        corpus, strategy, structures = within_structures(corpus, count, caps, dtype, ctx.device,
                                                         more=backend.structure_key)
    if name not in NUMERIC_CHECKS:
        corpus = corpus[:: max(1, len(corpus) // 8)]  # a spread of the corpus: masks, layouts, shapes
    outcome = search(check_fn, backend, strategy, settings,
                     tolerances=ctx.tolerances, corpus=corpus, seed=ctx.seed, label=f"{name}:{dtype}",
                     explain=explain if known else None)
    kind = "op" if name in NUMERIC_CHECKS else "semantic"
    shown = outcome.failure or outcome.worst
    metrics = dict(shown.metrics) if shown else {}
    extra: dict = {"rejected": outcome.rejected}
    if structures is not None:
        extra["structures"] = structures  # input structures tried (check/strategies.structure)
    if outcome.closest is not None:  # how close a pass came, and on what (the margin studies read it)
        metrics["bound_use_max"] = outcome.closest.bound_use
        extra["closest_case"] = outcome.closest.case.as_dict()
    met = dict(outcome.explained)
    for fid, result in reproduced.items():
        met[fid] = (met.get(fid, (0, result))[0] + 1, result)  # the repro case is the line a reader should run
    if met:
        extra["known"] = {f.id: {"met": met[f.id][0], "reason": f.reason, "link": f.link, "source": f.source,
                                 "repro": met[f.id][1].repro()} for f in known if f.id in met}
    known_text = [f"known finding {f.id}, met in {met[f.id][0]} case(s): {f.cite}\n    {met[f.id][1].repro()}"
                  for f in known if f.id in met]
    stale = [f for f in known if f.id in repro_passed and f.id not in met]
    if outcome.failure is None and repro_other:
        fid, failure = next(iter(repro_other.items()))
        message = (f"the repro case of known finding {fid} fails here, but not as the finding says (its `when`, "
                   f"error size or tensors do not match): a second bug on its own case\n{failure.message}")
        return ResultRecord(kind, name, backend.name, dtype, "fail", metrics=metrics, examples=outcome.examples,
                            case=failure.case.as_dict(), repro=failure.repro(), message=message, extra=extra)
    if outcome.failure is not None:
        failure = outcome.failure
        extra["found_at"] = outcome.found_at
        message = (f"{failure.message}\n(found at example {outcome.found_at} of {outcome.examples}; "
                   f"case shrunk by hypothesis; Python: {failure.case.literal()})")
        others = outcome.failures[1:]
        if others:  # distinct failure classes of the same cell, each shrunk on its own (check/search.py)
            extra["failure_classes"] = [failure_class(r) for r in outcome.failures]
            message += f"\n{len(others)} more distinct failure class(es) in this cell:" + "".join(
                f"\n-- {failure_class(r)} (found at example {outcome.found_at_by_class.get(failure_class(r))}; "
                f"Python: {r.case.literal()})\n{r.message}" for r in others)
        if known_text:
            message += "\nThe ledger explains other failures of this cell, not this one:\n" + "\n".join(known_text)
        message += "".join(f"\nThe repro case of known finding {fid} fails here too, but not as the finding says:\n"
                           f"{r.message}" for fid, r in repro_other.items())
        return ResultRecord(kind, name, backend.name, dtype, "fail", metrics=metrics, examples=outcome.examples,
                            case=failure.case.as_dict(), repro=failure.repro(), message=message, extra=extra)
    if stale:
        extra["stale_known"] = [f.id for f in stale]
        message = "\n".join(
            f"known finding {f.id} no longer reproduces: its repro case passes now "
            f"({repro_passed[f.id].repro()}) and no drawn case met it. Remove it from the ledger "
            f"{f.source}, or narrow its versions ({', '.join(f'{k} {v}' for k, v in f.versions.items()) or 'any'})."
            for f in stale)
        return ResultRecord(kind, name, backend.name, dtype, "fail", metrics=metrics, examples=outcome.examples,
                            message=message, extra=extra)
    if outcome.examples == 0 and not met:
        return ResultRecord(kind, name, backend.name, dtype, "skip", examples=0,
                            message=f"no case inside {backend.name}'s claims for {name} in {dtype}")
    worst_case = outcome.worst.case.as_dict() if outcome.worst else None
    if met:
        message = "\n".join(known_text) + (f"\nevery other case passed ({outcome.examples} examples)")
        return ResultRecord(kind, name, backend.name, dtype, "xfail", metrics=metrics, examples=outcome.examples,
                            case=worst_case, message=message, extra=extra)
    return ResultRecord(kind, name, backend.name, dtype, "pass", metrics=metrics, examples=outcome.examples,
                        case=worst_case, extra=extra)


def _run_repros(check_fn, backend: Backend, ctx: SuiteContext, dtype: str, name: str,
                known: "tuple[Finding, ...]") -> tuple[dict[str, ParityResult], ...]:
    """Each finding's repro cases, run apart from the search (whether a finding still reproduces here
    must not depend on what hypothesis draws), in the cells of its ``repro_checks``: by finding id,
    the first repro failure it explains, the first repro that passed, and the first that failed in a
    way it does not explain."""
    reproduced: dict[str, ParityResult] = {}
    passed: dict[str, ParityResult] = {}
    other: dict[str, ParityResult] = {}
    for finding in known:
        if name not in finding.repro_checks:
            continue
        for case in finding.repro_cases(dtype, ctx.device):
            result = check_fn(backend, case, ctx.tolerances)
            if result.skipped:
                continue
            if result.passed:
                passed.setdefault(finding.id, result)
            else:
                (reproduced if finding.explains(case, result) else other).setdefault(finding.id, result)
    return reproduced, passed, other


def checks(ctx: SuiteContext) -> list[Check]:
    items: list[Check] = []
    for backend in ctx.backends:
        unavailable = ctx.unavailable(backend)
        caps = backend.capabilities
        for dtype in ctx.dtypes:
            for name in OP_CHECKS:
                skip = unavailable
                if skip is None and dtype not in caps.dtype_names:
                    skip = f"{backend.name} does not claim {dtype}"
                if skip is None and name == "backward" and not caps.backward:
                    skip = f"{backend.name} does not claim backward"
                known = ctx.ledger.for_cell(backend.name, name, dtype, ctx.device, ctx.versions)
                items.append(Check(kind="op" if name in NUMERIC_CHECKS else "semantic", check=name,
                                   backend=backend.name, dtype=dtype, marks=("attn_op",), skip=skip,
                                   run=partial(run_op, ctx, backend, dtype, name, known)))
    return items
