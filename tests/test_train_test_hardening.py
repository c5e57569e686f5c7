"""Train/test/checkpoint hardening: each defect (a silently wrong run) reproduced, then shown refused.

Real iSAID patches (the devkit sample, 256 px windows) and the CPU smoke model (ResNet-18, 128 px input, random
init) trained once for 2 iterations (module fixture); every other check fails at start, before any iteration. The
checkpoint-saving checks use mmengine's own ``Runner`` and ``CheckpointHook`` with a two-layer model (the code under
test is mmengine's save path, not the detector).
"""
import ast
import errno
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT, tiny_isaid_cfg

from mmdet_custom.apis.runner import ConfigKeyError, DatasetCheckError, check_cfg_options, read_config, test, train
from mmdet_custom.checkpoint import (
    CheckpointMismatchError,
    ResumeError,
    find_resume_checkpoint,
    load_checkpoint_file,
    save_checkpoint_atomic,
)
from mmdet_custom.utils.cli import run_cli
from mmdet_custom.utils.errors import UserError

SMOKE_CONFIG = str(REPO_ROOT / 'configs' / 'mask_rcnn' / 'mask-rcnn_r18_fpn_300i_isaid-smoke.py')
OTHER_ANCHORS = {'model.rpn_head.anchor_generator.ratios': [0.5, 1.0, 2.0, 4.0]}


# ----------------------------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def patches(isaid_256):
    """train + val in 256 px patches without overlap (conftest's session conversion; read-only)."""
    return isaid_256.root


def small_cfg(data_root, work_dir):
    """2 iterations, one checkpoint at iteration 2, no validation during training, 1 test image."""
    cfg = tiny_isaid_cfg(data_root, work_dir)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.train_cfg.val_interval = 1000
    cfg.test_dataloader.dataset.indices = 1
    return cfg


@pytest.fixture(scope='module')
def trained(patches, tmp_path_factory, one_torch_thread):
    """(work_dir, checkpoint) after 2 iterations of the tiny model, trained through mmdet_custom.apis.train."""
    work_dir = tmp_path_factory.mktemp('hardening_run')
    runner = train(small_cfg(patches, work_dir))
    assert runner.iter == 2
    return work_dir, work_dir / 'iter_2.pth'


@pytest.fixture(scope='module')
def config_file(patches, tmp_path_factory):
    path = tmp_path_factory.mktemp('hardening_cfg') / 'tiny.py'
    small_cfg(patches, tmp_path_factory.mktemp('unused')).dump(str(path))
    return path


def run_tool(*args, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS='1', **(env_extra or {}))
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def tool_main(name):
    return runpy.run_path(str(REPO_ROOT / 'tools' / name))['main']


def assert_one_error_line(proc, *fragments):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# ----------------------------------------------------------------------------------------------------------------
# (10) --cfg-options keys and hook settings
# ----------------------------------------------------------------------------------------------------------------
def test_cfg_option_typos_are_refused_with_the_closest_key():
    cfg = read_config(SMOKE_CONFIG)
    with pytest.raises(ConfigKeyError) as err:
        check_cfg_options(cfg, {'trian_cfg.max_iters': 2}, SMOKE_CONFIG)
    assert 'has no key trian_cfg (in trian_cfg.max_iters), did you mean train_cfg.max_iters?' in str(err.value)
    with pytest.raises(ConfigKeyError, match=r'no key model\.backbone\.dpeth, did you mean model\.backbone\.depth\?'):
        check_cfg_options(cfg, {'model.backbone.dpeth': 18})
    # list items by index (as merge_from_dict addresses them); an index past the end is a typo too
    ok = {'train_dataloader.dataset.pipeline.2.scale': (64, 64), 'train_cfg.max_iters': 5}
    assert check_cfg_options(cfg, ok) == ok
    with pytest.raises(ConfigKeyError, match='pipeline.9'):
        check_cfg_options(cfg, {'train_dataloader.dataset.pipeline.9.scale': (64, 64)})
    # a leading + adds a key on purpose
    merged = read_config(cfg, {'+model.backbone.with_cp': True, 'train_cfg.max_iters': 5})
    assert merged.model.backbone.with_cp is True and merged.train_cfg.max_iters == 5
    assert '+model' not in merged


