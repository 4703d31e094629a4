"""Zero false alarms: every correct backend available on this machine passes the default suite, seed
after seed. The short version runs in CI; the 20-seed version is marked slow.

Known upstream findings are kept apart rather than hidden: the run applies the built-in ledger
(read by tests/known.py too), which explains a failure only on the cases the check ran and within
the size, tensors or rows each entry bounds, so those cells are xfails and any other failure fails
here. test_known_upstream_finding asserts torch's CPU flash finfo.min finding still fails that way,
so a torch that fixes it shows.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from known import CORRECT, CORRECT_CI, FALSE_ALARM_SEEDS, LEDGER

from attnparity.backends.registry import all_backends


def available(names: tuple[str, ...]) -> list[str]:
    registry = all_backends()
    return [n for n in names if n in registry and registry[n].unavailable_reason() is None]


def run_seed(pytester: pytest.Pytester, seed: int, backends: list[str], dtypes: str) -> list[str]:
    # Op-level and semantic items: pipeline false alarms are test_pipelines' business.
    result = pytester.inline_run("-p", "no:cacheprovider", "-m", "attn_op", f"--attn-backends={','.join(backends)}",
                                 f"--attn-dtypes={dtypes}", f"--attn-seed={seed}")
    reports = result.getreports("pytest_runtest_logreport")
    assert sum(r.passed for r in reports if r.when == "call") > 0, "no item ran: nothing was shown"
    # The run applied the built-in ledger itself (failures it explains are xfails): what fails is new.
    return [f"{r.nodeid}:\n{r.longreprtext[:1500]}" for r in reports if r.failed]


#: The backends the built-in ledger names (its entries name backends exactly).
LEDGER_BACKENDS = sorted({g for f in LEDGER.findings for g in f.backends})


def test_correct_backends_pass(pytester: pytest.Pytester) -> None:
    assert not run_seed(pytester, 1, available(CORRECT_CI), "fp32,fp16,bf16")


@pytest.mark.slow
@pytest.mark.parametrize("seed", FALSE_ALARM_SEEDS)
def test_correct_backends_pass_every_seed(pytester: pytest.Pytester, seed: int) -> None:
    assert not run_seed(pytester, seed, available(CORRECT), "fp32,fp16,bf16")


@pytest.mark.slow
@pytest.mark.parametrize("seed", FALSE_ALARM_SEEDS)
@pytest.mark.parametrize("backend", LEDGER_BACKENDS)
def test_ledger_backends_fail_only_as_the_ledger_says_every_seed(pytester: pytest.Pytester, backend: str,
                                                                 seed: int) -> None:
    """Each built-in entry on every op-level check of its backends, not only in the cells where it was
    found: with random draws a finding's bug shows wherever a check calls the backend on its cases,
    and every failure there must be one the ledger explains (a bound it sets too tight, or a check it
    leaves out without reason, is a red cell here). diffusers:flex is not a correct backend: its
    failures must all be ledgered ones. One backend per item, so a compiled row (naive+compile,
    minutes per seed on a CPU) can be selected or left out with -k."""
    if not available((backend,)):
        pytest.skip(f"{backend} does not run here")
    assert not run_seed(pytester, seed, [backend], "fp32,fp16,bf16")


@pytest.mark.parametrize("case", [
    # finfo.min: the stored logsumexp absorbs log(Skv) entirely, P comes out Skv times too large
    dict(batch=1, heads=2, sq=9, skv=8, head_dim=8, masked_value="min", seed=3),
    # -1e4: ulp(1e4) ~ 1e-3 of the exponent; with one key naive math is exact, flash is 4x over bound
    dict(batch=2, heads=8, kv_heads=8, sq=64, skv=1, head_dim=64, masked_value="-1e4", scale=0.05, magnitude=3.0,
         layout="expanded", seed=7),
], ids=["finfo.min", "-1e4"])
def test_known_upstream_finding(case: dict) -> None:
    from known import known_finding

    from attnparity.backends.registry import get_backend
    from attnparity.check.cases import AttnCase
    from attnparity.check.parity import check_grads

    case = AttnCase(dtype="fp32", mask="dead-rows", mask_type="float", **case)
    flash = check_grads(get_backend("sdpa-flash"), case)
    math_kernel = check_grads(get_backend("sdpa-math"), case)
    assert math_kernel.passed, math_kernel.message
    assert not flash.passed, f"torch's CPU flash backward now handles {case.masked_value} rows: update the built-in ledger"
    assert known_finding("backward", "sdpa-flash", flash) is not None
    assert check_grads(get_backend("sdpa-flash"), case.with_(masked_value="-inf")).passed


def test_one_hot_softmax_over_many_queries_is_no_false_alarm() -> None:
    # dK of a one-hot softmax is exactly 0, and torch's flash kernel adds Sq roundings of its terms:
    # a floor of a few roundings of one term (the rule before) failed it from Sq ~ 2048 (bound use 1.01).
    from attnparity.backends.registry import get_backend
    from attnparity.check.cases import AttnCase
    from attnparity.check.parity import check_grads

    case = AttnCase(batch=1, heads=2, sq=2048, skv=2, head_dim=128, dtype="fp32", mask="padding", mask_type="float",
                    masked_value="min", magnitude=6.0, scale=1.0, seed=1)
    result = check_grads(get_backend("sdpa-flash"), case)
    assert result.passed and result.bound_use < 0.25, result.metrics


def _detection_script(monkeypatch: pytest.MonkeyPatch) -> Any:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "scripts" / "detection.py"
    spec = importlib.util.spec_from_file_location("detection_script", path)
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, script)  # dataclasses look their module up there
    spec.loader.exec_module(script)
    return script


def test_margin_study_tells_a_false_alarm_from_a_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    # docs/reports/detection.md's margins come from scripts/detection.py: it must report a wrong backend as a
    # failure nobody knows of, and a correct one as a pass below its bound.
    from mutants import mutant

    from attnparity.backends import registry

    script = _detection_script(monkeypatch)
    registry.register_backend(mutant("mutant-wrong-scale"), replace=True)
    try:
        rows = script.margins_for_seed(FALSE_ALARM_SEEDS.start, 5, ["sdpa-math", "mutant-wrong-scale"], ["fp32"])
    finally:
        registry.reset_registry()
    forward = {r["backend"]: r for r in rows if r["check"] == "forward"}
    assert forward["sdpa-math"]["verdict"] == "pass" and 0 < forward["sdpa-math"]["use"] < 1
    assert forward["mutant-wrong-scale"]["verdict"] == "fail" and forward["mutant-wrong-scale"]["known"] is None


def test_layer_study_skips_the_dtypes_a_mutant_does_not_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    # The layers section ran every mutant's pipelines in every dtype and stopped at the first mutant
    # that claims half precision only, losing the sections before it (2026-12-06).
    pytest.importorskip("diffusers")
    script = _detection_script(monkeypatch)
    cells = script.pipelines_for_mutant("mutant-int8-k-no-smoothing", ["fp32"])
    assert len(cells) == 5 and {c[2] for c in cells} == {"unclaimed"}


def test_detection_doc_keeps_one_copy_of_each_section_when_written_after_each(monkeypatch: pytest.MonkeyPatch,
                                                                              tmp_path: Any) -> None:
    # The script writes the document after every section; the hand-written preamble must not grow
    # with each write (the first version appended every section to it again).
    script = _detection_script(monkeypatch)
    out = tmp_path / "detection.md"
    out.write_text("# Detection\n\nhand text\n\n<!-- section: layers (x) -->\nold layers\n")
    preamble, sections = script._sections_of(out)
    for body in (["new detection"], ["newer detection"]):
        sections["detection"] = body
        script._write(out, preamble, sections)
    text = out.read_text()
    assert text.count("<!-- section: detection") == 1 and text.count("<!-- section: layers") == 1
    assert text.count("hand text") == 1 and "newer detection" in text and "old layers" in text
