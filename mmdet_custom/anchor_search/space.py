"""The anchor search's space: per-level anchor sizes on a grid tied to each stride and a shared ratio set, the
config's anchors in those terms, the seed's stride-adjusted set and a data-suggested set."""
import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .data import AnchorSearchError, GTBoxes
from .recall import AnchorSetting, level_name

#: Decimals kept of a searched ratio (the written config then builds exactly the evaluated anchors).
RATIO_DECIMALS = 3


# ----------------------------------------------------------------------------------------------- settings
def anchor_setting_from_cfg(anchor_generator_cfg: dict) -> AnchorSetting:
    """The anchors of an ``anchor_generator`` config, as per-level sizes.

    The generator is built through mmdet's ``TASK_UTILS`` registry, so defaults, ``base_sizes`` and
    ``octave_base_scale`` / ``scales_per_octave`` are resolved as mmdet resolves them; mmdet's stock
    ``AnchorGenerator`` (size = base size x scale, shared scales) becomes per-level sizes.

    Raises:
        AnchorSearchError: (a ``ValueError``) for generators other than ``AnchorGenerator`` /
            ``PerLevelAnchorGenerator``, explicit
            ``centers`` or non-square strides.
    """
    from mmdet.models.task_modules.prior_generators import AnchorGenerator
    from mmdet.registry import TASK_UTILS

    from mmdet_custom.models.task_modules.prior_generators import PerLevelAnchorGenerator  # also registers it

    generator = TASK_UTILS.build(dict(anchor_generator_cfg))
    if type(generator) not in (AnchorGenerator, PerLevelAnchorGenerator):
        raise AnchorSearchError(f'anchor search supports AnchorGenerator and PerLevelAnchorGenerator, got '
                         f'{type(generator).__name__}.')
    if getattr(generator, 'centers', None) is not None:
        raise AnchorSearchError('anchor search does not support anchor_generator.centers; use center_offset.')
    if any(sw != sh for sw, sh in generator.strides):
        raise AnchorSearchError(f'anchor search needs square strides, got {generator.strides}.')
    if isinstance(generator, PerLevelAnchorGenerator):
        sizes = generator.sizes
    else:
        sizes = [[float(base) * float(s) for s in generator.scales] for base in generator.base_sizes]
    return AnchorSetting(
        strides=tuple(int(sw) for sw, _ in generator.strides),
        sizes=tuple(tuple(float(v) for v in level) for level in sizes),
        ratios=tuple(float(r) for r in generator.ratios),
        center_offset=float(generator.center_offset))


def stride_adjusted_anchors(strides: Sequence[int]) -> AnchorSetting:
    """The seed's hand-tuned set: sizes (2, 4) x stride on every level, ratios (0.5, 1, 2).

    ``configs/_base_/anchors/isaid_stride_adjusted.py`` writes this set for strides (4, 8, 16, 32, 64).
    """
    return AnchorSetting(tuple(int(s) for s in strides), tuple((2. * s, 4. * s) for s in strides),
                         (0.5, 1.0, 2.0))


