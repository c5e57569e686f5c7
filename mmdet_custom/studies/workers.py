"""Workers of one anchor-search study, on one machine or many, and the single write of its fragment.

Every worker process registers in the study's user attributes (``worker:<host>:<tag>`` = its host, pid,
state and a heartbeat counter ``beat`` that a thread bumps every ``heartbeat_interval`` seconds) before its first
trial. States: ``running`` (trials to run), ``done`` (its trials ran; it may still write), ``exited``, ``failed``
(stopped on an error) and ``dead`` (set by another worker that saw its heartbeat stop).

**Who writes the fragment.** A worker whose trials have run waits until no other worker is ``running`` -- a
``running`` worker whose ``beat`` has not changed for ``grace_period`` seconds of the waiting worker's own clock
counts as dead (no clock is compared across machines) -- and then claims the write: the study attribute
``fragment`` is swapped from the value it read to ``{state: writing, writer, complete_trials}`` in one
``UPDATE ... WHERE value = <read value>`` (optimistic concurrency: of several workers finishing together exactly
one swap succeeds, in SQLite, PostgreSQL and MySQL alike). The winner writes the fragment from the study's best
trial (atomically: a temporary file beside it, then ``os.replace``) and the plots, then records
``{state: written, path, host, best_trial, complete_trials}``. The others wait for that record and write nothing.
A claimant that dies while writing stops beating; after ``grace_period`` seconds a waiting worker takes the claim
over. A set of COMPLETE trials is written once: a later worker (another machine joining, a resumed study) writes
again only when the study has gained completed trials since. ``--trials 0`` rewrites on request.

Optuna's storage API has no compare-and-swap; the swap is one SQL statement on Optuna's own
``study_user_attributes`` table (``optuna.storages._rdb.models``), through the storage's SQLAlchemy engine.
"""
import json
import os
import socket
import threading
import time
import uuid
import warnings
from typing import Callable, Dict, List, Optional

#: Study user attribute holding the fragment's write record.
FRAGMENT_ATTR = 'fragment'
#: Prefix of the study user attributes that register workers.
WORKER_PREFIX = 'worker:'
RUNNING, DONE, EXITED, FAILED, DEAD = 'running', 'done', 'exited', 'failed', 'dead'
WRITING, WRITTEN = 'writing', 'written'


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
            self._thread = threading.Thread(target=self._beat, name=f'anchor-search-heartbeat-{self.key}',
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
                f'finish writes the fragment): {", ".join(k[len(WORKER_PREFIX):] for k in waiting)}')
            announced = True
        time.sleep(poll)


# ----------------------------------------------------------------------------------------------- compare-and-swap
def _table():
    from optuna.storages._rdb.models import StudyUserAttributeModel
    return StudyUserAttributeModel.__table__


def read_attr_raw(storage, study_id: int, key: str) -> Optional[str]:
    """The stored json text of a study user attribute (None when absent), read from the database, not a cache."""
    import sqlalchemy as sa
    table = _table()
    with storage.engine.connect() as conn:
        row = conn.execute(sa.select(table.c.value_json).where(table.c.study_id == study_id,
                                                                table.c.key == key)).first()
    return None if row is None else row[0]


def compare_and_set_attr(storage, study_id: int, key: str, expected: Optional[str], value) -> bool:
    """Set a study user attribute to ``value`` only if its stored json text is still ``expected`` (None: absent).

    One ``INSERT`` (refused by the table's unique (study_id, key) constraint when another process inserted first) or
    one ``UPDATE ... WHERE value_json = expected``: atomic in every SQL database.

    Returns:
        bool: whether this call set it.
    """
    import sqlalchemy as sa
    table = _table()
    text = json.dumps(value)
    try:
        with storage.engine.begin() as conn:
            if expected is None:
                conn.execute(sa.insert(table).values(study_id=study_id, key=key, value_json=text))
                return True
            result = conn.execute(sa.update(table).where(table.c.study_id == study_id, table.c.key == key,
                                                         table.c.value_json == expected).values(value_json=text))
            return result.rowcount == 1
    except sa.exc.IntegrityError:
        return False


# ----------------------------------------------------------------------------------------------- the one write
def write_fragment_once(storage, study_id: int, me: str, complete_trials: Callable[[], int],
                        write: Callable[[], dict], grace_period: float, poll: float, force: bool = False,
                        log: Callable[[str], None] = print) -> dict:
    """Claim the fragment's write (see the module docstring), write it if this worker wins, return the record.

    Args:
        storage (optuna.storages.RDBStorage): the study's storage.
        study_id (int): the study.
        me (str): this worker's key (registered and beating, so that others can tell whether it died).
        complete_trials (callable): the number of COMPLETE trials now.
        write (callable): writes the fragment and plots; returns the record's fields (``path``, ``best_trial``,
            ``complete_trials``, ...).
        grace_period (float): seconds after which a silent claimant counts as dead.
        poll (float): seconds between two looks at a claim held by another worker.
        force (bool): write even when the current set of complete trials was written already.

    Returns:
        dict: the ``written`` record, with ``by_me`` True when this call wrote; ``{}`` when the study holds no
        complete trial.
    """
    monitor = LivenessMonitor(grace_period)
    while True:
        raw = read_attr_raw(storage, study_id, FRAGMENT_ATTR)
        record = json.loads(raw) if raw is not None else None
        n = complete_trials()
        if n == 0:
            return {}
        if isinstance(record, dict) and record.get('state') == WRITTEN and record.get('complete_trials') == n \
                and not force:
            return dict(record, by_me=False)
        if isinstance(record, dict) and record.get('state') == WRITING:
            writer = workers_of(storage, study_id).get(record.get('writer'), {})
            if writer.get('state') not in (EXITED, FAILED, DEAD) and monitor.alive(record.get('writer'),
                                                                                   writer.get('beat')):
                time.sleep(poll)
                continue
            log(f'{me[len(WORKER_PREFIX):]}: the fragment\'s writer {record.get("writer")} stopped while writing; '
                f'taking over')
        claim = dict(state=WRITING, writer=me, complete_trials=n, token=uuid.uuid4().hex)
        if not compare_and_set_attr(storage, study_id, FRAGMENT_ATTR, raw, claim):
            continue  # another worker changed the record first: look again
        fields = write()
        done = dict(fields, state=WRITTEN, writer=me, host=socket.gethostname(), pid=os.getpid(),
                    time=time.strftime('%Y-%m-%d %H:%M:%S %Z'))
        if not compare_and_set_attr(storage, study_id, FRAGMENT_ATTR, json.dumps(claim), done):
            log(f'{me[len(WORKER_PREFIX):]}: the fragment\'s record was taken over while this worker wrote (its '
                f'heartbeat looked stopped for {grace_period:g} s); both writes were atomic')
        return dict(done, by_me=True)
