"""Records -> the run's tables, the one model behind the terminal summary, the HTML and the gate.

Nothing here formats: report.py prints these tables, report_html.py renders them, compare.py
compares two runs' cells.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .record import ResultRecord

#: Which verdict a cell takes when its records disagree: the worst one.
#: Worse verdicts rank higher; a known finding (xfail) is worse than a pass, better than a failure.
VERDICT_RANK = {"skip": 0, "pass": 1, "xfail": 2, "fail": 3, "error": 4}
#: Record kinds shown in the backend x dtype matrix.
MATRIX_KINDS = ("op", "semantic")
DTYPE_ORDER = ("fp32", "fp16", "bf16", "fp64")


def as_records(records: Iterable[ResultRecord | dict[str, Any]]) -> list[ResultRecord]:
    """Records as ResultRecord objects, whether they came as objects or as JSON dicts."""
    return [r if isinstance(r, ResultRecord) else ResultRecord.from_json(r) for r in records]


KIND_ORDER = ("op", "semantic", "pipeline", "perf")


def sort_records(records: Iterable[ResultRecord], backend_order: Iterable[str] = ()) -> list[ResultRecord]:
    """Records in one stable order (kind, backend as selected, dtype, check, node id), whatever order
    they finished in: a run under xdist reads and writes the same as a serial one."""
    rank = {name: i for i, name in enumerate(backend_order)}

    def key(r: ResultRecord) -> tuple[Any, ...]:
        kind = KIND_ORDER.index(r.kind) if r.kind in KIND_ORDER else len(KIND_ORDER)
        return (kind, rank.get(r.backend or "", len(rank)), r.backend or "", _dtype_key(r.dtype or ""), r.check,
                r.nodeid)

    return sorted(records, key=key)


def worse_verdict(a: str | None, b: str) -> str:
    return b if a is None or VERDICT_RANK[b] > VERDICT_RANK[a] else a


def error_ratio(record: ResultRecord) -> float | None:
    """The record's worst error ratio: max of ratio_max and ratio_mean, or None when it has none."""
    values = [record.metrics[k] for k in ("ratio_max", "ratio_mean") if record.metrics.get(k) is not None]
    values = [float(v) for v in values if not (isinstance(v, float) and math.isnan(v))]
    return max(values) if values else None


@dataclass
class MatrixCell:
    """backend x dtype over the op and semantic records of that pair."""

    backend: str
    dtype: str
    verdict: str | None = None
    ratio: float | None = None  # worst error ratio over the cell's records
    examples: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[ResultRecord] = field(default_factory=list)
    #: which devices ran the cell's records ("cuda:1 NVIDIA H200", "CPU (2 torch threads)")
    ran_on: list[str] = field(default_factory=list)

    def add(self, record: ResultRecord) -> None:
        where = record.ran_on
        if where and where not in self.ran_on:
            self.ran_on.append(where)
        self.verdict = worse_verdict(self.verdict, record.verdict)
        self.counts[record.verdict] = self.counts.get(record.verdict, 0) + 1
        self.examples += int(record.examples or 0)
        ratio = error_ratio(record)
        if ratio is not None:
            self.ratio = ratio if self.ratio is None else max(self.ratio, ratio)
        if record.verdict in ("fail", "error"):
            self.failures.append(record)


@dataclass
class Matrix:
    backends: list[str]
    dtypes: list[str]
    #: backend x dtype over every device (the worst verdict, the largest ratio)
    cells: dict[tuple[str, str], MatrixCell]
    #: the device dimension (record.device_key), in first-seen order: one entry for a single run
    devices: list[str] = field(default_factory=list)
    by_device: dict[tuple[str, str, str], MatrixCell] = field(default_factory=dict)

    def cell(self, backend: str, dtype: str) -> MatrixCell | None:
        return self.cells.get((backend, dtype))

    def device_cell(self, backend: str, dtype: str, device: str) -> MatrixCell | None:
        return self.by_device.get((backend, dtype, device))

    @property
    def multi_device(self) -> bool:
        return len(self.devices) > 1

    @property
    def gpu_indices(self) -> int:
        """How many distinct devices ran cells (several GPUs of one machine under xdist count apart)."""
        return len({where for c in self.cells.values() for where in c.ran_on})


