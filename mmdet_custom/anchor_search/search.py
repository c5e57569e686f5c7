"""Optuna search for per-level RPN anchor sizes and a shared ratio set that maximise exact anchor recall.

The objective of a trial is a weighted recall of the training boxes (by default ``0.7 x recall@(RPN positive
IoU) + 0.3 x recall@0.7``), computed exactly by :func:`~.recall.max_iou_exact` on the config's input size,
strides and centre convention. The number of levels, of sizes per level and of ratios stay those of the
config's anchors (the RPN head's ``num_base_priors`` and its weights layout do not change), and the config's
anchors are the first trial, so the best setting is never worse than the config's.

Any number of worker processes, on one machine (``n_workers``) or several (the same storage and study name), share
one study in an Optuna RDB (SQLite, PostgreSQL, MySQL); the fragment is written once, from the best trial, by the
last worker to finish (the rule is in :mod:`.workers`).
"""
import datetime
import json
import math
import os
import os.path as osp
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mmdet_custom.utils.fileio import atomic_path
from mmdet_custom.utils.optuna_storage import fail_stale_trials, optimize_one, redact_url
from mmdet_custom.utils.tables import plain_table

from .data import AnchorSearchError, GTBoxes
from .recall import AnchorSetting, _plain_number, level_name, max_iou_exact, recall_table

#: IoU thresholds always reported, besides the RPN's positive threshold.
REPORT_IOUS = (0.5, 0.7, 0.75)
#: Marker of the RPN positive IoU threshold in objective weights.
POS = 'pos'
DEFAULT_WEIGHTS = ((POS, 0.7), (0.7, 0.3))
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


# ----------------------------------------------------------------------------------------------- objective
def parse_weights(items: Sequence[str]) -> Tuple[Tuple[object, float], ...]:
    """Parse ``['pos=0.7', '0.7=0.3']`` into ``(('pos', 0.7), (0.7, 0.3))`` (IoU threshold = weight).

    Raises:
        AnchorSearchError: (a ``ValueError``) on a malformed item, an IoU outside (0, 1], a negative weight or
            weights summing to 0.
    """
    weights = []
    for item in items:
        try:
            iou, weight = item.split('=')
            iou = POS if iou.strip() == POS else float(iou)
            weight = float(weight)
        except ValueError:
            raise AnchorSearchError(
                f'--weights: expected IOU=WEIGHT (IOU a number or "pos"), got {item!r}.') from None
        weights.append((iou, weight))
    return check_weights(weights)


def check_weights(weights) -> Tuple[Tuple[object, float], ...]:
    """Validate objective weights ``((iou | 'pos', weight), ...)``; see :func:`parse_weights`."""
    weights = tuple((iou, float(w)) for iou, w in weights)
    for iou, w in weights:
        if iou != POS and not 0. < float(iou) <= 1.:
            raise AnchorSearchError(f'objective weights: IoU threshold {iou} is not in (0, 1].')
        if w < 0:
            raise AnchorSearchError(f'objective weights: weight {w} of IoU {iou} is negative.')
    if not weights or sum(w for _, w in weights) <= 0:
        raise AnchorSearchError(f'objective weights {weights} sum to 0.')
    return weights


def resolve_weights(weights, pos_iou: float) -> Tuple[Tuple[float, float], ...]:
    """Replace ``'pos'`` by the RPN positive IoU threshold."""
    return tuple((float(pos_iou) if iou == POS else float(iou), w) for iou, w in check_weights(weights))


def describe_objective(weights: Sequence[Tuple[float, float]]) -> str:
    return ' + '.join(f'{w:g} x recall@{iou:g}' for iou, w in weights)


@dataclass
class Evaluation:
    """Recall of one anchor setting."""

    setting: AnchorSetting
    objective: float
    recalls: Dict[float, float]
    table: Dict[str, Dict[float, float]] = field(default_factory=dict, repr=False)


def evaluate(setting: AnchorSetting, gt: GTBoxes, weights: Sequence[Tuple[float, float]],
             thresholds: Sequence[float] = REPORT_IOUS, per_group: bool = False) -> Evaluation:
    """Exact recall of ``setting`` on ``gt`` and the weighted objective.

    Args:
        setting (AnchorSetting): anchors.
        gt (GTBoxes): boxes in network-input pixels.
        weights: resolved ``((iou, weight), ...)``; the objective is ``sum(w * recall@iou) / sum(w)``.
        thresholds: IoU thresholds to report besides those of the weights.
        per_group (bool): also compute the per-class and per-size table.
    """
    ious = max_iou_exact(gt.boxes, gt.img_shapes, setting)
    thrs = sorted({float(t) for t in thresholds} | {iou for iou, _ in weights})
    recalls = {t: float((ious >= t).mean()) for t in thrs}
    objective = sum(w * recalls[iou] for iou, w in weights) / sum(w for _, w in weights)
    table = recall_table(ious, thrs, gt.labels, gt.classes, gt.areas) if per_group else {}
    return Evaluation(setting, float(objective), recalls, table)


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


