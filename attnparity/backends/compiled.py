"""Compiled rows: attention as a ``torch.compile``'d model runs it.

A compiled graph does not run the kernels the eager rows judged: inductor rewrites hand-written
attention math into SDPA with its pattern matcher (torch/_inductor/fx_passes/fuse_attention.py),
fuses the ops around the kernel and generates its own code for what it does not rewrite. These rows
put that code in the matrix, judged against fp64 like any backend:

* ``sdpa+compile``: ``F.scaled_dot_product_attention`` compiled (torch's own kernel choice);
* ``naive+compile``: attention written the way diffusers' classic ``AttnProcessor`` writes it
  (heads folded into the batch, ``baddbmm`` with ``alpha=scale``, softmax upcast to fp32, ``bmm``);
* ``matmul+compile``: ``(q @ k^T * scale).softmax(-1) @ v`` on 4-D tensors, the form inductor's
  ``_sfdp_pattern_2`` matches, so the row judges the SDPA the pattern matcher puts in its place.

Compilation cost is kept bounded, not per drawn shape:

* ``fullgraph=True``: a graph break would run the rest eagerly and the row would judge eager
  code (it did: SDPA's ``enable_gqa`` given a SymBool broke the graph before the call);
* shapes are dynamic (``dynamic=True``); dynamo still specializes sizes 0 and 1, so a case with
  one head or one key is a graph of its own (a handful, not one per case);
* q, k, v and the mask reach the graph contiguous and the mask expanded to (B, H, Sq, Skv), so the
  layouts the search draws do not each compile a graph (the eager rows judge layouts);
* a Python float scale is a constant of the graph (as a model's scale is, and as the pattern
  matcher requires), so each scale compiles its own graph: the rows claim ``CLAIMED_SCALES`` only,
  and the rows whose code inductor generates claim the diffusion head dims only
  (``CODEGEN_HEAD_DIMS``: the default scale 1/sqrt(D) is a constant per head_dim);
* each item keeps to a few input structures (``Backend.structures``, ``STRUCTURES``; suite/op.py),
  drawing many shapes and values within them: a bounded number of graphs per item, not per case;
* on CPU they claim fp32 and bf16 only (``claimed_dtypes``).

``compile_stats()`` counts, per row, the graphs handed to inductor, the seconds spent there and how
often the attention pattern matcher rewrote a graph (``counters["inductor"]["fuse_attention"]``;
counted on an FX-graph-cache miss only, since a hit skips the passes).

On CPU the rows are opt-in (``Backend.opt_in``): ``all`` leaves them out and a name or a glob
(``*+compile``) selects them. See docs/compile.md for the measured costs and inductor's caches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import Backend, Capabilities
from .source import StandaloneCall, constant_source, source_of

#: The scales a compiled row claims (None: 1/sqrt(D)); the suite's strategy draws these often.
CLAIMED_SCALES = (None, 1.0, 0.5, 0.05)
#: Head dims the rows whose graph inductor generates claim: those of the diffusion models the seeds
#: discuss (SD1.5 40/80/160, SDXL/SD3 64, PixArt 72, Flux 128). A model has a handful; each is a
#: graph of its own when the scale defaults to 1/sqrt(D) (a constant), 20-70 s each on a loaded CPU.
CODEGEN_HEAD_DIMS = frozenset({40, 64, 72, 80, 128, 160})

#: Input structures (check/strategies.structure: a graph each) a forward item of a compiled row tries;
#: its other items try a third, at least two (suite/op.py). Within them the search draws shapes and
#: values freely. Chosen with the measured cost of a graph (docs/compile.md): under a second for
#: sdpa+compile (an extern kernel), ~4 s cold for the rows whose code inductor generates.
STRUCTURES = {"sdpa+compile": 8, "naive+compile": 6, "matmul+compile": 6}

#: dynamo's default recompile limit (8) would silently fall back to eager code once hit, and the row
#: would judge eager math; raise it for these calls and make a hit an error.
DYNAMO_LIMITS = {"recompile_limit": 1024, "accumulated_recompile_limit": 8192,
                 "fail_on_recompile_limit_hit": True}

#: Why the compiled rows are left out of ``--attn-backends=all`` on CPU.
CPU_OPT_IN = ("compiled row: inductor compiles a graph per mask kind, dtype, scale and grad mode, "
              "seconds each on CPU; select it by name or glob ('*+compile')")


@dataclass
class CompileStats:
    """What compiling one row cost in this process."""

    #: graphs handed to inductor: the first compile of each structure, and every recompile
    graphs: int = 0
    #: wall seconds inside inductor (forward graphs; a backward graph compiles lazily, uncounted)
    seconds: float = 0.0
    #: calls of the row's function
    calls: int = 0
    #: graphs in which inductor's attention pattern matcher replaced the math with SDPA
    fuse_attention: int = 0


_stats: dict[str, CompileStats] = {}


def compile_stats() -> dict[str, CompileStats]:
    """Per row name, what compiling it cost so far in this process."""
    return dict(_stats)


def _counting_inductor(name: str, inductor_config: dict[str, Any] | None = None) -> Callable[..., Any]:
    """inductor (with ``inductor_config`` patched in), counting the graphs it is handed and its time,
    for the row ``name``."""

    def backend(gm: Any, example_inputs: Any) -> Any:
        from torch._dynamo.utils import counters
        from torch._inductor.compile_fx import compile_fx

        stats = _stats.setdefault(name, CompileStats())
        fused = counters["inductor"]["fuse_attention"]
        start = time.perf_counter()
        try:
            return compile_fx(gm, example_inputs, config_patches=dict(inductor_config or {}))
        finally:
            stats.graphs += 1
            stats.seconds += time.perf_counter() - start
            stats.fuse_attention += counters["inductor"]["fuse_attention"] - fused

    return backend


def dynamo_limits() -> dict[str, Any]:
    """DYNAMO_LIMITS restricted to the settings this torch knows."""
    import torch

    return {k: v for k, v in DYNAMO_LIMITS.items() if hasattr(torch._dynamo.config, k)}


def _dense(t: Any) -> Any:
    """``t`` with the strides of a new contiguous tensor. ``.contiguous()`` is not enough: a size-1
    dim does not count for contiguity, so its stride stays whatever the layout left, and dynamo
    guards on it (a case with Sq = 1 drawn transposed compiled a graph of its own)."""
    import math

    import torch

    canonical = tuple(math.prod(t.shape[i + 1:]) for i in range(t.dim()))
    if t.is_contiguous() and tuple(t.stride()) == canonical:
        return t
    return t.clone(memory_format=torch.contiguous_format)


def compiled_fn(name: str, inner: Callable[..., Any], *,
                inductor_config: dict[str, Any] | None = None) -> Callable[..., Any]:
    """A contract fn running ``inner(q, k, v, attn_mask, is_causal, scale, gqa)`` compiled by inductor.

    Compiled once, on first use, and reused by every case (torch.compile caches per structure).
    ``inductor_config``: inductor settings for this row only (e.g. a custom graph pass)."""
    holder: dict[str, Any] = {}

    def fn(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
        import torch

        if "compiled" not in holder:
            holder["compiled"] = torch.compile(inner, backend=_counting_inductor(name, inductor_config),
                                               dynamic=True, fullgraph=True)
        _stats.setdefault(name, CompileStats()).calls += 1
        return compiled_call(holder["compiled"], q, k, v, attn_mask, is_causal, scale)

    fn.__name__ = name.replace("+", "_")
    return fn


def compiled_call(compiled, q, k, v, attn_mask=None, is_causal=False, scale=None):
    """Call ``compiled`` (a torch.compile'd row function) the way the rows do: dense inputs, the mask
    expanded to (B, H, Sq, Skv), the scale a Python float, no duck sizing, dynamo's limits raised."""
    import torch
    import torch.fx.experimental._config  # noqa: F401  (use_duck_shape, patched below)

    b, h, sq, d = q.shape
    # The scale as a Python float: a constant of the graph, as a model's is (a scale derived
    # from a dynamic head_dim would be symbolic, and the pattern matcher only takes constants).
    scale = d ** -0.5 if scale is None else float(scale)
    q, k, v = _dense(q), _dense(k), _dense(v)
    if attn_mask is not None:
        attn_mask = _dense(attn_mask.expand(b, h, sq, k.shape[2]))
    # No duck sizing: equal sizes (B == H == 2) would otherwise become one symbol, and the
    # next case with B != H a recompile.
    with torch._dynamo.config.patch(**dynamo_limits()), \
            torch.fx.experimental._config.patch(use_duck_shape=False):
        # GQA as a Python bool from here: computed in the graph it is a SymBool, which SDPA's
        # enable_gqa refuses (a graph break without fullgraph).
        return compiled(q, k, v, attn_mask, is_causal, scale, h != k.shape[1])


#: The compiled row function of a standalone repro, compiled once (ROW_FUNCTION: the row's code).
_COMPILED_ROW = """
_COMPILED = {}


def compiled_row():
    if "fn" not in _COMPILED:
        _COMPILED["fn"] = torch.compile(ROW_FUNCTION, backend="inductor", dynamic=True, fullgraph=True)
    return _COMPILED["fn"]
""".strip()

_ROW_CODE = {"sdpa+compile": "_sdpa", "naive+compile": "_classic", "matmul+compile": "_matmul"}


def _standalone(name: str) -> StandaloneCall | None:
    """How a standalone repro calls row ``name``: the same function, compiled the same way (the
    inductor backend without this module's counting)."""
    if name not in _ROW_CODE:
        return None
    from .naive import math_sources

    inner = globals()[_ROW_CODE[name]]
    holder = _COMPILED_ROW.replace("ROW_FUNCTION", inner.__name__)
    return StandaloneCall("compiled_call(compiled_row(), q, k, v, attn_mask, is_causal, scale)",
                          (*math_sources(), source_of(inner), constant_source("DYNAMO_LIMITS", DYNAMO_LIMITS),
                           source_of(dynamo_limits), source_of(_dense), source_of(compiled_call), holder))


# -- what each row compiles ------------------------------------------------------------------------
def _sdpa(q, k, v, attn_mask, is_causal, scale, gqa):
    import torch.nn.functional as F

    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                                          enable_gqa=gqa)


