"""Send every attention call of a pipeline through one backend, and count what went where.

Two hooks cover a diffusers pipeline:

* a ``TorchFunctionMode`` that catches ``torch.nn.functional.scaled_dot_product_attention``. That
  is where every attention of the built-in pipelines ends: diffusers' AttnProcessor2_0 (UNet,
  PixArt, the VAE's mid-block attention), diffusers' joint processors (SD3), transformers' "sdpa"
  attention (CLIP's causal attention, T5's padded attention with its position bias as a float
  mask), and diffusers' attention dispatch (Flux) when its active backend is "native";
* diffusers' ``attention_backend("native")`` for the duration of the run, so models that call
  ``dispatch_attention_fn`` (Flux, and any model set to another dispatch backend through the
  environment) reach SDPA too instead of a kernel of diffusers' own choosing; processors pinned
  to a backend of their own (``model.set_attention_backend(...)``) are unpinned for the run.

A call the backend does not claim (dtype, head_dim, mask kind, causal, GQA, its own constraint;
the same ``AttnCase.outside`` test the op-level suite uses) or that it refuses with ``Unsupported``
runs with the fp64 reference instead, and is counted and described in the stats: reported, never
hidden. ``backend=None`` routes every call to the fp64 reference (cast back to the call's dtype):
that is the image the attention-isolated and golden comparisons are made against.

``known`` (a known finding's ``explains`` over the call, as an AttnCase) counts the calls a ledger
finding is about; with ``divert`` those calls run with the fp64 reference instead, every other call
with the backend, which is how a pipeline cell tells a known finding from a second bug.

Global state (the function mode, diffusers' active backend, the module hooks) is restored when the
``with`` block ends, also on error.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from attnparity.backends.base import Backend


@dataclass
class RouteStats:
    """What one routed run did."""

    backend: str
    #: calls the backend under test computed
    routed: int = 0
    #: calls that ran with the fp64 reference instead, "<shape> (<why>)" -> count
    fallback: Counter[str] = field(default_factory=Counter)
    #: every intercepted call by pipeline component ("unet", "vae", "text_encoder", ...)
    by_component: Counter[str] = field(default_factory=Counter)
    #: routed call shapes -> count
    shapes: Counter[str] = field(default_factory=Counter)
    #: calls a known finding explains, finding id -> count (``route(known=...)``)
    known: Counter[str] = field(default_factory=Counter)

    @property
    def fallback_calls(self) -> int:
        return sum(self.fallback.values())

    @property
    def total(self) -> int:
        return self.routed + self.fallback_calls

    def to_extra(self) -> dict[str, Any]:
        return {"routed_calls": self.routed, "fallback_calls": self.fallback_calls,
                "fallback": dict(self.fallback), "calls_by_component": dict(self.by_component),
                "routed_shapes": dict(self.shapes), **({"known_calls": dict(self.known)} if self.known else {})}

    def describe_fallback(self, limit: int = 6) -> str:
        if not self.fallback:
            return ""
        items = self.fallback.most_common()
        text = "; ".join(f"{n}x {what}" for what, n in items[:limit])
        more = f"; and {len(items) - limit} more kinds" if len(items) > limit else ""
        return f"{self.fallback_calls} calls outside {self.backend}'s claims ran with the fp64 reference: {text}{more}"


def reference_attention(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    """fp64 reference math, cast back to the call's dtype (what the comparisons are made against)."""
    from attnparity.check.reference import reference_forward

    return reference_forward(q, k, v, attn_mask, "top-left" if is_causal else None, scale).to(q.dtype)


def _shape(q: "torch.Tensor", k: "torch.Tensor", mask: Any, is_causal: bool) -> str:
    from attnparity.backends.base import dtype_name

    b, h, sq, d = q.shape
    text = f"B{b} H{h}" + (f"/kv{k.shape[1]}" if k.shape[1] != h else "") + f" Sq{sq} Skv{k.shape[2]} D{d} {dtype_name(q.dtype)}"
    if mask is not None:
        text += " mask=" + ("bool" if str(mask.dtype) == "torch.bool" else "float")
    return text + (" causal" if is_causal else "")


def _case(q: "torch.Tensor", k: "torch.Tensor", mask: Any, is_causal: bool, scale: float | None) -> Any:
    """The call as an AttnCase, so the op-level capability test (``AttnCase.outside``) applies."""
    import torch

    from attnparity.backends.base import dtype_name
    from attnparity.check.cases import AttnCase

    return AttnCase(
        batch=q.shape[0], heads=q.shape[1], kv_heads=k.shape[1], sq=q.shape[2], skv=k.shape[2],
        head_dim=q.shape[3], dtype=dtype_name(q.dtype),
        mask="none" if mask is None else "random", mask_type="bool" if mask is None or mask.dtype == torch.bool else "float",
        causal="top-left" if is_causal else None, scale=scale,
        layout="expanded" if 0 in k.stride()[:1] else "contiguous", device=q.device.type,
    )


