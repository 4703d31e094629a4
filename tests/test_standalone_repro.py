"""Standalone repro files (check/standalone.py): their inputs are attnparity's to the bit, their
verdict is attnparity's, and the committed files of the built-in ledger (docs/findings/) still fail
on the versions here, pass with a correct backend swapped in, and are what the generator writes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from attnparity.backends.registry import get_backend  # noqa: E402
from attnparity.backends.source import source_of  # noqa: E402
from attnparity.check.cases import AttnCase  # noqa: E402
from attnparity.check.parity import check_parity  # noqa: E402
from attnparity.check.standalone import Repro, render  # noqa: E402
from attnparity.check.tolerance import Tolerances  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FINDINGS = ROOT / "docs" / "findings"
#: Runs a file with attnparity made unimportable: a repro that imported it would fail here.
NO_ATTNPARITY = "import runpy, sys; sys.modules['attnparity'] = None; runpy.run_path(sys.argv[1], run_name='__main__')"

CASES = [
    AttnCase(),
    AttnCase(batch=2, heads=4, kv_heads=2, sq=9, skv=13, head_dim=16, dtype="fp16", mask="random", mask_type="float",
             masked_value="min", mask_dims="BH", mask_layout="expanded", seed=3),
    AttnCase(batch=3, heads=2, kv_heads=1, sq=5, skv=7, head_dim=8, dtype="bf16", layout="expanded", mask="padding",
             pad_side="left", mask_dims="B1", mask_layout="sliced", seed=11),
    AttnCase(batch=2, heads=3, kv_heads=3, sq=6, skv=6, head_dim=9, layout="packed", mask="dead-rows",
             mask_type="float", mask_dims="1H", k_offset=4.0, k_outliers=2, v_scale=100.0, seed=5),
    AttnCase(batch=2, heads=2, kv_heads=1, sq=4, skv=11, head_dim=16, dtype="bf16", layout="packed", seed=7),
    AttnCase(batch=2, heads=2, kv_heads=2, sq=3, skv=5, head_dim=12, layout="transposed", mask="random",
             mask_dims="", causal=None, magnitude=3.0, scale=0.5, seed=13),
    AttnCase(batch=1, heads=2, kv_heads=1, sq=7, skv=3, head_dim=8, dtype="fp16", mask="random", mask_dims="H",
             mask_type="float", masked_value="-1e4", seed=17),
]


def _write(tmp_path: Path, repro: Repro, name: str = "repro.py") -> Path:
    path = tmp_path / name
    path.write_text(render(repro, get_backend(repro.backend)))
    return path


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(f"standalone_{path.stem.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their string annotations up there
    spec.loader.exec_module(module)
    return module


def _run(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_ATTNPARITY, str(path)], cwd=path.parent, capture_output=True,
                          text=True, timeout=600)


def _bits(t):
    if t.dtype == torch.bool:
        return t
    return t.contiguous().view({2: torch.int16, 4: torch.int32}[t.element_size()])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.short().replace(" ", "_"))
def test_file_builds_attnparitys_inputs_bit_for_bit(tmp_path, case):
    module = _import(_write(tmp_path, Repro("forward", "sdpa-math", case, "about", "cmd", {}, {})))
    ours, theirs = case.tensors(), module.make_inputs()
    for name, a, b in zip(("q", "k", "v", "attn_mask"), ours, theirs):
        if a is None:
            assert b is None, name
            continue
        assert (a.dtype, a.shape, a.stride(), a.storage_offset()) == (b.dtype, b.shape, b.stride(), b.storage_offset()), name
        assert torch.equal(_bits(a), _bits(b)), name
    # views of one buffer stay one buffer (packed q/k/v), stride-0 views stay stride 0 (expanded)
    same = [[x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr() for y in ours[:3]] for x in ours[:3]]
    assert same == [[x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr() for y in theirs[:3]]
                    for x in theirs[:3]]


FLEX_CAUSAL = AttnCase(heads=2, kv_heads=1, sq=17, skv=65, head_dim=64, causal="top-left", seed=1234)


@pytest.mark.parametrize("backend", ["diffusers:flex", "sdpa-math"])
def test_file_verdict_is_attnparitys(tmp_path, backend):
    """The same case judged in the file and by check_parity: a backend that drops is_causal fails
    both, a correct one passes both; the file's exit status says so."""
    pytest.importorskip("diffusers")
    expected = check_parity(get_backend(backend), FLEX_CAUSAL, Tolerances()).passed
    assert expected is (backend == "sdpa-math")
    path = _write(tmp_path, Repro("forward", backend, FLEX_CAUSAL, "about", "cmd", {}, {}))
    done = _run(path)
    assert done.returncode == (0 if expected else 1), done.stdout + done.stderr
    assert "baseline max-abs error" in done.stdout and "limit" in done.stdout


NATIVE_2D = AttnCase(batch=2, heads=1, kv_heads=1, sq=2, skv=3, head_dim=16, mask="random", mask_dims="", seed=4)
MATH_CASE = AttnCase(batch=2, heads=2, kv_heads=1, sq=5, skv=7, head_dim=16, mask="random", mask_type="float", seed=4)


@pytest.mark.parametrize(("backend", "check", "case"), [
    ("diffusers:native", "masked-rows", NATIVE_2D), ("diffusers:native", "kwargs", NATIVE_2D),
    ("diffusers:native", "batch", NATIVE_2D), ("sdpa-math", "masked-rows", MATH_CASE),
    ("sdpa-math", "deterministic", MATH_CASE), ("sdpa-math", "batch", MATH_CASE)])
