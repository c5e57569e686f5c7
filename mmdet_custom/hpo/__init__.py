"""Recipe search (hyper-parameter optimisation) with Optuna: ``tools/hpo.py``.

- :mod:`.space`: the search space file (``space(trial) -> {cfg key: value}``);
- :mod:`.trial`: one trial = the config with the trial's values, trained and validated in its own work dir;
- :mod:`.pruning`: the mmengine hook reporting the validation metric to Optuna and stopping pruned trials;
- :mod:`.study`: the study (identity checks, budget), its workers and its results (best config, summary, plots),
  on the engine every study of the project shares (:mod:`mmdet_custom.studies`: storage, worker registry and
  heartbeats, the one write of the results, plots).
"""
from .pruning import MetricNotFoundError, OptunaPruningHook
from .space import SearchSpaceError, check_space, load_space, suggest_options
from .study import (
    StudyError,
    StudySpec,
    count_trials,
    open_study,
    run_study,
    run_worker,
    write_best_config,
    write_results,
)
from .trial import run_trial

__all__ = [
    'MetricNotFoundError', 'OptunaPruningHook', 'SearchSpaceError', 'check_space', 'load_space', 'suggest_options',
    'StudyError', 'StudySpec', 'count_trials', 'open_study', 'run_study', 'run_worker', 'write_best_config',
    'write_results', 'run_trial'
]
