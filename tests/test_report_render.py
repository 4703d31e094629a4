"""The terminal summary and the HTML report, from records built by hand (every kind of row)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from _pytest.terminal import TerminalWriter

from attn_pytester import matrix_project  # noqa: F401  (fixture)
from attnparity.report.terminal import summarize
from attnparity.report.html import heat_color, write_report
from attnparity.results.record import ResultRecord, read_results

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LONG = "diffusers:_native_efficient_with_a_long_name"


def sample_records(tmp_path: Path) -> list[ResultRecord]:
    from PIL import Image

    images = {}
    for label, color in (("golden", (200, 40, 40)), ("actual", (190, 50, 40)), ("diff", (20, 20, 20))):
        path = tmp_path / f"{label}.png"
        Image.new("RGB", (64, 64), color).save(path)
        images[label] = str(path)
    recs = []
    for backend in ("naive", "sdpa-math", "sdpa-flash", LONG):
        for dtype, ratio in (("fp32", 0.9), ("fp16", 1.7), ("bf16", 5.5)):
            recs.append(ResultRecord("op", "forward", backend, dtype, "pass",
                                     metrics={"ratio_max": ratio, "ratio_mean": ratio / 2}, examples=30))
    recs.append(ResultRecord("op", "masked-rows", "sdpa-flash", "bf16", "fail", metrics={"ratio_max": 40.0},
                             examples=7, message="fully masked row gives NaN",
                             repro="pytest 'attnparity::masked-rows[sdpa-flash-bf16]' --attn-seed=3"))
    recs.append(ResultRecord("op", "forward", "xformers", "fp32", "skip", message="xformers not installed"))
    recs.append(ResultRecord("pipeline", "pipeline:sd15", "sdpa-math", "fp16", "pass",
                             metrics={"ssim_ref": 0.99971, "ssim_golden": 0.9981}, artifacts=images))
    for backend, ms in (("sdpa-math", 12.0), ("sdpa-flash", 3.5), (LONG, 4.0)):
        recs.append(ResultRecord("perf", "perf:sd15-4096x40", backend, "fp32", "pass", device="cpu",
                                 metrics={"ms": ms, "tflops": 0.1 * 12 / ms, "speedup_math": 12.0 / ms}))
    return recs


def render_terminal(records, markup: bool, full: bool = False) -> str:
    class Term:  # the TerminalReporter methods summarize uses, on a real TerminalWriter
        def __init__(self):
            self.out = io.StringIO()
            self.tw = TerminalWriter(self.out)
            self.tw.hasmarkup = markup
            self.tw.fullwidth = 100

        def write_sep(self, sep, title=None, **kw):
            self.tw.sep(sep, title, **kw)

        def write(self, content, **kw):
            self.tw.write(content, **kw)

        def write_line(self, line, **kw):
            self.tw.line(line, **kw)

    term = Term()
    summarize(None, records, term, full=full)
    return term.out.getvalue()


def test_terminal_summary_fits_100_columns_and_shows_every_section(tmp_path):
    text = render_terminal(sample_records(tmp_path), markup=False)
    assert not ANSI.search(text)
    for line in text.splitlines():
        if not line.startswith("    pytest "):  # repro lines are never cut: they must stay runnable
            assert len(line) <= 100, line
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("backend "))
    assert header.split() == ["backend", "fp32", "fp16", "bf16"]
    flash = next(line for line in lines if line.startswith("sdpa-flash "))
    assert flash.split() == ["sdpa-flash", "pass", "0.90", "30", "pass", "1.70", "30", "fail", "40.00", "37"]
    failures = next(i for i, line in enumerate(lines) if line.startswith("failures (1)"))
    assert "masked-rows[sdpa-flash-bf16]  fully masked row gives NaN" in lines[failures + 1]
    assert failures < lines.index(header)  # failures before the matrix
    pipeline = next(line for line in lines if "pipelines (1)" in line)
    assert lines[lines.index(pipeline) + 2].split() == ["sdpa-math", "pass", "1/1", "0.9997", "0.9981"]
    assert any(line.startswith("sdpa-flash ") and "3.43x" in line for line in lines)
    assert "  xformers: xformers not installed" in lines
    assert "pytest 'attnparity::masked-rows[sdpa-flash-bf16]' --attn-seed=3" in text


def test_full_terminal_summary_shows_every_row(tmp_path):
    lines = render_terminal(sample_records(tmp_path), markup=False, full=True).splitlines()
    assert any(line.startswith("pipeline:sd15") and "0.9997" in line and "0.9981" in line for line in lines)
    assert any(line.startswith("| sd15-4096x40 | sdpa-flash | fp32 | 3.5 |") and "| 3.43 |" in line for line in lines)
    assert any("xformers" in line and "xformers not installed (1 cell)" in line for line in lines)
    assert any(line.startswith("xformers ") and "skip" in line for line in lines)  # skipped rows too


def test_a_perf_run_shows_every_shape_a_mixed_run_the_rollup(tmp_path):
    records = sample_records(tmp_path)
    perf_only = [r for r in records if r.kind == "perf"]
    lines = render_terminal(perf_only, markup=False).splitlines()
    header = lines.index(next(line for line in lines if line.startswith("| shape |")))
    assert lines[header].split(" | ")[3:7] == ["ms", "cv", "TFLOP/s", "% peak"]
    assert lines[header + 1].startswith("|---|") and len(lines[header + 2:header + 5]) == 3
    assert any(line.startswith("| sd15-4096x40 | sdpa-math | fp32 | 12 |") for line in lines)
    assert any(line.startswith("| sd15-4096x40 | sdpa-flash | fp32 | 3.5 |") and "| 3.43 |" in line for line in lines)
    mixed = render_terminal(records, markup=False)
    assert "| shape |" not in mixed and "geometric mean" in mixed


def test_finding_links_resolve_and_image_rows_wrap(tmp_path):
    known = {"docs-finding": {"met": 1, "reason": "the kernel drops is_causal", "link": "docs/findings.md#x"},
             "web-finding": {"met": 1, "reason": "upstream bug", "link": "https://example.org/issues/1"}}
    cells = [ResultRecord("op", "forward", "sdpa-flash", "fp32", "xfail", extra={"known": {k: v}})
             for k, v in known.items()]
    html = (write_report(tmp_path / "rep", cells, device="cpu") / "index.html").read_text()
    assert 'href="docs/findings.md' not in html and "<code>docs/findings.md#x</code>" in html
    assert "the kernel drops is_causal" in html and 'href="https://example.org/issues/1"' in html
    assert re.search(r"\.images \{[^}]*flex-wrap: wrap", html)


def test_terminal_colours_only_with_markup(tmp_path):
    coloured = render_terminal(sample_records(tmp_path), markup=True)
    assert "\x1b[32mpass" in coloured and "\x1b[31m\x1b[1mfail" in coloured
    assert ANSI.sub("", coloured) == render_terminal(sample_records(tmp_path), markup=False)


def test_pytest_run_colours_follow_the_color_option(matrix_project):
    args = ("--attn-backends=naive", "--attn-dtypes=fp32", "--attn-examples=1", "-p", "no:cacheprovider")
    plain = matrix_project.runpytest(*args, "--color=no")
    coloured = matrix_project.runpytest(*args, "--color=yes")
    assert "\x1b[" not in plain.stdout.str()
    assert "\x1b[32mpass" in coloured.stdout.str()


def test_heat_colours_order_by_ratio():
    assert heat_color("fail", 0.5) == heat_color("error", None) == "#e0564b"
    assert heat_color("pass", 0.5) == heat_color("pass", 1.0) != heat_color("pass", 2.0) != heat_color("pass", 8.0)
    assert heat_color("skip", None) == "#d9d9d9"


def test_report_files_are_self_contained(tmp_path):
    records = sample_records(tmp_path)
    out = write_report(tmp_path / "rep", records, device="cpu")
    html = (out / "index.html").read_text()
    assert read_results(out / "results.json")["records"] == records
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from a network
    assert html.count('src="data:image/png;base64,') == 3
    assert "fully masked row gives NaN" in html and "--attn-seed=3" in html
    assert html.count("<svg") == 2 and "sdpa-flash" in html


def gate_comparison():
    """A comparison with one cell in each group: worse, inconclusive (timed beside other work), better."""
    from attnparity.results.gate import compare_records

    def perf(backend, ms, others=0.0):
        return ResultRecord("perf", "perf:sd15-4096x40", backend, "fp32", "pass", device="cpu",
                            metrics={"ms": ms, "ms_cv": 0.02, "reps": 20, "speedup_math": 12.0 / ms},
                            extra={"device_label": "CPU (1 torch thread)", "others_cpu": others})

    return compare_records([perf("slower", 4.0), perf("busy", 4.0), perf("faster", 4.0)],
                           [perf("slower", 12.0), perf("busy", 6.0, others=0.7), perf("faster", 2.0)])


def test_report_without_jinja2_is_a_usage_error_before_anything_runs(matrix_project, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "jinja2", None)  # what an install without the [report] extra has
    result = matrix_project.runpytest("--attn-backends=naive", "--attn-dtypes=fp32", "-p", "no:cacheprovider",
                                      f"--attn-report={tmp_path / 'rep'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: --attn-report writes an HTML page with jinja2, which is not installed: pip install " \
           "'attnparity[report]'" in result.stderr.str()
    assert "passed" not in result.stdout.str() and not (tmp_path / "rep").exists()
    monkeypatch.delitem(sys.modules, "jinja2")
    assert matrix_project.runpytest("--attn-backends=naive", "--attn-dtypes=fp32", "--attn-examples=1", "-k",
                                    "forward", "-p", "no:cacheprovider", f"--attn-report={tmp_path / 'rep'}").ret == 0


def test_gate_groups_are_coloured_in_the_terminal_and_listed_apart_in_the_report(tmp_path):
    from attnparity.report.terminal import write_comparison

    comparison = gate_comparison()
    assert [d.outcome for d in comparison.differences] == ["worse", "inconclusive", "better"]
    out = io.StringIO()
    tw = TerminalWriter(out)
    tw.hasmarkup = True

    class Term:
        def write_sep(self, sep, title=None, **kw):
            tw.sep(sep, title, **kw)

        def write_line(self, line, **kw):
            tw.line(line, **kw)

    write_comparison(comparison, Term())
    lines = out.getvalue().splitlines()
    assert "1 worse, 1 inconclusive timings (rerun on an idle machine to judge)" in ANSI.sub("", lines[1])
    red, yellow, green = lines[2:5]
    assert red.startswith("\x1b[31m  WORSE perf:sd15-4096x40 slower fp32")
    assert yellow.startswith("\x1b[33m  ?     perf:sd15-4096x40 busy fp32: relative to sdpa-math")
    assert green.startswith("\x1b[32m  ok    perf:sd15-4096x40 faster fp32")
    html = (write_report(tmp_path / "rep", [], device="cpu", comparison=comparison) / "index.html").read_text()
    assert '<tr class="inconclusive"><td>inconclusive</td><td>perf:sd15-4096x40 busy fp32</td>' in html
    assert '<tr class="worse"><td>worse</td>' in html and '<tr class="better"><td>ok</td>' in html
    assert "1 worse, 1 inconclusive,\n1 better or new" in html
    assert "rerun on an idle machine to judge" in html
    data = __import__("json").loads((tmp_path / "rep" / "comparison.json").read_text())
    assert [d["inconclusive"] for d in data["differences"]] == [False, True, False] and data["inconclusive"] == 1


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(chromium() is None, reason="needs headless Chromium: apt-get install -y --no-install-recommends "
                                               "chromium (Debian's package)")
def test_report_renders_in_headless_chromium(tmp_path):
    records = sample_records(tmp_path)
    start = time.perf_counter()
    out = write_report(tmp_path / "rep", records, device="cpu")
    render_s = time.perf_counter() - start
    artifacts = Path(__file__).resolve().parents[1] / ".attnparity" / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "report-screenshot.png"
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1200,1600"]
    url = (out / "index.html").as_uri()
    start = time.perf_counter()
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    load_s = time.perf_counter() - start
    subprocess.run(flags + [f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert 'data-loaded="ok"' in page, "images did not decode or the page did not finish loading"
    assert "data-errors" not in page
    matrix = page[page.index('id="matrix"'):page.index("</table>", page.index('id="matrix"'))]
    for backend in ("naive", "sdpa-math", "sdpa-flash", LONG):
        assert f"<th>{backend}</th>" in matrix
    assert "xformers" not in matrix and "xformers</span>: xformers not installed" in page  # ran nothing: listed
    assert "40.00" in matrix and "5.50" in matrix
    from PIL import Image

    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20, "the screenshot is blank"
    print(f"report {(out / 'index.html').stat().st_size} bytes, written in {render_s:.3f} s, "
          f"chromium load+dump {load_s:.2f} s; screenshot {shot}")


def test_summary_of_a_real_cpu_run_fits_a_screen(tmp_path):
    # The real run's 43 backends and 2193 cells (34 backends unavailable): the old summary was 883 lines.
    from realistic import CELLS, cpu_run_records

    text = render_terminal(cpu_run_records(), markup=False)
    lines = text.splitlines()
    assert len(lines) <= 100, f"{len(lines)} lines"
    start = next(i for i, line in enumerate(lines) if line.startswith("unavailable here: 34 backends"))
    entries: list[str] = []
    for line in lines[start + 1:lines.index("", start)]:
        if line.startswith("    "):
            entries[-1] += " " + line.strip()
        else:
            entries.append(line.strip())
    listed = [name for entry in entries for name in entry.split(": ", 1)[0].split(", ")]
    assert sorted(listed) == sorted(name for name, reason in CELLS["backends"].items() if reason)
    # 30 distinct texts, 15 reasons: the same cause named per backend ('sage', 'sage_varlen') is one
    assert len({reason for reason in CELLS["backends"].values() if reason}) == 30 and len(entries) == 15
    assert "xformers, xformers-cutlass, xformers-flash, xformers-flash3, xformers-ck: xformers not installed" in text
    first_fail = next(i for i, line in enumerate(lines) if line.startswith("  fail "))
    first_pass = next(i for i, line in enumerate(lines) if " pass " in line)
    assert first_fail < first_pass
    assert not any(line.startswith(("xformers ", "flash-attn2 ", "pipeline:")) for line in lines)  # rows that ran only
    # known findings right after the failures: one entry per finding (two lines), every cell named
    known = lines.index(next(line for line in lines if line.startswith("known findings (")))
    assert first_fail < known < first_pass
    assert "known findings (10 cells" in lines[known]  # flex forward and kwargs x 3, two flash backwards x 2
    entries = [line for line in lines[known + 1:known + 7] if line.startswith("  xfail ")]
    assert sorted(e.split()[1].rstrip(":") for e in entries) == [
        "diffusers-flex-drops-is-causal", "diffusers-flex-drops-is-causal-kwarg",
        "torch-cpu-flash-backward-finite-masked-rows"], entries


def test_full_summary_of_a_real_cpu_run_shows_every_row():
    from realistic import CELLS, cpu_run_records

    lines = render_terminal(cpu_run_records(), markup=False, full=True).splitlines()
    rows = [line for line in lines if line.startswith("pipeline:")]
    assert len(rows) == 5 * 3 * len(CELLS["backends"])  # every pipeline x dtype x backend, skips included
    matrix = lines.index(next(line for line in lines if line.startswith("op parity")))
    assert len([line for line in lines[matrix + 2:matrix + 2 + len(CELLS["backends"])] if line.strip()]) == 43


def test_report_of_a_real_cpu_run(tmp_path):
    from realistic import CELLS, cpu_run_records

    from attnparity.report.html import render_html

    html = render_html(cpu_run_records(tmp_path), device="cpu", base=tmp_path)
    nav = html[html.index('<nav id="nav">'):html.index("</nav>")]
    for anchor in ("#failures", "#matrix-section", "#pipelines", "#perf", "#skipped"):
        assert f'href="{anchor}"' in nav and f'id="{anchor[1:]}"' in html
    assert html.index('id="failures"') < html.index('id="matrix-section"') < html.index('id="perf"')
    # pipelines: pipeline x backend rows that ran (9 backends x 5 pipelines), dtype columns
    table = html[html.index('id="pipeline-matrix"'):html.index("</table>", html.index('id="pipeline-matrix"'))]
    assert table.count("<tr>") == 1 + 5 * 9
    assert "<th>fp32</th><th>fp16</th><th>bf16</th>" in table and "xformers" not in table
    assert 'href="#pf-pipeline:sd15-diffusers:flex-fp16"' in table and 'id="pf-pipeline:sd15-diffusers:flex-fp16"' in html
    # the failing SSIM map: as written, stretched, and a scale saying what black and white mean
    assert "image-rendering: pixelated" in html and "figure img { width: 192px; }" in html
    assert "contrast stretched" in html and html.count('class="scale ssim-scale"') == 2
    assert "black = identical (SSIM 1)" in html and "white = SSIM ≤ 0" in html
    assert re.search(r"white = the worst pixel, 1 - SSIM = 0\.\d{3}", html)
    # unavailable backends: one line per reason, every name once
    block = html[html.index('id="unavailable"'):html.index("</ul>", html.index('id="unavailable"'))]
    assert block.count("<li>") == 15
    names = [n for li in re.findall(r'<span class="names">([^<]*)</span>', block) for n in li.split(", ")]
    assert sorted(names) == sorted(name for name, reason in CELLS["backends"].items() if reason)


def test_stretched_ssim_map_keeps_its_shape_and_reaches_white(tmp_path):
    import numpy as np
    from PIL import Image

    from attnparity.report.html import stretched_map

    path = tmp_path / "map.png"
    values = np.zeros((8, 8), dtype=np.uint8)
    values[2:4, 2:4] = 20  # a failing map: 1 - SSIM at most 0.08, near black as written
    values[5, 5] = 10
    Image.fromarray(values).save(path)
    uri, peak = stretched_map(path)
    assert abs(peak - 20 / 255) < 1e-9
    import base64, io

    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert out.max() == 255 and out[5, 5] == 128 and out[0, 0] == 0
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(path)
    assert stretched_map(path) is None  # identical images: nothing to stretch
