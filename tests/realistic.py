"""Records shaped like a real `pytest --attn-backends=all` on the CPU machine, for the report tests.

The cells and the skip reasons are the real ones (tests/data/cpu_cells.json, from the suite's
collection: 43 backends, 2193 cells, 1734 of them skipped); the verdicts and figures of the cells
that ran are made up but of the real kind: the built-in ledger's findings make xfails of
diffusers:flex forward and kwargs in every dtype and of the flash backward in fp32 and bf16
(docs/findings.md), one op cell and one pipeline fail (the pipeline with its images and SSIM maps),
the rest pass.
"""

from __future__ import annotations

import json
from pathlib import Path

from attnparity.results.record import ResultRecord

CELLS = json.loads((Path(__file__).parent / "data" / "cpu_cells.json").read_text())
#: (backend, check) -> (finding id, dtypes where it was met), as the built-in ledger makes them
KNOWN_OPS = {("diffusers:flex", "forward"): ("diffusers-flex-drops-is-causal", ("fp32", "fp16", "bf16")),
             ("diffusers:flex", "kwargs"): ("diffusers-flex-drops-is-causal-kwarg", ("fp32", "fp16", "bf16")),
             ("sdpa-flash", "backward"): ("torch-cpu-flash-backward-finite-masked-rows", ("fp32", "bf16")),
             ("sdpa", "backward"): ("torch-cpu-flash-backward-finite-masked-rows", ("fp32", "bf16"))}
#: an unknown bug, to be listed before everything else
FAILING_OPS = {("diffusers:flex", "masked-rows", "bf16")}
FAILING_PIPELINE = ("pipeline:sd15", "diffusers:flex", "fp16")


def flex_message(dtype: str) -> str:
    return (f"diffusers:flex forward differs from the fp64 reference on B1 H2/kv1 Sq17 Skv65 D64 {dtype} causal=top-left\n"
            "  out: max-abs error 2.23 > 32*5e-07 + floor = 2.05e-05\n"
            "    worst element [0, 0, 0, 52] (B, H, S, D): backend -0.478369, reference 1.75641")


def pipeline_images(directory: Path) -> dict[str, str]:
    """golden, actual and an SSIM map as the suite writes them (pipelines.ssim.diff_image)."""
    import numpy as np

    from attnparity.pipelines.ssim import diff_image, save_png, ssim

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    golden = np.stack([yy, xx, 0.5 * (yy + xx)], axis=-1) * 0.8 + 0.1
    actual = np.clip(golden + rng.normal(0, 0.03, golden.shape) * (xx[..., None] > 0.5), 0, 1)
    result = ssim(actual, golden)
    return {"actual": str(save_png(actual, directory / "sd15-actual.png")),
            "golden": str(save_png(golden, directory / "sd15-golden.png")),
            "golden_ssim_map": str(save_png(diff_image(result), directory / "sd15-golden-ssim-map.png"))}


def cpu_run_records(artifacts: Path | None = None) -> list[ResultRecord]:
    partial = {(b, kind, check, dtype): reason for b, kind, check, dtype, reason in CELLS["skipped_cells"]}
    records = []
    for b_index, (backend, unavailable) in enumerate(CELLS["backends"].items()):
        for kind, check in CELLS["checks"]:
            for d_index, dtype in enumerate(CELLS["dtypes"]):
                reason = unavailable or partial.get((backend, kind, check, dtype))
                node = f"attnparity::{check}[{backend}-{dtype}]"
                if reason:
                    records.append(ResultRecord(kind, check, backend, dtype, "skip", nodeid=node, message=reason,
                                                device="cpu"))
                    continue
                rec = ResultRecord(kind, check, backend, dtype, "pass", nodeid=node, device="cpu")
                if kind in ("op", "semantic"):
                    rec.examples = 30
                    rec.metrics = {"ratio_max": 0.3 + 0.1 * d_index, "ratio_mean": 0.2}
                    finding, met_in = KNOWN_OPS.get((backend, check), ("", ()))
                    if dtype in met_in:
                        rec.verdict, rec.message = "xfail", f"known finding {finding}, met in 2 case(s): ..."
                        rec.extra["known"] = {finding: {"met": 2, "reason": f"the reason of {finding}",
                                                        "link": "docs/findings.md", "repro": "python -m ..."}}
                    if (backend, check, dtype) in FAILING_OPS:
                        rec.verdict, rec.message = "fail", flex_message(dtype)
                        rec.metrics["ratio_max"] = 4.47e6
                        rec.repro = (f"python -m attnparity.check.repro {check} {backend} "
                                     '\'{"heads":2,"kv_heads":1,"sq":17,"skv":65,"head_dim":64,"causal":"top-left"}\'')
                elif kind == "pipeline":
                    rec.metrics = {"ssim_ref": 0.9995 - 0.0002 * d_index, "ssim_golden": 0.998}
                    if (check, backend, dtype) == FAILING_PIPELINE:
                        rec.verdict = "fail"
                        rec.metrics = {"ssim_ref": 0.9312, "ssim_golden": 0.9287}
                        rec.message = "SSIM 0.9312 < 0.99 against the same pipeline with fp64 attention"
                        if artifacts is not None:
                            rec.artifacts = pipeline_images(artifacts)
                else:
                    ms = 2.0 + b_index % 5 + d_index
                    rec.metrics = {"ms": ms, "tflops": 0.05 * 4 / ms, "speedup_math": 4.0 / ms}
                records.append(rec)
    return records