# ----------------------------------------------------------------------------------------------- the study
#: Seconds between two heartbeats of a running trial, recorded in the RDB storage (a thread of ``study.optimize``).
HEARTBEAT_INTERVAL = 10
#: A RUNNING trial whose last heartbeat is older than this (its worker was killed) is marked FAIL, by optuna's
#: ``fail_stale_trials``, when a worker opens the study or starts a trial.
STALE_AFTER = 60


def check_writable_path(path: str, flag: str, is_dir: bool = False) -> None:
    """Refuse, before any work, an output path that cannot be written.

    Missing folders are fine (the writers create them) when their nearest existing ancestor is a writable folder.

    Args:
        path (str): the file (or folder, ``is_dir=True``) to be written.
        flag (str): the command-line flag that gave it, for the message.
        is_dir (bool): ``path`` is a folder. Defaults to False.

    Raises:
        AnchorSearchError: ``path`` is a folder where a file is expected (or a file where a folder is), an existing
            file is not writable, or its nearest existing ancestor is not a writable folder.
    """
    path = osp.abspath(os.fspath(path))
    if osp.exists(path):
        if is_dir and not osp.isdir(path):
            raise AnchorSearchError(f'{flag} {path} is a file, not a folder.')
        if not is_dir and osp.isdir(path):
            raise AnchorSearchError(f'{flag} {path} is a folder; give the file to write (e.g. {path}/anchors.py).')
        if not os.access(path, os.W_OK):
            raise AnchorSearchError(f'{flag} {path} is not writable.')
        if is_dir:
            return
    parent = osp.dirname(path)
    while not osp.exists(parent):
        parent = osp.dirname(parent)
    if not osp.isdir(parent):
        raise AnchorSearchError(f'{flag} {path} cannot be created: {parent} is a file, not a folder.')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AnchorSearchError(f'{flag} {path} cannot be created: the folder {parent} is not writable.')


def make_storage(storage, heartbeat_interval: Optional[int] = HEARTBEAT_INTERVAL,
                 grace_period: Optional[int] = STALE_AFTER):
    """An Optuna RDB storage with heartbeats for a URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``,
    see :func:`mmdet_custom.utils.optuna_storage.open_rdb_storage`); other storage objects are returned as they are.

    With a heartbeat, a trial whose worker was killed does not stay RUNNING forever: optuna marks it FAIL once its
    heartbeat is ``grace_period`` seconds old (see :func:`open_study`). An in-memory sqlite database gets no
    heartbeat (it lives and dies with its one process). A missing folder of a sqlite file is created; SQLite
    writers wait up to 60 s for each other's lock.

    Raises:
        AnchorSearchError: the URL is malformed, its driver is missing, or the database cannot be opened or created
            (named, password hidden).
    """
    if not isinstance(storage, str):
        return storage
    from mmdet_custom.utils.optuna_storage import StorageError, open_rdb_storage

    if storage.startswith('sqlite:///'):
        path = storage[len('sqlite:///'):]
        if path and path != ':memory:':
            check_writable_path(path, '--storage')
    try:
        return open_rdb_storage(storage, heartbeat_interval, grace_period)
    except StorageError as e:
        raise AnchorSearchError(str(e)) from e


def rdb_backend(study):
    """The ``RDBStorage`` under a study's (cached) storage, or None for other storages."""
    import optuna
    storage = getattr(study, '_storage', None)
    storage = getattr(storage, '_backend', storage)
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


def count_completed_trials(storage, study_name: str) -> int:
    """Completed trials of ``study_name`` in ``storage`` (0 when there is no such study)."""
    import optuna
    storage = make_storage(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return 0
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, )))


