from .timm_cbam import TimmCBAMBackbone

__all__ = ['TimmCBAMBackbone']
