"""A bridge to diffusers' attention dispatch: every backend in
``diffusers.models.attention_dispatch._AttentionBackendRegistry`` becomes a row ``diffusers:<name>``.

The fn transposes SDPA's (B, H, S, D) to diffusers' (B, S, H, D) and calls
``dispatch_attention_fn(..., backend=<name>)`` inside ``attention_backend(<name>)``: the context
manager runs diffusers' own requirement check and fetches a hub kernel, and ``backend=`` makes the
dispatcher call exactly that backend's function (it has no fallback on that path).

Claims are derived from diffusers itself, backend by backend:
- the constraint functions diffusers registers with each backend (``_check_qkv_dtype_bf16_or_fp16``
  -> fp16/bf16, ``_check_device_cuda`` -> CUDA, ``_check_device_cuda_atleast_smXY`` -> that arch,
  ``_check_head_dim_64_or_128``, ``_check_attn_mask_or_causal`` -> no mask together with causal);
- what the backend's function does with ``attn_mask`` / ``is_causal`` / ``enable_gqa`` (read in
  attention_dispatch.py of diffusers 0.42, summarised per family in ``_FAMILY`` below); a name this
  table does not know (a newer diffusers) is claimed from its signature alone.
Availability is diffusers' own ``_check_attention_backend_requirements`` plus CUDA / arch / hub
kernel checks. Importing diffusers takes seconds; it happens when the registry loads, never at
plugin import.
"""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass
from typing import Any

from .base import Backend, Capabilities
from .source import StandaloneCall, source_of

PREFIX = "diffusers:"


@dataclass(frozen=True)
class _Family:
    masks: frozenset[str]
    causal: bool | str  # True = top-left (SDPA's), "bottom-right", False
    gqa: bool
    head_dims: range | None = None
    #: The mask is a key-padding mask turned into per-row key lengths (varlen backends: diffusers'
    #: _normalize_attn_mask reduces it to (B, Skv) with .any() over heads and queries, and the
    #: backend keeps key[b, :mask[b].sum()]): only a bool kept prefix, the same for every head, is
    #: meant; causal with it would align to each row's length.
    padding_only: bool = False
    #: Causal alignment for Sq != Skv is undocumented (sage): only Sq == Skv is claimed.
    causal_square_only: bool = False
    deterministic: bool = False
    devices: frozenset[str] | None = None
    #: Which torch SDPA kernel the backend pins (its CUDA rules apply), if any.
    sdpa_kernel: str | None = None
    #: torch SDPA: "An error is thrown if both attn_mask and is_causal are set" (its docs).
    sdpa: bool = False


_BOTH = frozenset({"bool", "float"})
_NONE: frozenset[str] = frozenset()
_FLASH = _Family(_NONE, "bottom-right", True, range(1, 257))            # flash_attn_func: no mask
_FLASH_VARLEN = _Family(frozenset({"bool"}), "bottom-right", True, range(1, 257), padding_only=True)
_SAGE = _Family(_NONE, True, True, range(1, 129), causal_square_only=True)
_SAGE_VARLEN = _Family(frozenset({"bool"}), True, True, range(1, 129), padding_only=True, causal_square_only=True)

