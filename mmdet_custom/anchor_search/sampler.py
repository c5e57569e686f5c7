"""A TPE sampler whose random draws for trial ``n`` are seeded with ``(seed, n)``: parallel workers never repeat.

Optuna's samplers hold one random stream per process, seeded once. Two workers started with the same ``--seed`` on
one study therefore draw the same values: the first ``n_startup_trials`` trials are independent random draws, the
same in both workers, and later TPE draws coincide whenever the workers see the same history. Seeding each trial
with its number instead -- the study-wide number the storage hands out atomically, unique across workers -- gives
every trial its own stream: a single worker's run is still reproducible from ``seed``, and parallel workers of one
study draw distinct trials without any flag.
"""
from typing import Any, Dict, Optional

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number`` of a study searched with ``seed`` (numpy ``SeedSequence`` of both, 32 bits)."""
    return int(np.random.SeedSequence([int(seed) % 2**32, int(number)]).generate_state(1)[0])


class TrialSeededTPESampler(BaseSampler):
    """Optuna's :class:`~optuna.samplers.TPESampler` (Bergstra et al., Algorithms for Hyper-Parameter
    Optimization, NeurIPS 2011), rebuilt for each trial with the seed :func:`trial_seed(seed, trial.number)
    <trial_seed>`.

    TPE keeps no state between trials besides its random stream (it reads the history from the study), so a fresh
    sampler per trial samples as one long-lived sampler does, except that trial ``n``'s draws depend on ``(seed,
    n)`` only.

    Args:
        seed (int): base seed. Defaults to 0.
        **tpe_kwargs: passed to ``TPESampler`` (e.g. ``n_startup_trials``).
    """

    def __init__(self, seed: int = 0, **tpe_kwargs: Any) -> None:
        self.seed = int(seed)
        self._tpe_kwargs = tpe_kwargs
        self._sampler = TPESampler(seed=trial_seed(self.seed, 0), **tpe_kwargs)

    def before_trial(self, study: 'optuna.Study', trial: FrozenTrial) -> None:
        self._sampler = TPESampler(seed=trial_seed(self.seed, trial.number), **self._tpe_kwargs)
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: 'optuna.Study', trial: FrozenTrial) -> Dict[str, BaseDistribution]:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: 'optuna.Study', trial: FrozenTrial,
                        search_space: Dict[str, BaseDistribution]) -> Dict[str, Any]:
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study: 'optuna.Study', trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: 'optuna.Study', trial: FrozenTrial, state: TrialState,
                    values: Optional[list]) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()
