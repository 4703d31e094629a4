"""scripts/gpu_run.sh --dry-run: the GPU run's whole path (op, perf, do_bench stand-in, goldens into
their own directory, pipelines against them, merge) on CPU with tiny settings, so it cannot rot
before a GPU is lent (docs/gpu.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "gpu_run.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils timeout")


def test_dry_run_writes_the_files_that_come_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "GPU_RUN_WORK": str(tmp_path / "work"), "OUT": str(out), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, timeout=600)
    log = (out / "run.log").read_text() if (out / "run.log").exists() else result.stdout
    assert result.returncode == 0, log[-4000:]
    files = sorted(p.name for p in out.iterdir())
    # the device tool brings back at most 8 plain files, none deeper than 2 folders
    assert files == ["dobench.json", "goldens.tar.gz", "index.html", "results.json", "run.log", "summary.md"]
    assert all(p.is_file() for p in out.iterdir())
    run = json.loads((out / "results.json").read_text())
    kinds = {r["kind"] for r in run["records"]}
    assert {"op", "perf", "pipeline"} <= kinds, kinds
    # one device, the CPU's model, whatever thread count each step ran with
    assert len({r["device_label"] for r in run["records"]}) == 1
    assert run["records"][0]["device_label"].startswith("CPU (") and "thread" not in run["records"][0]["device_label"]
    assert not [r for r in run["records"] if r["verdict"] in ("fail", "error")]
    goldens = [n for n in tarfile.open(out / "goldens.tar.gz").getnames() if n.endswith(".png")]
    assert goldens == ["golden-cuda/sd15/cpu/fp32.png"]  # the update flag wrote into its own directory
    bench = json.loads((out / "dobench.json").read_text())
    assert bench["rows"] and "STAND-IN" in bench["timer"]  # never passed off as do_bench
    summary = (out / "summary.md").read_text()
    assert "DRY RUN" in summary and "| merge | 0 |" in summary and "not started" not in summary
    assert "sdpa-flash" in (out / "index.html").read_text()


def test_bad_argument_says_why(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--nope"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "gpu_run: unknown argument --nope" in result.stderr
