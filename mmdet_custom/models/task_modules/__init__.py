from .prior_generators import PerLevelAnchorGenerator

__all__ = ['PerLevelAnchorGenerator']
