"""The perf records of a run as Markdown tables (``attnparity perf-table results.json``; what
docs/reports/perf-cpu.md was made with)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TABLE_COLUMNS = ("shape", "backend", "dtype", "ms", "cv", "TFLOP/s", "% peak", "× sdpa-math", "× naive")
PIPELINE_COLUMNS = ("pipeline", "backend", "dtype", "images/s", "cv", "× default attention", "unrouted images/s",
                    "fallback calls")


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _skipped(rec: dict[str, Any]) -> bool:
    return rec.get("verdict") in ("skip", "error") or "ms" not in (rec.get("metrics") or {})


def _rows(records: Sequence[dict[str, Any]], prefix: str, cells: Any, width: int) -> list[tuple[str, ...]]:
    """Rows of the perf records whose check starts with ``prefix``; skips show their reason."""
    rows = []
    for rec in records:
        if rec.get("kind") != "perf" or not rec["check"].startswith(prefix):
            continue
        head = (rec["check"].removeprefix(prefix), rec.get("backend") or "", rec.get("dtype") or "")
        if _skipped(rec):
            reason = rec["message"].splitlines()[0] if rec.get("message") else ""
            rows.append(head + (f"{rec.get('verdict')}: {reason}",) + ("",) * (width - 1))
            continue
        rows.append(head + cells(rec.get("metrics") or {}))
    return rows


def table_rows(records: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per op-level perf record (dicts as in results.json)."""
    return _rows(records, "perf:", lambda m: (
        _num(m.get("ms"), ".3g"), _pct(m.get("ms_cv")), _num(m.get("tflops"), ".3g"),
        _num(m.get("pct_peak"), ".0f"), _num(m.get("speedup_math"), ".2f"), _num(m.get("speedup_naive"), ".2f")), 6)


def pipeline_table_rows(records: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per pipeline perf record."""
    return _rows(records, "perf-pipeline:", lambda m: (
        _num(m.get("images_per_s"), ".3g"), _pct(m.get("ms_cv")), _num(m.get("speedup_default"), ".2f"),
        _num(m.get("default_images_per_s"), ".3g"), _num(m.get("fallback_calls"), ".0f")), 5)


def _markdown(columns: Sequence[str], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def grouped(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records grouped by shape (or pipeline), then dtype, in the order each first appears; backends
    keep their run order within a group, so each group reads as one comparison."""
    checks = {c: i for i, c in enumerate(dict.fromkeys(r.get("check") for r in records))}
    dtypes = {d: i for i, d in enumerate(dict.fromkeys(r.get("dtype") for r in records))}
    return sorted(records, key=lambda r: (checks[r.get("check")], dtypes[r.get("dtype")]))


def markdown_table(records: Sequence[dict[str, Any]]) -> str:
    """The perf records as Markdown: the op-level table, then the pipeline table when there is one."""
    records = grouped(records)
    ops, pipelines = table_rows(records), pipeline_table_rows(records)
    tables = [_markdown(TABLE_COLUMNS, ops)] if ops or not pipelines else []
    if pipelines:
        tables.append(_markdown(PIPELINE_COLUMNS, pipelines))
    return "\n\n".join(tables)
