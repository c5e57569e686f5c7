from .eca_dcn_mask_head import ECADCNMaskHead

__all__ = ['ECADCNMaskHead']
