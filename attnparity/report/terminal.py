"""The terminal summary: matrix backend x dtype, pipelines, perf, unavailable backends, the gate.

Lines stay within 100 columns. Colour goes through the terminal reporter's markup, which pytest
turns off when the output is not a tty (or with --color=no / NO_COLOR).
"""

from __future__ import annotations

import math
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


def summarize(ctx: Any, records: list[ResultRecord | dict[str, Any]], terminal: Terminal) -> None:
    """The whole attnparity summary (the entry point session.finish_run calls)."""
    recs = mx.as_records(records)
    counts = mx.totals(recs)
    terminal.write_sep("=", "attnparity matrix")
    if not recs:
        terminal.write_line("no attnparity records (no cells ran)")
        return
    terminal.write_line("records: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n))
    write_matrix(mx.build_matrix(recs), terminal)
    write_pipelines(mx.rows_of(recs, "pipeline"), terminal)
    write_perf(mx.rows_of(recs, "perf"), terminal)
    write_unavailable(mx.unavailable(recs), terminal)
    write_repros(mx.failures(recs), terminal)


def write_matrix(m: mx.Matrix, terminal: Terminal) -> None:
    if not m.backends:
        return
    name_w = min(max(len(b) for b in m.backends), NAME_WIDTH)
    col_w = max(19, min(24, (WIDTH - name_w - 2) // max(len(m.dtypes), 1)))
    terminal.write_line("")
    terminal.write_line("op parity per backend x dtype: verdict, worst error ratio (backend err / "
                        "naive-math err), examples")
    terminal.write_line(f"{'backend':<{name_w}}  " + "".join(f"{d:<{col_w}}" for d in m.dtypes).rstrip())
    for backend in m.backends:
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


def write_perf(rows: list[mx.Row], terminal: Terminal) -> None:
    if not rows:
        return
    device = rows[0].record.device or "?"
    terminal.write_line("")
    terminal.write_line(clip(f"perf on {device}: median ms, TFLOP/s, speed-up over sdpa-math", WIDTH))
    terminal.write_line(f"{'shape':<24}{'backend':<{NAME_WIDTH}}{'dtype':<6}{'ms':>10}{'TFLOP/s':>10}{'speedup':>9}")
    for row in rows:
        if row.verdict == "skip":
            continue
        speed = row.metrics.get("speedup_math")
        terminal.write_line(f"{clip(row.check, 23):<24}{clip(row.backend, NAME_WIDTH - 1):<{NAME_WIDTH}}{row.dtype:<6}"
                            f"{fmt_num(row.metrics.get('ms')):>10}{fmt_num(row.metrics.get('tflops')):>10}"
                            f"{(fmt_num(speed) + 'x') if speed is not None else '-':>9}")


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


def write_comparison(comparison: Any, terminal: Terminal) -> None:
    from attnparity.results.gate import format_comparison

    title = "attnparity upgrade gate: " + ("FAILED" if comparison.failed else "passed")
    terminal.write_sep("=", title, red=comparison.failed, green=not comparison.failed)
    lines = format_comparison(comparison, WIDTH)
    terminal.write_line(lines[0])
    for line in lines[1:]:
        worse = line.lstrip().startswith("WORSE")
        terminal.write_line(line, red=worse, green=not worse)
