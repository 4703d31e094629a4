"""Causal biases: top-left ``LowerTriangularMask`` and the one carrying a tensor bias too."""

from __future__ import annotations


class AttentionBias:
    pass


class LowerTriangularMask(AttentionBias):
    """Query i attends keys 0..i (top-left, as xformers documents)."""

    def add_bias(self, bias):
        return LowerTriangularMaskWithTensorBias(bias)


class LowerTriangularMaskWithTensorBias(LowerTriangularMask):
    HOLDS_DENSE_TENSOR = True

    def __init__(self, bias):
        self._subtensor = bias
