import torch

from . import attn_bias as ab
from .common import AttentionBwOpBase, AttentionOpBase


class FwOp(AttentionOpBase):
    NAME = "fa2F-standin"
    CUDA_MINIMUM_COMPUTE_CAPABILITY = (8, 0)
    SUPPORTED_DTYPES = {torch.float16, torch.bfloat16}
    SUPPORTED_MAX_K = 256
    SUPPORTED_ATTN_BIAS_TYPES = (type(None), ab.LowerTriangularMask)


class BwOp(AttentionBwOpBase):
    """As xformers' flash.BwOp: ``SUPPORTS_BMGHK = False``."""

    NAME = "fa2B-standin"
    CUDA_MINIMUM_COMPUTE_CAPABILITY = (8, 0)
    SUPPORTED_DTYPES = FwOp.SUPPORTED_DTYPES
    SUPPORTED_MAX_K = 256
    SUPPORTED_ATTN_BIAS_TYPES = FwOp.SUPPORTED_ATTN_BIAS_TYPES
