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
#: How q, k and v are stored: "transposed" is (B, S, H, D) storage viewed as BHSD (diffusers);
#: "expanded" shares one K/V across the batch with stride 0; "packed" slices q, k and v out of one
#: fused projection buffer (B, S, H + 2·Hkv, D), so k and v start at a storage offset (K/V alone are
#: packed when Sq != Skv, as a cross-attention's fused to_kv).
Layout = Literal["contiguous", "transposed", "expanded", "packed"]
#: The mask's leading dims before (Sq, Skv): its rank is len + 2. "B1" (B, 1, Sq, Skv) is the
#: classic one; an "H" gives every head its own content (ALiBi-style per-head biases); "H" / "1"
#: alone are 3-D masks, "" a 2-D (Sq, Skv) one. SDPA broadcasts them all to (B, H, Sq, Skv).
MaskDims = Literal["B1", "BH", "1H", "11", "H", "1", ""]
#: How the mask tensor is stored: "expanded" is a stride-0 view at the full broadcast shape
#: (``mask.expand(...)`` as diffusers passes it); "sliced" a non-contiguous view (every other
#: column of a wider buffer whose other columns hold garbage).
MaskLayout = Literal["contiguous", "expanded", "sliced"]
PadSide = Literal["right", "left"]
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
    mask_dims: MaskDims = "B1"
    mask_layout: MaskLayout = "contiguous"
    #: Key padding keeps a prefix ("right" padding) or a suffix ("left", as left-padded text).
    pad_side: PadSide = "right"
    #: Standard deviation of v. Beyond fp16's range (1e5) or below its normal range (1e-6) in bf16,
    #: a kernel that computes bf16 through fp16 overflows or flushes.
    v_scale: float = 1.0
    #: A common offset (in units of ``magnitude``) added to every key, one value per channel: softmax
    #: is blind to it, a K quantiser that does not subtract it loses the keys' spread (INT8/FP8 kernels).
    k_offset: float = 0.0
    #: Channels of K scaled by 16 (activation outliers: per-tensor or per-token quantisers fail there).
    k_outliers: int = 0

    # -- size and capability questions ----------------------------------------------------------
    @property
    def work(self) -> int:
        """B·H·Sq·Skv·D, the bound the strategies keep small so the CPU suite stays fast."""
        return self.batch * self.heads * self.sq * self.skv * self.head_dim

    @property
    def mask_rank(self) -> int:
        return len(self.mask_dims) + 2

    def mask_shape(self) -> tuple[int, ...]:
        """Shape of the mask's content (before any expand): (Bm, Hm, Sq | 1, Skv) cut to its rank."""
        bm = self.batch if self.mask_dims[:1] == "B" else 1
        hm = self.heads if "H" in self.mask_dims else 1
        rows = 1 if self.mask == "padding" else self.sq
        return (bm, hm, rows, self.skv)[4 - self.mask_rank:]

    def full_mask_shape(self) -> tuple[int, ...]:
        """What an "expanded" mask is expanded to: the broadcast shape at the mask's rank."""
        return (self.batch, self.heads, self.sq, self.skv)[4 - self.mask_rank:]

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
        """(q, k, v, attn_mask) in the case dtype, layout and device; drawn in fp32 from ``seed``.

        With every field at its default the draws are those of the first case space, bit for bit,
        so older repro lines and ledger cases rebuild the same tensors."""
        import torch

        gen = torch.Generator().manual_seed(self.seed)
        dtype = torch_dtype(self.dtype)
        b, h, hkv, d = self.batch, self.heads, self.kv_heads, self.head_dim

        def draw(heads: int, seq: int, std: float, batch: int) -> torch.Tensor:
            if self.layout == "transposed":  # stored (B, S, H, D) as diffusers does, viewed as BHSD
                t = torch.randn(batch, seq, heads, d, generator=gen).transpose(1, 2)
            else:
                t = torch.randn(batch, heads, seq, d, generator=gen)
            return t * std

        if self.layout == "packed":
            q, k, v = self._packed(gen)
        else:
            q = draw(h, self.sq, self.magnitude, b)
            kv_batch = 1 if self.layout == "expanded" else b
            k = draw(hkv, self.skv, self.magnitude, kv_batch)
            v = draw(hkv, self.skv, self.v_scale, kv_batch)
        self._shape_keys(gen, k)
        if self.layout == "packed":
            q, k, v = self._packed_cast(q, k, v, dtype)
        else:
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        if self.layout == "expanded":  # stride 0 along batch: one K/V shared by every row
            k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        mask = self._mask(gen, dtype)
        return tuple(t.to(self.device) if t is not None else None for t in (q, k, v, mask))  # type: ignore[return-value]

    def _packed(self, gen: "torch.Generator") -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """fp32 views into one fused buffer (B, S, H + 2·Hkv, D), or q apart and (B, Skv, 2·Hkv, D)."""
        import torch

        b, h, hkv, d = self.batch, self.heads, self.kv_heads, self.head_dim
        if self.sq == self.skv:
            buf = torch.randn(b, self.sq, h + 2 * hkv, d, generator=gen)
            q, k, v = buf[:, :, :h], buf[:, :, h:h + hkv], buf[:, :, h + hkv:]
        else:
            q = torch.randn(b, self.sq, h, d, generator=gen)
            buf = torch.randn(b, self.skv, 2 * hkv, d, generator=gen)
            k, v = buf[:, :, :hkv], buf[:, :, hkv:]
        q.mul_(self.magnitude), k.mul_(self.magnitude), v.mul_(self.v_scale)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    @staticmethod
    def _packed_cast(q, k, v, dtype) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """Cast each fused buffer once and slice it again, so the views share it at their offsets."""
        cast: dict[int, "torch.Tensor"] = {}  # by the buffer's address
        out = []
        for t in (q, k, v):
            base = t._base if t._base is not None else t  # the buffer the slice came from
            if base.data_ptr() not in cast:
                cast[base.data_ptr()] = base.to(dtype)
            out.append(cast[base.data_ptr()].as_strided(t.shape, t.stride(), t.storage_offset()))
        return out[0], out[1], out[2]

    def _shape_keys(self, gen: "torch.Generator", k: "torch.Tensor") -> None:
        """Common offset and outlier channels, in place on the fp32 keys (shared storage included)."""
        import torch

        d = self.head_dim
        if self.k_offset:
            k.add_(torch.randn(d, generator=gen) * (self.k_offset * self.magnitude))
        if self.k_outliers:
            channels = torch.randperm(d, generator=gen)[: min(self.k_outliers, d)]
            k[..., channels] *= 16.0

    def keep(self) -> "torch.Tensor | None":
        """The bool keep-pattern of the mask (True = attend), before causal, at the mask's own
        (unexpanded) shape; None without a mask."""
        import torch

        return self._keep(torch.Generator().manual_seed(self.seed + 7919))

    def _keep(self, gen: "torch.Generator") -> "torch.Tensor | None":
        import torch

        if self.mask == "none":
            return None
        shape = self.mask_shape()
        bm, hm = ((1, 1) + shape[:-2])[-2:]
        rows, skv = shape[-2], shape[-1]
        if self.mask == "padding":  # each (row, head) keeps a random prefix (suffix) of >= 1 key
            lengths = torch.randint(1, skv + 1, (bm, hm), generator=gen)
            pos = torch.arange(skv)[None, None, :]
            if self.pad_side == "left":
                pos = skv - 1 - pos
            return (pos < lengths[..., None]).view(shape)
        keep = torch.rand(bm, hm, rows, skv, generator=gen) > 0.3
        keep[..., 0] |= ~keep.any(dim=-1)  # random masks leave every row a key ...
        if self.mask == "dead-rows":  # ... unless rows are killed on purpose
            dead = torch.rand(bm, hm, rows, 1, generator=gen) < 0.25
            dead[0, 0, 0, 0] = True
            keep = keep & ~dead
        return keep.view(shape)

    def _mask(self, gen: "torch.Generator", dtype: "torch.dtype") -> "torch.Tensor | None":
        import torch

        keep = self.keep()
        if keep is None:
            return None
        if self.mask_type == "bool":
            mask = keep
        else:
            masked = {"-inf": float("-inf"), "min": torch.finfo(dtype).min, "-1e4": -1e4}[self.masked_value]
            # Additive masks also carry a small finite bias on kept positions, so a backend that
            # treats a float mask as a bool one is seen.
            bias = torch.randn(keep.shape, generator=gen) * 0.5
            if "H" in self.mask_dims and self.mask != "padding":
                bias = bias + self._alibi(keep.shape)
            mask = torch.where(keep, bias, torch.tensor(masked)).to(dtype)
        if self.mask_layout == "expanded":
            return mask.expand(self.full_mask_shape())
        if self.mask_layout == "sliced":  # every other column of a wider buffer; garbage between
            wide = torch.ones(*mask.shape[:-1], 2 * mask.shape[-1], dtype=mask.dtype)
            if mask.dtype != torch.bool:
                wide *= 1e4
            wide[..., 0::2] = mask
            return wide[..., 0::2]
        return mask

    def _alibi(self, shape: tuple[int, ...]) -> "torch.Tensor":
        """ALiBi: head h adds -slope_h·|i - j|, slopes 2^(-8(h+1)/H): per-head content by construction."""
        import torch

        heads = shape[-3]
        slopes = 2.0 ** (-8.0 * torch.arange(1, heads + 1) / heads)
        dist = (torch.arange(self.sq)[:, None] - torch.arange(self.skv)[None, :]).abs()
        return -(slopes[:, None, None] * dist).view(*([1] * (len(shape) - 3)), heads, self.sq, self.skv)

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
