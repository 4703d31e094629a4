"""The plugin as a user meets it: options, ini keys, node ids, selection, usage errors, listing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from attnparity.perf.shapes import quick_cpu

FAST = ["--attn-examples=2", "-p", "no:cacheprovider"]
#: pipeline items per (backend, dtype): the seeded pipelines of suite/pipelines.py
PIPELINES = 5
#: attn_perf items per backend × dtype on CPU (suite/perf.py: one per shape of the quick set)
PERF_ITEMS = len(quick_cpu())


def test_without_option_plugin_collects_nothing_and_imports_no_torch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="import sys\ndef test_x():\n    assert 'torch' not in sys.modules\n")
    # A fresh interpreter: the in-process pytester shares this process, where torch is loaded.
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=1)


def test_node_ids_are_short_and_selectable(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--attn-backends=naive", "--attn-dtypes=fp32", "--collect-only", "-q", *FAST)
    result.stdout.fnmatch_lines(["attnparity::forward[[]naive-fp32[]]", "attnparity::masked-rows[[]naive-fp32[]]"])
    assert "site-packages" not in result.stdout.str()
    selected = pytester.runpytest("--attn-backends=naive", "--attn-dtypes=fp32", "-k", "forward", *FAST)
    selected.assert_outcomes(passed=1, deselected=6 + PIPELINES + PERF_ITEMS)
    marked = pytester.runpytest("--attn-backends=naive", "--attn-dtypes=fp32", "-m",
                                "not attn_op and not attn_pipeline and not attn_perf", *FAST)
    marked.assert_outcomes(deselected=7 + PIPELINES + PERF_ITEMS)


def test_help_lists_every_option(pytester: pytest.Pytester) -> None:
    from attnparity.options import OPTIONS

    result = pytester.runpytest("--help")
    assert result.ret == 0, result.stderr.str()
    text = result.stdout.str()
    assert [o.flag for o in OPTIONS if o.flag not in text] == []
    assert "(0.25 = 25%)" in text  # a help's % shown as written, not taken as a format


def test_unknown_backend_is_a_usage_error_listing_known_names(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--attn-backends=naive,sdpa-flsh")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown attention backend 'sdpa-flsh'*Known backends:*sdpa-flash*"])


def test_globs_and_comma_lists_select(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--attn-backends=sdpa-*,naive", "--attn-dtypes=fp32", "--collect-only", "-q", *FAST)
    out = result.stdout.str()
    assert "forward[sdpa-math-fp32]" in out and "forward[sdpa-flash-fp32]" in out and "forward[naive-fp32]" in out
    assert "forward[sdpa-fp32]" not in out  # 'sdpa-*' does not match the auto row 'sdpa'
    bad = pytester.runpytest("--attn-backends=nothing-*")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR


def test_ini_keys_and_cli_winning(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nattn_backends = naive\nattn_dtypes = bf16\nattn_examples = 2\n")
    from_ini = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider")
    from_ini.stdout.fnmatch_lines(["attnparity::forward[[]naive-bf16[]]"])
    cli = pytester.runpytest("--attn-backends=sdpa-math", "--collect-only", "-q", "-p", "no:cacheprovider")
    out = cli.stdout.str()
    assert "forward[sdpa-math-bf16]" in out and "naive" not in out


def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nattn_backends = naive\nattn_examples = many\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*attn_examples*not an integer*"])


def test_unavailable_backends_are_skipped_rows_with_reasons(pytester: pytest.Pytester) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the efficient kernel is available")
    result = pytester.runpytest("--attn-backends=sdpa-efficient", "--attn-dtypes=fp16", "-rs", *FAST)
    result.assert_outcomes(skipped=7 + PIPELINES + PERF_ITEMS)
    result.stdout.fnmatch_lines(["*needs CUDA*"])


def test_attn_list_and_console_command(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--attn-list")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["naive*available*", "*backward=yes*", "*backends available here*"])
    cli = subprocess.run([sys.executable, "-m", "attnparity.cli", "backends"], capture_output=True, text=True)
    assert cli.returncode == 0 and "sdpa-flash" in cli.stdout


def test_header_names_versions_and_profile(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--attn-backends=naive", "--attn-dtypes=fp32", "--collect-only", *FAST)
    result.stdout.fnmatch_lines(["attnparity: torch *device*", "attnparity: 1 backends*hypothesis attnparity*"])


def test_n_auto_counts_workers_for_an_attnparity_run_only(pytester: pytest.Pytester,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """-n auto: a worker per usable core here (CPU); another suite, or PYTEST_XDIST_AUTO_NUM_WORKERS,
    keeps xdist's own count."""
    import os

    pytest.importorskip("xdist")
    from attnparity.plugin import pytest_xdist_auto_num_workers as auto

    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert auto(pytester.parseconfig("-n", "auto", "--attn-backends=naive", "--attn-device=cpu")) == 3
    assert auto(pytester.parseconfig("-n", "auto")) is None
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "5")
    assert auto(pytester.parseconfig("-n", "auto", "--attn-backends=naive", "--attn-device=cpu")) is None
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS")
    pytester.makeini("[pytest]\nattn_backends = naive\nattn_device = cpu\n")  # the ini key counts too
    assert auto(pytester.parseconfig("-n", "auto")) == 3


def test_header_says_how_xdist_splits_the_run(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    args = ("--attn-backends=naive", "--attn-dtypes=fp32", "--collect-only", *FAST)
    result = pytester.runpytest_subprocess(*args, "-n", "auto")
    cores = len(__import__("os").sched_getaffinity(0))
    result.stdout.fnmatch_lines([f"attnparity: pytest-xdist {cores} worker* (--dist load): perf items last, alone*"])
    mine = pytester.runpytest_subprocess(*args, "-n", "2", "--dist", "loadfile")
    mine.stdout.fnmatch_lines(["attnparity: pytest-xdist 2 workers (--dist loadfile): perf items beside other*"])


def test_user_hypothesis_profile_is_never_overridden(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "from hypothesis import settings\n"
        "settings.register_profile('mine', max_examples=3, deadline=None)\n"
        "settings.load_profile('mine')\n")
    # a subprocess: a hypothesis profile loaded in this process would govern every later in-process run
    result = pytester.runpytest_subprocess("--attn-backends=naive", "--attn-dtypes=fp32", "--collect-only",
                                           "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*hypothesis user profile 'mine'*"])


def test_conftest_register_backend_joins_the_matrix(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "from attnparity import Backend, Capabilities, register_backend\n"
        "from attnparity.backends.naive import naive_attention\n"
        "register_backend(Backend('mine', naive_attention, Capabilities()))\n")
    result = pytester.runpytest("--attn-backends=mine", "--attn-dtypes=fp32", "-k", "forward", *FAST)
    result.assert_outcomes(passed=1, deselected=6 + PIPELINES + PERF_ITEMS)


def test_a_refused_run_leaves_no_picked_seed_behind(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # the seed a run picks is left in the environment for its xdist workers; a run refused at the
    # start must not leave it to every later run of this process
    import os

    from attnparity.session import RUN_SEED_ENV

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(RUN_SEED_ENV, raising=False)
    result = pytester.runpytest_inprocess("--attn-backends=naive", "--attn-device=cuda:7", "--collect-only",
                                          "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert RUN_SEED_ENV not in os.environ
