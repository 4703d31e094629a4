"""The terminal summary: matrix backend x dtype, pipelines, perf, unavailable backends, the gate.

The matrix and lists stay within 100 columns; lines that carry figures to copy (repro lines, the
gate's differences, the Markdown perf table) are never cut. Colour goes through the terminal reporter's markup, which pytest
turns off when the output is not a tty (or with --color=no / NO_COLOR).
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Protocol

from attnparity.results import matrix as mx
from attnparity.results.record import ResultRecord

WIDTH = 100
NAME_WIDTH = 26
VERDICT_MARKUP = {"pass": {"green": True}, "fail": {"red": True, "bold": True},
                  "error": {"red": True, "bold": True}, "skip": {"yellow": True}, "xfail": {"purple": True}}


class Terminal(Protocol):
    def write_sep(self, sep: str, title: str | None = ..., **markup: bool) -> None: ...
    def write(self, content: str, **markup: bool) -> None: ...
    def write_line(self, line: str, **markup: bool) -> None: ...


def fmt_num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf"
    if x != 0 and (abs(x) >= 1000 or abs(x) < 0.01):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}" if abs(x) >= 100 else f"{x:.{max(digits - 1, 0)}f}"


def fmt_ssim(x: Any) -> str:
    return "-" if x is None else f"{float(x):.4f}"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "~"


#: Failure lines in the short summary; the rest are counted and left to results.json / --attn-summary=full.
SHORT_FAILURES = 10
#: Repro lines in the short summary (two lines each).
SHORT_REPROS = 2
#: Screen lines the reason of one skip group may take beyond the backends' names (which are never cut).
REASON_LINES = 2


def summarize(ctx: Any, records: list[ResultRecord | dict[str, Any]], terminal: Terminal, *,
              full: bool = False) -> None:
    """The whole attnparity summary (the entry point session.finish_run calls).

    Short (the default) fits a screen: failures first, then only the rows that ran, perf as one
    speed-up per backend and dtype, unavailable backends one entry per reason. ``full``
    (--attn-summary=full) prints every row, skips included."""
    recs = mx.as_records(records)
    counts = mx.totals(recs)
    terminal.write_sep("=", "attnparity matrix")
    if not recs:
        terminal.write_line("no attnparity records (no cells ran)")
        return
    terminal.write_line("records: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n))
    failed = mx.failures(recs)
    write_failures(failed, terminal, limit=None if full else SHORT_FAILURES)
    write_known(mx.known_findings(recs), terminal)
    matrix = mx.build_matrix(recs)
    if full:
        write_matrix(matrix, terminal)
        write_pipelines(mx.rows_of(recs, "pipeline"), terminal)
        write_perf(mx.rows_of(recs, "perf"), terminal)
        write_unavailable(mx.unavailable(recs), terminal)
        write_repros(failed, terminal, limit=len(failed))
        return
    write_matrix(matrix, terminal, backends=mx.ran_backends(matrix))
    write_pipeline_rollup(mx.pipeline_matrix(recs), terminal)
    perf = mx.rows_of(recs, "perf")
    if perf_run(recs):  # -m attn_perf: the per-shape figures are what was asked for
        write_perf(perf, terminal, skips=False)
    else:
        write_perf_rollup(perf, terminal)
    write_skip_groups(*mx.skip_groups(recs), terminal)
    write_repros(failed, terminal, limit=SHORT_REPROS)
    terminal.write_line("")
    terminal.write_line("every row, skips included: --attn-summary=full; all detail: --attn-report=DIR")


def write_failures(failed: list[ResultRecord], terminal: Terminal, limit: int | None) -> None:
    if not failed:
        return
    terminal.write_line("")
    terminal.write_line(f"failures ({len(failed)}), first line of each; the text is in the failure "
                        "report above and results.json:")
    shown = failed if limit is None else failed[:limit]
    for r in shown:
        where = r.nodeid.split("::", 1)[-1] if r.nodeid else f"{r.check}[{r.backend}-{r.dtype}]"
        first = (r.message or "").strip().splitlines()[0] if (r.message or "").strip() else ""
        terminal.write(f"  {r.verdict:<6}", **VERDICT_MARKUP[r.verdict])
        unchanged = "(unchanged since the baseline: xfail) " if r.extra.get("unchanged_failure") else ""
        terminal.write_line(clip(f"{where}  {unchanged}{first}", WIDTH - 8))
    if len(failed) > len(shown):
        terminal.write_line(f"  ... and {len(failed) - len(shown)} more (--attn-summary=full, results.json)")


def write_known(known: list[mx.KnownFinding], terminal: Terminal) -> None:
    """Known findings (the ledger) right after failures: two lines each, whatever the cell count."""
    if not known:
        return
    terminal.write_line("")
    terminal.write_line(f"known findings ({sum(len(k.cells) for k in known)} cells, xfail; --attn-known):")
    for k in known:
        dtypes: dict[tuple[str, str], list[str]] = {}
        for r in k.cells:
            dtypes.setdefault((r.check, r.backend or ""), []).append(r.dtype or "")
        cells = "; ".join(f"{check} {backend} {','.join(d)}" for (check, backend), d in dtypes.items())
        terminal.write("  xfail  ", **VERDICT_MARKUP["xfail"])
        terminal.write_line(clip(f"{k.id}: {cells}", WIDTH - 9))
        terminal.write_line(clip(f"         {k.reason}" + (f" ({k.link})" if k.link else ""), WIDTH))


def write_matrix(m: mx.Matrix, terminal: Terminal, backends: list[str] | None = None) -> None:
    backends = m.backends if backends is None else backends
    if not backends:
        return
    name_w = min(max(len(b) for b in backends), NAME_WIDTH)
    col_w = max(19, min(24, (WIDTH - name_w - 2) // max(len(m.dtypes), 1)))
    terminal.write_line("")
    terminal.write_line("op parity per backend x dtype: verdict, worst error ratio (backend err / "
                        "naive-math err), examples")
    terminal.write_line(f"{'backend':<{name_w}}  " + "".join(f"{d:<{col_w}}" for d in m.dtypes).rstrip())
    for backend in backends:
        terminal.write(f"{clip(backend, name_w):<{name_w}}  ")
        for dtype in m.dtypes:
            cell = m.cell(backend, dtype)
            if cell is None or cell.verdict is None:
                terminal.write(f"{'.':<{col_w}}")
                continue
            terminal.write(f"{cell.verdict:<5}", **VERDICT_MARKUP[cell.verdict])
            rest = f" {fmt_num(cell.ratio):>8} {cell.examples:>4}" if cell.verdict != "skip" else ""
            terminal.write(f"{rest:<{col_w - 5}}")
        terminal.write_line("")


def write_pipelines(rows: list[mx.Row], terminal: Terminal) -> None:
    if not rows:
        return
    terminal.write_line("")
    terminal.write_line("pipelines: SSIM vs the same run with fp64 attention (ref) and vs the golden image")
    terminal.write_line(f"{'pipeline':<22}{'backend':<{NAME_WIDTH}}{'dtype':<6}{'verdict':<8}"
                        f"{'ssim_ref':>10}{'ssim_golden':>13}")
    for row in rows:
        terminal.write(f"{clip(row.check, 21):<22}{clip(row.backend, NAME_WIDTH - 1):<{NAME_WIDTH}}{row.dtype:<6}")
        terminal.write(f"{row.verdict:<8}", **VERDICT_MARKUP[row.verdict])
        terminal.write_line(f"{fmt_ssim(row.metrics.get('ssim_ref')):>10}{fmt_ssim(row.metrics.get('ssim_golden')):>13}")


def write_pipeline_rollup(pm: mx.PipelineMatrix, terminal: Terminal) -> None:
    """Backend x dtype over the pipelines: worst verdict, pipelines passed / run, lowest SSIM
    against fp64 attention. Which pipeline failed is in the failures above."""
    backends = list(dict.fromkeys(backend for _, backend in pm.rows))
    if not backends:
        return
    name_w = min(max(len(b) for b in backends), NAME_WIDTH)
    col_w = max(19, min(24, (WIDTH - name_w - 2) // max(len(pm.dtypes), 1)))
    pipelines = list(dict.fromkeys(p for p, _ in pm.rows))
    terminal.write_line("")
    terminal.write_line(clip(f"pipelines ({len(pipelines)}) per backend x dtype: verdict, passed/ran, lowest "
                             "SSIM vs fp64 attention, vs golden", WIDTH))
    terminal.write_line(f"{'backend':<{name_w}}  " + "".join(f"{d:<{col_w}}" for d in pm.dtypes).rstrip())
    for backend in backends:
        terminal.write(f"{clip(backend, name_w):<{name_w}}  ")
        for dtype in pm.dtypes:
            cells = [c for p in pipelines if (c := pm.cell(p, backend, dtype)) is not None and c.verdict != "skip"]
            if not cells:
                terminal.write(f"{'.':<{col_w}}")
                continue
            verdict = None
            for c in cells:
                verdict = mx.worse_verdict(verdict, c.verdict)
            assert verdict is not None
            passed = sum(c.verdict == "pass" for c in cells)
            low = min((float(c.ssim_ref) for c in cells if c.ssim_ref is not None), default=None)
            low_golden = min((float(c.ssim_golden) for c in cells if c.ssim_golden is not None), default=None)
            terminal.write(f"{verdict:<5}", **VERDICT_MARKUP[verdict])
            terminal.write(f"{f' {passed}/{len(cells)} {fmt_ssim(low)} {fmt_ssim(low_golden)}':<{col_w - 5}}")
        terminal.write_line("")


def perf_run(records: list[ResultRecord]) -> bool:
    """Only timings ran (a ``-m attn_perf`` run): its summary shows every shape."""
    ran = {r.kind for r in records if r.verdict != "skip"}
    return "perf" in ran and ran <= {"perf"}


def write_perf_rollup(rows: list[mx.Row], terminal: Terminal) -> None:
    """Backend x dtype: geometric mean of the speed-up over sdpa-math across the shapes, with its
    range. Per shape: a perf run's summary, --attn-summary=full or ``attnparity perf-table results.json``."""
    speeds: dict[tuple[str, str], list[float]] = {}
    shapes = set()
    for row in rows:
        value = row.metrics.get("speedup_math")
        if row.verdict == "skip" or value is None or not float(value) > 0:
            continue
        speeds.setdefault((row.backend, row.dtype), []).append(float(value))
        shapes.add(row.check)
    if not speeds:
        return
    backends = list(dict.fromkeys(b for b, _ in speeds))
    dtypes = sorted({d for _, d in speeds}, key=mx._dtype_key)
    name_w = min(max(len(b) for b in backends), NAME_WIDTH)
    col_w = max(19, min(24, (WIDTH - name_w - 2) // max(len(dtypes), 1)))
    device = rows[0].record.device or "?"
    terminal.write_line("")
    terminal.write_line(clip(f"perf on {device}: speed-up over sdpa-math, geometric mean over {len(shapes)} "
                             "shapes (min-max)", WIDTH))
    terminal.write_line(f"{'backend':<{name_w}}  " + "".join(f"{d:<{col_w}}" for d in dtypes).rstrip())
    for backend in sorted(backends, key=lambda b: -_geomean([v for (bb, _), vs in speeds.items() if bb == b
                                                             for v in vs])):
        cells = []
        for dtype in dtypes:
            vs = speeds.get((backend, dtype))
            text = f"{_geomean(vs):.2f}x ({min(vs):.2f}-{max(vs):.2f})" if vs else "."
            cells.append(f"{text:<{col_w}}")
        terminal.write_line((f"{clip(backend, name_w):<{name_w}}  " + "".join(cells)).rstrip())


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else 0.0


def write_skip_groups(whole: list[mx.SkipGroup], partial: list[mx.SkipGroup], terminal: Terminal) -> None:
    """One entry per reason, the backends' names first; the reason is cut after REASON_LINES."""
    for title, groups in (("unavailable here", whole), ("cells not claimed by backends that ran", partial)):
        if not groups:
            continue
        names = sum(len(g.backends) for g in groups)
        cells = sum(g.cells for g in groups)
        terminal.write_line("")
        terminal.write_line(f"{title}: {names} backend{'s' if names != 1 else ''}, {cells} skipped cells, "
                            "one entry per reason:")
        for g in groups:
            wrap = dict(width=WIDTH - 4, break_on_hyphens=False, break_long_words=True)
            # Every name is shown; the reason gets what is left of the names' last line, and one
            # more line when the names fit on one.
            names = len(textwrap.wrap(", ".join(g.backends) + ":", **wrap))
            room = names + (REASON_LINES - 1 if names == 1 else 0)
            lines = textwrap.wrap(f"{', '.join(g.backends)}: {g.reason}", **wrap)
            if len(lines) > room:
                lines = lines[:room]
                lines[-1] = clip(lines[-1] + " ...", WIDTH - 4)
            for i, line in enumerate(lines):
                terminal.write_line(("  " if i == 0 else "    ") + line, **({"yellow": True} if i == 0 else {}))


def write_perf(rows: list[mx.Row], terminal: Terminal, *, skips: bool = True) -> None:
    """The per-shape table of ``attnparity perf-table`` (ms, cv, TFLOP/s, % of peak, speed-ups), as
    Markdown so it pastes into an issue as it is; ``skips`` adds the rows that did not time."""
    from .markdown import markdown_table

    shown = [r.record.to_json() for r in rows if skips or r.verdict not in ("skip", "error")]
    if not shown:
        return
    terminal.write_line("")
    terminal.write_line(f"perf on {rows[0].record.ran_on or '?'}, per shape:")
    for line in markdown_table(shown).splitlines():
        terminal.write_line(line)


def write_unavailable(items: list[mx.Unavailable], terminal: Terminal) -> None:
    if not items:
        return
    terminal.write_line("")
    terminal.write_line("skipped (unavailable backends, unclaimed cells):")
    for u in items:
        terminal.write(f"  {clip(u.backend, NAME_WIDTH):<{NAME_WIDTH}} ", yellow=True)
        terminal.write_line(clip(f"{u.reason} ({u.cells} cell{'s' if u.cells != 1 else ''})", WIDTH - NAME_WIDTH - 3))


def write_repros(failed: list[ResultRecord], terminal: Terminal, limit: int = 20) -> None:
    repros = [r for r in failed if r.repro]
    if not repros:
        return
    terminal.write_line("")
    terminal.write_line("reproduce a failure (one line each; copy as is):")
    for r in repros[:limit]:
        terminal.write_line(f"  {r.nodeid or r.check}", red=True)
        terminal.write_line(f"    {r.repro}")  # never cut: it must stay runnable
    if len(repros) > limit:
        terminal.write_line(f"  ... and {len(repros) - limit} more in results.json")


#: How each group of the gate's differences is coloured (report.comparison.comparison_lines).
GATE_MARKUP: dict[str, dict[str, bool]] = {"": {}, "worse": {"red": True}, "inconclusive": {"yellow": True},
                                           "better": {"green": True}}


def write_comparison(comparison: Any, terminal: Terminal) -> None:
    from .comparison import comparison_lines

    title = "attnparity upgrade gate: " + ("FAILED" if comparison.failed else "passed")
    terminal.write_sep("=", title, red=comparison.failed, green=not comparison.failed)
    for group, line in comparison_lines(comparison):  # never cut: a timing's figures end its line
        terminal.write_line(line, **GATE_MARKUP[group])