def _classic(q, k, v, attn_mask, is_causal, scale, gqa):
    """diffusers' AttnProcessor (attention_processor.py, ``Attention.get_attention_scores`` with
    ``upcast_softmax``): heads in the batch, baddbmm with the mask as its input, softmax in fp32."""
    import torch

    from .naive import causal_keep, expand_kv

    b, h, sq, d = q.shape
    skv = k.shape[2]
    dtype = q.dtype
    query = q.reshape(b * h, sq, d)
    key = expand_kv(k, h).reshape(b * h, skv, d)
    value = expand_kv(v, h).reshape(b * h, skv, d)
    bias = None
    if attn_mask is not None:
        bias = (torch.zeros_like(attn_mask, dtype=dtype).masked_fill(~attn_mask, float("-inf"))
                if attn_mask.dtype == torch.bool else attn_mask.to(dtype))
    if is_causal:
        tri = torch.zeros(sq, skv, dtype=dtype, device=q.device).masked_fill(
            ~causal_keep(sq, skv, "top-left", q.device), float("-inf"))
        bias = tri.expand(b, h, sq, skv) if bias is None else bias + tri
    if bias is None:
        baddbmm_input, beta = torch.empty(b * h, sq, skv, dtype=dtype, device=q.device), 0
    else:
        baddbmm_input, beta = bias.expand(b, h, sq, skv).reshape(b * h, sq, skv), 1
    scores = torch.baddbmm(baddbmm_input, query, key.transpose(-1, -2), beta=beta, alpha=scale)
    probs = scores.float().softmax(dim=-1)
    if bias is not None:
        # A row with every key masked is all -inf: softmax gives NaN there and the contract zeros.
        probs = probs.nan_to_num(0.0)
    return torch.bmm(probs.to(dtype), value).reshape(b, h, sq, d)


