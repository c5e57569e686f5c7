"""The mmengine hook through which a training run reports its validation metric to its Optuna trial, and stops
when Optuna's pruner says so."""
import difflib
import math
from typing import Any, Dict, List, Optional

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.runner import IterBasedTrainLoop

from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import dump_json_atomic

from .space import json_safe

__all__ = ['MetricNotFoundError', 'OptunaPruningHook', 'register_trial', 'unregister_trial', 'active_trial']

#: The trials being trained in this process, by key (the hook config carries the key, not the trial object:
#: mmengine deep-copies configs, and a trial holds a database connection).
_ACTIVE: Dict[str, Dict[str, Any]] = {}


class MetricNotFoundError(UserError, KeyError):
    """The validation did not produce the metric the study optimises."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


def register_trial(trial: Any) -> str:
    """Make ``trial`` reachable by :class:`OptunaPruningHook` in this process; returns its key."""
    key = f'{trial.study.study_name}#{trial._trial_id}'
    _ACTIVE[key] = dict(trial=trial, history=[])
    return key


def unregister_trial(key: str) -> Optional[Dict[str, Any]]:
    """Forget the trial of ``key``; returns its record (``trial``, ``history`` of reported metrics)."""
    return _ACTIVE.pop(key, None)


def active_trial(key: str) -> Dict[str, Any]:
    """The record of a registered trial (``trial``, ``history``)."""
    if key not in _ACTIVE:
        raise RuntimeError(f'OptunaPruningHook: no Optuna trial {key!r} is running in this process; the hook is '
                           f'added by mmdet_custom.hpo to the trials it runs, it does not go in a config file')
    return _ACTIVE[key]


@HOOKS.register_module()
class OptunaPruningHook(Hook):
    """Report ``metric`` to the Optuna trial after every validation and raise ``optuna.TrialPruned`` when the
    study's pruner (``MedianPruner``, ``HyperbandPruner``, ...) decides to stop the trial.

    The step reported is the training progress at the validation: the epoch for epoch-based loops, the iteration
    for iteration-based ones, so that the pruner compares trials at the same amount of training. Every validation's
    scalar metrics are also appended to ``metrics_file`` (a json list, rewritten atomically) so that a pruned or
    failed trial keeps them.

    It runs last among the ``after_val_epoch`` hooks (``LOWEST``): the validation is logged and ``save_best``
    checkpoints are written before a trial is stopped. ``optuna.TrialPruned`` leaves mmengine's loop and is
    handled by ``Study.optimize`` (the trial is recorded as pruned).

    Args:
        trial_key (str): the key of a trial registered with :func:`register_trial` in this process.
        metric (str): the validation metric reported, e.g. ``'coco/segm_mAP'`` or ``'val/loss'``.
        metrics_file (str, optional): json file of the metrics history.

    Raises:
        MetricNotFoundError: at a validation whose metrics do not hold ``metric`` (the available keys are named).
        optuna.TrialPruned: when the pruner stops the trial.
    """
    priority = 'LOWEST'

    def __init__(self, trial_key: str, metric: str, metrics_file: Optional[str] = None) -> None:
        self.trial_key = trial_key
        self.metric = metric
        self.metrics_file = metrics_file

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        import optuna
        record = active_trial(self.trial_key)
        metrics = metrics or {}
        if self.metric not in metrics:
            keys = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and 'precision' not in k)
            close = difflib.get_close_matches(self.metric, keys, n=3, cutoff=0.6)
            hint = f'did you mean {" or ".join(close)}? ' if close else ''
            raise MetricNotFoundError(f'--metric {self.metric}: the validation gave no such metric; {hint}it gave '
                                      f'{", ".join(keys[:12]) or "nothing"}{" ..." if len(keys) > 12 else ""}')
        by_epoch = not isinstance(runner.train_loop, IterBasedTrainLoop)  # (an iteration loop has max_epochs too)
        step = int(runner.epoch if by_epoch else runner.iter)
        value = float(metrics[self.metric])
        history: List[Dict[str, Any]] = record['history']
        scalars = {k: json_safe(v) for k, v in metrics.items() if isinstance(v, (int, float)) or hasattr(v, 'item')}
        history.append(dict(step=step, unit='epoch' if by_epoch else 'iter', **scalars))
        if self.metrics_file:
            dump_json_atomic(history, self.metrics_file, indent=1)
        trial = record['trial']
        trial.report(value, step)
        if trial.should_prune():
            shown = f'{value:.4f}' if math.isfinite(value) else str(value)
            raise optuna.TrialPruned(f'pruned at {"epoch" if by_epoch else "iteration"} {step}: '
                                     f'{self.metric} = {shown}')