def open_study(storage, study_name: str, space: SearchSpace, weights: Sequence[Tuple[float, float]],
               seed: int = 0, data: str = '', heartbeat_interval: Optional[int] = HEARTBEAT_INTERVAL,
               grace_period: Optional[int] = STALE_AFTER):
    """Create, or load to resume, a maximising TPE study; refuse one made for another search.

    Study creation is atomic in the storage: of several workers starting together exactly one creates it. The
    search space and objective are stored in the study's user attributes when it is created. Trials of an
    earlier run left RUNNING by a kill (their heartbeat older than ``grace_period`` seconds) are marked FAIL
    (``optuna.storages.fail_stale_trials``), with a warning. The sampler is a
    :class:`~.sampler.TrialSeededTPESampler`: trial ``n`` draws with the seed ``(seed, n)``, so workers sharing a
    study never repeat each other's trials even with the same ``seed``, and one worker's run is reproducible.

    Args:
        storage (str | optuna.storages.BaseStorage): storage URL (see :func:`make_storage`) or storage.
        study_name (str): the study; an existing one is resumed.
        space (SearchSpace): the search space.
        weights: resolved objective weights ``((iou, weight), ...)``.
        seed (int): base seed of the sampler. Defaults to 0.
        data (str): description of the boxes, stored with the study.
        heartbeat_interval (int, optional): seconds between heartbeats of a running trial; None disables them.
        grace_period (int, optional): age in seconds of the last heartbeat after which a RUNNING trial is stale.

    Raises:
        AnchorSearchError: (a ``ValueError``) if the storage cannot be opened, or the stored study was made with
            another search space or objective (or, for a study made elsewhere, its trials used other parameter
            distributions).
    """
    return _open_study(storage, study_name, space, weights, seed, data, heartbeat_interval, grace_period)[0]


def _open_study(storage, study_name: str, space: SearchSpace, weights: Sequence[Tuple[float, float]],
               seed: int = 0, data: str = '', heartbeat_interval: Optional[int] = HEARTBEAT_INTERVAL,
               grace_period: Optional[int] = STALE_AFTER) -> tuple:
    """:func:`open_study`, and whether this call created the study."""
    import optuna

    from .sampler import TrialSeededTPESampler

    url = redact_url(storage) if isinstance(storage, str) else type(storage).__name__
    storage = make_storage(storage, heartbeat_interval, grace_period)
    sampler = TrialSeededTPESampler(seed=seed)
    try:  # creation is atomic (unique study name): of several workers starting together, one creates
        study = optuna.create_study(storage=storage, study_name=study_name, direction='maximize', sampler=sampler)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=study_name, sampler=sampler)
        created = False
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise AnchorSearchError(f'study {study_name!r} in {url} minimises: it was not made by the anchor '
                                    f'search; use another --study-name.') from None
    running = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING, ))]
    if running and heartbeat_interval is not None:
        fail_stale_trials(study)
        failed = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL, ))
                  if t.number in running]
        if failed:
            warnings.warn(f'study {study_name!r} in {url}: trial(s) {failed} were left RUNNING by a killed worker '
                          f'(no heartbeat for {grace_period} s); marked FAIL.')
    setup = dict(search_space=space.describe(), objective=[[iou, w] for iou, w in weights])
    stored = {key: study.user_attrs.get(key) for key in setup}
    if all(v is None for v in stored.values()):
        dists = space.distributions()
        for trial in study.get_trials(deepcopy=False):
            if trial.distributions and trial.distributions != dists:
                raise AnchorSearchError(
                    f'study {study_name!r} in {url} holds trials over other parameters '
                    f'({sorted(trial.distributions)}) than this search ({sorted(dists)}); use another '
                    f'--study-name or storage.')
        for key, value in setup.items():
            study.set_user_attr(key, json.loads(json.dumps(value)))
        study.set_user_attr('data', data)
    else:
        for key, value in setup.items():
            if stored[key] != json.loads(json.dumps(value)):
                raise AnchorSearchError(
                    f'study {study_name!r} in {url} was made with a different {key.replace("_", " ")}: '
                    f'stored {stored[key]}, this run {value}. Use another --study-name (or storage) to start '
                    f'a new study, or rerun with the original settings to resume it.')
        if data and study.user_attrs.get('data') not in (None, data):
            warnings.warn(f'study {study_name!r} was made on {study.user_attrs.get("data")}, '
                          f'resumed on {data}.')
    return study, created


