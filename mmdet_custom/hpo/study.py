"""Recipe search over a config with Optuna: studies in a relational database shared by any number of workers.

Storage: any Optuna RDB URL (``sqlite:///study.db`` on one machine; ``postgresql://user:pass@host/db`` or
``mysql://...`` for workers on several machines), opened with a heartbeat (``heartbeat_interval``): a worker that
dies (killed, out of memory, machine lost) leaves its trial RUNNING with a stale heartbeat; the next worker to start
a trial marks it FAIL (``optuna.storages.fail_stale_trials``) and queues one retry with the same parameters
(``RetryHeartbeatStaleTrialCallback``), so the study resumes where it was.

Trial budget: ``n_trials`` counts the trials that gave an answer or an error (COMPLETE, PRUNED, FAIL with an error,
plus those RUNNING); trials failed because their worker died do not count (their retry does). Queued (WAITING)
trials always run. A run started with several workers splits what is left of the budget between them, so the total
is exact; several runs started at the same moment on several machines each check the count before every trial,
and may overshoot by at most one trial per extra run.

Workers register in the study and beat (:mod:`mmdet_custom.studies.workers`); at the end the last worker of the
study to finish -- of this command or of others sharing the storage -- writes ``best_config.py`` (the best COMPLETE
trial's config), ``study_summary.json`` and Optuna's plots (``plots/optimization_history.png``,
``param_importances.png``, ``parallel_coordinate.png``) in its work dir, once (:mod:`mmdet_custom.studies.once`;
the record is the study attribute ``result``), each file atomically. Storage, workers and plots are the engine every
study of the project shares (:mod:`mmdet_custom.studies`); this module holds the recipe search's objective and outputs.
"""
import math
import os
import os.path as osp
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from mmdet_custom.studies.once import Outputs, run_registered
from mmdet_custom.studies.plots import save_plots
from mmdet_custom.studies.storage import (
    StorageError,
    fail_stale_trials,
    is_in_memory_sqlite,
    open_rdb_storage,
    optimize_one,
    redact_url,
)
from mmdet_custom.studies.workers import new_worker_key, run_processes, shares
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import atomic_path, dump_json_atomic

from .space import check_space, json_safe, load_space, suggest_options
from .trial import ensure_val_loss_hook, run_trial, trial_config

__all__ = ['StudyError', 'StudySpec', 'open_study', 'count_trials', 'run_worker', 'run_study', 'write_best_config',
           'write_results', 'study_summary', 'RESULT_ATTR']

PRUNERS = ('median', 'hyperband', 'none')
#: Study user attribute holding the write record of the results (best config, summary, plots).
RESULT_ATTR = 'result'
SAMPLERS = ('tpe', 'random')


class StudyError(UserError, ValueError):
    """A study setting that cannot work (storage URL, budget, an existing study of another config or metric)."""


