"""flash-attn 2/3, sageattention and xformers adapters against stand-ins of those libraries.

The stand-ins (tests/standins/) have each library's documented signature and layout and compute
with reference math, so these tests prove the adapters' layout conversion, causal alignment, GQA
mapping, mask handling and capability logic on a CPU machine. Setting a stand-in's SWAP_LAYOUT
(heads and sequence axes read the wrong way round) must make the same checks fail.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util

import pytest
import torch

from _backend_checks import STANDINS, assert_matches_reference, forget_standins
from attnparity.backends.base import Unsupported
from attnparity.check.cases import AttnCase


@pytest.fixture
def standins(monkeypatch):
    """The stand-in libraries on sys.path and a fake sm90 CUDA device (tensors stay on CPU)."""
    forget_standins()
    monkeypatch.syspath_prepend(str(STANDINS))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    yield
    forget_standins()


def _backend(module: str, name: str):
    family = importlib.import_module(f"attnparity.backends.{module}")
    return {b.name: b for b in family.backends()}[name]


# -- flash-attn ---------------------------------------------------------------------------------
FLASH_CASES = [
    AttnCase(batch=2, heads=4, kv_heads=4, sq=16, skv=16, head_dim=64, dtype="fp16"),
    AttnCase(batch=1, heads=6, kv_heads=2, sq=7, skv=19, head_dim=40, dtype="fp16", causal="bottom-right"),
    AttnCase(batch=2, heads=3, kv_heads=3, sq=19, skv=7, head_dim=24, dtype="fp16", causal="bottom-right"),
    AttnCase(batch=1, heads=4, kv_heads=1, sq=9, skv=33, head_dim=128, dtype="bf16", scale=0.25),
    AttnCase(batch=2, heads=2, kv_heads=2, sq=5, skv=11, head_dim=32, dtype="fp16", layout="transposed"),
]


@pytest.mark.parametrize("name", ["flash-attn2", "flash-attn3"])
@pytest.mark.parametrize("case", FLASH_CASES, ids=lambda c: c.short())
def test_flash_attn_matches_reference(standins, name, case):
    backend = _backend("flash_attn", name)
    assert backend.unavailable_reason() is None
    assert_matches_reference(backend, case)


@pytest.mark.parametrize("module,name", [("flash_attn", "flash-attn2"), ("flash_attn_interface", "flash-attn3")])
def test_flash_attn_swapped_layout_is_caught(standins, monkeypatch, module, name):
    monkeypatch.setattr(importlib.import_module(module), "SWAP_LAYOUT", True)
    with pytest.raises(AssertionError):
        assert_matches_reference(_backend("flash_attn", name), FLASH_CASES[0])


def test_flash_attn3_beta_tuple_return(standins, monkeypatch):
    monkeypatch.setattr(importlib.import_module("flash_attn_interface"), "RETURN_LSE", True)
    assert_matches_reference(_backend("flash_attn", "flash-attn3"), FLASH_CASES[1])


def test_flash_attn_claims():
    fa2, fa3 = _backend("flash_attn", "flash-attn2"), _backend("flash_attn", "flash-attn3")
    for b in (fa2, fa3):
        caps = b.capabilities
        assert caps.causal_mode == "bottom-right" and caps.gqa and not caps.masks
        assert caps.dtype_names == {"fp16", "bf16"} and caps.devices == {"cuda"}
        assert AttnCase(causal="top-left", dtype="fp16", device="cuda").outside(caps)
        assert AttnCase(mask="random", dtype="fp16", device="cuda").outside(caps)
        assert AttnCase(dtype="fp32", device="cuda").outside(caps)
        assert not caps.supports_head_dim(264)
    assert fa2.capabilities.supports_head_dim(203) and not fa3.capabilities.supports_head_dim(203)


def test_flash_attn_arch_reasons(standins, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert _backend("flash_attn", "flash-attn2").unavailable_reason() is None
    assert "sm90" in _backend("flash_attn", "flash-attn3").unavailable_reason()
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert "sm80" in _backend("flash_attn", "flash-attn2").unavailable_reason()


# -- sageattention ------------------------------------------------------------------------------
SAGE_CASES = [
    AttnCase(batch=2, heads=4, kv_heads=4, sq=16, skv=16, head_dim=64, dtype="fp16", causal="top-left"),
    AttnCase(batch=1, heads=6, kv_heads=2, sq=7, skv=19, head_dim=96, dtype="bf16"),
    AttnCase(batch=1, heads=4, kv_heads=1, sq=12, skv=12, head_dim=40, dtype="fp16", scale=0.3, layout="transposed"),
]


@pytest.mark.parametrize("case", SAGE_CASES, ids=lambda c: c.short())
def test_sage_matches_reference(standins, case):
    backend = _backend("sage", "sage")
    assert backend.unavailable_reason() is None
    assert_matches_reference(backend, case)


def test_sage_swapped_layout_is_caught(standins, monkeypatch):
    monkeypatch.setattr(importlib.import_module("sageattention"), "SWAP_LAYOUT", True)
    with pytest.raises(AssertionError):
        assert_matches_reference(_backend("sage", "sage"), SAGE_CASES[0])


def test_sage_claims():
    caps = _backend("sage", "sage").capabilities
    assert caps.dtype_names == {"fp16", "bf16"} and not caps.masks and caps.gqa
    assert caps.supports_head_dim(128) and not caps.supports_head_dim(160)
    assert AttnCase(sq=8, skv=16, causal="top-left", dtype="fp16", device="cuda").outside(caps)
    assert AttnCase(sq=16, skv=16, causal="top-left", dtype="fp16", device="cuda").outside(caps) is None


# -- xformers -----------------------------------------------------------------------------------
XF_MASKED = [
    AttnCase(batch=2, heads=4, kv_heads=4, sq=9, skv=5, head_dim=32, dtype="fp16", mask="random"),
    AttnCase(batch=2, heads=4, kv_heads=4, sq=6, skv=13, head_dim=16, dtype="fp32", mask="padding", mask_type="float"),
    AttnCase(batch=1, heads=6, kv_heads=2, sq=11, skv=21, head_dim=40, dtype="fp16", mask="dead-rows"),
    AttnCase(batch=1, heads=4, kv_heads=2, sq=7, skv=15, head_dim=24, dtype="bf16", mask="random", mask_type="float",
             causal="top-left", scale=0.2),
]
XF_PLAIN = [
    AttnCase(batch=2, heads=4, kv_heads=4, sq=16, skv=16, head_dim=64, dtype="fp16"),
    AttnCase(batch=1, heads=6, kv_heads=3, sq=19, skv=7, head_dim=40, dtype="fp16", causal="top-left"),
    AttnCase(batch=1, heads=4, kv_heads=1, sq=5, skv=17, head_dim=32, dtype="bf16", causal="top-left", layout="transposed"),
]


@pytest.mark.parametrize("name", ["xformers", "xformers-cutlass"])
@pytest.mark.parametrize("case", XF_MASKED + XF_PLAIN, ids=lambda c: c.short())
def test_xformers_matches_reference(standins, name, case):
    backend = _backend("xformers", name)
    assert backend.unavailable_reason() is None
    assert_matches_reference(backend, case)


@pytest.mark.parametrize("case", XF_PLAIN, ids=lambda c: c.short())
def test_xformers_flash_op_matches_reference(standins, case):
    assert_matches_reference(_backend("xformers", "xformers-flash"), case)


def test_xformers_rows_follow_the_installed_ops(standins):
    names = [b.name for b in importlib.import_module("attnparity.backends.xformers").backends()]
    assert names == ["xformers", "xformers-cutlass", "xformers-flash"]  # what the stand-in ships


def test_xformers_claims_come_from_the_op(standins):
    cutlass = _backend("xformers", "xformers-cutlass").capabilities
    flash = _backend("xformers", "xformers-flash").capabilities
    assert cutlass.masks == {"bool", "float"} and cutlass.dtype_names == {"fp32", "fp16", "bf16"}
    assert not cutlass.deterministic and cutlass.backward and cutlass.causal_mode == "top-left"
    assert not flash.masks and flash.dtype_names == {"fp16", "bf16"} and flash.gqa
    assert AttnCase(mask="random", dtype="fp16", device="cuda").outside(flash)
    assert not flash.supports_head_dim(257)


def test_xformers_bias_alignment_is_needed(standins):
    """The stand-in refuses an unaligned bias as xformers does; the adapter's padded bias passes."""
    fmha = importlib.import_module("xformers.ops.fmha")
    q = torch.randn(1, 3, 2, 8, dtype=torch.float16)
    k = torch.randn(1, 5, 2, 8, dtype=torch.float16)
    with pytest.raises(ValueError, match="stride"):
        fmha.memory_efficient_attention_forward(q, k, k, torch.zeros(1, 2, 3, 5, dtype=torch.float16),
                                                op=fmha.cutlass.FwOp)
    assert_matches_reference(_backend("xformers", "xformers-cutlass"), XF_MASKED[0])  # Skv = 5


