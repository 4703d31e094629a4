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
- (for runs of several devices) a device ran before and not now: cells are compared device by
  device (``ResultRecord.device_key``), never one device's cell against another's;
- on the same device, its time grew beyond both ``slowdown`` (a fraction) and its measured noise
  (``compare_timing``), and, when either run timed it beside other work, beyond ``busy_slowdown``.

Timings go through ``compare_timing`` alone, here and for ``--attn-perf-baseline`` (suite/perf.py):
two timings compare only when their ``timing_label`` is the same (the GPU's name, or the CPU with
its torch thread count). What is compared is the **relative time**, the backend's median over a
reference kernel's median timed interleaved in the same item (1 / ``speedup_math``, or
1 / ``speedup_naive`` for the sdpa-math row itself, 1 / ``speedup_default`` for pipelines): load
on a shared machine slows both alike, so two runs of one setup agree on it while their absolute
ms swing by half. Only a cell without a common reference (the ``sdpa`` row of the pipeline
timings, records written before the references existed) falls back to absolute ms, with an
allowance widened by both cells' spread; a machine that is steadily busier can still fail such a
cell. Limitation: the relative basis cannot see a change that slows the reference as much as the
backend (a slower CPU, or a torch upgrade that slows every matmul); such a change is invisible
here by design, and the absolute ms in the message are what show it.