#: diffusers 0.42 attention_dispatch.py, function by function.
_FAMILY: dict[str, _Family] = {
    "flash": _FLASH, "flash_hub": _FLASH, "_flash_3": _FLASH, "_flash_3_hub": _FLASH,
    "flash_4_hub": _FLASH, "aiter_fa2_hub": _FLASH,
    "flash_varlen": _FLASH_VARLEN, "flash_varlen_hub": _FLASH_VARLEN,
    "_flash_varlen_3": _FLASH_VARLEN, "_flash_3_varlen_hub": _FLASH_VARLEN,
    "sage": _SAGE, "sage_hub": _SAGE, "sage_blackwell_hub": _SAGE,
    "_sage_qk_int8_pv_fp8_cuda": _SAGE, "_sage_qk_int8_pv_fp8_cuda_sm90": _SAGE,
    "_sage_qk_int8_pv_fp16_cuda": _SAGE, "_sage_qk_int8_pv_fp16_triton": _SAGE,
    "sage_varlen": _SAGE_VARLEN,
    # torch SDPA, mask passed through as SDPA takes it, enable_gqa passed through.
    "native": _Family(_BOTH, True, True, deterministic=True, sdpa=True),
    "_native_math": _Family(_BOTH, True, True, deterministic=True, sdpa_kernel="MATH", sdpa=True),
    "_native_flash": _Family(_NONE, True, True, sdpa_kernel="FLASH_ATTENTION", sdpa=True),  # raises on attn_mask
    # torch's memory-efficient kernel refuses enable_gqa; CUDA only.
    "_native_efficient": _Family(_BOTH, True, False, devices=frozenset({"cuda"}), sdpa_kernel="EFFICIENT_ATTENTION",
                                 sdpa=True),
    "_native_cudnn": _Family(_BOTH, True, True, range(8, 129, 8), devices=frozenset({"cuda"}),
                             sdpa_kernel="CUDNN_ATTENTION", sdpa=True),
    # flex_attention uncompiled: bool mask -> mask_mod BlockMask, float -> score_mod; is_causal
    # is accepted (see the report: without a mask diffusers drops it).
    "flex": _Family(_BOTH, True, True, deterministic=True),
    # xformers: 4-D masks are expanded and cast with type_as(query); LowerTriangularMask for causal.
    "xformers": _Family(_BOTH, True, True, devices=frozenset({"cuda"})),
    "_native_npu": _Family(_BOTH, False, False, devices=frozenset({"npu"})),
    "_native_xla": _Family(_NONE, True, False, devices=frozenset({"xla"})),
}


def _dispatch_module() -> Any:
    from diffusers.models import attention_dispatch

    return attention_dispatch


def _family(name: str, arg_names: set[str]) -> _Family:
    if name in _FAMILY:
        return _FAMILY[name]
    # Unknown to this table (newer diffusers): what the signature accepts.
    return _Family(_BOTH if "attn_mask" in arg_names else _NONE, "is_causal" in arg_names, "enable_gqa" in arg_names)


def _constraint_claims(checks: list[Any]) -> dict[str, Any]:
    """What diffusers' registered constraint functions for a backend say it needs."""
    claims: dict[str, Any] = {}
    for check in checks:
        name = getattr(check, "__name__", "")
        if name == "_check_qkv_dtype_bf16_or_fp16":
            claims["dtypes"] = {"fp16", "bf16"}
        elif name == "_check_qkv_dtype_bf16":
            claims["dtypes"] = {"bf16"}
        elif name in ("_check_device_cuda", "check_device_cuda"):
            claims["devices"] = {"cuda"}
            arch = inspect.getclosurevars(check).nonlocals
            if "major" in arch:
                claims["arch"] = (arch["major"], arch["minor"])
        elif name == "_check_head_dim_64_or_128":
            claims["head_dims"] = frozenset({64, 128})
        elif name == "_check_attn_mask_or_causal":
            claims["no_mask_with_causal"] = True
    return claims


def _case_rule(family: _Family, claims: dict[str, Any]):
    def rule(case: Any) -> str | None:
        if claims.get("no_mask_with_causal") and case.mask != "none" and case.causal is not None:
            return "diffusers refuses attn_mask together with is_causal for this backend"
        if family.sdpa and case.mask != "none" and case.causal is not None:
            return "torch SDPA refuses attn_mask together with is_causal"
        if family.padding_only and case.mask not in ("none", "padding"):
            return "varlen backend: only a key-padding mask (a kept prefix per row) is meant"
        if family.padding_only and case.mask == "padding" and case.pad_side != "right":
            return "varlen backend: diffusers keeps key[b, :length], a prefix; left padding would keep the padding"
        if family.padding_only and case.mask == "padding" and "H" in case.mask_dims:
            return ("varlen backend: diffusers reduces the mask to one length per batch row (.any() over heads); "
                    "per-head lengths and (H, 1, Skv) masks are not meant")
        if family.padding_only and case.mask != "none" and case.causal is not None:
            return "varlen backend: causal with a padding mask aligns to each row's own length"
        if family.causal_square_only and case.causal is not None and case.sq != case.skv:
            return "sage's causal alignment for Sq != Skv is undocumented"
        if family.sdpa_kernel:
            from .sdpa import _kernel_rules

            return _kernel_rules(family.sdpa_kernel)(case)
        return None

    return rule


