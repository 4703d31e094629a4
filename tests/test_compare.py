"""The upgrade gate: compare two runs cell by cell; worse cells fail the run (and the command)."""

from __future__ import annotations

import json
import math

import pytest

from attn_pytester import matrix_project  # noqa: F401  (fixture)
from attnparity.cli import main as cli_main
from attnparity.results.gate import Thresholds, compare_records
from attnparity.results.record import ResultRecord, write_results


def op(backend, dtype="fp32", verdict="pass", ratio=1.0, message=""):
    return ResultRecord("op", "forward", backend, dtype, verdict, metrics={"ratio_max": ratio, "ratio_mean": ratio / 2},
                        examples=10, message=message)


def pipe(backend, ssim):
    return ResultRecord("pipeline", "pipeline:sd15", backend, "fp32", "pass", metrics={"ssim_ref": ssim})


def perf(backend, ms, device="cpu"):
    return ResultRecord("perf", "perf:sdxl-4096", backend, "fp16", "pass", metrics={"ms": ms}, device=device)


def worse(old, new, **kw):
    return [(d.what, d.label) for d in compare_records(old, new, Thresholds(**kw)).worse]


def test_identical_runs_pass_the_gate():
    run = [op("a"), op("b", "bf16", ratio=3.0), pipe("a", 0.999), perf("a", 10.0)]
    comparison = compare_records(run, run)
    assert not comparison.failed and comparison.differences == [] and comparison.cells_compared == 4


def test_pass_to_fail_and_error_are_worse_fail_to_pass_is_not():
    old = [op("a"), op("b"), op("c", verdict="fail")]
    new = [op("a", verdict="fail", message="max-abs error 3 > 1\nmore"), op("b", verdict="error"), op("c")]
    comparison = compare_records(old, new)
    assert [(d.what, d.label) for d in comparison.worse] == [("verdict", "forward a fp32"), ("verdict", "forward b fp32")]
    assert "pass -> fail: max-abs error 3 > 1" == comparison.worse[0].text
    assert [(d.what, d.new) for d in comparison.better] == [("verdict", "pass")]


def test_error_ratio_growth_beyond_the_factor():
    old = [op("a", ratio=1.5), op("b", ratio=1.5), op("c", ratio=0.01)]
    new = [op("a", ratio=3.1), op("b", ratio=2.9), op("c", ratio=0.15)]  # c: under the noise floor 0.1 * 2
    assert worse(old, new) == [("ratio", "forward a fp32")]
    assert worse(old, new, ratio_factor=3.0) == []


def test_infinite_ratio_is_worse():
    assert worse([op("a", ratio=1.0)], [op("a", ratio=math.inf)]) == [("ratio", "forward a fp32")]


def test_ssim_drop_beyond_the_margin():
    old = [pipe("a", 0.999), pipe("b", 0.999)]
    new = [pipe("a", 0.95), pipe("b", 0.992)]
    assert worse(old, new) == [("ssim_ref", "pipeline:sd15 a fp32")]
    assert worse(old, new, ssim_margin=0.1) == []


def test_backend_that_disappeared_or_became_unavailable():
    old = [op("a"), op("a", "bf16"), op("gone"), op("flash")]
    new = [op("a"), ResultRecord("op", "forward", "flash", "fp32", "skip", message="flash-attn not installed")]
    found = compare_records(old, new).worse
    assert [d.text for d in found if d.what == "backend"] == [
        "backend flash disappeared (1 cells ran before; now unavailable: flash-attn not installed)",
        "backend gone disappeared (1 cells ran before; absent from this run)"]
    assert [(d.what, d.label) for d in found if d.what == "missing"] == [("missing", "forward a bf16")]


def test_slowdown_only_on_the_same_device():
    old = [perf("a", 10.0), perf("b", 10.0), perf("c", 10.0, device="H100")]
    new = [perf("a", 13.0), perf("b", 12.0), perf("c", 30.0, device="A100")]
    assert worse(old, new) == [("time", "perf:sdxl-4096 a fp16")]
    assert worse(old, new, slowdown=0.5) == []


def test_thresholds_are_validated():
    with pytest.raises(ValueError, match="at least 1"):
        Thresholds(ratio_factor=0.5)


