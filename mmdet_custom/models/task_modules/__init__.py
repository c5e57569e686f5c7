from .assigners import SparseMaxIoUAssigner
from .prior_generators import PerLevelAnchorGenerator

__all__ = ['PerLevelAnchorGenerator', 'SparseMaxIoUAssigner']
