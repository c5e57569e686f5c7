from .regularized_bbox_head import RegularizedShared2FCBBoxHead
from .residual_mask_head import ResidualFCNMaskHead

__all__ = ['RegularizedShared2FCBBoxHead', 'ResidualFCNMaskHead']
