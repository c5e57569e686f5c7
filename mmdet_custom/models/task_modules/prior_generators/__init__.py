from .per_level_anchor_generator import PerLevelAnchorGenerator

__all__ = ['PerLevelAnchorGenerator']
