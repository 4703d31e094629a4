"""Helpers for the report's pytester tests: a project whose suite is tests/minisuite.py, with
misbehaving vendor backends registered from its conftest.py (as a vendor under development would)."""

from __future__ import annotations

from pathlib import Path

import pytest

# pytester's in-process runs drop modules first imported inside them; torch's C extension cannot be
# imported twice in one process, so everything heavy is imported here, in the outer process, first.
import torch  # noqa: F401
import attnparity.backends.registry  # noqa: F401
import attnparity.suite.guard  # noqa: F401
import attnparity.suite.isolation  # noqa: F401
import concurrent.futures.process  # noqa: F401  (the isolation pool pickles its worker function by name)
import multiprocessing.forkserver  # noqa: F401
import attnparity.report.html  # noqa: F401
import attnparity.session  # noqa: F401
import attnparity.check.tolerance  # noqa: F401
import attnparity.check.reference  # noqa: F401
import attnparity.backends.naive  # noqa: F401

MINISUITE = (Path(__file__).parent / "minisuite.py").read_text()

CONFTEST = '''
import math, threading
import torch
import attnparity.suite as _suite
from attnparity import Backend, Capabilities, register_backend
from attnparity.backends import registry as _registry

_SAVED = _suite.SUITE_MODULES
_suite.SUITE_MODULES = ("minisuite",)
_NAMES = []

def _add(name, fn):
    register_backend(Backend(name, fn, Capabilities(devices={"cpu"})), replace=True)
    _NAMES.append(name)

def crash(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    raise RuntimeError("vendor kernel exploded")

def nan(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    return torch.full_like(q, math.nan)

def bad_shape(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v)[..., :-1]

_RELEASE = threading.Event()

def hang(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    _RELEASE.wait(60)  # a hung kernel; bounded so an abandoned thread ends in the end
    return q

def scaled(q, k, v, *, attn_mask=None, is_causal=False, scale=None):  # a real bug: wrong softmax scale
    from attnparity.backends.naive import naive_attention
    return naive_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=1.0)

def degradable(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # correct, until "the upgrade" (ATTN_DEGRADE=1) breaks its softmax scale
    import os
    from attnparity.backends.naive import naive_attention
    return naive_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                           scale=1.0 if os.environ.get("ATTN_DEGRADE") else scale)

# Backends that kill or break the process they run in, on masked cases (the minisuite's second
# case), as a kernel does on an illegal memory access. Only ever run isolated: in-process they
# would take the test run down with them.
def _correct(q, k, v, attn_mask, is_causal, scale):
    from attnparity.backends.naive import naive_attention
    return naive_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)

def aborts(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    import os
    if attn_mask is not None:
        os.abort()
    return _correct(q, k, v, attn_mask, is_causal, scale)

def segfaults(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    import ctypes
    if attn_mask is not None:
        ctypes.string_at(0)
    return _correct(q, k, v, attn_mask, is_causal, scale)

def oom_killed(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    import os, signal
    if attn_mask is not None:
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
    return _correct(q, k, v, attn_mask, is_causal, scale)

_SDPA = torch.nn.functional.scaled_dot_product_attention

def poisons(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    # Correct itself, but leaves torch broken for whoever comes next in this process.
    torch.nn.functional.scaled_dot_product_attention = lambda q, *a, **kw: torch.zeros_like(q) + 7
    return _correct(q, k, v, attn_mask, is_causal, scale)

for _name, _fn in (("vendor-degradable", degradable), ("vendor-crash", crash), ("vendor-nan", nan), ("vendor-shape", bad_shape),
                   ("vendor-hang", hang), ("vendor-scale", scaled), ("vendor-abort", aborts),
                   ("vendor-segv", segfaults), ("vendor-oom", oom_killed), ("vendor-poison", poisons)):
    _add(_name, _fn)

def pytest_unconfigure(config):
    _suite.SUITE_MODULES = _SAVED
    torch.nn.functional.scaled_dot_product_attention = _SDPA
    _RELEASE.set()
    for name in _NAMES:
        _registry.unregister_backend(name)
'''


def records_of(reprec: pytest.HookRecorder) -> list[dict]:
    """The result records an in-process run's items produced, from their reports, as the plugin
    gathers them."""
    from attnparity.plugin import record_of

    return [record for rep in reprec.getreports("pytest_runtest_logreport")
            if rep.when == "call" or (rep.when == "setup" and rep.skipped)
            if (record := record_of(rep)) is not None]


@pytest.fixture
def matrix_project(pytester: pytest.Pytester):
    """A pytester project with the mini suite and the misbehaving vendor backends."""
    from attnparity.backends import registry

    pytester.makepyfile(minisuite=MINISUITE)
    pytester.makeconftest(CONFTEST)
    pytester.syspathinsert()
    yield pytester
    registry.reset_registry()
