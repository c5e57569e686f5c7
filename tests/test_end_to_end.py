"""The main job on real iSAID: convert -> train 2 iterations -> save -> resume -> test (segm mAP) -> refusal."""
import json
import runpy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmdet_custom.apis import test as run_test
from mmdet_custom.apis import train
from mmdet_custom.checkpoint import UnsafeCheckpointError

REPO_ROOT = Path(__file__).resolve().parents[1]
ROOT_CONFIG = str(REPO_ROOT / 'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py')


@pytest.fixture(scope='module')
def isaid_patches(isaid_raw_dir, tmp_path_factory):
    from mmdet_custom.converters.isaid import convert_isaid
    out = tmp_path_factory.mktemp('isaid_patches')
    convert_isaid(str(isaid_raw_dir), str(out), splits=('train', 'val'), patch_size=800, overlap=200,
                  show_progress=False)
    return out


def small_cpu_config(data_root, max_iters=2, scale=(256, 256)) -> Config:
    """The root config, unchanged but for data location, random init, input size and a 2-iteration loop."""
    cfg = Config.fromfile(ROOT_CONFIG)
    cfg.model.backbone.init_cfg = None
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.num_workers, loader.persistent_workers = 0, False
        loader.dataset.data_root = str(data_root) + '/'
        for t in loader.dataset.pipeline:
            if t['type'] == 'Resize':
                t['scale'] = scale
    cfg.train_dataloader.batch_size = 1
    cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = f'{data_root}/annotations/instances_val.json'
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=1000)
    # no validation during these 2-3 iterations (an iteration loop validates at its end); testing is checked below
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=1)
    cfg.default_hooks.logger.interval = 1
    cfg.log_processor.by_epoch = False
    return cfg


def test_train_save_resume_test_refuse(isaid_patches, tmp_path):
    work = tmp_path / 'work'
    runner = train(small_cpu_config(isaid_patches, max_iters=2), work_dir=str(work))
    assert runner.iter == 2
    ckpt2 = work / 'iter_2.pth'
    assert ckpt2.is_file()
    weights2 = torch.load(ckpt2, weights_only=True)['state_dict']

    # resume: the loop continues at iteration 2 with the saved optimizer state, and finishes at 3
    runner = train(small_cpu_config(isaid_patches, max_iters=3), work_dir=str(work), resume=str(ckpt2))
    assert runner.iter == 3
    assert (work / 'iter_3.pth').is_file()
    resumed = torch.load(work / 'iter_3.pth', weights_only=True)
    assert resumed['meta']['iter'] == 3
    assert any(not torch.equal(weights2[k], v) for k, v in resumed['state_dict'].items() if v.is_floating_point())

    # test from the checkpoint: bbox and segm COCO metrics, written as json in the work dir
    # ... through the command line users run (tools/test.py CONFIG CKPT)
    test_dir = tmp_path / 'test'
    config_file = tmp_path / 'small_cpu_config.py'
    small_cpu_config(isaid_patches).dump(str(config_file))
    tools_test = runpy.run_path(str(REPO_ROOT / 'tools' / 'test.py'))
    tools_test['main']([str(config_file), str(work / 'iter_3.pth'), '--work-dir', str(test_dir),
                        '--max-per-img', '100'])
    metrics = json.loads((test_dir / 'test_metrics.json').read_text())
    for key in ('coco/segm_mAP', 'coco/segm_mAP_50', 'coco/segm_mAP_75', 'coco/segm_mAP_s', 'coco/bbox_mAP'):
        assert key in metrics and 0.0 <= metrics[key] <= 1.0

    # a checkpoint that carries a foreign pickled object is refused before anything is built from it
    evil = tmp_path / 'evil.pth'
    ckpt = torch.load(ckpt2, weights_only=True)
    ckpt['meta']['note'] = _Payload(str(tmp_path / 'ran.txt'))
    torch.save(ckpt, evil)
    with pytest.raises(UnsafeCheckpointError, match='evil.pth'):
        run_test(small_cpu_config(isaid_patches), str(evil), work_dir=str(tmp_path / 'evil_test'), max_per_img=100)
    assert not (tmp_path / 'ran.txt').exists()


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))