def _dtype_key(name: str) -> tuple[int, str]:
    return (DTYPE_ORDER.index(name) if name in DTYPE_ORDER else len(DTYPE_ORDER), name)


def build_matrix(records: Iterable[ResultRecord]) -> Matrix:
    cells: dict[tuple[str, str], MatrixCell] = {}
    by_device: dict[tuple[str, str, str], MatrixCell] = {}
    backends: list[str] = []
    devices: list[str] = []
    dtypes: set[str] = set()
    for r in records:
        if r.kind not in MATRIX_KINDS or r.backend is None:
            continue
        dtype = r.dtype or "-"
        if r.backend not in backends:
            backends.append(r.backend)
        if r.device_key not in devices:
            devices.append(r.device_key)
        dtypes.add(dtype)
        cells.setdefault((r.backend, dtype), MatrixCell(r.backend, dtype)).add(r)
        by_device.setdefault((r.backend, dtype, r.device_key), MatrixCell(r.backend, dtype)).add(r)
    return Matrix(backends, sorted(dtypes, key=_dtype_key), cells, devices, by_device)


def devices_of(records: Iterable[ResultRecord]) -> list[str]:
    """The device dimension of these records (record.device_key), in first-seen order."""
    return list(dict.fromkeys(r.device_key for r in records))


@dataclass
class Row:
    """One pipeline or perf record, flattened for a table."""

    check: str
    backend: str
    dtype: str
    verdict: str
    metrics: dict[str, Any]
    record: ResultRecord


def rows_of(records: Iterable[ResultRecord], kind: str) -> list[Row]:
    rows = [Row(r.check, r.backend or "-", r.dtype or "-", r.verdict, dict(r.metrics), r)
            for r in records if r.kind == kind]
    return sorted(rows, key=lambda row: (row.check, _dtype_key(row.dtype), row.backend))


@dataclass
class Unavailable:
    backend: str
    reason: str
    cells: int


def unavailable(records: Iterable[ResultRecord]) -> list[Unavailable]:
    """Backends (or backend x dtype pairs) that were skipped, grouped by reason."""
    grouped: dict[tuple[str, str], int] = {}
    for r in records:
        if r.verdict == "skip":
            key = (r.backend or r.check, (r.message or "skipped").strip().splitlines()[0])
            grouped[key] = grouped.get(key, 0) + 1
    return [Unavailable(b, reason, n) for (b, reason), n in grouped.items()]


@dataclass
class SkipGroup:
    """Skipped cells that share one reason, and the backends they belong to."""

    reason: str  # with the backend's own name written as <backend>, so one line serves many
    backends: list[str]
    cells: int


#: Backend-specific words in skip reasons: quoted identifiers ('sage', '_flash_3') and hub repos
#: ((kernels-community/flash-attn2)). Without them one cause (a package not installed) gives one
#: line per backend, which is what made the summary hundreds of lines long.
_QUOTED = re.compile(r"'[^'\s]{1,60}'")
_HUB_REPO = re.compile(r"\([\w.-]+/[\w.-]+\)")


def skip_reason(record: ResultRecord, *, subject: bool = True) -> str:
    """The first line of a skip's message with the backend's own names taken out: quoted
    identifiers, hub repos and, with ``subject``, the backend's full name where it opens the
    sentence ("sdpa-flash does not claim fp32")."""
    reason = (record.message or "skipped").strip().splitlines()[0]
    name = record.backend or ""
    if subject and name and reason.startswith(name + " "):
        reason = "<backend>" + reason[len(name):]
    return _HUB_REPO.sub("(<hub repo>)", _QUOTED.sub("'<backend>'", reason))


