import torch

from . import attn_bias as ab
from .common import AttentionBwOpBase, AttentionOpBase


class FwOp(AttentionOpBase):
    NAME = "cutlassF-standin"
    SUPPORTED_DTYPES = {torch.float32, torch.float16, torch.bfloat16}
    SUPPORTED_MAX_K = 65536
    SUPPORTED_ATTN_BIAS_TYPES = (type(None), torch.Tensor, ab.LowerTriangularMask, ab.LowerTriangularMaskWithTensorBias)
    IS_DETERMINISTIC = False


class BwOp(AttentionBwOpBase):
    """As xformers' cutlass.BwOp: no BMGHK, and no causal mask carrying a tensor bias."""

    NAME = "cutlassB-standin"
    SUPPORTED_DTYPES = FwOp.SUPPORTED_DTYPES
    SUPPORTED_MAX_K = FwOp.SUPPORTED_MAX_K
    SUPPORTED_ATTN_BIAS_TYPES = (type(None), torch.Tensor, ab.LowerTriangularMask)
