"""Optuna search for per-level RPN anchor sizes and a shared ratio set that maximise exact anchor recall.

The objective of a trial is a weighted recall of the training boxes (by default ``0.7 x recall@(RPN positive
IoU) + 0.3 x recall@0.7``), computed exactly by :func:`~.recall.max_iou_exact` on the config's input size,
strides and centre convention. The number of levels, of sizes per level and of ratios stay those of the
config's anchors (the RPN head's ``num_base_priors`` and its weights layout do not change), and the config's
anchors are the first trial, so the best setting is never worse than the config's.

Any number of worker processes, on one machine (``n_workers``) or several (the same storage and study name), share
one study in an Optuna RDB (SQLite, PostgreSQL, MySQL); the fragment is written once, from the best trial, by the
last worker to finish. Storage, workers, heartbeats, the one write and the plots are the engine every study of the
project shares (:mod:`mmdet_custom.studies`); this module holds the study of the anchor search and its outputs (the
space is in :mod:`.space`, the objective in :mod:`.objective`, the fragment in :mod:`.report`).

The single objective can hide a per-class cost; every search reports the per-class and per-size recall of the best
trial against the config's anchors (``recall_change.json``), and recall floors make trials infeasible
(:mod:`.floors`).
"""
import datetime
import json
import math
import os.path as osp
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from mmdet_custom.studies.once import Outputs, run_registered
from mmdet_custom.studies.plots import save_plots, written
from mmdet_custom.studies.storage import (
    StorageError,
    fail_stale_trials,
    is_in_memory_sqlite,
    open_rdb_storage,
    optimize_one,
    redact_url,
)
from mmdet_custom.studies.workers import new_worker_key, run_processes, shares
from mmdet_custom.utils.fileio import check_writable, dump_json_atomic

from .data import AnchorSearchError, GTBoxes
from .floors import RecallFloor, check_floor_names, floor_recalls, recall_change, resolve_floors, violations
from .objective import DEFAULT_WEIGHTS, REPORT_IOUS, Evaluation, describe_objective, evaluate, resolve_weights
from .recall import AnchorSetting
from .report import fragment_name, write_anchor_fragment
from .space import SearchSpace, anchor_setting_from_cfg, data_suggested_anchors, stride_adjusted_anchors

#: Study user attribute holding the fragment's write record (:mod:`mmdet_custom.studies.once`).
FRAGMENT_ATTR = 'fragment'
#: The per-class and per-size recall change of the best trial, written into the work dir with the plots.
RECALL_CHANGE = 'recall_change.json'


# ----------------------------------------------------------------------------------------------- the study
#: Seconds between two heartbeats of a running trial, recorded in the RDB storage (a thread of ``study.optimize``).
HEARTBEAT_INTERVAL = 10
#: A RUNNING trial whose last heartbeat is older than this (its worker was killed) is marked FAIL, by optuna's
#: ``fail_stale_trials``, when a worker opens the study or starts a trial.
STALE_AFTER = 60


def make_storage(storage, heartbeat_interval: Optional[int] = HEARTBEAT_INTERVAL,
                 grace_period: Optional[int] = STALE_AFTER):
    """An Optuna RDB storage with heartbeats for a URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``,
    see :func:`mmdet_custom.studies.storage.open_rdb_storage`); other storage objects are returned as they are.

    With a heartbeat, a trial whose worker was killed does not stay RUNNING forever: optuna marks it FAIL once its
    heartbeat is ``grace_period`` seconds old (see :func:`open_study`). An in-memory sqlite database gets no
    heartbeat (it lives and dies with its one process). A missing folder of a sqlite file is created; SQLite
    writers wait up to 60 s for each other's lock.

    Raises:
        AnchorSearchError: the URL is malformed, its driver is missing, or the database cannot be opened or created
            (named, password hidden).
        UserError: a SQLite file that cannot be written (:func:`mmdet_custom.utils.fileio.check_writable`).
    """
    if not isinstance(storage, str):
        return storage
    if storage.startswith('sqlite:///'):
        path = storage[len('sqlite:///'):]
        if path and path != ':memory:':
            check_writable(path, '--storage')
    try:
        return open_rdb_storage(storage, heartbeat_interval, grace_period)
    except StorageError as e:
        raise AnchorSearchError(str(e)) from e


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
              enqueue: Sequence[Tuple[str, AnchorSetting]] = (), floors: Sequence[RecallFloor] = ()) -> None:
    """Enqueue the given settings (skipped when already tried) and run ``n_trials`` more trials.

    Each trial stores its recalls in its user attributes ``recall@<iou>``; with ``floors`` (resolved, see
    :mod:`.floors`) also the recall of each floor's group, ``recall:<group>@<iou>``, and ``floor - recall`` as an
    Optuna constraint ``min_recall:<group>@<iou>`` (feasible when <= 0). With ``n_trials=0`` nothing is enqueued or
    run.

    Raises:
        AnchorSearchError: (a ``ValueError``) if ``n_trials`` is negative.
    """
    if n_trials < 0:
        raise AnchorSearchError(f'--trials must be >= 0, got {n_trials}.')
    if n_trials == 0:
        return
    for role, setting in enqueue:
        study.enqueue_trial(space.params(setting), user_attrs={'role': role}, skip_if_exists=True)
    thresholds = tuple(REPORT_IOUS) + tuple(f.iou for f in floors)

    def objective(trial) -> float:
        result = evaluate(space.suggest(trial), gt, weights, thresholds, per_group=bool(floors))
        for iou, value in result.recalls.items():
            trial.set_user_attr(f'recall@{iou:g}', value)
        for floor in floors:
            value = float(result.table[floor.group][float(floor.iou)])
            trial.set_user_attr(f'recall:{floor.key}', value)
            trial.set_constraint(f'min_recall:{floor.key}', floor.value - value)
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


