"""Name -> Backend: the built-ins, the ``attnparity.backends`` entry points, ``register_backend``.

Selection takes ``all``, comma lists and globs (``sdpa-*``, ``diffusers:*``); an unknown name is an
error that lists the known ones. ``all`` leaves out backends that say ``opt_in`` (the compiled rows
on CPU); a name or a glob selects them.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points

from .base import Backend
from .source import StandaloneCall

ENTRY_POINT_GROUP = "attnparity.backends"

#: One module per family; each exposes ``backends() -> list[Backend]``. Imported on first use only.
BUILTIN_MODULES = (
    "attnparity.backends.naive",
    "attnparity.backends.sdpa",
    "attnparity.backends.flex",
    "attnparity.backends.compiled",
    "attnparity.backends.xformers",
    "attnparity.backends.flash_attn",
    "attnparity.backends.sage",
    "attnparity.backends.diffusers",
)


class UnknownBackend(LookupError):
    """A requested name or glob matched no registered backend."""

    def __init__(self, requested: str, known: Iterable[str]):
        self.requested = requested
        self.known = sorted(known)
        super().__init__(
            f"unknown attention backend {requested!r}. Known backends: {', '.join(self.known)}. "
            "Pass 'all', a comma list, or a glob such as 'sdpa-*' (see `pytest --attn-list`)."
        )


_registered: dict[str, Backend] = {}
#: backend name -> (module name, file) of the code that called register_backend: an isolated worker
#: process imports it again so the backend exists there too (suite/isolation.py)
_registered_from: dict[str, tuple[str, str | None]] = {}
_load_errors: dict[str, str] = {}
_loaded = False


def register_backend(backend: Backend, *, replace: bool = False) -> Backend:
    """Add a backend (from a conftest.py, for one under development). Returns it, so it can decorate."""
    if not isinstance(backend, Backend):
        raise TypeError(f"register_backend takes a Backend, got {type(backend).__name__}")
    _ensure_loaded()
    if backend.name in _registered and not replace and _registered[backend.name] is not backend:
        raise ValueError(
            f"a backend named {backend.name!r} is already registered ({_registered[backend.name].origin}); "
            "pass replace=True to override it"
        )
    if backend.origin == "builtin":
        backend.origin = "register_backend"
    _registered[backend.name] = backend
    import sys

    caller = sys._getframe(1).f_globals
    _registered_from[backend.name] = (str(caller.get("__name__", "")), caller.get("__file__"))
    return backend


def unregister_backend(name: str) -> None:
    _registered.pop(name, None)
    _registered_from.pop(name, None)


def registered_from(name: str) -> tuple[str, str | None] | None:
    """(module name, file) of the module whose code registered ``name`` with register_backend, or
    None for a built-in or entry-point backend (those are found again by name in any process)."""
    return _registered_from.get(name)


def _add(backends: Iterable[Backend], origin: str) -> None:
    for backend in backends:
        if not isinstance(backend, Backend):
            raise TypeError(f"{origin} returned {type(backend).__name__}, not an attnparity Backend")
        if origin != "builtin":
            backend.origin = origin
        _registered.setdefault(backend.name, backend)


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module_name in BUILTIN_MODULES:
        _add(importlib.import_module(module_name).backends(), "builtin")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {ep.name}" + (f" ({ep.dist.name})" if ep.dist else "")
        try:
            loaded = ep.load()
            _add(loaded() if callable(loaded) else loaded, origin)
        except Exception as exc:  # one broken vendor package must not take the matrix down
            _load_errors[ep.name] = f"{origin} failed to load: {type(exc).__name__}: {exc}"


def reset_registry() -> None:
    """Forget every backend and load error; the next lookup rediscovers built-ins and entry points.

    The registry reads entry points once per process; tests (pytester runs in one process) and
    tools that install a vendor package mid-process call this to see it.
    """
    global _loaded
    _registered.clear()
    _registered_from.clear()
    _load_errors.clear()
    _loaded = False


def load_errors() -> dict[str, str]:
    """Entry points that failed to load, by name, with why (shown by --attn-list and the report)."""
    _ensure_loaded()
    return dict(_load_errors)


def all_backends() -> dict[str, Backend]:
    _ensure_loaded()
    return dict(_registered)


def get_backend(name: str) -> Backend:
    backends = all_backends()
    if name not in backends:
        raise UnknownBackend(name, backends)
    return backends[name]


def select_backends(spec: str | Iterable[str]) -> list[Backend]:
    """Backends matching ``spec``: 'all', 'a,b', globs; in registry order, each once."""
    backends = all_backends()
    patterns = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip()]
    if not patterns:
        raise UnknownBackend(str(spec), backends)
    chosen: dict[str, Backend] = {}
    for pattern in patterns:
        if pattern == "all":  # opt-in backends (Backend.opt_in) only by name or glob
            matches = [n for n, b in backends.items() if not b.opt_in]
        elif any(ch in pattern for ch in "*?["):
            matches = [n for n in backends if fnmatch.fnmatchcase(n, pattern)]
        else:
            matches = [pattern] if pattern in backends else []
        if not matches:
            raise UnknownBackend(pattern, backends)
        for name in matches:
            chosen.setdefault(name, backends[name])
    return list(chosen.values())


def standalone_call(name: str) -> "StandaloneCall | None":
    """How a standalone repro calls built-in backend ``name`` (each built-in module's private
    ``_standalone`` hook, backends/source.py), or None: not a built-in, or no hook for it."""
    backend = _registered.get(name)  # not loading the registry: a failure message asks this
    if backend is not None and backend.origin != "builtin":
        return None
    for module_name in BUILTIN_MODULES:
        hook = getattr(importlib.import_module(module_name), "_standalone", None)
        call = hook(name) if hook is not None else None
        if call is not None:
            return call
    return None
