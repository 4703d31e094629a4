"""An example vendor kernel: attention computed in key blocks with an online softmax."""

from .kernel import blocked_attention

__all__ = ["blocked_attention"]