def best_trial(study, floors: Sequence[RecallFloor] = (), measure=None):
    """The study's best trial: the COMPLETE trial of highest objective, the lowest-numbered one among ties (Optuna's
    ``best_trial`` leaves ties to the database's row order). None without a complete trial.

    With ``floors`` (resolved), the best feasible one (None when no trial meets them), judged on each trial's stored
    ``recall:<group>@<iou>``; ``measure(trial) -> {key: recall}`` measures a trial that did not store them (one of
    a run with other floors).
    """
    import optuna
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, ))
    for trial in sorted(complete, key=lambda t: (-t.value, t.number)):
        if not floors:
            return trial
        recalls = {f.key: trial.user_attrs.get(f'recall:{f.key}') for f in floors}
        if any(v is None for v in recalls.values()):
            recalls = measure(trial)
        if not violations(recalls, floors):
            return trial
    return None


@dataclass
class SearchResult:
    """Outcome of :func:`search_anchors`.

    ``fragment`` is the study's write record of the fragment (``path``, ``host``, ``writer``, ``best_trial``,
    ``complete_trials``, ``plots``, ``recall_change``; ``by_me`` when a worker of this call wrote it), ``{}`` when
    none was asked or written. ``errors`` lists the workers of this call that did not exit cleanly. ``change`` is
    :func:`~.floors.recall_change` of the best trial against the config's anchors; ``feasible`` False when no trial
    meets the ``floors`` (``best`` is then the best trial regardless of them, and nothing was written).
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
    floors: Tuple[RecallFloor, ...] = ()
    change: dict = field(default_factory=dict)
    feasible: bool = True


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
    floors: Tuple[RecallFloor, ...] = ()

    def thresholds(self) -> List[float]:
        """IoU thresholds of the reports: REPORT_IOUS, the RPN positive IoU and the floors' IoUs."""
        return sorted(set(REPORT_IOUS) | {self.pos_iou} | {float(f.iou) for f in self.floors})

    def measure(self, trial) -> Dict[str, float]:
        """The floors' recalls of a trial's setting (for a trial that did not store them)."""
        table = evaluate(self.space.setting(trial.params), self.gt, self.weights, self.thresholds(), True).table
        return floor_recalls(table, self.floors)

    def best_trial(self, study):
        """The best trial meeting the floors (see :func:`best_trial`)."""
        return best_trial(study, self.floors, self.measure)


def _evaluation_rows(study, job: _WorkerJob, suggested: Optional[AnchorSetting] = None
                     ) -> List[Tuple[str, Evaluation]]:
    """The comparison rows: config, stride-adjusted, data-suggested (when given) and the study's best (meeting the
    floors; the best regardless of them, named ``best (floors not met)``, when no trial meets them)."""
    rows = [('config', job.baseline), ('stride-adjusted', stride_adjusted_anchors(job.baseline.strides))]
    rows += [('data-suggested', suggested)] if suggested is not None else []
    best = job.best_trial(study)
    rows.append(('best', job.space.setting(best.params)) if best is not None else
                ('best (floors not met)', job.space.setting(best_trial(study).params)))
    return [(name, evaluate(s, job.gt, job.weights, job.thresholds(), per_group=name in ('config', rows[-1][0])))
            for name, s in rows]


def _complete_trials(study) -> int:
    import optuna
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, )))


