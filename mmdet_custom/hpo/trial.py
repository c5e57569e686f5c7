"""One trial of the recipe search: the base config with the trial's suggestions, trained and validated in its own
work dir."""
import os
import os.path as osp
import socket
import traceback
from typing import Any, Callable, Optional

from mmengine.config import Config, ConfigDict

from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import atomic_path

from .pruning import MetricNotFoundError, register_trial, unregister_trial
from .space import json_safe, suggest_options

__all__ = ['TrialDirError', 'trial_dir', 'trial_config', 'run_trial', 'ensure_val_loss_hook']


class TrialDirError(UserError, FileExistsError):
    """A trial's work dir already holds files (of another study or run)."""


def trial_dir(work_dir: str, number: int) -> str:
    """``<work_dir>/trial_<number, 4 digits>``."""
    return osp.join(work_dir, f'trial_{number:04d}')


def ensure_val_loss_hook(cfg: Config, metric: str) -> bool:
    """Add :class:`~mmdet_custom.engine.hooks.ValLossHook` to ``cfg.custom_hooks`` when ``metric`` is one of its
    ``val/loss*`` metrics and the config has none. Returns True when it was added."""
    if not metric.startswith('val/loss'):
        return False
    hooks = list(cfg.get('custom_hooks', None) or [])
    if any(str(h.get('type', '')).endswith('ValLossHook') for h in hooks):
        return False
    cfg.custom_hooks = hooks + [ConfigDict(type='ValLossHook')]
    return True


def trial_config(base_cfg: Config, options: dict, work_dir: str) -> Config:
    """``base_cfg`` with the trial's ``options`` merged (as ``--cfg-options``) and its work dir set."""
    cfg = base_cfg.copy()
    if options:
        cfg.merge_from_dict(options)
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    return cfg


def _dump_config(cfg: Config, path: str) -> None:
    with atomic_path(path) as tmp:
        cfg.dump(tmp)


def run_trial(trial: Any,
              base_cfg: Config,
              space: Callable,
              work_dir: str,
              metric: str,
              check_image_files: bool = True,
              train_fn: Optional[Callable] = None) -> float:
    """Train ``base_cfg`` with the suggestions of ``space`` for ``trial`` and return the last validation's
    ``metric`` (the Optuna objective).

    The trial's work dir ``<work_dir>/trial_NNNN`` keeps ``config.py`` (the resolved config, runnable with
    ``tools/train.py``; the pruning hook is not in it), ``metrics.json`` (every validation's metrics), mmengine's
    logs and checkpoints, and ``error.txt`` (the traceback) when the trial fails. User attributes of the trial:
    ``work_dir``, ``host`` and ``pid`` (the worker), ``cfg_options`` (the suggested config values),
    ``final_metrics`` and, for a failed trial, ``error`` (``Type: message``).

    Args:
        trial (optuna.Trial): the trial (its study's storage gets the reports).
        base_cfg (Config): the config searched over (with ``--cfg-options`` applied); not modified.
        space (callable): the space function (see :mod:`mmdet_custom.hpo.space`).
        work_dir (str): the study's work dir.
        metric (str): the validation metric reported and returned.
        check_image_files (bool): check every train/val image before training (once per worker is enough).
        train_fn (callable, optional): ``train(cfg, work_dir=..., check_image_files=...)``; defaults to
            :func:`mmdet_custom.apis.train`.

    Returns:
        float: ``metric`` at the last validation.

    Raises:
        optuna.TrialPruned: the pruner stopped the trial.
        MetricNotFoundError: no validation ran, or it gave no ``metric``.
        Exception: whatever failed (recorded in ``error`` and ``error.txt`` first).
    """
    import optuna
    folder = trial_dir(work_dir, trial.number)
    trial.set_user_attr('work_dir', osp.abspath(folder))
    trial.set_user_attr('host', socket.gethostname())
    trial.set_user_attr('pid', os.getpid())
    key = register_trial(trial)
    try:
        options = suggest_options(space, trial, base_cfg)
        trial.set_user_attr('cfg_options', json_safe(options))
        if osp.isdir(folder) and os.listdir(folder):
            raise TrialDirError(f'trial work dir {folder} already holds files (another study or run with the same '
                                f'--work-dir?); give this study its own --work-dir')
        os.makedirs(folder, exist_ok=True)
        cfg = trial_config(base_cfg, options, folder)
        _dump_config(cfg, osp.join(folder, 'config.py'))
        cfg.custom_hooks = list(cfg.get('custom_hooks', None) or []) + [ConfigDict(
            type='OptunaPruningHook', trial_key=key, metric=metric, metrics_file=osp.join(folder, 'metrics.json'))]
        if train_fn is None:
            from mmdet_custom.apis import train as train_fn
        train_fn(cfg, work_dir=folder, check_image_files=check_image_files)
        history = unregister_trial(key)['history']
        if not history:
            raise MetricNotFoundError(f'--metric {metric}: the trial trained without validating; the config needs '
                                      f'val_dataloader / val_cfg / val_evaluator and a train_cfg.val_interval that '
                                      f'the run reaches')
        trial.set_user_attr('final_metrics', {k: v for k, v in history[-1].items() if isinstance(v, (int, float))})
        return float(history[-1][metric])
    except optuna.TrialPruned:
        raise
    except Exception as e:  # Ctrl-C is not the trial's failure: it is recorded failed without an error
        trial.set_user_attr('error', f'{type(e).__name__}: {e}'[:2000])
        if osp.isdir(folder):
            with atomic_path(osp.join(folder, 'error.txt')) as tmp, open(tmp, 'w') as f:
                f.write(traceback.format_exc())
        raise
    finally:
        unregister_trial(key)
