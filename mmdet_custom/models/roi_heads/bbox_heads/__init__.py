from .regularized_bbox_head import RegularizedShared2FCBBoxHead

__all__ = ['RegularizedShared2FCBBoxHead']
