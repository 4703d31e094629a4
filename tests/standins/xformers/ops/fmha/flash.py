import torch

from . import attn_bias as ab
from .common import AttentionOpBase


class FwOp(AttentionOpBase):
    NAME = "fa2F-standin"
    CUDA_MINIMUM_COMPUTE_CAPABILITY = (8, 0)
    SUPPORTED_DTYPES = {torch.float16, torch.bfloat16}
    SUPPORTED_MAX_K = 256
    SUPPORTED_ATTN_BIAS_TYPES = (type(None), ab.LowerTriangularMask)


class BwOp:
    NAME = "fa2B-standin"
