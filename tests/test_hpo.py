"""Recipe search (tools/hpo.py): two worker processes on one Optuna study in SQLite and in a real PostgreSQL server;
pruning, failed trials, a killed worker's trial failed and retried, the budget, the best config, the plots."""
import glob
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from helpers import load_config
from mmengine.config import Config
from recipe_tools_helpers import REPO_ROOT, shared_smoke_patches, tiny_cfg

from mmdet_custom.hpo.space import SearchSpaceError, check_space, load_space, suggest_options
from mmdet_custom.hpo.study import StudyError, StudySpec, open_study

# lr is drawn without log scale so that an enqueued lr = -1 reaches the optimizer (SGD refuses it: a failed trial).
# The mask loss weight multiplies loss_mask (~0.69 at the start) in val/loss: 10 makes a trial's val/loss ~6 higher
# than any weight-1 trial's, a poor recipe the median pruner stops at its first validation, deterministically (the
# first trial to finish cannot be pruned: the pruner needs one complete trial, --pruner-startup 1; the poor trial is
# queued after two good ones and a failing one, so it runs after a good one ended). The good ones may be pruned or
# not, by timing.
SPACE = '''
def space(trial):
    return {
        'optim_wrapper.optimizer.lr': trial.suggest_float('lr', 1e-4, 1e-2),
        'model.roi_head.mask_head.loss_mask.loss_weight': trial.suggest_categorical('mask_loss_weight', [1.0, 10.0]),
    }
'''
GOOD_A, GOOD_B = dict(lr=0.002, mask_loss_weight=1.0), dict(lr=0.004, mask_loss_weight=1.0)
POOR = dict(lr=0.003, mask_loss_weight=10.0)
FAILS = dict(lr=-1.0, mask_loss_weight=1.0)


@pytest.fixture(scope='module')
def study_inputs(tmp_path_factory):
    """The tiny smoke config (2 iterations, a validation after each, no checkpoints) and the space file."""
    root = tmp_path_factory.mktemp('hpo_inputs')
    cfg = tiny_cfg(shared_smoke_patches(tmp_path_factory), root / 'unused', scale=(64, 64), max_iters=2,
                   val_interval=1)
    cfg.default_hooks.checkpoint = None
    cfg.pop('work_dir')
    config = root / 'tiny_smoke.py'
    cfg.dump(str(config))
    space = root / 'space.py'
    space.write_text(SPACE)
    return config, space


