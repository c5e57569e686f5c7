from .bbox_heads import RegularizedShared2FCBBoxHead
from .mask_heads import ECADCNMaskHead, ResidualFCNMaskHead

__all__ = ['ECADCNMaskHead', 'RegularizedShared2FCBBoxHead', 'ResidualFCNMaskHead']