def _capabilities(name: str, arg_names: set[str], checks: list[Any]) -> Capabilities:
    import torch

    from .base import torch_dtype

    family = _family(name, arg_names)
    claims = _constraint_claims(checks)
    devices = claims.get("devices") or family.devices or {"cpu", "cuda"}
    dtypes = {torch_dtype(n) for n in claims.get("dtypes", {"fp32", "fp16", "bf16"})}
    head_dims = claims.get("head_dims", family.head_dims)
    if family.sdpa_kernel == "FLASH_ATTENTION" and torch.cuda.is_available():
        head_dims = range(1, 257)
    # Gradients are claimed where diffusers calls torch SDPA (autograd through the pinned kernel);
    # for the other families it depends on the kernel build and is not claimed.
    return Capabilities(devices=devices, dtypes=dtypes, head_dims=head_dims, masks=family.masks,
                        causal=family.causal, gqa=family.gqa, backward=family.sdpa,
                        deterministic=family.deterministic, constraint=_case_rule(family, claims))


def _availability(name: str, checks: list[Any]):
    def is_available() -> str | None:
        ad = _dispatch_module()
        backend = ad.AttentionBackendName(name)
        hub = getattr(ad, "_HUB_KERNELS_REGISTRY", {}).get(backend)
        try:
            ad._check_attention_backend_requirements(backend)
        except RuntimeError as exc:
            reason = str(exc)
            if hub is not None:
                reason = f"needs the HF hub kernel download ({hub.repo_id}) and: {reason}"
            return reason
        import torch

        claims = _constraint_claims(checks)
        family = _family(name, set())
        devices = claims.get("devices") or family.devices or {"cpu", "cuda"}
        if devices == {"cuda"} and not torch.cuda.is_available():
            return f"diffusers backend {name!r} needs CUDA (torch {torch.__version__} sees no GPU)"
        if "arch" in claims and torch.cuda.is_available() and torch.cuda.get_device_capability() < claims["arch"]:
            major, minor = claims["arch"]
            return f"diffusers backend {name!r} needs sm{major}{minor}+"
        if hub is not None and hub.kernel_fn is None:
            trusted = bool(getattr(ad, "DIFFUSERS_TRUST_REMOTE_KERNELS", False))
            return _hub_build_missing(hub.repo_id, hub.revision, hub.version, trusted)
        return None

    return is_available


@functools.cache
def _hub_build_missing(repo_id: str, revision: str | None, version: int | None, trusted: bool) -> str | None:
    """Why the hub kernel ``repo_id`` cannot be fetched for this torch and device, or None.

    diffusers' requirement check passes as soon as the ``kernels`` package is installed (transformers
    depends on it), and the fetch happens only inside the first call: without this probe every hub
    row claimed the machine and failed each case with a network error. ``kernels.has_kernel``
    downloads the build's metadata, not the build; it checks that a build exists for this torch and
    GPU architecture, not the build's Python dependencies, which the fetch checks later (a row can
    still fail there, with kernels' own message). ``trusted`` is diffusers' own reading of
    DIFFUSERS_TRUST_REMOTE_KERNELS, the value its fetch passes on. Asked once per repository and
    process."""
    from huggingface_hub.constants import ENDPOINT, HF_HUB_OFFLINE

    if HF_HUB_OFFLINE:
        return f"needs the HF hub kernel download ({repo_id}); HF_HUB_OFFLINE is set"
    try:
        from kernels import has_kernel
    except ImportError:  # a kernels release before has_kernel: diffusers' own check has to do
        return None
    unreachable = _unreachable(ENDPOINT)
    if unreachable:
        return (f"needs the HF hub kernel download ({repo_id}), and {ENDPOINT} cannot be reached "
                f"({unreachable}); set HF_HUB_OFFLINE=1 to skip the hub rows without asking")
    try:
        found = has_kernel(repo_id, revision=revision, version=version, trust_remote_code=trusted)
    except ValueError as exc:  # kernels refuses a publisher it does not trust
        hint = "" if trusted else "; if you trust its publisher, set DIFFUSERS_TRUST_REMOTE_KERNELS=true"
        return f"needs the HF hub kernel download ({repo_id}), which kernels refused: {exc}{hint}"
    except Exception as exc:  # a hub or network error: not here, said as it is
        return (f"needs the HF hub kernel download ({repo_id}), and asking the hub failed: "
                f"{type(exc).__name__}: {exc}")
    if not found:
        return f"needs the HF hub kernel download ({repo_id}): the hub has no build of it for this torch and device"
    return None