@dataclass
class StudySpec:
    """Everything a worker needs to run trials of one study (picklable: workers may be other processes).

    Attributes:
        config (str): the config searched over; cfg_options (dict, optional): ``--cfg-options`` applied first.
        space (str): the search space file (see :mod:`mmdet_custom.hpo.space`).
        storage (str): Optuna RDB URL; study_name (str): the study's name in it.
        n_trials (int): the study's trial budget (see the module docstring).
        work_dir (str): the study's folder (trial work dirs, best config, summary, plots).
        metric (str): validation metric optimised (``coco/segm_mAP``: iSAID segm AP); direction (str):
            ``maximize`` or ``minimize``.
        pruner (str): ``median`` (``MedianPruner(n_startup_trials=pruner_startup, n_warmup_steps=pruner_warmup)``),
            ``hyperband`` (``HyperbandPruner(min_resource=1, reduction_factor=3)``) or ``none``.
        sampler (str): ``tpe`` or ``random``; seed (int, optional): the sampler's seed (worker k uses seed + k).
        heartbeat_interval (int): seconds between a running trial's heartbeats; grace_period (int, optional):
            seconds without heartbeat after which a trial counts as dead (Optuna's default: 2 intervals).
        max_retry (int): retries of a trial whose worker died.
        enqueue (list[dict]): parameter sets queued once, before sampling (``Study.enqueue_trial``).
        check_image_files (bool): check every train/val image in each worker's first trial.
        data_root (str, optional): ``--data-root``: the data folder of every dataset and evaluator, applied after
            ``cfg_options`` (:func:`mmdet_custom.datasets.utils.set_data_root`).
    """
    config: str
    space: str
    storage: str
    study_name: str
    n_trials: int
    work_dir: str
    metric: str = 'coco/segm_mAP'
    direction: str = 'maximize'
    pruner: str = 'median'
    pruner_startup: int = 5
    pruner_warmup: int = 0
    sampler: str = 'tpe'
    seed: Optional[int] = None
    heartbeat_interval: int = 60
    grace_period: Optional[int] = None
    max_retry: int = 1
    cfg_options: Optional[Dict[str, Any]] = None
    enqueue: List[Dict[str, Any]] = field(default_factory=list)
    check_image_files: bool = True
    data_root: Optional[str] = None

    def check(self) -> None:
        """Raise :class:`StudyError` for a setting that cannot work, naming the flag."""
        if self.n_trials < 1:
            raise StudyError(f'--trials must be at least 1, got {self.n_trials}')
        if self.direction not in ('maximize', 'minimize'):
            raise StudyError(f'--direction must be maximize or minimize, got {self.direction!r}')
        if self.pruner not in PRUNERS:
            raise StudyError(f'--pruner must be one of {", ".join(PRUNERS)}, got {self.pruner!r}')
        if self.sampler not in SAMPLERS:
            raise StudyError(f'--sampler must be one of {", ".join(SAMPLERS)}, got {self.sampler!r}')
        if self.heartbeat_interval < 1:
            raise StudyError(f'--heartbeat-interval must be at least 1 s, got {self.heartbeat_interval}')
        if '://' not in self.storage:
            raise StudyError(f'--storage {self.storage!r} is not a database URL; e.g. sqlite:///{self.storage} on one '
                             f'machine, postgresql://user:password@host:5432/db for workers on several')


