"""The layout holds: one dependency direction and no cycles (import-linter), every subpackage
packaged, and the shipped goldens found by a wheel installed into a fresh venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "import-linter is missing: pip install -e '.[test]'"
    result = subprocess.run([lint, "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout and "3 kept" in result.stdout


def test_a_broken_direction_is_caught(tmp_path: Path) -> None:
    """The contract can fail: a backends module that imports the suite breaks it."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "attnparity", copy / "attnparity", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    bad = copy / "attnparity" / "backends" / "naive.py"
    bad.write_text(bad.read_text() + "\nfrom attnparity.suite import Check  # noqa: E402,F401\n")
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    result = subprocess.run([lint, "--no-cache", "--config", str(copy / "pyproject.toml")], cwd=copy,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(copy)})
    assert result.returncode == 1, result.stdout[-2000:]
    assert "attnparity.backends.naive -> attnparity.suite" in result.stdout


def test_every_subpackage_is_packaged() -> None:
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "attnparity").rglob("__init__.py")}
    assert found - listed == set(), "subpackages missing from [tool.setuptools] packages in pyproject.toml"
    assert "attnparity.golden" in listed


def _site_packages(venv: Path) -> Path:
    scheme = sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})
    return Path(scheme["purelib"])


def test_wheel_in_a_fresh_venv_finds_the_shipped_goldens(tmp_path: Path) -> None:
    # Build from a clean copy of the tree: setuptools reuses a build/ directory, stale modules too.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                             "__pycache__", ".attnparity", ".hypothesis",
                                                             ".pytest_cache", "tests", "docs", "examples"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(src)], check=True, capture_output=True)
    (wheel,) = wheels.glob("attnparity-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = _site_packages(venv)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    str(wheel)], check=True, capture_output=True)
    # torch, diffusers and pytest come from this environment (reinstalling them would take minutes);
    # attnparity itself from the wheel: a path in a .pth file is searched after the venv's own
    # site-packages, and the editable install's import hook is not loaded from there.
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    where = subprocess.run([str(python), "-c", "import attnparity.pipelines.golden as g; "
                            "print(g.__file__); print(g.shipped_golden_dir())"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert Path(where[0]).is_relative_to(site), where
    assert where[1] == str(site / "attnparity" / "golden"), where

    report = tmp_path / "report"
    result = subprocess.run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q",
                             "--attn-backends=sdpa-math", "--attn-dtypes=fp32", "-m", "attn_pipeline",
                             f"--attn-report={report}"], cwd=empty, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    records = json.loads((report / "results.json").read_text())["records"]
    pipelines = [r for r in records if r["kind"] == "pipeline"]
    assert len(pipelines) == 5 and all(r["verdict"] == "pass" for r in pipelines), [r["message"] for r in pipelines]
    assert all(Path(r["extra"]["golden"]).is_relative_to(site / "attnparity" / "golden") for r in pipelines)
    assert not (empty / "golden").exists()  # nothing was written where the user stood
