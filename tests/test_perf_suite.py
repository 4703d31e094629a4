"""The attn_perf items through pytest: selection, records, the baseline gate, under pytest-xdist."""

from __future__ import annotations

import json

import pytest
import torch  # noqa: F401  (imported before any inline run: pytester's sys.modules snapshot must keep it)
import torch.nn.functional  # noqa: F401

from attn_pytester import records_of
from test_perf_gate import one_thread  # noqa: F401  (fixture: the tiny reference kernel's time is stable only then)
from attnparity.perf import shapes as perf_shapes
from attnparity.perf.shapes import PerfShape

#: A backend whose speed the test sets: it sleeps ATTN_TEST_SLEEP_S seconds (and computes nothing:
#: only its time matters here, and a sleep is steadier than arithmetic on a shared CPU).
CONFTEST = """
import os, time
from attnparity import Backend, register_backend

def sleepy(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    time.sleep(float(os.environ.get("ATTN_TEST_SLEEP_S", "0.02")))
    return q

register_backend(Backend("sleepy", sleepy), replace=True)
"""

TINY = PerfShape("tiny-self-64-2x16-b1", "Tiny", "self", 1, 2, 64, 64, 16, "test shape")


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> pytest.Pytester:
    # inline runs share this process: one tiny shape keeps each run to a fraction of a second
    monkeypatch.setattr(perf_shapes, "quick_cpu", lambda: [TINY])
    monkeypatch.setenv("ATTN_TEST_SLEEP_S", "0.02")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    pytester.makeconftest(CONFTEST)
    return pytester


def perf_records(reprec: pytest.HookRecorder) -> list[dict]:
    return [r for r in records_of(reprec) if r["kind"] == "perf"]


def write_baseline(path, reprec: pytest.HookRecorder) -> None:
    from attnparity.results.record import ResultRecord, write_results

    records = [ResultRecord.from_json(r) for r in perf_records(reprec)]
    write_results(path, records, records[0].device, records[0].versions)


# In-process: these tests monkeypatch the shape catalogue / timer settings in this process, which an
# isolated worker (--attn-isolate, on for conftest-registered backends) rebuilds without.
ARGS = ("--attn-backends=sleepy", "--attn-dtypes=fp32", "-p", "no:cacheprovider", "--attn-isolate=none")


def test_perf_items_selected_by_marker_and_record_metrics(suite: pytest.Pytester) -> None:
    reprec = result = suite.inline_run(*ARGS, "-m", "attn_perf")
    passed, skipped, failed = result.listoutcomes()
    assert [r.nodeid.split("::", 1)[-1] if r.nodeid.startswith("::") else r.nodeid for r in passed] == [
        "attnparity::perf:tiny-self-64-2x16-b1[sleepy-fp32]"]
    (rec,) = perf_records(reprec)
    assert set(rec["metrics"]) >= {"ms", "ms_cv", "tflops", "pct_peak", "speedup_math", "speedup_naive"}
    assert rec["metrics"]["ms"] >= 20  # the 20 ms sleep, in milliseconds
    # the speed-ups are the references' medians over ours, from the same interleaved runs
    m, extra = rec["metrics"], rec["extra"]
    assert m["speedup_math"] == pytest.approx(extra["sdpa-math_ms"] / m["ms"])
    assert m["speedup_naive"] == pytest.approx(extra["naive_ms"] / m["ms"])
    assert m["tflops"] == pytest.approx(4 * 1 * 2 * 64 * 64 * 16 / (m["ms"] / 1e3) / 1e12)
    assert rec["extra"]["device_label"].startswith("CPU (")
    assert rec["extra"]["method"] == "perf_counter"
    assert 0.0 <= rec["extra"]["others_cpu"] <= 1.0  # measured around the timing (perf.timer.OthersCpu)


def test_not_attn_perf_deselects_them(suite: pytest.Pytester) -> None:
    kept = suite.runpytest_inprocess(*ARGS, "-m", "not attn_perf", "--collect-only", "-q")
    assert "perf:" not in kept.stdout.str()
    chosen = suite.runpytest_inprocess(*ARGS, "-m", "attn_perf", "--collect-only", "-q")
    chosen.stdout.fnmatch_lines(["attnparity::perf:tiny-self-64-2x16-b1[[]sleepy-fp32[]]"])