def test_unknown_checkpoint_hook_key_fails_at_start(patches, tmp_path):
    # mmengine's CheckpointHook keeps unknown keys and fails with TypeError only at its first save
    cfg = small_cfg(patches, tmp_path)
    with pytest.raises(ConfigKeyError) as err:
        train(cfg, cfg_options={'+default_hooks.checkpoint.max_keep_ckpt': 1, '+default_hooks.logger.intervall': 5})
    assert 'default_hooks.checkpoint.max_keep_ckpt: CheckpointHook has no argument max_keep_ckpt, did you mean ' \
        'max_keep_ckpts?' in str(err.value)
    assert 'default_hooks.logger.intervall: LoggerHook has no argument intervall, did you mean interval?' in \
        str(err.value)
    assert list(tmp_path.iterdir()) == []  # nothing built, nothing trained


def test_cli_typo_is_one_error_line_and_debug_shows_the_traceback(tmp_path, capsys):
    # the command line as users run it (one subprocess: the `__main__` block is wired to run_cli) ...
    proc = run_tool('tools/train.py', SMOKE_CONFIG, '--work-dir', tmp_path / 'w', '--cfg-options',
                    'trian_cfg.max_iters=2')
    assert_one_error_line(proc, 'did you mean train_cfg.max_iters', '+trian_cfg.max_iters')
    assert not (tmp_path / 'w').exists()
    # ... and --debug, in this process
    args = [SMOKE_CONFIG, '--work-dir', str(tmp_path / 'w'), '--cfg-options', 'trian_cfg.max_iters=2']
    with pytest.raises(ConfigKeyError):
        run_cli(tool_main('train.py'), args + ['--debug'])


def test_every_tool_reports_through_run_cli():
    """Every command line under tools/ ends with ``run_cli(main)`` and its ``main`` takes the argument list."""
    tools = sorted((REPO_ROOT / 'tools').rglob('*.py'))
    assert len(tools) >= 20 and REPO_ROOT / 'tools' / 'analysis_tools' / 'gradcam.py' in tools
    for path in tools:
        tree = ast.parse(path.read_text())
        last = tree.body[-1]
        assert isinstance(last, ast.If) and ast.unparse(last.test) == "__name__ == '__main__'", path
        assert ast.unparse(last.body[-1]) == 'run_cli(main)', path
        main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == 'main')
        assert [a.arg for a in main.args.args] == ['argv'], path


# ----------------------------------------------------------------------------------------------------------------
# (13) empty train set, num_classes, (12) missing / corrupt images: all at start
# ----------------------------------------------------------------------------------------------------------------
def test_num_classes_other_than_the_dataset_is_refused(patches, tmp_path):
    # mmdet would stop at the first label >= 7 with "Target 7 is out of bounds"
    cfg = small_cfg(patches, tmp_path)
    with pytest.raises(DatasetCheckError) as err:
        train(cfg, cfg_options={'model.roi_head.bbox_head.num_classes': 7, 'model.roi_head.mask_head.num_classes': 7})
    msg = str(err.value)
    assert 'model.roi_head.bbox_head.num_classes = 7' in msg and 'model.roi_head.mask_head.num_classes = 7' in msg
    assert 'has 15 classes (ship, storage_tank' in msg
    assert not list(tmp_path.glob('*.pth'))


