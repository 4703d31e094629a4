"""The one result record every item writes (parity, semantics, gradients, pipelines, perf).

Schema (version SCHEMA_VERSION), a JSON object:

    kind        "op" | "semantic" | "pipeline" | "perf"
    check       what was checked: "forward", "backward", "masked-rows", "pipeline:sd15", "perf:sdxl-4096"...
    backend     backend name, or null for backend-free items
    dtype       "fp32" | "fp16" | "bf16" | null
    verdict     "pass" | "fail" | "skip" | "error" | "xfail" (a known finding; schema 2)
    nodeid      pytest node id of the item that produced it
    metrics     flat {name: number}: err_max, err_mean, base_max, base_mean, ratio_max, ratio_mean,
                ssim_ref, ssim_golden, ms, tflops, speedup_math, ...
    examples    hypothesis examples run (0 when not a hypothesis item)
    case        the failing (shrunk) AttnCase as a dict, or null
    repro       one line that reproduces the failure, or null
    message     human text: the reason for a skip, the failure explanation
    artifacts   {label: path} of files written for this record (images, diff maps)
    extra       free-form details a check wants to keep (routed call counts, shapes, ...)
                under pytest-xdist, ``worker``: the worker that ran it ("gw1"), a detail no
                cell, fold or gate key reads
    device      "cpu" or the GPU's name
    versions    {"torch": ..., "diffusers": ..., ...} of this run
    device_label  the device as the matrix's device dimension (added within schema 2; "" in older
                records): the GPU's name, or "CPU (<model name>)" (machine.DeviceIdentity.model; not
                the thread count, which only timings depend on: their label is extra.device_label).
                ``attnparity merge`` and the gate split runs by it (``device_key``)
    device_index  the CUDA device index that ran the cell (cuda:N; null on CPU and in older records):
                under pytest-xdist each worker is pinned to one GPU (machine.worker_device)
    numerics    torch's fp32 matmul settings the cell ran under (added within schema 2; {} in older
                records): {"float32_matmul_precision": "highest", "cuda.matmul.allow_tf32": "False",
                "cudnn.allow_tf32": "False", ...}; a run pins them to full fp32 (machine.pin_fp32_math)

A run's results.json is {"schema": SCHEMA_VERSION, "created": iso time, "device": ..., "versions":
{...}, "numerics": {...}, "draws": {...}, "records": [record, ...]}. "numerics": torch's fp32 matmul
settings of the run (as on each record). "draws" (optional) holds what makes the run's
hypothesis draws repeatable: {"derandomize": bool, "seed": int or null, "examples": int, "profile":
the user's hypothesis profile or null}; a run with --attn-compare reuses them. The schema only grows
by new optional fields within a version.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
#: Schemas this attnparity reads: 2 added the "xfail" verdict; a schema-1 run is still a valid baseline.
READABLE_SCHEMAS = (1, 2)
#: "xfail": the cell met a finding of the known-findings ledger (results/known.py) and nothing else
VERDICTS = ("pass", "fail", "skip", "error", "xfail")
#: The test report attribute that carries an item's record (JSON text): pytest serializes a report's
#: attributes for pytest-xdist, so workers' records reach the controller without riding in junitxml.
REPORT_ATTRIBUTE = "attnparity_record"
#: The short junitxml property of each item (user_properties): verdict and headline figures only.
USER_PROPERTY = "attnparity"


@dataclass
class ResultRecord:
    kind: str
    check: str
    backend: str | None
    dtype: str | None
    verdict: str
    nodeid: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    examples: int = 0
    case: dict[str, Any] | None = None
    repro: str | None = None
    message: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    device: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    device_label: str = ""
    device_index: int | None = None
    numerics: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")

    @property
    def cell(self) -> tuple[str, str, str | None, str | None]:
        """The identity of a matrix cell: two runs are compared cell by cell."""
        return (self.kind, self.check, self.backend, self.dtype)

    @property
    def device_key(self) -> str:
        """The device this cell ran on, as the device dimension of a matrix of several runs: the
        label when stamped, "" for records written before labels (which then have no such dimension)."""
        return self.device_label

    @property
    def ran_on(self) -> str:
        """Which device ran the cell, for people: "cuda:1 NVIDIA H200", or the label / device."""
        name = self.device or self.device_label
        if self.device_index is not None:
            return f"cuda:{self.device_index} {name}"
        # a timing says what it was taken under (the CPU's torch threads), other cells the device
        return str(self.extra.get("device_label") or self.device_label or name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ResultRecord":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})



def write_results(path: Path, records: list[ResultRecord], device: str, run_versions: dict[str, str],
                  draws: dict[str, Any] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "versions": run_versions,
        "numerics": next((r.numerics for r in records if r.numerics), {}),
    }
    if draws is not None:
        payload["draws"] = draws
    payload["records"] = [r.to_json() for r in records]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(path)  # never leave a half-written results.json behind
    return path


class ResultsFileError(ValueError):
    """A results.json that cannot be read as one (wrong file, other schema)."""


def read_results(path: Path) -> dict[str, Any]:
    """The run at ``path`` with its records as ResultRecord objects."""
    try:
        payload = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ResultsFileError(f"{path}: no such results file (write one with --attn-report=DIR)") from None
    except json.JSONDecodeError as exc:
        raise ResultsFileError(f"{path}: not JSON ({exc}); expected an attnparity results.json") from None
    if not isinstance(payload, dict) or "records" not in payload:
        raise ResultsFileError(f"{path}: not an attnparity results.json (no 'records')")
    if payload.get("schema") not in READABLE_SCHEMAS:
        raise ResultsFileError(f"{path}: results schema {payload.get('schema')!r}, this attnparity reads "
                               f"{', '.join(map(str, READABLE_SCHEMAS))}")
    payload["records"] = [ResultRecord.from_json(r) for r in payload["records"]]
    return payload
