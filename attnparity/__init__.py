"""attnparity: does this attention backend still give the same numbers, images and speed?

Public API: Backend, Capabilities, Unsupported, register_backend, check_parity, AttnCase.
Imports are lazy so that loading the pytest plugin costs nothing (no torch) until it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backends.base import Backend, Capabilities, Unsupported
from .backends.registry import register_backend

__version__ = "0.1.0"
__all__ = ["AttnCase", "Backend", "Capabilities", "Unsupported", "check_parity", "register_backend"]

if TYPE_CHECKING:
    from .cases import AttnCase
    from .parity import check_parity


def __getattr__(name: str) -> Any:
    if name == "check_parity":
        from .parity import check_parity

        return check_parity
    if name == "AttnCase":
        from .cases import AttnCase

        return AttnCase
    raise AttributeError(f"module 'attnparity' has no attribute {name!r}")
