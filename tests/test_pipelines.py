"""Seeded pipelines: routing, determinism, the golden flow, and detection of a wrong backend.

Built pipelines are cached per process, so after the first test each pipeline run costs ~0.1 s.
Pytester runs are in-process and share that cache.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("skimage")

from attnparity.backends.base import Backend, Capabilities  # noqa: E402
from attnparity.backends.registry import get_backend  # noqa: E402
from attnparity.pipelines import routing, specs  # noqa: E402

# A backend under development, registered from a conftest as a user would: softmax scale 1.0
# instead of 1/sqrt(head_dim), the classic bug. It must fail the pipeline SSIM checks.
WRONG_SCALE_CONFTEST = """
import torch.nn.functional as F
from attnparity import Backend
from attnparity.backends.registry import register_backend, unregister_backend

def wrong_scale(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=1.0,
                                          enable_gqa=q.shape[1] != k.shape[1])

register_backend(Backend("wrong-scale", wrong_scale), replace=True)

def pytest_unconfigure(config):
    unregister_backend("wrong-scale")
"""


@pytest.fixture(scope="module", autouse=True)
def _pipelines_built_outside_pytester() -> None:
    """Build the pipelines (importing their diffusers / transformers classes) in this process first.

    pytester's in-process runs drop the modules they imported when they end, while diffusers' lazy
    top-level module keeps the classes it handed out: a class imported inside one run and
    re-imported in the next is a different object, and from_pretrained's class checks then reject
    components ("expected [...] but only {...} were passed"). Imported out here, they stay put.
    """
    for name in specs.BUILTIN:
        specs.load_pipeline(specs.builtin_spec(name), "fp32")
    from diffusers import DiffusionPipeline  # noqa: F401  (the loader, for user checkpoints)
    from diffusers.pipelines import pipeline_loading_utils  # noqa: F401


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--attn-dtypes=fp32", "-m", "attn_pipeline", *args)


# -- routing ----------------------------------------------------------------------------------------
def _attention_modules(model) -> int:
    return sum(1 for m in model.modules() if hasattr(m, "processor") and hasattr(m, "set_processor"))


@pytest.mark.parametrize("name", specs.BUILTIN)
def test_routing_reaches_every_attention_of_the_pipeline(name: str) -> None:
    spec = specs.builtin_spec(name)
    pipe = specs.load_pipeline(spec, "fp32")
    with routing.route(pipe, get_backend("sdpa")) as stats:
        specs.run_pipeline(pipe, spec)
    calls = stats.by_component
    denoiser = "unet" if "unet" in calls else "transformer"
    # Every attention module of the denoiser is called once per step (CFG is batched).
    assert calls[denoiser] == spec.steps * _attention_modules(getattr(pipe, denoiser))
    assert calls["vae"] == 1  # the VAE decoder's mid-block attention
    encoders = [k for k in pipe.components if k.startswith("text_encoder") and pipe.components[k] is not None]
    assert encoders
    for key in encoders:  # every layer of every text encoder, once per encoded prompt
        layers = pipe.components[key].config.num_hidden_layers if hasattr(pipe.components[key].config, "num_hidden_layers") \
            else pipe.components[key].config.num_layers
        assert calls[key] > 0 and calls[key] % layers == 0, (key, calls)
    assert stats.routed == sum(calls.values()) and stats.fallback_calls == 0
    assert "other" not in calls


def test_routing_covers_causal_and_padded_text_attention() -> None:
    seen = {}
    for name in ("sd15", "pixart"):
        spec = specs.builtin_spec(name)
        pipe = specs.load_pipeline(spec, "fp32")
        with routing.route(pipe, get_backend("sdpa")) as stats:
            specs.run_pipeline(pipe, spec)
        seen[name] = " ".join(stats.shapes)
    assert "causal" in seen["sd15"]  # CLIP's causal self-attention
    assert "mask=" in seen["pixart"]  # T5 with the prompt's padding mask (and its position bias)


def test_calls_outside_the_claims_run_with_the_reference_and_are_reported() -> None:
    spec = specs.builtin_spec("sd15")
    pipe = specs.load_pipeline(spec, "fp32")
    fussy = Backend("fussy", get_backend("sdpa").fn, Capabilities(causal=False))
    with routing.route(pipe, fussy) as stats:
        specs.run_pipeline(pipe, spec)
    assert stats.fallback_calls == stats.by_component["text_encoder"] > 0
    assert all("causal" in what for what in stats.fallback)
    assert "ran with the fp64 reference" in stats.describe_fallback()


def test_processors_pinned_to_a_dispatch_backend_are_routed_too() -> None:
    spec = specs.builtin_spec("flux")
    pipe = specs.load_pipeline(spec, "fp32")
    pinned = [m.processor for m in pipe.transformer.modules() if hasattr(m, "processor")]
    for processor in pinned:  # what model.set_attention_backend("flex") leaves behind
        processor._attention_backend = "flex"  # flex_attention: no SDPA call
    try:
        with routing.route(pipe, get_backend("sdpa")) as stats:
            specs.run_pipeline(pipe, spec)
        assert stats.by_component["transformer"] == spec.steps * len(pinned)
        assert all(p._attention_backend == "flex" for p in pinned)  # pinned back afterwards
    finally:
        for processor in pinned:
            del processor._attention_backend


def test_routing_restores_global_state_on_error() -> None:
    import torch
    import torch.nn.functional as F
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    def broken(q, k, v, **_):
        raise RuntimeError("kernel exploded")

    spec = specs.builtin_spec("flux")
    pipe = specs.load_pipeline(spec, "fp32")
    before = _AttentionBackendRegistry._active_backend
    with pytest.raises(RuntimeError, match="kernel exploded"):
        with routing.route(pipe, Backend("broken", broken)):
            specs.run_pipeline(pipe, spec)
    assert _AttentionBackendRegistry._active_backend == before
    assert not torch.overrides._is_torch_function_mode_enabled()
    assert not pipe.vae.decoder._forward_pre_hooks
    q = torch.randn(1, 1, 4, 8)
    assert torch.equal(F.scaled_dot_product_attention(q, q, q), F.scaled_dot_product_attention(q, q, q))


# -- determinism ------------------------------------------------------------------------------------
def test_images_are_bitwise_deterministic_across_runs_and_rebuilds() -> None:
    spec = specs.builtin_spec("sd3")
    first = specs.run_pipeline(specs.load_pipeline(spec, "fp32"), spec)
    again = specs.run_pipeline(specs.load_pipeline(spec, "fp32"), spec)
    rebuilt = specs.run_pipeline(specs.builtin_spec("sd3").build(), spec)  # fresh seeded weights
    assert first.shape == (64, 64, 3) and first.std() > 0.05  # an image, not a flat field
    assert np.array_equal(first, again) and np.array_equal(first, rebuilt)


# -- the suite through pytest -----------------------------------------------------------------------
def test_correct_backends_pass_and_wrong_scale_fails(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(WRONG_SCALE_CONFTEST)
    # No golden/ in this directory: the built-in pipelines use the goldens shipped in the repo.
    result = _run(pytester, "--attn-backends=sdpa-math,naive,wrong-scale", "-k", "pipeline:sd15 or pipeline:flux", "-rf")
    result.assert_outcomes(passed=4, failed=2)
    out = result.stdout.str()
    assert "pipeline:sd15[wrong-scale-fp32]" in out and "pipeline:flux[wrong-scale-fp32]" in out
    assert "attention-isolated" in out and "attention alone moved the image" in out
    assert "[sdpa-math-fp32] - " not in out and "[naive-fp32] - " not in out


def test_golden_flow(pytester: pytest.Pytester) -> None:
    args = ("--attn-backends=sdpa-math", "--attn-golden-dir=goldens", "-k", "pipeline:pixart")
    golden = pytester.path / "goldens" / "pixart" / "cpu" / "fp32.png"

    # 1. missing: the golden half is skipped (the cell stands on the attention-isolated SSIM), the
    # summary names the command creating it; with --attn-golden-required a clear failure. Nothing is written.
    result = _run(pytester, *args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*no golden for cpu yet*--attn-golden-dir=*goldens*--attn-golden-update*"])
    result = _run(pytester, *args, "--attn-golden-required")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no golden image*goldens/pixart/cpu/fp32.png*",
                                 "*pytest --attn-backends=sdpa-math --attn-dtypes=fp32*--attn-golden-update*"])
    assert not golden.exists()

    # 2. update: written with its manifest, and the item passes.
    _run(pytester, *args, "--attn-golden-update").assert_outcomes(passed=1)
    manifest = json.loads(golden.with_suffix(".json").read_text())
    assert manifest["seed"] == specs.SEED and manifest["steps"] == specs.STEPS and manifest["size"] == 64
    assert {"torch", "diffusers"} <= set(manifest["versions"]) and manifest["config_hash"]
    assert manifest["made_by"]["tool"] == "attnparity --attn-golden-update"

    # 3. the same again passes without the flag and writes nothing.
    stamp = golden.stat().st_mtime_ns
    _run(pytester, *args).assert_outcomes(passed=1)
    assert golden.stat().st_mtime_ns == stamp

    # 4. a golden that no longer matches (another pipeline's image, made by another torch): failure
    # with the actual, golden and SSIM-map images written and named; the golden is left alone.
    shutil.copy(Path(__file__).parents[1] / "golden" / "flux" / "cpu" / "fp32.png", golden)
    manifest["versions"]["torch"] = "1.0.0"
    golden.with_suffix(".json").write_text(json.dumps(manifest))
    tampered = golden.read_bytes()
    result = _run(pytester, *args, "--attn-artifacts=art")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "against the golden" in out and "golden made by other versions: torch 1.0.0" in out
    for name in ("actual", "golden", "golden-ssim-map"):
        path = pytester.path / "art" / "pipelines" / f"pixart-sdpa-math-fp32-{name}.png"
        assert path.is_file() and str(path) in out
    assert golden.read_bytes() == tampered


#: A device class with no goldens anywhere (shipped or in a golden dir): every GPU's first run.
NEW_DEVICE_CLASS_CONFTEST = """
import dataclasses