def test_xformers_swapped_layout_is_caught(standins, monkeypatch):
    monkeypatch.setattr(importlib.import_module("xformers.ops.fmha.common").AttentionOpBase, "SWAP_LAYOUT", True)
    with pytest.raises(AssertionError):
        assert_matches_reference(_backend("xformers", "xformers-cutlass"), XF_PLAIN[0])


def test_xformers_arch_reason(standins, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert "sm80" in _backend("xformers", "xformers-flash").unavailable_reason()
    assert _backend("xformers", "xformers-cutlass").unavailable_reason() is None


# -- availability on this machine ---------------------------------------------------------------
def test_reasons_with_libraries_but_no_cuda(standins, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for module, name in [("flash_attn", "flash-attn2"), ("flash_attn", "flash-attn3"), ("sage", "sage"),
                         ("xformers", "xformers"), ("xformers", "xformers-cutlass")]:
        reason = _backend(module, name).unavailable_reason()
        assert reason and "needs CUDA" in reason, (name, reason)


def test_reasons_without_the_libraries():
    forget_standins()
    if torch.cuda.is_available():
        pytest.skip("the reasons below are those of a machine without these libraries and GPU")
    for module, name, words in [("flash_attn", "flash-attn2", "flash-attn not installed"),
                                ("flash_attn", "flash-attn3", "not installed"),
                                ("sage", "sage", "sageattention not installed"),
                                ("xformers", "xformers", "xformers not installed"),
                                ("xformers", "xformers-cutlass", "xformers not installed")]:
        if importlib.util.find_spec({"flash-attn2": "flash_attn", "flash-attn3": "flash_attn_interface",
                                     "sage": "sageattention"}.get(name, "xformers")):
            continue  # installed here after all: its reason is about CUDA, covered above
        reason = _backend(module, name).unavailable_reason()
        assert reason and words in reason, (name, reason)


# -- torch SDPA: claims asked of torch's own checks ---------------------------------------------
@pytest.fixture
def torch_checks(monkeypatch):
    """A fake GPU whose torch answers can_use_*_attention like tests/standins/torch_sdp_checks.py;
    the probe tensors stay on CPU."""
    import sys

    from attnparity.backends import sdpa

    monkeypatch.syspath_prepend(str(STANDINS))
    checks = importlib.import_module("torch_sdp_checks")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    for name in ("can_use_flash_attention", "can_use_efficient_attention", "can_use_cudnn_attention"):
        monkeypatch.setattr(torch.backends.cuda, name, getattr(checks, name))
    monkeypatch.setattr(sdpa, "probe_tensors", lambda case: case.with_(device="cpu").tensors())
    sdpa._asked.cache_clear()
    yield sdpa
    sdpa._asked.cache_clear()
    sys.modules.pop("torch_sdp_checks", None)


def test_sdpa_efficient_does_not_claim_gqa(torch_checks):
    """torch's memory-efficient kernel refuses GQA; claiming it made the first GQA case a contract
    violation on a GPU. Now the field says no, and torch's own check says why."""
    from attnparity.check.parity import check_parity
    from attnparity.check.strategies import fit

    backend = _backend("sdpa", "sdpa-efficient")
    gqa = AttnCase(batch=1, heads=4, kv_heads=2, sq=8, skv=8, head_dim=64, dtype="fp16", device="cuda")
    assert not backend.capabilities.gqa and "GQA" in gqa.outside(backend.capabilities)
    refusal = backend.capabilities.constraint(gqa)  # the check torch itself runs
    assert "can_use_efficient_attention" in refusal and "number of heads" in refusal
    result = check_parity(backend, gqa)
    assert result.passed and result.skipped  # not run, not failed: the search goes on
    assert fit(gqa, backend.capabilities) == gqa.with_(kv_heads=4)  # corpus cases keep running without GQA
    assert gqa.with_(kv_heads=4).outside(backend.capabilities) is None


def test_sdpa_fused_claims_follow_torch(torch_checks):
    flash, cudnn = _backend("sdpa", "sdpa-flash"), _backend("sdpa", "sdpa-cudnn")
    base = AttnCase(batch=1, heads=2, kv_heads=2, sq=8, skv=8, head_dim=64, dtype="fp16", device="cuda")
    assert base.outside(flash.capabilities) is None and base.outside(cudnn.capabilities) is None
    assert "non-null attn_mask" in base.with_(mask="padding").outside(flash.capabilities)
    assert "seqlen_q != seqlen_k" in base.with_(sq=4, causal="top-left").outside(flash.capabilities)
    assert "multiple of 8" in cudnn.capabilities.constraint(base.with_(head_dim=76))  # torch says why too
    # GQA is a claim of flash (torch supports it there): asked, and taken.
    assert base.with_(heads=4, kv_heads=1).outside(flash.capabilities) is None


def test_sdpa_backward_refusal_is_asked_with_grads(torch_checks):
    """sdpa-flash claims backward, so a case is claimed only where torch takes it with inputs that
    require grad too (sm86: no training at head_dim > 192); forward alone would take it."""
    case = AttnCase(batch=1, heads=2, kv_heads=2, sq=8, skv=8, head_dim=200, dtype="bf16", device="cuda")
    refusal = _backend("sdpa", "sdpa-flash").capabilities.constraint(case)
    assert "(with grads)" in refusal and "head_dim" in refusal
    assert torch_checks._kernel_rules("FLASH_ATTENTION", backward=False)(case) is None


def test_sdpa_claims_without_torch_answering(monkeypatch):
    """A GPU whose torch lacks the checks: the rules read from sdp_utils.cpp stand in."""
    from attnparity.backends import sdpa

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delattr(torch.backends.cuda, "can_use_efficient_attention")
    monkeypatch.delattr(torch.backends.cuda, "can_use_cudnn_attention")
    gqa = AttnCase(heads=4, kv_heads=2, dtype="fp16", device="cuda")
    assert "GQA" in sdpa._kernel_rules("EFFICIENT_ATTENTION")(gqa)
    assert "Sq != Skv" in sdpa._kernel_rules("CUDNN_ATTENTION")(gqa.with_(kv_heads=4, sq=4, causal="top-left"))
    # On CPU nothing is asked: math and flash take every case the matrix draws.
    assert sdpa._kernel_rules("FLASH_ATTENTION")(gqa.with_(device="cpu", mask="random")) is None


def test_sdpa_real_torch_params_on_this_machine():
    """SDPAParams of this torch takes the arguments in the order torch_refusal passes them; on a
    CPU build the check answers False, which is why the rule asks only where a GPU is present."""
    from attnparity.backends import sdpa

    case = AttnCase(heads=4, kv_heads=2, sq=8, skv=8, head_dim=16, dtype="fp16")
    refusal = sdpa.torch_refusal("EFFICIENT_ATTENTION", case, backward=True)
    assert refusal is None or "can_use_efficient_attention" in refusal
    if not torch.cuda.is_available():
        assert refusal and not sdpa._torch_answers("EFFICIENT_ATTENTION")


def test_sdpa_pinned_kernel_refusal_is_unsupported():
    """What torch refuses at call time is Unsupported (the harness fails it only where claimed)."""
    if torch.cuda.is_available():
        pytest.skip("the efficient kernel runs on this machine")
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(Unsupported, match="EFFICIENT_ATTENTION"):
        _backend("sdpa", "sdpa-efficient")(q, q, q)


# -- xformers gradients go through the op pairs that support autograd ---------------------------
def _on_cpu(backend):
    """The backend with its claims kept but CPU added (the stand-ins run on CPU tensors)."""
    import dataclasses

    caps = dataclasses.replace(backend.capabilities, devices={*backend.capabilities.devices, "cpu"})
    return dataclasses.replace(backend, capabilities=caps)


XF_GRAD = [
    AttnCase(batch=2, heads=4, kv_heads=4, sq=9, skv=13, head_dim=32, dtype="fp32"),
    AttnCase(batch=1, heads=6, kv_heads=2, sq=11, skv=7, head_dim=16, dtype="fp32", causal="top-left"),
    AttnCase(batch=2, heads=4, kv_heads=2, sq=6, skv=10, head_dim=24, dtype="fp32", mask="padding", mask_type="float"),
]


@pytest.mark.parametrize("name", ["xformers", "xformers-cutlass"])
@pytest.mark.parametrize("case", XF_GRAD, ids=lambda c: c.short())
def test_xformers_gradients_match_reference(standins, name, case):
    from attnparity.check.parity import check_grads

    backend = _on_cpu(_backend("xformers", name))
    assert backend.capabilities.backward
    result = check_grads(backend, case)
    assert result.passed and not result.skipped, result.message


def test_xformers_forward_only_call_is_caught(standins, monkeypatch):
    """The old adapter's gradient path: memory_efficient_attention_forward has no autograd node,
    so a backward check on it fails; the adapter must not take that path with grads."""
    from attnparity.check.parity import check_grads

    fmha = importlib.import_module("xformers.ops.fmha")
    monkeypatch.setattr(fmha, "memory_efficient_attention",
                        lambda q, k, v, b=None, p=0.0, s=None, *, op=None: fmha.memory_efficient_attention_forward(
                            q, k, v, b, p, s, op=None if op is None else op[0]))
    result = check_grads(_on_cpu(_backend("xformers", "xformers-cutlass")), XF_GRAD[0])
    assert not result.passed and "does not require grad" in result.message


def test_xformers_claims_what_the_backward_op_takes(standins, monkeypatch):
    """A case is claimed only where the backward op takes it too (the harness judges gradients on
    every claimed case); the forward-only flash op's BwOp takes no BMGHK, so GQA goes to it as
    4-D BMHK, and a causal case with a mask goes as one dense bias (no BwOp takes
    LowerTriangularMaskWithTensorBias)."""
    from attnparity.check.parity import check_grads

    bw = importlib.import_module("xformers.ops.fmha.cutlass").BwOp
    monkeypatch.setattr(bw, "SUPPORTED_MAX_K", 64)
    cutlass = _on_cpu(_backend("xformers", "xformers-cutlass"))  # the rule probes on the case's device
    wide = AttnCase(batch=1, heads=2, sq=8, skv=8, head_dim=128, dtype="fp16")
    assert "(backward)" in wide.outside(cutlass.capabilities) and "cutlassB" in wide.outside(cutlass.capabilities)
    assert wide.with_(head_dim=64).outside(cutlass.capabilities) is None
    causal_bias = AttnCase(batch=1, heads=4, kv_heads=2, sq=8, skv=11, head_dim=32, dtype="fp32", mask="random",
                           causal="top-left")
    result = check_grads(cutlass, causal_bias)
    assert result.passed and not result.skipped, result.message
    flash = _on_cpu(_backend("xformers", "xformers-flash")).capabilities
    gqa = AttnCase(batch=1, heads=4, kv_heads=2, sq=8, skv=8, head_dim=32, dtype="fp16")
    assert flash.backward and gqa.outside(flash) is None
    auto = _on_cpu(_backend("xformers", "xformers")).capabilities
    assert "no xformers op takes it" in gqa.with_(dtype="fp32", head_dim=70000).outside(auto)


# -- flash-attn: causal alignment by version -----------------------------------------------------
def test_flash_attn2_causal_follows_version(standins, monkeypatch):
    """flash-attn < 2.1 aligns causal top-left: the adapter claims that alignment, so the case is
    judged against it; claiming bottom-right there (the old adapter) is caught."""
    monkeypatch.setattr(importlib.import_module("flash_attn"), "__version__", "2.0.9")
    old = _backend("flash_attn", "flash-attn2")
    assert old.capabilities.causal_mode == "top-left"
    case = AttnCase(batch=1, heads=4, kv_heads=2, sq=7, skv=19, head_dim=40, dtype="fp16", causal="top-left")
    assert_matches_reference(old, case)
    assert case.with_(causal="bottom-right").outside(old.capabilities)
    wrong = dataclasses.replace(old, capabilities=dataclasses.replace(old.capabilities, causal="bottom-right"))
    with pytest.raises(AssertionError, match="max-abs error"):
        assert_matches_reference(wrong, case.with_(causal="bottom-right"))
    monkeypatch.setattr(importlib.import_module("flash_attn"), "__version__", "2.1.0")
    assert _backend("flash_attn", "flash-attn2").capabilities.causal_mode == "bottom-right"


def test_flash_attn2_backward_head_dim_224_needs_sm80_or_sm90(standins, monkeypatch):
    case = AttnCase(heads=2, sq=8, skv=8, head_dim=200, dtype="bf16", device="cuda")
    caps = _backend("flash_attn", "flash-attn2").capabilities
    assert case.outside(caps) is None  # the fixture's GPU is sm90
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert "sm80 or sm90" in case.outside(caps)
    assert case.with_(head_dim=232).outside(caps) is None


# -- sage: architectures and head_dims of the installed release ----------------------------------
def test_sage_arch_list_is_read_from_the_installed_sageattn(standins, monkeypatch):
    """sageattn raises outside its dispatch list (sm100 is not in 2.2.0's): that GPU is an
    unavailable row, not a contract violation on every case."""
    sage = _backend("sage", "sage")
    assert importlib.import_module("attnparity.backends.sage").supported_archs(
        importlib.import_module("sageattention").sageattn) == ("sm80", "sm86", "sm89", "sm90", "sm120")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (10, 0))
    reason = sage.unavailable_reason()
    assert reason and "sm100" in reason and "sm120" in reason
    q = torch.randn(1, 2, 8, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="Unsupported CUDA architecture"):
        sage(q, q, q)  # what the old claim (every GPU from sm80) ran into
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (12, 0))
    assert sage.unavailable_reason() is None