def run_study(study, space: SearchSpace, gt: GTBoxes, weights: Sequence[Tuple[float, float]], n_trials: int,
              enqueue: Sequence[Tuple[str, AnchorSetting]] = ()) -> None:
    """Enqueue the given settings (skipped when already tried) and run ``n_trials`` more trials.

    Each trial stores its recalls in its user attributes ``recall@<iou>``. With ``n_trials=0`` nothing is
    enqueued or run.

    Raises:
        AnchorSearchError: (a ``ValueError``) if ``n_trials`` is negative.
    """
    if n_trials < 0:
        raise AnchorSearchError(f'--trials must be >= 0, got {n_trials}.')
    if n_trials == 0:
        return
    for role, setting in enqueue:
        study.enqueue_trial(space.params(setting), user_attrs={'role': role}, skip_if_exists=True)

    def objective(trial) -> float:
        result = evaluate(space.suggest(trial), gt, weights)
        for iou, value in result.recalls.items():
            trial.set_user_attr(f'recall@{iou:g}', value)
        return result.objective

    # one trial per call, counting the trials this worker completed (a queued trial another worker reported first
    # does not count: see optimize_one)
    done, taken = 0, 0
    while done < n_trials:
        if optimize_one(study, objective):
            done += 1
        else:
            taken += 1
            if taken > 10:
                raise AnchorSearchError(f'study {study.study_name!r}: {taken} trials of this worker were finished by '
                                        f'other workers first; check that the workers share a database that locks.')


def best_trial(study):
    """The study's best trial: the COMPLETE trial of highest objective, the lowest-numbered one among ties (Optuna's
    ``best_trial`` leaves ties to the database's row order). None without a complete trial."""
    import optuna
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, ))
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


@dataclass
class SearchResult:
    """Outcome of :func:`search_anchors`.

    ``fragment`` is the study's write record of the fragment (``path``, ``host``, ``writer``, ``best_trial``,
    ``complete_trials``; ``by_me`` when a worker of this call wrote it), ``{}`` when none was asked or written.
    ``errors`` lists the workers of this call that did not exit cleanly.
    """

    study: object
    space: SearchSpace
    weights: Tuple[Tuple[float, float], ...]
    rows: List[Tuple[str, Evaluation]]      # config, stride-adjusted, data-suggested, best
    best: Evaluation
    baseline: Evaluation
    gt: GTBoxes
    config: str = ''
    fragment: dict = field(default_factory=dict)
    errors: List[str] = field(default_factory=list)
    pos_iou: float = math.nan               # the RPN positive IoU of the config (the objective's 'pos')


@dataclass
class _WorkerJob:
    """What a worker process needs (picklable, for the ``spawn`` start method too)."""

    storage: str
    study_name: str
    space: SearchSpace
    gt: GTBoxes
    weights: Tuple[Tuple[float, float], ...]
    seed: int
    heartbeat_interval: Optional[int]
    grace_period: Optional[int]
    out: Optional[str]
    work_dir: Optional[str]
    config: str
    baseline: AnchorSetting
    force_write: bool
    pos_iou: float = 0.7


def _shares(total: int, n_workers: int) -> List[int]:
    """``total`` trials split between ``n_workers`` (workers without a trial are left out)."""
    return [s for s in (total // n_workers + (1 if i < total % n_workers else 0) for i in range(n_workers)) if s]


def _evaluation_rows(study, space: SearchSpace, gt: GTBoxes, weights, baseline: AnchorSetting, pos_iou: float,
                     suggested: Optional[AnchorSetting] = None) -> List[Tuple[str, Evaluation]]:
    """The comparison rows: config, stride-adjusted, data-suggested (when given) and the study's best."""
    thresholds = sorted(set(REPORT_IOUS) | {pos_iou})
    rows = [('config', baseline), ('stride-adjusted', stride_adjusted_anchors(baseline.strides))]
    rows += [('data-suggested', suggested)] if suggested is not None else []
    rows.append(('best', space.setting(best_trial(study).params)))
    return [(name, evaluate(s, gt, weights, thresholds, per_group=name in ('config', 'best'))) for name, s in rows]


def _write_outputs(study, job: _WorkerJob) -> dict:
    """Write the fragment of the study's best trial (atomically) and the plots; return the write record's fields."""
    import optuna
    best = best_trial(study)
    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, )))
    best_eval = evaluate(job.space.setting(best.params), job.gt, job.weights)
    base_eval = evaluate(job.baseline, job.gt, job.weights)
    result = SearchResult(study, job.space, job.weights, [], best_eval, base_eval, job.gt, job.config)
    write_anchor_fragment(job.out, best_eval.setting, fragment_header(result, job.storage, best, complete),
                          name=fragment_name(job.study_name), pos_iou_thr=job.pos_iou)
    plots = save_study_plots(study, job.work_dir) if job.work_dir else []
    return dict(path=osp.abspath(job.out), plots=[osp.abspath(p) for p in plots], best_trial=best.number,
                objective=best.value, complete_trials=complete)


