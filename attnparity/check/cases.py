"""AttnCase: one attention input, fully described by plain values, so it can be shrunk by
hypothesis, printed in a failure, written to results.json and rebuilt bit for bit from a repro line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal

from attnparity.backends.base import Capabilities, torch_dtype

if TYPE_CHECKING:
    import torch

MaskKind = Literal["none", "random", "padding", "dead-rows"]
MaskType = Literal["bool", "float"]
CausalKind = Literal["top-left", "bottom-right"] | None
Layout = Literal["contiguous", "transposed", "expanded"]
#: What a masked-out position holds in an additive float mask. "min" is finfo(dtype).min, which
#: overflows to -inf once added to a negative logit (a classic source of NaN).
MaskedValue = Literal["-inf", "min", "-1e4"]


@dataclass(frozen=True)
class AttnCase:
    batch: int = 1
    heads: int = 1
    kv_heads: int = 1
    sq: int = 16
    skv: int = 16
    head_dim: int = 64
    dtype: str = "fp32"
    mask: MaskKind = "none"
    mask_type: MaskType = "bool"
    masked_value: MaskedValue = "-inf"
    causal: CausalKind = None
    scale: float | None = None
    #: Standard deviation of q and k (v stays unit): large values give peaked, large logits.
    magnitude: float = 1.0
    layout: Layout = "contiguous"
    seed: int = 0
    device: str = "cpu"

    # -- size and capability questions ----------------------------------------------------------
    @property
    def work(self) -> int:
        """B·H·Sq·Skv·D, the bound the strategies keep small so the CPU suite stays fast."""
        return self.batch * self.heads * self.sq * self.skv * self.head_dim

    @property
    def mask_tensor_kind(self) -> str | None:
        return None if self.mask == "none" else self.mask_type

    def outside(self, caps: Capabilities) -> str | None:
        """Why this case is outside what ``caps`` claims, or None when the backend must handle it."""
        if self.device.split(":")[0] not in caps.devices:
            return f"device {self.device} not claimed"
        if self.dtype not in caps.dtype_names:
            return f"dtype {self.dtype} not claimed"
        if not caps.supports_head_dim(self.head_dim):
            return f"head_dim {self.head_dim} not claimed"
        if self.mask_tensor_kind is not None and self.mask_tensor_kind not in caps.masks:
            return f"{self.mask_type} masks not claimed"
        if self.causal is not None and caps.causal_mode != self.causal:
            return f"causal {self.causal} not claimed (claims {caps.causal_mode or 'none'})"
        if self.kv_heads != self.heads and not caps.gqa:
            return "GQA/MQA not claimed"
        if caps.max_seq is not None and max(self.sq, self.skv) > caps.max_seq:
            return f"sequence longer than {caps.max_seq}"
        return caps.constraint(self) if caps.constraint is not None else None

    # -- tensors --------------------------------------------------------------------------------
    def tensors(self) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor | None"]:
        """(q, k, v, attn_mask) in the case dtype, layout and device; drawn in fp32 from ``seed``."""
        import torch

        gen = torch.Generator().manual_seed(self.seed)
        dtype = torch_dtype(self.dtype)
        b, h, hkv, d = self.batch, self.heads, self.kv_heads, self.head_dim

        def draw(heads: int, seq: int, std: float, batch: int) -> torch.Tensor:
            if self.layout == "transposed":  # stored (B, S, H, D) as diffusers does, viewed as BHSD
                t = torch.randn(batch, seq, heads, d, generator=gen).transpose(1, 2)
            else:
                t = torch.randn(batch, heads, seq, d, generator=gen)
            return (t * std).to(dtype)

        q = draw(h, self.sq, self.magnitude, b)
        kv_batch = 1 if self.layout == "expanded" else b
        k = draw(hkv, self.skv, self.magnitude, kv_batch)
        v = draw(hkv, self.skv, 1.0, kv_batch)
        if self.layout == "expanded":  # stride 0 along batch: one K/V shared by every row
            k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        mask = self._mask(gen, dtype)
        return tuple(t.to(self.device) if t is not None else None for t in (q, k, v, mask))  # type: ignore[return-value]

    def keep(self) -> "torch.Tensor | None":
        """The bool keep-pattern of the mask (True = attend), before causal; None without a mask."""
        import torch

        return self._keep(torch.Generator().manual_seed(self.seed + 7919))

    def _keep(self, gen: "torch.Generator") -> "torch.Tensor | None":
        import torch

        b, sq, skv = self.batch, self.sq, self.skv
        if self.mask == "none":
            return None
        if self.mask == "padding":  # (B, 1, 1, Skv): each row keeps a random prefix of >= 1 key
            lengths = torch.randint(1, skv + 1, (b,), generator=gen)
            return (torch.arange(skv)[None, :] < lengths[:, None]).view(b, 1, 1, skv)
        keep = torch.rand(b, 1, sq, skv, generator=gen) > 0.3
        keep[..., 0] |= ~keep.any(dim=-1)  # random masks leave every row a key ...
        if self.mask == "dead-rows":  # ... unless rows are killed on purpose
            dead = torch.rand(b, 1, sq, 1, generator=gen) < 0.25
            dead[0, 0, 0, 0] = True
            keep = keep & ~dead
        return keep

    def _mask(self, gen: "torch.Generator", dtype: "torch.dtype") -> "torch.Tensor | None":
        import torch

        keep = self.keep()
        if keep is None:
            return None
        if self.mask_type == "bool":
            return keep
        masked = {"-inf": float("-inf"), "min": torch.finfo(dtype).min, "-1e4": -1e4}[self.masked_value]
        # Additive masks also carry a small finite bias on kept positions, so a backend that
        # treats a float mask as a bool one is seen.
        bias = torch.randn(keep.shape, generator=gen) * 0.5
        return torch.where(keep, bias, torch.tensor(masked)).to(dtype)

    # -- text -----------------------------------------------------------------------------------
    def short(self) -> str:
        parts = [f"B{self.batch} H{self.heads}" + (f"/kv{self.kv_heads}" if self.kv_heads != self.heads else ""),
                 f"Sq{self.sq} Skv{self.skv} D{self.head_dim} {self.dtype}"]
        if self.mask != "none":
            parts.append(f"mask={self.mask}:{self.mask_type}" + (f"({self.masked_value})" if self.mask_type == "float" else ""))
        if self.causal:
            parts.append(f"causal={self.causal}")
        if self.scale is not None:
            parts.append(f"scale={self.scale:g}")
        if self.magnitude != 1.0:
            parts.append(f"mag={self.magnitude:g}")
        if self.layout != "contiguous":
            parts.append(self.layout)
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AttnCase":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def literal(self) -> str:
        """Python source that rebuilds this case (non-default fields only)."""
        default = AttnCase()
        args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                         if getattr(self, f.name) != getattr(default, f.name))
        return f"AttnCase({args})"

    def with_(self, **changes: Any) -> "AttnCase":
        return replace(self, **changes)
