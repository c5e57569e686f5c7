from .cbam import CBAM, ChannelAttention, SpatialAttention

__all__ = ['CBAM', 'ChannelAttention', 'SpatialAttention']
