"""Many GPUs, many machines: pinning xdist workers to GPUs, the device dimension of records, the
gate device by device, and `attnparity merge`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from attnparity.cli import main as cli_main
from attnparity.machine import auto_workers, gpu_for_worker, gpu_per_worker, worker_device
from attnparity.results.gate import compare_records
from attnparity.results.matrix import build_matrix
from attnparity.results.merge import MergeError, merge_runs
from attnparity.results.record import ResultRecord, ResultsFileError, write_results

ONE, TWO = "CPU (Intel(R) Xeon(R) Processor)", "CPU (AMD EPYC 9654)"


@pytest.mark.parametrize("worker,count,expected", [
    ("gw0", 8, 0), ("gw1", 8, 1), ("gw7", 8, 7), ("gw8", 8, 0), ("gw3", 2, 1), ("gw5", 1, 0),
    (None, 4, None), ("master", 4, None), ("gw1", 0, None), ("gwx", 2, None)])
def test_each_worker_gets_a_gpu_by_its_id(worker, count, expected):
    assert gpu_for_worker(worker, count) == expected


def test_worker_device_pins_plain_cuda_only():
    assert worker_device("cuda", "gw3", 4) == "cuda:3"
    assert worker_device("cuda", None, 4) == "cuda"  # not under xdist: torch's current device
    assert worker_device("cuda:2", "gw0", 4) == "cuda:2"  # the user's explicit choice wins
    assert worker_device("cpu", "gw1", 0) == "cpu"


def test_perf_on_every_worker_only_with_a_gpu_each():
    assert gpu_per_worker("cuda", 2, 2) and gpu_per_worker("cuda", 1, 8)
    assert not gpu_per_worker("cuda", 3, 2)  # more workers than GPUs: gw0 and gw2 share cuda:0
    assert not gpu_per_worker("cuda:1", 2, 2)  # pinned by hand: every worker on GPU 1
    assert not gpu_per_worker("cpu", 2, 0) and not gpu_per_worker("cuda", 0, 2)


def test_auto_gives_a_worker_per_core_on_cpu_and_per_gpu_on_cuda(monkeypatch):
    import os

    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert auto_workers("cuda") == 4
    assert auto_workers("cuda:2") == 1  # the user chose one GPU
    assert auto_workers("cpu") == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})  # taskset / a container's share
    assert auto_workers("cpu") == 3


def test_session_pins_the_worker_gpu_for_itself_and_its_isolated_workers(monkeypatch):
    """The device start_run gives the suite (which isolated workers pin too) is the worker's GPU."""
    import torch

    from attnparity import session
    from attnparity.suite import isolation

    pinned = []
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw5")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", pinned.append)
    assert session.pin_worker_device("cuda") == "cuda:1"
    assert isolation.pin_device("cuda:1", pinned.append) == "cuda:1"
    assert pinned == [1, 1]
    assert session.pin_worker_device("cpu") == "cpu"


def rec(backend, label, verdict="pass", ratio=0.5, kind="op", index=None, device="cpu", **kw):
    return ResultRecord(kind, "forward", backend, "fp32", verdict, nodeid=f"attnparity::forward[{backend}-fp32]",
                        metrics={"ratio_max": ratio}, device=device, device_label=label, device_index=index, **kw)


def test_gate_compares_device_by_device():
    old = [rec("a", ONE), rec("a", TWO)]
    # a's cell got worse on TWO only; on ONE it is as before, so ONE's cell must not hide it
    new = [rec("a", ONE), rec("a", TWO, verdict="fail", ratio=9.0)]
    worse = [d for d in compare_records(old, new).differences if d.worse]
    assert {(d.device, d.what) for d in worse} == {(TWO, "verdict"), (TWO, "ratio")}
    assert all(d.label.startswith(f"[{TWO}]") for d in worse)


def test_gate_never_compares_one_device_with_another():
    comparison = compare_records([rec("a", ONE)], [rec("a", TWO, verdict="fail", ratio=9.0)])
    assert comparison.cells_compared == 0 and comparison.failed
    assert [d.what for d in comparison.worse] == ["device"]
    assert f"device {ONE} ran 1 cells before and none now" in comparison.worse[0].text


def test_unlabelled_records_keep_comparing_as_one_device():
    legacy = [rec("a", "")]
    assert compare_records(legacy, [rec("a", TWO)]).cells_compared == 1


def test_an_unlabelled_baseline_gates_only_its_own_device_of_a_merged_run():
    # an old CPU baseline against a merged CPU + GPU run: the GPU's worse cell is not the CPU's
    legacy = [rec("a", "", ratio=0.5)]
    merged = [rec("a", ONE, ratio=0.5), rec("a", "NVIDIA H200", ratio=5.0, device="NVIDIA H200")]
    comparison = compare_records(legacy, merged)
    assert comparison.cells_compared == 1 and not comparison.failed, comparison.differences
    assert [d.text for d in comparison.differences if d.what == "device"] == [
        "new device NVIDIA H200 (1 cells): nothing to compare with"]
    # and the CPU cell getting worse is still seen
    assert compare_records(legacy, [rec("a", ONE, ratio=5.0)]).failed