def test_empty_train_set_is_named(patches, tmp_path):
    # a dataset type without the project's own checks: mmengine's serialisation fails with
    # "need at least one array to concatenate"
    from mmdet_custom.utils.isaid_meta import ISAID_CLASSES
    ann = tmp_path / 'empty.json'
    ann.write_text(json.dumps({'images': [], 'annotations': [],
                               'categories': [{'id': i + 1, 'name': n} for i, n in enumerate(ISAID_CLASSES)]}))
    cfg = small_cfg(patches, tmp_path / 'work')
    cfg.train_dataloader.dataset.update(type='CocoDataset', ann_file=str(ann), metainfo=dict(classes=ISAID_CLASSES))
    with pytest.raises(DatasetCheckError, match=r'train dataset CocoDataset \(.*empty\.json\) holds no images'):
        train(cfg)


def test_missing_and_truncated_images_fail_at_start(patches, tmp_path):
    data = tmp_path / 'data'
    shutil.copytree(patches, data)
    images = sorted((data / 'train' / 'images').glob('*.png'))
    assert len(images) >= 3
    images[0].unlink()
    raw = images[1].read_bytes()
    images[1].write_bytes(raw[:len(raw) // 2])  # a copy cut off half-way: the header reads fine
    images[2].write_bytes(b'not an image')
    cfg = small_cfg(data, tmp_path / 'work')
    with pytest.raises(DatasetCheckError) as err:
        train(cfg)
    msg = str(err.value)
    assert msg.startswith(f'3 of the {len(images)} train images cannot be read')
    assert f'{images[0]}: missing' in msg and f'{images[1]}: truncated PNG' in msg
    assert f'{images[2]}: not a readable image' in msg
    assert not list((tmp_path / 'work').glob('*.pth'))


# ----------------------------------------------------------------------------------------------------------------
# (11) resume
# ----------------------------------------------------------------------------------------------------------------
def test_resume_without_checkpoint_is_an_error(patches, tmp_path):
    cfg = small_cfg(patches, tmp_path)
    with pytest.raises(ResumeError, match='no checkpoint to resume from in work dir .*train without --resume'):
        train(cfg, resume=True)
    assert list(tmp_path.iterdir()) == []  # refused before the runner made its log folder
    (tmp_path / 'last_checkpoint').write_text('')
    with pytest.raises(ResumeError, match='last_checkpoint is empty'):
        train(cfg, resume=True)
    with pytest.raises(FileNotFoundError, match='nothere.pth'):
        train(cfg, resume=str(tmp_path / 'nothere.pth'))


def test_moved_work_dir_resumes(trained, patches, tmp_path):
    work_dir, _ = trained
    moved = tmp_path / 'moved'
    shutil.copytree(work_dir, moved)
    # as after `mv`: last_checkpoint holds the absolute path of the old place, which no longer exists
    (moved / 'last_checkpoint').write_text('/gone/old_place/iter_2.pth')
    assert find_resume_checkpoint(str(moved)) == str(moved / 'iter_2.pth')
    cfg = small_cfg(patches, moved)
    cfg.train_cfg.max_iters = 3
    cfg.default_hooks.checkpoint.interval = 1
    runner = train(cfg, resume=True)
    assert runner.iter == 3
    assert load_checkpoint_file(str(moved / 'iter_3.pth'))['meta']['iter'] == 3
    assert (moved / 'last_checkpoint').read_text() == str(moved / 'iter_3.pth')


# ----------------------------------------------------------------------------------------------------------------
# (5) a checkpoint of another model, (12) outputs checked first, (14) NaN metrics
# ----------------------------------------------------------------------------------------------------------------
def test_checkpoint_of_another_model_is_refused_unless_not_strict(trained, patches, tmp_path):
    _, ckpt = trained
    cfg = small_cfg(patches, tmp_path / 'strict')
    with pytest.raises(CheckpointMismatchError) as err:
        test(cfg, str(ckpt), cfg_options=OTHER_ANCHORS)
    msg = str(err.value)
    assert str(ckpt) in msg and 'rpn_head.rpn_cls.weight (checkpoint [3, 128, 1, 1], model [4, 128, 1, 1])' in msg
    assert not (tmp_path / 'strict' / 'test_metrics.json').exists()
    # knowingly: tested with a warning in the log
    metrics = test(small_cfg(patches, tmp_path / 'loose'), str(ckpt), cfg_options=OTHER_ANCHORS, strict=False)
    assert 'coco/segm_mAP' in metrics
    logs = ''.join(p.read_text() for p in (tmp_path / 'loose').glob('*/*.log'))
    assert 'does not fit the config' in logs and '--strict false' in logs


def test_two_runs_in_the_same_second_keep_their_own_logs(trained, patches, tmp_path, monkeypatch):
    """mmengine names a run ``<config>_<timestamp to the second>`` and reuses the logger of a name: a second run
    within the same second logged into the first run's work dir and left none in its own. The runner's clock is
    frozen here, so that both runs get the same timestamp whatever the machine's speed."""
    import time
    import types

    import mmengine.runner.runner as mmengine_runner
    frozen = time.time()
    clock = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith('_')})
    clock.time = lambda: frozen
    monkeypatch.setattr(mmengine_runner, 'time', clock)
    _, ckpt = trained
    first, second = tmp_path / 'first_run', tmp_path / 'second_run'
    for work in (first, second):
        assert 'coco/segm_mAP' in test(small_cfg(patches, work), str(ckpt))
    logs = [list(work.glob('*/*.log')) for work in (first, second)]
    assert [len(found) for found in logs] == [1, 1]  # before: none in the second run's work dir
    assert logs[0][0].name == logs[1][0].name  # <timestamp>.log: the same second
    for (log, ), work, other in zip(logs, (first, second), (second, first)):
        text = log.read_text()
        assert f"work_dir = '{work}'" in text and str(other) not in text  # its own config dump, not the other's
        assert 'Load checkpoint from' in text and text.count('Config:') == 1


