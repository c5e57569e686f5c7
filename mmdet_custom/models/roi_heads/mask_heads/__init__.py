from .eca_dcn_mask_head import ECADCNMaskHead
from .residual_mask_head import ResidualFCNMaskHead

__all__ = ['ECADCNMaskHead', 'ResidualFCNMaskHead']
