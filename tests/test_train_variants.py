"""One CBAM variant and the full model each train 2 iterations on real iSAID patches (from ../shared/data).

The raw devkit samples are converted once per session (conftest's ``isaid_256``: 256 px patches, so that a patch
holds a few objects and an iteration takes seconds on a CPU); every run uses random init, batch 1, a 128 px input
and no validation.
"""
import math
from pathlib import Path

import pytest
from helpers import REPO_ROOT

VARIANTS = [
    'configs/cbam/mask-rcnn_r50-cbam_attn-fpn_anchors_1x_isaid.py',
    'configs/cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py',
]
IMAGE_SCALE = (128, 128)  # half the 256 px patches: the losses are finite at any size; the time is not


pytestmark = [pytest.mark.usefixtures('one_torch_thread'), pytest.mark.slow]


def _two_iteration_config(config, data_root):
    """``config`` cut down to 2 training iterations on ``data_root``: random init, batch 1, no augmentation, no
    validation, no checkpoint; the config's backbone, neck, heads, optimizer wrapper and schedulers stay (the
    plateau scheduler only steps after validations)."""
    from helpers import shrink_for_cpu
    from mmengine.config import Config

    cfg = shrink_for_cpu(Config.fromfile(str(REPO_ROOT / config)), resnet_depth=None, batch_size=1,
                         keep_schedule=True, checkpoint_interval=None)
    cfg.train_dataloader.dataset.update(data_root=str(data_root) + '/', pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='Resize', scale=IMAGE_SCALE, keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs')
    ])
    return cfg


@pytest.mark.parametrize('config', VARIANTS, ids=lambda c: Path(c).stem)
def test_trains_two_iterations(config, isaid_256, tmp_path):
    from mmdet_custom.apis import train

    assert isaid_256.summary['train']['patches'] > 0 and isaid_256.summary['train']['instances'] > 0
    cfg = _two_iteration_config(config, isaid_256.root)
    runner = train(cfg, work_dir=str(tmp_path / 'work'))
    assert runner.iter == 2
    history = runner.message_hub.get_scalar('train/loss')
    losses = list(history.data[0])
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    for key in ('train/loss_rpn_cls', 'train/loss_cls', 'train/loss_mask'):
        assert math.isfinite(runner.message_hub.get_scalar(key).current()), key
    # the model and the optimizer that trained are the config's
    model = runner.model
    assert type(model.neck).__name__ == 'AttentionFPN'
    assert type(runner.optim_wrapper.optimizer).__name__ == cfg.optim_wrapper.optimizer.type
    assert type(model.backbone).__name__ == cfg.model.backbone.type
