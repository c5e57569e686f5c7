"""Search spaces of the recipe search: a small Python file whose ``space(trial)`` maps Optuna suggestions to config
keys.

A space file defines one function::

    def space(trial):                      # or space(trial, cfg): cfg is a read-only copy of the base config
        return {
            'optim_wrapper.optimizer.lr': trial.suggest_float('lr', 0.005, 0.04, log=True),
            'model.train_cfg.rpn.assigner.pos_iou_thr': trial.suggest_float('rpn_pos_iou', 0.6, 0.8),
        }

The keys are ``--cfg-options`` keys (dotted, list items by index; a leading ``+`` adds a key the config does not
have) and the values are merged as ``--cfg-options`` values are (``Config.merge_from_dict``: a dict value is merged
into the existing dict, ``_delete_=True`` in it replaces the dict instead; a list replaces the list). Every
suggestion must go through ``trial.suggest_*`` so that Optuna's samplers, pruners and plots see it; the function may
compute a value from several suggestions (e.g. a pipeline with or without augmentation).
"""
import copy
import inspect
import math
import os.path as osp
import runpy
from typing import Any, Callable, Dict, Mapping

from mmdet_custom.utils.errors import UserError

__all__ = ['SearchSpaceError', 'load_space', 'suggest_options', 'check_space', 'json_safe']


class SearchSpaceError(UserError, ValueError):
    """A space file without ``space(trial)``, or whose suggestions do not fit the config."""


def load_space(path: str) -> Callable:
    """Read the space file ``path`` and return its ``space`` function.

    Raises:
        FileNotFoundError: no such file.
        SearchSpaceError: the file does not run (its error is named) or defines no callable ``space``
            taking one (trial) or two (trial, cfg) arguments.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'--space: search space file not found: {path}')
    try:
        namespace = runpy.run_path(path)
    except Exception as e:  # the user's file: any error in it is theirs
        raise SearchSpaceError(f'search space {path} does not run: {type(e).__name__}: {e}') from e
    fn = namespace.get('space')
    if not callable(fn):
        raise SearchSpaceError(f'search space {path} defines no function space(trial) returning a dict of config '
                               f'keys -> values')
    n_args = len([p for p in inspect.signature(fn).parameters.values()
                  if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
    if n_args not in (1, 2):
        raise SearchSpaceError(f'search space {path}: space() must take (trial) or (trial, cfg), it takes {n_args} '
                               f'arguments')
    fn.n_args = n_args
    fn.source = path
    return fn


def suggest_options(space: Callable, trial: Any, cfg) -> Dict[str, Any]:
    """Call ``space`` on ``trial`` (and a copy of ``cfg``) and check the options against ``cfg``.

    Returns:
        dict: the options with ``+`` prefixes removed, ready for ``cfg.merge_from_dict``.

    Raises:
        SearchSpaceError: ``space`` returned something other than a dict with str keys, or a key the config does not
            have (see :func:`mmdet_custom.apis.runner.check_cfg_options`), naming the space file.
    """
    from mmdet_custom.apis.runner import ConfigKeyError, check_cfg_options
    source = getattr(space, 'source', 'space')
    options = space(trial, cfg.copy()) if getattr(space, 'n_args', 1) == 2 else space(trial)
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise SearchSpaceError(f'search space {source}: space() must return a dict of config keys (str) -> values, '
                               f'got {type(options).__name__}')
    try:
        return check_cfg_options(cfg, copy.deepcopy(dict(options)), getattr(cfg, 'filename', '') or '')
    except ConfigKeyError as e:
        raise SearchSpaceError(f'search space {source}: {e}') from e


#: Dry-run trials of :func:`check_space` (seeded): enough to visit the branches of a conditional space.
DRY_RUNS = 8


def check_space(space: Callable, cfg) -> Dict[str, Any]:
    """Dry-run ``space`` on :data:`DRY_RUNS` seeded trials of a throw-away in-memory study, before any real trial
    is created, so that a wrong key fails at once with one message instead of failing every trial.

    The distributions the dry runs suggested are left on the function as ``space.distributions`` (parameter name
    -> Optuna's json of the distribution, sorted by name): the space's fingerprint, which a resumed study compares
    (:func:`mmdet_custom.hpo.study.open_study`), whatever the file is called.

    Returns:
        dict: the options of the first dry run.

    Raises:
        SearchSpaceError: see :func:`suggest_options`; or ``space`` raised (its error is named).
    """
    import optuna
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no 'A new study created in memory' line
    try:
        study = optuna.create_study(storage=optuna.storages.InMemoryStorage(),
                                    sampler=optuna.samplers.RandomSampler(seed=0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    first, distributions = None, {}
    for _ in range(DRY_RUNS):
        trial = study.ask()
        try:
            options = suggest_options(space, trial, cfg)
        except SearchSpaceError:
            raise
        except Exception as e:
            raise SearchSpaceError(f'search space {getattr(space, "source", "space")}: space() raised '
                                   f'{type(e).__name__}: {e}') from e
        first = options if first is None else first
        distributions.update({name: optuna.distributions.distribution_to_json(d)
                              for name, d in trial.distributions.items()})
        study.tell(trial, 0.0)
    space.distributions = dict(sorted(distributions.items()))
    return first


def json_safe(value: Any) -> Any:
    """``value`` as json can hold it (tuples as lists, numpy scalars as numbers, NaN / inf as None, other objects
    as their ``repr``), for Optuna user attributes and the summary file."""
    if hasattr(value, 'item') and getattr(value, 'ndim', 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return repr(value)
