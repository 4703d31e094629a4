"""The upgrade gate's comparison (results.gate.Comparison) for people and for CI: plain text for a
terminal or a log, Markdown for a job summary or a pull-request comment, JSON for a program.

Lines are never cut: a timing's milliseconds and the reason a cell was inconclusive sit at the end
of its line, and a CI log has no screen width."""

from __future__ import annotations

import json
from typing import Any

#: Each group's mark in plain text, in the order groups are listed.
MARKS = {"worse": "WORSE", "inconclusive": "?    ", "better": "ok   "}
#: Each group's heading in Markdown.
HEADINGS = {"worse": "Worse", "inconclusive": "Inconclusive timings (a run was busy, or the reference moved alone: rerun on an idle machine)",
            "better": "Better or new"}
FORMATS = ("text", "markdown", "json")


def verdict_line(c: Any) -> str:
    return "upgrade gate: " + ("FAILED" if c.failed else "passed")


def head_line(c: Any) -> str:
    head = f"compared {c.cells_compared} cells with {c.old_source}: {len(c.worse)} worse, "
    if c.inconclusive:
        head += f"{len(c.inconclusive)} inconclusive timings (rerun on an idle machine to judge), "
    return head + f"{len(c.better)} better or new"


def comparison_lines(c: Any) -> list[tuple[str, str]]:
    """(group, line) pairs: the head (group ""), then one line per difference, worse first, then
    inconclusive timings, then better or new."""
    return [("", head_line(c))] + [(d.outcome, f"  {MARKS[d.outcome]} {d.label}: {d.text}") for d in c.differences]


def as_text(c: Any) -> str:
    return "\n".join([line for _, line in comparison_lines(c)] + [verdict_line(c)])


def _cell(text: Any) -> str:
    """Text that stays inside one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def as_markdown(c: Any, *, title: str = "attnparity upgrade gate") -> str:
    """A heading with the verdict, the counts, then one table per group of differences."""
    mark = "FAILED" if c.failed else "passed"
    t = c.thresholds
    lines = [f"### {title}: {mark}", "",
             f"{head_line(c)}.", "",
             f"Allowed: error ratio x{t.ratio_factor:g}, SSIM -{t.ssim_margin:g}, time +{t.slowdown:.0%} "
             f"(and {t.noise:g}x its noise; beside other work up to +{t.busy_slowdown:.0%}, or on a quiet machine where only its reference moved, is inconclusive)."]
    for group in MARKS:
        diffs = [d for d in c.differences if d.outcome == group]
        if not diffs:
            continue
        lines += ["", f"#### {HEADINGS[group]} ({len(diffs)})", "", "| cell | what | difference |", "|---|---|---|"]
        lines += [f"| {_cell(d.label)} | {d.what} | {_cell(d.text)} |" for d in diffs]
    return "\n".join(lines) + "\n"


def as_json(c: Any) -> str:
    return json.dumps(c.to_json(), indent=1, default=str)


def render(c: Any, fmt: str) -> str:
    """The comparison in one of FORMATS."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return {"text": as_text, "markdown": as_markdown, "json": as_json}[fmt](c)
