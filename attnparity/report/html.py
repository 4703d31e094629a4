"""``--attn-report=DIR``: results.json and one self-contained index.html.

The page needs no network to view: CSS inline, charts as inline SVG, images as data URIs. The
layout lives in the jinja2 template attnparity/templates/report.html.j2; this module only turns
records into the plain values the template shows.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnparity.results import matrix as mx
from attnparity.machine import versions as run_versions
from attnparity.results.record import ResultRecord, write_results

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
#: Images above this are linked, not embedded, so one huge artifact cannot bloat the page.
MAX_EMBED_BYTES = 2 * 1024 * 1024
#: Pipeline images in this order first (golden, actual, diff side by side), then any others.
IMAGE_ORDER = ("golden", "reference", "ref", "actual", "image", "diff", "ssim_diff")


def heat_color(verdict: str | None, ratio: float | None) -> str:
    """Background of a matrix cell: red for fail/error, grey for skip, green -> orange by log2(ratio)."""
    if verdict in ("fail", "error"):
        return "#e0564b"
    if verdict == "xfail":  # a known finding of the ledger
        return "#b48ade"
    if verdict in (None, "skip") or ratio is None:
        return "#d9d9d9"
    if math.isinf(ratio):
        return "#e0564b"
    # ratio <= 1 (as accurate as naive math or better): green; each doubling above moves toward orange.
    t = min(max(math.log2(max(ratio, 1e-9)) / 3.0, 0.0), 1.0)  # 1x -> 0, 8x -> 1
    green, yellow, orange = (102, 189, 99), (254, 224, 139), (244, 140, 70)
    a, b, u = (green, yellow, t * 2) if t < 0.5 else (yellow, orange, t * 2 - 1)
    return "#%02x%02x%02x" % tuple(round(x + (y - x) * u) for x, y in zip(a, b))


def ssim_color(verdict: str | None, ssim: float | None) -> str:
    """Background of a pipeline cell: red for fail/error, grey for skip, green fading to yellow as
    SSIM against fp64 attention falls from 1 to 0.99."""
    if verdict in ("fail", "error"):
        return "#e0564b"
    if verdict in (None, "skip") or ssim is None:
        return "#d9d9d9"
    t = min(max((1.0 - float(ssim)) / 0.01, 0.0), 1.0)
    green, yellow = (102, 189, 99), (254, 224, 139)
    return "#%02x%02x%02x" % tuple(round(a + (b - a) * t) for a, b in zip(green, yellow))


def data_uri(path: Path) -> str | None:
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None or not path.is_file() or path.stat().st_size > MAX_EMBED_BYTES:
        return None
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


#: Width, in CSS pixels, pipeline images and SSIM maps are drawn at (their files are 32-64 px).
IMAGE_PX = 192


@dataclass
class Image:
    label: str
    src: str | None  # data URI, or None when it could not be embedded
    path: str
    #: for an SSIM map: the same map stretched so its worst pixel is white, and that pixel's 1 - SSIM
    stretched: str | None = None
    peak: float | None = None

    @property
    def is_ssim_map(self) -> bool:
        return self.label.lower().endswith("ssim_map")


def stretched_map(path: Path) -> tuple[str, float] | None:
    """An SSIM map (pipelines.ssim.diff_image: 0 where equal, 255 where SSIM <= 0) with its range
    stretched to 0..255, as a data URI, and the map's peak 1 - SSIM. A failing pipeline's map
    peaks around 0.1-0.4, so unstretched it looks black."""
    try:
        import numpy as np
        from PIL import Image as PILImage
    except ImportError:
        return None
    try:
        with PILImage.open(path) as im:
            values = np.asarray(im.convert("L"), dtype=np.float64)
    except OSError:
        return None
    peak = float(values.max())
    if peak <= 0:
        return None
    import io

    out = io.BytesIO()
    PILImage.fromarray(np.round(values * (255.0 / peak)).astype(np.uint8)).save(out, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(out.getvalue()).decode('ascii')}", peak / 255.0


def images_of(record: ResultRecord, base: Path) -> list[Image]:
    def order(label: str) -> tuple[int, str]:
        key = label.lower()
        return (next((i for i, name in enumerate(IMAGE_ORDER) if key == name or key.startswith(name)),
                     len(IMAGE_ORDER)), key)

    out = []
    for label in sorted(record.artifacts, key=order):
        path = Path(record.artifacts[label])
        path = path if path.is_absolute() else base / path
        if path.suffix.lower() in IMAGE_TYPES:
            image = Image(label, data_uri(path), str(path))
            if image.is_ssim_map and image.src is not None:
                image.stretched, image.peak = stretched_map(path) or (None, None)
            out.append(image)
    return out


@dataclass
class Bar:
    label: str
    value: float
    text: str


@dataclass
class Chart:
    title: str
    unit: str
    bars: list[Bar]
    reference: float | None = None  # a vertical line (speed-up 1x)

    @property
    def label_width(self) -> int:
        """Pixels for the bar labels (11 px sans: about 6.5 px a character)."""
        return max(60, int(6.5 * max((len(b.label) for b in self.bars), default=0)) + 8)

    @property
    def top(self) -> float:
        values = [b.value for b in self.bars if math.isfinite(b.value)]
        return max(values + [self.reference or 0.0, 1e-12])


def perf_charts(rows: list[mx.Row]) -> list[tuple[str, Chart, Chart]]:
    """Per perf shape (check) and dtype: a chart of ms and one of speed-up, per backend."""
    groups: dict[tuple[str, str, str], list[mx.Row]] = {}
    multi = len(mx.devices_of(row.record for row in rows)) > 1
    for row in rows:
        if row.verdict != "skip" and row.metrics.get("ms") is not None:
            # several devices (a merged report): one chart per device, never bars of two devices side by side
            device = f" on {row.record.device_key}" if multi else ""
            groups.setdefault((row.check, row.dtype, device), []).append(row)
    charts = []
    for (check, dtype, device), group in groups.items():
        group.sort(key=lambda r: float(r.metrics["ms"]))
        ms = Chart("median time", "ms", [Bar(r.backend, float(r.metrics["ms"]), f"{float(r.metrics['ms']):.3g} ms")
                                         for r in group])
        speed = Chart("speed-up over sdpa-math", "x",
                      [Bar(r.backend, float(r.metrics["speedup_math"]), f"{float(r.metrics['speedup_math']):.2f}x")
                       for r in group if r.metrics.get("speedup_math") is not None], reference=1.0)
        charts.append((f"{check} {dtype}{device}", ms, speed))
    return charts


REPORT_NEEDS = "--attn-report writes an HTML page with jinja2, which is not installed: pip install 'attnparity[report]'"


def require_jinja2() -> None:
    """Raise (a ValueError: a usage error at the start of a run) when jinja2 cannot be imported."""
    try:
        import jinja2  # noqa: F401
    except ImportError:
        raise ValueError(REPORT_NEEDS) from None


def finding_link(link: str) -> str | None:
    """A ledger link a report page can follow: web addresses only. A path into attnparity's
    docs means nothing beside a report directory; the finding's reason is shown instead."""
    return link if link.startswith(("http://", "https://")) else None


