"""The project's own tests drive the plugin with pytester (in-process pytest runs).

pytester restores sys.modules after each in-process run; torch's C extension cannot be imported a
second time in one process, so it is imported once here, before any snapshot is taken.
"""

import torch  # noqa: F401

pytest_plugins = ["pytester"]
