"""tools/dist_train.sh / dist_test.sh: torchrun + mmengine's pytorch launcher, here 2 CPU processes with gloo."""
import json
import os
import runpy
import socket
import subprocess
import sys

import pytest
import torch
from helpers import load_config, tiny_isaid_cfg
from recipe_tools_helpers import REPO_ROOT

TESTS = REPO_ROOT / 'tests'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def launch(script: str, *args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), MASTER_ADDR='127.0.0.1',
               OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get('PYTHONPATH', '')]))
    env.pop('NNODES', None), env.pop('NODE_RANK', None)
    return subprocess.run(['bash', str(REPO_ROOT / 'tools' / script), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_sync_bn_refused_for_timm_backbones():
    # why: mmengine's conversion (Runner.wrap_model with cfg.sync_bn) turns timm's BatchNorm+activation layers
    # into plain SyncBatchNorm: the activations are gone and the network computes something else
    import timm
    from mmengine.model import convert_sync_batchnorm
    from timm.layers import BatchNormAct2d

    from mmdet_custom.apis.distributed import DistributedSetupError, check_sync_bn
    net = timm.create_model('efficientnet_b0', features_only=True, out_indices=(4,), pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = net(x)[-1]
        n_act = sum(isinstance(m, BatchNormAct2d) for m in net.modules())
        after = convert_sync_batchnorm(net).eval()(x)[-1]
    assert n_act > 0 and not any(isinstance(m, BatchNormAct2d) for m in net.modules())
    assert not torch.allclose(before, after, atol=1e-2)

    cfg = load_config('configs/cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py', resolved=False)
    check_sync_bn(cfg)  # no sync_bn: nothing to refuse
    cfg.sync_bn = 'torch'
    with pytest.raises(DistributedSetupError, match='TimmCBAMBackbone.*activation'):
        check_sync_bn(cfg)
    cfg = load_config('configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py', resolved=False)
    cfg.sync_bn = 'torch'
    check_sync_bn(cfg)  # mmdet's ResNet: plain BatchNorm, converted correctly


def test_usage_without_arguments():
    proc = launch('dist_train.sh', timeout=30)
    assert proc.returncode == 2 and 'usage' in proc.stderr
    proc = launch('dist_test.sh', 'a.py', timeout=30)
    assert proc.returncode == 2 and 'usage' in proc.stderr


@pytest.mark.slow  # ~25 s on a free 2-core machine, 66 s under load
def test_two_cpu_processes_average_gradients_and_rank0_checkpoint_tests(isaid_converted, tmp_path):
    isaid_patches = isaid_converted.root  # the devkit-default windows (conftest), shared with other modules
    work, probe = tmp_path / 'work', tmp_path / 'probe'
    probe.mkdir()
    cfg = tiny_isaid_cfg(isaid_patches, work)
    cfg.custom_imports = dict(imports=['mmdet_custom.register', 'dist_probe'], allow_failed_imports=False)
    # ValLossHook too: its val losses are averaged over the ranks with an all-reduce
    cfg.custom_hooks = [dict(type='DistProbeHook', out_dir=str(probe)), dict(type='ValLossHook')]
    config = tmp_path / 'tiny_dist.py'
    cfg.dump(str(config))

    proc = launch('dist_train.sh', str(config), '2', '--work-dir', str(work),
                  '--cfg-options', 'env_cfg.dist_cfg.backend=gloo')
    if proc.returncode and 'Found no NVIDIA driver' in proc.stderr:
        pytest.fail('mmengine called torch.cuda.set_device on a CPU-only machine: mmdet_custom.apis.runner.load_config '
                    'must call mmdet_custom.apis.distributed.prepare_distributed(cfg) after setting cfg.launcher')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    ranks = [json.loads((probe / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert [(r['rank'], r['world_size'], r['distributed']) for r in ranks] == [(0, 2, True), (1, 2, True)]
    assert ranks[0]['wrapper'] == ranks[1]['wrapper'] == 'MMDistributedDataParallel'
    # each rank trained 2 iterations on its own share of the patches (mmengine's DefaultSampler) ...
    seen = [sum(r['images'], []) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 2 and set(seen[0]).isdisjoint(seen[1])
    # ... from the same start (DDP broadcasts rank 0's weights), and ended with identical weights: with different
    # data, only the all-reduced (averaged) gradients make the two optimizers take the same steps
    assert ranks[0]['initial'] == ranks[1]['initial']
    assert ranks[0]['final'] == ranks[1]['final']
    changed = [k for k, v in ranks[0]['final'].items() if v != ranks[0]['initial'][k]]
    assert any(k.startswith('rpn_head.') for k in changed) and any(k.startswith('roi_head.') for k in changed)
    log = proc.stdout + proc.stderr
    assert 'DistProbeHook: rank 0 of 2' in log and 'DistProbeHook: rank 1 of 2' in log

    # rank 0 saved the checkpoint (the trained weights) and its validation saw the val losses of both ranks
    ckpt = work / 'iter_2.pth'
    state = torch.load(ckpt, weights_only=True, map_location='cpu')['state_dict']
    from dist_probe import fingerprints
    assert fingerprints(_Params(state)) == {k: v for k, v in ranks[0]['final'].items()}
    scalars = [json.loads(line) for line in next(work.glob('*/vis_data/scalars.json')).read_text().splitlines()]
    assert any('val/loss' in s and 'coco/segm_mAP' in s for s in scalars)

    # ... and it tests with tools/test.py (one process)
    test_cfg = tiny_isaid_cfg(isaid_patches, tmp_path / 'test')
    test_config = tmp_path / 'tiny_test.py'
    test_cfg.dump(str(test_config))
    tool = runpy.run_path(str(REPO_ROOT / 'tools' / 'test.py'))
    metrics = tool['main']([str(test_config), str(ckpt), '--work-dir', str(tmp_path / 'test')])
    assert 0.0 <= metrics['coco/segm_mAP'] <= 1.0 and 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    assert json.loads((tmp_path / 'test' / 'test_metrics.json').read_text())['coco/segm_mAP'] == \
        metrics['coco/segm_mAP']


class _Params:
    """A state dict seen as a model's named_parameters (for the fingerprints)."""

    def __init__(self, state):
        self.state = state

    def named_parameters(self):
        return ((k, v) for k, v in self.state.items() if v.is_floating_point() and 'running_' not in k)