def _run_worker(job: _WorkerJob, key: str, n_trials: int, study=None, log=print) -> dict:
    """One worker: adopt its registration ``key``, run ``n_trials`` trials, then (with ``job.out``) wait for the
    running workers and write the fragment if it is the last (see :mod:`.workers`). Returns the write record."""
    from .workers import DONE, EXITED, FAILED, Registration, wait_for_running_workers, write_fragment_once
    if study is None:
        study = open_study(job.storage, job.study_name, job.space, job.weights, job.seed,
                           heartbeat_interval=job.heartbeat_interval, grace_period=job.grace_period)
    rdb = rdb_backend(study)
    if rdb is None:  # a storage object of one process (e.g. optuna's InMemoryStorage): nobody to agree with
        run_study(study, job.space, job.gt, job.weights, n_trials)
        return dict(_write_outputs(study, job), by_me=True) if job.out is not None else {}
    study_id = rdb.get_study_id_from_name(job.study_name)
    name = key.split(':', 1)[1]
    registration = Registration(rdb, study_id, key, job.heartbeat_interval, trials=n_trials).start()
    state = FAILED
    try:
        run_study(study, job.space, job.gt, job.weights, n_trials)
        registration.write(state=DONE)
        if n_trials:
            log(f'{name}: ran {n_trials} trial(s)')
        record = {}
        if job.out is not None:
            import optuna
            # optuna's default grace period is 2 heartbeat intervals
            grace = (job.grace_period or 2 * job.heartbeat_interval) if job.heartbeat_interval else 0
            poll = min(job.heartbeat_interval or 1, max(grace / 4, 0.2))
            if n_trials and job.heartbeat_interval:
                if wait_for_running_workers(rdb, study_id, key, grace, poll, log):
                    fail_stale_trials(study)  # the dead workers' trials, once their heartbeat is stale
            record = write_fragment_once(
                rdb, study_id, key,
                lambda: len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, ))),
                lambda: _write_outputs(study, job), grace, min(poll, 1.0), force=job.force_write, log=log)
            if record.get('by_me'):
                log(f'{name}: wrote the fragment {record["path"]} from trial {record["best_trial"]} '
                    f'({record["complete_trials"]} completed trials)')
        state = EXITED
        return record
    finally:
        registration.stop(state)


def _worker_entry(job: _WorkerJob, key: str, n_trials: int) -> None:
    """Entry point of a worker process: a user error is one ``error:`` line and exit code 2."""
    from mmdet_custom.utils.errors import UserError
    try:
        _run_worker(job, key, n_trials, log=lambda line: print(line, flush=True))
    except UserError as e:
        print(f'error: {key}: {e}', file=sys.stderr, flush=True)
        sys.exit(2)


def _start_method() -> str:
    """``fork`` where the platform has it (the workers start at once with the boxes already read); ``spawn``
    otherwise. The parent closes its database connections before forking and every worker opens its own."""
    import multiprocessing
    return 'fork' if 'fork' in multiprocessing.get_all_start_methods() else 'spawn'


