"""The upgrade gate: compare a run with an earlier one, cell by cell (``ResultRecord.cell``).

A cell is (kind, check, backend, dtype). Several records of one cell (several items of the same
check) are folded first: the worst verdict, the largest error ratio, the lowest SSIM, the largest
time. A cell got **worse** when

- its verdict went from pass to fail or error;
- its error ratio grew beyond ``ratio_factor`` times the old one (ratios under RATIO_NOISE count as
  RATIO_NOISE: a backend ten times more accurate than naive math moving between 0.01 and 0.05 is
  noise, not a regression);
- an SSIM (ssim_ref, ssim_golden) dropped by more than ``ssim_margin``;
- it ran before and does not now: the backend disappeared, is unavailable, or the cell was not run;
- on the same device, its time (ms) grew by more than ``slowdown`` (a fraction).

Timings go through ``compare_timing`` alone, here and for ``--attn-perf-baseline`` (suite/perf.py):
two timings compare only when their ``timing_label`` is the same (the GPU's name, or the CPU with
its torch thread count).

Better cells (fail -> pass, faster, new cells) are listed too, for the record; they never fail.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from attnparity.options import Options

from .matrix import VERDICT_RANK, error_ratio, worse_verdict
from .record import ResultRecord

RATIO_NOISE = 0.1
#: Verdict order for the gate: fail and error are one class (a failing cell that now raises, or the
#: reverse, is an unchanged failure), a known finding sits between pass and fail.
_GATE_RANK = {**VERDICT_RANK, "error": VERDICT_RANK["fail"]}
SSIM_METRICS = ("ssim_ref", "ssim_golden")

Cell = tuple[str, str, "str | None", "str | None"]


@dataclass(frozen=True)
class Thresholds:
    ratio_factor: float = Options.compare_ratio
    ssim_margin: float = Options.compare_ssim
    slowdown: float = Options.compare_slowdown

    @classmethod
    def from_options(cls, options: Options) -> "Thresholds":
        return cls(options.compare_ratio, options.compare_ssim, options.compare_slowdown)

    def __post_init__(self) -> None:
        if not self.ratio_factor >= 1:
            raise ValueError(f"attn_compare_ratio={self.ratio_factor}: must be at least 1 (2 = may double)")
        if not self.ssim_margin >= 0:
            raise ValueError(f"attn_compare_ssim={self.ssim_margin}: must be >= 0 (0.01 = may drop by 0.01)")
        if not self.slowdown >= 0:
            raise ValueError(f"attn_compare_slowdown={self.slowdown}: must be >= 0 (0.25 = 25% slower allowed)")


@dataclass
class FoldedCell:
    cell: Cell
    verdict: str | None = None
    ratio: float | None = None
    ssim: dict[str, float] = field(default_factory=dict)
    ms: float | None = None
    timing_label: str = ""
    message: str = ""
    nodeid: str = ""

    def add(self, r: ResultRecord) -> None:
        if self.verdict is None or VERDICT_RANK[r.verdict] > VERDICT_RANK[self.verdict]:
            self.message, self.nodeid = r.message, r.nodeid
        self.verdict = worse_verdict(self.verdict, r.verdict)
        ratio = error_ratio(r)
        if ratio is not None:
            self.ratio = ratio if self.ratio is None else max(self.ratio, ratio)
        for name in SSIM_METRICS:
            value = r.metrics.get(name)
            if value is not None:
                self.ssim[name] = min(self.ssim.get(name, math.inf), float(value))
        ms = r.metrics.get("ms")
        if ms is not None:
            self.ms = float(ms) if self.ms is None else max(self.ms, float(ms))
            self.timing_label = self.timing_label or timing_label(r)

    @property
    def ran(self) -> bool:
        return self.verdict in ("pass", "xfail", "fail", "error")


def timing_label(record: ResultRecord) -> str:
    """What a timing was taken on (perf records carry the timer's label; others the device)."""
    return str(record.extra.get("device_label") or record.device)


@dataclass(frozen=True)
class TimingChange:
    """One timing against an earlier one: compared only on the same device label."""

    compared: bool
    ratio: float | None  # new / old time
    worse: bool
    better: bool
    text: str


def compare_timing(old_ms: float, old_label: str, new_ms: float, new_label: str, slowdown: float) -> TimingChange:
    """The one rule for timings: worse when ``new_ms`` exceeds ``old_ms`` by more than ``slowdown``
    (a fraction) on the same device label; never compared across labels."""
    if old_label != new_label:
        return TimingChange(False, None, False, False, f"timed on {old_label} before, on {new_label} now: not compared")
    if not old_ms > 0:
        return TimingChange(False, None, False, False, "no earlier timing")
    ratio = new_ms / old_ms
    change = ratio - 1
    text = f"{old_ms:.3g} ms -> {new_ms:.3g} ms ({change:+.0%}, allowed +{slowdown:.0%}) on {new_label}"
    return TimingChange(True, ratio, change > slowdown, change < -slowdown, text)


def fold(records: Iterable[ResultRecord]) -> dict[Cell, FoldedCell]:
    cells: dict[Cell, FoldedCell] = {}
    for r in records:
        cells.setdefault(r.cell, FoldedCell(r.cell)).add(r)
    return cells


@dataclass(frozen=True)
class Difference:
    cell: Cell
    what: str  # "verdict", "ratio", "ssim_ref", "ssim_golden", "missing", "backend", "time", "new"
    old: Any
    new: Any
    text: str
    worse: bool

    @property
    def label(self) -> str:
        kind, check, backend, dtype = self.cell
        return " ".join(p for p in (check, backend, dtype) if p) or kind

    def to_json(self) -> dict[str, Any]:
        return {"cell": list(self.cell), "what": self.what, "old": self.old, "new": self.new,
                "text": self.text, "worse": self.worse}


@dataclass
class Comparison:
    old_source: str
    differences: list[Difference]
    thresholds: Thresholds
    cells_compared: int

    @property
    def worse(self) -> list[Difference]:
        return [d for d in self.differences if d.worse]

    @property
    def better(self) -> list[Difference]:
        return [d for d in self.differences if not d.worse]

    @property
    def failed(self) -> bool:
        return bool(self.worse)

    def to_json(self) -> dict[str, Any]:
        return {"old": self.old_source, "cells_compared": self.cells_compared, "failed": self.failed,
                "thresholds": vars(self.thresholds), "differences": [d.to_json() for d in self.differences]}


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def compare_records(old: Iterable[ResultRecord], new: Iterable[ResultRecord], thresholds: Thresholds | None = None,
                    *, old_source: str = "old run") -> Comparison:
    t = thresholds or Thresholds()
    before, after = fold(old), fold(new)
    diffs: list[Difference] = []

    # Backends that ran before and have no cell that ran now: one line each, not one per cell.
    ran_before = {c[2] for c, f in before.items() if f.ran and c[2]}
    ran_now = {c[2] for c, f in after.items() if f.ran and c[2]}
    gone = ran_before - ran_now
    for backend in sorted(gone):
        reasons = {f.message.strip().splitlines()[0] for c, f in after.items() if c[2] == backend and f.message}
        why = f"now unavailable: {'; '.join(sorted(reasons))}" if reasons else "absent from this run"
        n = sum(1 for c, f in before.items() if c[2] == backend and f.ran)
        diffs.append(Difference(("backend", "", backend, None), "backend", "ran", "gone",
                                f"backend {backend} disappeared ({n} cells ran before; {why})", True))

    compared = 0
    for cell, old_cell in before.items():
        if not old_cell.ran or cell[2] in gone:
            continue
        new_cell = after.get(cell)
        if new_cell is None or not new_cell.ran:
            why = new_cell.message.strip().splitlines()[0] if new_cell and new_cell.message else "not in this run"
            diffs.append(Difference(cell, "missing", old_cell.verdict, None, f"ran before, not now ({why})", True))
            continue
        compared += 1
        diffs.extend(_cell_differences(cell, old_cell, new_cell, t))

    for cell, new_cell in after.items():
        if cell not in before and new_cell.ran:
            diffs.append(Difference(cell, "new", None, new_cell.verdict, f"new cell ({new_cell.verdict})", False))
    diffs.sort(key=lambda d: (not d.worse, d.what != "backend", d.label))  # vanished backends first
    return Comparison(old_source, diffs, t, compared)


def _cell_differences(cell: Cell, old: FoldedCell, new: FoldedCell, t: Thresholds) -> list[Difference]:
    out: list[Difference] = []
    if old.verdict != new.verdict and old.verdict is not None and new.verdict is not None:
        # A known finding that appears is worse (the cell lost its pass, even if the bug is known
        # upstream); one that went away, or a failure that became known, is better.
        worse = _GATE_RANK[new.verdict] > _GATE_RANK[old.verdict]
        first = (new.message.strip().splitlines() or [""])[0] if worse else ""
        if _GATE_RANK[new.verdict] != _GATE_RANK[old.verdict]:
            out.append(Difference(cell, "verdict", old.verdict, new.verdict,
                                  f"{old.verdict} -> {new.verdict}" + (f": {first}" if first else ""), worse))
    if old.ratio is not None and new.ratio is not None:
        allowed = t.ratio_factor * max(old.ratio, RATIO_NOISE)
        if new.ratio > allowed:
            out.append(Difference(cell, "ratio", old.ratio, new.ratio,
                                  f"error ratio {_fmt(old.ratio)} -> {_fmt(new.ratio)} (> {t.ratio_factor:g}x)", True))
    for name in SSIM_METRICS:
        if name in old.ssim and name in new.ssim and new.ssim[name] < old.ssim[name] - t.ssim_margin:
            out.append(Difference(cell, name, old.ssim[name], new.ssim[name],
                                  f"{name} {old.ssim[name]:.4f} -> {new.ssim[name]:.4f} (dropped > {t.ssim_margin:g})",
                                  True))
    if old.ms is not None and new.ms is not None:
        timing = compare_timing(old.ms, old.timing_label, new.ms, new.timing_label, t.slowdown)
        if timing.worse or timing.better:
            out.append(Difference(cell, "time", old.ms, new.ms, timing.text, timing.worse))
    return out


def compare_files(old_path: str, new_path: str, thresholds: Thresholds | None = None) -> Comparison:
    from .record import read_results

    old = read_results(old_path)  # type: ignore[arg-type]
    new = read_results(new_path)  # type: ignore[arg-type]
    return compare_records(old["records"], new["records"], thresholds, old_source=str(old_path))


def format_comparison(c: Comparison, width: int = 100) -> list[str]:
    """Plain lines: one per difference, worse first, each cut to ``width``."""
    head = (f"compared {c.cells_compared} cells with {c.old_source}: "
            f"{len(c.worse)} worse, {len(c.better)} better or new")
    lines = [head]
    for d in c.differences:
        mark = "WORSE" if d.worse else "ok   "
        line = f"  {mark} {d.label}: {d.text}"
        lines.append(line if len(line) <= width else line[: width - 3] + "...")
    return lines