def test_sage_head_dims_follow_the_version(standins, monkeypatch):
    monkeypatch.setattr(importlib.import_module("sageattention"), "__version__", "1.0.6")
    sage = _backend("sage", "sage")
    caps = sage.capabilities
    assert {d for d in range(1, 300) if caps.supports_head_dim(d)} == {64, 96, 128}
    assert "fp32" in caps.dtype_names and sage.unavailable_reason() is None
    assert_matches_reference(sage, AttnCase(heads=2, sq=12, skv=12, head_dim=96, dtype="fp16", causal="top-left"))
    case = AttnCase(heads=2, sq=12, skv=12, head_dim=40, dtype="fp16")
    assert case.outside(dataclasses.replace(caps, devices={"cuda", "cpu"}))
    with pytest.raises(AssertionError, match="headdim"):
        sage(*case.tensors()[:3])  # the 2.x claim (head_dim up to 128) would have run this
    monkeypatch.setattr(importlib.import_module("sageattention"), "__version__", "2.1.1")
    assert _backend("sage", "sage").capabilities.supports_head_dim(40)


def test_sage_makes_no_gradients(standins):
    """sageattn has no backward; the adapter does not claim one."""
    sage = _backend("sage", "sage")
    assert not sage.capabilities.backward
    q = torch.randn(1, 2, 8, 64, dtype=torch.float16, requires_grad=True)
    assert sage(q, q, q).grad_fn is None
