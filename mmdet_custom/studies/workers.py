"""Workers of one Optuna study, on one machine or many: the registry, heartbeats, liveness, and a pool of worker
processes on this machine.

Every worker process registers in the study's user attributes (``worker:<host>:<tag>`` = its host, pid,
state and a heartbeat counter ``beat`` that a thread bumps every ``heartbeat_interval`` seconds) before its first
trial. States: ``running`` (trials to run), ``done`` (its trials ran; it may still write), ``exited``, ``failed``
(stopped on an error) and ``dead`` (set by another worker that saw its heartbeat stop). A worker counts as dead when
its ``beat`` has not changed for ``grace_period`` seconds of the observing worker's own clock (no clock is compared
across machines). The registry tells the last worker to finish, who writes the study's outputs once
(:mod:`.once`).

The pool (:func:`run_processes`) splits a number of trials between K processes (:func:`shares`), registers them all
before any starts (so none can think itself the last), forks them (``spawn`` where there is no ``fork``), joins them
and reports those that did not exit 0. A worker process ends a user error with one ``error:`` line and exit code 2
(:func:`worker_main`).
"""
import multiprocessing
import os
import socket
import sys
import threading
import time
import uuid
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from mmdet_custom.utils.errors import UserError

from .storage import close_storage, rdb_backend

#: Prefix of the study user attributes that register workers.
WORKER_PREFIX = 'worker:'
RUNNING, DONE, EXITED, FAILED, DEAD = 'running', 'done', 'exited', 'failed', 'dead'


def new_worker_key() -> str:
    """A unique worker key: ``worker:<host>:<8 hex digits>``."""
    return f'{WORKER_PREFIX}{socket.gethostname()}:{uuid.uuid4().hex[:8]}'


def workers_of(storage, study_id: int) -> Dict[str, dict]:
    """The registered workers of a study: ``{key: record}``."""
    return {k: v for k, v in storage.get_study_user_attrs(study_id).items()
            if k.startswith(WORKER_PREFIX) and isinstance(v, dict)}


