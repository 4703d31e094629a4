"""The attention shapes of real diffusion models, for the perf items.

Each shape is one attention call as the model makes it (B, heads, Sq, Skv, head_dim), derived from
the model's published config at its native resolution:

* SD1.5 (512 px, latent 64×64): UNet transformer blocks at 4096 / 1024 / 256 tokens with 320 / 640 /
  1280 channels and 8 heads → head_dim 40 / 80 / 160; cross-attention to 77 CLIP tokens.
* SD2.1 (head_dim 64, heads 5 / 10 / 20 at the same levels; 512-base and 768-v → 9216 tokens).
* SDXL (1024 px, latent 128×128; attention from the second level): 10 × 64 at 4096 tokens,
  20 × 64 at 1024; cross-attention to 77 tokens.
* PixArt-α (1024 px, patch 2 → 4096 tokens, hidden 1152 = 16 × 72); cross-attention to 120 T5 tokens.
* SD3-medium (1024 px): joint attention over 4096 image + 333 text (77 CLIP + 256 T5) = 4429 tokens,
  24 × 64.
* Flux.1 (1024 px): joint attention over 4096 image + 512 T5 = 4608 tokens, 24 × 128.
* Cross-attention to 256 keys: a 256-token T5 prompt (SD3's T5 length) read by PixArt-geometry
  cross-attention (16 × 72 at 4096 tokens).

Batch 2 is classifier-free guidance (conditional + unconditional in one call); Flux.1 is
guidance-distilled (no CFG batch), so it appears at batch 1 only.

The quick set on CPU uses the same models at a lower resolution (fewer tokens), labelled in each
shape's note: a 4096-token fp32 attention on two cores takes seconds per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attnparity.check.cases import AttnCase

MODES = ("quick", "full")


@dataclass(frozen=True)
class PerfShape:
    #: id used in the item name: "<model>-<role>-<Sq>[to<Skv>]-<H>x<D>-b<B>", e.g. "sdxl-self-4096-10x64-b2"
    name: str
    model: str
    role: str  # "self", "cross" or "joint"
    batch: int
    heads: int
    sq: int
    skv: int
    head_dim: int
    #: where the shape comes from (resolution, block), and whether it was reduced
    note: str = ""

    @property
    def flops(self) -> float:
        from .flops import attention_flops

        return attention_flops(self.batch, self.heads, self.sq, self.skv, self.head_dim)

    def case(self, dtype: str, device: str) -> "AttnCase":
        from attnparity.check.cases import AttnCase

        return AttnCase(batch=self.batch, heads=self.heads, kv_heads=self.heads, sq=self.sq, skv=self.skv,
                        head_dim=self.head_dim, dtype=dtype, device=device)

    def describe(self) -> str:
        return (f"{self.model} {self.role}: B{self.batch} H{self.heads} Sq{self.sq} Skv{self.skv} D{self.head_dim}"
                + (f" ({self.note})" if self.note else ""))


def _shape(model: str, key: str, role: str, batch: int, heads: int, sq: int, skv: int, head_dim: int,
           note: str) -> PerfShape:
    size = f"{sq}" if role != "cross" else f"{sq}to{skv}"
    # heads × head_dim in the id: one geometry, one name (a reduced shape never takes a native one's id)
    return PerfShape(f"{key}-{role}-{size}-{heads}x{head_dim}-b{batch}", model, role, batch, heads, sq, skv,
                     head_dim, note)


def _both_batches(model: str, key: str, role: str, heads: int, sq: int, skv: int, head_dim: int,
                  note: str) -> list[PerfShape]:
    return [_shape(model, key, role, b, heads, sq, skv, head_dim, note + (", CFG batch" if b == 2 else ""))
            for b in (1, 2)]


def full_catalogue() -> list[PerfShape]:
    """Every catalogued shape at the model's native resolution, batch 1 and 2 (CFG)."""
    shapes: list[PerfShape] = []
    for sq, heads, d, level in ((4096, 8, 40, "down/up level 1"), (1024, 8, 80, "level 2"), (256, 8, 160, "level 3")):
        shapes += _both_batches("SD1.5", "sd15", "self", heads, sq, sq, d, f"512px {level}")
        shapes += _both_batches("SD1.5", "sd15", "cross", heads, sq, 77, d, f"512px {level}, 77 CLIP tokens")
    for sq, heads, level in ((4096, 5, "level 1"), (1024, 10, "level 2"), (256, 20, "level 3")):
        shapes += _both_batches("SD2.1", "sd21", "self", heads, sq, sq, 64, f"512px base {level}")
    shapes += _both_batches("SD2.1", "sd21", "self", 5, 9216, 9216, 64, "768px v, level 1")
    shapes += _both_batches("SDXL", "sdxl", "self", 10, 4096, 4096, 64, "1024px level 2")
    shapes += _both_batches("SDXL", "sdxl", "self", 20, 1024, 1024, 64, "1024px level 3")
    shapes += _both_batches("SDXL", "sdxl", "cross", 10, 4096, 77, 64, "1024px level 2, 77 CLIP tokens")
    shapes += _both_batches("SDXL", "sdxl", "cross", 20, 1024, 77, 64, "1024px level 3, 77 CLIP tokens")
    shapes += _both_batches("PixArt-α", "pixart", "self", 16, 4096, 4096, 72, "1024px, patch 2")
    shapes += _both_batches("PixArt-α", "pixart", "cross", 16, 4096, 120, 72, "1024px, 120 T5 tokens")
    shapes += _both_batches("SD3", "sd3", "joint", 24, 4429, 4429, 64, "1024px: 4096 image + 333 text tokens")
    shapes += _both_batches("T5-256", "t5", "cross", 16, 4096, 256, 72, "PixArt geometry: 4096 image tokens to a 256-token T5 prompt")
    shapes.append(_shape("Flux.1", "flux", "joint", 1, 24, 4608, 4608, 128,
                         "1024px: 4096 image + 512 T5 tokens (guidance-distilled: no CFG batch)"))
    return shapes


