"""Several workers on one anchor-search study (tools/anchor_search.py --n-workers, and a command on "another machine"
joining the same --storage): on SQLite and on a throw-away PostgreSQL server. Every asked trial runs once, no
parameter set repeats, the fragment is written exactly once, by the last worker, from the study's best trial; a
worker killed with SIGKILL does not block that write. Each command is a real process (the tool as users run it)."""
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from mmengine.config import Config

from mmdet_custom.anchor_search import SearchSpace, anchor_setting_from_cfg, best_trial, fragment_name
from mmdet_custom.anchor_search.search import FRAGMENT_ATTR
from mmdet_custom.studies.once import compare_and_set_attr, read_attr_raw
from mmdet_custom.studies.workers import WORKER_PREFIX, LivenessMonitor
from mmdet_custom.utils.isaid_meta import ISAID_CLASSES

REPO_ROOT = Path(__file__).resolve().parents[1]
ROOT_CONFIG = REPO_ROOT / 'configs' / 'mask_rcnn' / 'mask-rcnn_r50_fpn_1x_isaid.py'
TOOL = REPO_ROOT / 'tools' / 'anchor_search.py'
# heartbeats every second; the grace period is long where no worker dies (a worker starved of CPU for a few seconds on
# a loaded machine must not be taken for dead) and short in the test that kills one
GRACE_ALIVE, GRACE_KILL = 10, 5
WROTE = 'wrote the fragment'

