"""``attnparity merge RUN.json... --report DIR``: the runs of several machines (or GPUs of several
models) as one set of records with the device as a dimension.

Each record keeps the device it ran on (``ResultRecord.device_label``: the GPU's name, or "CPU (N
torch threads)"); records written before labels existed take their run's device name. Runs of one
device may be merged too (shards of one matrix: op items here, perf items there) as long as they do
not both hold the same cell, and were made with the same library versions: two answers for one cell
on one device, or one device seen with two torch versions, is a comparison (``attnparity compare``),
not a matrix, and is refused with the files named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .record import ResultRecord, ResultsFileError, read_results


class MergeError(ValueError):
    """Runs that cannot be merged into one matrix; the message says which files and why."""


@dataclass
class MergedRun:
    records: list[ResultRecord]
    #: device -> the files that contributed its records
    sources: dict[str, list[str]] = field(default_factory=dict)

    @property
    def devices(self) -> list[str]:
        return list(self.sources)

    def describe(self) -> list[str]:
        counts: dict[str, int] = {}
        for r in self.records:
            counts[r.device_key] = counts.get(r.device_key, 0) + 1
        return [f"{device}: {counts.get(device, 0)} records from {', '.join(files)}"
                for device, files in self.sources.items()]


def _cell_id(record: ResultRecord) -> str:
    """One item's identity within a device: its node id (several items may share a matrix cell)."""
    return record.nodeid or " ".join(str(p) for p in record.cell)


def merge_runs(paths: Sequence[Path | str]) -> MergedRun:
    """The records of ``paths``, each labelled with its device; raises ResultsFileError for a file
    that is not a results.json, MergeError for runs that conflict."""
    if not paths:
        raise MergeError("nothing to merge: name the results.json of each run (written with --attn-report=DIR)")
    if len({str(Path(p).resolve()) for p in paths}) < len(paths):
        raise MergeError("the same results.json was named twice; name each run once")
    merged = MergedRun([])
    seen: dict[tuple[str, str], str] = {}  # (device, item) -> file
    device_versions: dict[str, tuple[dict[str, str], str]] = {}
    for path in paths:
        run = read_results(Path(path))
        records: list[ResultRecord] = run["records"]
        if not records:
            raise ResultsFileError(f"{path}: a results.json with no records; was the run's selection empty?")
        for r in records:
            if not r.device_label:  # written before labels: the run's device names it
                r.device_label = r.device or str(run.get("device") or "") or "unknown device"
            key = (r.device_key, _cell_id(r))
            if key in seen and seen[key] != str(path):
                raise MergeError(f"{seen[key]} and {path} both hold {key[1]!r} on {key[0]}: two runs of one device "
                                 "disagree on who ran that cell. Merge runs of different devices, or shards that "
                                 "ran different cells (pick one of the two runs; to see what changed between them "
                                 f"use `attnparity compare {seen[key]} {path}`)")
            seen[key] = str(path)
            versions = r.versions or dict(run.get("versions") or {})
            if r.device_key in device_versions:
                known, where = device_versions[r.device_key]
                differ = sorted(k for k in set(known) | set(versions) if known.get(k) != versions.get(k)
                                and k != "attnparity")
                if differ:
                    what = ", ".join(f"{k} {known.get(k, '-')} vs {versions.get(k, '-')}" for k in differ)
                    raise MergeError(f"{where} and {path} ran on {r.device_key} with different versions ({what}): "
                                     f"that is an upgrade to gate (`attnparity compare {where} {path}`), not one matrix")
            else:
                device_versions[r.device_key] = (versions, str(path))
            files = merged.sources.setdefault(r.device_key, [])
            if str(path) not in files:
                files.append(str(path))
        merged.records.extend(records)
    return merged