import attnparity.machine as machine

_identify = machine.identify


def _new_class(device):
    return dataclasses.replace(_identify(device), golden_class="cuda-sm999")


machine.identify = _new_class
"""


def test_a_new_device_class_starts_green(pytester: pytest.Pytester) -> None:
    """No golden for the device class: each cell is judged by its attention-isolated SSIM alone
    (exit 0 for correct backends, a wrong one still fails), the summary says so in one line with the
    one command that writes them, nothing is written; --attn-golden-required (flag or ini) fails."""
    import attnparity.machine

    pytester.makeconftest(NEW_DEVICE_CLASS_CONFTEST + WRONG_SCALE_CONFTEST)
    identify = attnparity.machine.identify  # the conftest replaces it in this process: put it back after
    try:
        _new_device_class_runs(pytester, ("-k", "pipeline:sd15 or pipeline:pixart"))
    finally:
        attnparity.machine.identify = identify


def _new_device_class_runs(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    result = _run(pytester, "--attn-backends=sdpa-math,naive", *args)
    assert result.ret == 0
    result.assert_outcomes(passed=4)
    lines = [line for line in result.outlines if "no golden for" in line]
    assert len(lines) == 1, lines
    assert "no golden for cuda-sm999 yet" in lines[0] and "4 pipeline cell(s)" in lines[0]
    assert "--attn-golden-update" in lines[0] and "-k" not in lines[0].split("write them with:")[1]
    assert not (pytester.path / "golden").exists()

    wrong = _run(pytester, "--attn-backends=wrong-scale", *args)
    wrong.assert_outcomes(failed=2)
    assert "attention alone moved the image" in wrong.stdout.str()

    required = _run(pytester, "--attn-backends=sdpa-math", "--attn-golden-required", *args)
    required.assert_outcomes(failed=2)
    required.stdout.fnmatch_lines(["*no golden image*cuda-sm999*--attn-golden-required*"])
    pytester.makeini("[pytest]\nattn_golden_required = true\n")
    _run(pytester, "--attn-backends=sdpa-math", *args).assert_outcomes(failed=2)


def test_zero_routed_calls_fails(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
from attnparity import Backend, Capabilities
from attnparity.backends.registry import register_backend, unregister_backend
from attnparity.backends.naive import naive_attention

register_backend(Backend("claims-nothing", naive_attention, Capabilities(head_dims={7})), replace=True)

def pytest_unconfigure(config):
    unregister_backend("claims-nothing")
""")
    result = _run(pytester, "--attn-backends=claims-nothing", "-k", "pipeline:flux")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*routing caught no attention call*", "*ran with the fp64 reference*head_dim*"])