def _storage(spec: StudySpec):
    """The study's RDBStorage (``studies.storage``: SQLite lock wait, heartbeats, driver hints)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    try:
        return open_rdb_storage(spec.storage, spec.heartbeat_interval, spec.grace_period,
                                RetryHeartbeatStaleTrialCallback(max_retry=spec.max_retry))
    except StorageError as e:
        raise StudyError(str(e)) from e


def _pruner(spec: StudySpec):
    import optuna
    if spec.pruner == 'median':
        return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup, n_warmup_steps=spec.pruner_warmup)
    if spec.pruner == 'hyperband':
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource='auto', reduction_factor=3)
    return optuna.pruners.NopPruner()


def _sampler(spec: StudySpec, worker_index: int):
    import optuna
    seed = None if spec.seed is None else spec.seed + worker_index
    if spec.sampler == 'random':
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


#: Study user attributes that must match when a study is resumed (what makes results comparable). The space is
#: compared by its distributions (``space_distributions``), not by its file name (kept as ``space`` for reading).
_IDENTITY = ('config', 'metric')


def _check_distributions(study, spec: StudySpec, distributions: Mapping[str, str]) -> None:
    """Refuse to add trials of the space ``distributions`` (name -> Optuna json) to a study of another space.

    The study's stored ``space_distributions`` must be equal; a study made before they were stored is compared
    through its trials' own distributions (every parameter both have). The first run stores them.
    """
    import optuna
    from optuna.distributions import json_to_distribution

    def shown(d):
        return repr(json_to_distribution(d) if isinstance(d, str) else d)

    stored = study.user_attrs.get('space_distributions')
    if stored is None:
        stored = {}
        for trial in study.get_trials(deepcopy=False):
            for name, dist in trial.distributions.items():
                stored.setdefault(name, optuna.distributions.distribution_to_json(dist))
        stored = {k: v for k, v in stored.items() if k in distributions}
        differing = [k for k in stored if stored[k] != distributions[k]]
    else:
        differing = sorted(set(stored) ^ set(distributions)) + [
            k for k in sorted(set(stored) & set(distributions)) if stored[k] != distributions[k]]
    if differing:
        name = differing[0]
        theirs = shown(stored[name]) if name in stored else 'absent'
        ours = shown(distributions[name]) if name in distributions else 'absent'
        raise StudyError(f'study {spec.study_name} in {redact_url(spec.storage)} was searched over another space '
                         f'than {spec.space}: parameter {name!r} is {theirs} there, {ours} here'
                         f'{f" ({len(differing)} parameters differ)" if len(differing) > 1 else ""}; mixing them '
                         f'would mix two searches in one study. Resume it with its own space or choose another '
                         f'--study-name')
    if 'space_distributions' not in study.user_attrs:
        study.set_user_attr('space_distributions', dict(distributions))


def open_study(spec: StudySpec, worker_index: int = 0, distributions: Optional[Mapping[str, str]] = None):
    """Create the study or load it, and refuse one made for another config, space, metric or direction.

    Args:
        spec (StudySpec): the study.
        worker_index (int): seeds this worker's sampler.
        distributions (Mapping[str, str], optional): the space's fingerprint (``space.distributions`` after
            :func:`~mmdet_custom.hpo.space.check_space`); when given, a study of another space is refused.

    Raises:
        StudyError: storage problems (see :func:`_storage`), or an existing study of the same name whose
            config file name, metric, direction or search space (its distributions, whatever the file is called)
            differ (naming both).
    """
    import optuna
    storage = _storage(spec)
    study = optuna.create_study(storage=storage, study_name=spec.study_name, direction=spec.direction,
                                pruner=_pruner(spec), sampler=_sampler(spec, worker_index), load_if_exists=True)
    if study.direction.name.lower() != spec.direction:
        raise StudyError(f'study {spec.study_name} in {redact_url(spec.storage)} {study.direction.name.lower()}s, '
                         f'not {spec.direction}; choose another --study-name')
    identity = dict(config=osp.basename(spec.config), metric=spec.metric)
    attrs = study.user_attrs
    if 'space' not in attrs:
        study.set_user_attr('space', osp.basename(spec.space))
    for key in _IDENTITY:
        if key not in attrs:
            study.set_user_attr(key, identity[key])
        elif attrs[key] != identity[key]:
            raise StudyError(f'study {spec.study_name} in {redact_url(spec.storage)} was made with {key} '
                             f'{attrs[key]!r}, this run has {identity[key]!r}; resume it with the same {key} or '
                             f'choose another --study-name')
    if distributions is not None:
        _check_distributions(study, spec, distributions)
    return study


def count_trials(study) -> Dict[str, int]:
    """Trials by state; ``counted`` is what the budget counts (see the module docstring)."""
    from optuna.trial import TrialState
    c = dict(complete=0, pruned=0, running=0, waiting=0, failed=0, died=0)
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            c['complete'] += 1
        elif t.state == TrialState.PRUNED:
            c['pruned'] += 1
        elif t.state == TrialState.RUNNING:
            c['running'] += 1
        elif t.state == TrialState.WAITING:
            c['waiting'] += 1
        elif t.state == TrialState.FAIL:
            c['failed' if 'error' in t.user_attrs else 'died'] += 1
    c['counted'] = c['complete'] + c['pruned'] + c['running'] + c['failed']
    return c


def _base_config(spec: StudySpec):
    from mmdet_custom.apis.runner import read_config
    from mmdet_custom.datasets.utils import set_data_root
    cfg = read_config(spec.config, spec.cfg_options)
    if spec.data_root is not None:
        set_data_root(cfg, spec.data_root, spec.cfg_options)
    missing = [k for k in ('val_dataloader', 'val_cfg', 'val_evaluator') if not cfg.get(k, None)]
    if missing:
        raise StudyError(f'config {spec.config} has no {", ".join(missing)}: every trial is judged on the '
                         f'validation split, the config must validate')
    if ensure_val_loss_hook(cfg, spec.metric):
        print(f'--metric {spec.metric}: ValLossHook added to custom_hooks', flush=True)
    return cfg


def _finished_trials(study) -> int:
    """Trials that ended (COMPLETE, PRUNED, FAIL): the version of the results (:mod:`mmdet_custom.studies.once`)."""
    from optuna.trial import TrialState
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))


def write_results(study, spec: StudySpec, base_cfg, space, best_config: Optional[str] = None,
                  plots: bool = True) -> Dict[str, Any]:
    """Write the best config (when a trial completed), the plots and ``study_summary.json`` (listing the files),
    each atomically. Returns the write record's fields: ``files`` (name -> path) and ``summary`` (its path)."""
    summary = study_summary(study, spec)
    files = {}
    if summary['best'] is not None:
        files['best_config'] = write_best_config(study, spec, base_cfg, space,
                                                 best_config or osp.join(spec.work_dir, 'best_config.py'))
    if plots:
        files['plots'] = save_plots(study, osp.join(spec.work_dir, 'plots'), spec.metric)
    summary['files'] = files
    path = osp.join(spec.work_dir, 'study_summary.json')
    dump_json_atomic(summary, path, indent=1)
    return dict(files=files, summary=osp.abspath(path),
                best_trial=summary['best']['number'] if summary['best'] is not None else None)


