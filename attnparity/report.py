"""Result records -> the terminal matrix (placeholder until the report module lands)."""

from __future__ import annotations

from collections import Counter
from typing import Any


def summarize(ctx: Any, records: list[dict[str, Any]], terminal: Any) -> None:
    counts = Counter(r["verdict"] for r in records)
    terminal.write_sep("=", "attnparity matrix")
    terminal.write_line(", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "no records")
