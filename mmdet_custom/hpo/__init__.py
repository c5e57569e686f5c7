"""Recipe search (hyper-parameter optimisation) with Optuna: ``tools/hpo.py``.

- :mod:`.space`: the search space file (``space(trial) -> {cfg key: value}``);
- :mod:`.trial`: one trial = the config with the trial's values, trained and validated in its own work dir;
- :mod:`.pruning`: the mmengine hook reporting the validation metric to Optuna and stopping pruned trials;
- :mod:`.study`: studies in an Optuna RDB storage shared by workers, heartbeats, budget, best config, summary;
- :mod:`.plots`: Optuna's history / importance / parallel-coordinate plots as PNG.
"""
from .pruning import MetricNotFoundError, OptunaPruningHook
from .space import SearchSpaceError, check_space, load_space, suggest_options
from .study import StudyError, StudySpec, count_trials, open_study, run_study, run_worker, write_best_config
from .trial import run_trial

__all__ = [
    'MetricNotFoundError', 'OptunaPruningHook', 'SearchSpaceError', 'check_space', 'load_space', 'suggest_options',
    'StudyError', 'StudySpec', 'count_trials', 'open_study', 'run_study', 'run_worker', 'write_best_config',
    'run_trial'
]