def quick_gpu() -> list[PerfShape]:
    """A few of the heaviest real shapes, at native resolution."""
    wanted = {"sd15-self-4096-8x40-b2", "sd15-cross-4096to77-8x40-b2", "sdxl-self-4096-10x64-b2",
              "pixart-self-4096-16x72-b2", "sd3-joint-4429-24x64-b2", "flux-joint-4608-24x128-b1"}
    return [s for s in full_catalogue() if s.name in wanted]


def quick_cpu() -> list[PerfShape]:
    """Real diffusion shapes small enough for a few seconds per backend on a small CPU, batch 1.

    SD1.5's first-level self-attention is taken at 256 px (1024 tokens instead of 4096 at 512 px):
    marked REDUCED in its note and model label. The others are native shapes of real checkpoints.
    """
    return [
        _shape("SD1.5@256px", "sd15", "self", 1, 8, 1024, 1024, 40,
               "REDUCED: 256px image (1024 tokens; 4096 at 512px)"),
        _shape("SD1.5@256px", "sd15", "cross", 1, 8, 1024, 77, 40,
               "REDUCED: 256px image (1024 tokens; 4096 at 512px), 77 CLIP tokens"),
        _shape("SD1.5", "sd15", "self", 1, 8, 256, 256, 160, "512px level 3 (native)"),
        _shape("SDXL", "sdxl", "cross", 1, 20, 1024, 77, 64, "1024px level 3, 77 CLIP tokens (native)"),
        _shape("PixArt-α 256", "pixart", "self", 1, 16, 256, 256, 72, "PixArt-α 256px checkpoint (native)"),
    ]


def select(mode: str, device: str) -> list[PerfShape]:
    """The shapes of ``--attn-perf=quick|full`` on ``device``."""
    if mode not in MODES:
        raise ValueError(f"--attn-perf={mode}: expected one of {', '.join(MODES)}")
    if mode == "full":
        return full_catalogue()
    return quick_gpu() if device.startswith("cuda") else quick_cpu()