class _Components:
    """Which pipeline component is running: forward hooks on each component and its children push
    and pop its name (children too, because the VAE is entered through ``decode``, not ``forward``)."""

    def __init__(self, pipe: Any):
        import torch

        self.stack: list[str] = []
        self.handles: list[Any] = []
        components = getattr(pipe, "components", None) or {}
        for name, module in components.items():
            if not isinstance(module, torch.nn.Module):
                continue
            for child in (module, *module.children()):
                self.handles.append(child.register_forward_pre_hook(lambda *_, n=name: self.stack.append(n)))
                self.handles.append(child.register_forward_hook(lambda *_, n=name: self._pop(n), always_call=True))

    def _pop(self, name: str) -> None:
        if self.stack and self.stack[-1] == name:
            self.stack.pop()

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else "other"

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _mode_class() -> type:
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    from attnparity.backends.base import Unsupported

    sdpa = F.scaled_dot_product_attention

    class SdpaRouter(TorchFunctionMode):
        def __init__(self, backend: "Backend | None", stats: RouteStats, components: _Components,
                     known: "Callable[[Any], str | None] | None" = None, divert: bool = False):
            super().__init__()
            self.backend, self.stats, self.components = backend, stats, components
            self.known, self.divert = known, divert

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is not sdpa:
                return func(*args, **kwargs)
            # The mode is off while this runs, so a backend that calls SDPA itself is not re-caught.
            return self.attend(*args, **kwargs)

        def attend(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False):
            if query.dim() == 3:  # (N, L, E): one head
                mask = attn_mask if attn_mask is None or attn_mask.dim() < 3 else attn_mask.unsqueeze(1)
                return self.attend(query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1), mask,
                                   dropout_p, is_causal, scale, enable_gqa).squeeze(1)
            self.stats.by_component[self.components.current] += 1
            if query.dim() != 4 or dropout_p:
                # Nothing in the contract takes these: torch's own SDPA runs them, and says so.
                why = f"dropout_p={dropout_p}" if dropout_p else f"{query.dim()}-D query"
                self.stats.fallback[f"{tuple(query.shape)} ({why}; ran torch SDPA)"] += 1
                return sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                            is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
            shape = _shape(query, key, attn_mask, is_causal)
            call = dict(attn_mask=attn_mask, is_causal=is_causal, scale=scale)
            if self.backend is None:
                out = reference_attention(query, key, value, **call)
            else:
                case = _case(query, key, attn_mask, is_causal, scale)
                why = case.outside(self.backend.capabilities)
                finding = self.known(case) if self.known is not None and not why else None
                if finding is not None:
                    self.stats.known[finding] += 1
                    if self.divert:
                        self.stats.fallback[f"{shape} (known finding {finding}: sent to the reference)"] += 1
                        return reference_attention(query, key, value, **call)
                if why:
                    self.stats.fallback[f"{shape} ({why})"] += 1
                    return reference_attention(query, key, value, **call)
                try:
                    out = self.backend.fn(query, key, value, **call)
                except Unsupported as exc:
                    self.stats.fallback[f"{shape} (raised Unsupported: {exc})"] += 1
                    return reference_attention(query, key, value, **call)
            expected = (*query.shape[:-1], value.shape[-1])
            if tuple(out.shape) != expected:  # say so here, not as a shape error deep in the model
                raise RuntimeError(f"backend {self.stats.backend} returned shape {tuple(out.shape)} for {shape}; "
                                   f"expected {expected} (SDPA layout B, H, Sq, D)")
            self.stats.routed += 1
            self.stats.shapes[shape] += 1
            return out.to(query.dtype)

    return SdpaRouter


@contextlib.contextmanager
def route(pipe: Any, backend: "Backend | None", *, known: "Callable[[Any], str | None] | None" = None,
          divert: bool = False) -> Iterator[RouteStats]:
    """Within the block, every SDPA call of ``pipe`` goes to ``backend`` (None: the fp64
    reference). ``known(case)``: the id of the ledger finding that explains a call, or None; with
    ``divert`` such calls go to the reference. Yields the stats, filled in as the pipeline runs."""
    stats = RouteStats(backend.name if backend is not None else "reference")
    components = _Components(pipe)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_native_dispatch())
            stack.enter_context(_processors_on_default_backend(pipe))
            stack.enter_context(_mode_class()(backend, stats, components, known, divert))
            yield stats
    finally:
        components.remove()


@contextlib.contextmanager
def _native_dispatch() -> Iterator[None]:
    """diffusers' attention dispatch set to "native" (plain SDPA), restored afterwards."""
    try:
        from diffusers.models.attention_dispatch import attention_backend
    except ImportError:  # an older diffusers without the dispatcher: everything calls SDPA anyway
        yield
        return
    with attention_backend("native"):
        yield


@contextlib.contextmanager
def _processors_on_default_backend(pipe: Any) -> Iterator[None]:
    """Attention processors pinned to a dispatch backend of their own (``model.set_attention_backend
    ("flash")`` sets ``processor._attention_backend``) would bypass SDPA, and so the backend under
    test: unpin them for the run, and pin them back afterwards."""
    import torch

    pinned: list[tuple[Any, Any]] = []
    for component in (getattr(pipe, "components", None) or {}).values():
        if not isinstance(component, torch.nn.Module):
            continue
        for module in component.modules():
            processor = getattr(module, "processor", None)
            if getattr(processor, "_attention_backend", None) is not None:
                pinned.append((processor, processor.__dict__.get("_attention_backend")))
                processor._attention_backend = None
    try:
        yield
    finally:
        for processor, value in pinned:
            if value is None:  # it was the class default; drop the instance attribute again
                processor.__dict__.pop("_attention_backend", None)
            else:
                processor._attention_backend = value