# A worker whose trials take 0.3 s each (the tool itself, with the recall slowed down): it is still running when the
# other command finishes, so that one waits for it; the test kills it there.
SLOW_WORKER = '''
import runpy, sys, time
import mmdet_custom.anchor_search.search as search
evaluate = search.evaluate
def slow_evaluate(*args, **kwargs):
    time.sleep(0.3)
    return evaluate(*args, **kwargs)
search.evaluate = slow_evaluate
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


@pytest.fixture(scope='module')
def toy_config(tmp_path_factory):
    """A config of the iSAID root config's model over 60 random boxes in four 400 px images (no image files: the
    anchor search reads the annotations only)."""
    root = tmp_path_factory.mktemp('anchor_workers')
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(4):
        images.append(dict(id=i + 1, file_name=f'{i}.png', width=400, height=400))
        for _ in range(15):
            w, h = rng.uniform(4, 120, 2)
            x, y = rng.uniform(0, 400 - w), rng.uniform(0, 400 - h)
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=int(rng.integers(1, 16)), iscrowd=0,
                             bbox=[x, y, w, h], area=w * h))
    ann = root / 'toy.json'
    ann.write_text(json.dumps(dict(images=images, annotations=anns,
                                   categories=[dict(id=i + 1, name=n) for i, n in enumerate(ISAID_CLASSES)])))
    config = root / 'toy_anchors.py'
    config.write_text(f"_base_ = ['{ROOT_CONFIG}']\n"
                      f"train_dataloader = dict(dataset=dict(data_root='{root}/', ann_file='{ann}', "
                      f"data_prefix=dict(img='')))\n")
    return config


@pytest.fixture
def sqlite_dir(tmp_path):
    """A folder for SQLite files on tmpfs where there is one: Optuna commits ~20 times per trial, and each commit's
    fsync costs ~15 ms on this machine's disk (most of a trial's time)."""
    shm = Path('/dev/shm')
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix='anchor_workers_', dir=shm))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def tool_args(config, storage, name, tmp_path, trials, n_workers, grace=GRACE_ALIVE):
    return [str(TOOL), str(config), '--storage', storage, '--study-name', name, '--trials', str(trials),
            '--n-workers', str(n_workers), '--out', str(tmp_path / 'anchors' / f'{name}.py'),
            '--work-dir', str(tmp_path / 'plots'), '--seed', '0', '--heartbeat-interval', '1',
            '--grace-period', str(grace)]


def popen(args, log: Path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.Popen([sys.executable, *args], env=env, cwd=str(REPO_ROOT), stdout=log.open('w'),
                            stderr=subprocess.STDOUT, text=True)


def finish(proc, log: Path, timeout=300) -> str:
    proc.wait(timeout=timeout)
    text = log.read_text()
    assert proc.returncode == 0, text[-5000:]
    return text


def check_study(storage, name, config, fragment: Path, n_trials: int, log: str, n_workers: int):
    """Trial count, distinct parameter sets, one write, by a worker of the study, of its best trial."""
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials()
    assert len(trials) == n_trials and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == n_trials  # workers never repeat a parameter set
    assert sorted(t.user_attrs.get('role') for t in trials if t.user_attrs.get('role')) == ['config',
                                                                                           'data-suggested']
    workers = {k: v for k, v in study.user_attrs.items() if k.startswith(WORKER_PREFIX)}
    assert len(workers) == n_workers and {w['state'] for w in workers.values()} == {'exited'}
    assert sorted(w['trials'] for w in workers.values()) == sorted(
        n_trials // n_workers + (i < n_trials % n_workers) for i in range(n_workers))
    assert len({w['pid'] for w in workers.values()}) == n_workers  # separate processes
    # exactly one write, by one of the registered workers, recorded in the study
    assert log.count(WROTE) == 1, log
    record = study.user_attrs[FRAGMENT_ATTR]
    assert record['state'] == 'written' and record['writer'] in workers
    assert record['complete_trials'] == n_trials and record['path'] == str(fragment)
    # the fragment is the best trial's setting (ties: the lowest trial number)
    best = best_trial(study)
    assert best.value == max(t.value for t in trials) and record['best_trial'] == best.number
    baseline = anchor_setting_from_cfg(Config.fromfile(str(config)).model.rpn_head.anchor_generator)
    expected = SearchSpace.around(baseline).setting(best.params).generator_cfg()
    written = Config.fromfile(str(fragment))[fragment_name(name)].rpn_head.anchor_generator.to_dict()
    written = json.loads(json.dumps(written))
    assert written.pop('_delete_') is True and written == json.loads(json.dumps(expected))
    assert f'best trial {best.number}' in fragment.read_text()
    assert not [p for p in fragment.parent.iterdir() if p.name != fragment.name]  # no temporary file left
    for plot in record['plots']:
        assert Path(plot).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    return study


@pytest.mark.slow  # ~15 s on a free 2-core machine (30 s at load 6)
def test_sqlite_two_workers_one_write(toy_config, tmp_path, sqlite_dir, capsys):
    storage = f'sqlite:///{sqlite_dir / "study.db"}'
    log = tmp_path / 'tool.log'
    text = finish(popen(tool_args(toy_config, storage, 'toy', tmp_path, 9, 2), log), log)
    assert text.count(': ran 5 trial(s)') == 1 and text.count(': ran 4 trial(s)') == 1  # two workers ran trials
    check_study(storage, 'toy', toy_config, tmp_path / 'anchors' / 'toy.py', 9, text, 2)
    assert 'written by this command' in text and '\nbest ' in text  # the table and where the fragment went

    # resumed with --trials 0 (in this process): no trial, the fragment rewritten once, on request
    stamp = (tmp_path / 'anchors' / 'toy.py').stat().st_mtime_ns
    runpy.run_path(str(TOOL))['main'](tool_args(toy_config, storage, 'toy', tmp_path, 0, 1)[1:])
    assert capsys.readouterr().out.count(WROTE) == 1
    assert (tmp_path / 'anchors' / 'toy.py').stat().st_mtime_ns > stamp
    assert len(optuna.load_study(study_name='toy', storage=storage).trials) == 9


@pytest.mark.slow  # ~12 s on a free 2-core machine (23 s at load 6)
def test_postgresql_two_workers_one_write(toy_config, postgres_url, tmp_path):
    log = tmp_path / 'tool.log'
    text = finish(popen(tool_args(toy_config, postgres_url, 'pg', tmp_path, 6, 2), log), log)
    study = check_study(postgres_url, 'pg', toy_config, tmp_path / 'anchors' / 'pg.py', 6, text, 2)
    assert 'postgresql://postgres@127.0.0.1:' in (tmp_path / 'anchors' / 'pg.py').read_text()
    assert study.user_attrs['fragment']['host'] == os.uname().nodename


@pytest.mark.slow  # ~18 s on a free 2-core machine (33 s at load 6)
def test_killed_worker_does_not_block_the_write(toy_config, tmp_path, sqlite_dir, capsys):
    """Command A (a process with slow trials, 1000 asked) and command B (this process, 3 trials) share a study, as two
    machines would. B finishes first and waits for A; A is killed (SIGKILL) while it runs trials; B notices that A's
    heartbeat stopped, counts it dead and writes the fragment of the best trial, A's completed trials included."""
    storage = f'sqlite:///{sqlite_dir / "study.db"}'
    log_a, out = tmp_path / 'a.log', tmp_path / 'anchors' / 'shared.py'
    proc_a = popen(['-c', SLOW_WORKER, *tool_args(toy_config, storage, 'shared', tmp_path, 1000, 1, GRACE_KILL)],
                   log_a)
    killed = []

    def kill_a_when_b_waits():
        """A watcher (as a user noticing): once B's trials ran and A still runs, kill A."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc_a.poll() is None:
            states = {w['pid']: w['state'] for k, w in db.get_study_user_attrs(study_id).items()
                      if k.startswith(WORKER_PREFIX)}
            if states.get(os.getpid()) == 'done' and states.get(proc_a.pid) == 'running':
                killed.append(out.exists())
                proc_a.send_signal(signal.SIGKILL)
                return
            time.sleep(0.2)

    db = optuna.storages.RDBStorage(storage, engine_kwargs=dict(connect_args=dict(timeout=60)))
    try:
        deadline = time.monotonic() + 120
        while _complete(db, 'shared') < 2:  # A runs
            assert proc_a.poll() is None, log_a.read_text()[-3000:]
            assert time.monotonic() < deadline, log_a.read_text()[-3000:]
            time.sleep(0.2)
        study_id = db.get_study_id_from_name('shared')
        watcher = threading.Thread(target=kill_a_when_b_waits)
        watcher.start()
        runpy.run_path(str(TOOL))['main'](tool_args(toy_config, storage, 'shared', tmp_path, 3, 1, GRACE_KILL)[1:])
        watcher.join()
    finally:
        if proc_a.poll() is None:
            proc_a.send_signal(signal.SIGKILL)
        proc_a.wait()
    assert killed == [False], log_a.read_text()[-3000:]  # A was killed while B waited, before any write
    text = capsys.readouterr().out
    assert 'waiting for 1 running worker' in text and 'counted as dead' in text and text.count(WROTE) == 1
    assert WROTE not in log_a.read_text()
    study = optuna.load_study(study_name='shared', storage=storage)
    workers = {w['pid']: w['state'] for k, w in study.user_attrs.items() if k.startswith(WORKER_PREFIX)}
    assert workers == {proc_a.pid: 'dead', os.getpid(): 'exited'}
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, ))
    assert len(complete) >= 2 + 3 and study.user_attrs[FRAGMENT_ATTR]['complete_trials'] == len(complete)
    best = best_trial(study)
    assert study.user_attrs[FRAGMENT_ATTR]['best_trial'] == best.number
    assert f'best trial {best.number}' in out.read_text()


def _complete(db, name) -> int:
    """COMPLETE trials of study ``name`` in the RDBStorage ``db`` (0 before the study exists)."""
    try:
        study_id = db.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(db.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, )))


def test_compare_and_set_lets_one_of_many_win(tmp_path):
    """The claim primitive: of 8 threads swapping the same read value, exactly one succeeds; absent -> insert once."""
    storage = optuna.storages.RDBStorage(f'sqlite:///{tmp_path / "cas.db"}',
                                         engine_kwargs=dict(connect_args=dict(timeout=60)))
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], 'cas')
    assert read_attr_raw(storage, study_id, 'k') is None
    wins = []
    barrier = threading.Barrier(8)

    def claim(i, expected, phase):
        barrier.wait()
        if compare_and_set_attr(storage, study_id, 'k', expected, {'by': i, 'phase': phase}):
            wins.append(i)

    # first: insert when absent; then: swap the stored value (claims always differ from what they replace)
    for phase, expected in enumerate((None, read_attr_raw)):
        expected = expected(storage, study_id, 'k') if expected else None
        wins.clear()
        threads = [threading.Thread(target=claim, args=(i, expected, phase)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
        assert json.loads(read_attr_raw(storage, study_id, 'k')) == {'by': wins[0], 'phase': phase}
    assert storage.get_study_user_attrs(study_id)['k'] == {'by': wins[0], 'phase': 1}
    assert not compare_and_set_attr(storage, study_id, 'k', expected, {'late': True})  # a stale read loses


def test_liveness_by_observed_beats(monkeypatch):
    """A worker is dead once its beat stayed the same for more than the grace period of the observer's clock."""
    clock = [100.0]
    monkeypatch.setattr(time, 'monotonic', lambda: clock[0])
    monitor = LivenessMonitor(grace_period=3)
    assert monitor.alive('w', 5)            # first sight
    clock[0] += 2.9
    assert monitor.alive('w', 5)            # silent for 2.9 s
    clock[0] += 0.2
    assert not monitor.alive('w', 5)        # silent for 3.1 s
    assert monitor.alive('w', 6)            # it beat again: alive, the silence counts from now
    clock[0] += 3.0
    assert monitor.alive('w', 6)            # silent for exactly the grace period: still alive
    assert monitor.alive('x', None)         # another worker, first seen now


def test_tool_refuses_cfg_option_typos_and_shared_in_memory_studies(toy_config, tmp_path, capsys):
    """The config is read through read_config (unknown --cfg-options keys refused); several workers need a database
    that processes share. One error line, exit 2, nothing written."""
    from mmdet_custom.utils.cli import run_cli
    main = runpy.run_path(str(TOOL))['main']

    def run(*extra):
        args = [str(toy_config), '--study-name', 's', '--out', str(tmp_path / 'frag.py'), '--work-dir',
                str(tmp_path / 'plots'), '--trials', '2', *extra]
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and 'Traceback' not in err and err.count('\n') == 1, err
        return err

    db = tmp_path / 'never.db'
    err = run('--storage', f'sqlite:///{db}', '--cfg-options', 'model.rpn_head.anchor_generatr.strides=[4]')
    assert 'anchor_generatr' in err and 'anchor_generator' in err  # names the typo and the closest key
    err = run('--storage', 'sqlite:///:memory:', '--n-workers', '2')
    assert '--n-workers 2' in err and 'sqlite:///:memory:' in err
    assert not db.exists() and not (tmp_path / 'frag.py').exists()
