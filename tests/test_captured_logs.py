"""A cell's failure text is the cell's explanation, not torch's trace log.

pytest (>= 8.4) hangs its log capture on every non-propagating logger; torch's ``torch.__trace``
is one, always at DEBUG, and a failing diffusers:flex cell printed 900 empty ``DEBUG
torch.__trace`` lines under "Captured log call"."""

from __future__ import annotations

import logging

from attn_pytester import matrix_project  # noqa: F401  (fixture)

TRACING = '''

def traced(q, k, v, *, attn_mask=None, is_causal=False, scale=None):
    import logging
    trace = logging.getLogger("torch.__trace")
    for _ in range(50):
        trace.debug("structured trace event")  # what torch.compile / flex emit per compile event
    logging.getLogger("vendor.kernel").warning("vendor kernel warning")
    return scaled(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)

_add("vendor-traced", traced)
'''


def test_trace_logger_debug_lines_stay_out_of_failure_text(matrix_project):
    import torch  # noqa: F401  (sets torch.__trace up: non-propagating, DEBUG)

    trace = logging.getLogger("torch.__trace")
    assert not trace.propagate and trace.level == logging.DEBUG
    matrix_project.makeconftest(matrix_project.path.joinpath("conftest.py").read_text() + TRACING)
    # In-process (--attn-isolate=none): an isolated worker's logs never reach pytest's capture at all;
    # this is about the capture of the pytest process.
    result = matrix_project.runpytest("--attn-backends=vendor-traced", "--attn-dtypes=fp32", "--attn-examples=3",
                                      "--attn-isolate=none",
                                      "-p", "no:cacheprovider")
    assert result.ret == 1
    out = result.stdout.str()
    assert "attnparity::forward[vendor-traced-fp32]" in out
    assert "torch.__trace" not in out and "structured trace event" not in out
    # logs that propagate are still captured for the cell
    assert "vendor kernel warning" in out
