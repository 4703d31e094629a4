"""README.md is what a new user reads first: its commands and option table must match the code."""

from __future__ import annotations

from pathlib import Path

from attnparity.plugin import OPTIONS

README = (Path(__file__).parent.parent / "README.md").read_text()
CI = (Path(__file__).parent.parent / ".ci" / "run").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    blocks = [b.split("```", 1)[0].strip() for b in README.split("```bash")[1:3]]
    assert blocks[0].endswith("pytest --attn-backends=all")
    assert blocks[1].endswith("python -m pytest")


def test_ci_runs_the_readme_test_command() -> None:
    install = README.split("```bash")[2].split("```", 1)[0]
    for step in ("pip install torch==2.13.0", 'pip install -e ".[test]"'):
        assert step in install and f"\n{step}\n" in CI
    assert "\npython -m pytest\n" in CI and '"$status" -eq 5' in CI


def test_every_option_is_documented() -> None:
    missing = [o.flag for o in OPTIONS if f"`{o.flag}`" not in README or f"`{o.name}`" not in README]
    assert not missing, f"options missing from README's table: {missing}"