def test_nan_output_fails(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
from attnparity import Backend
from attnparity.backends.registry import register_backend, unregister_backend

register_backend(Backend("nan-rows", lambda q, k, v, **_: q * float("nan")), replace=True)

def pytest_unconfigure(config):
    unregister_backend("nan-rows")
""")
    result = _run(pytester, "--attn-backends=nan-rows", "-k", "pipeline:pixart")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*image values are NaN or Inf*"])


def test_user_checkpoint_paths(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result = _run(pytester, "--attn-backends=sdpa", "--attn-pipeline=does/not/exist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--attn-pipeline=does/not/exist: no such directory*"])

    not_json = tmp_path / "notjson"
    not_json.mkdir()
    (not_json / "model_index.json").write_text("{oops")
    result = _run(pytester, "--attn-backends=sdpa", f"--attn-pipeline={not_json}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*model_index.json is not readable JSON*"])

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}')
    result = _run(pytester, "--attn-backends=sdpa", f"--attn-pipeline={broken}", "-k", "pipeline:broken")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*DiffusionPipeline.from_pretrained(*local_files_only=True) failed*"])


def test_a_saved_pipeline_joins_the_matrix_with_its_own_golden(pytester: pytest.Pytester) -> None:
    # Saved and loaded in a fresh interpreter: after other in-process pytester runs have dropped the
    # diffusers modules they imported, this process's diffusers classes are not the ones a new
    # import makes, and saving or loading a pipeline across that mismatch loses components.
    pytester.makeconftest(
        "from attnparity.pipelines import specs\n"
        "specs.builtin_spec('pixart').build().save_pretrained('mypix')\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--attn-dtypes=fp32", "-m", "attn_pipeline", "--attn-backends=sdpa",
        "--attn-pipeline=mypix", "--attn-golden-dir=g", "-k", "pipeline:mypix", "--attn-golden-update")
    result.assert_outcomes(passed=1)
    manifest = json.loads((pytester.path / "g" / "mypix" / "cpu" / "fp32.json").read_text())
    assert manifest["source"] == str((pytester.path / "mypix").resolve())
    assert (pytester.path / "g" / "mypix" / "cpu" / "fp32.png").is_file()


def test_ssim_thresholds_from_ini(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(WRONG_SCALE_CONFTEST)
    # Loosened far enough, even the wrong scale passes: proof the ini value is the one applied.
    pytester.makeini("[pytest]\nattn_pipeline_ssim =\n    fp32 ref=0.5 golden=0.5\n")
    _run(pytester, "--attn-backends=wrong-scale", "-k", "pipeline:pixart").assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nattn_pipeline_ssim =\n    fp32 ref=high\n")
    result = _run(pytester, "--attn-backends=sdpa", "-k", "pipeline:pixart")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*attn_pipeline_ssim rule*ref=high*"])


@pytest.mark.parametrize("name", specs.BUILTIN)
def test_committed_goldens_match_the_current_pipelines(name: str) -> None:
    """The manifests were written by another process (another hash seed): the config hash must be
    stable across processes, and the committed goldens must describe the pipelines as built now."""
    spec = specs.builtin_spec(name)
    now = specs.config_hash(specs.load_pipeline(spec, "fp32"), spec)
    for dtype in ("fp32", "fp16", "bf16"):
        manifest = json.loads((Path(__file__).parents[1] / "golden" / name / "cpu" / f"{dtype}.json").read_text())
        assert manifest["config_hash"] == now, f"golden/{name}/cpu/{dtype} was made from another config"
        assert (manifest["seed"], manifest["steps"], manifest["size"]) == (spec.seed, spec.steps, spec.size)
