"""The known-findings ledger: a ledgered bug is a strict xfail that shows its reason, a second,
unledgered bug in the same cell still fails it, a finding that stopped reproducing fails with
"no longer reproduces", and findings are scoped by version. Plus --attn-compare: the run fails only
where the gate finds a cell worse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attn_pytester import matrix_project  # noqa: F401  (fixture)
from attn_pytester import records_of
from attnparity.check.cases import AttnCase
from attnparity.results.known import BUILTIN, LedgerError, load_ledger, read_ledger

CONFTEST = '''
from attnparity import Backend, Capabilities, register_backend
from attnparity.backends import registry as _registry
from attnparity.backends.naive import naive_attention

def one_bug(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # the ledgered bug: is_causal is dropped when no mask is given
    return naive_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal and attn_mask is not None, scale=scale)

def two_bugs(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # the same, and an unledgered one: additive float masks are ignored
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        attn_mask = None
    return one_bug(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)

import torch
NAMES = {"one-bug": one_bug, "two-bugs": two_bugs, "fixed": naive_attention}
for _name, _fn in NAMES.items():
    register_backend(Backend(_name, _fn, Capabilities(devices={"cpu"})), replace=True)

def pytest_unconfigure(config):
    for name in NAMES:
        _registry.unregister_backend(name)
'''

LEDGER = '''
[[finding]]
id = "drops-causal"
reason = "drops is_causal when no mask is given"
link = "https://example.org/issue/1"
backends = ["one-bug", "two-bugs", "fixed"]
checks = ["forward"]
checks_why = "these tests run the forward check alone"
versions = { torch = "%s" }
when = { causal = ["top-left", "bottom-right"], mask = "none" }
repro = [{ heads = 2, sq = 8, skv = 8, head_dim = 16, causal = "top-left", seed = 1 }]
'''

ARGS = ("--attn-dtypes=fp32", "--attn-examples=4", "-m", "attn_op", "-k", "forward", "-p", "no:cacheprovider",
        "--attn-known=none", "--attn-known=ledger.toml")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.path.joinpath("ledger.toml").write_text(LEDGER % ">=2.5")
    return pytester


def _by_backend(reprec: pytest.HookRecorder) -> dict[str, dict]:
    return {r["backend"]: r for r in records_of(reprec) if r["check"] == "forward"}


def test_ledgered_bug_is_a_strict_xfail_and_a_second_bug_still_fails(project: pytest.Pytester) -> None:
    reprec = project.inline_run("--attn-backends=one-bug,two-bugs,fixed", *ARGS)
    got = _by_backend(reprec)
    one, two, fixed = got["one-bug"], got["two-bugs"], got["fixed"]

    assert one["verdict"] == "xfail", one["message"]
    assert "known finding drops-causal" in one["message"] and "https://example.org/issue/1" in one["message"]
    assert one["extra"]["known"]["drops-causal"]["met"] >= 1

    # The ledger explains the causal failures, not the float-mask one: the search went on and found it.
    assert two["verdict"] == "fail", two["message"]
    case = AttnCase.from_dict(two["case"])
    assert case.mask != "none" and case.mask_type == "float", two["case"]
    assert "The ledger explains other failures of this cell, not this one" in two["message"]

    # A correct backend under the finding: its repro passes, so the entry is stale.
    assert fixed["verdict"] == "fail"
    assert "known finding drops-causal no longer reproduces" in fixed["message"]
    assert "Remove it from the ledger" in fixed["message"]

    passed, skipped, failed = reprec.listoutcomes()
    xfailed = [r for r in skipped if hasattr(r, "wasxfail")]
    assert [r.nodeid.split("::")[-1] for r in xfailed] == ["forward[one-bug-fp32]"]
    assert sorted(r.nodeid.split("::")[-1] for r in failed) == ["forward[fixed-fp32]", "forward[two-bugs-fp32]"]


def test_a_finding_outside_its_versions_explains_nothing(project: pytest.Pytester) -> None:
    project.path.joinpath("ledger.toml").write_text(LEDGER % "<1.0")
    reprec = project.inline_run("--attn-backends=one-bug,fixed", *ARGS)
    got = _by_backend(reprec)
    assert got["one-bug"]["verdict"] == "fail" and "known" not in got["one-bug"]["extra"]
    assert got["fixed"]["verdict"] == "pass"  # a finding that does not apply cannot go stale either


def test_without_the_ledger_the_bug_fails(project: pytest.Pytester) -> None:
    reprec = project.inline_run("--attn-backends=one-bug", *ARGS[:-2], "--attn-known=none")
    assert _by_backend(reprec)["one-bug"]["verdict"] == "fail"


def test_a_ledger_named_in_the_ini_file_is_found_from_a_subdirectory(project: pytest.Pytester,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # ini paths are relative to the ini file, as pytest's own "paths" ini values are
    project.makeini("[pytest]\nattn_known =\n    none\n    ledger.toml\n")
    monkeypatch.chdir(project.mkdir("sub"))
    reprec = project.inline_run("--attn-backends=one-bug", *ARGS[:-2])
    assert _by_backend(reprec)["one-bug"]["verdict"] == "xfail"


def test_the_kwargs_finding_matches_the_ignored_kwarg_not_the_case() -> None:
    """The kwargs check builds its own is_causal variant of a drawn case (masked or not): the finding
    matches what the failure says was ignored, and another ignored kwarg is not this finding."""
    from attnparity.check.parity import ParityResult

    ledger = load_ledger([], invocation_dir=Path("."))
    (finding,) = [f for f in ledger.findings if f.id == "diffusers-flex-drops-is-causal-kwarg"]
    masked = AttnCase(mask="padding", mask_type="bool")
    lost_causal = ParityResult("kwargs", "diffusers:flex", masked, False, ignored_kwargs=("is_causal",))
    lost_scale = ParityResult("kwargs", "diffusers:flex", masked, False, ignored_kwargs=("scale",))
    assert finding.explains(masked, lost_causal)
    assert not finding.explains(masked, lost_scale)


@pytest.mark.parametrize("text, says", [
    ("[[finding]]\nid = 'x'\n", "missing reason, backends"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nchecks=['forward']\n", "checks leaves out backward"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nwhen={sq={least=3}}\n", "a range table has min, max"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nwhen={mask={min=3}}\n", "when.mask.min = 3"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nwhen={tensors='dx'}\n", "when.tensors = 'dx'"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nrepro_checks=['pipeline']\n", "repro_checks 'pipeline' unknown"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nchecks=['forward']\nchecks_why='w'\ncolour='red'\n", "unknown keys colour"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nchecks=['forward']\nchecks_why='w'\nversions={torch='>>2'}\n",
     "not a PEP 440 specifier"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nchecks=['forward']\nchecks_why='w'\nwhen={colour='red'}\n",
     "neither AttnCase fields"),
    ("[[finding]\n", "not valid TOML"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nchecks=['forwards']\n", "checks 'forwards' unknown"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nchecks=['forward']\nchecks_why='w'\ndtypes=['float32']\n", "dtypes 'float32' unknown"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nchecks=['forward']\nchecks_why='w'\nwhen={mask='nonee'}\n", "when.mask = 'nonee'"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nchecks=['forward']\nchecks_why='w'\nrepro=[{heads='two'}]\n", "repro.heads = 'two' is not a int"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nchecks=['forward']\nchecks_why='w'\nwhen={mask='none'}\n"
     "repro=[{mask='random'}]\n", "outside the finding's own `when`"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nchecks=['pipeline']\nwhen={masked_value='min'}\n",
     "masked_value cannot be told from a call"),
    ("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nchecks=['pipeline']\nwhen={mask='padding'}\n",
     "mask = 'padding' cannot be told from a call"),
])
def test_a_bad_ledger_is_a_usage_error_that_says_why(pytester: pytest.Pytester, text: str, says: str) -> None:
    pytester.path.joinpath("bad.toml").write_text(text)
    result = pytester.runpytest("--attn-backends=naive", "--attn-known=bad.toml", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{says}*"])


PIPELINE_CONFTEST = CONFTEST.replace('NAMES = {', """
def cross_bug(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # the ledgered bug, and an unledgered one in the UNet's cross-attention (Sq != Skv): scale doubled
    if q.shape[-2] != k.shape[-2]:
        scale = 2.0 * (scale or q.shape[-1] ** -0.5)
    return one_bug(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)

NAMES = {"cross-bug": cross_bug, """)
PIPELINE_LEDGER = LEDGER.replace('checks = ["forward"]', 'checks = ["forward", "pipeline"]').replace(
    '"two-bugs", "fixed"]', '"cross-bug", "fixed"]')


def test_a_pipeline_cell_is_explained_only_when_the_finding_accounts_for_the_whole_image(
        pytester: pytest.Pytester) -> None:
    """sd15's text encoder (CLIP) attends causally without a mask: a backend dropping is_causal there
    moves the image. With the calls the finding explains sent to the reference, the image of the
    one-bug backend passes (xfail); the cross-bug backend's does not (its cross-attention is wrong
    too), so the finding cannot hide it."""
    pytester.makeconftest(PIPELINE_CONFTEST)
    pytester.path.joinpath("ledger.toml").write_text(PIPELINE_LEDGER % ">=2.5")
    reprec = pytester.inline_run("--attn-backends=one-bug,cross-bug,fixed", "--attn-dtypes=fp32", "-m", "attn_pipeline",
                                 "-k", "pipeline:sd15", "-p", "no:cacheprovider", "--attn-isolate=none",
                                 "--attn-known=none", "--attn-known=ledger.toml")
    got = {r["backend"]: r for r in records_of(reprec) if r["kind"] == "pipeline"}
    one, cross, fixed = got["one-bug"], got["cross-bug"], got["fixed"]
    assert one["verdict"] == "xfail", one["message"]
    assert one["metrics"]["ssim_ref"] < 0.999 <= one["metrics"]["ssim_ref_known_diverted"]
    assert one["extra"]["known_calls"]["drops-causal"] > 0 and "known finding drops-causal" in one["message"]
    assert cross["verdict"] == "fail" and "NOT explained by the ledger" in cross["message"], cross["message"]
    assert cross["metrics"]["ssim_ref_known_diverted"] < 0.999
    # a correct backend passes; its causal calls are counted, never held against it
    assert fixed["verdict"] == "pass" and fixed["extra"]["known_calls"]["drops-causal"] > 0, fixed["message"]
    # without the ledger the one-bug backend's image fails
    reprec = pytester.inline_run("--attn-backends=one-bug", "--attn-dtypes=fp32", "-m", "attn_pipeline",
                                 "-k", "pipeline:sd15", "-p", "no:cacheprovider", "--attn-isolate=none",
                                 "--attn-known=none")
    (alone,) = [r for r in records_of(reprec) if r["kind"] == "pipeline"]
    assert alone["verdict"] == "fail" and "known_calls" not in alone["extra"]
    # no golden for the device class yet: the cell stands on the attention-isolated half, which the
    # ledger explains as above; a missing golden that is required is never the ledger's: the cell
    # fails and says how to make it
    no_golden_args = ("--attn-backends=one-bug", "--attn-dtypes=fp32", "-m", "attn_pipeline", "-k", "pipeline:sd15",
                      "-p", "no:cacheprovider", "--attn-isolate=none", "--attn-known=none", "--attn-known=ledger.toml",
                      "--attn-golden-dir=empty")
    (no_golden,) = [r for r in records_of(pytester.inline_run(*no_golden_args)) if r["kind"] == "pipeline"]
    assert no_golden["verdict"] == "xfail" and "no golden yet" in no_golden["message"], no_golden["message"]
    assert "ssim_golden_known_diverted" not in no_golden["metrics"]
    reprec = pytester.inline_run(*no_golden_args, "--attn-golden-required")
    (required,) = [r for r in records_of(reprec) if r["kind"] == "pipeline"]
    assert required["verdict"] == "fail" and "no golden image" in required["message"], required["message"]


def test_missing_ledger_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--attn-backends=naive", "--attn-known=nope.toml", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*nope.toml: no such ledger file*"])


def test_builtin_ledger_findings_reproduce_here() -> None:
    """Each built-in finding's repro cases fail on this machine where its versions apply: the
    ledger is about bugs that exist, not remembered ones (the test fails when upstream fixes one)."""
    from attnparity.backends.registry import get_backend
    from attnparity.check.tolerance import Tolerances
    from attnparity.machine import versions
    from attnparity.suite.op import _check_fn

    installed = versions()
    ledger = load_ledger([], invocation_dir=Path("."))
    assert {f.id for f in ledger.findings} >= {"torch-cpu-flash-backward-finite-masked-rows",
                                                "diffusers-flex-drops-is-causal"}
    ran = 0
    for finding in ledger.findings:
        for pattern in finding.backends:
            try:
                backend = get_backend(pattern)
            except LookupError:
                continue
            if backend.unavailable_reason():
                continue
            for check in finding.repro_checks:
                for dtype in ("fp32", "fp16", "bf16"):
                    if not finding.applies(backend.name, check, dtype, "cpu", installed):
                        continue
                    for case in finding.repro_cases(dtype, "cpu"):
                        result = _check_fn(check)(backend, case, Tolerances())
                        if result.skipped:
                            continue
                        ran += 1
                        assert not result.passed, f"{finding.id}: {backend.name} {check} {dtype} repro passes now"
                        assert finding.explains(case, result), (f"{finding.id}: its own repro failure ({check} "
                                                                f"{dtype}) is outside its `when`: {result.message}")
    assert ran >= 6, "the built-in findings' repro cases did not run here"


def test_builtin_ledger_parses_and_names_its_links() -> None:
    findings = read_ledger(BUILTIN)
    assert findings and all(f.link and f.versions and f.repro for f in findings)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(BUILTIN.read_text())
    with pytest.raises(LedgerError, match="also in"):
        load_ledger([str(tmp_path / "a.toml")], invocation_dir=tmp_path)


def test_compare_fails_only_where_the_gate_finds_worse(matrix_project, tmp_path, monkeypatch) -> None:  # noqa: F811
    """--attn-compare: a cell failing in the baseline too is an unchanged failure (xfail, exit 0);
    a cell that newly fails makes the run exit 1."""
    args = ("--attn-backends=naive,vendor-scale,vendor-degradable", "--attn-dtypes=fp32", "--attn-examples=2",
            "-p", "no:cacheprovider")
    before = matrix_project.runpytest(*args, f"--attn-report={tmp_path / 'before'}")
    assert before.ret == 1  # vendor-scale has a real bug
    baseline = tmp_path / "before" / "results.json"

    same = matrix_project.runpytest(*args, f"--attn-compare={baseline}", "-rx")
    assert same.ret == 0, same.stdout.str()[-3000:]
    same.stdout.fnmatch_lines(["*attnparity upgrade gate: passed*",
                               "*XFAIL*forward[[]vendor-scale-fp32[]]*unchanged failure*"])

    monkeypatch.setenv("ATTN_DEGRADE", "1")
    worse = matrix_project.runpytest(*args, f"--attn-compare={baseline}", f"--attn-report={tmp_path / 'after'}")
    assert worse.ret == 1
    worse.stdout.fnmatch_lines(["*WORSE forward vendor-degradable fp32: pass -> fail*"])
    records = json.loads((tmp_path / "after" / "results.json").read_text())["records"]
    scale = next(r for r in records if r["backend"] == "vendor-scale")
    assert scale["verdict"] == "fail"  # the record keeps the truth; only the item's outcome is xfail


def _builtin(fid: str):
    (finding,) = [f for f in load_ledger([], invocation_dir=Path(".")).findings if f.id == fid]
    return finding


def test_a_finding_applies_to_every_op_check_unless_it_says_why_not(tmp_path: Path) -> None:
    from attnparity.results.known import op_checks

    path = tmp_path / "l.toml"
    path.write_text("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\n")
    (wide,) = read_ledger(path)
    assert wide.checks == op_checks() and wide.repro_checks == ("forward",)
    assert all(wide.applies("a", c, "fp32", "cpu", {}) for c in op_checks())
    assert not wide.applies("a", "pipeline:sd15", "fp32", "cpu", {})  # pipelines only when named
    path.write_text("[[finding]]\nid='x'\nreason='r'\nbackends=['a']\nchecks=['backward']\nchecks_why='only there'\n")
    (narrow,) = read_ledger(path)
    assert narrow.applies("a", "backward", "fp32", "cpu", {}) and not narrow.applies("a", "batch", "fp32", "cpu", {})


def test_the_batch_check_is_explained_by_the_variant_it_ran() -> None:
    """diffusers native reads a 2-D mask as key padding when Sq = B. The batch check runs a drawn
    B = 2, Sq = 3 case at B = 3: that variant meets the finding, the drawn case does not."""
    pytest.importorskip("diffusers")
    from attnparity.backends.registry import get_backend
    from attnparity.check.semantics import run_semantic
    from attnparity.check.tolerance import Tolerances

    finding = _builtin("diffusers-native-2d-mask-as-key-padding-when-sq-equals-batch")
    drawn = AttnCase(batch=2, heads=2, kv_heads=2, sq=3, skv=5, head_dim=16, dtype="fp16", mask="random", mask_dims="")
    result = run_semantic("batch", get_backend("diffusers:native"), drawn, Tolerances())
    assert not result.passed, "the upstream bug no longer shows in the batch check"
    assert not finding.explains(drawn)  # the drawn case alone does not meet it ...
    assert finding.explains(drawn, result)  # ... the full batch of 3 the check ran does
    # a case whose variants miss Sq = B stays unexplained even if the check failed
    other = drawn.with_(sq=4)
    assert not finding.explains(other, result.__class__("batch", "diffusers:native", other.with_(batch=3), False,
                                                        calls=((other.with_(batch=3), other.with_(batch=1)),)))


def test_failure_bounds_of_the_dq_overflow_finding() -> None:
    from attnparity.check.parity import ParityResult

    finding = _builtin("torch-cpu-flash-backward-fp16-dq-overflow")
    long = AttnCase(sq=1189, skv=1101, head_dim=8, dtype="fp16", v_scale=100.0, scale=1.0)

    def failed(case: AttnCase, *classes: str) -> ParityResult:
        return ParityResult("backward", "sdpa-flash", case, False, failure_classes=classes,
                            metrics={"bound_use": float("inf")})

    assert finding.explains(long, failed(long, "dq:nonfinite"))
    assert not finding.explains(long, failed(long, "dq:nonfinite", "dv:bound"))  # a wrong dV is not about dQ
    assert not finding.explains(long, failed(long, "dq:bound"))  # finite: not the overflow
    short = long.with_(sq=200, skv=150)
    assert not finding.explains(short, failed(short, "dq:nonfinite"))  # needs Sq and Skv above 1000


def test_the_masked_rows_finding_explains_only_what_the_masked_rows_cause() -> None:
    """torch's CPU flash backward is wrong on rows fully masked by finfo.min. A kernel that is also
    wrong elsewhere (dV 1 % large everywhere) or NaN is not that finding."""
    import torch

    from attnparity import Backend
    from attnparity.backends.registry import get_backend
    from attnparity.check.parity import check_grads

    finding = _builtin("torch-cpu-flash-backward-finite-masked-rows")
    flash = get_backend("sdpa-flash")
    case = AttnCase(batch=1, heads=2, kv_heads=1, sq=9, skv=8, head_dim=8, dtype="fp32", mask="dead-rows",
                    mask_type="float", masked_value="min", seed=3)
    known = check_grads(flash, case)
    assert not known.passed and finding.explains(case, known), known.metrics

    def dv_too_large(q, k, v, **kw):  # the same forward; dV scaled by 1.01
        return flash.fn(q, k, v + 0.01 * (v - v.detach()), **kw)

    def nan_dq(q, k, v, **kw):  # the same forward; NaN in dQ
        return flash.fn(q + (q - q.detach()) * torch.tensor(float("nan")), k, v, **kw)

    for fn in (dv_too_large, nan_dq):
        wrong = check_grads(Backend("wrong", fn, flash.capabilities), case)
        assert not wrong.passed and not finding.explains(case, wrong), (fn.__name__, wrong.metrics)


NAN_CONFTEST = CONFTEST.replace('NAMES = {', '''
def nan_bug(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # is_causal without a mask gives NaN: not the finite drop the ledger describes
    out = naive_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)
    return out * float("nan") if is_causal and attn_mask is None else out

NAMES = {"nan-bug": nan_bug, ''')


def test_a_repro_case_that_fails_another_way_is_not_met(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(NAN_CONFTEST)
    ledger = LEDGER.replace('mask = "none" }', 'mask = "none", nonfinite = false }').replace('"fixed"]', '"fixed", "nan-bug"]')
    pytester.path.joinpath("ledger.toml").write_text(ledger % ">=2.5")
    got = _by_backend(pytester.inline_run("--attn-backends=nan-bug,one-bug", *ARGS))
    assert got["one-bug"]["verdict"] == "xfail", got["one-bug"]["message"]
    assert got["nan-bug"]["verdict"] == "fail" and "known" not in got["nan-bug"]["extra"], got["nan-bug"]["message"]


def test_every_builtin_entry_bounds_the_failure_it_explains() -> None:
    """Size, tensor, rows or kwarg: a `when` about the case alone would explain a NaN or any other bug
    on the same cases."""
    bounding = {"tensors", "masked_rows_only", "ignored_kwargs"}
    for f in read_ledger(BUILTIN):
        bounded = (bounding & set(f.when) or f.when.get("nonfinite") == (False,)
                   or f.when.get("error_size") == ("rounding",))
        assert bounded, f"{f.id}: `when` says nothing about the failure it explains"


@pytest.mark.parametrize("when, expected", [
    ("{ tensors = 'dq', v_scale = 100.0 }", ("backward",)),
    ("{ tensors = ['dq', 'dv'] }", ("backward",)),
    ("{ ignored_kwargs = 'is_causal' }", ("kwargs",)),
    ("{ tensors = ['out', 'dq'] }", ("forward",)),
    ("{ mask = 'none' }", ("forward",)),
])
def test_repros_run_by_default_where_the_findings_failure_can_show(tmp_path, when, expected):
    # a finding about dQ alone would pass its repro in the forward cell and report "no longer reproduces"
    path = tmp_path / "l.toml"
    path.write_text(f"[[finding]]\nid='x'\nreason='r'\nbackends=['naive']\nwhen = {when}\n")
    (finding,) = read_ledger(path)
    assert finding.repro_checks == expected
