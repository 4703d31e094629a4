"""Zero false alarms: every correct backend available on this machine passes the default suite, seed
after seed. The short version runs in CI; the 20-seed version is marked slow.

One known upstream finding is kept apart rather than hidden: torch's CPU flash kernel returns
wrong gradients when a whole row of an additive mask is finfo.min (docs/findings.md). Its cells are
asserted to fail exactly that way in test_known_upstream_finding, so a torch that fixes it shows.
"""

from __future__ import annotations

import pytest

from attnparity.backends.registry import all_backends

CORRECT = ["naive", "sdpa-math", "sdpa-flash", "sdpa"]
KNOWN_UPSTREAM = {("backward", "sdpa-flash"), ("backward", "sdpa")}


def available(names: list[str]) -> list[str]:
    registry = all_backends()
    return [n for n in names if n in registry and registry[n].unavailable_reason() is None]


def run_seed(pytester: pytest.Pytester, seed: int, backends: list[str], dtypes: str) -> list[str]:
    # Op-level and semantic items: pipeline false alarms are test_pipelines' business.
    reports = pytester.inline_run("-p", "no:cacheprovider", "-m", "attn_op", f"--attn-backends={','.join(backends)}",
                                  f"--attn-dtypes={dtypes}", f"--attn-seed={seed}").getreports("pytest_runtest_logreport")
    failed = []
    for r in reports:
        if not r.failed:
            continue
        check, rest = r.nodeid.removeprefix("attnparity::").split("[", 1)
        backend = rest.rsplit("-", 1)[0]
        known = (check, backend) in KNOWN_UPSTREAM and '"masked_value":"min"' in r.longreprtext
        if not known:
            failed.append(f"{r.nodeid}:\n{r.longreprtext[:1500]}")
    return failed


def test_correct_backends_pass(pytester: pytest.Pytester) -> None:
    assert not run_seed(pytester, 1, available(CORRECT), "fp32,fp16,bf16")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
def test_correct_backends_pass_every_seed(pytester: pytest.Pytester, seed: int) -> None:
    extra = [n for n in all_backends() if n.startswith(("flex", "diffusers:"))]
    assert not run_seed(pytester, 1000 + seed, available(CORRECT + extra), "fp32,fp16,bf16")


def test_known_upstream_finding() -> None:
    from attnparity.backends.registry import get_backend
    from attnparity.cases import AttnCase
    from attnparity.parity import check_grads

    case = AttnCase(batch=1, heads=2, sq=9, skv=8, head_dim=8, dtype="fp32", mask="dead-rows",
                    mask_type="float", masked_value="min", seed=3)
    flash = check_grads(get_backend("sdpa-flash"), case)
    math_kernel = check_grads(get_backend("sdpa-math"), case)
    assert math_kernel.passed, math_kernel.message
    assert not flash.passed, "torch's CPU flash backward now handles finfo.min rows: drop KNOWN_UPSTREAM"
    assert check_grads(get_backend("sdpa-flash"), case.with_(masked_value="-inf")).passed