def test_cli_names_its_outputs_last(trained, config_file, tmp_path, capsys, monkeypatch):
    from mmengine.runner import Runner
    _, ckpt = trained
    monkeypatch.setattr(Runner, 'test', lambda self: {'coco/segm_mAP': 0.5})
    out = tmp_path / 'preds.pkl'
    metrics = tool_main('test.py')([str(config_file), str(ckpt), '--work-dir', str(tmp_path / 'work'), '--out',
                                    str(out)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == (f'written: metrics {tmp_path / "work" / "test_metrics.json"}, log {metrics.log_dir}, '
                    f'predictions {out}')
    assert json.loads((tmp_path / 'work' / 'test_metrics.json').read_text()) == {'coco/segm_mAP': 0.5}
    assert os.path.dirname(metrics.log_dir) == str(tmp_path / 'work')


def test_outputs_and_name_map_are_checked_before_inference(trained, patches, tmp_path):
    _, ckpt = trained
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    work = tmp_path / 'work'
    with pytest.raises(UserError, match=r'--out .*a_file/results\.json cannot be written'):
        test(small_cfg(patches, work), str(ckpt), out=str(blocker / 'results.json'), format_only=True)
    bad_map = tmp_path / 'names.json'
    bad_map.write_text('{"P0003_0_256_0_256.png": 1,')
    with pytest.raises(UserError, match=r'names\.json is not valid json.*line 1'):
        test(small_cfg(patches, work), str(ckpt), out=str(tmp_path / 'r.json'), format_only=True,
             name_to_ids=str(bad_map))
    assert not work.exists(), 'the runner was built although the run was bound to fail'
    # --out naming an input of the run (here the test annotations) would overwrite it: refused, the input intact
    ann = patches / 'annotations' / 'instances_val.json'
    before = ann.read_bytes()
    with pytest.raises(UserError, match=r'--out .*instances_val\.json is the test_dataloader\.dataset\.ann_file'):
        test(small_cfg(patches, work), str(ckpt), out=str(ann), format_only=True)
    assert ann.read_bytes() == before and not work.exists()


def test_raw_prediction_dump_is_whole_or_absent(trained, patches, tmp_path, monkeypatch):
    """``--out results.pkl``: mmengine's DumpResults opens the file itself (truncating it) and writes the pickle, so a
    full disk or a kill during the write leaves a truncated pickle where the previous results were;
    AtomicDumpDetResults writes beside it and leaves the previous file as it was."""
    import pickle

    from mmdet.evaluation import DumpDetResults
    from mmengine.fileio.backends.local_backend import LocalBackend

    from mmdet_custom.apis.runner import AtomicDumpDetResults

    def full_disk_put(self, obj, filepath):
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
        raise OSError(errno.ENOSPC, 'No space left on device', str(filepath))

    results = [{'img_id': i, 'scores': np.arange(100.0)} for i in range(3)]
    theirs, ours = tmp_path / 'theirs.pkl', tmp_path / 'ours.pkl'
    for path in (theirs, ours):
        path.write_bytes(b'previous results')
    monkeypatch.setattr(LocalBackend, 'put', full_disk_put)
    with pytest.raises(OSError, match='No space left'):
        DumpDetResults(out_file_path=str(theirs)).compute_metrics(results)
    assert theirs.read_bytes() != b'previous results'  # the defect: the previous file is gone, the new one cut
    with pytest.raises((EOFError, pickle.UnpicklingError)):
        pickle.loads(theirs.read_bytes())
    with pytest.raises(OSError, match='No space left'):
        AtomicDumpDetResults(out_file_path=str(ours)).compute_metrics(results)
    assert ours.read_bytes() == b'previous results'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ours.pkl', 'theirs.pkl']  # no temporary file left
    monkeypatch.undo()

    # through test(): the dump holds the one test image's predictions, masks as RLE
    _, ckpt = trained
    test(small_cfg(patches, tmp_path / 'work'), str(ckpt), out=str(ours))
    (sample, ) = pickle.loads(ours.read_bytes())
    pred = sample['pred_instances']
    assert len(pred['scores']) == len(pred['bboxes']) == len(pred['masks']) > 0
    assert set(pred['masks'][0]) == {'size', 'counts'} and sample['img_path'].endswith('.png')
    assert 'gt_instances' not in sample and sorted(p.name for p in tmp_path.iterdir()) == ['ours.pkl', 'theirs.pkl',
                                                                                          'work']


def test_metrics_json_holds_null_not_nan(trained, patches, tmp_path, monkeypatch):
    from mmengine.runner import Runner
    _, ckpt = trained
    monkeypatch.setattr(Runner, 'test', lambda self: {'coco/segm_mAP': float('nan'), 'dice': np.float32(0.5),
                                                      'coco/bbox_mAP': 0.25})
    metrics = test(small_cfg(patches, tmp_path), str(ckpt))
    text = (tmp_path / 'test_metrics.json').read_text()
    on_disk = json.loads(text, parse_constant=lambda c: pytest.fail(f'{c} in test_metrics.json'))
    assert on_disk == metrics == {'coco/segm_mAP': None, 'dice': 0.5, 'coco/bbox_mAP': 0.25}


def test_cli_refuses_a_mismatched_checkpoint(trained, config_file, tmp_path, capsys):
    _, ckpt = trained
    with pytest.raises(SystemExit) as code:
        run_cli(tool_main('test.py'), [str(config_file), str(ckpt), '--work-dir', str(tmp_path), '--cfg-options',
                                       'model.rpn_head.anchor_generator.ratios=[0.5,1.0,2.0,4.0]'])
    assert code.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and f'checkpoint {ckpt} does not fit' in errors[0]
    assert 'rpn_head.rpn_cls.weight' in errors[0] and '--strict false' in errors[0]


# ----------------------------------------------------------------------------------------------------------------
# (8) atomic checkpoints, (14) no temp files after kills
# ----------------------------------------------------------------------------------------------------------------
def _toy_runner(work_dir, max_iters=2, max_keep_ckpts=1):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):

        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            out = self.linear(torch.stack(inputs))
            return dict(loss=(out.squeeze(1) - torch.stack(data_samples)).abs().mean()) if mode == 'loss' else out

    data = [dict(inputs=torch.randn(2), data_samples=torch.tensor(1.)) for _ in range(4)]
    return Runner(model=Toy(), work_dir=str(work_dir),
                  train_dataloader=dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=False),
                                        batch_size=2, num_workers=0),
                  train_cfg=dict(by_epoch=False, max_iters=max_iters),
                  optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
                  default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1,
                                                     max_keep_ckpts=max_keep_ckpts)),
                  default_scope='mmengine')


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save, calls = torch.save, []

    def disk_full_on_second_save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:
            f.write(b'\x80\x02 the first bytes of a checkpoint')
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, 'save', disk_full_on_second_save)
    runner = _toy_runner(tmp_path, max_iters=2, max_keep_ckpts=1)
    with pytest.raises(OSError, match='No space left'):
        runner.train()
    files = sorted(p.name for p in tmp_path.iterdir() if p.is_file() and p.suffix != '.py')  # but the config dump
    assert files == ['iter_1.pth', 'last_checkpoint'], files  # no iter_2.pth, no temporary file
    # mmengine would have removed iter_1.pth (max_keep_ckpts=1) before trying iter_2.pth
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_1.pth')
    assert load_checkpoint_file(str(tmp_path / 'iter_1.pth'))['meta']['iter'] == 1