def _write_outputs(study, job: _WorkerJob) -> dict:
    """Write the fragment of the study's best trial that meets the floors, the plots and ``recall_change.json`` (each
    atomically); return the write record's fields."""
    best = job.best_trial(study)
    complete = _complete_trials(study)
    best_eval = evaluate(job.space.setting(best.params), job.gt, job.weights, job.thresholds(), per_group=True)
    base_eval = evaluate(job.baseline, job.gt, job.weights, job.thresholds(), per_group=True)
    change = recall_change(base_eval.table, best_eval.table, job.thresholds(), job.floors)
    result = SearchResult(study, job.space, job.weights, [], best_eval, base_eval, job.gt, job.config,
                          floors=job.floors, change=change)
    write_anchor_fragment(job.out, best_eval.setting, fragment_header(result, job.storage, best, complete),
                          name=fragment_name(job.study_name), pos_iou_thr=job.pos_iou)
    fields = dict(path=osp.abspath(job.out), plots=[], recall_change=None, best_trial=best.number,
                  objective=best.value, complete_trials=complete)
    if job.work_dir:
        fields['plots'] = [osp.abspath(p) for p in written(save_plots(study, job.work_dir, 'anchor recall objective'))]
        fields['recall_change'] = osp.abspath(osp.join(job.work_dir, RECALL_CHANGE))
        dump_json_atomic(dict(study=job.study_name, best_trial=best.number, config=job.config, **change),
                         fields['recall_change'], indent=1)
    return fields


def _run_worker(job: _WorkerJob, key: str, n_trials: int, study=None, log=print) -> dict:
    """One worker: adopt its registration ``key``, run ``n_trials`` trials, then (with ``job.out``) wait for the
    running workers and write the fragment if it is the last (:func:`mmdet_custom.studies.once.run_registered`).
    Returns the write record."""
    if study is None:
        study = open_study(job.storage, job.study_name, job.space, job.weights, job.seed,
                           heartbeat_interval=job.heartbeat_interval, grace_period=job.grace_period)
    name = key.split(':', 1)[1]

    def run():
        run_study(study, job.space, job.gt, job.weights, n_trials, floors=job.floors)
        if n_trials:
            log(f'{name}: ran {n_trials} trial(s)')

    outputs = None
    if job.out is not None:  # version: the completed trials, 0 (nothing to write) while none meets the floors
        outputs = Outputs(FRAGMENT_ATTR, lambda: _complete_trials(study) if job.best_trial(study) else 0,
                          lambda: _write_outputs(study, job), force=job.force_write, what='fragment')
    record = run_registered(study, key, n_trials, run, outputs, job.heartbeat_interval, job.grace_period, log)
    if record.get('by_me'):
        log(f'{name}: wrote the fragment {record["path"]} from trial {record["best_trial"]} '
            f'({record["complete_trials"]} completed trials)')
    return record


def _worker(key: str, n_trials: int, index: int, job: _WorkerJob) -> None:
    """A worker process of :func:`search_anchors` (run by :func:`mmdet_custom.studies.workers.run_processes`)."""
    _run_worker(job, key, n_trials, log=lambda line: print(line, flush=True))


