"""The main job on real iSAID: convert (conftest's devkit-default ``isaid_converted``) -> train 2 iterations -> save
-> resume -> test (segm mAP) -> refusal."""
import json
import runpy

import pytest
import torch
from helpers import REPO_ROOT, shrink_for_cpu, use_data_root
from mmengine.config import Config

from mmdet_custom.apis import test as run_test
from mmdet_custom.apis import train
from mmdet_custom.checkpoint import UnsafeCheckpointError

ROOT_CONFIG = str(REPO_ROOT / 'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py')

pytestmark = pytest.mark.slow  # 3 runners, 3 iterations, 2 checkpoints with optimizer state: ~30 s on 2 cores


def small_cpu_config(data_root, max_iters=2, scale=(128, 128)) -> Config:
    """The root config with a ResNet-18 (random init) and CPU-sized RoI work (tests/helpers.py), on ``data_root``:
    batch 1 at ``scale``, a ``max_iters``-iteration loop without validation (testing is checked below), SGD at a
    constant lr, one checkpoint with optimizer state at the end (the resume reads it)."""
    cfg = shrink_for_cpu(Config.fromfile(ROOT_CONFIG), image_size=scale, iters=max_iters, batch_size=1,
                         save_optimizer=True)
    return use_data_root(cfg, data_root)


def test_train_save_resume_test_refuse(isaid_converted, tmp_path):
    data, work = isaid_converted.root, tmp_path / 'work'
    runner = train(small_cpu_config(data, max_iters=2), work_dir=str(work))
    assert runner.iter == 2
    ckpt2 = work / 'iter_2.pth'
    assert ckpt2.is_file()
    saved2 = torch.load(ckpt2, weights_only=True)
    weights2 = saved2['state_dict']

    # resume: the loop continues at iteration 2 with the saved optimizer state, and finishes at 3
    runner = train(small_cpu_config(data, max_iters=3), work_dir=str(work), resume=str(ckpt2))
    assert runner.iter == 3
    assert (work / 'iter_3.pth').is_file()
    resumed = torch.load(work / 'iter_3.pth', weights_only=True)
    assert resumed['meta']['iter'] == 3
    assert any(not torch.equal(weights2[k], v) for k, v in resumed['state_dict'].items() if v.is_floating_point())

    # test from the checkpoint: bbox and segm COCO metrics, written as json in the work dir
    # ... through the command line users run (tools/test.py CONFIG CKPT)
    test_dir = tmp_path / 'test'
    config_file = tmp_path / 'small_cpu_config.py'
    small_cpu_config(data).dump(str(config_file))
    tools_test = runpy.run_path(str(REPO_ROOT / 'tools' / 'test.py'))
    tools_test['main']([str(config_file), str(work / 'iter_3.pth'), '--work-dir', str(test_dir),
                        '--max-per-img', '20'])
    metrics = json.loads((test_dir / 'test_metrics.json').read_text())
    for key in ('coco/segm_mAP', 'coco/segm_mAP_50', 'coco/segm_mAP_75', 'coco/segm_mAP_s', 'coco/bbox_mAP'):
        assert key in metrics and 0.0 <= metrics[key] <= 1.0

    # a checkpoint that carries a foreign pickled object is refused before anything is built from it
    # (the checkpoint's own meta with the object added, and one of its weights: the refusal reads no weight)
    evil = tmp_path / 'evil.pth'
    first = next(iter(weights2))
    meta = dict(saved2['meta'], note=_Payload(str(tmp_path / 'ran.txt')))
    torch.save(dict(meta=meta, state_dict={first: weights2[first]}), evil)
    with pytest.raises(UnsafeCheckpointError, match='evil.pth'):
        run_test(small_cpu_config(data), str(evil), work_dir=str(tmp_path / 'evil_test'), max_per_img=20)
    assert not (tmp_path / 'ran.txt').exists()


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))
