"""Installed versions of the optional attention libraries, read without importing them where
their package metadata says it (importing flash-attn or sageattention loads CUDA extensions)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util


def installed_version(module: str, *dists: str) -> str | None:
    """The version of ``module``: from the metadata of the first of ``dists`` installed, else the
    module's own ``__version__`` (a source checkout, a stand-in), else None (not installed)."""
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return getattr(importlib.import_module(module), "__version__", None)
    except Exception:  # a broken build: is_available says why
        return None


def version_tuple(version: str | None) -> tuple[int, ...]:
    """(2, 1, 0) for '2.1.0.post1+cu121' (PEP 440's release part); () for None or an unreadable version."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version).release if version else ()
    except InvalidVersion:
        return ()
