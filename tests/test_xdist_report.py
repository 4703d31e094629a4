"""pytest -n 2 gives the same matrix and one report as a serial run: workers' records reach the
controller (on an attribute of each test report, which xdist serializes), only the controller writes
results.json and index.html; junitxml gets one short line per testcase, not the record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attn_pytester import matrix_project  # noqa: F401  (fixture)
from attnparity.results.gate import compare_files

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


def test_xdist_gives_the_serial_matrix_and_one_report(matrix_project, tmp_path, monkeypatch):
    # random draws, as a newcomer runs: the controller picks the seed (under CI the draws are derandomized)
    monkeypatch.delenv("CI", raising=False)
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


#: A small matrix with perf items: the mini suite's op cells, a few op cells that take a while (so
#: both workers are busy when perf items could start), and the real perf suite on two tiny shapes,
#: timed by a stand-in that reports the same figures every run (the test is about how the run is
#: split, not about the machine's noise). Set up in every process: xdist's workers import it too.
PERF_PROJECT = '''
import json, os, time
import pytest
import attnparity.suite as _suite
from attnparity.perf import shapes as _shapes, timer as _timer
from attnparity.perf.shapes import PerfShape
from attnparity.results.record import ResultRecord
from attnparity.suite import Check

_SAVED = _suite.SUITE_MODULES
_suite.SUITE_MODULES = ("minisuite", "conftest", "attnparity.suite.perf")
_shapes.quick_cpu = lambda: [PerfShape(f"tiny-{n}", "Tiny", "self", 1, 2, n, n, 16, "test shape") for n in (32, 64)]

def _steady(fns, device, settings, *, tolerate=(), warm=()):
    for fn in fns.values():
        fn()
    label = _timer.identify("cpu").timing_label
    return {name: _timer.Timing((1.0, 1.0, 1.0), label, "perf_counter", 0.0, 1) for name in fns}

_timer.time_many = _steady

def checks(ctx):  # op cells that take a while
    def run(i):
        time.sleep(0.3)
        return ResultRecord("op", f"slow-{i}", "naive", "fp32", "pass", metrics={"ratio_max": 1.0})
    return [Check("op", f"slow-{i}", "naive", "fp32", lambda i=i: run(i), marks=("attn_op",)) for i in range(6)]

def pytest_runtest_logreport(report):
    # the controller's view of when each item ran where (workers' clocks: one machine)
    if report.when == "call" and not os.environ.get("PYTEST_XDIST_WORKER"):
        with open(os.environ["ATTN_TEST_RUNLOG"], "a") as f:
            f.write(json.dumps([report.nodeid, getattr(report, "worker_id", None), report.start, report.stop]) + "\\n")

def pytest_unconfigure(config):
    _suite.SUITE_MODULES = _SAVED
'''
PERF_ARGS = ("--attn-backends=naive,sdpa-math", "--attn-dtypes=fp32", "--attn-examples=2", "--attn-isolate=none",
             "-p", "no:cacheprovider")


def test_serial_and_parallel_runs_hold_the_same_cells_and_the_gate_sees_no_difference(pytester, tmp_path, monkeypatch):
    from attnparity.cli import main as cli_main
    from attnparity.suite.perf import is_perf_nodeid

    pytester.makepyfile(minisuite=(Path(__file__).parent / "minisuite.py").read_text())
    pytester.makeconftest(PERF_PROJECT)
    runs = {}
    for name, extra in (("serial", ()), ("xdist", ("-n", "2"))):
        monkeypatch.setenv("ATTN_TEST_RUNLOG", str(tmp_path / f"{name}.jsonl"))
        result = pytester.runpytest_subprocess(*PERF_ARGS, *extra, f"--attn-report={tmp_path / name}")
        assert result.ret == 0, result.stdout.str()[-3000:]
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())["records"]
    result.stdout.fnmatch_lines(["attnparity: pytest-xdist 2 workers (--dist load): perf items last, alone on one worker"])

    def cell_set(records):
        return sorted((r["kind"], r["check"], r["backend"], r["dtype"], r["verdict"]) for r in records)

    perf = [r for r in runs["xdist"] if r["kind"] == "perf"]
    assert len(perf) == 4 and all(r["verdict"] == "pass" for r in perf)  # none skipped on a worker
    assert cell_set(runs["serial"]) == cell_set(runs["xdist"]) and len(cell_set(runs["serial"])) == 12
    # no note of other workers beside them (outside load on this machine may still be noted)
    assert not any("pytest-xdist" in r["extra"].get("contended", "") for r in perf)
    assert {r["extra"]["worker"] for r in runs["xdist"]} == {"gw0", "gw1"}  # a detail of each record ...
    assert not any("worker" in r["extra"] for r in runs["serial"])
    assert cli_main(["compare", str(tmp_path / "serial" / "results.json"),
                     str(tmp_path / "xdist" / "results.json")]) == 0  # ... that no cell or gate key depends on
    comparison = compare_files(str(tmp_path / "serial" / "results.json"), str(tmp_path / "xdist" / "results.json"))
    assert comparison.differences == [] and comparison.cells_compared == 12

    # -n 2: every perf item started after every other item had ended, all on one worker
    ran = [json.loads(line) for line in (tmp_path / "xdist.jsonl").read_text().splitlines()]
    timed = [r for r in ran if is_perf_nodeid(r[0])]
    others = [r for r in ran if not is_perf_nodeid(r[0])]
    assert len(timed) == 4 and len(others) == 8
    assert len({r[1] for r in timed}) == 1 and len({r[1] for r in others}) == 2
    assert min(r[2] for r in timed) >= max(r[3] for r in others)
    assert ran[-4:] == timed  # and reached the controller last
