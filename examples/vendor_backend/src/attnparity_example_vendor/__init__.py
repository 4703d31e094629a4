"""An example vendor kernel: attention computed in key blocks with an online softmax."""

from examples.vendor_backend.src.attnparity_example_vendor.kernel import blocked_attention

__all__ = ["blocked_attention"]
