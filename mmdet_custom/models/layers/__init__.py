from .cbam import CBAM, ChannelAttention, SpatialAttention
from .eca import ECA, eca_kernel_size

__all__ = ['CBAM', 'ChannelAttention', 'SpatialAttention', 'ECA', 'eca_kernel_size']