def test_semantic_file_verdict_is_attnparitys(tmp_path, backend, check, case):
    """Each semantic check in a file runs its own logic on its own variant of the case: the file's
    exit status is attnparity's verdict (diffusers' native backend fails masked-rows and kwargs on a
    2-D mask with Sq = B, a ledger entry; SDPA's math kernel passes)."""
    from attnparity.check.repro import run_check

    pytest.importorskip("diffusers")
    result = run_check(check, get_backend(backend), case, Tolerances())
    assert result.skipped is None
    done = _run(_write(tmp_path, Repro(check, backend, case, "about", "cmd", {}, {})))
    assert done.returncode == (0 if result.passed else 1), done.stdout + done.stderr[-2000:]
    assert (backend, check) not in {("diffusers:native", "masked-rows"), ("diffusers:native", "kwargs")} or not result.passed
    assert backend != "sdpa-math" or result.passed


def test_source_of_drops_attnparity_imports_and_methods():
    from attnparity.check import parity

    text = source_of(parity.forward_pairs)
    assert "attnparity" not in text and "from ." not in text and "reference_forward_terms(" in text
    case_text = source_of(AttnCase, drop=("outside",))
    assert "def outside" not in case_text and "def tensors" in case_text


def test_cli_refuses_what_it_cannot_write(tmp_path, capsys):
    from attnparity.cli import main

    out = str(tmp_path / "x.py")
    assert main(["repro", "--standalone", "masked-kv", "sdpa-math", "{}", "-o", out]) == 2
    assert "not available" in capsys.readouterr().err
    assert main(["repro", "--standalone", "masked-rows", "diffusers:_native_flash", "{}", "-o", out]) == 2
    assert "claims no mask" in capsys.readouterr().err
    assert main(["repro", "--standalone", "forward", "no-such-backend", "{}", "-o", out]) == 2
    assert main(["repro", "--standalone", "forward", "sdpa-math", "{not json", "-o", out]) == 2
    masked_causal = '{"sq": 3, "skv": 5, "mask": "random", "causal": "top-left"}'
    assert main(["repro", "--standalone", "forward", "naive", masked_causal, "--call-as", "sdpa-math", "-o", out]) == 2
    assert "sdpa-math: torch SDPA refuses" in capsys.readouterr().err
    assert not Path(out).exists()
    assert main(["repro", "--standalone", "forward", "sdpa-math", '{"sq": 3, "skv": 5}', "-o", out]) == 0
    assert _run(Path(out)).returncode == 0


def test_failure_message_offers_the_standalone_command():
    pytest.importorskip("diffusers")
    result = check_parity(get_backend("diffusers:flex"), FLEX_CAUSAL, Tolerances())
    assert "reproduce: python -m attnparity.check.repro forward" in result.message
    assert "attnparity repro --standalone forward diffusers:flex '" in result.message


# -- the built-in ledger's committed files -------------------------------------------------------
def _ledger():
    from attnparity.results.known import BUILTIN, read_ledger

    return read_ledger(BUILTIN)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    from attnparity.results.findings_repro import write_ledger_repros

    pytest.importorskip("diffusers")
    out = tmp_path_factory.mktemp("findings")
    fixed = tmp_path_factory.mktemp("fixed")
    write_ledger_repros(out)
    # torch SDPA refuses a mask with is_causal: there naive math, which claims it, is the correct backend
    write_ledger_repros(fixed, call_as=("sdpa-math", "naive"))
    return out, fixed


def test_every_builtin_finding_has_a_committed_file():
    from attnparity.results.findings_repro import finding_repro

    ids = {f.id for f in _ledger()}
    assert all(finding_repro(f) is not None for f in _ledger())
    assert {p.stem for p in FINDINGS.glob("*.py")} == ids, \
        "regenerate with: attnparity repro --standalone --ledger -o docs/findings/"


def _installed_outside(finding) -> str | None:
    from attnparity.machine import versions

    if not finding.versions_match(versions()):
        return f"installed versions are outside the entry's {dict(finding.versions)}"
    return None


@pytest.mark.parametrize("finding", _ledger(), ids=lambda f: f.id)
def test_committed_file_is_what_the_generator_writes(regenerated, finding):
    committed = (FINDINGS / f"{finding.id}.py").read_text()
    module_versions = committed.split("GENERATED_WITH = ", 1)[1].splitlines()[0]
    now = (regenerated[0] / f"{finding.id}.py").read_text()
    if module_versions != now.split("GENERATED_WITH = ", 1)[1].splitlines()[0]:
        pytest.skip(f"committed with {module_versions}; other versions here")
    assert committed == now, "out of date: regenerate with attnparity repro --standalone --ledger -o docs/findings/"


@pytest.mark.parametrize("finding", _ledger(), ids=lambda f: f.id)
def test_committed_file_fails_while_the_bug_is_there(finding):
    why = _installed_outside(finding)
    if why:
        pytest.skip(why)
    done = _run(FINDINGS / f"{finding.id}.py")
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "FAIL: the bug reproduces" in done.stdout


@pytest.mark.parametrize("finding", _ledger(), ids=lambda f: f.id)
def test_file_passes_with_a_correct_backend_swapped_in(regenerated, finding):
    done = _run(regenerated[1] / f"{finding.id}.py")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "PASS" in done.stdout