def render_html(records: list[ResultRecord], *, device: str = "", versions: dict[str, str] | None = None,
                comparison: Any = None, base: Path | None = None, created: str = "") -> str:
    try:
        import jinja2
    except ImportError:
        raise RuntimeError(REPORT_NEEDS) from None
    from .terminal import fmt_num, fmt_ssim

    env = jinja2.Environment(loader=jinja2.PackageLoader("attnparity.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_num
    env.filters["ssim"] = fmt_ssim
    base = base or Path.cwd()
    perf = mx.rows_of(records, "perf")
    matrix = mx.build_matrix(records)
    unavailable, unclaimed = mx.skip_groups(records)
    # failures first; a passing pipeline has images only when a run chose to keep them
    pipeline_images = [(r, images) for r in sorted((r for r in records if r.kind == "pipeline"),
                                                   key=lambda r: r.verdict not in ("fail", "error"))
                       if (images := images_of(r, base))]
    devices = [d for d in mx.devices_of(records) if d]
    return env.get_template("report.html.j2").render(
        device=device or (" + ".join(devices) if len(devices) > 1 else next((r.device for r in records if r.device), "")),
        devices=devices,
        versions=versions if versions is not None else next((r.versions for r in records if r.versions), {}),
        created=created,
        totals=mx.totals(records),
        matrix=matrix,
        matrix_backends=mx.ran_backends(matrix),
        heat_color=heat_color,
        ssim_color=ssim_color,
        failures=mx.failures(records),
        known=mx.known_findings(records),
        pipelines=mx.pipeline_matrix(records),
        pipeline_images=pipeline_images,
        with_images={(r.check, r.backend, r.dtype) for r, _ in pipeline_images},
        image_px=IMAGE_PX,
        perf=perf,
        charts=perf_charts(perf),
        unavailable=unavailable,
        unclaimed=unclaimed,
        comparison=comparison,
        finding_link=finding_link,
    )


def write_report(directory: Path, records: list[ResultRecord], *, device: str = "", comparison: Any = None,
                 base: Path | None = None, draws: dict[str, Any] | None = None) -> Path:
    """Write DIR/results.json (with the run's hypothesis ``draws``) and DIR/index.html; returns DIR."""
    import datetime as dt

    directory = Path(directory)
    found = next((r.versions for r in records if r.versions), None) or run_versions()
    write_results(directory / "results.json", records, device, found, draws=draws)
    if comparison is not None:  # the gate's verdict travels with the run, beside (not inside) the schema
        (directory / "comparison.json").write_text(json.dumps(comparison.to_json(), indent=1, default=str))
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    html = render_html(records, device=device, versions=found, comparison=comparison, base=base, created=created)
    (directory / "index.html").write_text(html, encoding="utf-8")
    return directory