def skip_groups(records: Iterable[ResultRecord]) -> tuple[list[SkipGroup], list[SkipGroup]]:
    """(backends none of whose cells ran, cells skipped in backends that did run), each grouped
    by reason in first-seen order."""
    records = list(records)
    ran = {r.backend or r.check for r in records if r.verdict != "skip"}
    whole: dict[str, SkipGroup] = {}
    partial: dict[str, SkipGroup] = {}
    for r in records:
        if r.verdict != "skip":
            continue
        name = r.backend or r.check
        # A wholly unavailable backend keeps its name in the text: "xformers not installed" names
        # the package that four xformers-* backends share.
        reason = skip_reason(r, subject=name in ran)
        groups = partial if name in ran else whole
        group = groups.setdefault(reason, SkipGroup(reason, [], 0))
        group.cells += 1
        if name not in group.backends:
            group.backends.append(name)
    return list(whole.values()), list(partial.values())


def ran_backends(m: Matrix) -> list[str]:
    """Matrix rows with at least one cell that was not skipped."""
    return [b for b in m.backends if any(c.verdict not in (None, "skip") for d in m.dtypes
                                         if (c := m.cell(b, d)) is not None)]


@dataclass
class PipelineCell:
    verdict: str
    ssim_ref: float | None
    ssim_golden: float | None
    record: ResultRecord


@dataclass
class PipelineMatrix:
    """Pipeline x backend rows, dtype columns: the op matrix's shape for the pipeline records."""

    rows: list[tuple[str, str]]  # (pipeline check, backend), only those with a cell that ran
    dtypes: list[str]
    cells: dict[tuple[str, str, str], PipelineCell]

    def cell(self, pipeline: str, backend: str, dtype: str) -> PipelineCell | None:
        return self.cells.get((pipeline, backend, dtype))


def pipeline_matrix(records: Iterable[ResultRecord], *, include_skipped: bool = False) -> PipelineMatrix:
    """With records of several devices, each row's backend names its device: "sdpa @ NVIDIA H200"."""
    records = list(records)
    multi = len(devices_of(r for r in records if r.kind == "pipeline")) > 1

    def row_backend(r: ResultRecord) -> str:
        return f"{r.backend or '-'} @ {r.device_key}" if multi else (r.backend or "-")

    cells: dict[tuple[str, str, str], PipelineCell] = {}
    rows: list[tuple[str, str]] = []
    dtypes: set[str] = set()
    for r in records:
        if r.kind != "pipeline" or (r.verdict == "skip" and not include_skipped):
            continue
        row = (r.check, row_backend(r))
        if row not in rows:
            rows.append(row)
        dtypes.add(r.dtype or "-")
        cells[(*row, r.dtype or "-")] = PipelineCell(r.verdict, r.metrics.get("ssim_ref"),
                                                      r.metrics.get("ssim_golden"), r)
    # a skipped dtype of a row that ran keeps its column, shown as skipped
    if not include_skipped:
        for r in records:
            key = (r.check, row_backend(r), r.dtype or "-")
            if r.kind == "pipeline" and r.verdict == "skip" and key[:2] in rows:
                cells.setdefault(key, PipelineCell("skip", None, None, r))
    backend_rank = {b: i for i, b in enumerate(dict.fromkeys(b for _, b in rows))}
    rows.sort(key=lambda row: (row[0], backend_rank[row[1]]))
    return PipelineMatrix(rows, sorted(dtypes, key=_dtype_key), cells)


def failures(records: Iterable[ResultRecord]) -> list[ResultRecord]:
    return [r for r in records if r.verdict in ("fail", "error")]


@dataclass
class KnownFinding:
    """One ledger finding (results/known.py) and the cells where it was met in this run."""

    id: str
    reason: str
    link: str
    cells: list[ResultRecord] = field(default_factory=list)


def known_findings(records: Iterable[ResultRecord]) -> list[KnownFinding]:
    """The known findings this run met, each with its cells, in the order first met. A failing cell
    may have met one too (its message says so); it is listed under failures, not here."""
    found: dict[str, KnownFinding] = {}
    for r in records:
        if r.verdict != "xfail":
            continue
        for fid, info in (r.extra.get("known") or {}).items():
            entry = found.setdefault(fid, KnownFinding(fid, str(info.get("reason", "")), str(info.get("link", ""))))
            entry.cells.append(r)
    return list(found.values())


def totals(records: Iterable[ResultRecord]) -> dict[str, int]:
    counts = {v: 0 for v in VERDICT_RANK}
    for r in records:
        counts[r.verdict] += 1
    return counts
