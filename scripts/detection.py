"""Generate docs/reports/detection.md: which check catches each planted bug (on one seed and over many),
which layer (op level, pipelines) sees it, how close the correct backends come to their bound over
many seeds, and what a larger example budget buys.

    python scripts/detection.py                       # every section, default budget (about 40 min on 2 cores)
    python scripts/detection.py --only margins        # one section; the rest of docs/reports/detection.md is kept

It runs the suite's own code paths (attnparity.suite.op.run_op, attnparity.suite.pipelines) with the
default tolerances, in worker processes of one torch thread each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def context(backends, dtypes, examples: int, seed: int | None):
    from hypothesis import settings

    from attnparity.check.tolerance import Tolerances
    from attnparity.options import Options
    from attnparity.session import hypothesis_settings
    from attnparity.suite import SuiteContext

    options = Options(dtypes=tuple(dtypes), examples=examples, seed=seed, artifacts=ROOT / ".attnparity" / "artifacts")
    # No example database: replayed failures of an earlier run would flatter "examples to find".
    return SuiteContext(backends=backends, device="cpu", options=options, tolerances=Tolerances(),
                        hypothesis_settings=settings(hypothesis_settings(examples), database=None), rootdir=ROOT)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # one worker per core: torch's own threads would only fight over them


def _pool(jobs: int) -> ProcessPoolExecutor:
    # spawn, not fork: a forked child inherits torch's thread pool in an unusable state.
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread)


def catches(name: str, examples: int, dtypes: list[str], seed: int) -> dict[str, list[tuple[str, int, str]]]:
    """dtype -> [(check, example it first failed at, shrunk case)] for one mutant, every op-level check."""
    from mutants import mutant

    from attnparity.check.cases import AttnCase
    from attnparity.suite.op import OP_CHECKS, run_op

    backend = mutant(name)
    ctx = context([backend], dtypes, examples, seed=seed)
    out: dict[str, list[tuple[str, int, str]]] = {}
    for dtype in dtypes:
        out[dtype] = []
        for check in OP_CHECKS:
            if check == "backward" and not backend.capabilities.backward:
                continue
            record = run_op(ctx, backend, dtype, check)
            if record.verdict == "fail":
                case = AttnCase.from_dict(record.case).short() if record.case else "?"
                out[dtype].append((check, record.extra.get("found_at"), case))
    return out


def detection_rows(pool: ProcessPoolExecutor, examples: int, dtypes: list[str]) -> list[str]:
    from mutants import CAUGHT_BY, backends

    names = [b.name for b in backends()]
    futures = {name: pool.submit(catches, name, examples, dtypes, 0) for name in names}
    rows = ["| mutant | dtype | caught by | examples to find (first catching check) | failing case (first catching check) |",
            "|---|---|---|---|---|"]
    for name in names:
        expected = " / ".join(sorted(CAUGHT_BY[name]))
        for dtype, caught in futures[name].result().items():
            first = caught[0] if caught else None
            rows.append(f"| {name} | {dtype} | {', '.join(f'{c} (@{n})' for c, n, _ in caught) or '**none**'} "
                        f"(expected: {expected}) | {first[1] if first else '-'} | `{first[2] if first else 'SURVIVED'}` |")
        print("\n".join(rows[-len(dtypes):]), flush=True)
    return rows


def detection_seed_rows(pool: ProcessPoolExecutor, examples: int, dtypes: list[str], seeds: list[int]) -> list[str]:
    """Each mutant over many seeds: how often it is caught at all, and by a check CAUGHT_BY expects."""
    from mutants import CAUGHT_BY, backends

    names = [b.name for b in backends()]
    futures = {(name, seed): pool.submit(catches, name, examples, dtypes, seed) for name in names for seed in seeds}
    rows = ["| mutant | dtype | seeds caught | by an expected check | earliest catch, median (worst) | checks that ever caught it |",
            "|---|---|---|---|---|---|"]
    for name in names:
        runs = [futures[name, seed].result() for seed in seeds]
        for dtype in dtypes:
            per_seed = [run[dtype] for run in runs]
            earliest = sorted(min(n for _, n, _ in caught) for caught in per_seed if caught)
            expected = sum(any(c in CAUGHT_BY[name] for c, _, _ in caught) for caught in per_seed)
            ever = sorted({c for caught in per_seed for c, _, _ in caught})
            spread = f"{earliest[len(earliest) // 2]} ({earliest[-1]})" if earliest else "-"
            rows.append(f"| {name} | {dtype} | {len(earliest)} of {len(seeds)} | {expected} of {len(seeds)} | {spread} "
                        f"| {', '.join(ever) or '**none**'} |")
        print("\n".join(rows[-len(dtypes):]), flush=True)
    return rows


@dataclass
class Margin:
    """One correct backend x dtype x check over all seeds."""
    examples: int = 0
    ratio: float = 0.0  # worst error ratio (forward/backward only)
    use: float = 0.0  # worst bound use: value / limit, a pass is below 1
    use_case: str = ""
    known: int = 0  # seeds whose search stopped at a known finding
    alarms: list[str] = field(default_factory=list)


def margins_for_seed(seed: int, examples: int, names: list[str], dtypes: list[str],
                     checks: tuple[str, ...] | None = None) -> list[dict]:
    """Every op-level check (or ``checks``) of every correct backend on one seed, as plain dicts (they cross processes)."""
    from known import cell_findings, scoped

    from attnparity.backends.registry import get_backend
    from attnparity.check.cases import AttnCase
    from attnparity.suite.op import OP_CHECKS, run_op

    out = []
    for name in names:
        plain = get_backend(name)
        if plain.unavailable_reason():
            continue
        for dtype in dtypes:
            if dtype not in plain.capabilities.dtype_names:
                continue
            for check in checks or OP_CHECKS:
                if check == "backward" and not plain.capabilities.backward:
                    continue
                # the ledger applied as a run applies it: a failure it explains is an xfail
                record = run_op(context([plain], [dtype], examples, seed), plain, dtype, check,
                                cell_findings(name, check, dtype))
                row = {"backend": name, "dtype": dtype, "check": check, "seed": seed, "verdict": record.verdict,
                       "case": "", "known": None, "message": "", "use_case": ""}
                if record.verdict == "xfail":
                    row.update(verdict="known", known=", ".join(record.extra.get("known", {})) or None)
                elif record.verdict == "fail":
                    row["case"] = AttnCase.from_dict(record.case).short() if record.case else ""
                    row["message"] = record.message.splitlines()[0] if record.message else ""
                backend = scoped(plain, check)
                if backend is not plain:  # the margin of the rest: run again with the finding outside the claims
                    record = run_op(context([backend], [dtype], examples, seed), backend, dtype, check)
                    if record.verdict == "fail":
                        row.update(verdict="fail", known=None, case=AttnCase.from_dict(record.case).short(),
                                   message=record.message.splitlines()[0])
                row.update(examples=record.examples, use=record.metrics.get("bound_use_max", 0.0),
                           ratio=max(record.metrics.get("ratio_max", 0.0), record.metrics.get("ratio_mean", 0.0)))
                if record.verdict == "pass" and record.extra.get("closest_case"):
                    row["use_case"] = AttnCase.from_dict(record.extra["closest_case"]).short()
                out.append(row)
    return out


def margin_rows(pool: ProcessPoolExecutor, seeds: list[int], examples: int, names: list[str],
                dtypes: list[str], checks: tuple[str, ...] | None = None) -> tuple[list[str], dict]:
    from attnparity.suite.op import NUMERIC_CHECKS
    from attnparity.check.tolerance import Tolerances

    margins: dict[tuple[str, str, str], Margin] = {}
    futures = [pool.submit(margins_for_seed, seed, examples, names, dtypes, checks) for seed in seeds]
    for done, future in enumerate(as_completed(futures), 1):
        for row in future.result():
            m = margins.setdefault((row["backend"], row["dtype"], row["check"]), Margin())
            m.examples += row["examples"]
            m.ratio = max(m.ratio, row["ratio"])
            if row["use"] > m.use:
                m.use, m.use_case = row["use"], row["use_case"]
            m.known += bool(row["known"])
            if row["verdict"] == "fail":
                m.alarms.append(f"seed {row['seed']}: `{row['case']}` {row['message']}")
        print(f"margins: {done}/{len(seeds)} seeds done", flush=True)
    rows = ["| backend | dtype | check | examples judged | worst error ratio (k) | worst bound use | on (worst use) "
            "| false alarms | known finding hit |", "|---|---|---|---|---|---|---|---|---|"]
    for (name, dtype, check), m in margins.items():
        if check in NUMERIC_CHECKS:
            k = Tolerances().bound(name, dtype, grad=check == "backward").k
            ratio = f"{m.ratio:.3g} ({k:g})"
        else:
            ratio = "-"
        examples = m.examples or "0 (not claimed)"
        rows.append(f"| {name} | {dtype} | {check} | {examples} | {ratio} | {m.use:.3g} | `{m.use_case}` "
                    f"| {'; '.join(m.alarms) or 0} | {m.known} of {len(seeds)} seeds |")
    return rows, margins


def budget_rows(pool: ProcessPoolExecutor, budgets: list[int], seeds: list[int], dtypes: list[str]) -> list[str]:
    """What raising the example budget buys: the mutants the default run finds last, caught how often
    and how early at each budget, over several seeds."""
    futures = {(name, dtype, n, seed): pool.submit(_first_catch, name, dtype, n, seed)
               for name, dtype in HARD_CELLS if dtype in dtypes for n in budgets for seed in seeds}
    rows = ["| mutant | dtype | examples | caught (seeds) | examples to find, median | slowest find |", "|---|---|---|---|---|---|"]
    for name, dtype in (cell for cell in HARD_CELLS if cell[1] in dtypes):
        for n in budgets:
            found = [futures[name, dtype, n, s].result() for s in seeds]
            hits = sorted(f for f in found if f is not None)
            median = hits[len(hits) // 2] if hits else "-"
            rows.append(f"| {name} | {dtype} | {n} | {len(hits)} of {len(found)} | {median} | {hits[-1] if hits else '-'} |")
            print(rows[-1], flush=True)
    cost = {(dtype, n): pool.submit(_item_seconds, COST_BACKEND, dtype, n) for dtype in dtypes for n in budgets}
    rows += ["", f"What it costs: one `forward` item of a correct backend ({COST_BACKEND}, every example judged, no",
             "early stop), seed 0, one thread, in seconds:", "",
             "| dtype | " + " | ".join(f"{n} examples" for n in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for dtype in dtypes:
        rows.append(f"| {dtype} | " + " | ".join(f"{cost[dtype, n].result():.1f}" for n in budgets) + " |")
    return rows


COST_BACKEND = "sdpa-flash"


def _item_seconds(name: str, dtype: str, examples: int) -> float:
    from attnparity.backends.registry import get_backend
    from attnparity.suite.op import run_op

    backend = get_backend(name)
    start = time.perf_counter()
    run_op(context([backend], [dtype], examples, 0), backend, dtype, "forward")
    return time.perf_counter() - start


#: The cells the default run catches last (docs/reports/detection.md): where a larger budget could matter.
HARD_CELLS = [("mutant-softmax-bf16", "bf16"), ("mutant-batch-dependent", "bf16"), ("mutant-guesses-layout", "fp32"),
              ("mutant-ignores-scale", "fp16")]


def _first_catch(name: str, dtype: str, examples: int, seed: int) -> int | None:
    """The example at which the forward check first fails, or None if it never does."""
    from mutants import mutant

    from attnparity.suite.op import run_op

    backend = mutant(name)
    record = run_op(context([backend], [dtype], examples, seed), backend, dtype, "forward")
    return record.extra.get("found_at") if record.verdict == "fail" else None


def pipelines_for_mutant(name: str, dtypes: list[str]) -> list[tuple[str, str, str, float, int, int]]:
    """(dtype, pipeline, verdict, SSIM against fp64-reference attention, calls routed to the mutant, calls
    outside its claims that ran with the reference) for one mutant, each tiny pipeline."""
    from mutants import mutant

    from attnparity.suite import pipelines

    backend = mutant(name)
    ctx = context([backend], dtypes, 1, seed=0)  # no hypothesis here: any budget will do
    out = []
    for check in pipelines.checks(ctx):
        if check.dtype not in backend.capabilities.dtype_names:  # a half-precision-only mutant: no fp32 cell
            out.append((check.dtype, check.check.removeprefix("pipeline:"), "unclaimed", float("nan"), 0, 0))
            continue
        if check.skip:
            raise RuntimeError(f"{check.check} cannot run: {check.skip}")
        record = check.run()
        out.append((check.dtype, check.check.removeprefix("pipeline:"), record.verdict,
                    record.metrics.get("ssim_ref", float("nan")), int(record.metrics.get("routed_calls", 0)),
                    int(record.metrics.get("fallback_calls", 0))))
    return out


def layer_rows(pool: ProcessPoolExecutor, dtypes: list[str]) -> list[str]:
    from mutants import CAUGHT_BY, backends

    names = [b.name for b in backends()]
    futures = {name: pool.submit(pipelines_for_mutant, name, dtypes) for name in names}
    rows = ["| mutant | dtype | op-level checks that catch it (asserted) | pipelines that fail | lowest SSIM vs reference "
            "| calls routed to it (outside its claims) | seen by |", "|---|---|---|---|---|---|---|"]
    for name in names:
        cells = futures[name].result()
        for dtype in dtypes:
            mine = [c for c in cells if c[0] == dtype and c[2] != "unclaimed"]
            if not mine:
                rows.append(f"| {name} | {dtype} | (does not claim {dtype}) | | | | |")
                continue
            failing = [pipe for _, pipe, verdict, *_ in mine if verdict == "fail"]
            lowest = min(c[3] for c in mine)
            routed, outside = sum(c[4] for c in mine), sum(c[5] for c in mine)
            seen = "op level and pipelines" if failing else "op level only"
            rows.append(f"| {name} | {dtype} | {' / '.join(sorted(CAUGHT_BY[name]))} | "
                        f"{', '.join(failing) or 'none'} ({len(failing)} of {len(mine)}) | {lowest:.4f} | {routed} ({outside}) | {seen} |")
        print("\n".join(rows[-len(dtypes):]), flush=True)
    return rows


#: The generated sections, in document order. `--only` regenerates some and keeps the others of --out.
SECTIONS = ("detection", "detection-seeds", "layers", "margins", "budget")


def _section(name: str, pool: ProcessPoolExecutor, args: argparse.Namespace, dtypes: list[str]) -> list[str]:
    from known import FALSE_ALARM_SEEDS

    seeds = list(range(FALSE_ALARM_SEEDS.start, FALSE_ALARM_SEEDS.start + args.seeds))
    if name == "detection":
        return [
            "## Planted bugs (tests/mutants.py)", "",
            "`check (@n)`: that check failed, the first failing example being the n-th judged (1 = the first case",
            "of the edge corpus, which forward judges whole: about 54 cases before the 30 drawn). Secondary checks",
            "draw a third of the budget (10) after a spread of 9 corpus cases; backward keeps to the smaller corpus",
            "cases and runs only for mutants that claim it. Hypothesis seed 0.", "",
            *detection_rows(pool, args.examples, dtypes),
        ]
    if name == "detection-seeds":
        return [
            f"## Planted bugs over {args.detection_seeds} seeds", "",
            f"The same default run (all op-level checks, {args.examples} examples) with hypothesis seeds 0-"
            f"{args.detection_seeds - 1}: a mutant must be caught whatever the seed, not on one lucky draw.",
            "*by an expected check*: a check of `CAUGHT_BY` in tests/mutants.py failed, which is what",
            "tests/test_mutants.py asserts (in CI with one derandomized draw; locally with a random one).", "",
            *detection_seed_rows(pool, args.examples, dtypes, list(range(args.detection_seeds))),
        ]
    if name == "layers":
        return [
            "## Which layer sees each bug", "",
            "Every mutant run through the five tiny seeded pipelines (docs/pipelines.md) at the default SSIM",
            "thresholds. No mutant is seen by pipelines only: each is caught at op level (table above, asserted by",
            "tests/test_mutants.py). The ones pipelines miss are the reason the op-level search exists.", "",
            *layer_rows(pool, dtypes),
        ]
    if name == "margins":
        checks = tuple(args.margin_checks.split(",")) if args.margin_checks else None
        rows, margins = margin_rows(pool, seeds, args.examples, args.margin_backends.split(","), dtypes, checks)
        alarms = sum(len(m.alarms) for m in margins.values())
        worst = max(margins.items(), key=lambda kv: kv[1].use)
        return [
            f"## Correct backends over {len(seeds)} seeds ({seeds[0]}-{seeds[-1]})", "",
            f"**{alarms} false alarms** in {sum(m.examples for m in margins.values())} judged examples. The worst bound use",
            f"is {worst[1].use:.3g}, {' '.join(worst[0])}.", "",
            "- *bound use*: the measured value over the check's limit, for the closest example of any seed: a",
            "  pass is below 1. forward/backward: error / (k * naive error + floor). masked-kv: change / 16 roundings.",
            "  kwargs: distance to the reference with the kwarg / half the kwarg's effect. deterministic,",
            "  batch: difference / their limit. masked-rows has no numeric limit (NaN or not, zero or not): 0.",
            "- *error ratio*: backend error / naive same-dtype error (max of max-abs and mean-abs) of the",
            "  worst-ratio example; the floor of a few roundings lets a ratio above k pass on tiny errors, which is",
            "  why bound use, not ratio, says how close a backend came.",
            "- *known finding hit*: seeds whose search stopped at torch's CPU flash backward finding (rows fully",
            "  masked by finfo.min or -1e4, docs/findings.md). The flash backward cells are measured a second",
            "  time with those cases outside their claims (tests/known.py): examples, ratio, bound use and false",
            "  alarms of those cells are of that run, so the margin is of the rest of the space, not of the finding.",
            "",
            *rows,
        ]
    budgets = [int(n) for n in args.budgets.split(",")]
    return [
        "## What raising the example budget buys", "",
        "The mutants the default run finds last, forward check only, over seeds "
        f"0-{args.budget_seeds - 1}: how often and how early each budget catches them. Examples to find counts",
        "the edge corpus first (about 54 forward cases), so a number above that was drawn by hypothesis.", "",
        *budget_rows(pool, budgets, list(range(args.budget_seeds)), dtypes),
    ]


def _sections_of(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """What ``path`` holds already: the hand-written preamble (kept as it is) and the generated
    sections, by the SECTIONS name their marker comment carries."""
    preamble: list[str] = []
    sections: dict[str, list[str]] = {}
    current = None
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("<!-- section: "):
            current = line.removeprefix("<!-- section: ").split()[0]
            sections[current] = []
        elif current:
            sections[current].append(line)
        else:
            preamble.append(line)
    return preamble, sections


def main(argv: list[str] | None = None) -> int:
    import torch
    from known import CORRECT

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=30, help="hypothesis examples per item (the default run's)")
    parser.add_argument("--seeds", type=int, default=20, help="margins: this many of the slow false-alarm test's seeds")
    parser.add_argument("--dtypes", default="fp32,fp16,bf16")
    parser.add_argument("--margin-backends", default=",".join(CORRECT))
    parser.add_argument("--margin-checks", default="", help="margins: only these op checks (comma list; default all)")
    parser.add_argument("--detection-seeds", type=int, default=20, help="detection-seeds: hypothesis seeds 0..N-1")
    parser.add_argument("--budgets", default="30,100,300", help="budget study: example counts to compare")
    parser.add_argument("--budget-seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reports" / "detection.md")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma list of sections to (re)generate, the others of --out are kept: {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    dtypes, only = args.dtypes.split(","), [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    preamble, sections = _sections_of(args.out)
    with _pool(args.jobs) as pool:
        for name in only:
            start = time.perf_counter()
            body = _section(name, pool, args, dtypes)
            took = time.perf_counter() - start
            sections[name] = ["", f"*Generated on {dt.date.today()}, torch {torch.__version__}, CPU, {args.examples} examples "
                              f"per item (the default), default tolerances, {args.jobs} one-thread workers, {took:.0f} s.*",
                              "", *body, ""]
            print(f"section {name}: {took:.0f} s", flush=True)
            # After each section, not at the end: a section that fails later must not lose the
            # half hour an earlier one took (the margins were lost once that way).
            _write(args.out, preamble, sections)
    return 0


def _write(out: Path, preamble: list[str], sections: dict[str, list[str]]) -> None:
    text = list(preamble) or ["# Detection power", "",
                        "The sections below are generated by `python scripts/detection.py` (`--only SECTION` regenerates",
                        "one and keeps the rest, and this text above them). Every figure is from a 2-core CPU machine.", ""]
    for name in SECTIONS:
        if name in sections:
            text += [f"<!-- section: {name} (scripts/detection.py --only {name}) -->", *sections[name]]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text).rstrip() + "\n")
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
