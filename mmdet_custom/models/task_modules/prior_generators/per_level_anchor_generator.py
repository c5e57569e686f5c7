"""An anchor generator whose anchor sizes are given per feature level, in pixels."""
from typing import List, Sequence

import torch
from mmdet.models.task_modules.prior_generators import AnchorGenerator
from mmdet.registry import TASK_UTILS
from torch import Tensor


@TASK_UTILS.register_module()
class PerLevelAnchorGenerator(AnchorGenerator):
    """Anchor generator with its own set of anchor sizes on each feature level.

    mmdet's :class:`AnchorGenerator` shares one ``scales`` list across levels (anchor size = stride x scale), so
    a hand-tuned or searched set such as P2 (8, 16), P3 (16, 32), ... cannot be written with it unless every
    level happens to be the same multiple of its stride. This subclass takes the sizes directly and keeps
    everything else of mmdet's conventions: ``ratios`` are h / w and an anchor of size ``s`` and ratio ``r`` is
    ``w = s / sqrt(r)``, ``h = s * sqrt(r)`` (area ``s**2``); anchor centres lie at ``k * stride + center_offset
    * stride`` (the base size of a level is its stride); within one location the anchors are ordered as in
    :meth:`AnchorGenerator.gen_single_level_base_anchors` (``scale_major=True``: ratio-major, size-minor).

    Every level must hold the same number of anchors per location, because the RPN head predicts
    ``num_base_priors[0]`` anchors per location with convolutions shared by all levels.

    Args:
        strides (list[int]): Strides of the feature levels, in pixels. Defaults to ``[4, 8, 16, 32]``.
        sizes (list[list[float]]): Anchor sizes (square root of the anchor area, in network-input pixels) of
            each level. Defaults to ``[[8, 16], [16, 32], [32, 64], [64, 128]]``.
        ratios (list[float]): Height / width ratios shared by all levels. Defaults to ``[0.5, 1.0, 2.0]``.
        center_offset (float): Offset of the anchor centres in proportion to the stride, in [0, 1].
            Defaults to 0 (centres at ``k * stride``, mmdet's V2.0 convention).
        scale_major (bool): Anchor order within a location, as in :class:`AnchorGenerator`. Defaults to True.
        use_box_type (bool): Whether to wrap anchors in ``HorizontalBoxes``. Defaults to False.

    Raises:
        ValueError: if ``sizes`` and ``strides`` differ in length, a size is not positive, or the levels
            hold different numbers of sizes (hence of anchors per location).

    Example:
        >>> self = PerLevelAnchorGenerator(strides=[4, 8], sizes=[[8], [16]], ratios=[1.0])
        >>> self.num_base_priors
        [1, 1]
        >>> [a.shape for a in self.grid_priors([(2, 2), (1, 1)], device='cpu')]
        [torch.Size([4, 4]), torch.Size([1, 4])]
        >>> self.grid_priors([(2, 2), (1, 1)], device='cpu')[1]
        tensor([[-8., -8.,  8.,  8.]])
    """

    def __init__(self,
                 strides: Sequence[int] = (4, 8, 16, 32),
                 sizes: Sequence[Sequence[float]] = ((8, 16), (16, 32), (32, 64), (64, 128)),
                 ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 center_offset: float = 0.,
                 scale_major: bool = True,
                 use_box_type: bool = False) -> None:
        sizes = [[float(s) for s in level_sizes] for level_sizes in sizes]
        if len(sizes) != len(strides):
            raise ValueError(f'PerLevelAnchorGenerator: `sizes` gives {len(sizes)} levels but `strides` '
                             f'gives {len(strides)} ({list(strides)}); give one list of sizes per stride.')
        if any(len(level_sizes) == 0 or min(level_sizes) <= 0 for level_sizes in sizes):
            raise ValueError(f'PerLevelAnchorGenerator: every level needs at least one positive anchor size, '
                             f'got sizes={sizes}.')
        counts = [len(level_sizes) for level_sizes in sizes]
        if len(set(counts)) > 1:
            raise ValueError(
                f'PerLevelAnchorGenerator: the levels hold different numbers of anchor sizes {counts} '
                f'(sizes={sizes}), hence different numbers of anchors per location; the RPN head shares its '
                f'convolutions across levels and needs the same number on every level.')
        self.sizes = sizes
        # `scales` is a placeholder for the parent's checks; the per-level scales are set below.
        super().__init__(
            strides=list(strides),
            ratios=list(ratios),
            scales=[1.0],
            scale_major=scale_major,
            center_offset=center_offset,
            use_box_type=use_box_type)

    def gen_base_anchors(self) -> List[Tensor]:
        """Generate the base anchors (anchors of the location at the origin) of every level.

        Returns:
            list[Tensor]: One ``(len(sizes[i]) * len(ratios), 4)`` tensor per level, xyxy in pixels.
        """
        # the parent's single-level generator with per-level scales = size / base size (base size = stride)
        self.scales = [torch.Tensor(level_sizes) / base_size
                       for level_sizes, base_size in zip(self.sizes, self.base_sizes)]
        return [
            self.gen_single_level_base_anchors(base_size, scales=scales, ratios=self.ratios)
            for base_size, scales in zip(self.base_sizes, self.scales)
        ]

    def __repr__(self) -> str:
        """str: a string that describes the module"""
        return (f'{self.__class__.__name__}(strides={[s[0] for s in self.strides]}, sizes={self.sizes}, '
                f'ratios={self.ratios.tolist()}, center_offset={self.center_offset}, '
                f'scale_major={self.scale_major})')