def search_anchors(cfg, n_trials: int, storage, study_name: str, weights=DEFAULT_WEIGHTS, seed: int = 0,
                   gt: Optional[GTBoxes] = None, n_workers: int = 1, out: Optional[str] = None,
                   work_dir: Optional[str] = None, heartbeat_interval: Optional[int] = HEARTBEAT_INTERVAL,
                   grace_period: Optional[int] = STALE_AFTER, log=print) -> SearchResult:
    """Search the RPN anchors of an mmdet config with ``n_workers`` worker processes (see the module docstring).

    The config's anchors and a data-suggested set are queued as the first trials by the process that creates the
    study. ``n_trials`` is split between the workers (``n_workers == 1`` runs in this process). Each worker
    registers in the study; with ``out``, the last worker of the study to finish -- of this call or of others
    sharing the storage -- writes the fragment of the best trial once, and the plots (see :mod:`.workers`).

    Args:
        cfg (mmengine.Config): full config with ``model.rpn_head.anchor_generator``,
            ``model.train_cfg.rpn.assigner.pos_iou_thr`` and ``train_dataloader``.
        n_trials (int): trials to run now (a resumed study adds them to the stored ones); 0 only reports a
            study that already holds completed trials (and rewrites its fragment when ``out`` is given).
        storage (str): Optuna storage URL, e.g. ``sqlite:///work_dirs/anchor_search.db`` or
            ``postgresql://user:password@host/db`` (see :func:`make_storage`).
        study_name (str): study name; an existing study of that name is resumed.
        weights: ``((iou | 'pos', weight), ...)`` of the objective.
        seed (int): base seed of the sampler (trial ``n`` draws with ``(seed, n)``, see :func:`open_study`).
        gt (GTBoxes, optional): boxes; default :func:`~.data.load_gt_boxes` of ``cfg``.
        n_workers (int): worker processes on this machine. Defaults to 1.
        out (str, optional): the fragment to write; None writes nothing.
        work_dir (str, optional): folder of the plots (written with the fragment); None draws none.
        heartbeat_interval (int, optional): seconds between heartbeats of a trial and of a worker.
        grace_period (int, optional): seconds without a heartbeat after which a trial is stale and a worker dead.
        log (callable): prints progress lines.

    Returns:
        SearchResult: the study, the comparison rows, the best setting and the fragment's write record.

    Raises:
        AnchorSearchError: (a ``ValueError``) on a config without RPN anchors, bad weights, a negative
            ``n_trials`` or 0 for a study without completed trials, ``n_workers < 1`` or several workers on an
            in-memory database, no boxes, a storage that cannot be opened, a study made for another search, or,
            after the others finished, a worker process that failed or was killed.
    """
    from mmdet_custom.utils.optuna_storage import is_in_memory_sqlite

    from .data import load_gt_boxes
    from .workers import DONE, RUNNING, Registration, new_worker_key

    rpn_head = cfg.get('model', {}).get('rpn_head')
    if not rpn_head or 'anchor_generator' not in rpn_head:
        raise AnchorSearchError(f'{cfg.filename}: model.rpn_head.anchor_generator not found.')
    try:
        pos_iou = float(cfg.model.train_cfg.rpn.assigner.pos_iou_thr)
    except (AttributeError, KeyError, TypeError):
        raise AnchorSearchError(f'{cfg.filename}: model.train_cfg.rpn.assigner.pos_iou_thr not found.') from None
    allowed_border = cfg.model.train_cfg.rpn.get('allowed_border', -1)
    if allowed_border is not None and allowed_border >= 0:
        warnings.warn(f'{cfg.filename}: rpn allowed_border={allowed_border} is not modelled; recall counts '
                      f'every anchor of the grid.')
    weights = resolve_weights(weights, pos_iou)
    baseline = anchor_setting_from_cfg(rpn_head['anchor_generator'])
    if n_trials < 0:
        raise AnchorSearchError(f'--trials must be >= 0, got {n_trials}.')
    if n_workers < 1:
        raise AnchorSearchError(f'--n-workers must be >= 1, got {n_workers}.')
    if n_workers > 1 and (not isinstance(storage, str) or is_in_memory_sqlite(storage)):
        raise AnchorSearchError(f'--n-workers {n_workers}: worker processes share a study through a database '
                                f'file or server; {storage} is not one (use e.g. sqlite:///work_dirs/anchors.db).')
    if n_trials == 0 and count_completed_trials(storage, study_name) == 0:
        raise AnchorSearchError(
            f'--trials 0: study {study_name!r} holds no completed trial to report; run at least one trial '
            f'(the config\'s anchors are the first).')
    if isinstance(storage, str) and is_in_memory_sqlite(storage):
        heartbeat_interval = grace_period = None
    gt = gt if gt is not None else load_gt_boxes(cfg)
    space = SearchSpace.around(baseline)
    suggested = data_suggested_anchors(gt, baseline, space)

    data = f'{gt.source} ({len(gt)} boxes)'
    study, created = _open_study(storage, study_name, space, weights, seed, data, heartbeat_interval, grace_period)
    roles = {t.user_attrs.get('role') for t in study.get_trials(deepcopy=False)}
    if n_trials and (created or (study.get_trials(deepcopy=False) and 'config' not in roles)):
        # the creator queues them (a study made elsewhere, or whose creator died first, gets them on a resume)
        for role, setting in (('config', baseline), ('data-suggested', suggested)):
            study.enqueue_trial(space.params(setting), user_attrs={'role': role}, skip_if_exists=True)

    shares = _shares(n_trials, n_workers) or [0]
    job = _WorkerJob(storage if isinstance(storage, str) else type(storage).__name__, study_name, space, gt,
                     weights, seed, heartbeat_interval, grace_period, out, work_dir, str(cfg.filename or ''), baseline,
                     force_write=n_trials == 0, pos_iou=pos_iou)
    errors, record, keys = [], {}, []
    if len(shares) == 1:
        record = _run_worker(job, new_worker_key(), shares[0], study=study, log=log)
    else:
        import multiprocessing
        rdb = rdb_backend(study)
        study_id = rdb.get_study_id_from_name(study_name)
        keys = [new_worker_key() for _ in shares]
        for key, share in zip(keys, shares):  # registered before any starts: none can think itself the last
            Registration(rdb, study_id, key, None, trials=share).write(state=RUNNING if share else DONE)
        rdb.engine.dispose()  # a forked worker must not share the parent's connections
        del study
        ctx = multiprocessing.get_context(_start_method())
        procs = [ctx.Process(target=_worker_entry, args=(job, key, share), name=f'anchor-search-worker-{i}')
                 for i, (key, share) in enumerate(zip(keys, shares))]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        errors = [f'worker {key.split(":", 1)[1]} (pid {p.pid}) exited with code {p.exitcode}'
                  for key, p in zip(keys, procs) if p.exitcode != 0]
        study = open_study(storage, study_name, space, weights, seed, data, heartbeat_interval, grace_period)
    if out is not None and not record:
        from .workers import FRAGMENT_ATTR
        record = study.user_attrs.get(FRAGMENT_ATTR) or {}
        record = dict(record, by_me=record.get('writer') in keys) if record.get('state') == 'written' else {}
    rows = _evaluation_rows(study, space, gt, weights, baseline, pos_iou, suggested)
    return SearchResult(study, space, weights, rows, rows[-1][1], rows[0][1], gt, str(cfg.filename or ''),
                        fragment=record, errors=errors, pos_iou=pos_iou)


