"""scripts/gpu_run.sh (docs/gpu.md): its arguments and the commands it runs. Its GPU steps need a
CUDA device; here --dry-run prints them, and a run without one is refused with what to do instead."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "gpu_run.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def gpu_run(*args: str, python: str = "python3") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": python}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def planned(out: Path, *extra: str) -> dict[str, list[str]]:
    result = gpu_run("--out", str(out), "--dry-run", *extra)
    assert result.returncode == 0, result.stderr
    steps = {}
    for line in result.stdout.splitlines():
        name, command = line.split(": ", 1)
        steps[name] = shlex.split(command)
    return steps


def test_the_steps_it_runs_and_where_they_write(tmp_path: Path) -> None:
    out = tmp_path / "run"
    steps = planned(out)
    assert list(steps) == ["op", "perf", "dobench", "golden", "pipelines", "merge"]
    assert not out.exists()  # a dry run writes nothing
    for name in ("op", "perf", "golden", "pipelines"):
        cmd = steps[name]
        assert cmd[:4] == ["env", "CI=1", "PYTHONUNBUFFERED=1", "python3"] and cmd[4:6] == ["-m", "pytest"]
        assert "--attn-device=cuda" in cmd and f"--attn-report={out}/steps/{name}" in cmd
        assert ("--attn-golden-update" in cmd) == (name == "golden")
    assert steps["op"][steps["op"].index("-m", 6) + 1] == "attn_op" and "-n" in steps["op"]
    assert steps["perf"][steps["perf"].index("-m", 6) + 1] == "attn_perf" and "-n" not in steps["perf"]
    assert f"--attn-golden-dir={out}/golden" in steps["golden"] and f"--attn-golden-dir={out}/golden" in steps["pipelines"]
    assert steps["dobench"][1].endswith("scripts/gpu_bench.py") and f"{out}/dobench.json" in steps["dobench"]
    assert steps["merge"][-2:] == ["--report", str(out)]
    assert steps["merge"][4:7] == [f"{out}/steps/{r}/results.json" for r in ("op", "perf", "pipelines")]


def test_extra_arguments_reach_every_pytest_step_last(tmp_path: Path) -> None:
    steps = planned(tmp_path / "run", "--attn-backends=sdpa-*,flex", "-k", "bf16")
    for name in ("op", "perf", "golden", "pipelines"):
        assert steps[name][-3:] == ["--attn-backends=sdpa-*,flex", "-k", "bf16"], name
    assert "bf16" not in steps["merge"] and "-k" not in steps["dobench"]
    after_dashes = planned(tmp_path / "run", "--out=elsewhere", "--", "--out", "x")
    assert after_dashes["op"][-2:] == ["--out", "x"] and "elsewhere/steps/op" in after_dashes["op"][-3]


def test_bad_arguments_say_why(tmp_path: Path) -> None:
    missing = gpu_run()
    assert missing.returncode == 2 and "gpu_run: --out DIR is required" in missing.stderr
    no_value = gpu_run("--out")
    assert no_value.returncode == 2 and "--out needs a directory" in no_value.stderr
    limited = planned(tmp_path / "run", "--step-timeout", "7")
    assert all(cmd[:5] == ["timeout", "-s", "INT", "-k", "30"] and cmd[5] == "7" for cmd in limited.values())
    assert planned(tmp_path / "run")["op"][0] == "env"  # no limit unless asked
    bad = gpu_run("--out", str(tmp_path), "--step-timeout", "soon")
    assert bad.returncode == 2 and "whole seconds" in bad.stderr
    assert gpu_run("--help").stdout.startswith("usage: scripts/gpu_run.sh --out DIR")


def test_without_a_gpu_it_refuses_and_says_what_to_run(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = gpu_run("--out", str(tmp_path / "run"), python=sys.executable)
    assert result.returncode == 3 and "no CUDA device" in result.stderr
    assert "pytest --attn-backends=all -n auto" in result.stderr and not (tmp_path / "run").exists()