class Registration:
    """One worker's entry in the study, with a heartbeat thread that bumps its ``beat``.

    Args:
        storage (optuna.storages.RDBStorage): the study's storage (not Optuna's cached wrapper).
        study_id (int): the study.
        key (str): the worker key (:func:`new_worker_key`); a key registered by the parent process is adopted.
        heartbeat_interval (float, optional): seconds between beats; None: no thread (a single in-memory study).
        **info: stored with the record (e.g. ``trials`` asked of this worker).
    """

    def __init__(self, storage, study_id: int, key: str, heartbeat_interval: Optional[float], **info):
        self.storage, self.study_id, self.key = storage, study_id, key
        self.interval = heartbeat_interval
        self.record = dict(host=socket.gethostname(), pid=os.getpid(), state=RUNNING, beat=0, **info)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def write(self, **fields) -> None:
        """Update fields of the record (and bump its beat) in the study."""
        with self._lock:
            self.record.update(fields)
            self.record['beat'] += 1
            self.storage.set_study_user_attr(self.study_id, self.key, dict(self.record))

    def start(self) -> 'Registration':
        """Write the record (state ``running`` unless given) and start beating."""
        self.write(pid=os.getpid())
        if self.interval:
            self._thread = threading.Thread(target=self._beat, name=f'study-heartbeat-{self.key}',
                                            daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.write()
            except Exception as e:  # a database hiccup: the next beat may pass; a long outage reads as death
                warnings.warn(f'{self.key}: heartbeat not recorded: {e}')

    def stop(self, state: str = EXITED) -> None:
        """Stop beating and record the final state."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.write(state=state)


class LivenessMonitor:
    """Judges other workers alive by whether their ``beat`` changed within ``grace_period`` seconds of this
    process's monotonic clock (so clocks of different machines are never compared).

    A worker seen for the first time counts as alive; it is dead once its beat stayed the same for more than
    ``grace_period`` seconds of observation.
    """

    def __init__(self, grace_period: float):
        self.grace_period = float(grace_period)
        self._seen: Dict[str, tuple] = {}

    def alive(self, key: str, beat) -> bool:
        now = time.monotonic()
        last = self._seen.get(key)
        if last is None or last[0] != beat:
            self._seen[key] = (beat, now)
            return True
        return now - last[1] <= self.grace_period


def wait_for_running_workers(storage, study_id: int, me: str, grace_period: float, poll: float,
                             log: Callable[[str], None] = print) -> List[str]:
    """Block until no other registered worker is ``running`` and alive (see :class:`LivenessMonitor`).

    A ``running`` worker whose heartbeat stopped is marked ``dead`` in the study (so that later workers need not
    watch it again), with a log line.

    Returns:
        list[str]: the keys of the workers found dead.
    """
    monitor, dead, announced = LivenessMonitor(grace_period), [], False
    while True:
        waiting = []
        for key, rec in workers_of(storage, study_id).items():
            if key == me or rec.get('state') != RUNNING:
                continue
            if monitor.alive(key, rec.get('beat')):
                waiting.append(key)
            else:
                storage.set_study_user_attr(study_id, key, dict(rec, state=DEAD))
                dead.append(key)
                log(f'{key[len(WORKER_PREFIX):]}: no heartbeat for {grace_period:g} s, counted as dead')
        if not waiting:
            return dead
        if not announced:
            log(f'{me[len(WORKER_PREFIX):]}: waiting for {len(waiting)} running worker(s) to finish (the last to '
                f'finish writes the outputs): {", ".join(k[len(WORKER_PREFIX):] for k in waiting)}')
            announced = True
        time.sleep(poll)




# ----------------------------------------------------------------------------------------------- the pool
def shares(total: int, n_workers: int) -> List[int]:
    """``total`` trials split between ``n_workers`` as evenly as possible, workers without a trial left out.

    >>> shares(9, 2), shares(1, 3), shares(0, 2)
    ([5, 4], [1], [])
    """
    return [s for s in (total // n_workers + (1 if i < total % n_workers else 0) for i in range(n_workers)) if s]


def start_method() -> str:
    """``fork`` where the platform has it: the workers start at once with this process's imports (torch, mmdet) and
    data (the anchor search's boxes), where ``spawn`` re-imports them in each worker (tens of seconds). Safe here:
    the parent has started no thread and closed its database connections before forking, and every worker opens its
    own storage."""
    return 'fork' if 'fork' in multiprocessing.get_all_start_methods() else 'spawn'


def worker_main(target: Callable, key: str, *args) -> None:
    """Entry point of a worker process: ``target(key, *args)``; a user error is one ``error:`` line, exit code 2
    (the traceback of anything else is Python's, exit code 1)."""
    try:
        target(key, *args)
    except UserError as e:
        print(f'error: {key[len(WORKER_PREFIX):]}: {e}', file=sys.stderr, flush=True)
        sys.exit(2)


def run_processes(study, target: Callable, trial_shares: Sequence[int], args: tuple = (),
                  name: str = 'study-worker') -> Tuple[List[str], List[str]]:
    """Run ``target(key, share, index, *args)`` in one process per share, registered in ``study`` first; wait for all.

    Every worker is registered (``running``, or ``done`` for a share of 0) before any starts, so that none can
    think itself the last of the study; the parent's database connections are closed before the fork (``study``
    must not be used afterwards: open it again).

    Args:
        study (optuna.Study): the study, in an RDB storage that processes share (not in-memory SQLite).
        target (callable): a picklable function ``(key, share, index, *args)``: the worker (it adopts its
            registration; ``index`` numbers the workers of this pool from 0, e.g. to seed their samplers).
        trial_shares (Sequence[int]): trials of each worker (see :func:`shares`).
        args (tuple): more picklable arguments of ``target``.
        name (str): process name prefix.

    Returns:
        tuple[list[str], list[str]]: the workers' keys, and one line per worker that did not exit 0 (its own error
        is printed by the worker).
    """
    rdb = rdb_backend(study)
    study_id = rdb.get_study_id_from_name(study.study_name)
    keys = [new_worker_key() for _ in trial_shares]
    for key, share in zip(keys, trial_shares):
        Registration(rdb, study_id, key, None, trials=share).write(state=RUNNING if share else DONE)
    close_storage(study)
    ctx = multiprocessing.get_context(start_method())
    procs = [ctx.Process(target=worker_main, args=(target, key, share, i, *args), name=f'{name}-{i}')
             for i, (key, share) in enumerate(zip(keys, trial_shares))]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    errors = [f'worker {key[len(WORKER_PREFIX):]} (pid {p.pid}) exited with code {p.exitcode}'
              for key, p in zip(keys, procs) if p.exitcode != 0]
    return keys, errors
