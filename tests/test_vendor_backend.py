"""The example vendor package joins the matrix through its ``attnparity.backends`` entry point."""

from __future__ import annotations

import json
from pathlib import Path

from attn_pytester import matrix_project  # noqa: F401  (fixture)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "vendor_backend"


def install_like_pip(site: Path) -> None:
    """What `pip install` leaves for importlib.metadata: a dist-info with the package's entry points."""
    import tomllib

    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    dist.joinpath("METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = ["[attnparity.backends]"] + [f"{k} = {v}" for k, v in project["entry-points"]["attnparity.backends"].items()]
    dist.joinpath("entry_points.txt").write_text("\n".join(lines) + "\n")


def test_vendor_row_appears_in_the_matrix(matrix_project, tmp_path, monkeypatch):
    from attnparity.backends import registry

    site = tmp_path / "site"
    install_like_pip(site)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    registry.reset_registry()  # the registry reads entry points once per process
    assert registry.get_backend("example-vendor").origin.startswith("entry point example-vendor")

    result = matrix_project.runpytest("--attn-backends=naive,example-vendor", "--attn-dtypes=fp32,bf16",
                                      "--attn-examples=3", f"--attn-report={tmp_path / 'rep'}", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*attnparity matrix*", "backend *fp32*bf16*",
                                 "naive *pass*", "example-vendor *pass * 3 *pass * 3*"])
    records = json.loads((tmp_path / "rep" / "results.json").read_text())["records"]
    assert {(r["backend"], r["verdict"]) for r in records} == {("naive", "pass"), ("example-vendor", "pass")}
    assert "example-vendor" in (tmp_path / "rep" / "index.html").read_text()


def test_without_the_entry_point_the_backend_is_unknown(matrix_project):
    from attnparity.backends import registry

    registry.reset_registry()
    result = matrix_project.runpytest("--attn-backends=example-vendor")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*unknown attention backend 'example-vendor'*"])
