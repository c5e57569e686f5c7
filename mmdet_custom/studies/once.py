"""Exactly one write of a study's outputs (the anchor search's fragment, the recipe search's best config and summary),
whatever the number of workers, processes or machines sharing the study.

A worker whose trials have run waits until no other registered worker is ``running`` (:mod:`.workers`), then claims
the write: a study user attribute (``fragment``, ``result``) is swapped from the value it read to
``{state: writing, writer, version}`` in one ``UPDATE ... WHERE value = <read value>`` (optimistic concurrency: of
several workers finishing together exactly one swap succeeds, in SQLite, PostgreSQL and MySQL alike). The winner
writes (its writers are atomic: a temporary file beside the output, then ``os.replace``) and records
``{state: written, version, host, ...}``; the others wait for that record and write nothing. A claimant that dies
while writing stops beating; after ``grace_period`` seconds a waiting worker takes the claim over. A ``version`` of
the study (e.g. its number of COMPLETE trials) is written once: a later worker (another machine joining, a resumed
study) writes again only when the version changed, or when forced.

Optuna's storage API has no compare-and-swap; the swap is one SQL statement on Optuna's own
``study_user_attributes`` table (``optuna.storages._rdb.models``), through the storage's SQLAlchemy engine.
"""
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

from .storage import fail_stale_trials, rdb_backend
from .workers import (
    DEAD,
    DONE,
    EXITED,
    FAILED,
    WORKER_PREFIX,
    LivenessMonitor,
    Registration,
    wait_for_running_workers,
    workers_of,
)

__all__ = ['WRITING', 'WRITTEN', 'Outputs', 'read_attr_raw', 'compare_and_set_attr', 'write_once', 'run_registered']

WRITING, WRITTEN = 'writing', 'written'


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


def write_once(storage, study_id: int, attr: str, me: str, version: Callable[[], int], write: Callable[[], dict],
               grace_period: float, poll: float, force: bool = False, what: str = 'outputs',
               log: Callable[[str], None] = print) -> dict:
    """Claim the write of the study's outputs (see the module docstring), write if this worker wins, return the record.

    Args:
        storage (optuna.storages.RDBStorage): the study's storage.
        study_id (int): the study.
        attr (str): the study user attribute holding the write record (e.g. ``'fragment'``).
        me (str): this worker's key (registered and beating, so that others can tell whether it died).
        version (callable): the study's state to write, as a count (e.g. COMPLETE trials); 0: nothing to write.
        write (callable): writes the outputs; returns the record's fields (paths, best trial, ...).
        grace_period (float): seconds after which a silent claimant counts as dead.
        poll (float): seconds between two looks at a claim held by another worker.
        force (bool): write even when this version was written already.
        what (str): the outputs, for log lines.

    Returns:
        dict: the ``written`` record (``version``, ``writer``, ``host``, ``pid``, ``time`` and ``write``'s fields),
        with ``by_me`` True when this call wrote; ``{}`` when ``version()`` is 0.
    """
    monitor = LivenessMonitor(grace_period)
    name = me[len(WORKER_PREFIX):]
    while True:
        raw = read_attr_raw(storage, study_id, attr)
        record = json.loads(raw) if raw is not None else None
        n = version()
        if n == 0:
            return {}
        if isinstance(record, dict) and record.get('state') == WRITTEN and record.get('version') == n and not force:
            return dict(record, by_me=False)
        if isinstance(record, dict) and record.get('state') == WRITING:
            writer = workers_of(storage, study_id).get(record.get('writer'), {})
            if writer.get('state') not in (EXITED, FAILED, DEAD) and monitor.alive(record.get('writer'),
                                                                                   writer.get('beat')):
                time.sleep(poll)
                continue
            log(f'{name}: the writer of the {what}, {record.get("writer")}, stopped while writing; taking over')
        claim = dict(state=WRITING, writer=me, version=n, token=uuid.uuid4().hex)
        if not compare_and_set_attr(storage, study_id, attr, raw, claim):
            continue  # another worker changed the record first: look again
        fields = write()
        done = dict(fields, state=WRITTEN, writer=me, version=n, host=socket.gethostname(), pid=os.getpid(),
                    time=time.strftime('%Y-%m-%d %H:%M:%S %Z'))
        if not compare_and_set_attr(storage, study_id, attr, json.dumps(claim), done):
            log(f'{name}: the record of the {what} was taken over while this worker wrote (its heartbeat looked '
                f'stopped for {grace_period:g} s); both writes were atomic')
        return dict(done, by_me=True)


@dataclass
class Outputs:
    """What the last worker of a study writes, once (see :func:`write_once`).

    Attributes:
        attr (str): the study user attribute holding the write record.
        version (callable): ``() -> int``, the study's state to write (0: nothing to write).
        write (callable): ``() -> dict``: writes the outputs atomically, returns the record's fields.
        force (bool): write even when this version was written already. Defaults to False.
        what (str): the outputs, for log lines.
    """
    attr: str
    version: Callable[[], int]
    write: Callable[[], dict]
    force: bool = False
    what: str = 'outputs'


def run_registered(study, key: str, trials: int, run: Callable[[], object], outputs: Optional[Outputs],
                   heartbeat_interval: Optional[float], grace_period: Optional[float],
                   log: Callable[[str], None] = print) -> dict:
    """One worker of a study: register ``key`` (adopting a registration the pool made) and beat, ``run()`` its
    trials, mark itself ``done``, then, with ``outputs``, wait until no other registered worker runs (workers silent
    for the grace period are marked ``dead`` and their trials failed) and write the outputs once.

    A study outside an RDB storage (e.g. ``InMemoryStorage``: one process) just runs and writes.

    Args:
        study (optuna.Study): the study.
        key (str): this worker's key (:func:`~.workers.new_worker_key`).
        trials (int): trials asked of this worker (recorded; a worker asked none does not wait for others).
        run (callable): runs the trials.
        outputs (Outputs, optional): what to write at the end; None writes nothing.
        heartbeat_interval (float, optional): seconds between beats; None: no heartbeat (no waiting either).
        grace_period (float, optional): seconds of silence after which a worker is dead (default 2 intervals).

    Returns:
        dict: the write record (:func:`write_once`), ``{}`` when nothing was written or asked.

    Raises:
        Whatever ``run`` or ``outputs.write`` raise; the worker is then recorded ``failed``.
    """
    rdb = rdb_backend(study)
    if rdb is None:
        run()
        return dict(outputs.write(), by_me=True) if outputs is not None and outputs.version() else {}
    study_id = rdb.get_study_id_from_name(study.study_name)
    registration = Registration(rdb, study_id, key, heartbeat_interval, trials=trials).start()
    state = FAILED
    try:
        run()
        registration.write(state=DONE)
        record = {}
        if outputs is not None:
            grace = (grace_period or 2 * heartbeat_interval) if heartbeat_interval else 0
            # a look at the registry is one small read: once a second, not once a heartbeat (60 s for the recipe
            # search), so the last worker writes within a second of the others finishing
            poll = min(1.0, max(grace / 4, 0.2))
            if trials and heartbeat_interval:
                if wait_for_running_workers(rdb, study_id, key, grace, poll, log):
                    fail_stale_trials(study)  # the dead workers' trials, once their heartbeat is stale
            record = write_once(rdb, study_id, outputs.attr, key, outputs.version, outputs.write, grace, poll,
                                force=outputs.force, what=outputs.what, log=log)
        state = EXITED
        return record
    finally:
        registration.stop(state)