def test_baseline_equal_timing_passes_and_slowdown_fails(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    reprec = suite.inline_run(*ARGS, "-m", "attn_perf")
    reprec.assertoutcome(passed=1)
    baseline = suite.path / "old.json"
    write_baseline(baseline, reprec)
    gate = ("-m", "attn_perf", f"--attn-perf-baseline={baseline}", "--attn-perf-margin=0.5")

    reprec = suite.inline_run(*ARGS, *gate)
    reprec.assertoutcome(passed=1)  # same sleep: within the margin
    (rec,) = perf_records(reprec)
    assert 0.6 < rec["metrics"]["vs_baseline"] < 1.5
    assert rec["extra"]["baseline_basis"] == "relative to sdpa-math" and rec["metrics"]["vs_baseline_relative"] > 0

    monkeypatch.setenv("ATTN_TEST_SLEEP_S", "0.08")  # the backend got 4x slower
    result = suite.runpytest_inprocess(*ARGS, *gate)
    result.assert_outcomes(failed=1)
    # the margin, or more when the timings' noise calls for it (tests/test_perf_gate.py)
    result.stdout.fnmatch_lines(["*SLOWER than baseline: relative to sdpa-math*allowed +*",
                                 "*repro: pytest --attn-backends=sleepy*--attn-perf-margin=0.5*"])


def steady_timings(fns, device, settings, *, tolerate=(), warm=()):
    """perf.timer.time_many with fixed times: each function runs once (the item's code path), and the
    reference's time does not drift between runs. Measured, a 0.4 ms sdpa-math on the tiny shape
    moved 1.48x between two runs of a CI job, which alone carried a planted 1.4x past 2x."""
    from attnparity.perf.timer import Timing

    for fn in fns.values():
        fn()
    ms = {"sleepy": 20.0, "sdpa-math": 0.5}
    return {name: Timing((ms.get(name, 1.0),) * 15, "CPU (1 torch thread)", "perf_counter", 0.0, 0) for name in fns}


def test_baseline_timed_beside_other_work_makes_a_moderate_slowdown_inconclusive(
        suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    from attnparity.perf import timer

    monkeypatch.setattr(timer, "time_many", steady_timings)  # the rule under test, not this machine's noise
    reprec = suite.inline_run(*ARGS, "-m", "attn_perf")
    baseline = suite.path / "old.json"
    write_baseline(baseline, reprec)
    data = json.loads(baseline.read_text())
    (old,) = data["records"]
    # planted: the baseline 1.4x faster relative to its reference, timed while others used 90% of the CPU
    for metric in ("speedup_math", "speedup_naive"):
        old["metrics"][metric] *= 1.4
    old["extra"]["others_cpu"] = 0.9
    baseline.write_text(json.dumps(data))
    # no margin, no noise allowance: every change is beyond the normal allowance, none beyond 2x
    gate = ("-m", "attn_perf", f"--attn-perf-baseline={baseline}", "--attn-perf-margin=0", "--attn-perf-noise=0")
    reprec = suite.inline_run(*ARGS, *gate)
    reprec.assertoutcome(passed=1)
    (rec,) = perf_records(reprec)
    assert "INCONCLUSIVE against baseline (not failed): relative to sdpa-math" in rec["message"]
    assert "timed beside other work (before: others used 90% of the CPU" in rec["message"]
    # with no busy allowance the same timings are judged as on an idle machine: slower, or faster
    reprec = suite.inline_run(*ARGS, *gate, "--attn-perf-busy-slowdown=0")
    reprec.assertoutcome(failed=1)
    (rec,) = perf_records(reprec)
    assert "INCONCLUSIVE" not in rec["message"] and "SLOWER than baseline: relative to sdpa-math" in rec["message"]


def test_note_contention_records_the_share_of_the_cpu_others_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from attnparity.perf import timer
    from attnparity.suite.perf import note_contention

    monkeypatch.setattr(timer, "cpu_contention", lambda: None)  # this machine's load average is not the test
    extra: dict = {}
    notes: list[str] = []
    note_contention("cpu", extra, notes, 0.6234)
    assert extra["others_cpu"] == 0.623
    assert extra["contended"] == notes[0] and notes[0].startswith(
        "CPU busy: other processes used 62% of this machine's CPU while timing")
    extra, notes = {}, []
    note_contention("cpu", extra, notes, 0.1)
    assert extra == {"others_cpu": 0.1} and notes == []
    # not measured (no /proc/stat), or a GPU timing: no figure at all, never a made-up 0
    for device, share in (("cpu", None), ("cuda:0", 0.9)):
        extra, notes = {}, []
        note_contention(device, extra, notes, share)
        assert extra == {} and notes == []


def test_baseline_from_another_device_is_not_compared(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    reprec = suite.inline_run(*ARGS, "-m", "attn_perf")
    baseline = suite.path / "old.json"
    write_baseline(baseline, reprec)
    data = json.loads(baseline.read_text())
    data["records"][0]["extra"]["device_label"] = "NVIDIA H100 80GB HBM3"
    baseline.write_text(json.dumps(data))
    monkeypatch.setenv("ATTN_TEST_SLEEP_S", "0.08")
    reprec = suite.inline_run(*ARGS, "-m", "attn_perf", f"--attn-perf-baseline={baseline}")
    reprec.assertoutcome(passed=1)
    (rec,) = perf_records(reprec)
    assert "not compared" in rec["message"]


def test_bad_options_are_usage_errors(suite: pytest.Pytester) -> None:
    result = suite.runpytest_inprocess(*ARGS, "-m", "attn_perf", "--attn-perf-baseline=missing.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no such results file*"])
    result = suite.runpytest_inprocess(*ARGS, "-m", "attn_perf", "--attn-perf=everything")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--attn-perf=everything: expected one of quick, full*"])


def test_records_say_when_other_workers_items_ran_beside_them(suite: pytest.Pytester,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a --dist the user chose, perf items run where xdist puts them: never skipped, and their
    records carry the note the controller sent (Placement.beside); alone, none."""
    from attnparity.suite.perf import Placement

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    for placement, noted in ((Placement(2, "loadfile"), True), (Placement(2, "load"), False)):
        suite.makeconftest(CONFTEST + f"""
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):  # what xdist gives a worker: the controller's workerinput
    config.workerinput = {{"attnparity_timing_beside": {placement.beside!r}}}
""")
        reprec = suite.inline_run(*ARGS, "-m", "attn_perf")
        reprec.assertoutcome(passed=1)
        (rec,) = perf_records(reprec)
        assert rec["extra"]["worker"] == "gw1"
        assert ("--dist loadfile with 2 workers" in rec["extra"].get("contended", "")) is noted
        assert ("--dist loadfile" in rec["message"]) is noted


def test_placement_of_perf_items() -> None:
    from attnparity.suite.perf import Placement

    serial, load, gpus, mine = Placement(0), Placement(2), Placement(4, "load", gpu_each=True), Placement(2, "loadscope")
    assert not serial.perf_last and serial.beside is None
    assert load.perf_last and load.beside is None and "last, alone on one worker" in load.describe()
    assert not gpus.perf_last and gpus.beside is None and "each on its own GPU" in gpus.describe()
    assert not mine.perf_last and "--dist loadscope with 2 workers" in mine.beside
    assert Placement(1, "each").beside is None  # one worker: nothing beside it


def test_catalogue_holds_the_real_diffusion_shapes() -> None:
    shapes = {(s.model, s.role, s.heads, s.head_dim, s.sq, s.skv, s.batch) for s in perf_shapes.full_catalogue()}
    for b in (1, 2):
        for heads, d, sq in ((8, 40, 4096), (8, 80, 1024), (8, 160, 256)):
            assert ("SD1.5", "self", heads, d, sq, sq, b) in shapes
            assert ("SD1.5", "cross", heads, d, sq, 77, b) in shapes
        assert ("SD2.1", "self", 5, 64, 4096, 4096, b) in shapes
        assert ("SDXL", "self", 10, 64, 4096, 4096, b) in shapes
        assert ("SDXL", "self", 20, 64, 1024, 1024, b) in shapes
        assert ("PixArt-α", "self", 16, 72, 4096, 4096, b) in shapes
        assert ("PixArt-α", "cross", 16, 72, 4096, 120, b) in shapes
        assert ("SD3", "joint", 24, 64, 4429, 4429, b) in shapes
        assert ("T5-256", "cross", 16, 72, 4096, 256, b) in shapes
    assert ("Flux.1", "joint", 24, 128, 4608, 4608, 1) in shapes
    names = [s.name for s in perf_shapes.full_catalogue() + perf_shapes.quick_cpu()]
    assert len(names) == len(set(perf_shapes.full_catalogue() + perf_shapes.quick_cpu())), "one name, one geometry"


def test_quick_cpu_set_stays_small_and_says_what_it_reduced() -> None:
    quick = perf_shapes.quick_cpu()
    assert sum(s.flops for s in quick) < 5e9  # seconds per backend on two cores
    native = {(s.heads, s.sq, s.skv, s.head_dim) for s in perf_shapes.full_catalogue()}
    for s in quick:
        if (s.heads, s.sq, s.skv, s.head_dim) not in native and "256" not in s.model:
            pytest.fail(f"{s.name} is not a catalogued shape and does not say it is reduced")
        if "REDUCED" in s.note:
            assert "@" in s.model
    assert perf_shapes.select("full", "cpu") == perf_shapes.full_catalogue()
    assert perf_shapes.select("quick", "cuda") == perf_shapes.quick_gpu()


def test_the_scheduler_tells_perf_items_by_node_id_as_their_marker_does(pytester: pytest.Pytester) -> None:
    """The xdist controller sees node ids only (scheduling.py): its rule must pick exactly the items
    marked attn_perf, op-level and pipeline-level, and no others."""
    from attnparity.suite.perf import is_perf_nodeid

    args = ("--attn-backends=naive,sdpa-math", "--attn-dtypes=fp32", "--attn-perf=full", "--collect-only", "-q",
            "-p", "no:cacheprovider")

    def ids(*extra: str) -> list[str]:
        out = pytester.runpytest_subprocess(*args, *extra).stdout.lines
        return [line for line in out if line.startswith("attnparity::")]

    everything, marked = ids(), ids("-m", "attn_perf")
    assert any(i.startswith("attnparity::perf-pipeline:") for i in marked)
    assert any(i.startswith("attnparity::perf:") for i in marked)
    assert len(everything) > len(marked) > 0
    assert [i for i in everything if is_perf_nodeid(i)] == marked
