"""A backend that kills its process (abort, segfault, the OOM killer), leaves it broken (a patched
torch function) or hangs fails its own cells only, serial and under xdist: it runs in a worker
process of its own (--attn-isolate, suite/isolation.py), and the rest of the matrix and the report
are still produced."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from attn_pytester import matrix_project  # noqa: F401  (fixture)
from test_misbehaving_backends import outcomes

CRASHERS = {"vendor-abort": "SIGABRT", "vendor-segv": "SIGSEGV", "vendor-oom": "SIGKILL"}
COMMON = ("--attn-dtypes=fp32", "--attn-examples=3", "-p", "no:cacheprovider", "-rA")
MASKED_CASE = "forward on case B2 H3/kv1 Sq17 Skv9 D40 fp32 mask=random:bool"  # the minisuite's second case


def records(report_dir) -> dict[str, dict]:
    return {r["backend"]: r for r in json.loads((report_dir / "results.json").read_text())["records"]}


def check_crashes_and_poison(result, report_dir) -> None:
    seen = outcomes(result)
    for good in ("naive", "sdpa-math", "vendor-poison"):  # the poisoner is correct itself
        assert seen[f"forward[{good}-fp32]"] == "passed", good
    for bad in CRASHERS:
        assert seen[f"forward[{bad}-fp32]"] == "failed", bad
    text = result.stdout.str()
    got = records(report_dir)
    for bad, sig in CRASHERS.items():
        message = got[bad]["message"]
        assert got[bad]["verdict"] == "error"
        assert f"{bad} crashed its isolated worker process" in message and f"killed by {sig}" in message
        assert MASKED_CASE in message and f"repro: python -m attnparity.check.repro forward {bad} " in message
        assert got[bad]["case"]["mask"] == "random" and got[bad]["repro"].startswith("python -m attnparity")
        assert f"killed by {sig}" in text
    assert "Fatal Python error: Segmentation fault" in got["vendor-segv"]["message"]  # the worker's last words
    assert "OOM killer" in got["vendor-oom"]["message"]
    assert (report_dir / "index.html").exists()
    assert result.ret == 1


def test_crashing_and_poisoning_backends_fail_only_their_cells(matrix_project, tmp_path):
    # The poisoner runs before sdpa-math: in one process, sdpa-math would return its garbage.
    result = matrix_project.runpytest("--attn-backends=vendor-poison,naive,sdpa-math," + ",".join(CRASHERS),
                                      *COMMON, f"--attn-report={tmp_path / 'rep'}")
    check_crashes_and_poison(result, tmp_path / "rep")


def test_without_isolation_a_poisoner_breaks_the_next_backend(matrix_project, tmp_path):
    # What isolation prevents, shown: the same poisoner in-process fails sdpa-math's cell.
    result = matrix_project.runpytest("--attn-backends=vendor-poison,sdpa-math", "--attn-isolate=none",
                                      *COMMON, f"--attn-report={tmp_path / 'rep'}")
    assert outcomes(result) == {"forward[vendor-poison-fp32]": "passed", "forward[sdpa-math-fp32]": "failed"}
    assert result.ret == 1


def test_hung_worker_is_killed_and_the_next_cell_gets_a_fresh_one(matrix_project, tmp_path):
    result = matrix_project.runpytest(
        "--attn-backends=vendor-hang,naive", "--attn-dtypes=fp32,bf16", "--attn-examples=2", "--attn-timeout=3",
        f"--attn-report={tmp_path / 'rep'}", "-p", "no:cacheprovider", "-rA")
    assert outcomes(result) == {"forward[vendor-hang-fp32]": "failed", "forward[vendor-hang-bf16]": "failed",
                                "forward[naive-fp32]": "passed", "forward[naive-bf16]": "passed"}
    messages = [r["message"] for r in json.loads((tmp_path / "rep" / "results.json").read_text())["records"]
                if r["backend"] == "vendor-hang"]
    pids = set()
    for message in messages:  # both cells were tried, each in a worker of its own, and each killed
        assert "timed out after 3 s (attn_timeout); its isolated worker process (pid " in message
        assert "It was running forward on case B1 H2/kv1 Sq16 Skv16 D32" in message
        pids.add(int(re.search(r"\(pid (\d+)\)", message).group(1)))
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "not run: it timed out" not in result.stdout.str()
    assert result.ret == 1


def test_isolation_under_xdist(matrix_project, tmp_path):
    pytest.importorskip("xdist")
    result = matrix_project.runpytest("--attn-backends=vendor-poison,naive,sdpa-math,vendor-hang," + ",".join(CRASHERS),
                                      "--attn-timeout=5", "-n", "2", *COMMON, f"--attn-report={tmp_path / 'rep'}")
    check_crashes_and_poison(result, tmp_path / "rep")
    assert "timed out after 5 s" in records(tmp_path / "rep")["vendor-hang"]["message"]
    assert "crashed while running" not in result.stdout.str()  # no xdist worker was lost


def test_isolate_option_is_checked(matrix_project):
    result = matrix_project.runpytest("--attn-backends=naive", "--attn-isolate=some")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--attn-isolate=some*expected one of auto, all, none*"])


def test_which_backends_are_isolated() -> None:
    from attnparity import Backend
    from attnparity.suite.isolation import isolated_backends

    builtin = Backend("sdpa-math", lambda *a, **k: None)
    vendor = Backend("mine", lambda *a, **k: None, origin="register_backend")
    plugin = Backend("theirs", lambda *a, **k: None, origin="entry point theirs")
    both = [builtin, vendor, plugin]
    assert isolated_backends(both, "auto", "cpu") == {"mine", "theirs"}
    assert isolated_backends(both, "auto", "cuda:1") == {"sdpa-math", "mine", "theirs"}
    assert isolated_backends(both, "all", "cpu") == {"sdpa-math", "mine", "theirs"}
    assert isolated_backends(both, "none", "cuda") == set()
    with pytest.raises(ValueError, match="auto, all or none"):
        isolated_backends(both, "backend", "cpu")


def test_a_worker_pins_its_device() -> None:
    # Simulated on CPU: what a worker passes to torch.cuda.set_device before any CUDA call.
    from attnparity.suite.isolation import pin_device

    calls: list[int] = []
    assert pin_device("cpu", calls.append) is None and calls == []
    assert pin_device("cuda", calls.append) == "cuda:0"
    assert pin_device("cuda:3", calls.append) == "cuda:3"
    assert calls == [0, 3]
    with pytest.raises(ValueError, match="expected cuda or cuda:N"):
        pin_device("cuda:x", calls.append)


def test_exit_described_by_signal() -> None:
    from attnparity.suite.isolation import describe_exit

    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV (signal 11)"
    assert describe_exit(-signal.SIGKILL).startswith("killed by SIGKILL (signal 9); the kernel's OOM killer")
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(None) == "ended (exit status unknown)"
