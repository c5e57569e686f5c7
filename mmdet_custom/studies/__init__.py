"""One engine for the project's Optuna studies (the anchor search, :mod:`mmdet_custom.anchor_search`, and the recipe
search, :mod:`mmdet_custom.hpo`): each search keeps only its space, objective and outputs.

- :mod:`.storage`: relational storages (SQLite, PostgreSQL, MySQL) opened the same way: SQLite lock wait, trial
  heartbeats, driver hints, stale trials failed, a trial finished by another worker dropped;
- :mod:`.workers`: the worker registry in the study (heartbeats, liveness by observed beats) and a pool of worker
  processes on this machine (shares, start method, spawn and join, exit codes);
- :mod:`.once`: the last worker to finish writes the study's outputs exactly once (compare-and-swap in the study);
- :mod:`.plots`: Optuna's history / importance / parallel-coordinate plots as PNG, one name scheme.

Nothing here imports Optuna, SQLAlchemy or matplotlib at import time.
"""
