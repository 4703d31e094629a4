"""Placeholder: the flex family is being written (see issue 3)."""

from __future__ import annotations

from .base import Backend


def backends() -> list[Backend]:
    return []
