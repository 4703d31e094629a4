from .fmha import LowerTriangularMask, memory_efficient_attention  # noqa: F401