def run_worker(spec: StudySpec, max_trials: Optional[int] = None, worker_index: int = 0, key: Optional[str] = None,
               best_config: Optional[str] = None, plots: bool = True, force_write: bool = False,
               log=print) -> Dict[str, Any]:
    """Run trials of the study until its budget is reached (or ``max_trials`` were run here), registered in the
    study as worker ``key``; then, the last worker of the study to finish writes the results once
    (:func:`write_results`, through :func:`mmdet_custom.studies.once.run_registered`).

    Args:
        spec (StudySpec): the study.
        max_trials (int, optional): trials of this worker at most (None: until the budget is reached).
        worker_index (int): seeds this worker's sampler (seed + index).
        key (str, optional): the worker's registration (made by the pool; default a new one).
        best_config (str, optional): where the best config goes (default ``<work_dir>/best_config.py``).
        plots (bool): draw the plots.
        force_write (bool): write the results even when the study's finished trials were written already.

    Returns:
        dict: the write record of the results (``files``, ``summary``, ``writer``, ``by_me``...).

    Raises:
        UserError: a trial failed with a user error that every trial would repeat (a bad space key, a metric the
            validation does not give, a dataset problem): the worker stops, the results are written as usual, and
            the error is raised naming it.
    """
    spec.check()
    base_cfg = _base_config(spec)
    space = load_space(spec.space)
    study = open_study(spec, worker_index)
    fatal: List[BaseException] = []
    first = [spec.check_image_files]

    def objective(trial):
        try:
            return run_trial(trial, base_cfg, space, spec.work_dir, spec.metric, check_image_files=first[0])
        except UserError as e:
            fatal.append(e)
            raise
        finally:
            first[0] = False

    def run():
        ran = 0
        while (max_trials is None or ran < max_trials) and not fatal:
            fail_stale_trials(study)
            counts = count_trials(study)
            if counts['waiting'] == 0 and counts['counted'] >= spec.n_trials:
                break
            optimize_one(study, objective, catch=(Exception,), gc_after_trial=True)  # one finished elsewhere: dropped
            ran += 1
        if ran:
            log(f'worker {worker_index}: ran {ran} trials')

    outputs = Outputs(RESULT_ATTR, lambda: _finished_trials(study),
                      lambda: write_results(study, spec, base_cfg, space, best_config, plots), force=force_write,
                      what='results')
    trials = spec.n_trials if max_trials is None else max_trials
    # an in-memory database lives in one connection of one process: no heartbeat thread, nobody to wait for
    beat = None if is_in_memory_sqlite(spec.storage) else spec.heartbeat_interval
    record = run_registered(study, key or new_worker_key(), trials, run, outputs, beat, spec.grace_period, log)
    if record.get('by_me'):
        log(f'worker {worker_index}: wrote the results of {record["version"]} finished trials: {record["summary"]}')
    if fatal:
        raise fatal[0]
    return record