def test_matrix_has_the_device_as_a_dimension_and_names_each_gpu():
    records = [rec("a", "NVIDIA H200", index=0, device="NVIDIA H200"),
               rec("b", "NVIDIA H200", index=1, device="NVIDIA H200"), rec("a", ONE, verdict="fail", ratio=9)]
    m = build_matrix(records)
    assert m.devices == ["NVIDIA H200", ONE] and m.multi_device
    assert m.device_cell("a", "fp32", "NVIDIA H200").verdict == "pass"
    assert m.device_cell("a", "fp32", ONE).verdict == "fail"
    assert m.cell("a", "fp32").verdict == "fail"  # the device-free view is the worst of both
    assert m.device_cell("b", "fp32", "NVIDIA H200").ran_on == ["cuda:1 NVIDIA H200"]


def _write(path: Path, records, device="cpu") -> Path:
    write_results(path, records, device, {"torch": "2.13.0"})
    return path


def test_merge_two_cpu_devices_into_one_report(tmp_path):
    a = _write(tmp_path / "a.json", [rec("a", ONE), rec("b", ONE)])
    b = _write(tmp_path / "b.json", [rec("a", TWO), rec("b", TWO, verdict="fail", ratio=9.0)])
    assert cli_main(["merge", str(a), str(b), "--report", str(tmp_path / "m")]) == 0
    merged = json.loads((tmp_path / "m" / "results.json").read_text())
    assert sorted({r["device_label"] for r in merged["records"]}) == sorted([ONE, TWO])
    html = (tmp_path / "m" / "index.html").read_text()
    assert html.count('<th class="device"') == 2 and ONE in html and TWO in html
    # the merged run gates device by device against a later run of one of its devices
    assert not compare_records(merge_runs([b]).records, merge_runs([tmp_path / "m" / "results.json"]).records).failed


def test_merge_labels_records_written_before_labels(tmp_path):
    a = _write(tmp_path / "a.json", [rec("a", "", device="NVIDIA A100")])
    b = _write(tmp_path / "b.json", [rec("a", "", device="NVIDIA H100")])
    assert merge_runs([a, b]).devices == ["NVIDIA A100", "NVIDIA H100"]


def test_merge_refuses_what_is_not_one_matrix(tmp_path, capsys):
    a = _write(tmp_path / "a.json", [rec("a", ONE)])
    same_cell = _write(tmp_path / "c.json", [rec("a", ONE, ratio=0.7)])
    with pytest.raises(MergeError, match=re.escape(f"both hold 'attnparity::forward[a-fp32]' on {ONE}")):
        merge_runs([a, same_cell])
    other = tmp_path / "v.json"
    write_results(other, [rec("b", ONE)], "cpu", {"torch": "2.14.1"})
    data = json.loads(other.read_text())
    for r in data["records"]:
        r["versions"] = {"torch": "2.14.1"}
    other.write_text(json.dumps(data))
    first = json.loads(a.read_text())
    for r in first["records"]:
        r["versions"] = {"torch": "2.13.0"}
    a.write_text(json.dumps(first))
    with pytest.raises(MergeError, match="different versions \\(torch 2.13.0 vs 2.14.1\\)"):
        merge_runs([a, other])
    with pytest.raises(MergeError, match="named twice"):
        merge_runs([a, a])
    with pytest.raises(ResultsFileError, match="no such results file"):
        merge_runs([tmp_path / "missing.json"])
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(ResultsFileError, match="not an attnparity results.json"):
        merge_runs([tmp_path / "x.json"])
    (tmp_path / "s.json").write_text('{"schema": 99, "records": []}')
    with pytest.raises(ResultsFileError, match="schema 99"):
        merge_runs([tmp_path / "s.json"])
    # the CLI: a clear line and exit 2, never a traceback
    assert cli_main(["merge", str(a), str(same_cell), "--report", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.startswith("attnparity merge: ")


@pytest.mark.parametrize("device,gpus,workers,dist,scheduler,beside", [
    ("cuda", 2, 2, "load", None, False),               # a GPU each: perf items on every worker, as xdist places them
    ("cuda", 2, 3, "load", "PerfLastScheduling", False),  # gw0 and gw2 share cuda:0: perf last, alone
    ("cuda:1", 2, 2, "load", "PerfLastScheduling", False),  # every worker on the chosen GPU
    ("cpu", 0, 2, "load", "PerfLastScheduling", False),
    ("cpu", 0, 2, "loadscope", None, True),            # the user's --dist is kept; records say so
    ("cuda", 2, 2, "loadfile", None, False),           # a GPU each: nothing beside them either way
])
def test_where_perf_items_run_under_xdist(pytester, monkeypatch, device, gpus, workers, dist, scheduler, beside):
    """Simulated on CPU: the controller's placement (plugin._placement) and scheduler for a machine
    with ``gpus`` GPUs, with xdist's options as its pytest_cmdline_main leaves them."""
    import torch

    pytest.importorskip("xdist")
    from attnparity import plugin

    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    config = pytester.parseconfig("-p", "xdist")
    config.option.dist, config.option.tx = dist, ["popen"] * workers
    config.stash[plugin.RUN] = object()
    config.stash[plugin.PLACEMENT] = placement = plugin._placement(config, device)
    assert placement.workers == workers
    made = plugin.pytest_xdist_make_scheduler(config, None)
    assert (type(made).__name__ if made is not None else None) == scheduler
    assert (placement.beside is not None) is beside
