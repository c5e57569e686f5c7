from .sparse_max_iou_assigner import SparseMaxIoUAssigner, morton_order

__all__ = ['SparseMaxIoUAssigner', 'morton_order']
