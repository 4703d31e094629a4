"""Op-level items: ``forward`` and ``backward`` parity and the semantic checks, per backend x dtype.

Each item searches with hypothesis inside the backend's claims (edge corpus first) and reports the
worst error ratio it saw, or the shrunk failing case with a reproduce line.
"""

from __future__ import annotations

from functools import partial

from attnparity.backends.base import Backend
from attnparity.check.parity import check_grads, check_parity
from attnparity.results.record import ResultRecord
from attnparity.check.semantics import SEMANTIC_CHECKS, run_semantic
from . import Check, SuiteContext

NUMERIC_CHECKS = ("forward", "backward")
OP_CHECKS = NUMERIC_CHECKS + tuple(SEMANTIC_CHECKS)
#: Gradient and semantic items search less than forward: each example costs several calls.
SECONDARY_SHARE = 3
#: The corpus for gradients keeps to the smaller edge cases (fp64 autograd of a 4096-key case is slow).
GRAD_CORPUS_WORK = 2 ** 19


def _check_fn(name: str):
    if name == "forward":
        return check_parity
    if name == "backward":
        return check_grads
    return partial(run_semantic, name)


def run_op(ctx: SuiteContext, backend: Backend, dtype: str, name: str) -> ResultRecord:
    from attnparity.check.search import search
    from attnparity.check.strategies import attn_cases, edge_corpus

    caps = backend.capabilities
    settings = ctx.hypothesis_settings
    if name != "forward" and ctx.user_profile is None:
        settings = settings.__class__(settings, max_examples=max(5, settings.max_examples // SECONDARY_SHARE))
    corpus = edge_corpus(caps, dtype, ctx.device)
    if name == "backward":
        corpus = [c for c in corpus if c.work <= GRAD_CORPUS_WORK]
    elif name != "forward":
        corpus = corpus[:: max(1, len(corpus) // 8)]  # a spread of the corpus: masks, layouts, shapes
    outcome = search(_check_fn(name), backend, attn_cases(caps, dtype, ctx.device), settings,
                     tolerances=ctx.tolerances, corpus=corpus, seed=ctx.seed, label=f"{name}:{dtype}")
    kind = "op" if name in NUMERIC_CHECKS else "semantic"
    shown = outcome.failure or outcome.worst
    metrics = dict(shown.metrics) if shown else {}
    extra: dict = {"rejected": outcome.rejected}
    if outcome.closest is not None:  # how close a pass came, and on what (the margin studies read it)
        metrics["bound_use_max"] = outcome.closest.bound_use
        extra["closest_case"] = outcome.closest.case.as_dict()
    if outcome.failure is None:
        if outcome.examples == 0:
            return ResultRecord(kind, name, backend.name, dtype, "skip", examples=0,
                                message=f"no case inside {backend.name}'s claims for {name} in {dtype}")
        return ResultRecord(kind, name, backend.name, dtype, "pass", metrics=metrics, examples=outcome.examples,
                            case=outcome.worst.case.as_dict() if outcome.worst else None, extra=extra)
    failure = outcome.failure
    extra["found_at"] = outcome.found_at
    message = (f"{failure.message}\n(found at example {outcome.found_at} of {outcome.examples}; "
               f"case shrunk by hypothesis; Python: {failure.case.literal()})")
    return ResultRecord(kind, name, backend.name, dtype, "fail", metrics=metrics, examples=outcome.examples,
                        case=failure.case.as_dict(), repro=failure.repro(), message=message, extra=extra)


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
                items.append(Check(kind="op" if name in NUMERIC_CHECKS else "semantic", check=name,
                                   backend=backend.name, dtype=dtype, marks=("attn_op",), skip=skip,
                                   run=partial(run_op, ctx, backend, dtype, name)))
    return items