# ----------------------------------------------------------------------------------------------- reports
def format_comparison(rows: Sequence[Tuple[str, Evaluation]], thresholds: Sequence[float] = REPORT_IOUS) -> str:
    """Plain-text table: sizes per level (P2, P3, ...), ratios, recall@thresholds and the objective."""
    strides = rows[0][1].setting.strides
    header = ['anchors'] + [level_name(s) for s in strides] + ['ratios'] + \
        [f'R@{t:g}' for t in thresholds] + ['objective']
    lines = [header]
    for name, ev in rows:
        sizes = ev.setting.describe_sizes() if ev.setting.strides == strides else ['-'] * len(strides)
        lines.append([name] + sizes + ['/'.join(f'{r:g}' for r in ev.setting.ratios)] +
                     [f'{ev.recalls.get(float(t), math.nan):.4f}' for t in thresholds] + [f'{ev.objective:.4f}'])
    return plain_table(lines)


def format_groups(evaluations: Sequence[Tuple[str, Evaluation]], thresholds: Sequence[float] = REPORT_IOUS) -> str:
    """Plain-text per-class and per-size recall table, one column block per named evaluation."""
    header = ['group', 'boxes'] + [f'{name} R@{t:g}' for name, _ in evaluations for t in thresholds]
    lines = [header]
    first = evaluations[0][1].table
    for group, row in first.items():
        if row['num']:
            lines.append([group, str(row['num'])] +
                         [f'{ev.table[group][float(t)]:.4f}' for _, ev in evaluations for t in thresholds])
    return plain_table(lines, heading_rule=False)


def fragment_name(study_name: str) -> str:
    """The private config name a searched fragment defines: ``_anchors_<study name>`` (non-word characters as ``_``).

    Named after the study, so that it cannot clash with the anchors-step fragment's ``_rpn_anchor_generator`` that
    a parent config already inherits (mmengine refuses a name defined by two bases of one config), nor with the
    fragment of another study.

    >>> fragment_name('isaid-v1')
    '_anchors_isaid_v1'
    """
    return '_anchors_' + re.sub(r'\W', '_', study_name)