Timed beside other work, a change is **inconclusive**, not worse: when either sample was timed while
other processes used more than BUSY_SHARE of the machine's CPU (extra["others_cpu"], measured around
the timing from /proc/stat less this process's own CPU time; records written before that existed,
or on a system without /proc/stat, count as busy when they carry a contention note, extra["contended"],
such as the load average above the CPU count), a change beyond the allowance above but within
``busy_slowdown`` (--attn-perf-busy-slowdown, 1.0: up to 2x slower or 2x faster) is listed in a
group of its own, "inconclusive: timed beside other work (...); rerun on an idle machine to judge",
and never fails. Why: a memory-heavy neighbour (another test suite) slows some kernels by a factor
their interleaved reference does not share. In docs/reports/upgrade-gate.md's diffusers pair, run C timed
beside a test suite against run A on an idle machine, 7 of 130 perf cells were 29-77 % "worse"
relative to the reference with nothing changed, and most stay worse judged against every
reference; with this rule the pair compares 0 worse, those 7 and the 4 cells that looked 22-40 %
faster inconclusive (tests/test_perf_gate.py keeps both runs' perf records). Beyond
``busy_slowdown`` a change is worse (or better) even so: a 3x regression shows on a busy machine.
On an idle machine (both samples) nothing changes.

Better cells (fail -> pass, faster, new cells) are listed too, for the record; they never fail.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from attnparity.options import Options

from .matrix import VERDICT_RANK, error_ratio, worse_verdict
from .record import ResultRecord

RATIO_NOISE = 0.1
#: Verdict order for the gate: fail and error are one class (a failing cell that now raises, or the
#: reverse, is an unchanged failure), a known finding sits between pass and fail.
_GATE_RANK = {**VERDICT_RANK, "error": VERDICT_RANK["fail"]}
SSIM_METRICS = ("ssim_ref", "ssim_golden")
#: The standard error of a median of n runs is about sqrt(pi / 2) = 1.25 times that of their mean.
MEDIAN_SE = math.sqrt(math.pi / 2)

Cell = tuple[str, str, "str | None", "str | None"]


@dataclass(frozen=True)
class Thresholds:
    ratio_factor: float = Options.compare_ratio
    ssim_margin: float = Options.compare_ssim
    slowdown: float = Options.compare_slowdown
    noise: float = Options.perf_noise
    busy_slowdown: float = Options.perf_busy_slowdown

    @classmethod
    def from_options(cls, options: Options) -> "Thresholds":
        return cls(options.compare_ratio, options.compare_ssim, options.compare_slowdown, options.perf_noise,
                   options.perf_busy_slowdown)

    def __post_init__(self) -> None:
        if not self.ratio_factor >= 1:
            raise ValueError(f"attn_compare_ratio={self.ratio_factor}: must be at least 1 (2 = may double)")
        if not self.ssim_margin >= 0:
            raise ValueError(f"attn_compare_ssim={self.ssim_margin}: must be >= 0 (0.01 = may drop by 0.01)")
        if not self.slowdown >= 0:
            raise ValueError(f"attn_compare_slowdown={self.slowdown}: must be >= 0 (0.25 = 25% slower allowed)")
        check_noise(self.noise)
        check_busy_slowdown(self.busy_slowdown)


def check_noise(noise: float) -> None:
    if not noise >= 0:
        raise ValueError(f"attn_perf_noise={noise}: must be >= 0 (3 = three times the measured noise allowed)")


def check_busy_slowdown(busy_slowdown: float) -> None:
    if not busy_slowdown >= 0:
        raise ValueError(f"attn_perf_busy_slowdown={busy_slowdown}: must be >= 0 (1 = up to 2x inconclusive when busy)")


@dataclass
class FoldedCell:
    cell: Cell
    verdict: str | None = None
    ratio: float | None = None
    ssim: dict[str, float] = field(default_factory=dict)
    timing: "TimingSample | None" = None
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
        sample = TimingSample.from_record(r)
        if sample is not None:
            self.timing = sample if self.timing is None else self.timing.worst(sample)

    @property
    def ran(self) -> bool:
        return self.verdict in ("pass", "xfail", "fail", "error")


#: A timing was taken beside other work when other processes used more than this share of the
#: machine's CPU meanwhile (extra["others_cpu"], suite/perf.py note_contention): a quarter is half a
#: core of a two-core machine, beyond what the system's own daemons use.
BUSY_SHARE = 0.25

#: The in-run references a perf record's time can be taken relative to, in order of preference:
#: (metric = reference median / backend median, the reference's backend, the extra key of its cv,
#: the extra key of the cv of the round-by-round ratios backend / reference). suite/perf.py and
#: suite/perf_pipelines.py write them; a row is never relative to itself.
REFERENCES: tuple[tuple[str, str, str, str], ...] = (
    ("speedup_math", "sdpa-math", "sdpa-math_cv", "sdpa-math_ratio_cv"),
    ("speedup_naive", "naive", "naive_cv", "naive_ratio_cv"),
    ("speedup_default", "sdpa", "default_routed_cv", "default_routed_ratio_cv"),
)


@dataclass(frozen=True)
class TimingSample:
    """One cell's timing as the gate sees it: median ms, spread, and its time relative to a
    reference kernel timed interleaved in the same item, when there was one."""

    ms: float
    label: str
    cv: float = 0.0
    reps: int = 0
    #: backend median / reference median, from the same interleaved rounds
    relative: float | None = None
    reference: str | None = None
    reference_cv: float = 0.0
    #: cv of the per-round ratios backend / reference, when recorded: load that drifts between
    #: rounds cancels in them, so they measure the relative time's own noise best
    ratio_cv: float | None = None
    #: the share of the machine's CPU other processes used while it was timed (0..1), when measured
    others_cpu: float | None = None
    #: the record's contention notes (extra["contended"]: load average, xdist workers), "" for none
    contended: str = ""

    def __post_init__(self) -> None:
        if not (self.ms > 0 and math.isfinite(self.ms)):
            raise ValueError(f"a timing needs a positive finite ms, not {self.ms!r}")
        if self.relative is not None and not (self.relative > 0 and math.isfinite(self.relative)):
            raise ValueError(f"a relative time must be positive and finite, not {self.relative!r}")

    @classmethod
    def of(cls, backend: str | None, metrics: Mapping[str, Any], extra: Mapping[str, Any],
           label: str) -> "TimingSample | None":
        """The sample of a perf record's fields (None without a usable ms); the relative time is
        taken from the first reference of REFERENCES that is not the backend itself."""
        ms = _number(metrics.get("ms"))
        if ms is None or ms <= 0:
            return None
        relative, reference, reference_cv, ratio_cv = None, None, 0.0, None
        for metric, ref_backend, cv_key, ratio_cv_key in REFERENCES:
            speedup = _number(metrics.get(metric))
            if ref_backend != backend and speedup is not None and speedup > 0:
                relative, reference = 1 / speedup, ref_backend
                reference_cv, ratio_cv = _number(extra.get(cv_key)) or 0.0, _number(extra.get(ratio_cv_key))
                break
        return cls(ms, label, _number(metrics.get("ms_cv")) or 0.0, int(_number(metrics.get("reps")) or 0),
                   relative, reference, reference_cv, ratio_cv, _number(extra.get("others_cpu")),
                   str(extra.get("contended") or ""))

    @classmethod
    def from_record(cls, record: ResultRecord) -> "TimingSample | None":
        return cls.of(record.backend, record.metrics, record.extra, timing_label(record))

    def worst(self, other: "TimingSample") -> "TimingSample":
        """Two records of one cell folded: the slower of each figure, the noisier spread."""
        same_ref = self.reference == other.reference and self.relative is not None and other.relative is not None
        return TimingSample(max(self.ms, other.ms), self.label, max(self.cv, other.cv), min(self.reps, other.reps),
                            max(self.relative, other.relative) if same_ref else None,  # type: ignore[type-var]
                            self.reference if same_ref else None, max(self.reference_cv, other.reference_cv),
                            _larger(self.ratio_cv, other.ratio_cv) if same_ref else None,
                            _larger(self.others_cpu, other.others_cpu),
                            "; ".join(dict.fromkeys(n for n in (self.contended, other.contended) if n)))

    @property
    def busy(self) -> bool:
        """Timed beside other work: other processes used more than BUSY_SHARE of the CPU meanwhile
        or, in records written before that was measured (and where /proc/stat is missing), the
        record carries a contention note (a load average above the CPU count, other xdist workers).
        A measured share wins over the note: the load average is a minute's mean that counts this
        process too."""
        return self.others_cpu > BUSY_SHARE if self.others_cpu is not None else bool(self.contended)

    @property
    def busy_reason(self) -> str:
        """What made it busy, in a few words ("" when it was not)."""
        if not self.busy:
            return ""
        if self.others_cpu is not None:
            return f"others used {self.others_cpu:.0%} of the CPU"
        return self.contended.split("; ")[0].removeprefix("CPU busy: ")

    @property
    def relative_noise(self) -> float:
        """The relative standard error of the relative time: the sampling error of a median of
        per-round ratios (``ratio_cv``), or, in records without it, of two independent medians
        (the hypot of both cvs, an overestimate: interleaving correlates them). With reps
        unknown (0) the spread itself stands in."""
        spread = self.ratio_cv if self.ratio_cv is not None else math.hypot(self.cv, self.reference_cv)
        return MEDIAN_SE * spread / math.sqrt(self.reps) if self.reps > 0 else spread


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _larger(a: float | None, b: float | None) -> float | None:
    """The larger figure (a spread, a busy share); None (not measured) only when neither run
    measured it, so folding two records never turns an unknown figure into a zero one."""
    known = [x for x in (a, b) if x is not None]
    return max(known) if known else None


def timing_label(record: ResultRecord) -> str:
    """What a timing was taken on (perf records carry the timer's label; others the device)."""
    return str(record.extra.get("device_label") or record.device)


@dataclass(frozen=True)
class TimingChange:
    """One timing against an earlier one: compared only on the same device label."""

    compared: bool
    ratio: float | None  # new / old, on ``basis``
    worse: bool
    better: bool
    text: str
    #: "relative to <reference>" or "absolute"; "" when not compared
    basis: str = ""
    #: the slowdown allowed (a fraction): the threshold or the noise allowance, whichever is larger
    allowed: float = 0.0
    #: beyond ``allowed`` but within the busy allowance while either timing ran beside other work:
    #: neither worse nor better, since load alone can move a time that far
    inconclusive: bool = False


def compare_timing(old: TimingSample, new: TimingSample, slowdown: float, noise: float,
                   busy_slowdown: float = Options.perf_busy_slowdown) -> TimingChange:
    """The one rule for timings (``--attn-compare``, ``attnparity compare``, ``--attn-perf-baseline``).

    Never across device labels. When both samples are relative to the same reference, the relative
    times are compared: worse when the new one exceeds the old by more than
    ``max(slowdown, noise * hypot(old.relative_noise, new.relative_noise))``. Otherwise the absolute
    ms, allowed ``max(slowdown, noise * hypot(old.cv, new.cv))``: an absolute time also carries the
    machine's load, whose only trace in a cell is its spread, so the allowance scales with the
    spread itself rather than its standard error. Faster beyond the same allowance is "better".

    When either sample was timed beside other work (``TimingSample.busy``), a change beyond that
    allowance but within ``busy_slowdown`` (either way) is **inconclusive**, neither worse nor
    better: a memory-heavy neighbour slows some kernels by a factor their interleaved reference does
    not share, which no spread measured in the item foretells. Beyond ``busy_slowdown`` it is worse
    (or better) even so.

    When neither was (both quiet), the backend's own time is a measurement too: a relative time that
    moved beyond its allowance, but by no more than ``busy_slowdown``, while the absolute one stayed
    within the same allowance is **inconclusive** as well. The reference timed in that one item moved, not the backend (a CPU
    reference runs slower in some items than in others with nothing else running), and only a rerun
    tells which. A real change of the backend moves both.
    """
    if slowdown < 0:
        raise ValueError(f"slowdown={slowdown}: must be >= 0 (0.25 = 25% slower allowed)")
    check_noise(noise)
    check_busy_slowdown(busy_slowdown)
    if old.label != new.label:
        return TimingChange(False, None, False, False, f"timed on {old.label} before, on {new.label} now: not compared")
    ms_text = f"{old.ms:.3g} ms -> {new.ms:.3g} ms ({new.ms / old.ms - 1:+.0%})"
    if old.relative is not None and new.relative is not None and old.reference == new.reference:
        basis = f"relative to {new.reference}"
        ratio = new.relative / old.relative
        spread = math.hypot(old.relative_noise, new.relative_noise)
        allowed = max(slowdown, noise * spread)
        text = (f"{basis}: {old.relative:.3g} -> {new.relative:.3g} ({ratio - 1:+.0%}, allowed +{allowed:.0%}"
                f"{' by its noise' if allowed > slowdown else ''}); absolute {ms_text} on {new.label}")
    else:
        basis = "absolute"
        ratio = new.ms / old.ms
        spread = math.hypot(old.cv, new.cv)
        allowed = max(slowdown, noise * spread)
        why = "no common reference" if old.reference != new.reference else "no reference timed"
        text = (f"{basis} ({why}): {ms_text}, allowed +{allowed:.0%}"
                f"{f' by cv {old.cv:.0%} / {new.cv:.0%}' if allowed > slowdown else ''} on {new.label}")
    # faster: the same allowance, in the same units (1 / (1 + allowed) is the mirror of a slowdown)
    worse, better = ratio - 1 > allowed, ratio < 1 / (1 + allowed)
    busy = "; ".join(f"{when}: {s.busy_reason}" for when, s in (("before", old), ("now", new)) if s.busy)
    if not busy and basis != "absolute" and (worse or better):
        # the own time is held to the same allowance as the relative one, and beyond the busy
        # allowance a change is worse (or better) even so, as beside other work
        own, cap = new.ms / old.ms, max(allowed, busy_slowdown)
        within_cap = ratio - 1 <= cap and ratio >= 1 / (1 + cap)
        if within_cap and ((own - 1 <= allowed) if worse else (own >= 1 / (1 + allowed))):
            return TimingChange(True, ratio, False, False,
                                f"{text}; inconclusive: its own time moved {own - 1:+.0%} (within +{allowed:.0%}), "
                                "its reference moved: rerun to judge", basis, allowed, inconclusive=True)
    if busy and (worse or better):
        busy_allowed = max(allowed, busy_slowdown)
        if ratio - 1 <= busy_allowed and ratio >= 1 / (1 + busy_allowed):
            # the figures first: a terminal line is cut to its width, and its mark says the rest
            return TimingChange(True, ratio, False, False,
                                f"{text}; inconclusive: timed beside other work ({busy}); rerun on an idle machine "
                                "to judge", basis, allowed, inconclusive=True)
        bound = busy_allowed if worse else 1 / (1 + busy_allowed) - 1
        text += f"; beyond even the {bound:+.0%} allowed beside other work ({busy})"
    return TimingChange(True, ratio, worse, better, text, basis, allowed)


def fold(records: Iterable[ResultRecord]) -> dict[Cell, FoldedCell]:
    cells: dict[Cell, FoldedCell] = {}
    for r in records:
        cells.setdefault(r.cell, FoldedCell(r.cell)).add(r)
    return cells


#: The groups differences are listed in, in order (report/comparison.py renders them).
_GROUPS = ("worse", "inconclusive", "better")


@dataclass(frozen=True)
class Difference:
    cell: Cell
    what: str  # "verdict", "ratio", "ssim_ref", "ssim_golden", "missing", "backend", "time", "new"
    old: Any
    new: Any
    text: str
    worse: bool
    #: the device both cells ran on, when the runs were split by device (several devices, labelled)
    device: str = ""
    #: a timing that moved no more than load can move it (TimingChange.inconclusive): never worse
    inconclusive: bool = False

    @property
    def outcome(self) -> str:
        """The group it is listed in: "worse", "inconclusive" or "better" (better or new, or listed)."""
        return "worse" if self.worse else "inconclusive" if self.inconclusive else "better"

    @property
    def label(self) -> str:
        kind, check, backend, dtype = self.cell
        name = " ".join(p for p in (check, backend, dtype) if p) or kind
        return f"[{self.device}] {name}" if self.device else name

    def to_json(self) -> dict[str, Any]:
        return {"cell": list(self.cell), "what": self.what, "old": self.old, "new": self.new,
                "text": self.text, "worse": self.worse, "inconclusive": self.inconclusive, "device": self.device}


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
    def inconclusive(self) -> list[Difference]:
        return [d for d in self.differences if d.outcome == "inconclusive"]

    @property
    def better(self) -> list[Difference]:
        return [d for d in self.differences if d.outcome == "better"]

    @property
    def failed(self) -> bool:
        return bool(self.worse)

    def to_json(self) -> dict[str, Any]:
        return {"old": self.old_source, "cells_compared": self.cells_compared, "failed": self.failed,
                "worse": len(self.worse), "inconclusive": len(self.inconclusive), "better": len(self.better),
                "thresholds": vars(self.thresholds), "differences": [d.to_json() for d in self.differences]}


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def by_device(records: Iterable[ResultRecord]) -> dict[str, list[ResultRecord]]:
    """Records grouped by the device they ran on (ResultRecord.device_key), in first-seen order."""
    groups: dict[str, list[ResultRecord]] = {}
    for r in records:
        groups.setdefault(r.device_key, []).append(r)
    return groups


def _label_legacy(records: list[ResultRecord], other: list[ResultRecord]) -> list[ResultRecord]:
    """``records`` with those written before device labels labelled: by the label the other side's
    records of the same ``device`` ("cpu", or the GPU's name) carry when there is exactly one, else
    by that device name. An old single-device baseline so still gates a newer multi-device run,
    against its own device only."""
    if all(r.device_key for r in records) or not any(r.device_key for r in other):
        return records
    labels: dict[str, set[str]] = {}
    for r in other:
        if r.device_key:
            labels.setdefault(r.device, set()).add(r.device_key)
    everywhere = {label for found in labels.values() for label in found}
    out = []
    for r in records:
        if not r.device_key:
            # a record without even a device name could have run on any of them: only one will do
            found = labels.get(r.device, set()) if r.device else everywhere
            r = replace(r, device_label=next(iter(found)) if len(found) == 1 else r.device or "unknown device")
        out.append(r)
    return out


def compare_records(old: Iterable[ResultRecord], new: Iterable[ResultRecord], thresholds: Thresholds | None = None,
                    *, old_source: str = "old run") -> Comparison:
    """Device by device: a cell is compared only with the same cell on the same device (the
    records' device_label: a GPU model, or the CPU model). A device that ran before and is absent now
    is one worse line: none of its cells could be compared. Records written before labels existed
    take the label of the other side's device they ran on (``_label_legacy``)."""
    t = thresholds or Thresholds()
    old, new = _label_legacy(list(old), list(new)), _label_legacy(list(new), list(old))
    if not any(r.device_key for r in (*old, *new)):
        return _compare_one(old, new, t, old_source)
    before, after = by_device(old), by_device(new)
    diffs: list[Difference] = []
    compared = 0
    split = len(before) > 1 or len(after) > 1
    for device, records in before.items():
        if device not in after:
            now = ", ".join(after) or "none"
            diffs.append(Difference(("device", "", None, None), "device", device, None,
                                    f"device {device} ran {len(records)} cells before and none now (this run: {now}); "
                                    "cells are compared only on the same device: rerun there, or compare the "
                                    "runs of one device", True, device))
            continue
        one = _compare_one(records, after[device], t, old_source)
        compared += one.cells_compared
        diffs.extend(replace(d, device=device) if split else d for d in one.differences)
    for device, records in after.items():
        if device not in before:
            diffs.append(Difference(("device", "", None, None), "device", None, device,
                                    f"new device {device} ({len(records)} cells): nothing to compare with", False, device))
    diffs.sort(key=lambda d: (_GROUPS.index(d.outcome), d.what not in ("device", "backend"), d.label))
    return Comparison(old_source, diffs, t, compared)


def _compare_one(old: Iterable[ResultRecord], new: Iterable[ResultRecord], t: Thresholds,
                 old_source: str) -> Comparison:
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
        old_cell = before.get(cell)
        if new_cell.ran and (old_cell is None or not old_cell.ran):
            # A cell that did not run before (new, or skipped) and fails now is a new failure: worse,
            # as the run's own exit status says.
            failing = new_cell.verdict in ("fail", "error")
            first = (new_cell.message.strip().splitlines() or [""])[0] if failing else ""
            was = "new cell" if old_cell is None else f"{old_cell.verdict} before"
            diffs.append(Difference(cell, "new", old_cell.verdict if old_cell else None, new_cell.verdict,
                                    f"{was}, {new_cell.verdict} now" + (f": {first}" if first else ""), failing))
    diffs.sort(key=lambda d: (_GROUPS.index(d.outcome), d.what != "backend", d.label))  # vanished backends first
    return Comparison(old_source, diffs, t, compared)


def _cell_differences(cell: Cell, old: FoldedCell, new: FoldedCell, t: Thresholds) -> list[Difference]:
    out: list[Difference] = []
    if old.verdict is not None and new.verdict is not None and _GATE_RANK[new.verdict] != _GATE_RANK[old.verdict]:
        # A known finding is accepted where its ledger entry applies: meeting it is listed, never
        # worse (a finding only drawn cases meet comes and goes with the draws); anything failing
        # beyond it is worse.
        worse = _GATE_RANK[new.verdict] > _GATE_RANK[old.verdict] and new.verdict != "xfail"
        first = (new.message.strip().splitlines() or [""])[0] if worse else ""
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
    if old.timing is not None and new.timing is not None:
        timing = compare_timing(old.timing, new.timing, t.slowdown, t.noise, t.busy_slowdown)
        if timing.worse or timing.better or timing.inconclusive:
            out.append(Difference(cell, "time", old.timing.ms, new.timing.ms, timing.text, timing.worse,
                                  inconclusive=timing.inconclusive))
    return out


def compare_files(old_path: str, new_path: str, thresholds: Thresholds | None = None) -> Comparison:
    from .record import read_results

    old = read_results(old_path)  # type: ignore[arg-type]
    new = read_results(new_path)  # type: ignore[arg-type]
    return compare_records(old["records"], new["records"], thresholds, old_source=str(old_path))
