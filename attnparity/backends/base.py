"""The public backend contract: ``Backend``, ``Capabilities``, ``Unsupported``.

Vendors build on these names and fields; keep them stable (docs/vendor.md, "The contract").
No torch import at module level: the plugin must cost nothing when ``--attn-backends`` is absent.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

#: Every mask kind a backend may claim. "bool" (True = keep) and "float" (additive) are the kinds
#: of the contract; key padding and fully masked rows are drawn as bool or float masks.
MASK_KINDS = frozenset({"bool", "float"})
#: The dtypes the matrix knows, by short name (names keep records and node ids torch-free).
DTYPE_NAMES = ("fp32", "fp16", "bf16")

CausalMode = Literal["top-left", "bottom-right"]


class Unsupported(Exception):
    """Raised by a backend's fn for an input outside what it supports.

    The harness treats it as a skip of that one case, never as a pass: a backend that raises it for
    a case its Capabilities claim fails (claims must be honest).
    """


def dtype_name(dtype: Any) -> str:
    """'fp32' / 'fp16' / 'bf16' for a torch dtype or a name (already short or torch's own)."""
    text = str(dtype).replace("torch.", "")
    return {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16",
            "bfloat16": "bf16", "float64": "fp64", "double": "fp64"}.get(text, text)


def torch_dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
            "fp64": torch.float64}[dtype_name(name)]


def _default_dtypes() -> frozenset[Any]:
    import torch

    return frozenset({torch.float32, torch.float16, torch.bfloat16})


@dataclass(frozen=True)
class Capabilities:
    """What a backend claims. Cases outside the claim are not run; cases inside must match.

    The defaults are the permissive ones of the contract.
    """

    devices: Iterable[str] = frozenset({"cpu", "cuda"})
    dtypes: Iterable[Any] = field(default_factory=_default_dtypes)
    #: Any container of ints (``range(8, 257, 8)``, a set); None means any head_dim.
    head_dims: Container[int] | None = None
    masks: Iterable[str] = MASK_KINDS
    #: True (= "top-left", torch SDPA's alignment), "bottom-right" (flash-attn >= 2.1), or False.
    causal: bool | CausalMode = True
    gqa: bool = True
    backward: bool = False
    #: What a fully masked query row gives: "zero" (torch >= 2.5 SDPA) or "finite" (documented
    #: otherwise, e.g. the mean of V). NaN is never acceptable either way. "finite" also covers rows
    #: whose every key a float mask sets to finfo.min: the reference gives them the mean of V, a
    #: kernel that computes exp2 of the biased scores (compiled flex on CUDA) overflows them to 0.
    fully_masked: Literal["zero", "finite"] = "zero"
    #: Bitwise-identical output for identical input, run to run.
    deterministic: bool = True
    #: NaN in masked-out keys/values never reaches kept outputs (stricter than the contract's
    #: default: torch's own kernels compute 0 * NaN = NaN there). Checked only where claimed.
    masked_nan_safe: bool = False
    #: Longest sequence the backend accepts (None: no limit of its own).
    max_seq: int | None = None
    #: Finer rules the fields above cannot say (an addition to the contract, optional): called with
    #: an AttnCase, returns None when the case is claimed, else why not. Torch's SDPA kernels use it
    #: for rules such as "no arbitrary mask on CUDA flash".
    constraint: Callable[[Any], str | None] | None = None

    def __post_init__(self) -> None:
        # Normalise to frozensets so capability objects hash and compare, whatever was passed.
        object.__setattr__(self, "devices", frozenset(self.devices))
        object.__setattr__(self, "dtypes", frozenset(self.dtypes))
        object.__setattr__(self, "masks", frozenset(self.masks))
        unknown = set(self.masks) - MASK_KINDS
        if unknown:
            raise ValueError(f"unknown mask kinds {sorted(unknown)}; known: {sorted(MASK_KINDS)}")
        if self.causal not in (True, False, "top-left", "bottom-right"):
            raise ValueError(f"causal must be True, False, 'top-left' or 'bottom-right', not {self.causal!r}")
        if self.fully_masked not in ("zero", "finite"):
            raise ValueError(f"fully_masked must be 'zero' or 'finite', not {self.fully_masked!r}")

    # -- questions the harness asks ------------------------------------------------------------
    @property
    def dtype_names(self) -> frozenset[str]:
        return frozenset(dtype_name(d) for d in self.dtypes)

    @property
    def causal_mode(self) -> CausalMode | None:
        """The alignment the backend's ``is_causal=True`` means, or None when it has no causal."""
        if self.causal is False:
            return None
        return "bottom-right" if self.causal == "bottom-right" else "top-left"

    def supports_head_dim(self, head_dim: int) -> bool:
        return self.head_dims is None or head_dim in self.head_dims

    def describe(self) -> str:
        """One line for ``--attn-list``."""
        dims = "any" if self.head_dims is None else _describe_dims(self.head_dims)
        return (
            f"devices={','.join(sorted(self.devices))} dtypes={','.join(sorted(self.dtype_names))} "
            f"head_dim={dims} masks={','.join(sorted(self.masks)) or 'none'} "
            f"causal={self.causal_mode or 'no'} gqa={'yes' if self.gqa else 'no'} "
            f"backward={'yes' if self.backward else 'no'}"
        )