def write_anchor_fragment(path: str, setting: AnchorSetting, header: Sequence[str] = (),
                          name: str = '_anchors_search', pos_iou_thr: Optional[float] = None) -> str:
    """Write ``setting`` as a config fragment, atomically (temp file in the same folder, then ``os.replace``).

    The fragment defines one private name, ``name`` (:func:`fragment_name` of the study), holding the part of
    ``model`` the search decided: ``rpn_head.anchor_generator`` (a complete dict with ``_delete_=True``) and, when
    ``pos_iou_thr`` is given, ``train_cfg.rpn.assigner.pos_iou_thr``, the RPN positive IoU the recall was optimised
    at. Any iSAID config takes both with two lines (mmengine refuses a ``model`` defined by two files of one
    ``_base_`` list, hence a private name)::

        _base_ = [<parent config>, <this file>]
        model = _base_.<name>

    Returns:
        str: the path written.
    """
    cfg = setting.generator_cfg()
    body = [f'        {key}={value!r},' for key, value in cfg.items() if key != 'type']
    rpn_iou = ([f'# pos_iou_thr {pos_iou_thr:g}: the RPN positive IoU (train_cfg.rpn.assigner) the recall was '
                'optimised at, the searched', '# config\'s; the fragment sets it too, whatever the parent\'s.']
               if pos_iou_thr is not None else [])
    train_cfg = ([f'    train_cfg=dict(rpn=dict(assigner=dict(pos_iou_thr={_plain_number(pos_iou_thr)!r}))),']
                 if pos_iou_thr is not None else [])
    text = '\n'.join(
        [f'# {line}' if line else '#' for line in header] +
        ['# _delete_: replaces the parent\'s whole anchor_generator; the stock AnchorGenerator\'s scales /',
         '# octave_base_scale / base_sizes keys do not apply to PerLevelAnchorGenerator.'] + rpn_iou +
        ['# Use, from any iSAID config (the name is the study\'s, so it never clashes with the anchors step\'s):',
         '#   _base_ = [<parent config>, <this file>]',
         f'#   model = _base_.{name}',
         f'{name} = dict(',
         '    rpn_head=dict(anchor_generator=dict(',
         '        _delete_=True,',
         f'        type={cfg["type"]!r},'] + body + ['    )),'] + train_cfg + [')', ''])
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        f.write(text)
    return path


def fragment_header(result: SearchResult, storage: str, best=None, complete: Optional[int] = None) -> List[str]:
    """Header lines of a written fragment: study (storage password hidden), best trial, date, objective, recalls,
    data and trial count.

    Args:
        result (SearchResult): the evaluations of the best and the config's anchors, the study and the boxes.
        storage (str): the storage URL.
        best (optuna.trial.FrozenTrial, optional): the best trial (default :func:`best_trial` of the study).
        complete (int, optional): completed trials (default: counted in the study).
    """
    import optuna

    gt, best_eval, base = result.gt, result.best, result.baseline
    best = best if best is not None else best_trial(result.study)
    if complete is None:
        complete = len(result.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    recall = lambda ev: ' / '.join(f'{ev.recalls[t]:.4f}' for t in REPORT_IOUS)  # noqa: E731
    resize = gt.resize
    resize_txt = (f'Resize(scale={resize.scale}, keep_ratio={resize.keep_ratio})'
                  if resize is not None and resize.scale is not None else f'{resize}')
    return [
        'RPN anchors found by tools/anchor_search.py (Optuna TPE, exact anchor recall); rerun it, do not edit.',
        f'study: {result.study.study_name} in {redact_url(storage)}, {complete} completed trials, best trial '
        f'{best.number if best is not None else "-"}, '
        f'written {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC',
        f'config: {result.config}',
        f'data: {gt.source}: {len(gt)} boxes in {gt.num_images} images, network-input pixels of {resize_txt}',
        f'objective: {describe_objective(result.weights)} = {best_eval.objective:.4f} '
        f'(config\'s anchors: {base.objective:.4f})',
        f'recall@{"/".join(f"{t:g}" for t in REPORT_IOUS)}: {recall(best_eval)} (config\'s anchors: {recall(base)})',
    ]


def save_study_plots(study, out_dir: str) -> List[str]:
    """Optimisation history and parameter importances as PNG (optuna.visualization.matplotlib).

    Importances need at least two completed trials with different values; otherwise they are skipped with a
    warning. Returns the paths written.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    os.makedirs(out_dir, exist_ok=True)
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
        ax = ovm.plot_optimization_history(study)
        path = osp.join(out_dir, 'optimization_history.png')
        with atomic_path(path) as tmp:
            ax.figure.savefig(tmp, dpi=120, bbox_inches='tight')
        plt.close(ax.figure)
        written.append(path)
        values = {t.value for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}
        if len(values) < 2:
            warnings.warn('parameter importances need >= 2 completed trials with different objective values; '
                          'skipped.')
            return written
        try:
            ax = ovm.plot_param_importances(study)
        except (ValueError, RuntimeError) as e:
            warnings.warn(f'parameter importances skipped: {e}')
            return written
        path = osp.join(out_dir, 'param_importances.png')
        with atomic_path(path) as tmp:
            ax.figure.savefig(tmp, dpi=120, bbox_inches='tight')
        plt.close(ax.figure)
        written.append(path)
    return written