_KILLED_SAVE = """
import os, sys, time
import torch
from mmdet_custom.checkpoint import save_checkpoint_atomic
def slow_save(obj, f, *args, **kwargs):
    f.write(b'x' * 4096)
    f.flush()
    print('writing', flush=True)
    time.sleep(120)
torch.save = slow_save
save_checkpoint_atomic({'state_dict': {'w': torch.zeros(3)}}, sys.argv[1])
"""


def test_killed_save_leaves_the_old_checkpoint_and_no_temp_file(tmp_path):
    final = tmp_path / 'iter_5.pth'
    save_checkpoint_atomic({'state_dict': {'w': torch.ones(3)}}, str(final))
    proc = subprocess.Popen([sys.executable, '-c', _KILLED_SAVE, str(final)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO_ROOT)
    try:
        assert proc.stdout.readline().strip() == 'writing'
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    temps = [p.name for p in tmp_path.iterdir() if p.name != 'iter_5.pth']
    assert len(temps) == 1 and temps[0].startswith(f'.iter_5.pth.tmp-{proc.pid}-')
    assert torch.equal(load_checkpoint_file(str(final))['state_dict']['w'], torch.ones(3))  # the old one, whole
    # the next save into the folder removes what the killed process left
    save_checkpoint_atomic({'state_dict': {'w': torch.full((3, ), 2.)}}, str(final))
    assert [p.name for p in tmp_path.iterdir()] == ['iter_5.pth']
    assert torch.equal(load_checkpoint_file(str(final))['state_dict']['w'], torch.full((3, ), 2.))


def test_name_to_ids_map_forms(tmp_path):
    from mmdet_custom.apis.export import load_name_to_ids
    records = tmp_path / 'records.json'
    records.write_text(json.dumps([{'file_name': 'a.tif', 'id': 7}, {'file_name': 'b.tif', 'id': 9}]))
    assert load_name_to_ids(str(records)) == {'a.tif': 7, 'b.tif': 9}
    mapping = tmp_path / 'map.json'
    mapping.write_text(json.dumps({'a.png': 3, 'b.png': 'x'}))
    with pytest.raises(UserError, match=r"map\.json: the id of 'b\.png' is 'x', not an integer"):
        load_name_to_ids(str(mapping))
    with pytest.raises(UserError, match='not found'):
        load_name_to_ids(str(tmp_path / 'nothere.json'))