def _matmul(q, k, v, attn_mask, is_causal, scale, gqa):
    """The 4-D form of inductor's ``_sfdp_pattern_2``; no mask, no causal (the rows claims neither)."""
    from .naive import expand_kv

    h = q.shape[1]
    return (q @ expand_kv(k, h).transpose(-2, -1)).mul(scale).softmax(dim=-1) @ expand_kv(v, h)


# -- claims ----------------------------------------------------------------------------------------
def scale_rule(case: Any) -> str | None:
    if case.scale not in CLAIMED_SCALES:
        return (f"scale {case.scale} not claimed: a compiled graph bakes its scale in (one graph per value); "
                f"claimed: {', '.join(map(str, CLAIMED_SCALES))}")
    return None


def _with_scale_rule(rule: Callable[[Any], str | None] | None) -> Callable[[Any], str | None]:
    def constraint(case: Any) -> str | None:
        return scale_rule(case) or (rule(case) if rule is not None else None)

    return constraint


def available() -> str | None:
    import torch

    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if not torch.cuda.is_available():
        import shutil

        if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang", "g++")):
            return "inductor's CPU backend needs a C++ compiler (gcc or clang) on PATH"
    return None


def claimed_dtypes() -> set[Any]:
    """fp32, fp16 and bf16 on CUDA; fp32 and bf16 on CPU.

    On CPU, diffusion runs in fp32 or bf16 (CPU autocast and AMX are bf16), hardly in fp16; and
    inductor's C++ code treats fp16 and bf16 alike (DTYPE_LOWP_FP in torch/_inductor/codegen/cpp.py:
    load, upcast to fp32, compute, store converted), so bf16 judges that path. The eager rows still
    judge fp16 on CPU; each dtype is a graph of its own, so a third dtype is a third of the cost."""
    import torch

    if torch.cuda.is_available():
        return {torch.float32, torch.float16, torch.bfloat16}
    return {torch.float32, torch.bfloat16}