def _describe_dims(dims: Container[int]) -> str:
    if isinstance(dims, range):
        return f"{dims.start}..{dims.stop - 1}" + (f" step {dims.step}" if dims.step != 1 else "")
    try:
        values = sorted(dims)  # type: ignore[call-overload]
    except TypeError:
        return "custom"
    return ",".join(map(str, values)) if len(values) <= 6 else f"{values[0]}..{values[-1]} ({len(values)} values)"


AttentionFn = Callable[..., Any]


@dataclass
class Backend:
    """One attention implementation in the matrix.

    ``fn(q, k, v, *, attn_mask=None, is_causal=False, scale=None)`` in SDPA's (B, H, S, D) layout.
    ``is_available`` (optional) returns None when the backend can run here, else the reason it
    cannot ("flash-attn not installed", "needs sm80+"): such a backend is a skipped row, never an
    error.
    """

    name: str
    fn: AttentionFn
    capabilities: Capabilities = field(default_factory=Capabilities)
    is_available: Callable[[], str | None] | None = None
    description: str = ""
    #: Where it came from: "builtin", "entry point <dist>", "register_backend" (set by the registry).
    origin: str = "builtin"
    #: When set, why ``--attn-backends=all`` leaves the backend out (it costs too much to run by
    #: default, e.g. a compiled row on CPU); a name or a glob still selects it.
    opt_in: str | None = None
    #: For a backend whose cost is per input *structure*, not per call (a torch.compile'd row with
    #: dynamic shapes compiles one graph per dtype, mask kind, causal, GQA, baked-in scale and size
    #: 1; check/strategies.structure): how many distinct structures one forward item tries. Its
    #: cases, edge corpus and drawn, then keep to those structures, spread over their axes; shapes
    #: and values within them are searched as for any backend. The other items try fewer
    #: (suite/op.py). None (the default): no bound, every case is drawn freely.
    structures: int | None = None
    #: With ``structures``, for a backend whose code is specialized on more than
    #: check/strategies.structure says: what more, of a case (an AttnCase), as a tuple (flex: head
    #: counts, head_dim, block sides); the structure is ``structure(case)`` plus it. None: nothing more.
    structure_key: Callable[[Any], tuple[Any, ...]] | None = None

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name) or "[" in self.name or "]" in self.name:
            raise ValueError(f"backend name {self.name!r} must be non-empty, with no spaces or brackets")
        if not callable(self.fn):
            raise TypeError(f"backend {self.name!r}: fn must be callable, got {type(self.fn).__name__}")
        if self.structures is not None and self.structures < 1:
            raise ValueError(f"backend {self.name!r}: structures must be None or at least 1, not {self.structures}")
        if self.structure_key is not None and self.structures is None:
            raise ValueError(f"backend {self.name!r}: structure_key is only read with structures; set "
                             "structures=N (how many structures a forward item tries) too")

    def unavailable_reason(self) -> str | None:
        """None when usable here; else why not. A crash while asking is itself the reason."""
        if self.is_available is None:
            return None
        try:
            reason = self.is_available()
        except Exception as exc:  # a vendor's probe must not break the matrix
            return f"is_available() raised {type(exc).__name__}: {exc}"
        if reason is True or reason is None:
            return None
        if reason is False:
            return "is_available() returned False"
        return str(reason)

    def __call__(self, q: Any, k: Any, v: Any, *, attn_mask: Any = None, is_causal: bool = False,
                 scale: float | None = None) -> Any:
        return self.fn(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)
