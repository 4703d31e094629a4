"""Pipelines with the denoiser (UNet or transformer) compiled by ``torch.compile``: ``--attn-compile``.

What is compiled is what users compile (the PyTorch 2 Stable Diffusion post, "Diffusion, Fast"):
the whole denoiser, ``fullgraph=True``, inductor, static shapes (a pipeline calls its denoiser with
one shape), attention by the denoiser's own processors, i.e. SDPA. Text encoders and VAE stay eager.
The row is named ``sdpa+compile`` like the op-level row that judges the same kernel in isolation.

Routing (pipelines/routing.py) is not used inside the compiled denoiser. Routing is a
``TorchFunctionMode``; dynamo traces into an active mode instead of stepping around it, so a
routed compiled denoiser is a different program (measured on sd15, torch 2.13 CPU: 4 more graphs,
none of them with an SDPA node, 278 s of recompiling), and its counters would describe the trace,
not the run. So a compiled cell judges the denoiser as users run it, and proves that attention is
in the compiled code by counting the SDPA nodes in the graphs handed to inductor (``sdpa_nodes``):
zero fails the cell, as zero routed calls fails an eager one.

One compiled denoiser per (pipeline, dtype, device, inductor settings) per process: the pipeline
cell and the perf item share it, and its first call (the compile) is timed apart.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from .specs import PipelineSpec

#: The row name of a compiled pipeline cell: the denoiser's own SDPA, compiled.
ROW = "sdpa+compile"
#: On CPU a whole-denoiser compile takes minutes (sd15's UNet: 259 s at load 9 on 2 cores, see
#: docs/compile.md), so by default only these pipelines and dtypes are compiled there; on CUDA, all.
CPU_PIPELINES = ("pixart",)
CPU_DTYPES = ("fp32",)


@dataclass
class CompiledDenoiser:
    """A pipeline whose denoiser is compiled, and what compiling it cost."""

    pipe: Any
    #: "unet" or "transformer": the attribute of the pipeline that was compiled
    component: str
    compiled: Any
    #: graphs handed to inductor (1 for a full graph; more means recompiles)
    graphs: int = 0
    #: scaled_dot_product_attention nodes in those graphs: the attention the compiled code runs
    sdpa_nodes: int = 0
    #: wall seconds inside inductor
    inductor_s: float = 0.0
    #: wall and CPU seconds of the first image with the compiled denoiser (tracing + compiling + run)
    first_image_s: float | None = None
    first_image_cpu_s: float | None = None
    #: extra facts for the record
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"compiled_component": self.component, "graphs": self.graphs, "sdpa_nodes": self.sdpa_nodes,
                "inductor_s": round(self.inductor_s, 3),
                "first_image_s": None if self.first_image_s is None else round(self.first_image_s, 3),
                "first_image_cpu_s": None if self.first_image_cpu_s is None else round(self.first_image_cpu_s, 3)}


def denoiser_name(pipe: Any) -> str:
    """The denoiser's attribute on the pipeline."""
    for name in ("unet", "transformer"):
        if getattr(pipe, name, None) is not None:
            return name
    raise ValueError(f"{type(pipe).__name__} has neither a unet nor a transformer to compile")


_compiled: dict[tuple[str, str, str, str, str], CompiledDenoiser] = {}


def compiled_pipeline(spec: "PipelineSpec", dtype: str, device: str = "cpu", *,
                      inductor_config: dict[str, Any] | None = None, key: str = "") -> CompiledDenoiser:
    """The pipeline of ``spec`` with its denoiser compiled (not yet run: compiling happens on the
    first image). A separate copy of the eager pipeline, so eager cells keep their eager model.
    ``inductor_config``: inductor settings for this copy only (tests plant graph passes with it);
    ``key`` tells such copies apart in the per-process cache."""
    import copy

    import torch

    from .specs import load_pipeline

    cache_key = (spec.name, spec.source, dtype, device, key)
    if cache_key in _compiled:
        return _compiled[cache_key]
    pipe = copy.copy(load_pipeline(spec, dtype, device))  # shallow: components shared, the denoiser swapped
    name = denoiser_name(pipe)
    holder = CompiledDenoiser(pipe, name, None)

    def backend(gm: Any, example_inputs: Any) -> Any:
        from torch._inductor.compile_fx import compile_fx

        holder.graphs += 1
        holder.sdpa_nodes += sum(1 for n in gm.graph.nodes
                                 if n.op == "call_function" and "scaled_dot_product" in str(n.target))
        start = time.perf_counter()
        try:
            return compile_fx(gm, example_inputs, config_patches=dict(inductor_config or {}))
        finally:
            holder.inductor_s += time.perf_counter() - start

    holder.compiled = torch.compile(getattr(pipe, name), backend=backend, fullgraph=True, dynamic=False)
    # diffusers' pipelines look components up by attribute (self.unet / self.transformer) and read
    # .config / .dtype from them: the OptimizedModule forwards both to the original module.
    setattr(pipe, name, holder.compiled)
    _compiled[cache_key] = holder
    return holder


def run_compiled(holder: CompiledDenoiser, spec: "PipelineSpec") -> "np.ndarray":
    """One image with the compiled denoiser; the first one is timed apart (it compiles)."""
    from .specs import run_pipeline

    with _no_routing_mode():
        if holder.first_image_s is not None:
            return run_pipeline(holder.pipe, spec)
        wall, cpu = time.perf_counter(), time.process_time()
        image = run_pipeline(holder.pipe, spec)
        holder.first_image_s, holder.first_image_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        return image


@contextlib.contextmanager
def _no_routing_mode() -> Iterator[None]:
    """Refuse to run under an active TorchFunctionMode (e.g. a routing block left open): dynamo
    would trace the mode into the denoiser's graph (see the module note)."""
    from torch.overrides import _get_current_function_mode

    mode = _get_current_function_mode()
    if mode is not None:
        raise RuntimeError(f"a compiled pipeline must not run under a TorchFunctionMode ({type(mode).__name__}): "
                           "dynamo would trace it into the graph; run it outside routing.route()")
    yield