def opt_in() -> str | None:
    """Why the compiled rows stay out of ``all`` on this machine (CPU), or None (CUDA)."""
    import torch

    return None if torch.cuda.is_available() else CPU_OPT_IN


def backends() -> list[Backend]:
    from .sdpa import _kernel_rules

    dtypes = claimed_dtypes()
    reason = opt_in()
    return [
        Backend("sdpa+compile", compiled_fn("sdpa+compile", _sdpa),
                Capabilities(dtypes=dtypes, backward=True, constraint=_with_scale_rule(_kernel_rules(None))),  # type: ignore[arg-type]
                available, "torch.compile(scaled_dot_product_attention): inductor around torch's kernel choice",
                opt_in=reason, structures=STRUCTURES["sdpa+compile"]),
        Backend("naive+compile", compiled_fn("naive+compile", _classic),
                Capabilities(dtypes=dtypes, head_dims=CODEGEN_HEAD_DIMS, backward=True,
                             constraint=_with_scale_rule(None)),
                available, "diffusers' classic AttnProcessor math (baddbmm, fp32 softmax, bmm) compiled by inductor",
                opt_in=reason, structures=STRUCTURES["naive+compile"]),
        Backend("matmul+compile", compiled_fn("matmul+compile", _matmul),
                Capabilities(dtypes=dtypes, head_dims=CODEGEN_HEAD_DIMS, masks=(), causal=False, backward=True,
                             constraint=_with_scale_rule(None)),
                available, "(q @ k^T * scale).softmax @ v compiled: the form inductor's pattern matcher rewrites into SDPA",
                opt_in=reason, structures=STRUCTURES["matmul+compile"]),
    ]
