from .per_level_anchor_generator import PerLevelAnchorGenerator  # noqa: F401
