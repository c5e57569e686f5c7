"""Optuna relational storages (SQLite, PostgreSQL, MySQL) opened the same way by every study of the project.

Studies shared by workers on one or several machines live in an Optuna ``RDBStorage``: ``sqlite:///study.db`` on one
machine, ``postgresql://user:password@host:5432/db`` or ``mysql://user:password@host/db`` across machines. A running
trial records a heartbeat every ``heartbeat_interval`` seconds; a trial whose heartbeat is older than
``grace_period`` seconds (its worker was killed) is marked FAIL by ``optuna.storages.fail_stale_trials``.
optuna and sqlalchemy are imported inside the functions: the search packages import this module to name its errors,
and ``import mmdet_custom.studies`` must not load Optuna.
"""
import os
import os.path as osp
import warnings
from typing import Optional

from mmdet_custom.utils.errors import UserError

__all__ = ['StorageError', 'redact_url', 'is_in_memory_sqlite', 'open_rdb_storage', 'optimize_one', 'fail_stale_trials',
           'rdb_backend', 'close_storage']


class StorageError(UserError, ValueError):
    """A storage URL that cannot be opened: malformed, its driver missing, the server unreachable (the URL is named,
    its password hidden)."""


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages, summaries and file headers)."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split('@')[-1] if '@' in url else url


def is_in_memory_sqlite(url: str) -> bool:
    """Whether ``url`` is an in-memory SQLite database (one process only: it cannot be shared)."""
    return url in ('sqlite://', 'sqlite:///', 'sqlite:///:memory:')


def open_rdb_storage(url: str, heartbeat_interval: Optional[int] = None, grace_period: Optional[int] = None,
                     heartbeat_stale_trial_callback=None, flag: str = '--storage'):
    """An ``optuna.storages.RDBStorage`` for ``url``, ready for several worker processes.

    A SQLite file's missing folder is created, and a process waits up to 60 s for another's write lock instead of
    failing. An in-memory SQLite database gets no heartbeat (the heartbeat thread would open another database).

    Args:
        url (str): SQLAlchemy database URL.
        heartbeat_interval (int, optional): seconds between heartbeats of a running trial; None: no heartbeat.
        grace_period (int, optional): seconds without a heartbeat after which a running trial is stale (Optuna's
            default: 2 intervals).
        heartbeat_stale_trial_callback (callable, optional): e.g. ``RetryHeartbeatStaleTrialCallback``.
        flag (str): the command-line flag that gave ``url``, for messages.

    Returns:
        optuna.storages.RDBStorage

    Raises:
        StorageError: the URL is not a database URL, its driver is not installed (the pip package is named), or the
            database cannot be opened or created.
    """
    import optuna

    if '://' not in url:
        raise StorageError(f'{flag} {url!r} is not a database URL; e.g. sqlite:///{url} on one machine, '
                           f'postgresql://user:password@host:5432/db for workers on several')
    engine_kwargs = {}
    if url.startswith('sqlite'):
        engine_kwargs = dict(connect_args=dict(timeout=60))
        path = url[len('sqlite:///'):] if url.startswith('sqlite:///') else ''
        if path and path != ':memory:':
            folder = osp.dirname(osp.abspath(path))
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as e:
                raise StorageError(f'{flag} {url}: cannot create the folder {folder}: {e.strerror}') from e
    if is_in_memory_sqlite(url):
        heartbeat_interval = grace_period = None
    try:
        with warnings.catch_warnings():  # heartbeats are 'experimental' in Optuna since 2.9, and work
            warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                                              grace_period=grace_period,
                                              heartbeat_stale_trial_callback=heartbeat_stale_trial_callback)
    except ImportError as e:  # optuna's message for a missing driver names no driver
        cause = e.__cause__ or e
        raise StorageError(f'{flag} {redact_url(url)}: the database driver is not installed ({cause}); for '
                           f'postgresql:// URLs pip install "psycopg[binary]" (or write postgresql+psycopg2:// with '
                           f'psycopg2), for mysql:// pip install mysqlclient (or mysql+pymysql:// with PyMySQL)') from e
    except Exception as e:  # sqlalchemy.exc.OperationalError / ArgumentError: wrong host, port, password, URL
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StorageError(f'{flag} {redact_url(url)} cannot be opened: {first}') from e


def optimize_one(study, objective, **optimize_kwargs) -> bool:
    """Run one trial of ``study`` (``study.optimize(objective, n_trials=1, **optimize_kwargs)``) for a worker that
    shares it; False when another worker finished that trial first.

    Workers sharing a study can end up on the same trial: on SQLite (no row locks) two of them can pop the same
    queued trial, and a trial whose heartbeat came later than the grace period is failed (and retried) by another
    worker. The one that reports second gets Optuna's ``UpdateFinishedTrialError``; its copy is dropped with a
    warning, the other's result stands, and the worker goes on.
    """
    import optuna
    try:
        study.optimize(objective, n_trials=1, **optimize_kwargs)
    except optuna.exceptions.UpdateFinishedTrialError as e:
        warnings.warn(f'{e} Another worker reported first on this trial; this copy is dropped.')
        return False
    return True


def fail_stale_trials(study) -> None:
    """``optuna.storages.fail_stale_trials(study)``: RUNNING trials whose heartbeat is older than the storage's grace
    period (their worker was killed) become FAIL. Optuna still calls heartbeats experimental; its warning is
    silenced here."""
    import optuna
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def rdb_backend(study):
    """The ``optuna.storages.RDBStorage`` under a study's storage (Optuna wraps it in a cache), or None for other
    storages (e.g. ``InMemoryStorage``: one process, nobody to agree with)."""
    import optuna
    storage = getattr(study, '_storage', None)
    storage = getattr(storage, '_backend', storage)
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


def close_storage(study) -> None:
    """Close the database connections of ``study``'s storage: a forked worker must not share its parent's."""
    rdb = rdb_backend(study)
    if rdb is not None:
        rdb.engine.dispose()
