"""``pytest --attn-list`` / ``attnparity backends``: every backend, whether it runs here, its claims."""

from __future__ import annotations

from typing import TextIO


def backend_rows(device: str = "auto") -> list[tuple[str, str, str, str]]:
    """(name, status, origin, capabilities) per registered backend."""
    from attnparity.backends.registry import all_backends, load_errors
    from attnparity.machine import resolve_device

    dev = resolve_device(device)
    rows = []
    for backend in all_backends().values():
        reason = backend.unavailable_reason()
        if reason is None and dev.split(":")[0] not in backend.capabilities.devices:
            reason = f"does not run on {dev}"
        status = "available" if reason is None else f"unavailable: {reason}"
        if reason is None and backend.opt_in:  # runs here, but `all` leaves it out: say so
            status += f" (opt-in, not in 'all': {backend.opt_in})"
        rows.append((backend.name, status, backend.origin, backend.capabilities.describe()))
    for name, error in load_errors().items():
        rows.append((name, f"unavailable: {error}", "entry point", "-"))
    return rows


def print_backends(device: str = "auto", out: TextIO | None = None) -> None:
    import sys

    out = out or sys.stdout
    rows = backend_rows(device)
    width = max(len(r[0]) for r in rows) if rows else 10
    for name, status, origin, caps in rows:
        out.write(f"{name:<{width}}  {status}\n{'':<{width}}  {origin}; {caps}\n")
    available = sum(1 for r in rows if r[1] == "available")
    out.write(f"\n{available} of {len(rows)} backends available here\n")