def search_anchors(cfg, n_trials: int, storage, study_name: str, weights=DEFAULT_WEIGHTS, seed: int = 0,
                   gt: Optional[GTBoxes] = None, n_workers: int = 1, out: Optional[str] = None,
                   work_dir: Optional[str] = None, heartbeat_interval: Optional[int] = HEARTBEAT_INTERVAL,
                   grace_period: Optional[int] = STALE_AFTER, log=print,
                   min_recall: Sequence[RecallFloor] = ()) -> SearchResult:
    """Search the RPN anchors of an mmdet config with ``n_workers`` worker processes (see the module docstring).

    The config's anchors and a data-suggested set are queued as the first trials by the process that creates the
    study. ``n_trials`` is split between the workers (``n_workers == 1`` runs in this process). Each worker
    registers in the study; with ``out``, the last worker of the study to finish -- of this call or of others
    sharing the storage -- writes the fragment of the best trial meeting the floors once, the plots and
    ``recall_change.json`` (see :mod:`mmdet_custom.studies.once`).

    Args:
        cfg (mmengine.Config): full config with ``model.rpn_head.anchor_generator``,
            ``model.train_cfg.rpn.assigner.pos_iou_thr`` and ``train_dataloader``.
        n_trials (int): trials to run now (a resumed study adds them to the stored ones); 0 only reports a
            study that already holds completed trials (and rewrites its fragment when ``out`` is given).
        storage (str): Optuna storage URL, e.g. ``sqlite:///work_dirs/anchor_search.db`` or
            ``postgresql://user:password@host/db`` (see :func:`make_storage`).
        study_name (str): study name; an existing one is resumed.
        weights: ``((iou | 'pos', weight), ...)`` of the objective.
        seed (int): base seed of the sampler (trial ``n`` draws with ``(seed, n)``, see :func:`open_study`).
        gt (GTBoxes, optional): boxes; default :func:`~.data.load_gt_boxes` of ``cfg``.
        n_workers (int): worker processes on this machine. Defaults to 1.
        out (str, optional): the fragment to write; None writes nothing.
        work_dir (str, optional): folder of the plots and ``recall_change.json`` (written with the fragment); None
            writes neither.
        heartbeat_interval (int, optional): seconds between heartbeats of a trial and of a worker.
        grace_period (int, optional): seconds without a heartbeat after which a trial is stale and a worker dead.
        log (callable): prints progress lines.
        min_recall (Sequence[RecallFloor]): recall floors (:func:`~.floors.parse_floors`): trials below one are
            infeasible (see :mod:`.floors`).

    Returns:
        SearchResult: the study, the comparison rows, the best setting, the per-class and per-size recall change
        and the fragment's write record.

    Raises:
        AnchorSearchError: (a ``ValueError``) on a config without RPN anchors, bad weights, a negative
            ``n_trials`` or 0 for a study without completed trials, ``n_workers < 1`` or several workers on an
            in-memory database, no boxes, a floor on a name that is no class nor size of the data, a storage that
            cannot be opened, a study made for another search, or, after the others finished, a worker process
            that failed or was killed.
    """
    from .data import load_gt_boxes

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
    floors = resolve_floors(min_recall, pos_iou)
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
    check_floor_names(floors, gt)
    space = SearchSpace.around(baseline)
    suggested = data_suggested_anchors(gt, baseline, space)

    data = f'{gt.source} ({len(gt)} boxes)'
    study, created = _open_study(storage, study_name, space, weights, seed, data, heartbeat_interval, grace_period)
    roles = {t.user_attrs.get('role') for t in study.get_trials(deepcopy=False)}
    if n_trials and (created or (study.get_trials(deepcopy=False) and 'config' not in roles)):
        # the creator queues them (a study made elsewhere, or whose creator died first, gets them on a resume)
        for role, setting in (('config', baseline), ('data-suggested', suggested)):
            study.enqueue_trial(space.params(setting), user_attrs={'role': role}, skip_if_exists=True)

    trial_shares = shares(n_trials, n_workers) or [0]
    job = _WorkerJob(storage if isinstance(storage, str) else type(storage).__name__, study_name, space, gt,
                     weights, seed, heartbeat_interval, grace_period, out, work_dir, str(cfg.filename or ''), baseline,
                     force_write=n_trials == 0, pos_iou=pos_iou, floors=floors)
    errors, record, keys = [], {}, []
    if len(trial_shares) == 1:
        record = _run_worker(job, new_worker_key(), trial_shares[0], study=study, log=log)
    else:
        keys, errors = run_processes(study, _worker, trial_shares, (job, ), name='anchor-search-worker')
        del study
        study = open_study(storage, study_name, space, weights, seed, data, heartbeat_interval, grace_period)
    if out is not None and not record:
        record = study.user_attrs.get(FRAGMENT_ATTR) or {}
        record = dict(record, by_me=record.get('writer') in keys) if record.get('state') == 'written' else {}
    rows = _evaluation_rows(study, job, suggested)
    best, base = rows[-1][1], rows[0][1]
    feasible = rows[-1][0] == 'best'
    if not feasible:
        record = {}  # a record of an earlier run with other floors is not this run's fragment
    return SearchResult(study, space, weights, rows, best, base, gt, str(cfg.filename or ''), fragment=record,
                        errors=errors, pos_iou=pos_iou, floors=floors, feasible=feasible,
                        change=recall_change(base.table, best.table, job.thresholds(), floors))


def fragment_header(result: SearchResult, storage: str, best=None, complete: Optional[int] = None) -> List[str]:
    """Header lines of a written fragment: study (storage password hidden), best trial, date, objective, recalls,
    data and trial count.

    Args:
        result (SearchResult): the evaluations of the best and the config's anchors, the study and the boxes.
        storage (str): the storage URL.
        best (optuna.trial.FrozenTrial, optional): the best trial (default :func:`best_trial` of the study).
        complete (int, optional): completed trials (default: counted in the study).
    """

    gt, best_eval, base = result.gt, result.best, result.baseline
    best = best if best is not None else best_trial(result.study)
    if complete is None:
        complete = _complete_trials(result.study)
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
    ] + [f'floor: recall of {f["name"]}@{f["iou"]:g} >= {f["min"]:g}: {f["best"]:.4f} (config\'s anchors: '
         f'{f["config"]:.4f})' for f in (result.change or {}).get('floors', [])]
