"""Preemption-safe training: SIGTERM in the middle of ``tools/train.py``, ``--resume auto``, and the same weights and
loss curve as an uninterrupted run (PreemptionHook, PreemptibleEpochBasedTrainLoop, find_newest_checkpoint)."""
import json
import os
import runpy
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import tiny_isaid_cfg
from mmdet.registry import HOOKS
from mmengine.config import Config
from mmengine.hooks import Hook

from mmdet_custom.apis.runner import make_preemptible, train
from mmdet_custom.checkpoint import ResumeError, find_newest_checkpoint, load_checkpoint_file
from mmdet_custom.engine import PREEMPTED_EXIT, preempted_by

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ITERS = 4


def _cfg(data_root, work_dir):
    """The CPU smoke model, ``ITERS`` iterations, seed 0, one loader worker: the workers' random flips are seeded
    per worker by mmengine and so repeat after a restart; with no worker they would be drawn in the main process
    from a generator the resumed run reaches in another state (it loads the skipped batches before the restore)."""
    cfg = tiny_isaid_cfg(data_root, work_dir, iters=ITERS)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.train_cfg.val_interval = 1000
    cfg.train_dataloader.num_workers = 1
    return cfg


def _losses(work_dir):
    """{iteration: loss} from the json logs of every run in ``work_dir``."""
    losses = {}
    for root, _, files in os.walk(work_dir):
        for name in files:
            if name == 'scalars.json':
                with open(os.path.join(root, name)) as f:
                    for line in f:
                        entry = json.loads(line)
                        if 'loss' in entry:
                            losses[entry['iter']] = entry['loss']
    return losses


@pytest.mark.slow
def test_sigterm_then_resume_auto_equals_an_uninterrupted_run(isaid_256, tmp_path, one_torch_thread):
    reference = tmp_path / 'reference'
    train(_cfg(isaid_256.root, reference))

    work = tmp_path / 'preempted'
    config = tmp_path / 'tiny.py'
    _cfg(isaid_256.root, work).dump(str(config))
    cmd = [sys.executable, 'tools/train.py', str(config), '--resume', 'auto']
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if f'Iter(train) [1/{ITERS}]' in line:  # a fresh start (nothing to resume), now in iteration 2
            sent = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            break
    out += proc.stdout.readlines()
    code = proc.wait(timeout=60)
    seconds = time.perf_counter() - sent
    text = ''.join(out)
    assert code == PREEMPTED_EXIT, text[-3000:]
    assert 'no checkpoint in' in text and 'SIGTERM received: stopping after iteration' in text
    stopped = find_newest_checkpoint(str(work))
    done = load_checkpoint_file(stopped)['meta']['iter']
    assert 1 <= done < ITERS and stopped.endswith(f'iter_{done}.pth'), text[-3000:]
    assert (work / 'last_checkpoint').read_text() == stopped
    print(f'SIGTERM to exit: {seconds:.1f} s (stopped after iteration {done} of {ITERS})')

    # the same command again continues from the preemption checkpoint and finishes the run
    main = runpy.run_path(os.path.join(REPO, 'tools', 'train.py'))['main']
    runner = main([str(config), '--resume', 'auto'])
    assert runner.iter == ITERS
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back after training

    ours = load_checkpoint_file(str(work / f'iter_{ITERS}.pth'))['state_dict']
    theirs = load_checkpoint_file(str(reference / f'iter_{ITERS}.pth'))['state_dict']
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not different, different[:5]
    assert _losses(work) == _losses(reference) and len(_losses(reference)) == ITERS


def test_resume_auto_starts_fresh_or_takes_the_newest_checkpoint(tmp_path):
    assert find_newest_checkpoint(str(tmp_path / 'absent')) is None
    assert find_newest_checkpoint(str(tmp_path)) is None
    (tmp_path / 'best_coco_segm_mAP_iter_9.pth').write_bytes(b'')  # not a resume point
    assert find_newest_checkpoint(str(tmp_path)) is None
    old, new = tmp_path / 'epoch_1.pth', tmp_path / 'iter_700.pth'
    old.write_bytes(b'')
    new.write_bytes(b'')
    os.utime(old, (1, 1))
    (tmp_path / 'last_checkpoint').write_text(str(old))
    # saved after last_checkpoint was last written (a kill between the two): the newer one wins
    assert find_newest_checkpoint(str(tmp_path)) == str(new)
    new.unlink()
    assert find_newest_checkpoint(str(tmp_path)) == str(old)
    old.unlink()
    with pytest.raises(ResumeError, match='exists neither there nor in the work dir'):
        find_newest_checkpoint(str(tmp_path))


def test_every_run_gets_the_hook_and_the_preemptible_epoch_loop():
    cfg = Config(dict(train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1),
                      custom_hooks=[dict(type='NanSkipHook')]))
    make_preemptible(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == ['NanSkipHook', 'PreemptionHook']
    assert cfg.train_cfg == dict(type='PreemptibleEpochBasedTrainLoop', max_epochs=12, val_interval=1)
    make_preemptible(cfg)  # idempotent
    assert [h['type'] for h in cfg.custom_hooks] == ['NanSkipHook', 'PreemptionHook']
    cfg = Config(dict(train_cfg=dict(type='IterBasedTrainLoop', max_iters=5)))
    make_preemptible(cfg)
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'


@HOOKS.register_module(force=True)
class _SignalAtIterHook(Hook):
    """Sends ``signum`` to this process during iteration ``at`` (1-based), as a cluster's preemption would."""

    def __init__(self, at: int, signum: int = signal.SIGTERM):
        self.at, self.signum = at, signum

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            os.kill(os.getpid(), self.signum)


@pytest.mark.slow
def test_epoch_loop_stops_inside_an_epoch_and_resumes_there(isaid_256, tmp_path, one_torch_thread):
    """2 epochs of 3 images: SIGINT during iteration 2 (inside epoch 1), resume, and the same weights and losses
    as 6 uninterrupted iterations; mmengine's own loop would train epoch 1 to its end and, resumed from iteration
    2, train the whole epoch again (8 iterations)."""
    def cfg(work_dir, *hooks):
        cfg = _cfg(isaid_256.root, work_dir)
        cfg.train_dataloader.dataset.indices = 3
        cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=2, val_interval=1000)
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, by_epoch=True)
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + list(hooks)
        return cfg

    train(cfg(tmp_path / 'reference'))
    # the handler before training: Python's default_int_handler, or SIG_IGN where the suite was started in the
    # background of a non-interactive shell (asynchronous commands ignore SIGINT there)
    before = signal.getsignal(signal.SIGINT)
    runner = train(cfg(tmp_path / 'work', dict(type='_SignalAtIterHook', at=2, signum=signal.SIGINT)))
    assert preempted_by(runner) == 'SIGINT' and runner.iter == 2 and runner.epoch == 0
    assert signal.getsignal(signal.SIGINT) is before  # put back after training
    assert sorted(p.name for p in (tmp_path / 'work').glob('*.pth')) == ['iter_2.pth']  # no epoch checkpoint
    runner = train(cfg(tmp_path / 'work'), resume='auto')
    assert preempted_by(runner) is None and runner.iter == 6 and runner.epoch == 2
    ours = load_checkpoint_file(str(tmp_path / 'work' / 'epoch_2.pth'))['state_dict']
    theirs = load_checkpoint_file(str(tmp_path / 'reference' / 'epoch_2.pth'))['state_dict']
    assert not [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert _losses(tmp_path / 'work') == _losses(tmp_path / 'reference') and len(_losses(tmp_path / 'work')) == 6
