"""Op-level parity and semantic checks (being written)."""

from __future__ import annotations

from . import Check, SuiteContext


def checks(ctx: SuiteContext) -> list[Check]:
    return []
