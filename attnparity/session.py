"""Builds the run's SuiteContext from resolved options, and what the run says about itself:
header lines, the stamp on every record, and the end-of-run summary and files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .suite import SuiteContext

HYPOTHESIS_PROFILE = "attnparity"


def resolve_device(requested: str | None) -> str:
    import torch

    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--attn-device={requested}: torch {torch.__version__} sees no CUDA device; use cpu or auto")
    if requested.split(":")[0] not in ("cpu", "cuda", "xpu", "mps"):
        raise ValueError(f"--attn-device={requested}: expected auto, cpu, cuda or cuda:N")
    return requested


def parse_dtypes(text: str) -> list[str]:
    from .backends.base import DTYPE_NAMES, dtype_name

    names = [dtype_name(p.strip()) for p in str(text).split(",") if p.strip()]
    unknown = [n for n in names if n not in DTYPE_NAMES]
    if unknown or not names:
        raise ValueError(f"--attn-dtypes={text}: unknown {unknown or 'empty'}; known: {', '.join(DTYPE_NAMES)}")
    return list(dict.fromkeys(names))


def hypothesis_settings(examples: int) -> Any:
    """The suite's settings: ours only when the user loaded no profile of their own."""
    from hypothesis import HealthCheck, settings

    if settings.get_current_profile_name() != "default":
        return settings()  # the user's loaded profile governs, untouched
    return settings(
        max_examples=examples,
        deadline=None,  # first calls compile kernels; timing is perf's business, not parity's
        derandomize=bool(os.environ.get("CI")),
        print_blob=True,
        database=None if os.environ.get("CI") else settings.default.database,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def build_context(config: Any, options: dict[str, Any]) -> SuiteContext:
    from .backends.registry import select_backends
    from .tolerance import Tolerances

    backends = select_backends(options["attn_backends"])
    examples = options["attn_examples"]
    if examples is not None and int(examples) < 1:
        raise ValueError(f"--attn-examples={examples}: must be at least 1")
    root = Path(config.rootpath)
    artifacts = Path(options["attn_artifacts"] or ".attnparity/artifacts")
    return SuiteContext(
        backends=backends,
        device=resolve_device(options["attn_device"]),
        dtypes=parse_dtypes(options["attn_dtypes"] or "fp32,fp16,bf16"),
        tolerances=Tolerances.from_lines(options["attn_tolerance"]),
        hypothesis_settings=hypothesis_settings(int(examples or 30)),
        seed=options["attn_seed"],
        rootdir=root,
        artifacts_dir=artifacts if artifacts.is_absolute() else root / artifacts,
        options=options,
        user_profile=_user_profile(),
    )


def _user_profile() -> str | None:
    from hypothesis import settings

    name = settings.get_current_profile_name()
    return None if name == "default" else name


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return device


def header_lines(ctx: SuiteContext) -> list[str]:
    import torch
    from hypothesis import settings

    from .results import versions

    found = versions()
    libs = " ".join(f"{name} {found[name]}" for name in ("diffusers", "transformers", "xformers", "flash-attn",
                                                          "sageattention", "triton") if name in found)
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA build"
    prof = settings.get_current_profile_name()
    prof_text = f"user profile {prof!r}" if prof != "default" else (
        f"attnparity ({ctx.hypothesis_settings.max_examples} examples, derandomize={ctx.hypothesis_settings.derandomize})")
    return [
        f"attnparity: torch {torch.__version__} ({cuda}), device {device_name(ctx.device)}; {libs or 'no optional libraries'}",
        f"attnparity: {len(ctx.backends)} backends, dtypes {','.join(ctx.dtypes)}; hypothesis {prof_text}"
        + (f", seed {ctx.seed}" if ctx.seed is not None else ""),
    ]


_versions_cache: dict[str, str] | None = None


def stamp(ctx: SuiteContext, record: Any) -> None:
    """Device and versions on every record: records travel alone (xdist, results.json)."""
    global _versions_cache
    from .results import versions

    if _versions_cache is None:
        _versions_cache = versions()
    record.device = record.device or device_name(ctx.device)
    record.versions = record.versions or dict(_versions_cache)


def finish_run(ctx: SuiteContext, records: list[dict[str, Any]], terminal: Any) -> None:
    from .report import summarize

    summarize(ctx, records, terminal)