@dataclass(frozen=True)
class SearchSpace:
    """Per-level sizes on a grid tied to each stride and a shared set of ratios.

    The size ``j`` of level ``l`` (stride ``s``) is searched on ``{s/2, s, 3s/2, ...}`` between
    ``size_ranges[l]``; each ratio log-uniformly in ``ratio_range`` (kept to 3 decimals). Sizes within a level
    and the ratios are sorted when a setting is made, so the order of the parameters does not matter.

    Attributes:
        strides (tuple[int]): level strides (fixed).
        sizes_per_level (int): anchor sizes per level (fixed).
        num_ratios (int): ratios (fixed).
        size_ranges (tuple[tuple[float, float, float]]): (low, high, step) of each level, pixels.
        ratio_range (tuple[float, float]): (low, high) of a ratio (h / w).
        center_offset (float): the config's centre offset (fixed).
    """

    strides: Tuple[int, ...]
    sizes_per_level: int
    num_ratios: int
    size_ranges: Tuple[Tuple[float, float, float], ...]
    ratio_range: Tuple[float, float] = (0.2, 5.0)
    center_offset: float = 0.

    @classmethod
    def around(cls, baseline: AnchorSetting, max_multiple: float = 8.,
               ratio_range: Tuple[float, float] = (0.2, 5.0)) -> 'SearchSpace':
        """Space around a baseline: sizes in [stride/2, max_multiple x stride] (widened to hold the
        baseline) in steps of stride/2; the number of sizes and ratios of the baseline.

        Raises:
            AnchorSearchError: (a ``ValueError``) if the baseline's levels hold different numbers of sizes.
        """
        counts = {len(s) for s in baseline.sizes}
        if len(counts) != 1:
            raise AnchorSearchError(f'anchor levels hold different numbers of sizes {baseline.sizes}.')
        ranges = []
        for stride, sizes in zip(baseline.strides, baseline.sizes):
            step = stride / 2.
            high = max(max_multiple * stride, math.ceil(max(sizes) / step) * step)
            ranges.append((step, float(high), step))
        ratio_range = (min(ratio_range[0], min(baseline.ratios)), max(ratio_range[1], max(baseline.ratios)))
        return cls(tuple(baseline.strides), counts.pop(), len(baseline.ratios), tuple(ranges),
                   (float(ratio_range[0]), float(ratio_range[1])), baseline.center_offset)

    def size_param(self, level: int, j: int) -> str:
        return f'{level_name(self.strides[level])}_size{j}'

    def ratio_param(self, j: int) -> str:
        return f'ratio{j}'

    def distributions(self) -> dict:
        """Optuna distributions of every parameter, by name."""
        from optuna.distributions import FloatDistribution
        dists = {}
        for level, (low, high, step) in enumerate(self.size_ranges):
            for j in range(self.sizes_per_level):
                dists[self.size_param(level, j)] = FloatDistribution(low, high, step=step)
        for j in range(self.num_ratios):
            dists[self.ratio_param(j)] = FloatDistribution(*self.ratio_range, log=True)
        return dists

    def suggest(self, trial) -> AnchorSetting:
        """Sample a setting with an Optuna trial."""
        params = {}
        for level, (low, high, step) in enumerate(self.size_ranges):
            for j in range(self.sizes_per_level):
                name = self.size_param(level, j)
                params[name] = trial.suggest_float(name, low, high, step=step)
        for j in range(self.num_ratios):
            params[self.ratio_param(j)] = trial.suggest_float(self.ratio_param(j), *self.ratio_range, log=True)
        return self.setting(params)

    def setting(self, params: Dict[str, float]) -> AnchorSetting:
        """The anchor setting of a parameter dict (sizes sorted per level, ratios sorted and rounded)."""
        sizes = tuple(
            tuple(sorted(float(params[self.size_param(level, j)]) for j in range(self.sizes_per_level)))
            for level in range(len(self.strides)))
        ratios = tuple(sorted(round(float(params[self.ratio_param(j)]), RATIO_DECIMALS)
                              for j in range(self.num_ratios)))
        return AnchorSetting(self.strides, sizes, ratios, self.center_offset)

    def params(self, setting: AnchorSetting) -> Dict[str, float]:
        """Parameter dict of a setting of this space's shape (for ``study.enqueue_trial``).

        Raises:
            AnchorSearchError: (a ``ValueError``) if the setting has other strides or other numbers of sizes or ratios.
        """
        if (tuple(setting.strides) != tuple(self.strides) or len(setting.ratios) != self.num_ratios
                or any(len(s) != self.sizes_per_level for s in setting.sizes)):
            raise AnchorSearchError(f'anchors {setting} do not fit the search space {self.describe()}.')
        params = {self.size_param(level, j): float(v)
                  for level, sizes in enumerate(setting.sizes) for j, v in enumerate(sorted(sizes))}
        params.update({self.ratio_param(j): float(r) for j, r in enumerate(sorted(setting.ratios))})
        return params

    def snap(self, setting: AnchorSetting) -> AnchorSetting:
        """Nearest setting on this space's grid (sizes rounded to the step and clamped, ratios clamped)."""
        sizes = []
        for (low, high, step), level_sizes in zip(self.size_ranges, setting.sizes):
            sizes.append(tuple(sorted(float(min(max(round(v / step) * step, low), high)) for v in level_sizes)))
        ratios = tuple(sorted(round(min(max(r, self.ratio_range[0]), self.ratio_range[1]), RATIO_DECIMALS)
                              for r in setting.ratios))
        return AnchorSetting(self.strides, tuple(sizes), ratios, self.center_offset)

    def describe(self) -> dict:
        """JSON-able description, stored in the study to detect a resumed study with another space."""
        return dict(strides=list(self.strides), sizes_per_level=self.sizes_per_level, num_ratios=self.num_ratios,
                    size_ranges=[list(r) for r in self.size_ranges], ratio_range=list(self.ratio_range),
                    center_offset=self.center_offset)


# ----------------------------------------------------------------------------------------------- suggestions
def data_suggested_anchors(gt: GTBoxes, baseline: AnchorSetting, space: Optional[SearchSpace] = None
                           ) -> AnchorSetting:
    """A data-driven setting of the baseline's shape: box-size quantiles per level.

    Each box goes to the level whose baseline sizes are nearest in log scale (geometric mean); the sizes of a
    level are the ``(j + 0.5) / k`` quantiles of ``sqrt(w * h)`` of its boxes, the ratios the ``(j + 0.5) / n``
    quantiles of ``h / w`` of all boxes. A level without boxes keeps its baseline sizes. Snapped to ``space``
    when given (so it can be enqueued as a trial), with sizes that snap together stepped apart.
    """
    w = gt.boxes[:, 2] - gt.boxes[:, 0]
    h = gt.boxes[:, 3] - gt.boxes[:, 1]
    log_size = 0.5 * np.log(w * h)
    centres = np.array([np.mean(np.log(s)) for s in baseline.sizes])
    level_of = np.abs(log_size[:, None] - centres[None, :]).argmin(axis=1)
    sizes = []
    for level, base_sizes in enumerate(baseline.sizes):
        k = len(base_sizes)
        mine = log_size[level_of == level]
        if len(mine) == 0:
            sizes.append(tuple(base_sizes))
        else:
            sizes.append(tuple(float(v) for v in np.exp(np.quantile(mine, (np.arange(k) + 0.5) / k))))
    n = len(baseline.ratios)
    ratios = tuple(float(r) for r in np.exp(np.quantile(np.log(h / w), (np.arange(n) + 0.5) / n)))
    setting = AnchorSetting(baseline.strides, tuple(sizes), ratios, baseline.center_offset)
    if space is None:
        return setting
    setting = space.snap(setting)
    # quantiles that snap to the same grid size would duplicate anchors: step the larger ones up the grid
    spread = []
    for (_, high, step), level_sizes in zip(space.size_ranges, setting.sizes):
        out = []
        for v in level_sizes:
            out.append(min(max(v, out[-1] + step), high) if out else v)
        spread.append(tuple(out))
    return AnchorSetting(setting.strides, tuple(spread), setting.ratios, setting.center_offset)
