"""A run in Markdown, for where CI users look: a job summary (``GITHUB_STEP_SUMMARY``) or a
pull-request comment. The totals, the op matrix, failures, known findings, the perf table and the
upgrade gate, each only when the run has it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attnparity.results import matrix as mx
from attnparity.results.record import ResultRecord

from .comparison import as_markdown
from .markdown import markdown_table

#: Failures listed by name in the summary; the rest are counted (the report holds them all).
LISTED_FAILURES = 20
#: The environment variable GitHub Actions names its job summary file by.
STEP_SUMMARY = "GITHUB_STEP_SUMMARY"


def _cell_text(cell: mx.MatrixCell | None) -> str:
    if cell is None:
        return "·"
    if cell.verdict in ("skip", None):
        return "skip"
    ratio = "" if cell.ratio is None else f" {cell.ratio:.3g}"
    return f"**{cell.verdict}**{ratio}" if cell.verdict in ("fail", "error") else f"{cell.verdict}{ratio}"


def matrix_table(records: list[ResultRecord]) -> list[str]:
    """Backend x dtype: the cell's verdict and worst error ratio, for the backends that ran."""
    m = mx.build_matrix(records)
    backends = mx.ran_backends(m)
    if not backends:
        return []
    lines = ["| backend | " + " | ".join(m.dtypes) + " |", "|---|" + "---|" * len(m.dtypes)]
    lines += [f"| {b} | " + " | ".join(_cell_text(m.cell(b, d)) for d in m.dtypes) + " |" for b in backends]
    return ["", "Op matrix (verdict, worst error ratio against naive math in the same dtype):", ""] + lines


def failure_lines(records: list[ResultRecord]) -> list[str]:
    failed = mx.failures(records)
    if not failed:
        return []
    lines = ["", f"Failures ({len(failed)}):", ""]
    for r in failed[:LISTED_FAILURES]:
        first = (r.message.strip().splitlines() or [""])[0]
        lines.append(f"- `{r.nodeid or r.check}`: {first}")
    if len(failed) > LISTED_FAILURES:
        lines.append(f"- ... and {len(failed) - LISTED_FAILURES} more in results.json")
    return lines


def known_lines(records: list[ResultRecord]) -> list[str]:
    known = mx.known_findings(records)
    if not known:
        return []
    return ["", "Known findings (xfail):", ""] + [
        f"- `{k.id}` ({len(k.cells)} cells): {k.reason}" + (f" ({k.link})" if k.link.startswith("http") else "")
        for k in known]


def run_summary(records: list[ResultRecord], *, device: str = "", comparison: Any = None) -> str:
    """The whole run as Markdown."""
    counts = ", ".join(f"{n} {v}" for v, n in mx.totals(records).items() if n) or "no cells ran"
    lines = [f"### attnparity{f' on {device}' if device else ''}: {counts}"]
    lines += matrix_table(records) + failure_lines(records) + known_lines(records)
    perf = [r.to_json() for r in records if r.kind == "perf" and r.verdict not in ("skip", "error")]
    if perf:
        lines += ["", "Perf, per shape:", "", markdown_table(perf)]
    text = "\n".join(lines) + "\n"
    return text + ("\n" + as_markdown(comparison) if comparison is not None else "")


def append_step_summary(text: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """Append ``text`` to the job summary file CI names (GITHUB_STEP_SUMMARY); None when none is named."""
    target = (environ if environ is not None else os.environ).get(STEP_SUMMARY)
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as out:
        out.write(text if text.endswith("\n") else text + "\n")
    return path
