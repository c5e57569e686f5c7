from .mask_heads import ECADCNMaskHead
from .regularized_bbox_head import RegularizedShared2FCBBoxHead
from .residual_mask_head import ResidualFCNMaskHead

__all__ = ['ECADCNMaskHead', 'RegularizedShared2FCBBoxHead', 'ResidualFCNMaskHead']
