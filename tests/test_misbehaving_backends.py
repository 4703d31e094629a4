"""A vendor backend that crashes, hangs, returns NaN, the wrong shape or wrong numbers fails its own
cells only: the rest of the matrix and the report are still produced."""

from __future__ import annotations

import json
import time

from attn_pytester import matrix_project  # noqa: F401  (fixture)

BAD = ("vendor-crash", "vendor-nan", "vendor-shape", "vendor-scale")


def outcomes(result) -> dict[str, str]:
    """item -> passed/failed, from the run's "PASSED/FAILED attnparity::..." lines (-rA)."""
    seen = {}
    for line in result.outlines:
        for word in ("PASSED", "FAILED"):
            if line.startswith(word + " ") and "attnparity::" in line:
                seen[line.split("attnparity::")[1].split(" ")[0]] = word.lower()
    return seen


def test_each_bad_backend_fails_only_its_own_cells(matrix_project, tmp_path):
    result = matrix_project.runpytest(
        "--attn-backends=naive,sdpa-math," + ",".join(BAD), "--attn-dtypes=fp32,bf16", "--attn-examples=3",
        f"--attn-report={tmp_path / 'rep'}", "-p", "no:cacheprovider", "-rA")
    seen = outcomes(result)
    for good in ("naive", "sdpa-math"):
        for dtype in ("fp32", "bf16"):
            assert seen[f"forward[{good}-{dtype}]"] == "passed"
    for bad in BAD:
        for dtype in ("fp32", "bf16"):
            assert seen[f"forward[{bad}-{dtype}]"] == "failed", (bad, dtype)
    text = result.stdout.str()
    assert "vendor-crash raised RuntimeError: vendor kernel exploded" in text
    assert "NaN/Inf values where the fp64 reference is finite" in text
    assert "vendor-shape returned shape (1, 2, 16, 31), expected (1, 2, 16, 32)" in text
    records = json.loads((tmp_path / "rep" / "results.json").read_text())["records"]
    verdicts = {(r["backend"], r["dtype"]): r["verdict"] for r in records}
    assert len(records) == len(verdicts) == 2 * (2 + len(BAD))
    assert verdicts[("vendor-crash", "bf16")] == "error" and verdicts[("vendor-scale", "fp32")] == "fail"
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "vendor-shape returned shape" in html and "vendor kernel exploded" in html
    assert result.ret == 1


def test_hanging_backend_times_out_once_and_the_rest_runs(matrix_project, tmp_path):
    # In-process (the guard's abandoned thread); isolated, a hung worker is killed: test_isolation.py.
    start = time.perf_counter()
    result = matrix_project.runpytest(
        "--attn-backends=vendor-hang,naive", "--attn-dtypes=fp32,bf16", "--attn-examples=2", "--attn-timeout=3",
        "--attn-isolate=none",
        f"--attn-report={tmp_path / 'rep'}", "-p", "no:cacheprovider", "-rA")
    elapsed = time.perf_counter() - start
    seen = outcomes(result)
    assert seen == {"forward[vendor-hang-fp32]": "failed", "forward[vendor-hang-bf16]": "failed",
                    "forward[naive-fp32]": "passed", "forward[naive-bf16]": "passed"}
    text = result.stdout.str()
    assert "forward[vendor-hang-fp32] timed out after 3 s (attn_timeout)" in text
    # One timeout, not one per cell: the backend's second cell fails at once.
    assert "vendor-hang not run: it timed out in" in text
    assert elapsed < 15  # not the 60 s the hung call would take, nor a drain that waits for it
    assert (tmp_path / "rep" / "index.html").exists()


def test_timeout_must_not_be_negative(matrix_project):
    result = matrix_project.runpytest("--attn-backends=naive", "--attn-timeout=-1")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--attn-timeout=-1*must be >= 0*"])