@functools.cache
def _unreachable(endpoint: str, timeout: float = 3.0) -> str | None:
    """Why a TCP connection to the hub's host fails within ``timeout`` s, or None. huggingface_hub
    asks with no timeout of its own, so a network that drops packets would hold each hub row's probe
    for the system's connect timeout (minutes) at collection. Behind a proxy the host is not dialled
    directly, so there the hub's own answer has to do."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlsplit(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def dispatch_call(q, k, v, attn_mask=None, is_causal=False, scale=None, name="native"):
    """diffusers' ``dispatch_attention_fn`` with backend ``name`` forced, on SDPA-layout tensors."""
    from diffusers.models import attention_dispatch as ad

    backend = ad.AttentionBackendName(name)
    # SDPA (B, H, S, D) -> diffusers (B, S, H, D), and back.
    query, key, value = (t.transpose(1, 2) for t in (q, k, v))
    with ad.attention_backend(backend):  # diffusers' requirement check and hub kernel fetch
        out = ad.dispatch_attention_fn(query, key, value, attn_mask=attn_mask, is_causal=is_causal,
                                       scale=scale, enable_gqa=q.shape[1] != k.shape[1], backend=backend)
    if isinstance(out, tuple):
        out = out[0]
    return out.transpose(1, 2)


def _make_fn(name: str, arg_names: set[str]):
    def diffusers_attention(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
        return dispatch_call(q, k, v, attn_mask, is_causal, scale, name)

    diffusers_attention.__name__ = f"diffusers_{name.strip('_')}"
    return diffusers_attention


def _standalone(name: str) -> StandaloneCall | None:
    """How a standalone repro calls row ``name`` (backends/source.py)."""
    if not name.startswith(PREFIX):
        return None
    return StandaloneCall(f"dispatch_call(q, k, v, attn_mask, is_causal, scale, name={name[len(PREFIX):]!r})",
                          (source_of(dispatch_call),), ("torch", "diffusers"))


def backends() -> list[Backend]:
    try:
        ad = _dispatch_module()
    except ImportError:
        return []  # no diffusers: the bridge adds no rows
    except Exception as exc:  # diffusers present but broken (e.g. against this torch): say so, once
        reason = f"diffusers failed to import: {type(exc).__name__}: {exc}"

        def broken(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
            raise RuntimeError(reason)

        return [Backend("diffusers", broken, is_available=lambda: reason,
                        description="diffusers' attention dispatch (could not be loaded)")]
    registry = ad._AttentionBackendRegistry
    rows = []
    for backend in registry.list_backends():
        name = backend.value
        arg_names = set(registry._supported_arg_names.get(backend, ()))
        checks = list(registry._constraints.get(backend, ()))
        rows.append(Backend(PREFIX + name, _make_fn(name, arg_names), _capabilities(name, arg_names, checks),
                            _availability(name, checks), f"diffusers dispatch_attention_fn(backend={name!r})"))
    return rows
