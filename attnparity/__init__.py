"""attnparity: does this attention backend still give the same numbers, images and speed?

Public API: Backend, Capabilities, Unsupported, register_backend, check_parity, AttnCase.
Imports are lazy so that loading the pytest plugin costs nothing (no torch) until it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attnparity.backends.base import Backend, Capabilities, Unsupported
from attnparity.backends.registry import register_backend

__version__ = "0.1.0"
__all__ = ["AttnCase", "Backend", "Capabilities", "Unsupported", "check_parity", "register_backend"]

if TYPE_CHECKING:
    from attnparity.check.cases import AttnCase
    from attnparity.check.parity import check_parity


def __getattr__(name: str) -> Any:
    if name == "check_parity":
        from attnparity.check.parity import check_parity

        return check_parity
    if name == "AttnCase":
        from attnparity.check.cases import AttnCase

        return AttnCase
    raise AttributeError(f"module 'attnparity' has no attribute {name!r}")
