"""README.md is what a new user reads first: short, its commands the ones CI runs, and every option
documented in docs/options.md exactly as the code has it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()


def _options_doc():
    spec = importlib.util.spec_from_file_location("options_doc", ROOT / "scripts" / "options_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_readme_reads_in_five_minutes_in_the_agreed_order() -> None:
    assert len(README.splitlines()) <= 150
    headings = [line for line in README.splitlines() if line.startswith("## ")]
    assert headings == ["## Two commands", "## What a run prints", "## The options most people use",
                        "## Add your backend in four steps", "## Gate an upgrade of torch or diffusers", "## Docs"]


def test_readme_starts_with_the_two_commands() -> None:
    blocks = [b.split("```", 1)[0].strip() for b in README.split("```bash")[1:3]]
    assert blocks[0].endswith("pytest --attn-backends=all -n auto")
    assert blocks[1].endswith("python -m pytest")


def test_ci_runs_the_readme_test_command() -> None:
    install = README.split("```bash")[2].split("```", 1)[0]
    for step in ("pip install torch==2.13.0", 'pip install -e ".[test]"'):
        assert step in install and f"\n{step}\n" in CI
    assert "\npython -m pytest\n" in CI and '"$status" -eq 5' in CI


def test_every_link_in_the_readme_resolves() -> None:
    links = re.findall(r"\]\(([^)#]+)[^)]*\)", README)
    assert "docs/options.md" in links and "CHANGELOG.md" in links
    assert not [link for link in links if not (ROOT / link).exists()]


def test_options_page_is_generated_from_the_code() -> None:
    # A changed default or help text must be regenerated into the page: python scripts/options_doc.py
    doc = _options_doc()
    assert (ROOT / "docs" / "options.md").read_text() == doc.render(), "run: python scripts/options_doc.py"


def test_options_page_changes_with_a_default_or_a_help_text() -> None:
    from dataclasses import replace

    doc = _options_doc()
    page = doc.render()
    first = doc.OPTIONS[3]  # --attn-examples: a default in the table
    try:
        doc.OPTIONS = (*doc.OPTIONS[:3], replace(first, default=31), *doc.OPTIONS[4:])
        assert doc.render() != page
        doc.OPTIONS = (*doc.OPTIONS[:3], replace(first, help=first.help + "!"), *doc.OPTIONS[4:])
        assert doc.render() != page
    finally:
        doc.OPTIONS = (*doc.OPTIONS[:3], first, *doc.OPTIONS[4:])
    assert doc.render() == page
