"""scripts/upgrade_gate.sh (docs/reports/upgrade-gate.md): its plan and its refusals, without installing
anything (the real run takes an hour and downloads gigabytes)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "upgrade_gate.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UPGRADE_GATE_VENVS": str(tmp_path / "venvs"), "UPGRADE_GATE_WORK": str(tmp_path / "work")}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def test_dry_run_prints_the_whole_plan_and_creates_nothing(tmp_path: Path) -> None:
    result = _run(tmp_path, "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for step in ("pip install -q torch==2.13.0", "pip install -q torch==2.14.1", "pip install -q diffusers==0.36.0",
                 "pip install -q diffusers==0.42.1", "--attn-compare=", "attnparity compare"):
        assert step in out, step
    assert out.count("--attn-backends=all") == 3  # runs A, B, C
    assert not (tmp_path / "venvs").exists() and not (tmp_path / "work").exists()


def test_one_pair_only(tmp_path: Path) -> None:
    out = _run(tmp_path, "--dry-run", "--pair", "torch").stdout
    assert "torch==2.14.1" in out and "diffusers==0.36.0" not in out


@pytest.mark.parametrize("args", [["--pair", "x"], ["--nope"]])
def test_bad_arguments_say_why(tmp_path: Path, args: list[str]) -> None:
    result = _run(tmp_path, *args)
    assert result.returncode == 2 and "upgrade_gate:" in result.stderr


def test_help(tmp_path: Path) -> None:
    result = _run(tmp_path, "--help")
    assert result.returncode == 0 and "--dry-run" in result.stdout