def _worker(key: str, share: int, index: int, spec: StudySpec, best_config: Optional[str], plots: bool) -> None:
    """A worker process of :func:`run_study` (run by :func:`mmdet_custom.studies.workers.run_processes`)."""
    run_worker(spec, share, index, key, best_config, plots, log=lambda line: print(line, flush=True))


def run_study(spec: StudySpec, n_workers: int = 1, best_config: Optional[str] = None,
              plots: bool = True) -> Dict[str, Any]:
    """Run the recipe search: ``n_workers`` processes on one study, then the best config, summary and plots.

    Before any trial: the config must validate, the space must fit the config (a dry run,
    :func:`~mmdet_custom.hpo.space.check_space`), the study must be new or of the same config / space / metric /
    direction. Dead workers' trials are failed and queued again (see the module docstring), then what is left of
    the budget is split between the workers (``n_workers == 1`` runs in this process). The last worker of the study
    to finish writes the results (:func:`write_results`) once; with nothing left to run, this command rewrites them.

    Args:
        spec (StudySpec): the study.
        n_workers (int): worker processes on this machine (forked; each trains one trial at a time).
        best_config (str, optional): where the best trial's config goes; ``<work_dir>/best_config.py`` when None.
        plots (bool): write Optuna's plots to ``<work_dir>/plots``.

    Returns:
        dict: the summary (as in ``study_summary.json``): counts, best trial, trials, and the files of the last
        write of the results.

    Raises:
        UserError: see above; a worker that stopped on a user error or did not exit 0 (after the results are
            written); no trial COMPLETE at the end (nothing to write as best config).
    """
    spec.check()
    if n_workers < 1:
        raise StudyError(f'--n-workers must be at least 1, got {n_workers}')
    base_cfg = _base_config(spec)
    space = load_space(spec.space)
    check_space(space, base_cfg)
    os.makedirs(spec.work_dir, exist_ok=True)
    study = open_study(spec, distributions=space.distributions)
    fail_stale_trials(study)  # first: the retries of dead workers' trials are queued before new parameter sets
    for params in spec.enqueue:
        study.enqueue_trial(params, skip_if_exists=True)
    counts = count_trials(study)
    todo = max(spec.n_trials - counts['counted'], counts['waiting'])  # queued trials run within the budget or beyond
    print(f'study {spec.study_name} ({redact_url(spec.storage)}): {counts["counted"]} of {spec.n_trials} trials '
          f'counted, {counts["waiting"]} queued, {counts["died"]} lost with their worker; {todo} to run with '
          f'{n_workers} worker(s)', flush=True)
    errors = []
    trial_shares = shares(todo, n_workers) or [0]
    if len(trial_shares) == 1:
        try:
            run_worker(spec, trial_shares[0], 0, best_config=best_config, plots=plots,
                       force_write=trial_shares[0] == 0, log=lambda line: print(line, flush=True))
        except UserError as e:
            errors.append(str(e))
    else:
        _, errors = run_processes(study, _worker, trial_shares, (spec, best_config, plots), name='hpo-worker')
        errors = [f'{e} (its error is printed above)' for e in errors]
    study = open_study(spec)
    summary = study_summary(study, spec)
    record = study.user_attrs.get(RESULT_ATTR) or {}
    summary['files'] = record.get('files', {}) if record.get('state') == 'written' else {}
    if errors:
        raise StudyError('; '.join(errors))
    if summary['best'] is None:
        raise StudyError(f'no trial of study {spec.study_name} completed ({summary["counts"]}); see the errors in '
                         f'{osp.join(spec.work_dir, "study_summary.json")}')
    return summary


