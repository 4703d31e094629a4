"""Tiny seeded diffusers pipelines (sd15, sdxl, pixart, sd3, flux) and user checkpoints.

The built-in pipelines are the real diffusers pipeline classes, run through their real
``__call__``, with models built from small configs (shaped after diffusers' own fast tests'
``get_dummy_components``) and weights drawn from a fixed seed: no hub, no download. Tokenizers come
from ``tokenizers/`` (package data, made by ``make_tokenizers.py``).

Every image is 64x64, a few steps, from fp32 latents drawn from a fixed seed and handed to the
pipeline explicitly (cast to the pipeline dtype), so every dtype and backend starts from the same
noise. Built pipelines are cached per process (``load_pipeline``): a session builds each once per
dtype, never per item.

The models are deliberately sensitive to attention: query/key projections are scaled up at build
time (``SHARPEN``) so attention weights are peaked, as in trained models, rather than the nearly
uniform weights of a fresh init, where a wrong softmax scale would barely move the image.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnparity.machine import torch_threads

if TYPE_CHECKING:
    import numpy as np
    import torch

TOKENIZERS = Path(__file__).parent / "tokenizers"
BUILTIN = ("sd15", "sdxl", "pixart", "sd3", "flux")
SIZE = 64
STEPS = 4
SEED = 0
PROMPT = "a painting of a squirrel eating a burger"
#: Token lengths: short, so text encoders stay cheap; long enough that prompts get padded.
CLIP_TOKENS = 32
T5_TOKENS = 32
#: Multiplier on to_q / to_k (and text encoders' q/k) weights of the seeded models: logits with a
#: spread like trained models', so attention (and a wrong softmax scale) moves the image.
SHARPEN = 4.0


class PipelineSpecError(ValueError):
    """A user pipeline path that is missing or does not load: a usage error, said plainly."""


@dataclass(frozen=True)
class PipelineSpec:
    """One pipeline of the matrix: how to build it and how to call it."""

    name: str
    #: "builtin" or the checkpoint directory
    source: str
    build: Callable[[], Any] = field(compare=False, repr=False)
    size: int = SIZE
    steps: int = STEPS
    seed: int = SEED
    prompt: str = PROMPT
    call_kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def builtin(self) -> bool:
        return self.source == "builtin"

    def describe(self) -> dict[str, Any]:
        """What the golden manifest records about how the image was made."""
        return {"pipeline": self.name, "source": self.source, "size": self.size, "steps": self.steps,
                "seed": self.seed, "prompt": self.prompt, "call": dict(self.call_kwargs)}


# -- tokenizers and text encoders -------------------------------------------------------------------
def _clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(TOKENIZERS / "clip", model_max_length=CLIP_TOKENS, local_files_only=True)


def _t5_tokenizer() -> Any:
    from transformers import T5Tokenizer

    return T5Tokenizer.from_pretrained(TOKENIZERS / "t5", model_max_length=T5_TOKENS, local_files_only=True)


def _clip_config(tokenizer: Any, projection: int = 32) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=2,
        num_hidden_layers=2, max_position_embeddings=CLIP_TOKENS, projection_dim=projection,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_act="gelu", layer_norm_eps=1e-5,
        attn_implementation="sdpa",  # attention goes through F.scaled_dot_product_attention
    )


def _t5_encoder(tokenizer: Any, d_model: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=16, d_ff=64, num_layers=2,
                      num_heads=d_model // 16, relative_attention_num_buckets=8, dropout_rate=0.0,
                      is_encoder_decoder=False, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, attn_implementation="sdpa")
    return T5EncoderModel(config)


def _sharpen(*models: Any) -> None:
    """Scale query and key projections (diffusers' to_q/to_k/add_q_proj/add_k_proj, CLIP's
    q_proj/k_proj, T5's q/k) so the softmax sees logits of a trained model's spread."""
    import torch

    pattern = re.compile(r"(^|\.)(to_q|to_k|add_q_proj|add_k_proj|q_proj|k_proj|q|k)$")
    with torch.no_grad():
        for model in models:
            for name, module in model.named_modules():
                if pattern.search(name) and isinstance(module, torch.nn.Linear):
                    module.weight.mul_(SHARPEN)


def _vae(latent_channels: int = 4, **extra: Any) -> Any:
    from diffusers import AutoencoderKL

    # Three blocks: 64x64 images <-> 16x16 latents; the mid block has one attention (1 head of 32).
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         block_out_channels=(8, 16, 32), layers_per_block=1, norm_num_groups=8,
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         sample_size=SIZE, **extra)


def _seeded(seed: int, make: Callable[[], Any]) -> Any:
    """Build under a fixed seed without disturbing the caller's RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


# -- the five built-in pipelines --------------------------------------------------------------------
def build_sd15() -> Any:
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = _clip_tokenizer()
    text_encoder = _seeded(1, lambda: CLIPTextModel(_clip_config(tokenizer)))
    unet = _seeded(2, lambda: UNet2DConditionModel(
        sample_size=SIZE // 4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=16, cross_attention_dim=32, attention_head_dim=(2, 2),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")))
    vae = _seeded(3, _vae)
    _sharpen(text_encoder, unet, vae)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def build_sdxl() -> Any:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = _clip_tokenizer()
    tokenizer_2 = _clip_tokenizer()
    text_encoder = _seeded(1, lambda: CLIPTextModel(_clip_config(tokenizer)))
    text_encoder_2 = _seeded(4, lambda: CLIPTextModelWithProjection(_clip_config(tokenizer_2, projection=32)))
    unet = _seeded(2, lambda: UNet2DConditionModel(
        sample_size=SIZE // 4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=16, attention_head_dim=(2, 4),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), use_linear_projection=True, cross_attention_dim=64,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + 32))
    vae = _seeded(3, _vae)
    _sharpen(text_encoder, text_encoder_2, unet, vae)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler)


def build_pixart() -> Any:
    from diffusers import DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    tokenizer = _t5_tokenizer()
    text_encoder = _seeded(1, lambda: _t5_encoder(tokenizer, d_model=32))
    transformer = _seeded(2, lambda: PixArtTransformer2DModel(
        sample_size=SIZE // 4, num_layers=2, patch_size=2, attention_head_dim=16, num_attention_heads=2,
        caption_channels=32, in_channels=4, cross_attention_dim=32, out_channels=8, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6))
    vae = _seeded(3, _vae)
    _sharpen(text_encoder, transformer, vae)
    return PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                               transformer=transformer, scheduler=DDIMScheduler())


def build_sd3() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    tokenizer, tokenizer_2, tokenizer_3 = _clip_tokenizer(), _clip_tokenizer(), _t5_tokenizer()
    text_encoder = _seeded(1, lambda: CLIPTextModelWithProjection(_clip_config(tokenizer, projection=32)))
    text_encoder_2 = _seeded(4, lambda: CLIPTextModelWithProjection(_clip_config(tokenizer_2, projection=32)))
    text_encoder_3 = _seeded(5, lambda: _t5_encoder(tokenizer_3, d_model=64))  # >= 2 x CLIP hidden
    transformer = _seeded(2, lambda: SD3Transformer2DModel(
        sample_size=SIZE // 4, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=16,
        num_attention_heads=2, caption_projection_dim=32, joint_attention_dim=64, pooled_projection_dim=64,
        out_channels=4, pos_embed_max_size=SIZE // 4))
    vae = _seeded(3, lambda: _vae(shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False,
                                  use_post_quant_conv=False))
    _sharpen(text_encoder, text_encoder_2, text_encoder_3, transformer, vae)
    return StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                                    text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                                    tokenizer_2=tokenizer_2, text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3)


def build_flux() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tokenizer, tokenizer_2 = _clip_tokenizer(), _t5_tokenizer()
    text_encoder = _seeded(1, lambda: CLIPTextModel(_clip_config(tokenizer)))
    text_encoder_2 = _seeded(5, lambda: _t5_encoder(tokenizer_2, d_model=32))
    transformer = _seeded(2, lambda: FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8]))
    vae = _seeded(3, lambda: _vae(shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False,
                                  use_post_quant_conv=False))
    _sharpen(text_encoder, text_encoder_2, transformer, vae)
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                        transformer=transformer)


_CALL = {
    "sd15": (("guidance_scale", 5.0),),
    "sdxl": (("guidance_scale", 5.0),),
    "pixart": (("guidance_scale", 4.5), ("use_resolution_binning", False), ("clean_caption", False),
               ("max_sequence_length", T5_TOKENS)),
    "sd3": (("guidance_scale", 5.0), ("max_sequence_length", T5_TOKENS)),
    "flux": (("guidance_scale", 3.5), ("max_sequence_length", T5_TOKENS)),
}
#: Call arguments a pipeline class needs to run at our small size, for user checkpoints too.
_CLASS_CALL = {
    "PixArtAlphaPipeline": (("use_resolution_binning", False), ("clean_caption", False)),
    "PixArtSigmaPipeline": (("use_resolution_binning", False), ("clean_caption", False)),
}
_BUILDERS = {"sd15": build_sd15, "sdxl": build_sdxl, "pixart": build_pixart, "sd3": build_sd3, "flux": build_flux}


def builtin_spec(name: str) -> PipelineSpec:
    if name not in _BUILDERS:
        raise PipelineSpecError(f"unknown built-in pipeline {name!r}; known: {', '.join(BUILTIN)}")
    return PipelineSpec(name, "builtin", _BUILDERS[name], call_kwargs=_CALL[name])


# -- user checkpoints -------------------------------------------------------------------------------
def checkpoint_spec(path: str | Path, rootdir: Path | None = None) -> PipelineSpec:
    """A local diffusers checkpoint (a directory with model_index.json). Checked now, loaded lazily."""
    raw = Path(path).expanduser()
    where = raw if raw.is_absolute() or rootdir is None else Path(rootdir) / raw
    if not where.is_dir():
        raise PipelineSpecError(f"--attn-pipeline={path}: no such directory ({where}); pass a local diffusers "
                                "checkpoint directory, the one that holds model_index.json")
    if not (where / "model_index.json").is_file():
        raise PipelineSpecError(f"--attn-pipeline={path}: {where} has no model_index.json, so it is not a diffusers "
                                "pipeline checkpoint (save one with pipe.save_pretrained(dir))")
    try:
        index = json.loads((where / "model_index.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PipelineSpecError(f"--attn-pipeline={path}: {where / 'model_index.json'} is not readable JSON ({exc})") from None
    if not isinstance(index, dict) or "_class_name" not in index:
        raise PipelineSpecError(f"--attn-pipeline={path}: {where / 'model_index.json'} names no pipeline class "
                                "(no '_class_name'); is this a diffusers pipeline directory?")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", where.resolve().name).strip("-") or "pipeline"
    if name in BUILTIN:
        name = f"local-{name}"

    def build() -> Any:
        from diffusers import DiffusionPipeline

        try:
            return DiffusionPipeline.from_pretrained(str(where), local_files_only=True)
        except Exception as exc:  # what diffusers raises for a broken checkpoint varies by component
            raise PipelineSpecError(f"--attn-pipeline={path}: DiffusionPipeline.from_pretrained({str(where)!r}, "
                                    f"local_files_only=True) failed: {type(exc).__name__}: {exc}") from None

    return PipelineSpec(name, str(where.resolve()), build)


def specs_for(paths: list[str] | None, rootdir: Path | None = None) -> list[PipelineSpec]:
    """The built-ins, then each user checkpoint (names made unique)."""
    out = [builtin_spec(n) for n in BUILTIN]
    seen = set(BUILTIN)
    for path in paths or []:
        if not str(path).strip():
            continue
        spec = checkpoint_spec(str(path).strip(), rootdir)
        if spec.name in seen:
            digest = hashlib.sha256(spec.source.encode()).hexdigest()[:6]
            spec = PipelineSpec(f"{spec.name}-{digest}", spec.source, spec.build)
        seen.add(spec.name)
        out.append(spec)
    return out


# -- building (cached) and running ------------------------------------------------------------------
#: (name, source, dtype, device) -> built pipeline; one per process (xdist: one per worker).
_PIPELINES: dict[tuple[str, str, str, str], Any] = {}


def load_pipeline(spec: PipelineSpec, dtype: str, device: str = "cpu") -> Any:
    """The pipeline of ``spec`` in ``dtype`` ("fp32", "bf16", "fp16") on ``device``, built once per
    process. Every dtype and device is the same fp32 weights cast and moved, so images differ by
    arithmetic only."""
    import torch

    from attnparity.backends.base import torch_dtype

    key = (spec.name, spec.source, dtype, device)
    if key in _PIPELINES:
        return _PIPELINES[key]
    if dtype == "fp32" and device == "cpu":
        pipe = spec.build()
        pipe.set_progress_bar_config(disable=True)
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()
    else:
        import copy

        from diffusers.utils import logging as dlogging

        pipe = copy.deepcopy(load_pipeline(spec, "fp32", "cpu"))
        level = dlogging.get_verbosity()
        dlogging.set_verbosity_error()  # "modules that should be kept in float32": none here, we cast on purpose
        try:
            pipe = pipe.to(device=device, dtype=torch_dtype(dtype))
        finally:
            dlogging.set_verbosity(level)
    _PIPELINES[key] = pipe
    return pipe


def _latents(pipe: Any, spec: PipelineSpec) -> "torch.Tensor | None":
    """fp32 noise from the spec's seed in the layout the pipeline class expects, or None for a class
    we do not know (then a seeded generator is passed instead)."""
    import torch

    kind = type(pipe).__name__
    gen = torch.Generator("cpu").manual_seed(spec.seed)
    scale = getattr(pipe, "vae_scale_factor", 8)
    side = spec.size // scale
    if kind in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        return torch.randn(1, pipe.unet.config.in_channels, side, side, generator=gen)
    if kind in ("PixArtAlphaPipeline", "PixArtSigmaPipeline", "StableDiffusion3Pipeline"):
        return torch.randn(1, pipe.transformer.config.in_channels, side, side, generator=gen)
    if kind == "FluxPipeline":
        channels = pipe.transformer.config.in_channels // 4
        side = 2 * (spec.size // (scale * 2))
        noise = torch.randn(1, channels, side, side, generator=gen)
        return pipe._pack_latents(noise, 1, channels, side, side)
    return None


def run_pipeline(pipe: Any, spec: PipelineSpec) -> "np.ndarray":
    """One image, (H, W, 3) float32 in [0, 1], from the spec's seed; deterministic run to run.

    On CPU it runs single-threaded: the tiny models gain nothing from threads (on a shared 2-core
    machine they lose 10x to contention), and the image must not depend on the machine's core
    count (reduction order), or goldens would not travel between machines.
    """
    import torch

    module = next(c for c in pipe.components.values() if isinstance(c, torch.nn.Module))
    kwargs: dict[str, Any] = dict(prompt=spec.prompt, num_inference_steps=spec.steps, height=spec.size,
                                  width=spec.size, output_type="np")
    kwargs.update(_CLASS_CALL.get(type(pipe).__name__, ()))
    kwargs.update(spec.call_kwargs)
    latents = _latents(pipe, spec)
    if latents is not None:  # drawn in fp32, then rounded to the pipeline dtype: the same noise for all
        kwargs["latents"] = latents.to(device=module.device, dtype=module.dtype)
    else:
        kwargs["generator"] = torch.Generator("cpu").manual_seed(spec.seed)
    with torch_threads(1 if module.device.type == "cpu" else None), torch.inference_mode():
        image = pipe(**kwargs).images[0]
    return image.astype("float32")


def config_hash(pipe: Any, spec: PipelineSpec) -> str:
    """sha256 over every component's config, the tokenizer files and the call: what, besides the
    seeded weights, decides the image. Goldens record it so a changed model is named as such."""
    parts: dict[str, Any] = {"spec": spec.describe()}
    for key, component in sorted(pipe.components.items()):
        config = getattr(component, "config", None)
        if config is None:
            parts[key] = type(component).__name__ if component is not None else None
            continue
        as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        # Private bookkeeping ("_use_default_values" is a set in hash-seed order, "_name_or_path",
        # versions) is no part of the model; versions are recorded separately.
        as_dict = {k: v for k, v in as_dict.items() if not k.startswith("_") and k != "transformers_version"}
        parts[key] = {"class": type(component).__name__, "config": as_dict}
    if spec.builtin:
        parts["tokenizers"] = {str(p.relative_to(TOKENIZERS)): hashlib.sha256(p.read_bytes()).hexdigest()
                               for p in sorted(TOKENIZERS.rglob("*")) if p.is_file()}
        parts["sharpen"] = SHARPEN
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
