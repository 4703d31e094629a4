"""xformers' ``memory_efficient_attention``: ``xformers`` (its own dispatcher picks the op) and one
row per forward op the installed xformers ships (``xformers-cutlass``, ``xformers-flash``,
``xformers-flash3``, ``xformers-ck``, ...), found in ``xformers.ops.fmha`` when the registry loads.

How the contract maps onto xformers (xformers/ops/fmha/__init__.py, common.py, attn_bias.py):
- layout BMHK (B, S, H, D); GQA through the 5-D BMGHK form: Q (B, S, Hkv, H/Hkv, D) and K/V
  expanded along the per-group axis (stride 0), so query head h reads kv head h // (H // Hkv);
- a mask is a dense tensor ``attn_bias`` of shape exactly (B, H, Sq, Skv) ((B, G, H/G, Sq, Skv) in
  BMGHK) in the query dtype; bool masks become 0 / -inf. xformers requires the bias's strides to be
  multiples of 16 bytes (cutlass ``_check_bias_alignment``), so the bias lives in a buffer whose last
  dim is padded to a multiple of 8 and is sliced back ("slicing a bigger tensor", xformers' hint);
- causal is ``LowerTriangularMask`` (top-left, SDPA's), with a mask ``LowerTriangularMaskWithTensorBias``.

Gradients: ``memory_efficient_attention_forward`` is forward only (it runs the op with
``needs_gradient=False`` and makes no autograd node), so with inputs that require grad the adapter
calls ``memory_efficient_attention`` with the op's (FwOp, BwOp) pair (``MemoryEfficientAttention*Op``),
GQA as 4-D BMHK with K/V repeated (BwOps take no BMGHK) and causal-with-mask as one dense bias.
Backward is claimed only for ops xformers pairs with a BwOp, and a case only where both take it.

Claims come from each op's own class attributes (SUPPORTED_DTYPES, SUPPORTED_MAX_K,
SUPPORTED_ATTN_BIAS_TYPES, SUPPORTS_BMGHK, SUPPORTS_CUSTOM_SCALE, IS_DETERMINISTIC, ...), and the
finer rules from the op's own ``not_supported_reasons`` (the check xformers' dispatcher runs), so a
case is claimed exactly when xformers itself says the op takes it.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from .base import Backend, Capabilities, Unsupported

NOT_INSTALLED = "xformers not installed (pip install xformers; needs CUDA)"
#: Forward-op modules of xformers.ops.fmha that compute dense (B, S, H, D) attention. The decoder
#: ops (decoder, ck_decoder, ck_splitk) only take block-diagonal / paged biases and are left out.
OP_MODULES = ("cutlass", "flash", "flash3", "ck", "triton_splitk", "cutlass_blackwell", "small_k", "triton")
#: Rows listed (unavailable) when xformers is missing, so `--attn-list` says what it would add.
DEFAULT_OPS = ("cutlass", "flash", "flash3", "ck")


def _row_name(module: str | None) -> str:
    return "xformers" if module is None else "xformers-" + module.replace("_", "-")


def _fmha() -> Any:
    return importlib.import_module("xformers.ops.fmha")


def _forward_op(module: str | None) -> Any:
    if module is None:
        return None
    return importlib.import_module(f"xformers.ops.fmha.{module}").FwOp


# -- the call ----------------------------------------------------------------------------------
def _dense_bias(attn_mask: Any, b: int, h: int, hkv: int, sq: int, skv: int, dtype: Any) -> Any:
    """The additive bias in xformers' shape, in a buffer padded to a multiple of 8 along Skv."""
    import torch

    if attn_mask.dtype == torch.bool:
        bias = torch.zeros(attn_mask.shape, dtype=dtype, device=attn_mask.device)
        bias = bias.masked_fill(~attn_mask, float("-inf"))
    else:
        bias = attn_mask.to(dtype)
    padded = -(-skv // 8) * 8
    buffer = torch.empty(b, h, sq, padded, dtype=dtype, device=attn_mask.device)
    buffer[..., :skv] = bias.expand(b, h, sq, skv)
    dense = buffer[..., :skv]
    if hkv != h:  # BMGHK: (B, G, H/G, Sq, Skv); a view, the strides stay aligned
        dense = dense.view(b, hkv, h // hkv, sq, skv)
    return dense


def _xformers_inputs(q: Any, k: Any, v: Any, attn_mask: Any, is_causal: bool,
                     grad: bool = False) -> tuple[Any, Any, Any, Any]:
    """(query, key, value, attn_bias) in xformers' layout for SDPA-layout inputs.

    With ``grad``, GQA is given as 4-D BMHK with K/V repeated per query head: xformers' backward
    ops take no BMGHK (``SUPPORTS_BMGHK = False`` on flash.BwOp, and on the base class cutlass.BwOp
    inherits), and autograd through the repeat sums dK and dV over each group."""
    attn_bias_mod = importlib.import_module("xformers.ops.fmha.attn_bias")
    b, h, sq, d = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    # (B, H, S, D) -> (B, S, H, D): a view; xformers only needs the last dim contiguous.
    query, key, value = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    five = hkv != h and not grad
    if hkv != h:
        rep = h // hkv
        key = key.unsqueeze(3).expand(b, skv, hkv, rep, d)
        value = value.unsqueeze(3).expand(b, skv, hkv, rep, v.shape[-1])
        if five:
            query = query.reshape(b, sq, hkv, rep, d)
        else:  # query head h reads kv head h // rep, as in the 5-D form
            key, value = key.reshape(b, skv, h, d), value.reshape(b, skv, h, v.shape[-1])
    bias = None if attn_mask is None else _dense_bias(attn_mask, b, h, hkv if five else h, sq, skv, q.dtype)
    if grad and is_causal and bias is not None:
        # No backward op takes LowerTriangularMaskWithTensorBias (cutlass.BwOp leaves it out of
        # SUPPORTED_ATTN_BIAS_TYPES): the causal part goes into the dense bias (top-left, as
        # LowerTriangularMask), which the backward ops take.
        import torch

        keep = torch.ones(sq, skv, dtype=torch.bool, device=bias.device).tril()
        bias.masked_fill_(~keep, float("-inf"))
        is_causal = False
    if is_causal:
        causal = attn_bias_mod.LowerTriangularMask()
        attn_bias = causal if bias is None else causal.add_bias(bias)
    else:
        attn_bias = bias
    return query, key, value, attn_bias


def _needs_grad(*tensors: Any) -> bool:
    import torch

    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _op_pair(fmha: Any, op: Any) -> tuple[Any, Any] | None:
    """The (FwOp, BwOp) pair xformers ships for this forward op (its MemoryEfficientAttention*Op
    tuples), preferring the backward op of the same module (cutlass.FwOp also pairs with flash.BwOp)."""
    pairs = [getattr(fmha, name) for name in sorted(dir(fmha)) if name.startswith("MemoryEfficientAttention")]
    pairs = [p for p in pairs if isinstance(p, tuple) and len(p) == 2 and p[0] is op and p[1] is not None]
    pairs.sort(key=lambda p: p[1].__module__ != op.__module__)
    return pairs[0] if pairs else None


def _make_fn(module: str | None):
    def xformers_attention(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
        fmha = _fmha()
        grad = _needs_grad(q, k, v)
        query, key, value, attn_bias = _xformers_inputs(q, k, v, attn_mask, is_causal, grad)
        op = _forward_op(module)
        if grad:
            # memory_efficient_attention_forward is forward-only (op.apply(needs_gradient=False),
            # no autograd node): gradients go through memory_efficient_attention and a BwOp.
            pair = None if op is None else _op_pair(fmha, op)
            if op is not None and pair is None:
                raise Unsupported(f"xformers {op.NAME} has no backward op")
            out = fmha.memory_efficient_attention(query, key, value, attn_bias, 0.0, scale, op=pair)
        else:
            if op is not None:
                reasons = op.not_supported_reasons(fmha.Inputs(query, key, value, attn_bias, 0.0, scale))
                if reasons:
                    raise Unsupported(f"xformers {op.NAME} refuses the input: {'; '.join(reasons)}")
            out = fmha.memory_efficient_attention_forward(query, key, value, attn_bias, 0.0, scale, op=op)
        if out.ndim == 5:
            out = out.reshape(out.shape[0], out.shape[1], -1, out.shape[-1])
        return out.transpose(1, 2)

    xformers_attention.__name__ = f"xformers_{module or 'auto'}"
    return xformers_attention


# -- availability and claims -------------------------------------------------------------------
def _availability(module: str | None):
    def is_available() -> str | None:
        if importlib.util.find_spec("xformers") is None:
            return NOT_INSTALLED
        try:
            op = _forward_op(module)
            _fmha()
        except Exception as exc:  # an xformers built for another torch fails here
            return f"xformers failed to import: {type(exc).__name__}: {exc}"
        import torch

        if not torch.cuda.is_available():
            return f"xformers needs CUDA (torch {torch.__version__} sees no GPU)"
        if op is None:
            return None
        if not op.is_available():
            return f"xformers op {op.NAME} was not built (see `python -m xformers.info`)"
        arch = torch.cuda.get_device_capability()
        if arch < tuple(op.CUDA_MINIMUM_COMPUTE_CAPABILITY):
            need = op.CUDA_MINIMUM_COMPUTE_CAPABILITY
            return f"xformers op {op.NAME} needs sm{need[0]}{need[1]}+, this GPU is sm{arch[0]}{arch[1]}"
        return None

    return is_available


def _case_rule(module: str | None, backward: bool):
    """The op's own ``not_supported_reasons`` (or the dispatcher's choice) on the case's shapes;
    where backward is claimed, those of its backward op too, on the inputs the gradient call passes
    (the harness judges gradients on the same claimed cases)."""

    def rule(case: Any) -> str | None:
        if importlib.util.find_spec("xformers") is None:
            return None  # unavailable anyway; the row is skipped with its reason
        import torch

        from .base import torch_dtype

        fmha = _fmha()
        dtype, dev = torch_dtype(case.dtype), case.device
        q = torch.empty(case.batch, case.heads, case.sq, case.head_dim, dtype=dtype, device=dev)
        k = torch.empty(case.batch, case.kv_heads, case.skv, case.head_dim, dtype=dtype, device=dev)
        mask = None
        if case.mask != "none":
            mask = torch.zeros(case.batch, 1, case.sq, case.skv, dtype=torch.bool if case.mask_type == "bool" else dtype,
                               device=dev)
        causal = case.causal is not None
        inputs = fmha.Inputs(*_xformers_inputs(q, k, k, mask, causal), 0.0, case.scale)
        grad_inputs = fmha.Inputs(*_xformers_inputs(q, k, k, mask, causal, grad=True), 0.0, case.scale)
        op = _forward_op(module)
        if op is None:
            try:
                fmha.dispatch._dispatch_fw(inputs, False)
                if backward:
                    fmha.dispatch._dispatch_fw(grad_inputs, True)
                    _dispatch_bw(fmha, grad_inputs)
            except NotImplementedError as exc:
                return f"no xformers op takes it: {str(exc).splitlines()[0]}"
            return None
        reasons = op.not_supported_reasons(inputs)
        if not reasons and backward:
            pair = _op_pair(fmha, op)
            reasons = op.not_supported_reasons(grad_inputs) + pair[1].not_supported_reasons(grad_inputs)
            reasons = [f"{pair[1].NAME} (backward): {r}" for r in reasons] if reasons else []
        return f"xformers {op.NAME}: {'; '.join(reasons)}" if reasons else None

    return rule


def _dispatch_bw(fmha: Any, inputs: Any) -> Any:
    try:
        return fmha.dispatch._dispatch_bw(inputs, False)
    except TypeError:  # xformers before varlen_lse_packed
        return fmha.dispatch._dispatch_bw(inputs)


def _capabilities(module: str | None) -> Capabilities:
    import torch

    every = {torch.float32, torch.float16, torch.bfloat16}
    if module is None or importlib.util.find_spec("xformers") is None:
        # The dispatcher (or a missing xformers): what memory_efficient_attention documents —
        # f16/bf16/f32, tensor masks, causal, BMGHK; "This operator may be nondeterministic".
        return Capabilities(devices={"cuda"}, dtypes=every, causal=True, gqa=True, backward=True,
                            deterministic=False, constraint=_case_rule(module, backward=True))
    op = _forward_op(module)
    fmha = _fmha()
    bias_types = set(op.SUPPORTED_ATTN_BIAS_TYPES)
    attn_bias_mod = fmha.attn_bias
    tensor_bias = torch.Tensor in bias_types
    causal = attn_bias_mod.LowerTriangularMask in bias_types
    min_k = getattr(op, "SUPPORTED_MIN_K", 1)
    max_k = int(min(op.SUPPORTED_MAX_K, 1 << 16))
    backward = _op_pair(fmha, op) is not None
    return Capabilities(
        devices={d.split(":")[0] for d in op.SUPPORTED_DEVICES} & {"cuda", "cpu"},
        dtypes=set(op.SUPPORTED_DTYPES) & every,
        head_dims=range(max(1, int(min_k)), max_k + 1),
        masks={"bool", "float"} if tensor_bias else set(),
        causal=causal,
        gqa=bool(op.SUPPORTS_BMGHK),
        backward=backward,
        deterministic=bool(op.IS_DETERMINISTIC),
        constraint=_case_rule(module, backward),
    )


def _installed_ops() -> list[str]:
    if importlib.util.find_spec("xformers") is None:
        return list(DEFAULT_OPS)
    found = []
    for module in OP_MODULES:
        try:
            _forward_op(module)
        except Exception:  # not in this xformers version, or it fails to import
            continue
        found.append(module)
    return found


def backends() -> list[Backend]:
    rows = []
    for module in (None, *_installed_ops()):
        try:
            caps = _capabilities(module)
        except Exception as exc:  # an op whose attributes we cannot read: list it, unavailable
            reason = f"xformers op {module} unreadable: {type(exc).__name__}: {exc}"
            rows.append(Backend(_row_name(module), _make_fn(module), Capabilities(devices={"cuda"}),
                                lambda reason=reason: reason, f"xformers.ops.fmha.{module}.FwOp"))
            continue
        what = "xformers memory_efficient_attention, op chosen by xformers" if module is None else \
            f"xformers memory_efficient_attention, op=xformers.ops.fmha.{module}.FwOp"
        rows.append(Backend(_row_name(module), _make_fn(module), caps, _availability(module), what))
    return rows