def study_summary(study, spec: StudySpec) -> Dict[str, Any]:
    """The study as json: counts, best trial (None without a COMPLETE trial), every trial's state, value, params,
    intermediate values, work dir, error and the trial it retries."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState
    trials = []
    for t in study.get_trials(deepcopy=False):
        trials.append(dict(
            number=t.number, state=t.state.name, value=json_safe(t.value), params=json_safe(t.params),
            intermediate={str(k): json_safe(v) for k, v in sorted(t.intermediate_values.items())},
            work_dir=t.user_attrs.get('work_dir'), host=t.user_attrs.get('host'), pid=t.user_attrs.get('pid'),
            error=t.user_attrs.get('error'),
            retry_of=RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
            if 'failed_trial' in t.system_attrs else None))
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    best = None
    if complete:
        b = study.best_trial
        best = dict(number=b.number, value=json_safe(b.value), params=json_safe(b.params),
                    work_dir=b.user_attrs.get('work_dir'), cfg_options=b.user_attrs.get('cfg_options'))
    return dict(study_name=spec.study_name, storage=redact_url(spec.storage), metric=spec.metric,
                direction=spec.direction, n_trials=spec.n_trials, config=spec.config, space=spec.space,
                counts=count_trials(study), best=best, trials=trials)


def write_best_config(study, spec: StudySpec, base_cfg, space, out: str) -> str:
    """Write the best COMPLETE trial's config to ``out`` atomically: the base config with the space's values for
    the best parameters (the space is re-run on ``optuna.trial.FixedTrial(best.params)``, so values such as tuples
    come back exactly), without the trial's work dir. A comment header names the study, trial and value.

    Returns:
        str: ``out``.
    """
    import optuna
    best = study.best_trial
    try:
        options = suggest_options(space, optuna.trial.FixedTrial(best.params, number=best.number), base_cfg)
    except Exception:  # a space that cannot be re-run here (e.g. reads a file of another machine)
        options = best.user_attrs.get('cfg_options') or {}
    cfg = trial_config(base_cfg, options, work_dir='')
    for key in ('work_dir', 'launcher'):
        cfg.pop(key, None)
    value = f'{best.value:.6g}' if best.value is not None and math.isfinite(best.value) else str(best.value)
    header = [f'# Best trial of the recipe search {spec.study_name!r} ({redact_url(spec.storage)}):',
              f'# trial {best.number}, {spec.metric} = {value} ({spec.direction}), params {json_safe(best.params)}',
              f'# = {spec.config} with: ' + ', '.join(f'{k}={v!r}' for k, v in options.items())[:2000],
              f'# Trial work dir: {best.user_attrs.get("work_dir")}', '']
    with atomic_path(out) as tmp, open(tmp, 'w') as f:
        f.write('\n'.join(header) + '\n' + cfg.pretty_text)
    return out


def spec_dict(spec: StudySpec) -> Dict[str, Any]:
    """The spec as json (storage password hidden)."""
    d = asdict(spec)
    d['storage'] = redact_url(spec.storage)
    return json_safe(d)


def parse_enqueue(texts: Sequence[str]) -> List[Dict[str, Any]]:
    """``--enqueue`` json objects (parameter name -> value) as dicts.

    Raises:
        StudyError: a text that is not a json object.
    """
    import json
    out = []
    for text in texts or []:
        try:
            params = json.loads(text)
        except json.JSONDecodeError as e:
            raise StudyError(f'--enqueue {text!r} is not json: {e}') from e
        if not isinstance(params, dict):
            raise StudyError(f'--enqueue {text!r} must be a json object of parameter name -> value')
        out.append(params)
    return out