def test_cli_compare_exit_codes(tmp_path, capsys):
    old, same, bad = tmp_path / "old.json", tmp_path / "same.json", tmp_path / "bad.json"
    write_results(old, [op("a"), op("b")], "cpu", {})
    write_results(same, [op("a"), op("b")], "cpu", {})
    write_results(bad, [op("a", verdict="fail")], "cpu", {})
    assert cli_main(["compare", str(old), str(same)]) == 0
    assert "upgrade gate: passed" in capsys.readouterr().out
    assert cli_main(["compare", str(old), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "WORSE forward a fp32: pass -> fail" in out and "backend b disappeared" in out
    (tmp_path / "junk.json").write_text("{}")
    assert cli_main(["compare", str(old), str(tmp_path / "junk.json")]) == 2
    assert "not an attnparity results.json" in capsys.readouterr().err


ARGS = ("--attn-backends=naive,sdpa-math,vendor-degradable", "--attn-dtypes=fp32", "--attn-examples=2",
        "-p", "no:cacheprovider")


def test_gate_fails_the_run_on_a_degraded_upgrade(matrix_project, tmp_path, monkeypatch):
    before = matrix_project.runpytest(*ARGS, f"--attn-report={tmp_path / 'before'}")
    assert before.ret == 0
    baseline = tmp_path / "before" / "results.json"

    same = matrix_project.runpytest(*ARGS, f"--attn-compare={baseline}")
    assert same.ret == 0
    same.stdout.fnmatch_lines(["*attnparity upgrade gate: passed*", "compared 3 cells with *: 0 worse*"])

    monkeypatch.setenv("ATTN_DEGRADE", "1")
    after = matrix_project.runpytest("--attn-backends=naive,vendor-degradable", "--attn-dtypes=fp32",
                                     "--attn-examples=2", "-p", "no:cacheprovider", f"--attn-compare={baseline}",
                                     f"--attn-report={tmp_path / 'after'}")
    assert after.ret == 1
    after.stdout.fnmatch_lines(["*attnparity upgrade gate: FAILED*",
                                "compared 2 cells with *: 3 worse*",
                                "*WORSE sdpa-math: backend sdpa-math disappeared*",
                                "*WORSE forward vendor-degradable fp32: pass -> fail: *",
                                "*WORSE forward vendor-degradable fp32: error ratio *"])
    html = (tmp_path / "after" / "index.html").read_text()
    assert "Upgrade gate:" in html and "backend sdpa-math disappeared" in html
    assert json.loads((tmp_path / "after" / "comparison.json").read_text())["failed"] is True


def test_gate_alone_fails_an_otherwise_green_run(matrix_project, tmp_path):
    """The gate's own failure: every item passes, yet a backend of the baseline went missing -> exit 1."""
    baseline = write_results(tmp_path / "old.json", [op("naive", ratio=1.0), op("sdpa-math", ratio=1.0)], "cpu", {})
    after = matrix_project.runpytest("--attn-backends=naive", "--attn-dtypes=fp32", "--attn-examples=2",
                                     f"--attn-compare={baseline}")
    after.stdout.fnmatch_lines(["*1 passed*"])
    after.stdout.fnmatch_lines(["*WORSE sdpa-math: backend sdpa-math disappeared*"])
    assert after.ret == 1


def test_unreadable_baseline_is_a_usage_error(matrix_project, tmp_path):
    result = matrix_project.runpytest("--attn-backends=naive", f"--attn-compare={tmp_path / 'nope.json'}")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*nope.json: no such results file*"])


@pytest.mark.parametrize("old, new, worse, listed", [
    ("pass", "xfail", False, True),   # a known finding met: listed, accepted by its ledger entry
    ("xfail", "xfail", False, False),  # the same known finding: nothing to say
    ("xfail", "pass", False, True),   # fixed upstream
    ("xfail", "fail", True, True),    # a known finding, and now something else too
    ("fail", "xfail", False, True),   # the failure is now recorded in the ledger
    ("fail", "error", False, False),  # one failure class: still failing, not worse
    ("error", "fail", False, False),
])
def test_verdict_changes_through_the_known_findings(old, new, worse, listed):
    comparison = compare_records([op("a", verdict=old)], [op("a", verdict=new, message="why\nmore")])
    verdicts = [d for d in comparison.differences if d.what == "verdict"]
    assert bool(verdicts) == listed
    assert comparison.failed == worse


def test_a_cell_that_did_not_run_before_and_fails_now_is_worse():
    old = [op("a"), op("b", verdict="skip")]
    new = [op("a"), op("b", verdict="fail", message="broken\nmore"), op("c", verdict="fail"), op("d")]
    comparison = compare_records(old, new)
    assert sorted(d.label for d in comparison.worse) == ["forward b fp32", "forward c fp32"]
    assert [d.label for d in comparison.better] == ["forward d fp32"]  # a new passing cell: listed only
    assert comparison.failed


def test_cli_compare_formats_are_full_width(tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    slow = dict(device="cpu", extra={"device_label": "CPU (1 torch thread)"})
    write_results(old, [op("a"), ResultRecord("perf", "perf:sdxl-self-4096-10x64-b1", "a-kernel-with-a-long-name",
                                              "fp16", "pass", metrics={"ms": 10.0}, **slow)], "cpu", {})
    write_results(new, [op("a", verdict="fail", message="NaN | in row 3\nsecond line"),
                        ResultRecord("perf", "perf:sdxl-self-4096-10x64-b1", "a-kernel-with-a-long-name", "fp16",
                                     "pass", metrics={"ms": 30.0}, **slow)], "cpu", {})
    assert cli_main(["compare", str(old), str(new), "--format", "text"]) == 1
    text = capsys.readouterr().out.splitlines()
    timing = next(line for line in text if "a-kernel-with-a-long-name" in line)
    assert len(timing) > 100 and timing.endswith("on CPU (1 torch thread)")  # never cut: the ms stay
    assert text[-1] == "upgrade gate: FAILED"
    assert cli_main(["compare", str(old), str(new), "--format", "markdown"]) == 1
    md = capsys.readouterr().out
    assert md.startswith("### attnparity upgrade gate: FAILED") and "#### Worse (2)" in md
    assert "| forward a fp32 | verdict | pass -> fail: NaN \\| in row 3 |" in md
    assert cli_main(["compare", str(old), str(new), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["failed"] is True and data["worse"] == 2 and len(data["differences"]) == 2
    with pytest.raises(SystemExit):
        cli_main(["compare", str(old), str(new), "--format", "html"])


def closest_cases(path):
    """What each cell saw: its verdict and its worst case's errors (they follow from the draws)."""
    return sorted((r["backend"], r["check"], r["verdict"], json.dumps(r["metrics"], sort_keys=True))
                  for r in json.loads(path.read_text())["records"])


def test_the_upgrade_recipe_as_copied_draws_the_baseline_cases(matrix_project, tmp_path, monkeypatch):
    # The README's recipe without CI=1 or a seed: the baseline keeps the seed it drew with, the
    # compare run reuses it, so both judge the same cases and nothing moves.
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    args = ("--attn-backends=naive,sdpa-math", "--attn-dtypes=fp32", "--attn-examples=4", "-k", "forward or masked",
            "-p", "no:cacheprovider")
    assert matrix_project.runpytest(*args, f"--attn-report={tmp_path / 'before'}").ret == 0
    baseline = tmp_path / "before" / "results.json"
    draws = json.loads(baseline.read_text())["draws"]
    assert draws["seed"] is not None and draws["examples"] == 4 and draws["derandomize"] is False
    after = matrix_project.runpytest(*args[1:], "--attn-backends=naive,sdpa-math", f"--attn-compare={baseline}",
                                     f"--attn-report={tmp_path / 'after'}")
    assert after.ret == 0
    after.stdout.fnmatch_lines([f"*hypothesis attnparity (4 examples, seed {draws['seed']}; seed reused from *",
                                "compared * cells with *: 0 worse, 0 better or new"])
    assert closest_cases(tmp_path / "after" / "results.json") == closest_cases(baseline)
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("### attnparity on cpu") == 2 and "### attnparity upgrade gate: passed" in summary
    # the same run with a seed of its own draws other cases: what the reuse above prevents
    other = matrix_project.runpytest(*args, f"--attn-seed={draws['seed'] + 1}", f"--attn-report={tmp_path / 'other'}")
    assert other.ret == 0 and closest_cases(tmp_path / "other" / "results.json") != closest_cases(baseline)


def test_draws_reuse_the_baseline_unless_the_user_set_them(monkeypatch):
    from dataclasses import replace

    from attnparity.options import Options
    from attnparity.session import RUN_SEED_ENV, resolve_draws

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(RUN_SEED_ENV, raising=False)
    base = {"seed": 5, "examples": 7, "derandomize": False, "profile": None}
    taken = resolve_draws(Options(), frozenset(), base, "old.json")
    assert (taken.seed, taken.examples, taken.reused, taken.picked) == (5, 7, ("seed", "examples"), False)
    own = resolve_draws(replace(Options(), seed=9), frozenset({"seed"}), base, "old.json")
    assert (own.seed, own.examples, own.reused) == (9, 7, ("examples",))
    derandomized = resolve_draws(Options(), frozenset(), {**base, "seed": None, "derandomize": True}, "old.json")
    assert derandomized.derandomize and derandomized.seed is None and not derandomized.picked
    monkeypatch.setenv("CI", "1")  # the user's CI: derandomized, and the baseline's seed still repeats its draws
    assert resolve_draws(Options(), frozenset(), base, "old.json").reused == ("seed", "examples")
    monkeypatch.delenv("CI")
    picked = resolve_draws(Options(), frozenset(), None)
    assert picked.picked and picked.shared and picked.seed is not None and not picked.reused
    worker = resolve_draws(Options(), frozenset(), None)  # an xdist worker started after it: the same seed
    assert worker.seed == picked.seed and not worker.shared