def run_tool(config, space, storage, name, work_dir, trials, *extra, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [sys.executable, str(REPO_ROOT / 'tools' / 'hpo.py'), str(config), '--space', str(space), '--trials',
           str(trials), '--storage', storage, '--study-name', name, '--work-dir', str(work_dir), '--n-workers', '2',
           '--metric', 'val/loss', '--pruner', 'median', '--pruner-startup', '1', '--seed', '0', *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=str(REPO_ROOT))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    summary = json.loads((Path(work_dir) / 'study_summary.json').read_text())
    check_one_write(storage, name, summary, proc.stdout)
    return summary


def check_one_write(storage, name, summary, log):
    """The two workers registered in the study, both exited, and exactly one of them wrote the results (the study
    engine's registry and one write, mmdet_custom.studies), after every trial had ended."""
    study = optuna.load_study(study_name=name, storage=storage)
    workers = {k: v for k, v in study.user_attrs.items() if k.startswith('worker:')}
    assert len(workers) == 2 and {w['state'] for w in workers.values()} == {'exited'}, workers
    assert sorted(w['pid'] for w in workers.values()) == sorted({t['pid'] for t in summary['trials'] if t['pid']})
    record = study.user_attrs['result']
    assert record['state'] == 'written' and record['writer'] in workers and log.count('wrote the results') == 1, log
    assert record['version'] == len([t for t in summary['trials'] if t['state'] in ('COMPLETE', 'PRUNED', 'FAIL')])
    assert record['summary'] == str((Path(summary['files']['best_config'])).parent / 'study_summary.json')


def enqueue_args(*param_sets):
    return [a for p in param_sets for a in ('--enqueue', json.dumps(p))]


def check_outputs(summary, work_dir, config, plots=True):
    """What every study leaves: trial dirs with config and metrics, one best config, the plots (unless the study
    ran with --no-plots)."""
    work_dir = Path(work_dir)
    by_number = {t['number']: t for t in summary['trials']}
    for t in summary['trials']:
        if t['state'] in ('COMPLETE', 'PRUNED'):
            folder = Path(t['work_dir'])
            assert folder.parent == work_dir.resolve()
            history = json.loads((folder / 'metrics.json').read_text())
            # one metrics record and one Optuna report per validation, at the iteration it ran
            assert [h['step'] for h in history] == [int(s) for s in t['intermediate']]
            assert [h['val/loss'] for h in history] == list(t['intermediate'].values())
            trial_cfg = Config.fromfile(str(folder / 'config.py'))
            assert trial_cfg.optim_wrapper.optimizer.lr == t['params']['lr']
            assert not any(h['type'] == 'OptunaPruningHook' for h in trial_cfg.custom_hooks)
    complete = [t for t in summary['trials'] if t['state'] == 'COMPLETE']
    assert all(list(t['intermediate']) == ['1', '2'] for t in complete)  # both validations ran
    best = min(complete, key=lambda t: t['value'])
    assert summary['best']['number'] == best['number'] and summary['best']['value'] == best['value']
    best_cfg = Config.fromfile(str(work_dir / 'best_config.py'))
    assert best_cfg.optim_wrapper.optimizer.lr == best['params']['lr']
    assert best_cfg.model.roi_head.mask_head.loss_mask.loss_weight == best['params']['mask_loss_weight'] == 1.0
    assert 'work_dir' not in best_cfg and not any(h['type'] == 'OptunaPruningHook' for h in best_cfg.custom_hooks)
    assert Config.fromfile(str(config)).model.roi_head.mask_head.loss_mask.loss_weight == 1.0  # base untouched
    assert not glob.glob(str(work_dir / '.*tmp*'))  # atomic writers left no temporary file
    # the plots of the study engine (mmdet_custom.studies.plots), shared with the anchor search; importances need
    # two completed trials of different values (one complete trial would give every parameter the same share)
    drawn = ('optimization_history', 'parallel_coordinate')
    if len({t['value'] for t in complete}) >= 2:
        drawn += ('param_importances', )
    elif plots:
        assert summary['files']['plots']['param_importances'].startswith('skipped: importances need >= 2')
    for name in drawn if plots else ():
        assert (work_dir / 'plots' / f'{name}.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', summary['files']
    assert plots or not (work_dir / 'plots').exists()
    assert len({t['pid'] for t in summary['trials'] if t['pid']} - {None}) >= 2  # two worker processes ran trials
    return by_number


# ------------------------------------------------------------------------------------------------------ space
def test_example_space_fits_the_isaid_configs():
    cfg = load_config('configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py', resolved=False)
    space = load_space(str(REPO_ROOT / 'configs/hpo/space_mask-rcnn_isaid.py'))
    check_space(space, cfg)
    params = dict(lr=0.01, weight_decay=1e-4, roi_head_lr_mult=2.0, rpn_pos_iou_thr=0.6)
    tuned = cfg.copy()
    tuned.merge_from_dict(suggest_options(space, optuna.trial.FixedTrial(
        dict(params, anchors='isaid_stride_adjusted', augmentation=True)), cfg))
    # the anchor fragment replaces the whole generator (_delete_), the pipeline gets the aerial augmentations
    assert tuned.model.rpn_head.anchor_generator.type == 'PerLevelAnchorGenerator'
    assert 'scales' not in tuned.model.rpn_head.anchor_generator
    assert [t['type'] for t in tuned.train_dataloader.dataset.pipeline] == [
        'LoadImageFromFile', 'LoadCompactAnnotations', 'Resize', 'RandomFlip', 'Albu', 'RandomApply', 'PackDetInputs']
    assert tuned.optim_wrapper.paramwise_cfg.custom_keys.roi_head.lr_mult == 2.0
    assert tuned.optim_wrapper.optimizer.lr == 0.01 and tuned.model.train_cfg.rpn.assigner.pos_iou_thr == 0.6
    plain = suggest_options(space, optuna.trial.FixedTrial(dict(params, anchors='stock', augmentation=False)), cfg)
    assert 'model.rpn_head.anchor_generator' not in plain and 'train_dataloader.dataset.pipeline' not in plain
    assert cfg.model.rpn_head.anchor_generator.type == 'AnchorGenerator'  # the base config is not changed


def test_space_mistakes_are_refused_before_any_trial(tmp_path, study_inputs):
    config, _ = study_inputs
    cfg = Config.fromfile(str(config))
    typo = tmp_path / 'typo.py'
    typo.write_text("def space(trial):\n"
                    "    return {'optim_wrapper.optimizer.lrr': trial.suggest_float('lr', 1e-3, 1e-2)}\n")
    with pytest.raises(SearchSpaceError, match=r'typo\.py.*optim_wrapper\.optimizer\.lrr.*did you mean'):
        check_space(load_space(str(typo)), cfg)
    empty = tmp_path / 'empty.py'
    empty.write_text('LR = 0.01\n')
    with pytest.raises(SearchSpaceError, match=r'empty\.py defines no function space'):
        load_space(str(empty))
    # the tool refuses them before creating the study
    tool = __import__('runpy').run_path(str(REPO_ROOT / 'tools' / 'hpo.py'))
    db = tmp_path / 'refused.db'
    with pytest.raises(SearchSpaceError, match='lrr'):
        tool['main']([str(config), '--space', str(typo), '--trials', '2', '--storage', f'sqlite:///{db}',
                      '--study-name', 's', '--work-dir', str(tmp_path / 'w')])
    assert not db.exists()
    with pytest.raises(StudyError, match='not a database URL'):
        tool['main']([str(config), '--space', str(typo), '--trials', '2', '--storage', 'study.db',
                      '--study-name', 's', '--work-dir', str(tmp_path / 'w')])


def test_pruning_hook_reports_each_validation_and_prunes(tmp_path):
    from types import SimpleNamespace

    from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

    from mmdet_custom.hpo.pruning import MetricNotFoundError, OptunaPruningHook, register_trial, unregister_trial
    study = optuna.create_study(direction='minimize', pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    done = study.ask()
    done.report(2.0, 10)
    done.report(1.0, 20)
    study.tell(done, 1.0)
    trial = study.ask()
    key = register_trial(trial)
    try:
        hook = OptunaPruningHook(key, 'val/loss', metrics_file=str(tmp_path / 'metrics.json'))
        runner = SimpleNamespace(train_loop=IterBasedTrainLoop.__new__(IterBasedTrainLoop), iter=10, epoch=0)
        hook.after_val_epoch(runner, {'val/loss': 1.5, 'coco/segm_mAP': 0.1})  # better than 2.0 at step 10
        runner.iter = 20
        with pytest.raises(optuna.TrialPruned, match='iteration 20: val/loss = 9'):
            hook.after_val_epoch(runner, {'val/loss': 9.0})  # its best, 1.5, is worse than 1.0 at step 20
    finally:
        unregister_trial(key)
    history = json.loads((tmp_path / 'metrics.json').read_text())
    assert [(h['step'], h['unit'], h['val/loss']) for h in history] == [(10, 'iter', 1.5), (20, 'iter', 9.0)]
    assert study.trials[1].intermediate_values == {10: 1.5, 20: 9.0}
    # an epoch loop reports epochs; a metric the validation does not give is named with the closest ones
    trial = study.ask()
    key = register_trial(trial)
    try:
        runner = SimpleNamespace(train_loop=EpochBasedTrainLoop.__new__(EpochBasedTrainLoop), iter=500, epoch=3)
        OptunaPruningHook(key, 'val/loss').after_val_epoch(runner, {'val/loss': 1.0})
        assert study.trials[2].intermediate_values == {3: 1.0}
        with pytest.raises(MetricNotFoundError, match='did you mean coco/segm_mAP'):
            OptunaPruningHook(key, 'coco/segm_mAPP').after_val_epoch(runner, {'coco/segm_mAP': 0.2})
    finally:
        unregister_trial(key)
    with pytest.raises(RuntimeError, match='no Optuna trial'):
        OptunaPruningHook(key, 'val/loss').after_val_epoch(runner, {'val/loss': 1.0})


# ------------------------------------------------------------------------------------------------------ SQLite
KILLED_WORKER = textwrap.dedent('''
    # an Optuna worker as tools/hpo.py's (same storage settings, same space), killed while its trial runs
    import runpy, sys, time
    import optuna
    storage = optuna.storages.RDBStorage(sys.argv[2], heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name=sys.argv[3], direction='minimize')
    study.enqueue_trial({'lr': 0.003, 'mask_loss_weight': 1.0})
    space = runpy.run_path(sys.argv[1])['space']

    def heartbeat_recorded(trial_id):
        import sqlalchemy
        with storage.engine.connect() as conn:
            return conn.execute(sqlalchemy.text('SELECT 1 FROM trial_heartbeats WHERE trial_id = :t'),
                                {'t': trial_id}).first() is not None

    def objective(trial):
        space(trial)
        # Optuna's heartbeat thread writes the first beat a moment after the trial starts; a trial killed before it
        # has no beat and is never found stale, so say RUNNING only once the beat is in the storage
        while not heartbeat_recorded(trial._trial_id):
            time.sleep(0.05)
        print('RUNNING', trial.number, flush=True)
        time.sleep(600)

    study.optimize(objective, n_trials=1)
''')


@pytest.mark.slow  # ~25 s on a free 2-core machine: the tool's start (~15 s: imports, checks), 4 trials, plots
def test_sqlite_two_workers_prune_fail_and_resume_after_a_killed_worker(study_inputs, tmp_path):
    config, space = study_inputs
    work, storage = tmp_path / 'study', f'sqlite:///{tmp_path / "study.db"}'
    # a worker dies (SIGKILL) while its trial runs: the trial stays RUNNING, its heartbeat stops
    killed = subprocess.Popen([sys.executable, '-c', KILLED_WORKER, str(space), storage, 'sq'],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert killed.stdout.readline().split() == ['RUNNING', '0'], killed.stderr.read()
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    study = optuna.load_study(study_name='sq', storage=storage)
    assert [t.state.name for t in study.trials] == ['RUNNING']
    # its last heartbeat a minute old, as if it had been killed long before (instead of waiting out the grace period):
    # the storage's own clock (SQLite CURRENT_TIMESTAMP) judges staleness. The grace is 8 s, not Optuna's 2 beats: on a
    # loaded 2-core machine a live worker's heartbeat thread can be late by seconds, and a live trial judged stale
    # fails the run
    with sqlite3.connect(str(tmp_path / 'study.db')) as db:
        assert db.execute("UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-60 seconds')").rowcount == 1

    # queue: the killed trial's retry (queued first), a good recipe, one that fails, a poor one (after a trial ended)
    summary = run_tool(config, space, storage, 'sq', work, 4, '--heartbeat-interval', '1', '--grace-period', '8',
                       *enqueue_args(GOOD_A, FAILS, POOR))
    trials = check_outputs(summary, work, config)
    states = [t['state'] for t in summary['trials']]
    # budget 4 = the retry + 3 enqueued; the killed trial does not count
    assert len(states) == 5 and summary['counts']['counted'] == 4
    assert summary['counts']['died'] == 1 and summary['counts']['running'] == summary['counts']['waiting'] == 0
    # the killed worker's trial: failed without an error of its own, retried with its parameters
    assert trials[0]['state'] == 'FAIL' and trials[0]['error'] is None
    retry = [t for t in summary['trials'] if t['retry_of'] == 0]
    assert len(retry) == 1 and retry[0]['params'] == trials[0]['params'] == {'lr': 0.003, 'mask_loss_weight': 1.0}
    assert retry[0]['number'] == 1  # before the new parameter sets
    # (the median pruner may stop it, as any trial whose val/loss trails the median of the completed ones)
    assert retry[0]['state'] in ('COMPLETE', 'PRUNED') and retry[0]['intermediate']
    # the failed trial: recorded FAIL with its error, traceback kept in its work dir
    failed = [t for t in summary['trials'] if t['error']]
    assert len(failed) == 1 and failed[0]['params'] == FAILS and 'learning rate' in failed[0]['error']
    assert 'learning rate' in (Path(failed[0]['work_dir']) / 'error.txt').read_text()
    # the poor recipe was pruned at its first validation (iteration 1), after a good one had completed
    poor = [t for t in summary['trials'] if t['params'] == POOR]
    assert len(poor) == 1 and poor[0]['state'] == 'PRUNED' and list(poor[0]['intermediate']) == ['1']
    assert states.count('COMPLETE') >= 1
    # a study is not resumed with another metric
    with pytest.raises(StudyError, match='metric'):
        open_study(StudySpec(config=str(config), space=str(space), storage=storage, study_name='sq', n_trials=5,
                             work_dir=str(work), metric='coco/segm_mAP', direction='minimize'))


# ------------------------------------------------------------------------------------------------------ PostgreSQL
# postgres_url: the throw-away PostgreSQL cluster fixture of tests/conftest.py


@pytest.mark.slow  # ~20 s on a free 2-core machine, ~45 s under load
def test_postgresql_two_workers_one_study(study_inputs, postgres_url, tmp_path):
    config, space = study_inputs
    # the plots do not depend on the storage (drawn and checked in the SQLite test)
    summary = run_tool(config, space, postgres_url, 'pg', tmp_path / 'study', 3, '--no-plots',
                       *enqueue_args(GOOD_A, GOOD_B, POOR))
    assert summary['storage'].startswith('postgresql://postgres@127.0.0.1:')
    assert len(summary['trials']) == 3 and summary['counts']['counted'] == 3
    # the poor recipe is always pruned; a good one may be too, when it trails the other good one that completed
    assert [t['state'] for t in summary['trials'] if t['params'] == POOR] == ['PRUNED']
    assert summary['counts']['complete'] >= 1 and summary['counts']['failed'] == summary['counts']['died'] == 0
    check_outputs(summary, tmp_path / 'study', config, plots=False)
    # the study lives in the server: any worker anywhere can load it
    study = optuna.load_study(study_name='pg', storage=postgres_url)
    assert len(study.trials) == 3 and study.best_trial.number == summary['best']['number']


def test_a_same_named_space_with_other_ranges_is_refused(tmp_path):
    """A study stores its space's distributions (not the file name): a resumed study refuses a space file of the
    same name with other ranges, and one of other parameters; a study made before the fingerprint existed is
    compared through its trials' distributions."""
    cfg = load_config('configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py', resolved=False)
    spaces = {}
    for name, (low, high) in (('a', (1e-3, 1e-2)), ('b', (1e-4, 1e-1))):
        (tmp_path / name).mkdir()
        path = tmp_path / name / 'space.py'
        path.write_text(f"def space(trial):\n"
                        f"    return {{'optim_wrapper.optimizer.lr': trial.suggest_float('lr', {low}, {high}, "
                        f"log=True)}}\n")
        spaces[name] = load_space(str(path))
        check_space(spaces[name], cfg)
    storage = f'sqlite:///{tmp_path / "s.db"}'

    def spec(name, study='s'):
        return StudySpec(config='x.py', space=str(tmp_path / name / 'space.py'), storage=storage, study_name=study,
                         n_trials=2, work_dir=str(tmp_path / 'w'))
    open_study(spec('a'), distributions=spaces['a'].distributions)
    open_study(spec('a'), distributions=spaces['a'].distributions)  # the same space: resumed
    with pytest.raises(StudyError, match=r"b/space\.py: parameter 'lr' is FloatDistribution\(high=0\.01, log=True, "
                                         r"low=0\.001, step=None\) there, FloatDistribution\(high=0\.1"):
        open_study(spec('b'), distributions=spaces['b'].distributions)
    with pytest.raises(StudyError, match=r"parameter 'momentum' is absent there"):
        open_study(spec('a'), distributions=dict(spaces['a'].distributions, momentum=optuna.distributions
                                                 .distribution_to_json(optuna.distributions.FloatDistribution(0, 1))))
    legacy = optuna.create_study(storage=storage, study_name='old', direction='maximize')
    legacy.add_trial(optuna.trial.create_trial(params=dict(lr=0.005), value=0.1, distributions=dict(
        lr=optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True))))
    with pytest.raises(StudyError, match=r"study old .*parameter 'lr'"):
        open_study(spec('b', 'old'), distributions=spaces['b'].distributions)
