import torch

from . import attn_bias as ab
from .common import AttentionOpBase


class FwOp(AttentionOpBase):
    NAME = "cutlassF-standin"
    SUPPORTED_DTYPES = {torch.float32, torch.float16, torch.bfloat16}
    SUPPORTED_MAX_K = 65536
    SUPPORTED_ATTN_BIAS_TYPES = (type(None), torch.Tensor, ab.LowerTriangularMask, ab.LowerTriangularMaskWithTensorBias)
    IS_DETERMINISTIC = False


class BwOp:
    NAME = "cutlassB-standin"
