"""The project's own tests drive the plugin with pytester (in-process pytest runs).

pytester restores sys.modules after each in-process run; torch's C extension cannot be imported a
second time in one process, so it is imported once here, before any snapshot is taken.
"""

from pathlib import Path

import torch  # noqa: F401
# Submodules that the in-process runs import (flex through dynamo, perf's FLOP counter) register
# torch ops on import and cannot be imported twice either: load them once here, so the order of
# the tests does not decide whether they pass.
import torch._dynamo  # noqa: F401,E402
import torch._inductor.test_operators  # noqa: F401,E402
import torch.utils.flop_counter  # noqa: F401,E402

pytest_plugins = ["pytester"]

_OWN = ("tests", "examples")


def pytest_ignore_collect(collection_path, config):
    # `pytest --attn-backends=...` from the repo root runs the matrix, not the project's own tests.
    # pytest does not ask this hook about the testpaths themselves (tests/), only about what is in
    # them, so every path below tests/ or examples/ is answered.
    if not config.getoption("attn_backends", None):
        return None
    try:
        top = Path(collection_path).relative_to(config.rootpath).parts[:1]
    except ValueError:
        return None
    return True if top and top[0] in _OWN else None
