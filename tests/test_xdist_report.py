"""pytest -n 2 gives the same matrix and one report as a serial run: workers' records reach the
controller (on an attribute of each test report, which xdist serializes), only the controller writes
results.json and index.html; junitxml gets one short line per testcase, not the record."""

from __future__ import annotations

import json

import pytest

from attn_pytester import matrix_project  # noqa: F401  (fixture)

pytest.importorskip("xdist")

ARGS = ("--attn-backends=naive,sdpa-math,vendor-scale", "--attn-dtypes=fp32", "--attn-examples=3",
        "-p", "no:cacheprovider")
WORKER_WATCH = '''
import os, pathlib
import pytest

@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    # Workers end before the controller writes its report: a report here was written by a worker.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        report = pathlib.Path(session.config.getoption("attn_report"))
        if report.exists():
            (report.parent / ("worker-wrote-" + os.environ["PYTEST_XDIST_WORKER"])).write_text("")
'''


def cells(path):
    records = json.loads(path.read_text())["records"]
    return sorted((r["backend"], r["dtype"], r["verdict"], r["examples"], r["metrics"].get("ratio_max"))
                  for r in records)


def test_xdist_gives_the_serial_matrix_and_one_report(matrix_project, tmp_path):
    matrix_project.makeconftest(matrix_project.path.joinpath("conftest.py").read_text() + WORKER_WATCH)
    parallel = matrix_project.runpytest(*ARGS, "-n", "2", f"--attn-report={tmp_path / 'xdist'}",
                                        f"--junitxml={tmp_path / 'junit.xml'}")
    # the seed the controller picked is the one every worker drew with: a serial run with it draws the same
    seed = json.loads((tmp_path / "xdist" / "results.json").read_text())["draws"]["seed"]
    serial = matrix_project.runpytest(*ARGS, f"--attn-seed={seed}", f"--attn-report={tmp_path / 'serial'}")
    assert serial.ret == parallel.ret == 1  # vendor-scale fails in both
    parallel.stdout.fnmatch_lines(["*2 workers*"])
    assert cells(tmp_path / "serial" / "results.json") == cells(tmp_path / "xdist" / "results.json")
    assert len(cells(tmp_path / "xdist" / "results.json")) == 3
    assert not list(tmp_path.glob("worker-wrote-*"))
    assert parallel.stdout.str().count("attnparity matrix") == 1
    import xml.etree.ElementTree as ET

    props = {case.get("name"): [(p.get("name"), p.get("value")) for p in case.iter("property")]
             for case in ET.parse(tmp_path / "junit.xml").iter("testcase")}
    assert sorted(props) == ["forward[naive-fp32]", "forward[sdpa-math-fp32]", "forward[vendor-scale-fp32]"]
    assert [name for found in props.values() for name, _ in found] == ["attnparity"] * 3
    line = props["forward[vendor-scale-fp32]"][0][1]
    assert line.startswith("fail vendor-scale fp32 ratio=") and len(line) < 100  # a line, not the record

    def matrix_lines(result):
        lines = result.outlines
        start = next(i for i, line in enumerate(lines) if "attnparity matrix" in line)
        return [line for line in lines[start + 1:start + 16] if line.startswith(("naive", "sdpa-math", "vendor-scale"))]

    assert matrix_lines(serial) == matrix_lines(parallel) and len(matrix_lines(serial)) == 3


def test_xdist_workers_share_the_cpu_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each worker's torch would start a thread per core and spin against the others (measured 9x
    # slower on 2 cores): a worker takes cores // workers threads, unless the user said otherwise.
    import os

    import torch

    from attnparity.session import share_cpu_threads

    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    try:
        torch.set_num_threads(cores)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(cores * 2))
        assert share_cpu_threads("cuda:0") is None and torch.get_num_threads() == cores  # GPU runs keep theirs
        assert share_cpu_threads("cpu") == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(cores)
        monkeypatch.setenv("OMP_NUM_THREADS", str(cores))
        assert share_cpu_threads("cpu") is None and torch.get_num_threads() == cores
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT")
        assert share_cpu_threads("cpu") is None and torch.get_num_threads() == cores  # not under xdist
    finally:
        torch.set_num_threads(before)
